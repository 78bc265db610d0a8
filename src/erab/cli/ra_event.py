"""``erab ra event create|list|show|cancel``: clients of the RA's REST API (``erab ra serve``).

The token is an operator's API token (``erab security token-issue``), from ``--token-file`` or
``$ERAB_TOKEN_FILE``; the RA's address from ``--api`` (default http://127.0.0.1:8090).  An
``https://`` API (``erab ra serve --api-tls``) is verified against the deployment's CA
(``--ca-file``, default ``HOME/security/pki/ca-bundle.pem``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import ssl
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


def default_ca_file() -> Path:
    """The deployment's trust anchors: ``$ERAB_CA_FILE``, else under ``$ERAB_HOME``."""
    from erab.settings import Settings

    if os.environ.get("ERAB_CA_FILE"):
        return Path(os.environ["ERAB_CA_FILE"])
    return Settings.from_env().home / "security" / "pki" / "ca-bundle.pem"


def add_client_options(p: argparse.ArgumentParser) -> None:
    """--api, --token-file, --ca-file and --json: what a client of the RA's API takes."""
    p.add_argument("--api", default=os.environ.get("ERAB_API", DEFAULT_API),
                   help=f"the RA's API (default $ERAB_API or {DEFAULT_API}); https:// for "
                   "one served with --api-tls")  # fmt: skip
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding your API token (default $ERAB_TOKEN_FILE)")  # fmt: skip
    p.add_argument("--ca-file", type=Path, default=None,
                   help="CA bundle that verifies an https:// API (default $ERAB_CA_FILE or "
                   "HOME/security/pki/ca-bundle.pem of $ERAB_HOME)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the API's JSON")


def read_token(args: argparse.Namespace) -> str:
    from erab.cli import CliError

    token_file = args.token_file or (Path(os.environ["ERAB_TOKEN_FILE"])
                                     if os.environ.get("ERAB_TOKEN_FILE") else None)  # fmt: skip
    if token_file is None:
        raise CliError("give --token-file (an API token from 'erab security token-issue')")
    try:
        return str(token_file.read_text(encoding="utf-8").strip())
    except OSError as exc:
        raise CliError(f"cannot read the token file {token_file}: {exc.strerror}") from None


def tls_context(api: str, ca_file: Path | None) -> ssl.SSLContext | None:
    """For an https:// API, a context that trusts only the deployment's CA (TLS 1.2+,
    host name checked); None for http://."""
    if not api.lower().startswith("https://"):
        return None
    from erab.cli import CliError
    from erab.security import client_context

    ca = ca_file or default_ca_file()
    if not ca.is_file():
        raise CliError(f"no CA bundle at {ca} to verify {api}: give --ca-file (the "
                       "deployment's security/pki/ca-bundle.pem)")  # fmt: skip
    return client_context(ca)


def register_event(sub: Any) -> None:
    ev = sub.add_parser("event", help="demand-response events on a running RA (its REST API)")
    esub = ev.add_subparsers(dest="ra_event_command", metavar="SUBCOMMAND")
    ev.set_defaults(group_parser=ev)

    def common(p: argparse.ArgumentParser) -> None:
        add_client_options(p)

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


def call(api: str, token: str, method: str, path: str, body: Any = None, *,
         context: ssl.SSLContext | None = None) -> Any:  # fmt: skip
    """One API call; a refusal becomes ``RuntimeError`` with the API's own reason."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{api.rstrip('/')}/api/v1{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise RuntimeError(f"the RA refused ({exc.code}): {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise RuntimeError(f"the RA at {api} is not verified by the CA bundle: "
                               f"{reason.verify_message}") from None  # fmt: skip
        raise RuntimeError(f"cannot reach the RA at {api} ({getattr(exc, 'reason', exc)}); "
                           "is 'erab ra serve' running?") from None  # fmt: skip


def _line(e: dict[str, Any]) -> str:
    return (f"{e['event_id']}  {e['stage']:<10} {e['target_kw']:+g} kW  {e['start']} – "
            f"{e['end']}  {e['product']}  by {e['requested_by']}"
            + (f"  shortfall {e['shortfall_kw']:g} kW" if e.get("shortfall_kw") else ""))


def cmd_event(args: argparse.Namespace) -> int:
    from erab.cli import CliError

    token = read_token(args)
    context = tls_context(args.api, args.ca_file)
    command = args.ra_event_command
    try:
        if command == "create":
            try:
                start = parse_start(args.start, datetime.now(JST))
                duration = parse_duration(args.duration)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            result = call(args.api, token, "POST", "/events", context=context, body={
                "target_kw": args.kw, "start": start.isoformat(),
                "duration_minutes": duration.total_seconds() / 60, "product": args.product})
        elif command == "list":
            result = call(args.api, token, "GET", "/events", context=context)
        elif command == "show":
            result = call(args.api, token, "GET", f"/events/{args.event_id}", context=context)
        else:
            result = call(args.api, token, "POST", f"/events/{args.event_id}/cancel", {},
                          context=context)
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
        if command == "show":
            print("\n".join(detail_lines(result)))
    return 0


def _kw(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def detail_lines(event: dict[str, Any]) -> list[str]:
    """An event's commands, the closed loop's last check and the per-site table."""
    lines: list[str] = []
    if event.get("commands"):
        lines.append("commands: " + ", ".join(f"{k} {v}" for k, v in event["commands"].items()))
    d = event.get("delivery")
    if d:
        lines.append(f"delivered {d['delivered_kw']:.2f} kW ({100 * d['ratio']:.0f} % of the "
                     f"target) at the last of {d['checks']} checks")  # fmt: skip
    sites = event.get("sites") or []
    if sites:
        lines.append(f"{'site':<24} {'baseline kW':>11} {'now kW':>8} {'delivered':>9} "
                     f"{'commanded':>9} {'ratio':>6}")  # fmt: skip
        lines += [f"{r['site']:<24} {_kw(r['baseline_kw']):>11} {_kw(r['now_kw']):>8} "
                  f"{_kw(r['delivered_kw']):>9} {_kw(r['commanded_kw']):>9} "
                  f"{_kw(r['ratio']):>6}" for r in sites]  # fmt: skip
    elif "sites" in event:
        lines.append("per site: no pre-event readings yet")
    return lines
