"""An outage of an "hour" of telemetry, accelerated: polls every 0.05 s, so the hour's 60
polls pass in seconds.  The broker is stopped, the gateway keeps measuring into its outbox,
the gateway itself is restarted in the middle of the outage (a new Gateway object on the same
home: the outbox file is all that carries over), then the broker comes back on the same
ports: the RA's durable JetStream consumer gets every telemetry batch the gateway stored,
once each, in sequence order, and its count equals the gateway's."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import BrokerProcess, Ports, RaLink, RunningBroker, Stream, TelemetryBatch, prepare
from erab.gateway.config import load_site_config
from erab.gateway.service import Gateway
from tests.bus.conftest import Deployment, connect_ra
from tests.gateway.conftest import Home
from tests.gateway.test_service import (
    broker_process_stop,
    collect,
    command_key_file,
    running,
    wait_for,
    write_site_config,
)

pytestmark = pytest.mark.timeout(120)
HOUR_POLLS = 60  # one poll a minute for an hour
GW = "gw-a"


async def test_an_hour_offline_with_a_restart_in_the_middle_loses_and_repeats_nothing(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = load_site_config(write_site_config(
        tmp_path / "site.toml", deployment, broker, home, key, poll_interval_s=0.05))  # fmt: skip
    gw_home = tmp_path / "gw-home"
    await ra.consumer(Stream.TELEMETRY, "ingest")  # the RA subscribes before the outage
    prepare(deployment.home, ports=Ports(broker.nats_port, broker.mqtt_port, broker.monitor_port))

    first = Gateway(config, gw_home)
    async with running(first):
        await wait_for(lambda: first.link_up and first.batches >= 3)
        broker_process_stop(deployment, broker)  # the outage starts
        await wait_for(lambda: not first.link_up)
        online = first.batches
        await wait_for(lambda: first.batches >= online + HOUR_POLLS // 2)
    stored_first = first.batches

    second = Gateway(config, gw_home)  # restarted in the middle of the outage
    restarted = BrokerProcess(deployment.layout)
    try:
        async with running(second):
            await wait_for(lambda: second.batches >= HOUR_POLLS // 2)
            assert not second.link_up
            assert second.outbox is not None
            assert second.outbox.status().backlog >= HOUR_POLLS  # the whole hour is waiting
            again = restarted.start()  # the outage ends
            assert again.mqtt_port == broker.mqtt_port
            await wait_for(lambda: second.link_up, 30.0)
            await wait_for(lambda: second.outbox is not None
                           and second.outbox.status().backlog == 0, 30.0)  # fmt: skip
        # what the gateway stored, less what its last polls left queued at the stop
        with sqlite3.connect(gw_home / "outbox.sqlite") as db:
            (queued,) = db.execute(
                "SELECT count(*) FROM outbox WHERE kind = 'telemetry'").fetchone()
        sent = stored_first + second.batches - queued
        ra2 = await connect_ra(deployment, again)
        try:
            # the same durable consumer: it resumes where the RA left it before the outage
            consumer = await ra2.consumer(Stream.TELEMETRY, "ingest")
            got = await collect(consumer, lambda got: sum(
                isinstance(m, TelemetryBatch) for m in got) >= sent)  # fmt: skip
            got += await collect(consumer, lambda _: False, timeout_s=1.0)  # nothing more
        finally:
            await ra2.close()
    finally:
        restarted.stop()
    seqs = [m.seq for m in got if isinstance(m, TelemetryBatch)]
    assert len(seqs) == len(set(seqs)), "a batch arrived twice"
    assert seqs == sorted(seqs), "batches out of sequence order"
    assert len(seqs) == sent >= 3 + HOUR_POLLS  # the consumer's count is the gateway's
