"""Ingest: uplink messages into the store exactly once, gateway lifecycle, the live-state hook;
two workers on one durable consumer of a real nats-server, and an RA restart mid-way."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from erab.aggregator.ingest import CommittedReadings, Ingest, to_batch
from erab.aggregator.registry import Registry
from erab.bus import (
    Acknowledgement,
    Device,
    DeviceOutcome,
    Heartbeat,
    Hello,
    MessageKind,
    Offline,
    RaLink,
    RunningBroker,
    Sample,
    Stream,
    TelemetryBatch,
    UplinkMessage,
    encode,
)
from erab.bus.topics import subject
from erab.clock import SimulatedClock
from erab.store import Gateway, GatewayStatus, Resource, Site, SqliteStore
from tests.bus.conftest import Deployment, connect_ra

NODE_A, NODE_B = "0a0a", "0b0b"
START = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


def setup_registry(store: SqliteStore) -> Registry:
    reg = Registry(store, SimulatedClock(START))
    for gw, site, node in (("gw-a", "site-a", NODE_A), ("gw.b", "site-b", NODE_B)):
        reg.add_site(Site(site, site))
        reg.add_gateway(Gateway(gw, site))
        reg.add_resource(Resource(f"{site}.bat", site, gw, "", node, "027d01", rated_kw=3.0))
    return reg


def telemetry(
    seq: int,
    gw: str = "gw-a",
    device: str = "site-a.bat",
    soc: float = 50.0,
    at: datetime | None = None,
) -> TelemetryBatch:
    when = at or START + timedelta(seconds=seq)
    return TelemetryBatch(
        gateway_id=gw,
        seq=seq,
        sent_at=when,
        samples=[
            Sample(
                device_id=device, measured_at=when, values={"power_w": 100.0 * seq, "soc_pct": soc}
            )
        ],
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "ra.sqlite")
    setup_registry(s)
    yield s
    s.close()


def write(store: SqliteStore, messages: list[UplinkMessage], minutes: float = 0.0) -> object:
    return store.write_uplink_batch(to_batch(messages), START + timedelta(minutes=minutes))


def test_a_message_stored_twice_gives_its_rows_once(store: SqliteStore) -> None:
    first = write(store, [telemetry(1), telemetry(2), telemetry(1)])
    again = write(store, [telemetry(2), telemetry(3)])
    assert (first.stored, first.duplicates, again.stored, again.duplicates) == (2, 1, 1, 1)  # type: ignore[attr-defined]
    rows = store.telemetry("site-a.bat")
    assert [(p, v) for _, p, _, v, _, _ in rows if p == "power_w"] == [
        ("power_w", 100.0),
        ("power_w", 200.0),
        ("power_w", 300.0),
    ]
    assert store.count_rows("uplink_seen") == 3


def test_one_gateway_cannot_write_another_gateways_resources(store: SqliteStore) -> None:
    # gw.b names gw-a's resource in its samples: not one of its own, so nothing is stored
    outcome = write(store, [telemetry(1, gw="gw.b", device="site-a.bat")])
    assert outcome.unknown_devices == 1 and outcome.readings == 0  # type: ignore[attr-defined]
    assert store.telemetry("site-a.bat") == []
    # the same seq from gw-a is a different message (dedup is per gateway)
    assert write(store, [telemetry(1)]).stored == 1  # type: ignore[attr-defined]


def test_unknown_and_revoked_gateways_store_nothing(store: SqliteStore) -> None:
    store.set_gateway("gw.b", status=GatewayStatus.REVOKED, cert_serial="1f", at=START)
    outcome = write(store, [telemetry(1, gw="gw-zz"), telemetry(1, gw="gw.b", device="site-b.bat")])
    assert outcome.refused == {"unknown_gateway": 1, "revoked_gateway": 1}  # type: ignore[attr-defined]
    assert store.count_rows("telemetry") == 0 and store.count_rows("uplink_seen") == 0


def test_out_of_range_readings_are_flagged_not_truth(store: SqliteStore) -> None:
    got: list[CommittedReadings] = []
    ingest = Ingest(store, [], on_readings=got.append, clock=SimulatedClock(START))
    msg = telemetry(1, soc=140.0)
    from erab.bus.ra import Delivery

    ingest.store_batch([Delivery("s", msg, False, None)])  # type: ignore[arg-type]
    assert [p for _, p, *_ in store.telemetry()] == ["power_w"]
    assert {p for _, p, *_ in store.telemetry(include_flagged=True)} == {"power_w", "soc_pct"}
    [arrays] = got
    assert (ingest.stats.readings, ingest.stats.flagged) == (2, 1)
    assert arrays.point_names == ("power_w",) and arrays.value.tolist() == [100.0]
    assert arrays.resource_key.tolist() == [store.resource_keys()["site-a.bat"]]
    assert arrays.measured_at_s.tolist() == [(START + timedelta(seconds=1)).timestamp()]


def test_messages_bring_a_gateway_online_and_its_last_will_takes_it_offline(
    store: SqliteStore,
) -> None:
    hb = Heartbeat(gateway_id="gw-a", seq=1, sent_at=START + timedelta(minutes=1), uptime_s=5)
    write(store, [hb], minutes=1)
    [gw] = store.gateways("site-a")
    assert gw.status is GatewayStatus.ONLINE and gw.last_seen == START + timedelta(minutes=1)
    hello = Hello(
        gateway_id="gw-a",
        seq=2,
        sent_at=START + timedelta(minutes=2),
        site_id="site-a",
        software="t",
        devices=[Device(device_id="x", eoj="013001", node_id=NODE_A)],
    )
    outcome = write(store, [hello], minutes=2)
    assert [a.device_id for a in outcome.allow_lists["gw-a"]] == ["site-a.bat"]  # type: ignore[attr-defined]
    assert [p.eoj for p in store.pending_devices("gw-a")] == ["013001"]
    # the will of the connection before this hello says nothing about the current one
    old_will = Offline(gateway_id="gw-a", seq=3, sent_at=START, connected_at=START)
    write(store, [old_will], minutes=3)
    assert store.gateways("site-a")[0].status is GatewayStatus.ONLINE
    will = Offline(
        gateway_id="gw-a",
        seq=4,
        sent_at=START + timedelta(minutes=2),
        connected_at=START + timedelta(minutes=2),
    )
    write(store, [will], minutes=4)
    assert store.gateways("site-a")[0].status is GatewayStatus.OFFLINE
    assert [(a.kind, a.gateway_id) for a in store.alerts()] == [("gateway_offline", "gw-a")]


def test_silent_gateways_are_marked_offline_with_an_alert(store: SqliteStore) -> None:
    write(
        store,
        [
            telemetry(1),
            telemetry(1, gw="gw.b", device="site-b.bat", at=START + timedelta(minutes=9)),
        ],
    )
    clock = SimulatedClock(START + timedelta(minutes=10))
    ingest = Ingest(store, [], clock=clock, silent_after_s=300)
    assert ingest.check_silence() == ["gw-a"]
    status = {g.gateway_id: g.status for g in store.gateways()}
    assert status == {"gw-a": GatewayStatus.OFFLINE, "gw.b": GatewayStatus.ONLINE}
    assert [a.kind for a in store.alerts(open_only=True)] == ["gateway_silent"]
    assert ingest.check_silence() == []  # once
    # a message sent after it went offline brings it back
    write(store, [telemetry(2, at=START + timedelta(minutes=11))], minutes=11)
    assert store.gateways("site-a")[0].status is GatewayStatus.ONLINE


def test_acknowledgements_are_kept_with_their_device_outcomes(store: SqliteStore) -> None:
    ack = Acknowledgement(
        gateway_id="gw-a",
        seq=5,
        sent_at=START,
        command_seq=17,
        received_at=START,
        outcomes=[
            DeviceOutcome(device_id="site-a.bat", outcome="applied", readback={"power_w": -2000.0})
        ],
    )
    write(store, [ack, ack])
    assert store.command_acks("gw-a") == [(17, None, [("site-a.bat", "applied")])]


# --- a real nats-server ----------------------------------------------------------------------

pytestmark = pytest.mark.timeout(120)



async def publish(link: RaLink, messages: list[UplinkMessage]) -> None:
    for m in messages:
        kind = MessageKind.TELEMETRY if isinstance(m, TelemetryBatch) else MessageKind.HEARTBEAT
        await link.js.publish(subject(m.gateway_id, kind), encode(m))


async def worker(link: RaLink, path: Path, *, batch: int = 10) -> Ingest:
    consumer = await link.consumer(Stream.TELEMETRY, "ingest", ack_wait_s=1.0)
    return Ingest(SqliteStore(path), [consumer], batch_size=batch, fetch_timeout_s=0.3)


async def drain(*workers: Ingest, quiet_rounds: int = 4) -> None:
    """Step every worker concurrently until none has fetched anything for a few rounds."""
    quiet = 0
    while quiet < quiet_rounds:
        fetched = await asyncio.gather(*(w.step() for w in workers))
        quiet = quiet + 1 if sum(fetched) == 0 else 0


N = 60


async def test_two_workers_on_one_durable_consumer_store_every_message_once(
    tmp_path: Path, deployment: Deployment, broker: RunningBroker
) -> None:
    path = tmp_path / "ra.sqlite"
    setup_registry(SqliteStore(path))
    publisher = await connect_ra(deployment, broker)
    links = [await connect_ra(deployment, broker) for _ in range(2)]
    try:
        workers = [await worker(link, path) for link in links]
        messages: list[UplinkMessage] = [telemetry(s) for s in range(1, N + 1)]
        messages += [telemetry(s) for s in range(1, N + 1, 4)]  # 15 redelivered copies
        messages += [telemetry(s, gw="gw.b", device="site-b.bat") for s in range(1, 11)]
        await publish(publisher, messages)
        # a gateway's message naming another gateway in its body: refused, never stored
        forged = encode(telemetry(N + 1, soc=1.0))
        await publisher.js.publish(subject("gw.b", MessageKind.TELEMETRY), forged)
        await drain(*workers)
    finally:
        for link in (publisher, *links):
            await link.close()
    store = SqliteStore(path)
    assert store.count_rows("uplink_seen") == N + 10
    assert store.count_rows("telemetry") == 2 * (N + 10)
    assert [v for _, p, _, v, _, _ in store.telemetry("site-a.bat") if p == "power_w"] == [
        100.0 * s for s in range(1, N + 1)
    ]
    assert sum(w.stats.messages for w in workers) == N + 10
    assert sum(w.stats.duplicates for w in workers) == 15
    assert sum((w.rejected for w in workers), start=type(workers[0].rejected)()) == {
        "wrong_gateway": 1
    }


async def test_an_ra_restart_in_the_middle_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, deployment: Deployment, broker: RunningBroker
) -> None:
    path = tmp_path / "ra.sqlite"
    setup_registry(SqliteStore(path))
    publisher = await connect_ra(deployment, broker)
    await publish(publisher, [telemetry(s) for s in range(1, N + 1)])
    first = await connect_ra(deployment, broker)
    crashed = await worker(first, path)
    committed = await crashed.fetch()
    crashed.store_batch(committed)  # committed, then the RA dies before acknowledging
    lost_in_flight = await crashed.fetch()  # fetched, never stored
    assert committed and lost_in_flight
    await first.client.close()  # no acks sent
    second = await connect_ra(deployment, broker)
    try:
        restarted = await worker(second, path)
        await drain(restarted)
    finally:
        await second.close()
        await publisher.close()
    store = SqliteStore(path)
    assert store.count_rows("uplink_seen") == N
    assert store.count_rows("telemetry") == 2 * N
    assert restarted.stats.duplicates == len(committed)
    assert restarted.stats.messages == N - len(committed)


def test_an_enrolled_gateway_comes_online_even_with_an_old_message(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "late.sqlite")
    setup_registry(store)  # registered at START; this message was sent a day before
    write(store, [telemetry(1, at=START - timedelta(days=1))])
    assert store.gateways("site-a")[0].status is GatewayStatus.ONLINE


async def test_the_run_loop_ingests_until_stopped(
    tmp_path: Path, deployment: Deployment, broker: RunningBroker
) -> None:
    path = tmp_path / "ra.sqlite"
    setup_registry(SqliteStore(path))
    link = await connect_ra(deployment, broker)
    try:
        await publish(link, [telemetry(s) for s in range(1, 21)])
        ingest = await worker(link, path)
        stop = asyncio.Event()
        task = asyncio.create_task(ingest.run(stop, silence_every_s=0.1))
        for _ in range(100):
            if ingest.stats.messages == 20:
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.wait_for(task, 5)
    finally:
        await link.close()
    assert ingest.stats.messages == 20
    assert SqliteStore(path).count_rows("telemetry") == 40


def test_meter_readings_and_device_states_are_stored_once(store: SqliteStore) -> None:
    from erab.bus import DeviceState, MeterReading, State

    meter = MeterReading(
        gateway_id="gw-a",
        seq=7,
        sent_at=START,
        meter_id="m-1",
        measured_at=START,
        power_w=850.0,
        import_kwh=1234.5,
    )
    state = State(
        gateway_id="gw-a",
        seq=8,
        sent_at=START,
        devices=[
            DeviceState(
                device_id="site-a.bat",
                measured_at=START,
                online=True,
                operating=True,
                mode="discharging",
                controlled=True,
            ),
            DeviceState(device_id="site-b.bat", measured_at=START, online=True),  # not gw-a's
        ],
    )
    write(store, [meter, state, meter])
    write(store, [state])
    assert store.count_rows("site_meter_readings") == 1
    assert store.count_rows("device_states") == 1
