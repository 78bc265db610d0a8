"""Gateway uplink: outbox drain rate after an outage, and memory per connected gateway.

1. Drain: N telemetry batches (10 samples each) are put into a fresh on-disk ``Outbox`` while
   no broker runs; then the real nats-server is started (erab's PKI, as bench/bench_bus.py)
   and ``Outbox.drain`` sends them through a ``GatewayLink`` (QoS 1, each PUBACK awaited,
   each row deleted after it); and ``Outbox.drain_encoded`` with
   ``GatewayLink.publish_many_encoded``, the gateway's own path (stored bytes as they are,
   64 PUBLISHes handed to the broker before their PUBACKs are awaited), from a second outbox
   filled alike.  Baseline, on the same link in the same run: a plain loop publishing the
   same N messages, already decoded in memory, with ``GatewayLink.publish``.  Drains and
   baseline alternate repeat by repeat; medians and the median per-repeat ratios.
2. Memory (skipped with --no-memory): 100 gateways connected at once, each an ``Outbox`` plus
   a ``GatewayLink`` that has drained one message, against 100 bare ``aiomqtt.Client``
   connections that have published one message.  Each side runs in its own fresh process;
   the figure is the VmRSS delta (/proc/self/status) over the connecting, divided by 100.
   TLS contexts are built before the first reading on both sides.

    python bench/bench_gateway.py            # full run
    python bench/bench_gateway.py --quick    # short run
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives import serialization

from erab.bus import (
    BrokerProcess,
    GatewayLink,
    MessageKind,
    Ports,
    RaLink,
    Sample,
    TelemetryBatch,
    encode,
    prepare,
)
from erab.bus.broker import RunningBroker
from erab.bus.topics import mqtt_client_id, topic
from erab.clock import RealClock
from erab.gateway.outbox import Outbox
from erab.security import (
    CertificateAuthority,
    MemorySequenceCounter,
    SecurityHome,
    client_context,
    make_csr,
    new_private_key,
)
from erab.security.pki import certificate_pem, private_key_pem

GATEWAYS = 100


def batch(gateway_id: str, seq: int, at: datetime, samples: int = 10) -> TelemetryBatch:
    return TelemetryBatch(
        gateway_id=gateway_id, seq=seq, sent_at=at,
        samples=[Sample(device_id=f"dev-{i}", measured_at=at,
                        values={"power_w": 100.0 + i, "soc_pct": 50.0}) for i in range(samples)],
    )


def enrol(ca: CertificateAuthority, gateway_id: str, folder: Path) -> tuple[Path, Path]:
    key = new_private_key()
    csr = make_csr(key, gateway_id).public_bytes(serialization.Encoding.PEM)
    cert_file, key_file = folder / f"{gateway_id}.pem", folder / f"{gateway_id}.key.pem"
    cert_file.write_bytes(certificate_pem(ca.issue_gateway(csr, gateway_id, "site-0001")))
    key_file.write_bytes(private_key_pem(key))
    return cert_file, key_file


def fill(path: Path, n: int) -> Outbox:
    """An outbox holding n telemetry batches, put while offline (one per 'poll')."""
    outbox = Outbox(path, "gw-0001", max_messages=max(n, 1))
    start = datetime.now(UTC) - timedelta(seconds=n)
    for i in range(n):
        outbox.put(batch("gw-0001", outbox.next_seq(), start + timedelta(seconds=i)))
    return outbox


def outage(tmp: Path, ca: CertificateAuthority, n: int, repeats: int) -> tuple[list[Outbox], float]:
    """Fill every repeat's outbox before any broker runs; returns them and the puts/s."""
    enrol(ca, "gw-0001", tmp)
    start = time.perf_counter()
    outboxes = [fill(tmp / f"outbox-{r}.sqlite", n) for r in range(2 * repeats)]
    return outboxes, n * 2 * repeats / (time.perf_counter() - start)


async def bench_drain(tmp: Path, security: SecurityHome, running: RunningBroker,
                      outboxes: list[Outbox], put_rate: float, n: int) -> None:
    now = datetime.now(UTC)
    plain = [batch("gw-0001", 1_000_000 + i, now) for i in range(n)]
    wire = sum(len(encode(m)) for m in plain) / n
    drains, loops, ratios, pipelined, pipelined_ratios = [], [], [], [], []
    tls = client_context(security.ca_bundle, cert_file=tmp / "gw-0001.pem",
                         key_file=tmp / "gw-0001.key.pem")
    async with GatewayLink("gw-0001", running.host, running.mqtt_port, tls,
                           sequence=MemorySequenceCounter(), clock=RealClock()) as link:
        for outbox, second in zip(outboxes[::2], outboxes[1::2], strict=True):
            t0 = time.perf_counter()
            sent = await outbox.drain(link.publish)
            d = sent / (time.perf_counter() - t0)
            assert sent == n and outbox.status().backlog == 0, outbox.status()
            t0 = time.perf_counter()
            sent = await second.drain_encoded(link.publish_many_encoded)
            p = sent / (time.perf_counter() - t0)
            assert sent == n and second.status().backlog == 0, second.status()
            second.close()
            t0 = time.perf_counter()
            for message in plain:
                await link.publish(message)
            b = n / (time.perf_counter() - t0)
            drains.append(d)
            loops.append(b)
            ratios.append(d / b)
            pipelined.append(p)
            pipelined_ratios.append(p / b)
            outbox.close()
    print(f"drain: {n} telemetry batches (10 samples, {wire:.0f} B) stored offline "
          f"({put_rate:,.0f} puts/s), then sent over MQTT/TLS QoS 1 to nats-server; "
          f"{len(outboxes) // 2} repeats (median)")
    print(f"  Outbox.drain via GatewayLink   {statistics.median(drains):>8,.0f} msg/s")
    print(f"  plain publish loop (baseline)  {statistics.median(loops):>8,.0f} msg/s")
    print(f"  ratio drain/baseline           {statistics.median(ratios):>8.2f}")
    print(f"  Outbox.drain_encoded, pipelined {statistics.median(pipelined):>7,.0f} msg/s "
          f"(the gateway's path)")
    print(f"  ratio pipelined/baseline       {statistics.median(pipelined_ratios):>8.2f}")


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


