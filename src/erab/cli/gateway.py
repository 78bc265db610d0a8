"""``erab gateway``: run a site's gateway (HEMS) and report on it.

The gateway's state (outbox, audit log, command verifier state, ``status.json``) lives in
``<home>/gateway``; the site config (TOML) names the broker, the LAN and the gateway's files
from ``erab pki enrol``.  docs/gateway.md describes both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _state_dir(args: argparse.Namespace) -> Path:
    from erab.settings import Settings

    home: Path = args.home if args.home is not None else Settings.from_env().home
    return home / "gateway"


def _add_home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="gateway home (default: $ERAB_HOME or ./erab-data); its state in HOME/gateway",
    )


def register(subparsers: Any) -> None:
    group: argparse.ArgumentParser = subparsers.add_parser(
        "gateway",
        help="the site gateway (HEMS): discover devices, send telemetry, carry out commands",
        description="The site gateway: discovers the site's ECHONET Lite devices, polls their "
        "telemetry into a store-and-forward outbox, sends it to the broker over MQTT with "
        "mutual TLS, and carries out the RA's signed commands within the site's safety "
        "limits. docs/gateway.md has the site config.",
    )
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="gateway_command", metavar="SUBCOMMAND")

    p = sub.add_parser("run", help="run the gateway for one site until stopped (Ctrl-C)")
    _add_home(p)
    p.add_argument("--config", type=Path, required=True, help="the site config (TOML)")
    p.add_argument(
        "--duration", type=float, default=None, help="stop after this many seconds (default: run)"
    )
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("status", help="identity, link, outbox, inventory and commands in force")
    _add_home(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_status)

    from erab.cli.gateway_fleet import register_fleet

    register_fleet(sub)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio
    import signal
    import sys

    from erab.cli import CliError
    from erab.gateway.config import load_site_config
    from erab.gateway.service import Gateway

    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be more than 0 seconds, got {args.duration:g}")
    config = load_site_config(args.config)
    try:
        gateway = Gateway(config, _state_dir(args))
    except ValueError as exc:
        raise CliError(f"gateway files: {exc}") from None

    async def main() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        if task is not None:
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
        print(
            f"gateway {config.gateway_id} (site {config.site_id}): broker "
            f"{config.broker_host}:{config.broker_port}, polling every "
            f"{config.poll_interval_s:g} s; Ctrl-C stops",
            flush=True,
        )
        try:
            await gateway.run(args.duration)
        except asyncio.CancelledError:
            pass
        finally:
            loop.remove_signal_handler(signal.SIGTERM)

    asyncio.run(main())
    print(
        f"gateway stopped: {len(gateway.inventory)} devices, {gateway.batches} telemetry "
        f"batches stored; status in {gateway.home / 'status.json'}",
        file=sys.stderr,
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from erab.cli import CliError
    from erab.gateway.service import check_status

    try:
        status = check_status(_state_dir(args))
    except FileNotFoundError as exc:
        home = _state_dir(args).parent
        raise CliError(
            f"{exc}; start one with 'erab gateway run --home {home} --config site.toml'"
        ) from exc
    if args.json:
        print(json.dumps(status, indent=2))
        return 0
    cert = status["certificate"]
    link = status["link"]
    outbox = status["outbox"] or {}
    state = ("running" if status["running"] else "stopped") + f", updated {status['updated_at']}"
    if status["not_running_reason"] is not None:  # killed: its file still says running
        state = f"not running ({status['not_running_reason']})"
    lines = [
        f"gateway {status['gateway_id']} (site {status['site_id']}): {state}",
        f"certificate: {cert['subject']}, serial {cert['serial']}, expires {cert['not_after']}",
        f"link: {link['state']} since {link['since']} to {link['broker']}"
        + (f" ({link['error']})" if link["error"] else ""),
        f"outbox: {outbox.get('backlog', '?')} waiting, {outbox.get('dropped_total', '?')} "
        f"dropped, last seq {outbox.get('last_seq', '?')}",
        f"telemetry: {status['polls']} polls, {status['telemetry_batches']} batches, "
        f"last at {status['last_poll_at']}",
        f"devices ({len(status['inventory'])}):",
    ]
    for d in status["inventory"]:
        mark = "allowed" if d["allowed"] else "not allowed"
        lines.append(f"  {d['device_id']:<34} {d['eoj']}  {d['class']:<40} {d['host']}  {mark}")
    for f in status["findings"]:
        lines.append(f"  finding: {f['finding']} device {f['node_id']}/{f['eoj']} at {f['host']}")
    lines.append(f"allow-list: {', '.join(d['device_id'] for d in status['allow_list']) or '-'}")
    active = status["active_commands"]
    lines.append(
        "commands in force: "
        + (", ".join(f"{a['device_id']} (command {a['command_seq']} until {a['end']})"
                     for a in active) or "none")
    )
    meter = status.get("meter")  # absent in a status file of an older gateway
    if meter:
        reading = ("no reading yet" if meter["power_w"] is None
                   else f"{meter['power_w']:g} W at {meter['measured_at']}")  # fmt: skip
        lines.append(f"meter: {meter['meter_id']} by {meter['source'].replace('_', ' ')}, "
                     f"{reading}, {meter['readings']} readings"
                     + (f" ({meter['error']})" if meter["error"] else ""))  # fmt: skip
    ems = status.get("ems")
    if ems:
        last = ems["last"]
        lines.append("local EMS: " + ("off" if not ems["enabled"] else
                     f"on, {ems['actions']} actions" + (
                         f", last {last['power_w']:g} W ({last['reason']}) {last['outcome']}"
                         if last else "")))  # fmt: skip
    print("\n".join(lines))
    return 0
