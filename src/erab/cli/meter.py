"""``erab meter``: read a smart meter over route B, emulate a Wi-SUN dongle, run route A.

- ``erab meter read --device /dev/ttyUSB0 [--id ID --password PW | --credentials FILE]``
  (or ERAB_ROUTEB_ID / ERAB_ROUTEB_PASSWORD): live power and today's 30-minute readings.
- ``erab meter emulate-dongle [--id ID --password PW] [--dialect with-side|no-side]
  [--fault lost-replies=2 ...]``: a dongle plus meter on a pty; prints the pty path.
- ``erab meter ami collect|read|disconnect|connect|configure|export|status``: the route A
  head-end over an emulated fleet, stored in HOME/erab.sqlite (``--home``, ERAB_HOME) or
  ``--db`` / ERAB_DATABASE_URL.

See docs/meter.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erab.cli import CliError
from erab.cli.flags import deprecated_alias

if TYPE_CHECKING:
    from erab.clock import Clock
    from erab.meter.headend import HeadEnd
    from erab.meter.routeb import RouteBCredentials
    from erab.store import Store


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "meter", help="smart meters: route B reader, Wi-SUN dongle emulator, route A head-end"
    )
    parser.set_defaults(group_parser=parser)
    sub = parser.add_subparsers(dest="meter_command", metavar="SUBCOMMAND")

    read = sub.add_parser(
        "read",
        help="read a smart meter through a Wi-SUN dongle (route B)",
        description="Scan, join and read the meter: live power and currents, and today's "
        "30-minute readings.  Credentials come from --id/--password, --credentials FILE, or "
        "ERAB_ROUTEB_ID / ERAB_ROUTEB_PASSWORD (prefer the file or environment: command-line "
        "arguments are visible to other users).  The password is never printed.",
    )
    read.add_argument("--device", help="serial device of the dongle, e.g. /dev/ttyUSB0")
    deprecated_alias(read, "--port", new="--device")
    _credential_args(read)
    read.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="seconds to wait per property (AIF spec: at least 20)",
    )
    read.add_argument("--no-history", action="store_true", help="skip today's 30-minute readings")
    read.add_argument("--json", action="store_true", help="print JSON")
    read.set_defaults(handler=_read)

    emu = sub.add_parser(
        "emulate-dongle",
        help="emulate a Wi-SUN dongle with a smart meter behind it on a pty",
        description="Opens a pseudo-terminal speaking SKSTACK-IP; point any route B client at "
        "the printed path with the printed credentials.  Runs until stopped (Ctrl-C).",
    )
    emu.add_argument(
        "--id", dest="route_b_id", help="route B ID to accept (32 characters; random if omitted)"
    )
    emu.add_argument("--password", help="password to accept (12 characters; random if omitted)")
    emu.add_argument(
        "--dialect", default="with-side", help="with-side (BP35C0/C2, default) or no-side (BP35A1)"
    )
    emu.add_argument(
        "--binary", action="store_true", help="start in binary ERXUDP mode (WOPT 00) instead of hex"
    )
    emu.add_argument("--cr", action="store_true", help="end lines with CR only (not CR LF)")
    emu.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="FAULT",
        help="inject a fault (repeatable): lost-replies=N, lost-requests=N, delay=S, "
        "session-expiry=S, session-lifetime=S, session-end=S, transmit-limit=N[:S], "
        "wrong-credentials, silent-meter (see docs/meter.md)",
    )
    emu.add_argument("--seed", type=int, default=0, help="seed of the emulated household")
    emu.add_argument("--duration", type=float, help="stop after this many seconds")
    emu.add_argument("--json", action="store_true", help="print the pty path etc. as JSON")
    emu.set_defaults(handler=_emulate)

    ami = sub.add_parser(
        "ami",
        help="route A head-end (AMI) over an emulated fleet",
        description="The utility's route A head-end over an emulated fleet: 30-minute "
        "collection, gap filling, remote actions, settlement export.  Data is kept in "
        "HOME/erab.sqlite (--home, else $ERAB_HOME, else ./erab-data) or in --db.",
    )
    ami.set_defaults(group_parser=ami)
    asub = ami.add_subparsers(dest="ami_command", metavar="ACTION")

    def ami_cmd(name: str, help_text: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = asub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--home",
            type=Path,
            help="deployment home; the store is HOME/erab.sqlite (default: $ERAB_HOME, "
            "else ./erab-data)",
        )
        p.add_argument(
            "--db",
            help="store URL or SQLite file, instead of the home's (default: "
            "$ERAB_DATABASE_URL if set)",
        )
        p.add_argument(
            "--now", help="the head-end's time (ISO 8601; naive = JST); default: the wall clock"
        )
        p.add_argument("--meters", type=int, help="fleet size (first use; remembered)")
        p.add_argument("--seed", type=int, help="fleet seed (first use; remembered)")
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON")
        return p

    collect = ami_cmd("collect", "collect 30-minute readings, fill gaps, apply retention")
    collect.add_argument(
        "--days", type=float, default=1.0, help="how many days back to collect (default 1)"
    )
    collect.add_argument(
        "--loss", type=float, default=0.0, help="share of readings lost on the network (emulation)"
    )
    collect.set_defaults(handler=_store_errors(_ami_collect))
    meter_help = "meter id, e.g. M000001 (see `erab meter ami status`)"
    for name, text in (
        ("read", "on-demand read of one meter"),
        ("disconnect", "remote switch off"),
        ("connect", "remote switch on"),
    ):
        p = ami_cmd(name, text)
        p.add_argument("meter_id", metavar="METER", help=meter_help)
        p.add_argument("--actor", default="operator", help="who asks (recorded)")
        p.set_defaults(handler=_store_errors(_ami_action), action=name)
    conf = ami_cmd("configure", "remote configuration: breaker capacity and/or demand limit")
    conf.add_argument("meter_id", metavar="METER", help=meter_help)
    conf.add_argument("--breaker", type=float, help="contract breaker capacity, A (5-200)")
    conf.add_argument("--demand-limit", type=float, help="demand limit, W")
    conf.add_argument("--actor", default="operator", help="who asks (recorded)")
    conf.set_defaults(handler=_store_errors(_ami_action), action="configure")
    export = ami_cmd(
        "export", "meter data per 30-minute slot for settlement (CSV or JSON)", json_flag=False
    )
    export.add_argument("--start", required=True, help="ISO 8601 (naive = JST)")
    export.add_argument("--end", required=True, help="ISO 8601 (naive = JST)")
    export.add_argument(
        "--format", default="csv", choices=("csv", "json"), help="csv (default) or json"
    )
    # `--json` is what every other command takes for JSON: here it means --format json
    export.add_argument(
        "--json", dest="format", action="store_const", const="json", help=argparse.SUPPRESS
    )
    export.add_argument("--meter", action="append", dest="meter_ids", help="only this meter")
    export.add_argument("--out", metavar="FILE", help="file to write (default: standard output)")
    deprecated_alias(export, "--output", "-o", new="--out")
    export.set_defaults(handler=_store_errors(_ami_export))
    status = ami_cmd("status", "what the head-end holds: readings, gaps, actions")
    status.set_defaults(handler=_store_errors(_ami_status))


# ----------------------------------------------------------------------------- helpers


def _credential_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--id", dest="route_b_id", help="route B ID (32 characters)")
    parser.add_argument("--password", help="route B password (12 characters)")
    parser.add_argument(
        "--credentials", metavar="FILE", help='JSON {"id": ..., "password": ...} or two lines'
    )


def _credentials(args: argparse.Namespace) -> RouteBCredentials:
    from erab.meter.routeb import RouteBCredentials

    if args.route_b_id or args.password:
        if not (args.route_b_id and args.password):
            raise CliError("give both --id and --password, or use --credentials FILE")
        return RouteBCredentials(args.route_b_id, args.password)
    if args.credentials:
        return RouteBCredentials.from_file(args.credentials)
    creds = RouteBCredentials.from_env()
    if creds is None:
        raise CliError(
            "no route B credentials: use --credentials FILE, set ERAB_ROUTEB_ID and "
            "ERAB_ROUTEB_PASSWORD, or give --id and --password"
        )
    return creds


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(_jsonable(value), indent=1, sort_keys=True))


# ----------------------------------------------------------------------------- route B


def _read(args: argparse.Namespace) -> int:
    import asyncio

    from erab.meter.routeb import RouteBError, RouteBReader
    from erab.meter.serialport import SerialPort

    if not args.device:
        raise CliError("give the dongle's serial device with --device, e.g. /dev/ttyUSB0")
    creds = _credentials(args)
    if args.timeout < 1:
        raise CliError(f"--timeout must be at least 1 s, got {args.timeout}")

    async def run() -> dict[str, Any]:
        async with SerialPort(args.device) as port:
            reader = RouteBReader(
                port,
                creds,
                property_timeout_s=args.timeout,
                progress=lambda step: print(step, file=sys.stderr, flush=True),
            )
            async with reader:
                instant = await reader.read_instant()
                history = [] if args.no_history else await reader.read_history(0)
                return {
                    "instant": instant,
                    "history": history,
                    "scaling": {
                        "coefficient": reader.scaling.coefficient,
                        "unit_kwh": reader.scaling.unit_kwh,
                        "digits": reader.scaling.digits,
                    },
                    "dialect": reader.dialect.value if reader.dialect else None,
                }

    try:
        result = asyncio.run(run())
    except RouteBError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        _print_json(result)
        return 0
    inst = result["instant"]
    print(f"power: {inst.power_w} W   current R: {inst.current_r_a} A   T: {inst.current_t_a} A")
    # as many decimals as one count of the meter is worth (coefficient x unit)
    per_count = result["scaling"]["coefficient"] * result["scaling"]["unit_kwh"]
    decimals = max(0, min(4, -math.floor(math.log10(per_count) + 1e-9)))
    for h in result["history"]:
        value = "-" if h.energy_kwh is None else f"{h.energy_kwh:.{decimals}f} kWh"
        print(f"  {h.at:%Y-%m-%d %H:%M}  {value}")
    return 0


def _emulate(args: argparse.Namespace) -> int:
    import asyncio
    import secrets

    from erab.clock import RealClock
    from erab.devices import Scenario
    from erab.echonet.node import LocalNode
    from erab.meter.dongle import DongleCore, DongleFaults, PtyDongle
    from erab.meter.skstack import Dialect
    from erab.meter.smartmeter import SmartMeter
    from erab.sim import build_emulation

    rbid = args.route_b_id or secrets.token_hex(16).upper()
    password = args.password or secrets.token_hex(6).upper()
    dialect = Dialect.parse(args.dialect)
    faults = DongleFaults.parse(args.fault)
    clock = RealClock()
    # one emulated home (appliance physics, weather of --seed) with 45 days of meter history
    # behind it; its physics keeps running and drives the meter live
    home = build_emulation(Scenario.generate(1, seed=args.seed), clock.now())
    meter = SmartMeter(home.meters, 0)
    core = DongleCore(
        LocalNode([meter]),
        route_b_id=rbid,
        password=password,
        dialect=dialect,
        line_ending=b"\r" if args.cr else b"\r\n",
        hex_payload=not args.binary,
        faults=faults,
    )

    async def run() -> None:
        async with PtyDongle(core) as dongle:
            info = {
                "pty": dongle.path,
                "route_b_id": rbid,
                "password": password,
                "dialect": dialect.value,
                "faults": list(args.fault),
            }
            if args.json:
                print(json.dumps(info), flush=True)
            else:
                print(f"Wi-SUN dongle emulator on {dongle.path} ({dialect.value})", flush=True)
                print(f"  route B ID: {rbid}\n  password:   {password}", flush=True)
            await dongle.run_meter(
                meter, clock, duration_s=args.duration, advance=home.town.advance_to
            )

    asyncio.run(run())
    return 0


# ----------------------------------------------------------------------------- route A

_MAX_EMULATED_READINGS = 50_000_000  # meters x 30-minute points one process may synthesise


def _clock(args: argparse.Namespace) -> Clock:
    from erab.clock import RealClock, SimulatedClock, parse_start

    if args.now:
        return SimulatedClock(parse_start(args.now), speed=0)
    return RealClock()


def _store_url(args: argparse.Namespace) -> str:
    """--db, else HOME/erab.sqlite of --home, else the environment's (ERAB_DATABASE_URL, or
    ERAB_HOME/erab.sqlite)."""
    from erab.settings import Settings

    if args.db:
        return str(args.db)
    if args.home is not None:
        return f"sqlite:///{Path(args.home).expanduser() / 'erab.sqlite'}"
    return Settings.from_env().database_url


def _store_name(url: str) -> str:
    return url.removeprefix("sqlite:///")


def _collect_hint(args: argparse.Namespace) -> str:
    where = f" --db {args.db}" if args.db else f" --home {args.home}" if args.home else ""
    return f"erab meter ami collect{where}"


def _store_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[..., int]:
    """One line, exit 2, for a store that cannot be opened or used (it names the file)."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        from erab.store import StoreError

        try:
            return handler(args)
        except StoreError as exc:
            raise CliError(str(exc)) from None

    return run


