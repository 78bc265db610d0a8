"""``erab emulate``: a town of emulated homes and stores served over ECHONET Lite.

Every site is one node at its own loopback address (127.1.0.1, 127.1.0.2, … by default)
with its appliances and its smart meter (0x0288, 45 days of 30-minute history generated
at start from the town's own physics).  Runs until Ctrl-C, or for ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import signal
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from erab.cli import CliError
from erab.cli.flags import deprecated_alias

if TYPE_CHECKING:
    from erab.devices import Scenario


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "emulate",
        help="serve a town of emulated homes and stores over ECHONET Lite (loopback)",
        description="Start emulated homes and stores, each an ECHONET Lite node at its own "
        "loopback address, with appliance physics, seeded weather and a smart meter with "
        "45 days of 30-minute history.  Runs until Ctrl-C (or --duration).",
        epilog="example: erab emulate --homes 20 --stores 2 --speed 60, then from another "
        "shell: erab el discover.  Scenario file format, models and properties served: "
        "docs/devices.md.",
    )
    p.add_argument("--homes", type=int, default=None, help="number of homes (default 5)")
    p.add_argument("--stores", type=int, default=None, help="number of stores (default 1)")
    p.add_argument(
        "--seed", type=int, default=None, help="seed for equipment, weather, trips (default 0)"
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="simulated seconds per real second (default 1)"
    )
    p.add_argument(
        "--start", default=None, help="simulated start time, ISO 8601 (naive = JST); default now"
    )
    p.add_argument(
        "--scenario",
        default=None,
        metavar="FILE",
        help="scenario file (.json or .toml) setting the equipment mix",
    )
    p.add_argument(
        "--base",
        default="127.1.0.1",
        help="address of the first site; later sites count up (default 127.1.0.1)",
    )
    p.add_argument("--port", type=int, default=3610, help="UDP port (default 3610)")
    p.add_argument(
        "--iface",
        default=None,
        help="interface for multicast announcements (default: loopback only)",
    )
    p.add_argument(
        "--history-days",
        type=int,
        default=45,
        help="days of past meter history to generate at start (0-99, default 45)",
    )
    p.add_argument(
        "--tick", type=float, default=1.0, help="real seconds between physics updates (default 1)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many real seconds (default: run until Ctrl-C)",
    )
    deprecated_alias(p, "--seconds", new="--duration", type=float, metavar="SECONDS")
    p.add_argument(
        "--announce-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="every site multicasts INF of its devices' power (battery SOC, meter 0xE7) "
        "every SECONDS of simulated time, each site at its own moment; 0 = only on "
        "status changes (default 60)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the sites as JSON (and a JSON summary at the end)",
    )
    p.add_argument(
        "--calibration",
        action="store_true",
        help="serve nothing: run the calibration town for a year (--seed, about 20 s) and "
        "print emulated against published Japanese figures with their sources "
        "(docs/calibration.md); with --json, one JSON object",
    )
    p.set_defaults(handler=run)


def _scenario(args: argparse.Namespace) -> Scenario:
    from erab.devices import Scenario, load_scenario

    for name in ("homes", "stores"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise CliError(f"--{name} must be >= 0, got {value}")
    if args.scenario:
        return load_scenario(args.scenario, homes=args.homes, stores=args.stores, seed=args.seed)
    homes = 5 if args.homes is None else args.homes
    stores = 1 if args.stores is None else args.stores
    return Scenario.generate(homes, stores, seed=args.seed or 0)


def run_calibration(args: argparse.Namespace, years: list[Any] | None = None) -> int:
    """Print the calibration table; ``years`` (CalibrationYear runs) if already computed."""
    from erab.devices.calibration import calibration_table, calibration_year, format_table

    seed = args.seed or 0
    rows = calibration_table(years if years is not None else [calibration_year(seed=seed)])
    if args.json:
        print(json.dumps({"seed": seed, "rows": [r.as_dict() for r in rows]}), flush=True)
    else:
        print(format_table(rows), flush=True)
    return 0 if all(r.within for r in rows) else 1


def run(args: argparse.Namespace) -> int:
    from erab.clock import RealClock, parse_start

    if args.calibration:
        return run_calibration(args)
    if args.speed <= 0:
        raise CliError(f"--speed must be > 0, got {args.speed}")
    if args.tick <= 0:
        raise CliError(f"--tick must be > 0, got {args.tick}")
    if args.duration is not None and args.duration < 0:
        raise CliError(f"--duration must be >= 0, got {args.duration}")
    if not 0 <= args.history_days <= 99:
        raise CliError(f"--history-days must be 0-99, got {args.history_days}")
    if not 0 <= args.announce_every < float("inf"):
        raise CliError(
            f"--announce-every must be >= 0 seconds (0 turns it off), got {args.announce_every}"
        )
    scenario = _scenario(args)
    if not scenario.sites:
        raise CliError("nothing to emulate: give --homes and/or --stores (or a scenario)")
    start = parse_start(args.start) if args.start else RealClock().now()
    from erab.devices.server import site_addresses

    site_addresses(args.base, len(scenario.sites))  # a bad --base fails before any work
    if args.iface is not None:
        from erab.echonet.transport import interface_index

        interface_index(args.iface)  # so does an unknown --iface
    from erab.sim import check_site_addresses

    try:  # and an address in use, before seconds of history are computed
        check_site_addresses(scenario, base=args.base, port=args.port)
    except OSError as exc:
        if not _address_in_use(exc):
            raise
        raise _in_use_error(exc) from exc
    return asyncio.run(_serve(args, scenario, start))


async def _serve(args: argparse.Namespace, scenario: Scenario, start: datetime) -> int:
    # Ctrl-C / SIGTERM from here on means "shut down cleanly", also while starting.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        return await _serve_until_stopped(args, scenario, start, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


class _StoppedWhileStarting(Exception):
    """Ctrl-C (or SIGTERM) arrived before the town was serving."""


STAGE_LABELS = {"history": "meter history (30-min slots)", "nodes": "starting nodes"}


async def _serve_until_stopped(
    args: argparse.Namespace, scenario: Scenario, start: datetime, stop: asyncio.Event
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from erab.clock import JST
    from erab.sim import build_emulation

    err = Console(stderr=True)
    # On a terminal: live bars.  Otherwise (a pipe, a log file): one plain line per
    # finished stage and no bar.  With --json: nothing on stderr.
    bars = not args.json and err.is_terminal
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=err,
        disable=not bars,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stop.is_set():  # Ctrl-C while starting: give up the start
                raise _StoppedWhileStarting
            if bars:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(STAGE_LABELS[stage], total=total)
                bar.update(tasks[stage], completed=done)
            elif not args.json and done == total:
                print(f"{STAGE_LABELS[stage]}: {done}/{total}", file=sys.stderr, flush=True)

        try:
            # in a thread, so that Ctrl-C is seen while the history is computed
            emulation = await asyncio.to_thread(
                build_emulation,
                scenario,
                start,
                speed=args.speed,
                history_days=args.history_days,
                base=args.base,
                port=args.port,
                interface=args.iface,
                tick_s=args.tick,
                announce_every_s=args.announce_every,
                progress=progress,
            )
        except _StoppedWhileStarting:
            print("stopped while starting", file=sys.stderr, flush=True)
            return 0
        try:
            await emulation.start(progress)
        except _StoppedWhileStarting:
            await emulation.server.close()
            print("stopped while starting", file=sys.stderr, flush=True)
            return 0
        except OSError as exc:  # taken since the check at the start
            if not _address_in_use(exc):
                raise
            raise _in_use_error(exc) from exc

    endpoints = [e.as_dict() for e in emulation.server.endpoints()]
    if args.json:
        print(
            json.dumps(
                {
                    "start": start.astimezone(JST).isoformat(),
                    "speed": args.speed,
                    "seed": scenario.seed,
                    "sites": endpoints,
                }
            ),
            flush=True,
        )
    else:
        _print_sites(endpoints, start, args)

    runner = asyncio.create_task(emulation.server.run(args.duration))
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (runner, waiter):
            task.cancel()
        await asyncio.gather(runner, waiter, return_exceptions=True)
        await emulation.server.close()
    summary = emulation.summary()
    if args.json:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        print(
            f"stopped at simulated {summary['stopped']}; {summary['sites']} "
            f"site{'' if summary['sites'] == 1 else 's'} shut down; "
            f"during the run the meters counted {summary['import_kwh']:.3f} kWh imported, "
            f"{summary['export_kwh']:.3f} kWh exported",
            flush=True,
        )
    return 0


def _in_use_error(exc: OSError) -> CliError:
    """The transport says which address is in use; the advice is this command's."""
    return CliError(
        f"{exc} (is another erab emulate running there? give another --base, e.g. --base 127.2.0.1)"
    )


