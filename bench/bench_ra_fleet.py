"""The RA's fan-out at scale: event accepted → 99 % of its commands acknowledged (target ≤ 5 s).

Everything real, each in its own process as a user runs them: ``erab pki init``, ``erab broker
run`` (nats-server), ``erab emulate --homes N`` (the town on loopback), ``erab gateway fleet
--homes N`` (N gateways), ``erab ra import --homes N`` (the registry of that town).  The RA
(``erab.aggregator.service.RaService``, as ``erab ra serve`` runs it) runs in this process:
it ingests the fleet's telemetry until most resources are online, then, per repeat, is given
a down event of half its flexibility starting now; the clock runs from the call to
``create_event`` (check, flexibility of the window, merit order, one signed envelope per
resource, publish) to each command's acknowledgement coming back through JetStream.  The
event is then cancelled (every gateway told) before the next repeat.

Baselines in the same run: the same RA's fan-out alone (``Fanout.send_many``, no planning)
with the event's own commands, and with one battery/PV/aircon command to every gateway of
the fleet (the fan-out to all 1,000); the same clock, from the call to the
acknowledgements.  The gateways start a command at once (``--spread 0``, the RA's
``start_spread_s``), since they acknowledge after starting: with a spread of S seconds, add
up to S to every figure.

    python bench/bench_ra_fleet.py                  # 1,000 homes, 60 s polls (about 10 min)
    python bench/bench_ra_fleet.py --quick          # 50 homes, 10 s polls
    python bench/bench_ra_fleet.py --sites 200 --poll 20 --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_fleet import (
    ERAB,
    allowed_devices,
    command_body,
    start,
    stop,
    wait_for_line,
    wait_status,
)
from erab.aggregator.events import EventRequest
from erab.aggregator.fanout import CommandStage, RaCommand
from erab.aggregator.service import RaService
from erab.echonet.transport import random_loopback_address

# random loopback bases: other benches and tests on this machine use the fixed ones
TOWN_BASE, FLEET_BIND = random_loopback_address(), random_loopback_address()


def ack_figures(commands: list[RaCommand], t0: datetime) -> dict[str, Any]:
    """Seconds from ``t0`` to each acknowledgement: p50, p99, and when 99 % were in."""
    done = sorted((c.acknowledged_at - t0).total_seconds() for c in commands
                  if c.acknowledged_at is not None)  # fmt: skip
    n = len(commands)
    need = max(1, -(-99 * n // 100))  # 99 %, rounded up
    return {
        "commands": n, "acknowledged": len(done),
        "refused": sum(c.stage is CommandStage.REFUSED for c in commands),
        "p50_s": statistics.median(done) if done else None,
        "p99_s": done[int(0.99 * (len(done) - 1))] if done else None,
        "ninety_nine_percent_s": done[need - 1] if len(done) >= need else None,
    }  # fmt: skip


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


async def settle(commands: list[RaCommand], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(c.stage is CommandStage.SENT for c in commands) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def measure(home: Path, sites: int, repeats: int, spread_s: float, poll_s: float) -> None:
    ra = RaService(home, start_spread_s=spread_s)
    stop_ra, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ra.run(stop_ra, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 60)
        # until the resources the gateways report are all heard: the count stops growing
        # for two poll intervals (the registry also lists devices nobody reports on)
        t = changed = time.monotonic()
        seen = 0
        while time.monotonic() - changed < 2 * poll_s + 5 and time.monotonic() - t < 600:
            await asyncio.sleep(1.0)
            online = int(ra.state.online.sum())
            if online != seen:
                seen, changed = online, time.monotonic()
        if task.done():
            raise RuntimeError(f"the RA stopped: {task.exception()!r}")
        print(f"RA: {int(ra.state.online.sum())} of {len(ra.resources)} resources online after "
              f"{time.monotonic() - t:.1f} s; flexibility down {ra.flexibility_kw('down'):.1f} kW")
        runs: list[dict[str, Any]] = []
        same: list[dict[str, Any]] = []
        every: list[dict[str, Any]] = []
        devices = allowed_devices(home)
        for r in range(repeats):
            kw = -0.5 * ra.flexibility_kw("down")
            t0 = ra.clock.now()
            event = await ra.create_event(EventRequest(kw, t0, timedelta(minutes=30),
                                                       requested_by="bench"))  # fmt: skip
            accepted_s = (ra.clock.now() - t0).total_seconds()
            commands = ra.plans[event.event_id].commands
            await settle(commands, 60)
            if task.done():
                raise RuntimeError(f"the RA stopped: {task.exception()!r}")
            figures = {**ack_figures(commands, t0), "accepted_s": accepted_s}
            runs.append(figures)
            kinds: dict[str, int] = {}
            for row in ra.plans[event.event_id].plan.dispatched:
                kind = ra.resources[int(row)].device_class
                kinds[kind] = kinds.get(kind, 0) + 1
            print(f"  event {r + 1}: {kw:.1f} kW, {len(ra.plans[event.event_id].plan.dispatched)} "
                  f"resources dispatched {kinds}, {figures['commands']} commands, planned and "
                  f"sent in {accepted_s:.3f} s; acknowledged {figures['acknowledged']} "
                  f"(refused {figures['refused']}); p50 {fmt(figures['p50_s'])}, p99 "
                  f"{fmt(figures['p99_s'])}, 99 % after {fmt(figures['ninety_nine_percent_s'])}")
            await ra.cancel_event(event.event_id, "bench")
            assert ra.fanout is not None
            cancels = [c for c in ra.fanout.commands.values()
                       if c.event_id == event.event_id and c.body["type"] == "cancel"]
            await settle(cancels, 60)
            # baselines: the fan-out alone (no planning) with the event's own commands, and
            # with one command to every gateway of the fleet
            for rows, items in ((same, [(c.gateway_id, c.body) for c in commands]),
                                (every, [(gw, command_body(ids[0], ra.clock.now()))
                                         for gw, ids in devices.items() if ids])):  # fmt: skip
                await asyncio.sleep(1.0)
                t0 = ra.clock.now()
                sent = await ra.fanout.send_many(items)
                await settle(sent, 60)
                rows.append(ack_figures(sent, t0))
                cancels = await ra.fanout.send_many(
                    [(c.gateway_id, {"type": "cancel", "device_id": c.body["device_id"]})
                     for c in sent])  # fmt: skip
                await settle(cancels, 60)

        def med(rows: list[dict[str, Any]], key: str) -> float:
            return statistics.median(float(x[key]) for x in rows if x[key] is not None)

        p99, q99 = med(runs, "p99_s"), med(runs, "ninety_nine_percent_s")
        print(f"RA event, {sites} sites, median of {repeats}: accepted (planned + sent) "
              f"{med(runs, 'accepted_s'):.3f} s; acknowledgements p50 {med(runs, 'p50_s'):.3f} "
              f"s, p99 {p99:.3f} s; 99 % acknowledged after {q99:.3f} s (target <= 5 s)")
        for name, rows in (("the event's commands", same), ("one to every gateway", every)):
            q = med(rows, "ninety_nine_percent_s")
            print(f"baseline, the fan-out alone, {name} ({rows[0]['commands']} commands): p50 "
                  f"{med(rows, 'p50_s'):.3f} s, p99 {med(rows, 'p99_s'):.3f} s, 99 % after "
                  f"{q:.3f} s; RA event / this (99 %) = {q99 / q:.2f}")
    finally:
        stop_ra.set()
        await asyncio.gather(task, return_exceptions=True)


def main() -> None:
    logging.getLogger("erab.ra.alerts").setLevel(logging.ERROR)  # the fleet's 30-day certs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000, help="homes in the town (default 1000)")
    parser.add_argument("--poll", type=float, default=60.0, help="poll interval s (default 60)")
    parser.add_argument("--repeats", type=int, default=3, help="events (default 3)")
    parser.add_argument("--spread", type=float, default=0.0,
                        help="the RA's start spread, s (default 0)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="50 sites, 10 s polls, 2 events")
    args = parser.parse_args()
    if args.quick:
        args.sites, args.poll, args.repeats = 50, 10.0, 2
    n = args.sites
    with tempfile.TemporaryDirectory(prefix="bench-ra-fleet-") as tmp:
        root = Path(tmp)
        home = root / "home"
        subprocess.run([*ERAB, "pki", "init", "--home", str(home)], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run([*ERAB, "ra", "import", "--home", str(home), "--homes", str(n),
                        "--stores", "0"], check=True, capture_output=True)  # fmt: skip
        broker = start(["broker", "run", "--home", str(home), "--port", "0", "--mqtt-port", "0",
                        "--monitor-port", "0"], root / "broker.log")  # fmt: skip
        town = fleet = None
        try:
            wait_for_line(root / "broker.log", "broker ready", broker, 30)
            town = start(["emulate", "--homes", str(n), "--stores", "0", "--base", TOWN_BASE,
                          "--history-days", "0", "--duration", "100000"],
                         root / "town.log")  # fmt: skip
            wait_for_line(root / "town.log", "serving", town, 600)
            t = time.monotonic()
            fleet = start(["gateway", "fleet", "--home", str(home), "--homes", str(n),
                           "--stores", "0", "--base", TOWN_BASE, "--bind-base", FLEET_BIND,
                           "--poll", str(args.poll)], root / "fleet.log")  # fmt: skip
            up = wait_status(home, lambda s: s.get("all_up_after_s") is not None, 900, fleet,
                             root / "fleet.log")  # fmt: skip
            print(f"town of {n} homes and its {n} gateways up in {time.monotonic() - t:.1f} s "
                  f"(links {up['links_up']}/{n})")
            asyncio.run(measure(home, n, args.repeats, args.spread, args.poll))
        finally:
            for process in (fleet, town, broker):
                if process is not None:
                    stop(process)


if __name__ == "__main__":
    main()