def _open(
    args: argparse.Namespace, *, loss: float = 0.0, create: bool = True
) -> tuple[HeadEnd, Store]:
    """The head-end over the store; with ``create=False`` a missing store raises
    :class:`~erab.store.StoreNotFound` and nothing is created."""
    from erab.store import open_store

    store = open_store(_store_url(args), create=create)
    try:
        return _build(args, store, loss)
    except BaseException:
        store.close()
        raise


def _build(args: argparse.Namespace, store: Store, loss: float) -> tuple[HeadEnd, Store]:
    from erab.clock import JST
    from erab.meter.headend import EmulatedAmi, HeadEnd
    from erab.meter.smartmeter import HISTORY_DAYS, MeterFleet

    size = store.get_setting("ami.meters")
    seed = store.get_setting("ami.seed")
    n = args.meters if args.meters is not None else int(size) if size else 100
    s = args.seed if args.seed is not None else int(seed) if seed else 0
    if size is not None and n != int(size):
        raise CliError(
            f"this store holds a fleet of {size} meters; --meters {n} would mix fleets "
            "(use another --db)"
        )
    if not 1 <= n <= 200_000:
        raise CliError(f"--meters must be 1-200000, got {n}")
    if not 0.0 <= loss < 1.0:
        raise CliError(f"--loss must be in [0, 1), got {loss}")
    clock = _clock(args)
    now = clock.now().astimezone(JST)
    today = datetime(now.year, now.month, now.day, tzinfo=JST)
    # The emulated fleet starts on one fixed day per store, so that every run rebuilds the
    # same meters with the same registers: readings stored by earlier runs stay consistent
    # with the ones read now (a moving start would shift every cumulative value).
    origin_text = store.get_setting("ami.origin")
    origin = (
        today - timedelta(days=HISTORY_DAYS + 1)
        if origin_text is None
        else datetime.fromisoformat(origin_text)
    )
    days = (today - origin).days
    if days < 0:
        raise CliError(
            f"--now {now:%Y-%m-%d %H:%M} is before the first day of this store's emulated "
            f"fleet ({origin:%Y-%m-%d}): give a later --now or use another --db"
        )
    if n * (days + 1) * 48 > _MAX_EMULATED_READINGS:
        raise CliError(
            f"this store's emulated fleet started on {origin:%Y-%m-%d}: emulating {days} days "
            f"of {n} meters is too much for one process; use a new --db"
        )
    store.set_setting("ami.meters", str(n))
    store.set_setting("ami.seed", str(s))
    store.set_setting("ami.origin", origin.isoformat())
    fleet = MeterFleet.synthetic(n, now, days=days, seed=s)
    headend = HeadEnd(EmulatedAmi(fleet, loss_rate=loss, seed=s), store, clock)
    headend.restore_remote_state()
    return headend, store


