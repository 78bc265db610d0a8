"""ECHONET Lite poll benchmark: erab's Controller vs pychonet, and device-side density.

    python bench/bench_el_poll.py            # 1,000 emulated air conditioners
    python bench/bench_el_poll.py --quick    # 100 of them, fewer rounds

A child process hosts N erab LocalNodes, each on its own 127.B.x.y:3610 address (one
process, one socket per node, one shared multicast receiver).  This process then polls
every node for 3 properties (0x80, 0xB0, 0xB3), all nodes at once, first with erab's
Controller and then with pychonet's ECHONETAPIClient (the library behind Home Assistant's
ECHONET Lite integration), each after its own discovery and property-map reads, which are
not timed.  Figures printed:

(1) properties per second for each controller (median over rounds) and their ratio, both
    allowed the same number of requests open at once (--in-flight, default 256; pychonet
    gets the same 4 MiB socket receive buffer as erab so neither loses answers);
(2) device-side density: nodes in the one child process, its resident memory and start-up
    time, and the reply latency of single Gets (median, p99) measured by a separate probe
    process, first with the fleet idle and then while erab's Controller polls all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

EPCS = (0x80, 0xB0, 0xB3)
IN_FLIGHT = 256  # requests open at once, both controllers (erab's default max_in_flight)
AIRCON = 0x013001


def addresses(base: str, count: int) -> list[str]:
    return [f"{base}.{i // 250}.{i % 250 + 1}" for i in range(count)]


# -- device side (child process) ----------------------------------------------------------


async def serve(base: str, count: int) -> None:
    from erab.echonet.node import DeviceObject, LocalNode

    DeviceObject(AIRCON)  # load the class database before measuring
    before_mib = rss_mib(os.getpid())
    started = time.perf_counter()
    nodes = []
    for host in addresses(base, count):
        node = LocalNode([DeviceObject(AIRCON)])
        await node.start(host)
        nodes.append(node)
    elapsed = time.perf_counter() - started
    print(f"ready {elapsed:.3f} {rss_mib(os.getpid()):.1f} {before_mib:.1f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for node in nodes:
        await node.close()


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


# -- latency probe (its own process, so neither controller's event loop delays it) ---------


def probe(base: str, count: int, seconds: float) -> None:
    """Send a Get to one device after another, one at a time, and time each answer."""
    import random
    import socket

    from erab.echonet.frame import EOJ, ESV, Frame, Property
    from erab.echonet.transport import random_loopback_address

    hosts = addresses(base, count)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((random_loopback_address(), 3610))
    sock.settimeout(1.0)
    print("probing", flush=True)
    latencies: list[float] = []
    lost = 0
    end = time.perf_counter() + seconds
    tid = 0
    while time.perf_counter() < end:
        tid = (tid + 1) & 0xFFFF
        request = Frame(tid, EOJ(5, 0xFF, 1), EOJ.of(AIRCON), ESV.Get, (Property(0x80),))
        start = time.perf_counter()
        sock.sendto(request.encode(), (random.choice(hosts), 3610))
        try:
            while sock.recv(2048)[2:4] != tid.to_bytes(2, "big"):
                pass
            latencies.append(time.perf_counter() - start)
        except TimeoutError:
            lost += 1
        time.sleep(0.002)
    print(" ".join(f"{x:.6f}" for x in latencies), lost, flush=True)


# -- controllers --------------------------------------------------------------------------


async def erab_rounds(
    hosts: list[str], rounds: int, in_flight_limit: int, probe_command: list[str]
) -> tuple[list[float], list[float], str]:
    """(properties/s per round with one get per device, the same with get_many, and the
    probe's output while erab keeps polling)."""
    from erab.echonet.controller import Controller
    from erab.echonet.transport import random_loopback_address

    per_device: list[float] = []
    bulk: list[float] = []
    async with Controller(
        random_loopback_address(), timeout_s=5.0, retries=2, max_in_flight=in_flight_limit
    ) as ctl:
        found = await ctl.discover(hosts=hosts, multicast=False)  # maps first, not timed
        missing = set(hosts) - {n.host for n in found}
        if missing:
            raise SystemExit(f"erab: {len(missing)} node(s) not discovered, e.g. {min(missing)}")

        async def poll_each() -> int:
            counts = await asyncio.gather(*(ctl.get_raw(h, AIRCON, EPCS) for h in hosts))
            return sum(len(c) for c in counts)

        async def poll_many() -> int:
            results = await ctl.get_many([(h, AIRCON) for h in hosts], EPCS)
            return sum(len(v) for v in results.values() if isinstance(v, dict))

        for rates, poll in ((per_device, poll_each), (bulk, poll_many)):
            for _ in range(rounds):
                start = time.perf_counter()
                read = await poll()
                elapsed = time.perf_counter() - start
                if read != len(EPCS) * len(hosts):
                    raise SystemExit(f"erab: read {read} properties, expected more")
                rates.append(read / elapsed)

        # keep the fleet under this poll load while the probe measures reply latency
        prober = await asyncio.create_subprocess_exec(
            *probe_command, stdout=asyncio.subprocess.PIPE
        )
        assert prober.stdout is not None
        await prober.stdout.readline()  # "probing"
        result = asyncio.ensure_future(prober.stdout.readline())
        while not result.done():
            await poll_many()
        await prober.wait()
    return per_device, bulk, result.result().decode()


def latency_figures(output: str) -> str:
    fields = output.split()
    lost = int(fields[-1])
    samples = [float(x) for x in fields[:-1]]
    if not samples:
        return f"no answers ({lost} lost)"
    text = (
        f"median {statistics.median(samples) * 1e3:.2f} ms, "
        f"p99 {percentile(samples, 0.99) * 1e3:.2f} ms ({len(samples)} requests"
    )
    return text + (f", {lost} lost)" if lost else ")")


async def pychonet_rounds(
    hosts: list[str], rounds: int, in_flight_limit: int
) -> tuple[list[float], int]:
    """(properties per second per round, properties not read because of a timeout)."""
    from pychonet import ECHONETAPIClient, HomeAirConditioner
    from pychonet.lib.udpserver import UDPServer

    from erab.echonet.transport import random_loopback_address

    server = UDPServer(local_ip="127.0.0.1")
    # same receive buffer and requests in flight as erab's Controller, so neither loses
    # answers to a full socket buffer
    server._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    in_flight = asyncio.Semaphore(in_flight_limit)
    server.run(random_loopback_address(), 3610, loop=asyncio.get_running_loop())
    api: Any = ECHONETAPIClient(server=server)
    api._logger = lambda *args, **kwargs: None
    rates: list[float] = []
    lost: list[int] = []
    try:
        # discovery and property maps first, as Home Assistant does; not timed
        async def limited(coro: Any) -> Any:
            async with in_flight:
                return await coro

        await asyncio.gather(*(limited(api.discover(h)) for h in hosts))
        await asyncio.gather(*(limited(api.getAllPropertyMaps(h, 0x01, 0x30, 0x01)) for h in hosts))
        aircons = [HomeAirConditioner(h, api) for h in hosts]

        async def poll(aircon: Any) -> int:
            async with in_flight:
                try:
                    values = await aircon.update(list(EPCS))
                except TimeoutError:
                    return 0
            return sum(1 for v in values.values() if v is not None)

        for _ in range(rounds):
            start = time.perf_counter()
            counts = await asyncio.gather(*(poll(a) for a in aircons))
            elapsed = time.perf_counter() - start
            rates.append(sum(counts) / elapsed)
            lost.append(len(EPCS) * len(hosts) - sum(counts))
    finally:
        server.close()
    return rates, sum(lost)


# -- main ---------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 devices, 2 rounds")
    parser.add_argument("--devices", type=int, help="number of emulated devices")
    parser.add_argument("--rounds", type=int, help="poll rounds per controller")
    parser.add_argument(
        "--in-flight",
        type=int,
        default=IN_FLIGHT,
        help=f"requests open at once, for both controllers (default {IN_FLIGHT})",
    )
    parser.add_argument("--serve", nargs=2, metavar=("BASE", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.serve[0], int(args.serve[1])))
        return 0
    if args.probe:
        probe(args.probe[0], int(args.probe[1]), float(args.probe[2]))
        return 0

    count = args.devices or (100 if args.quick else 1000)
    rounds = args.rounds or (2 if args.quick else 3)
    from erab.echonet.transport import random_loopback_address

    base = random_loopback_address().rsplit(".", 2)[0]
    hosts = addresses(base, count)
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", base, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().split()
        if not line or line[0] != "ready":
            raise SystemExit("device process did not start (addresses in use?)")
        startup_s, rss, base_rss = float(line[1]), float(line[2]), float(line[3])
        print(f"devices: {count} air conditioners on {base}.x.y:3610, one process")
        print(
            f"  start-up {startup_s:.2f} s, resident memory {rss:.1f} MiB "
            f"({(rss - base_rss) * 1024 / count:.0f} KiB per node above the bare process)"
        )

        probe_s = "1" if args.quick else "3"
        probe_command = [sys.executable, __file__, "--probe", base, str(count), probe_s]
        idle = subprocess.run(probe_command, capture_output=True, text=True, check=True)
        idle_latency = latency_figures(idle.stdout.split("\n", 1)[1])
        erab_rates, erab_bulk_rates, loaded = asyncio.run(
            erab_rounds(hosts, rounds, args.in_flight, probe_command)
        )
        loaded_latency = latency_figures(loaded)
        pychonet_rates, pychonet_lost = asyncio.run(pychonet_rounds(hosts, rounds, args.in_flight))
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(30)

    erab_rate = statistics.median(erab_rates)
    pychonet_rate = statistics.median(pychonet_rates)
    print(
        f"(1) poll throughput, {len(EPCS)} properties x {count} devices, {rounds} rounds, "
        f"at most {args.in_flight} requests open at once"
    )
    bulk_rate = statistics.median(erab_bulk_rates)
    print(f"  erab get_many     {bulk_rate:10.0f} properties/s (median)")
    print(f"  erab get per device {erab_rate:8.0f} properties/s (median)")
    print(
        f"  pychonet          {pychonet_rate:10.0f} properties/s (median)"
        + (f", {pychonet_lost} properties lost to timeouts" if pychonet_lost else "")
    )
    print(
        f"  ratio             {bulk_rate / pychonet_rate:10.1f} x with get_many, "
        f"{erab_rate / pychonet_rate:.1f} x with a get per device  (target >= 3 x)"
    )
    print(f"(2) device side: {count} nodes in one process; reply latency of single Gets")
    print(f"  idle                          {idle_latency}")
    print(f"  while erab polls all of them  {loaded_latency}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
