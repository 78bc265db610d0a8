"""``erab el decode HEX...``: ECHONET Lite frames as a person would want to read them."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from erab.cli import CliError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "decode",
        help="decode ECHONET Lite frames (hex) with class/property names and typed values",
        description=(
            "Decode ECHONET Lite frames given in hexadecimal, one frame per argument "
            "(spaces, colons and a 0x prefix are ignored; '-' reads frames from standard "
            "input, one per line). Properties are named from the class database and their "
            "values decoded with units; SNA answers are flagged."
        ),
    )
    parser.add_argument("frames", nargs="+", metavar="HEX", help="a frame in hex, or '-'")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per frame)")
    parser.set_defaults(handler=run)


def _frames_from(args: list[str]) -> list[str]:
    texts: list[str] = []
    for arg in args:
        if arg == "-":
            texts.extend(line for line in sys.stdin.read().splitlines() if line.strip())
        else:
            texts.append(arg)
    return texts


def _to_bytes(text: str, index: int) -> bytes:
    cleaned = text.strip().replace(" ", "").replace(":", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        raise CliError(
            f"frame {index} ({text[:40]!r}) is not hexadecimal: give an even number of hex "
            "digits, e.g. 1081000001300505FF017201B00142"
        ) from None


def _format2_text(view: dict[str, Any]) -> str:
    """A Format 2 frame for people: its body is opaque by definition (Part 2 §3.2.2)."""
    body = str(view["body"])
    return (
        f"TID 0x{int(view['tid']):04X}  Format 2 (arbitrary message format, EHD2 0x82)\n"
        f"  body ({len(body) // 2} bytes, opaque): {body or '-'}"
    )


def run(args: argparse.Namespace) -> int:
    from erab.echonet.describe import describe_frame
    from erab.echonet.frame import FrameError, decode_frame

    texts = _frames_from(args.frames)
    if not texts:
        raise CliError("no frames to decode: standard input had no hex lines")
    failures = 0
    outputs: list[Any] = []
    for index, text in enumerate(texts, start=1):
        raw = _to_bytes(text, index)
        try:
            view = describe_frame(decode_frame(raw))
        except FrameError as exc:
            failures += 1
            if args.json:
                outputs.append(
                    {
                        "frame": index,
                        "hex": raw.hex().upper(),
                        "error": str(exc),
                        "reason": exc.reason,
                        "offset": exc.offset,
                    }
                )
            else:
                print(f"frame {index}: malformed: {exc}", file=sys.stderr)
            continue
        if args.json:
            outputs.append(view if isinstance(view, dict) else view.to_json())
        else:
            if index > 1:
                print()
            print(_format2_text(view) if isinstance(view, dict) else view.to_text())
    if args.json:
        print(
            json.dumps(outputs[0] if len(outputs) == 1 else outputs, ensure_ascii=False, indent=2)
        )
    return 1 if failures else 0