def _ami_collect(args: argparse.Namespace) -> int:
    if not 0 < args.days <= 45:
        raise CliError(f"--days must be in (0, 45], got {args.days}")
    headend, store = _open(args, loss=args.loss)
    try:
        end = headend.latest_slot_end()
        start = end - timedelta(days=args.days) + timedelta(minutes=30)
        step = 48 * 5  # a line every 5 days of slots (a long collection takes a while)

        def progress(done: int, total: int) -> None:
            if total > step and (done % step == 0 or done == total):
                print(f"collected {done}/{total} slot ends", file=sys.stderr, flush=True)

        reports = headend.collect_range(start, progress=progress)
        gaps = headend.fill_gaps()
        dropped = headend.enforce_retention()
        summary = {
            "slots": len(reports),
            "stored": sum(r.stored for r in reports),
            "missing_after_collect": sum(r.missing for r in reports),
            "gaps": gaps,
            "dropped_by_retention": dropped,
            "latest_slot_end": end,
        }
    finally:
        store.close()
    if args.json:
        _print_json(summary)
    else:
        print(
            f"collected {summary['stored']} readings over {len(reports)} slots up to "
            f"{end:%Y-%m-%d %H:%M %Z}; re-read {gaps.filled} of {gaps.missing_before} gaps, "
            f"{gaps.still_missing} still missing; dropped {dropped} past retention"
        )
    return 0


