"""``erab gateway fleet``: one gateway per site of an emulated town, all in one process.

The sites are the town's (the same ``--homes/--stores/--seed/--scenario/--base`` as ``erab
emulate``), so the fleet finds each site's devices where the town serves them.  docs/gateway.md
("A fleet of gateways") walks through it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register_fleet(sub: Any) -> None:
    p = sub.add_parser(
        "fleet",
        help="run one gateway per site of an emulated town in one process (demos, load tests)",
        description="Run one whole gateway per site of an 'erab emulate' town: each with its "
        "own certificate (issued here by the deployment's CA on first run), MQTT connection, "
        "controller, outbox and audit log. First run: enrols the gateways, lets the broker "
        "admit them, discovers each site and allows its controllable devices.",
        epilog="example: erab pki init --home H; erab broker run --home H & erab emulate "
        "--homes 100 & erab gateway fleet --home H --homes 100",
    )
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="deployment home made by 'erab pki init' (default: $ERAB_HOME or ./erab-data); "
        "the fleet's files go to HOME/fleet",
    )
    p.add_argument("--homes", type=int, default=None, help="homes in the town (default 5)")
    p.add_argument("--stores", type=int, default=None, help="stores in the town (default 1)")
    p.add_argument("--seed", type=int, default=None, help="the town's seed (default 0)")
    p.add_argument(
        "--scenario", default=None, metavar="FILE", help="the town's scenario file (.json/.toml)"
    )
    p.add_argument(
        "--base",
        default="127.1.0.1",
        help="address of the town's first site, as given to erab emulate (default 127.1.0.1)",
    )
    p.add_argument(
        "--bind-base",
        default="127.3.0.1",
        help="the first gateway's own LAN address; later gateways count up (default 127.3.0.1)",
    )
    p.add_argument(
        "--broker",
        default=None,
        metavar="HOST:PORT",
        help="the broker's MQTT listener (default: the broker running from HOME)",
    )
    p.add_argument(
        "--poll",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="telemetry poll interval of every gateway (default 60)",
    )
    p.add_argument(
        "--heartbeat",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="heartbeat interval of every gateway (default 60)",
    )
    p.add_argument(
        "--recommission",
        action="store_true",
        help="discover every site again and rewrite its allow-list (default: only new sites)",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop after this many seconds (default: run until Ctrl-C)",
    )
    p.add_argument("--json", action="store_true", help="print the final status as JSON")
    p.set_defaults(handler=cmd_fleet)


def _broker(args: argparse.Namespace, home: Path) -> tuple[str, int]:
    from erab.bus import BrokerHome
    from erab.bus.broker import read_state
    from erab.cli import CliError

    if args.broker is not None:
        host, sep, port = str(args.broker).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise CliError(f"--broker {args.broker!r}: give HOST:PORT, e.g. 127.0.0.1:8883")
        return host, int(port)
    running = read_state(BrokerHome(home))
    if running is None:
        raise CliError(
            f"no broker is running from {home}; start one with 'erab broker run --home {home}' "
            "or give --broker HOST:PORT"
        )
    return running.host, running.mqtt_port


def _sites(args: argparse.Namespace) -> list[Any]:
    from erab.cli import CliError
    from erab.devices import Scenario, ScenarioError, load_scenario
    from erab.devices.server import site_addresses
    from erab.gateway.fleet import FleetSite

    for name in ("homes", "stores"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise CliError(f"--{name} must be >= 0, got {value}")
    try:
        if args.scenario:
            scenario = load_scenario(
                args.scenario, homes=args.homes, stores=args.stores, seed=args.seed
            )
        else:
            homes = 5 if args.homes is None else args.homes
            stores = 1 if args.stores is None else args.stores
            scenario = Scenario.generate(homes, stores, seed=args.seed or 0)
        addresses = site_addresses(args.base, len(scenario.sites))
    except (ScenarioError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from None
    if not scenario.sites:
        raise CliError("no sites: give --homes and/or --stores (or a scenario)")
    return [FleetSite(spec.name, a) for spec, a in zip(scenario.sites, addresses, strict=True)]


def cmd_fleet(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from erab.cli import CliError
    from erab.gateway.config import SiteConfigError
    from erab.gateway.fleet import Fleet, FleetError, FleetSettings, FleetStatus
    from erab.settings import Settings

    for flag, value in (("--poll", args.poll), ("--heartbeat", args.heartbeat)):
        if not value > 0:
            raise CliError(f"{flag} must be more than 0 seconds, got {value:g}")
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be more than 0 seconds, got {args.duration:g}")
    home: Path = args.home if args.home is not None else Settings.from_env().home
    sites = _sites(args)
    host, port = _broker(args, home)
    settings = FleetSettings(
        broker_host=host, broker_port=port, bind_base=args.bind_base,
        poll_interval_s=args.poll, heartbeat_interval_s=args.heartbeat,
    )  # fmt: skip
    quiet = args.json

    def progress(stage: str, done: int, total: int) -> None:
        if not quiet and (done == total or done % 100 == 0):
            print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)

    def report(status: FleetStatus) -> None:
        if not quiet:
            print(
                f"gateways {status.started}/{status.gateways} started, {status.links_up} linked; "
                f"{status.polls} polls, {status.telemetry_batches} batches, backlog "
                f"{status.backlog}, dropped {status.dropped}, commands in force "
                f"{status.active_commands}; {status.rss_bytes / 2**20:.0f} MiB",
                file=sys.stderr, flush=True,
            )  # fmt: skip

    async def main() -> FleetStatus:
        fleet = Fleet(home, sites, settings)
        new = fleet.enrol(progress)
        if new and not quiet:
            print(f"enrolled {len(new)} gateways; the broker admits them", file=sys.stderr)
        counts = await fleet.commission(again=args.recommission, progress=progress)
        if counts and not quiet:
            silent = [s for s, n in counts.items() if n == 0]
            print(
                f"commissioned {len(counts)} sites, {sum(counts.values())} devices allowed"
                + (f"; no controllable device found at {len(silent)} ({', '.join(silent[:5])})"
                   if silent else ""),
                file=sys.stderr,
            )  # fmt: skip
        if not quiet:
            print(
                f"running {len(sites)} gateways against the broker at {host}:{port}, polling "
                f"every {args.poll:g} s; status in {fleet.dir / 'fleet.json'}; Ctrl-C stops",
                file=sys.stderr, flush=True,
            )  # fmt: skip
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await fleet.run(args.duration, on_status=report)
        except asyncio.CancelledError:
            return fleet.status
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    try:
        status = asyncio.run(main())
    except (FleetError, SiteConfigError) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        return 130
    if args.json:
        print(json.dumps(status.as_dict(), indent=2))
    else:
        report(status)
    return 0
