"""``erab ra event create|list|show|cancel``: clients of the RA's REST API (``erab ra serve``).

The token is an operator's API token (``erab security token-issue``), from ``--token-file`` or
``$ERAB_TOKEN_FILE``; the RA's address from ``--api`` (default http://127.0.0.1:8090).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import urllib.error
import urllib.request
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

from erab.clock import JST

DEFAULT_API = "http://127.0.0.1:8090"
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?$")


def parse_duration(text: str) -> timedelta:
    """``3h``, ``90m``, ``1h30m`` or plain minutes (``45``)."""
    t = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", t):
        return timedelta(minutes=float(t))
    m = _DURATION.match(t)
    if not t or m is None or not any(m.groups()):
        raise ValueError(f"duration {text!r}: give e.g. 3h, 90m or 1h30m")
    return timedelta(hours=float(m.group(1) or 0), minutes=float(m.group(2) or 0))


def parse_start(text: str, now: datetime) -> datetime:
    """``14:00`` (today, JST), ``now``, or ISO 8601 with a zone."""
    t = text.strip()
    if t == "now":
        return now
    if re.fullmatch(r"\d{1,2}:\d{2}", t):
        hour, minute = (int(x) for x in t.split(":"))
        if hour > 23 or minute > 59:
            raise ValueError(f"start {text!r} is not a time of day")
        return datetime.combine(now.astimezone(JST).date(), time(hour, minute), JST)
    try:
        when = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"start {text!r}: give HH:MM (JST, today), now, or ISO 8601") from None
    if when.tzinfo is None:
        raise ValueError(f"start {text!r} needs a zone, e.g. 2026-08-03T14:00+09:00")
    return when


def register_event(sub: Any) -> None:
    ev = sub.add_parser("event", help="demand-response events on a running RA (its REST API)")
    esub = ev.add_subparsers(dest="ra_event_command", metavar="SUBCOMMAND")
    ev.set_defaults(group_parser=ev)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--api", default=os.environ.get("ERAB_API", DEFAULT_API),
                       help=f"the RA's API (default $ERAB_API or {DEFAULT_API})")  # fmt: skip
        p.add_argument("--token-file", type=Path, default=None,
                       help="file holding your API token (default $ERAB_TOKEN_FILE)")  # fmt: skip
        p.add_argument("--json", action="store_true", help="print the API's JSON")

    p = esub.add_parser("create", help="create an event: the RA plans and dispatches it")
    p.add_argument("--kw", type=float, required=True,
                   help="target kW: negative reduces the fleet's demand, positive raises it")
    p.add_argument("--start", default="now", help="HH:MM (JST, today), now, or ISO 8601")
    p.add_argument("--duration", default="1h", help="e.g. 3h, 90m, 1h30m (default 1h)")
    p.add_argument("--product", default="tertiary-1", help="the product (default tertiary-1)")
    common(p)
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("list", help="the RA's events")
    common(p)
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("show", help="one event with its history")
    p.add_argument("event_id", help="the event's id")
    common(p)
    p.set_defaults(handler=cmd_event)
    p = esub.add_parser("cancel", help="cancel an event: every site returns to normal")
    p.add_argument("event_id", help="the event's id")
    common(p)
    p.set_defaults(handler=cmd_event)


def call(api: str, token: str, method: str, path: str, body: Any = None) -> Any:
    """One API call; a refusal becomes ``RuntimeError`` with the API's own reason."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{api.rstrip('/')}/api/v1{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise RuntimeError(f"the RA refused ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeError(f"cannot reach the RA at {api} ({getattr(exc, 'reason', exc)}); "
                           "is 'erab ra serve' running?") from None  # fmt: skip


def _line(e: dict[str, Any]) -> str:
    return (f"{e['event_id']}  {e['stage']:<10} {e['target_kw']:+g} kW  {e['start']} – "
            f"{e['end']}  {e['product']}  by {e['requested_by']}"
            + (f"  shortfall {e['shortfall_kw']:g} kW" if e.get("shortfall_kw") else ""))


def cmd_event(args: argparse.Namespace) -> int:
    from erab.cli import CliError

    token_file = args.token_file or (Path(os.environ["ERAB_TOKEN_FILE"])
                                     if os.environ.get("ERAB_TOKEN_FILE") else None)  # fmt: skip
    if token_file is None:
        raise CliError("give --token-file (an API token from 'erab security token-issue')")
    try:
        token = token_file.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"cannot read the token file {token_file}: {exc.strerror}") from None
    command = args.ra_event_command
    try:
        if command == "create":
            try:
                start = parse_start(args.start, datetime.now(JST))
                duration = parse_duration(args.duration)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            result = call(args.api, token, "POST", "/events", {
                "target_kw": args.kw, "start": start.isoformat(),
                "duration_minutes": duration.total_seconds() / 60, "product": args.product})
        elif command == "list":
            result = call(args.api, token, "GET", "/events")
        elif command == "show":
            result = call(args.api, token, "GET", f"/events/{args.event_id}")
        else:
            result = call(args.api, token, "POST", f"/events/{args.event_id}/cancel", {})
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, list):
        print("\n".join(_line(e) for e in result) or "no events")
    else:
        print(_line(result))
        for w in result.get("warnings", []):
            print(f"  warning: {w}")
    return 0
