"""Flag names shared across the ``erab`` command, and old spellings kept for one release.

One set of names everywhere:

- ``--duration SECONDS`` for how long a command runs (not ``--seconds``);
- ``--out FILE`` for a file to write, ``--out-dir DIR`` for a folder (no ``-o/--output``);
- ``--home DIR`` on every command that uses the deployment home;
- ``--port`` only for network ports; serial devices take ``--device``;
- ``--json`` for machine-readable output (a command has either ``--json`` or ``--format``).

An old spelling stays as a hidden alias that still works and warns once on stderr::

    p.add_argument("--duration", type=float, help="stop after this many seconds")
    deprecated_alias(p, "--seconds", new="--duration", type=float)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


class _DeprecatedAlias(argparse.Action):
    """Store into the new option's destination and say which spelling to use instead."""

    def __init__(self, option_strings: Sequence[str], dest: str, *, new: str,
                 const: Any = None, nargs: int | str | None = None, **kwargs: Any) -> None:
        self.new = new
        super().__init__(option_strings, dest, nargs=nargs, const=const, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"erab: warning: {option_string} is deprecated and will be removed; "
              f"use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def deprecated_alias(parser: argparse.ArgumentParser, *old: str, new: str,
                     flag: bool = False, **kwargs: Any) -> None:
    """Accept ``old`` spellings of the option ``new`` (already added), hidden from help.

    ``flag=True`` for a switch that takes no value (``store_true``); otherwise pass the same
    ``type``/``choices`` the new option has.  The value lands in the new option's destination.
    """
    dest = new.lstrip("-").replace("-", "_")
    if flag:
        kwargs.update(nargs=0, const=True)
    parser.add_argument(*old, dest=dest, action=_DeprecatedAlias, new=new,
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
