"""``erab gateway fleet`` at scale: connect time, memory and CPU per gateway, command round trip.

Everything real and each in its own process, as a user runs them: ``erab pki init``, ``erab
broker run`` (nats-server), ``erab emulate --homes N`` (the town: N ECHONET Lite nodes on
loopback), ``erab gateway fleet --homes N`` (N gateways in one process).  The bench process
plays the RA: a JetStream consumer for acknowledgements and the command signer.

1. Connect: from the fleet's first gateway start to every MQTT link up (``fleet.json``).
2. Memory per gateway: the fleet process's RSS with every gateway connected and polling, less
   its RSS before the first gateway was made, over N.  Target ≤ 2 MiB.
3. CPU per gateway-poll: the fleet process's CPU time (user + system) over steady windows of
   one poll interval each (``--windows``, default 3), over the gateway-polls done in each:
   everything the fleet does per gateway (poll over UDP, outbox, MQTT over TLS, heartbeats,
   idle timers); the median window.  Target ≤ 1 ms.  Baseline in the same run: the CPU of
   one bare ``Controller`` reading the same properties from every site at once (ECHONET Lite
   alone: no outbox, no TLS, no broker), per site, median of 5 rounds; ratio.
4. Command round trip (skipped with --no-commands): one signed command per gateway (battery
   discharge, else PV limit, else air-conditioner offset; to a device on its allow-list), all
   published at once: sign → publish → broker → verify → envelope → ECHONET Lite Set →
   read-back → acknowledgement → JetStream → RA.  p50/p99 per command from its signing, and
   the time until 99 % are acknowledged; ``--rounds`` bursts (default 3, 10 s apart), each
   printed, and the median of their p50s and p99s.  Target p99 ≤ 2 s.  Each round also
   prints the legs of the round trip (p50 / p99), by the wall clock the bench and the fleet
   share: down (signed → the gateway's ``received_at``), gateway (``received_at`` → the
   ack's ``sent_at``: verify, commit, Gets, Set, read-back) and up (``sent_at`` → the bench
   has the ack: group commit, MQTT, broker, JetStream).  The commands have no start spread
   (``max_delay_s`` left out: the gateway acts at once), so the figure is the chain's own.

    python bench/bench_fleet.py                      # 1,000 sites, 60 s polls (about 5 min)
    python bench/bench_fleet.py --quick              # 50 sites, 10 s polls
    python bench/bench_fleet.py --sites 200 --poll 10 --window 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

from erab.bus import Acknowledgement, BrokerHome, RaLink, Stream
from erab.bus.broker import read_state
from erab.clock import RealClock
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.gateway.service import points_of
from erab.security import EnvelopeSigner, MemorySequenceCounter, SecurityHome
from erab.security.keys import load_ed25519_key

ERAB = [sys.executable, "-m", "erab"]
TOWN_BASE = "127.61.0.1"
FLEET_BIND = "127.62.0.1"


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*ERAB, *args], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def wait_for_line(log: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            sys.exit(f"{process.args} stopped: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.2)
    sys.exit(f"timed out waiting for {text!r} in {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def fleet_status(home: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((home / "fleet" / "fleet.json").read_text())
        return data
    except (OSError, ValueError):
        return {}


def wait_status(home: Path, ok: Any, timeout: float, fleet: subprocess.Popen[bytes],
                log: Path) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = fleet_status(home)
        if status and ok(status):
            return status
        if fleet.poll() is not None:
            sys.exit(f"the fleet stopped: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.5)
    sys.exit(f"timed out; last fleet status: {fleet_status(home)}")


def allowed_devices(home: Path) -> dict[str, list[str]]:
    found = {}
    for path in sorted((home / "fleet").glob("*/site.toml")):
        config = tomllib.loads(path.read_text())
        found[config["gateway_id"]] = [d["device_id"] for d in config.get("device", [])]
    return found


def site_nodes(home: Path) -> list[tuple[str, list[EOJ]]]:
    nodes = []
    for path in sorted((home / "fleet").glob("*/site.toml")):
        config = tomllib.loads(path.read_text())
        nodes.append((config["lan"]["hosts"][0], [EOJ.of(d["eoj"]) for d in config["device"]]))
    return nodes


async def bare_poll_cpu(nodes: list[tuple[str, list[EOJ]]], rounds: int) -> list[float]:
    """CPU seconds per site for one Controller reading every allowed device's points once."""
    per_site = []
    async with Controller("127.63.0.1", timeout_s=2.0, multicast=False) as controller:
        for _ in range(rounds):
            before = resource.getrusage(resource.RUSAGE_SELF)
            await asyncio.gather(*(controller.get_raw(host, eoj, list(points_of(eoj)))
                                   for host, eojs in nodes for eoj in eojs))  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_SELF)
            used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            per_site.append(used / len(nodes))
    return per_site