def _address_in_use(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return True
        exc = exc.__cause__
    return False


TABLE_ROWS = 24
"""Towns up to this many sites are listed in full; a bigger one shows its first
``TABLE_HEAD`` sites and totals (``--json`` lists every site)."""
TABLE_HEAD = 8


def _print_sites(
    endpoints: list[dict[str, Any]], start: datetime, args: argparse.Namespace
) -> None:
    from rich.console import Console
    from rich.table import Table

    from erab.clock import JST
    from erab.echonet.classdb import get_class

    def class_name(eoj: str) -> str:
        try:
            return str(get_class(int(eoj[2:6], 16)).short_name)
        except KeyError:
            return eoj

    begin = start.astimezone(JST).isoformat(timespec="seconds")
    table = Table(title=f"erab town: {len(endpoints)} sites from {begin} at {args.speed:g}x")
    for col in ("site", "kind", "address", "objects"):
        table.add_column(col)
    shown = endpoints if len(endpoints) <= TABLE_ROWS else endpoints[:TABLE_HEAD]
    for e in shown:
        table.add_row(
            e["name"],
            e["kind"],
            f"{e['address']}:{e['port']}",
            ", ".join(f"{o} {class_name(o)}" for o in e["objects"]),
        )
    Console(soft_wrap=True).print(table)
    if len(shown) < len(endpoints):
        for line in town_totals(endpoints, len(shown), class_name):
            print(line)
    for line in try_lines(endpoints):
        print(line)
    until = f"for {args.duration:g} s" if args.duration is not None else "until Ctrl-C"
    print(f"serving {until}", flush=True)


def town_totals(endpoints: list[dict[str, Any]], shown: int, class_name: Any) -> list[str]:
    """Lines that stand for the sites a table leaves out: how many, their addresses, and
    the whole town's sites by kind and objects by class."""
    rest = endpoints[shown:]
    kinds: dict[str, int] = {}
    classes: dict[str, int] = {}
    for e in endpoints:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        for o in e["objects"]:
            classes[o[:6]] = classes.get(o[:6], 0) + 1
    by_kind = ", ".join(f"{n} {k}{'' if n == 1 else 's'}" for k, n in kinds.items())
    by_class = ", ".join(
        f"{n} {code} {class_name(code + '01')}" for code, n in sorted(classes.items())
    )
    return [
        f"… {len(rest)} more sites ({rest[0]['address']} to {rest[-1]['address']}); "
        f"--json lists all",
        f"total: {len(endpoints)} sites: {by_kind}",
        f"objects: {by_class}",
    ]


def try_lines(endpoints: list[dict[str, Any]]) -> list[str]:
    """Commands to try against the running town: a meter, and a battery if there is one."""
    if not endpoints:
        return []
    first = endpoints[0]
    commands = [
        (
            f"erab el get {first['address']} 0x028801 0xE7 0xE0",
            f"{first['name']}'s smart meter: power now (W), import count",
        )
    ]
    battery = next((e for e in endpoints if "0x027D01" in e["objects"]), None)
    if battery is not None:
        where = battery["address"]
        commands += [
            (
                f"erab el get {where} 0x027D01 0xE4 0xDA 0xD3 0xA5",
                f"{battery['name']}'s battery: SOC %, mode, power W (+ charging), dischargeable Wh",
            ),
            (
                f"erab el set {where} 0x027D01 0xDA=discharging",
                "discharges at 0xEC W, at most the site's import unless the site allows "
                "battery export, until 0xA5 is 0 (10 % SOC reserve); "
                f"see it on 0x028801 0xE7 at {where}",
            ),
        ]
    width = max(len(c) for c, _ in commands)
    return [
        f"{'try:' if k == 0 else '    '} {c:<{width}}  ({why})"
        for k, (c, why) in enumerate(commands)
    ]