async def connect_many(mode: str, folder: Path, ca_bundle: Path, host: str, port: int) -> int:
    """Child process: connect GATEWAYS gateways the ``mode`` way, return the RSS delta (KiB)."""
    ids = [f"gw-{i:04d}" for i in range(1, GATEWAYS + 1)]
    contexts = [client_context(ca_bundle, cert_file=folder / f"{g}.pem",
                               key_file=folder / f"{g}.key.pem") for g in ids]
    now = datetime.now(UTC)
    gc.collect()
    before = vm_rss_kib()
    held: list[object] = []
    if mode == "bare":
        for g, tls in zip(ids, contexts, strict=True):
            client = aiomqtt.Client(host, port, identifier=mqtt_client_id(g), tls_context=tls,
                                    protocol=aiomqtt.ProtocolVersion.V311)
            await client.__aenter__()
            await client.publish(topic(g, MessageKind.TELEMETRY),
                                 encode(batch(g, 1, now)), qos=1)
            held.append(client)
    else:
        for g, tls in zip(ids, contexts, strict=True):
            outbox = Outbox(folder / f"{g}-outbox.sqlite", g)
            link = GatewayLink(g, host, port, tls, sequence=outbox, clock=RealClock())
            await link.__aenter__()
            outbox.put(batch(g, outbox.next_seq(), now))
            await outbox.drain(link.publish)
            held.append((outbox, link))
    gc.collect()
    after = vm_rss_kib()
    for item in held:
        if isinstance(item, aiomqtt.Client):
            await item.__aexit__(None, None, None)
        else:
            outbox, link = item  # type: ignore[misc]
            await link.__aexit__(None, None, None)
            outbox.close()
    return after - before


def bench_memory(tmp: Path, security: SecurityHome, running: RunningBroker, repeats: int) -> None:
    folder = tmp / "many"
    per: dict[str, list[float]] = {"bare": [], "pair": []}
    ratios = []
    for r in range(repeats):
        figures = {}
        for mode in ("bare", "pair"):
            run = folder / f"{mode}-{r}"
            run.mkdir()
            for f in folder.glob("gw-*.pem"):
                (run / f.name).symlink_to(f)
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(run),
                 str(security.ca_bundle), running.host, str(running.mqtt_port)],
                capture_output=True, text=True, timeout=120,
            )
            if out.returncode:
                raise SystemExit(f"{mode} child failed:\n{out.stderr}")
            figures[mode] = json.loads(out.stdout)["delta_kib"] / GATEWAYS
            per[mode].append(figures[mode])
        ratios.append(figures["pair"] / figures["bare"])
    print(f"memory: {GATEWAYS} gateways connected at once (MQTT/TLS to nats-server), "
          f"VmRSS delta / {GATEWAYS}, each side in a fresh process; {repeats} repeats (median)")
    print(f"  Outbox + GatewayLink pair      {statistics.median(per['pair']):>8,.0f} KiB")
    print(f"  bare aiomqtt.Client (baseline) {statistics.median(per['bare']):>8,.0f} KiB")
    print(f"  ratio pair/bare                {statistics.median(ratios):>8.2f}")


async def run(args: argparse.Namespace) -> None:
    n, repeats = (500, 3) if args.quick else (5000, 3)
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        security = SecurityHome(tmp / "home")
        ca = CertificateAuthority.initialise(security, RealClock())
        if not args.no_memory:  # enrolled before the broker's accounts are written
            (tmp / "many").mkdir()
            for i in range(1, GATEWAYS + 1):
                enrol(ca, f"gw-{i:04d}", tmp / "many")
        outboxes, put_rate = outage(tmp, ca, n, repeats)
        layout = prepare(tmp / "home", ports=Ports(0, 0, 0))
        with BrokerProcess(layout) as running:
            ra = await RaLink.connect(running.nats_url, ca_bundle=security.ca_bundle,
                                      cert_file=layout.ra_cert, key_file=layout.ra_key)
            await ra.ensure_streams()  # the RA's streams hold what the broker acknowledges
            await bench_drain(tmp, security, running, outboxes, put_rate, n)
            if not args.no_memory:
                await asyncio.to_thread(bench_memory, tmp, security, running,
                                        1 if args.quick else 3)
            await ra.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--no-memory", action="store_true", help="skip the 100-gateway run")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, ca_bundle, host, port = args.child
        delta = asyncio.run(connect_many(mode, Path(folder), Path(ca_bundle), host, int(port)))
        print(json.dumps({"delta_kib": delta, "pid": os.getpid()}))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
