"""The ``erab`` command.

Each command group lives in its own module here and exposes ``register(subparsers)``;
a handler is a function ``(args) -> int`` stored as ``args.handler``.  Modules import
heavy dependencies inside their handlers so ``erab --help`` stays fast.

Errors a user can act on are raised as :class:`CliError` (or ``ValueError`` from the
library) and printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from erab import __version__

# (module under erab.cli, what it adds); each module's register() adds its subcommands.
COMMAND_MODULES: tuple[str, ...] = (
    "el",
    "emulate",
    "meter",
    "security",
    "broker",
    "gateway",
    "ra",
    "settlement",  # erab settle, erab report, erab products
    "ac",  # the aggregation coordinator (OpenADR VTN)
    "web",  # the operator's dashboard
    "demo",
)


class CliError(Exception):
    """A problem with the user's input or environment, reported as one line."""


Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erab",
        description="erab: Japan's virtual power plant (ERAB) — ECHONET Lite, meters, "
        "gateway, aggregator, security.",
    )
    parser.add_argument("--version", action="version", version=f"erab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"erab.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"erab.cli.{name}":
                continue  # command group not built yet
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        # a group without a subcommand: show that group's help
        help_parser: argparse.ArgumentParser = getattr(args, "group_parser", parser)
        help_parser.print_help()
        return 2
    try:
        return handler(args)
    except BrokenPipeError:
        # the reader went away (`erab ... | head`): stop quietly, as Unix tools do
        _silence_stdout()
        return 0
    except (CliError, ValueError, OSError) as exc:
        print(f"erab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("erab: stopped", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