def _ami_action(args: argparse.Namespace) -> int:
    from erab.meter.headend import HeadEndError, describe_supply

    headend, store = _open(args)
    try:
        if args.action == "read":
            result: Any = headend.read(args.meter_id, actor=args.actor)
        elif args.action == "disconnect":
            result = headend.disconnect(args.meter_id, actor=args.actor)
        elif args.action == "connect":
            result = headend.connect(args.meter_id, actor=args.actor)
        else:
            result = headend.configure(
                args.meter_id,
                breaker_a=args.breaker,
                demand_limit_w=args.demand_limit,
                actor=args.actor,
            )
    except HeadEndError as exc:
        raise CliError(str(exc)) from None
    finally:
        store.close()
    if args.action == "read":
        if args.json:
            _print_json({**asdict(result), "supply": result.supply})
            return 0
        state = "connected" if result.connected else describe_supply(result)
        print(
            f"{result.meter_id}: {result.power_w:.0f} W, import {result.import_kwh} kWh, "
            f"export {result.export_kwh} kWh, {state}, breaker {result.breaker_a or '-'} A, "
            f"demand limit {result.demand_limit_w or '-'} W"
        )
        return 0
    action, meter = result.action, result.meter
    if args.json:
        _print_json({**asdict(action), "supply": result.supply, "meter": meter})
        return 0
    print(
        f"{action.meter_id}: {action.action} {action.result} (action #{action.action_id}); "
        f"{describe_supply(meter)}"
    )
    return 0


