"""``erab emulate``: a town of emulated homes and stores served over ECHONET Lite.

Every site is one node at its own loopback address (127.1.0.1, 127.1.0.2, … by default)
with its appliances and its smart meter (0x0288, 45 days of 30-minute history generated
at start from the town's own physics).  Runs until Ctrl-C, or for ``--duration`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from erab.cli import CliError

if TYPE_CHECKING:
    from erab.clock import SimulatedClock
    from erab.devices import Scenario, Town
    from erab.devices.server import TownServer
    from erab.meter.smartmeter import MeterFleet


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "emulate",
        help="serve a town of emulated homes and stores over ECHONET Lite (loopback)",
        description="Start emulated homes and stores, each an ECHONET Lite node at its own "
        "loopback address, with appliance physics, seeded weather and a smart meter with "
        "45 days of 30-minute history.  Runs until Ctrl-C (or --duration).",
    )
    p.add_argument("--homes", type=int, default=None, help="number of homes (default 5)")
    p.add_argument("--stores", type=int, default=None, help="number of stores (default 1)")
    p.add_argument("--seed", type=int, default=None, help="seed for equipment, weather, trips")
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
    p.add_argument(
        "--json",
        action="store_true",
        help="print the sites as JSON (and a JSON summary at the end)",
    )
    p.set_defaults(handler=run)


@dataclass
class Emulation:
    """A running town: physics, meters and the nodes serving them."""

    scenario: Scenario
    clock: SimulatedClock
    town: Town
    meters: MeterFleet
    server: TownServer


def build_emulation(
    scenario: Scenario,
    start: datetime,
    *,
    speed: float = 1.0,
    history_days: int = 45,
    base: str = "127.1.0.1",
    port: int = 3610,
    interface: str | None = None,
    tick_s: float = 1.0,
    progress: Any = None,
) -> Emulation:
    """Build the town at ``start`` with ``history_days`` of meter history behind it."""
    from erab.clock import JST, SimulatedClock
    from erab.devices import Town
    from erab.devices.server import TownServer
    from erab.meter.smartmeter import SLOT_S, MeterFleet, SmartMeter

    if not 0 <= history_days <= 99:
        raise CliError(f"--history-days must be 0-99, got {history_days}")
    start_s = start.timestamp()
    day_s = 86_400
    midnight = (start_s + 9 * 3600) // day_s * day_s - 9 * 3600
    origin_s = midnight - history_days * day_s
    town = Town(scenario, datetime.fromtimestamp(origin_s, JST), max_step_s=1800.0)
    import numpy as np

    # Meters in service for years: a starting register between 0 and 20,000 kWh.
    rng = np.random.default_rng([scenario.seed & 0xFFFFFFFF, 31])
    meters = MeterFleet(
        town.n_sites,
        datetime.fromtimestamp(origin_s, JST),
        initial_import_kwh=rng.uniform(0.0, 20_000.0, town.n_sites),
        capacity_days=max(history_days, 45) + 2,
    )
    last_slot_s = origin_s + (start_s - origin_s) // SLOT_S * SLOT_S

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("history", done, total)

    net = town.simulate(last_slot_s, SLOT_S, progress=report)
    hours = SLOT_S / 3600.0
    meters.load_history((net.clip(min=0) * hours), (-net).clip(min=0) * hours)
    town.max_step_s = 60.0
    town.observers.append(meters.observe)
    town.advance_to(start_s)
    clock = SimulatedClock(start, speed=speed)
    server = TownServer(
        town,
        clock,
        base=base,
        port=port,
        interface=interface,
        tick_s=tick_s,
        extra_objects=lambda i: [SmartMeter(meters, i)],
    )
    return Emulation(scenario, clock, town, meters, server)


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


def run(args: argparse.Namespace) -> int:
    from erab.clock import RealClock, parse_start

    if args.speed <= 0:
        raise CliError(f"--speed must be > 0, got {args.speed}")
    if args.tick <= 0:
        raise CliError(f"--tick must be > 0, got {args.tick}")
    if args.duration is not None and args.duration < 0:
        raise CliError(f"--duration must be >= 0, got {args.duration}")
    scenario = _scenario(args)
    if not scenario.sites:
        raise CliError("nothing to emulate: give --homes and/or --stores (or a scenario)")
    start = parse_start(args.start) if args.start else RealClock().now()
    from erab.devices.server import site_addresses

    site_addresses(args.base, len(scenario.sites))  # a bad --base fails before any work
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


async def _serve_until_stopped(
    args: argparse.Namespace, scenario: Scenario, start: datetime, stop: asyncio.Event
) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    from erab.clock import JST

    err = Console(stderr=True)
    no_bar = args.json or not err.is_terminal  # plain lines when not on a terminal
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        console=err,
        disable=no_bar,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = {"history": "meter history (30-min slots)", "nodes": "starting nodes"}[
                    stage
                ]
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done)
            if no_bar and not args.json and done == total:
                print(f"{stage}: {done}/{total}", file=sys.stderr)

        emulation = build_emulation(
            scenario,
            start,
            speed=args.speed,
            history_days=args.history_days,
            base=args.base,
            port=args.port,
            interface=args.iface,
            tick_s=args.tick,
            progress=progress,
        )
        await emulation.server.start(lambda d, t: progress("nodes", d, t))

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
    town = emulation.town
    summary = {
        "stopped": datetime.fromtimestamp(town.time_s, JST).isoformat(),
        "sites": town.n_sites,
        "import_kwh": round(float(emulation.meters.import_wh.sum()) / 1000.0, 3),
        "export_kwh": round(float(emulation.meters.export_wh.sum()) / 1000.0, 3),
    }
    if args.json:
        print(json.dumps({"summary": summary}), flush=True)
    else:
        print(
            f"stopped at simulated {summary['stopped']}; {town.n_sites} sites shut down", flush=True
        )
    return 0


def _print_sites(
    endpoints: list[dict[str, Any]], start: datetime, args: argparse.Namespace
) -> None:
    from rich.console import Console
    from rich.table import Table

    from erab.echonet.classdb import get_class

    def class_name(eoj: str) -> str:
        try:
            return str(get_class(int(eoj[2:6], 16)).short_name)
        except KeyError:
            return eoj

    table = Table(
        title=f"erab town: {len(endpoints)} sites from {start.isoformat()} at {args.speed:g}x"
    )
    for col in ("site", "kind", "address", "objects"):
        table.add_column(col)
    for e in endpoints:
        table.add_row(
            e["name"],
            e["kind"],
            f"{e['address']}:{e['port']}",
            ", ".join(f"{o} {class_name(o)}" for o in e["objects"]),
        )
    Console(soft_wrap=True).print(table)
    until = f"for {args.duration:g} s" if args.duration is not None else "until Ctrl-C"
    if endpoints:
        first = endpoints[0]
        print(f"try: erab el get {first['address']} 0x028801 0xE7 0xE0   (the site's meter)")
    print(f"serving {until}", flush=True)
