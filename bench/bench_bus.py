"""Bus payload throughput: checked decoding of uplink messages per second, and end to end.

1. Codec: ``decode_uplink`` (topic parse, msgspec decode into the tagged union, kind, gateway
   and time checks) against a baseline of plain ``msgspec.json.decode`` of the same bytes into
   the same Struct type without any check, and against stdlib ``json.loads`` into dicts.
   Baseline and measured code alternate repeat by repeat; the ratio is the median of the
   per-repeat ratios, so load on a shared machine hits both alike.
2. End to end (skipped with --codec-only): one gateway publishes N telemetry batches QoS 1 over
   MQTT/TLS to the real nats-server, and the RA fetches them from a durable JetStream
   consumer; the figure is messages per second through the whole path.

    python bench/bench_bus.py            # full run
    python bench/bench_bus.py --quick    # short run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives import serialization

from erab.bus import (
    BrokerProcess,
    GatewayLink,
    MessageKind,
    Ports,
    RaLink,
    Sample,
    Stream,
    TelemetryBatch,
    decode_uplink,
    encode,
    prepare,
)
from erab.bus.topics import topic
from erab.clock import RealClock
from erab.security import (
    CertificateAuthority,
    MemorySequenceCounter,
    SecurityHome,
    client_context,
    make_csr,
    new_private_key,
)
from erab.security.pki import certificate_pem, private_key_pem

NOW = datetime(2026, 8, 1, 13, 0, tzinfo=UTC)


def batch(seq: int, samples: int) -> TelemetryBatch:
    t = NOW - timedelta(seconds=1)
    return TelemetryBatch(
        gateway_id="gw-0001", seq=seq, sent_at=t,
        samples=[Sample(device_id=f"dev-{i}", measured_at=t,
                        values={"power_w": 100.0 + i, "soc_pct": 50.0}) for i in range(samples)],
    )


def rate(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - start)


def bench_codec(n: int, repeats: int) -> None:
    print(f"codec: {n} decodes per repeat, {repeats} repeats (median)")
    print(f"{'payload':<22}{'checked/s':>12}{'msgspec/s':>12}{'ratio':>7}{'json.loads/s':>14}")
    t = topic("gw-0001", MessageKind.TELEMETRY)
    plain = msgspec.json.Decoder(TelemetryBatch)
    for samples in (1, 10, 100):
        wire = encode(batch(1, samples))
        checked, raw, stdlib, ratios = [], [], [], []
        for _ in range(repeats):
            c = rate(partial(decode_uplink, t, wire, NOW), n)
            r = rate(partial(plain.decode, wire), n)
            s = rate(partial(json.loads, wire), n)
            checked.append(c)
            raw.append(r)
            stdlib.append(s)
            ratios.append(c / r)
        label = f"{samples} sample(s), {len(wire)} B"
        print(f"{label:<22}{statistics.median(checked):>12,.0f}{statistics.median(raw):>12,.0f}"
              f"{statistics.median(ratios):>7.2f}{statistics.median(stdlib):>14,.0f}")


async def bench_end_to_end(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        security = SecurityHome(home)
        ca = CertificateAuthority.initialise(security, RealClock())
        key = new_private_key()
        csr = make_csr(key, "gw-0001").public_bytes(serialization.Encoding.PEM)
        cert_file, key_file = Path(tmp) / "gw.pem", Path(tmp) / "gw.key.pem"
        cert_file.write_bytes(certificate_pem(ca.issue_gateway(csr, "gw-0001", "site-0001")))
        key_file.write_bytes(private_key_pem(key))
        layout = prepare(home, ports=Ports(0, 0, 0))
        with BrokerProcess(layout) as running:
            ra = await RaLink.connect(running.nats_url, ca_bundle=security.ca_bundle,
                                      cert_file=layout.ra_cert, key_file=layout.ra_key)
            await ra.ensure_streams()
            consumer = await ra.consumer(Stream.TELEMETRY, "bench")
            tls = client_context(security.ca_bundle, cert_file=cert_file, key_file=key_file)
            clock = RealClock()
            start = time.perf_counter()
            async with GatewayLink("gw-0001", running.host, running.mqtt_port, tls,
                                   sequence=MemorySequenceCounter(), clock=clock) as link:
                for _ in range(n):
                    message = batch(link.next_seq(), 10)
                    await link.publish(TelemetryBatch(
                        gateway_id=message.gateway_id, seq=message.seq, sent_at=clock.now(),
                        samples=[Sample(device_id=s.device_id, measured_at=clock.now(),
                                        values=s.values) for s in message.samples]))
            published = time.perf_counter() - start
            got = 0
            while got < n:
                deliveries = await consumer.fetch(500, 2.0)
                if not deliveries:
                    break
                for d in deliveries:
                    await d.ack()
                got += len(deliveries)
            total = time.perf_counter() - start
            await ra.close()
    print(f"end to end: {n} telemetry batches (10 samples) over MQTT/TLS, QoS 1, each awaited")
    print(f"  published in {published:.2f} s ({n / published:,.0f}/s); "
          f"{got} fetched from JetStream, all in {total:.2f} s ({got / total:,.0f}/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--codec-only", action="store_true", help="skip the broker run")
    args = parser.parse_args()
    n, repeats, e2e = (2000, 3, 500) if args.quick else (20000, 7, 3000)
    bench_codec(n, repeats)
    if not args.codec_only:
        asyncio.run(bench_end_to_end(e2e))


if __name__ == "__main__":
    main()