def command_body(device_id: str, now: Any) -> dict[str, Any]:
    window = {"start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
    kind = device_id.rsplit(".", 1)[-1].rsplit("-", 1)[0]  # <site>.<kind>-<instance>
    if kind == "battery":
        return {"type": "battery_power", "device_id": device_id, "power_w": -1000.0, **window}
    if kind == "pv":
        return {"type": "pv_limit", "device_id": device_id, "limit_pct": 50.0, **window}
    return {"type": "aircon_offset", "device_id": device_id, "offset_c": 1.0, **window}


async def command_round_trip(home: Path, devices: dict[str, list[str]],
                             sequences: MemorySequenceCounter) -> dict[str, Any]:  # fmt: skip
    layout = BrokerHome(home)
    running = read_state(layout)
    assert running is not None
    ra = await RaLink.connect(running.nats_url, ca_bundle=layout.security.ca_bundle,
                              cert_file=layout.ra_cert, key_file=layout.ra_key)  # fmt: skip
    try:
        await ra.ensure_streams()
        acks = await ra.consumer(Stream.ACKS, "bench-acks")
        signer = EnvelopeSigner(load_ed25519_key(SecurityHome(home).command_key), RealClock(),
                                sequences)  # fmt: skip
        targets = {gw: ids[0] for gw, ids in devices.items() if ids}
        sent_at: dict[tuple[str, int], float] = {}
        signed_at: dict[tuple[str, int], float] = {}  # wall clock, for the legs below
        t0 = time.monotonic()
        for gw, device_id in targets.items():
            wire = signer.sign(gw, command_body(device_id, RealClock().now()))
            sequence = json.loads(wire)["envelope"]["sequence"]
            sent_at[(gw, sequence)] = time.monotonic()
            signed_at[(gw, sequence)] = time.time()
            await ra.send_command(gw, wire)
        published_s = time.monotonic() - t0
        rtt: list[float] = []
        arrived: list[float] = []  # since the first command was signed
        # the legs of each round trip, by the wall clock the bench and the fleet share:
        # down (signed → the gateway has it), gateway (has it → its ack made), up (ack
        # made → the RA has it: group commit, MQTT, broker, JetStream)
        legs: dict[str, list[float]] = {"down": [], "gateway": [], "up": []}
        outcomes: dict[str, int] = {}
        deadline = time.monotonic() + 60
        while len(rtt) < len(targets) and time.monotonic() < deadline:
            for delivery in await acks.fetch(500, 1.0):
                await delivery.ack()
                ack = delivery.message
                if not isinstance(ack, Acknowledgement):
                    continue
                sent = sent_at.pop((ack.gateway_id, ack.command_seq), None)
                if sent is None:
                    continue
                rtt.append(time.monotonic() - sent)
                signed = signed_at[(ack.gateway_id, ack.command_seq)]
                legs["down"].append(ack.received_at.timestamp() - signed)
                legs["gateway"].append((ack.sent_at - ack.received_at).total_seconds())
                legs["up"].append(time.time() - ack.sent_at.timestamp())
                arrived.append(time.monotonic() - t0)
                result = ack.rejected or (ack.outcomes[0].outcome if ack.outcomes else "none")
                outcomes[result] = outcomes.get(result, 0) + 1
        all_s = time.monotonic() - t0
    finally:
        await ra.close()
    rtt.sort()
    need = max(1, -(-99 * len(targets) // 100))  # 99 %, rounded up
    q99 = sorted(arrived)[need - 1] if len(arrived) >= need else None
    return {
        "commands": len(targets), "acknowledged": len(rtt), "outcomes": outcomes,
        "publish_all_s": published_s, "p50_s": statistics.median(rtt) if rtt else None,
        "p99_s": rtt[int(0.99 * (len(rtt) - 1))] if rtt else None,
        "ninety_nine_percent_acknowledged_after_s": q99, "all_acknowledged_after_s": all_s,
        "legs": {name: (statistics.median(v), sorted(v)[int(0.99 * (len(v) - 1))])
                 for name, v in legs.items() if v},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000, help="homes in the town (default 1000)")
    parser.add_argument("--poll", type=float, default=60.0, help="poll interval s (default 60)")
    parser.add_argument("--window", type=float, default=None,
                        help="one steady window for CPU, s (default one poll interval)")
    parser.add_argument("--windows", type=int, default=3,
                        help="CPU windows; the median is the figure (default 3)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="command bursts; the median p50/p99 is the figure (default 3)")
    parser.add_argument("--no-commands", action="store_true", help="skip the round trip")
    parser.add_argument("--quick", action="store_true",
                        help="a short run: 50 sites, 10 s polls, 20 s window")  # fmt: skip
    args = parser.parse_args()
    if args.quick:
        args.sites, args.poll, args.window = 50, 10.0, 20.0
    window = args.window or args.poll
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        home = root / "home"
        subprocess.run([*ERAB, "pki", "init", "--home", str(home)], check=True,
                       capture_output=True)  # fmt: skip
        broker = start(["broker", "run", "--home", str(home), "--port", "0", "--mqtt-port", "0",
                        "--monitor-port", "0"], root / "broker.log")  # fmt: skip
        town = fleet = None
        try:
            wait_for_line(root / "broker.log", "broker ready", broker, 30)
            t = time.monotonic()
            town = start(["emulate", "--homes", str(args.sites), "--stores", "0", "--base",
                          TOWN_BASE, "--history-days", "1", "--duration", "100000"],
                         root / "town.log")  # fmt: skip
            wait_for_line(root / "town.log", "serving", town, 600)
            print(f"town of {args.sites} homes up in {time.monotonic() - t:.1f} s")
            t = time.monotonic()
            fleet = start(["gateway", "fleet", "--home", str(home), "--homes", str(args.sites),
                           "--stores", "0", "--base", TOWN_BASE, "--bind-base", FLEET_BIND,
                           "--poll", str(args.poll)], root / "fleet.log")  # fmt: skip
            n = args.sites
            up = wait_status(home, lambda s: s.get("all_up_after_s") is not None, 900, fleet,
                             root / "fleet.log")  # fmt: skip
            print(f"fleet: enrolled, commissioned and started in {time.monotonic() - t:.1f} s; "
                  f"all {n} links up {up['all_up_after_s']:.1f} s after the first start")
            # steady state: every gateway has polled at least once
            first = wait_status(home, lambda s: s["polls"] >= 2 * n, 3 * args.poll + 60, fleet,
                                root / "fleet.log")  # fmt: skip
            per_window = []
            for _ in range(args.windows):
                time.sleep(window)
                last = fleet_status(home)
                polls = last["polls"] - first["polls"]
                used_s = last["cpu_s"] - first["cpu_s"]
                per_window.append(1000 * used_s / max(polls, 1))
                print(f"  CPU window: {used_s:.2f} s over {polls} gateway-polls in "
                      f"{window:.0f} s: {per_window[-1]:.3f} ms per gateway-poll")
                first = last
            cpu_ms = statistics.median(per_window)
            rss_per_gw = (last["rss_bytes"] - last["rss_before_bytes"]) / n
            print(f"memory: {last['rss_bytes'] / 2**20:.0f} MiB resident, "
                  f"{last['rss_before_bytes'] / 2**20:.0f} MiB before any gateway: "
                  f"{rss_per_gw / 2**20:.2f} MiB per gateway (target <= 2)")
            print(f"CPU: {cpu_ms:.3f} ms per gateway-poll, median of {len(per_window)} windows "
                  f"(target <= 1); backlog {last['backlog']}, dropped {last['dropped']}, "
                  f"links up {last['links_up']}/{n}")
            bare = asyncio.run(bare_poll_cpu(site_nodes(home), 5))
            bare_ms = 1000 * statistics.median(bare)
            print(f"baseline, one bare controller reading the same points: {bare_ms:.3f} ms per "
                  f"site (median of 5 rounds); fleet / bare = {cpu_ms / bare_ms:.1f}x")
            if not args.no_commands:
                fmt = lambda v: "-" if v is None else f"{v:.3f} s"  # noqa: E731
                p50s, p99s = [], []
                sequences = MemorySequenceCounter()  # one RA: its numbers go on across rounds
                for round_no in range(args.rounds):
                    if round_no:
                        time.sleep(10.0)
                    result = asyncio.run(command_round_trip(home, allowed_devices(home),
                                                            sequences))  # fmt: skip
                    print(f"  commands, round {round_no + 1}: {result['acknowledged']}/"
                          f"{result['commands']} acknowledged {result['outcomes']}; published "
                          f"all in {fmt(result['publish_all_s'])}; round trip p50 "
                          f"{fmt(result['p50_s'])}, p99 {fmt(result['p99_s'])}; 99 % "
                          f"acknowledged after "
                          f"{fmt(result['ninety_nine_percent_acknowledged_after_s'])}")
                    print("    legs (p50 / p99): " + ", ".join(
                        f"{name} {fmt(p50)} / {fmt(p99)}"
                        for name, (p50, p99) in result["legs"].items()))
                    if result["p99_s"] is not None and result["acknowledged"] == result["commands"]:
                        p50s.append(result["p50_s"])
                        p99s.append(result["p99_s"])
                    else:
                        p99s.append(float("inf"))  # a round that lost acks counts as a miss
                        p50s.append(float("inf"))
                print(f"commands: round trip p50 {fmt(statistics.median(p50s))}, p99 "
                      f"{fmt(statistics.median(p99s))}, medians of {len(p99s)} rounds of {n} "
                      f"(target p99 <= 2 s)")
        finally:
            for process in (fleet, town, broker):
                if process is not None:
                    stop(process)


if __name__ == "__main__":
    main()
