"""``erab el``: ECHONET Lite tools.

The subcommands live in sibling modules so each can grow on its own:
``el_decode`` (decode), ``el_classes`` (classes, class), ``el_net`` (serve, discover,
get, set, watch).
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

SUBMODULES = ("el_decode", "el_classes", "el_net")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "el", help="ECHONET Lite: decode frames, browse classes, talk to devices"
    )
    parser.set_defaults(group_parser=parser)
    sub = parser.add_subparsers(dest="el_command", metavar="SUBCOMMAND")
    for name in SUBMODULES:
        try:
            module = importlib.import_module(f"erab.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"erab.cli.{name}":
                continue
            raise
        module.register(sub)
