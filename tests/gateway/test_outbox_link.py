"""The outbox draining through a real nats-server (MQTT over mutual TLS) to the RA's durable
consumer: messages stored while offline, and across a gateway restart, arrive once, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from erab.bus import GatewayLink, RaLink, RunningBroker, Sample, Stream, TelemetryBatch
from erab.clock import RealClock
from erab.gateway.outbox import Outbox
from tests.bus.conftest import Deployment

pytestmark = pytest.mark.timeout(120)
GW = "gw-a"


def telemetry(box: Outbox, power_w: float) -> TelemetryBatch:
    now = datetime.now(UTC)
    return TelemetryBatch(
        gateway_id=GW, seq=box.next_seq(), sent_at=now,
        samples=[Sample(device_id="battery-1", measured_at=now, values={"power_w": power_w})],
    )  # fmt: skip


async def test_messages_stored_offline_arrive_in_order_after_a_restart(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, tmp_path: Path
) -> None:
    consumer = await ra.consumer(Stream.TELEMETRY, "ingest")
    path = tmp_path / "outbox.sqlite"
    with Outbox(path, GW) as box:  # the link is down: everything is stored
        for i in range(8):
            box.put(telemetry(box, float(i)))
    with Outbox(path, GW) as box:  # the gateway restarted and the link is up
        link = GatewayLink(GW, broker.host, broker.mqtt_port, deployment.gateway_tls(GW),
                           sequence=box, clock=RealClock())  # fmt: skip
        async with link:
            assert await box.drain(link.publish) == 8
        assert box.status().backlog == 0
    got = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    while len(got) < 8 and loop.time() < deadline:
        for delivery in await consumer.fetch(8 - len(got), 0.5):
            await delivery.ack()
            got.append(delivery.message)
    assert [m.seq for m in got] == list(range(1, 9))
    assert [m.samples[0].values["power_w"] for m in got] == [float(i) for i in range(8)]