def _ami_export(args: argparse.Namespace) -> int:
    import tempfile

    from erab.clock import parse_start
    from erab.meter.headend import HeadEndError
    from erab.store import StoreNotFound

    start, end = parse_start(args.start), parse_start(args.end)
    if end <= start:
        raise CliError(f"--end ({args.end}) must be after --start ({args.start})")
    out_path = Path(args.out) if args.out else None
    if out_path is not None and not out_path.parent.is_dir():
        raise CliError(f"cannot write --out {args.out}: folder {out_path.parent} does not exist")
    try:
        headend, store = _open(args, create=False)
    except StoreNotFound:
        raise CliError(
            f"no meter data to export: {_store_name(_store_url(args))} does not exist; "
            f"collect readings first with `{_collect_hint(args)}`"
        ) from None
    try:
        if out_path is None:
            headend.export(sys.stdout, start, end, fmt=args.format, meter_ids=args.meter_ids)
            return 0
        # written beside the target and renamed over it when complete: a failed export
        # never leaves a half-written file, nor destroys an earlier one
        try:
            fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.")
        except OSError as exc:
            raise CliError(f"cannot write --out {args.out}: {exc.strerror}") from None
        try:
            with open(fd, "w", encoding="utf-8", newline="") as out:
                n = headend.export(out, start, end, fmt=args.format, meter_ids=args.meter_ids)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private: as open() would make it
            os.replace(tmp, out_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        print(f"wrote {n} rows to {args.out}", file=sys.stderr)
    except HeadEndError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        if isinstance(exc, BrokenPipeError):
            raise
        raise CliError(f"cannot write --out {args.out}: {exc.strerror or exc}") from None
    finally:
        store.close()
    return 0


def _ami_status(args: argparse.Namespace) -> int:
    from erab.store import StoreNotFound

    where = _store_name(_store_url(args))
    hint = f"collect readings with `{_collect_hint(args)}`"
    try:
        headend, store = _open(args, create=False)
    except StoreNotFound:
        if args.json:
            _print_json({"store": where, "exists": False, "readings": 0, "hint": hint})
        else:
            print(f"no meter data yet: {where} does not exist; {hint}")
        return 0
    try:
        status = headend.status()
    finally:
        store.close()
    if args.json:
        _print_json({**asdict(status), "store": where, "exists": True})
        return 0
    print(f"store: {where}")
    print(
        f"meters: {status.meters}   readings: {status.readings}   "
        f"actions recorded: {status.actions}"
    )
    if status.readings == 0:
        print(f"no readings stored yet; {hint}")
    else:
        print(f"oldest slot end: {status.oldest_slot_end}   newest: {status.newest_slot_end}")
        print(f"missing in the last day: {status.missing_last_day}")
    print(f"disconnected: {', '.join(status.disconnected) or 'none'}")
    return 0
