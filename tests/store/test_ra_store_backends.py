"""The RA's tables on both backends: the ingest's (gateway, seq) dedup (the same batch twice,
repeats inside a batch, two writers at once, two ingest workers on one durable consumer of a
real nats-server), the gateway lifecycle the batch write drives, acknowledgements, and the
registry's unique rules."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from erab.aggregator.ingest import Ingest, to_batch
from erab.aggregator.registry import Registry, RegistryError
from erab.bus import (
    Acknowledgement,
    Device,
    DeviceOutcome,
    Hello,
    MessageKind,
    Offline,
    RunningBroker,
    Sample,
    Stream,
    TelemetryBatch,
    UplinkMessage,
    encode,
)
from erab.bus.topics import subject
from erab.clock import SimulatedClock
from erab.store import (
    BatchOutcome,
    Gateway,
    GatewayStatus,
    Resource,
    Site,
    StoreConflict,
    open_store,
)
from tests.bus.conftest import Deployment, connect_ra

START = datetime(2026, 8, 1, 3, 0, tzinfo=UTC)
GATEWAYS = ("gw-a", "gw.b")


def setup_registry(store: Any) -> None:
    reg = Registry(store, SimulatedClock(START))
    for n, gw in enumerate(GATEWAYS):
        site = f"site-{n}"
        reg.add_site(Site(site, site))
        reg.add_gateway(Gateway(gw, site))
        for r in range(3):
            reg.add_resource(
                Resource(f"{site}.r{r}", site, gw, "", f"0{n}0{n}", f"027d0{r + 1}", rated_kw=3.0)
            )


def telemetry(seq: int, gw: str = "gw-a", at: datetime | None = None) -> TelemetryBatch:
    when = at or START + timedelta(seconds=seq)
    site = f"site-{GATEWAYS.index(gw)}"
    return TelemetryBatch(
        gateway_id=gw,
        seq=seq,
        sent_at=when,
        samples=[
            Sample(
                device_id=f"{site}.r{r}",
                measured_at=when,
                values={"power_w": 100.0 * seq + r, "soc_pct": 50.0},
            )
            for r in range(3)
        ],
    )


@pytest.fixture
def ra(backend_url: str) -> Iterator[Any]:
    store = open_store(backend_url)
    setup_registry(store)
    yield store
    store.close()


def write(store: Any, messages: list[UplinkMessage], minutes: float = 0.0) -> BatchOutcome:
    outcome: BatchOutcome = store.write_uplink_batch(
        to_batch(messages), START + timedelta(minutes=minutes)
    )
    return outcome


def test_the_same_batch_twice_is_stored_once(ra: Any) -> None:
    batch = [telemetry(s) for s in range(1, 11)] + [telemetry(s, "gw.b") for s in range(1, 6)]
    first, again = write(ra, batch), write(ra, batch)
    assert (first.stored, first.duplicates, first.readings) == (15, 0, 90)
    assert (again.stored, again.duplicates, again.readings) == (0, 15, 0)
    assert ra.count_rows("uplink_seen") == 15 and ra.count_rows("telemetry") == 90
    power = [v for r, p, _, v, _, _ in ra.telemetry("site-0.r1") if p == "power_w"]
    assert power == [100.0 * s + 1 for s in range(1, 11)]


def test_a_message_repeated_inside_one_batch_counts_once(ra: Any) -> None:
    outcome = write(ra, [telemetry(1), telemetry(2), telemetry(1)])
    assert (outcome.stored, outcome.duplicates) == (2, 1)
    assert ra.count_rows("telemetry") == 12


def test_readings_across_jst_days_are_all_stored_and_read_back_in_order(ra: Any) -> None:
    # 14:30 and 15:30 UTC are either side of midnight JST: two telemetry partitions
    times = [datetime(2026, 8, 1, 14, 30, tzinfo=UTC), datetime(2026, 8, 1, 15, 30, tzinfo=UTC)]
    write(ra, [telemetry(2, at=times[1]), telemetry(1, at=times[0])])
    got = [(t, seq) for _, p, t, _, _, seq in ra.telemetry("site-0.r0") if p == "power_w"]
    assert got == [(times[0], 1), (times[1], 2)]


def test_two_writers_at_once_store_no_message_twice_and_lose_none(backend_url: str) -> None:
    setup = open_store(backend_url)
    setup_registry(setup)
    setup.close()
    n = 200
    messages: list[UplinkMessage] = [telemetry(s, gw) for s in range(1, n + 1) for gw in GATEWAYS]
    # each writer gets every message (redelivery to both), in batches of its own sizes and order
    plans = [
        [messages[i : i + 25] for i in range(0, len(messages), 25)],
        [messages[::-1][i : i + 40] for i in range(0, len(messages), 40)],
    ]
    outcomes: list[list[BatchOutcome]] = [[], []]
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def writer(k: int) -> None:
        store = open_store(backend_url)
        try:
            go.wait()
            for batch in plans[k]:
                outcomes[k].append(write(store, batch))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    stored = sum(o.stored for w in outcomes for o in w)
    duplicates = sum(o.duplicates for w in outcomes for o in w)
    assert (stored, duplicates) == (len(messages), len(messages))
    check: Any = open_store(backend_url)
    assert check.count_rows("uplink_seen") == len(messages)
    assert check.count_rows("telemetry") == 6 * len(messages)
    seqs = [s for _, p, _, _, _, s in check.telemetry("site-1.r2") if p == "soc_pct"]
    assert seqs == list(range(1, n + 1))
    check.close()


def test_a_hello_gives_the_allow_list_and_a_will_takes_the_gateway_offline(ra: Any) -> None:
    hello = Hello(
        gateway_id="gw-a",
        seq=1,
        sent_at=START + timedelta(minutes=1),
        site_id="site-0",
        software="t",
        devices=[Device(device_id="x", eoj="013001", node_id="0000")],
    )
    outcome = write(ra, [hello], minutes=1)
    assert [a.device_id for a in outcome.allow_lists["gw-a"]] == [
        "site-0.r0",
        "site-0.r1",
        "site-0.r2",
    ]
    assert [p.eoj for p in ra.pending_devices("gw-a")] == ["013001"]
    assert ra.gateway("gw-a").status is GatewayStatus.ONLINE
    old_will = Offline(gateway_id="gw-a", seq=2, sent_at=START, connected_at=START)
    write(ra, [old_will], minutes=2)
    assert ra.gateway("gw-a").status is GatewayStatus.ONLINE
    when = START + timedelta(minutes=1)
    write(ra, [Offline(gateway_id="gw-a", seq=3, sent_at=when, connected_at=when)], minutes=3)
    assert ra.gateway("gw-a").status is GatewayStatus.OFFLINE
    assert [(a.kind, a.gateway_id) for a in ra.alerts()] == [("gateway_offline", "gw-a")]


def test_silent_gateways_go_offline_with_an_alert(ra: Any) -> None:
    write(ra, [telemetry(1), telemetry(1, "gw.b", at=START + timedelta(minutes=9))])
    assert ra.mark_silent_gateways(START + timedelta(minutes=5), START) == ["gw-a"]
    assert {g.gateway_id: g.status for g in ra.gateways()} == {
        "gw-a": GatewayStatus.OFFLINE,
        "gw.b": GatewayStatus.ONLINE,
    }
    assert [a.kind for a in ra.alerts(open_only=True)] == ["gateway_silent"]


def test_unknown_and_revoked_gateways_store_nothing(ra: Any) -> None:
    ra.set_gateway("gw.b", status=GatewayStatus.REVOKED, cert_serial="1f", at=START)
    stranger = TelemetryBatch(gateway_id="gw-zz", seq=1, sent_at=START, samples=[])
    outcome = write(ra, [telemetry(1, "gw.b"), stranger])
    assert outcome.refused == {"revoked_gateway": 1, "unknown_gateway": 1}
    assert ra.count_rows("uplink_seen") == 0 and ra.count_rows("telemetry") == 0


def test_acknowledgements_are_kept_once_with_their_outcomes(ra: Any) -> None:
    ack = Acknowledgement(
        gateway_id="gw-a",
        seq=5,
        sent_at=START,
        command_seq=17,
        received_at=START,
        outcomes=[
            DeviceOutcome(device_id="site-0.r0", outcome="applied", readback={"power_w": -2e3})
        ],
    )
    write(ra, [ack, ack])
    write(ra, [ack])
    assert ra.command_acks("gw-a") == [(17, None, [("site-0.r0", "applied")])]
    assert ra.count_rows("command_outcomes") == 1


def test_a_second_record_with_the_same_id_is_a_conflict(ra: Any) -> None:
    with pytest.raises(StoreConflict):
        ra.add_site(Site("site-0", "again"), START)
    with pytest.raises(StoreConflict):
        ra.add_resource(Resource("site-0.r0", "site-0", "gw-a", "", "0000", "027d01"), START)
    assert [s.site_id for s in ra.sites()] == ["site-0", "site-1"]


def test_a_reading_sent_again_in_another_message_is_kept_once(ra: Any) -> None:
    # a gateway that restarted and replayed its buffer under new sequence numbers
    at = START + timedelta(seconds=5)
    first = write(ra, [telemetry(1, at=at)])
    again = write(ra, [telemetry(2, at=at), telemetry(3)])
    assert (first.stored, again.stored) == (1, 2)
    assert ra.count_rows("telemetry") == 12  # seq 2 repeated seq 1's readings: not stored
    got = [(t, seq) for _, p, t, _, _, seq in ra.telemetry("site-0.r0") if p == "power_w"]
    assert got == [(START + timedelta(seconds=3), 3), (at, 1)]


# --- the RA's ingest workers on a real nats-server, into each backend -----------------------------


async def test_two_ingest_workers_on_one_durable_consumer_store_every_message_once(
    backend_url: str, deployment: Deployment, broker: RunningBroker
) -> None:
    setup = open_store(backend_url)
    setup_registry(setup)
    setup.close()
    n = 60
    messages: list[UplinkMessage] = [telemetry(s, gw) for s in range(1, n + 1) for gw in GATEWAYS]
    messages += [telemetry(s) for s in range(1, n + 1, 3)]  # 20 redelivered copies
    publisher = await connect_ra(deployment, broker)
    links = [await connect_ra(deployment, broker) for _ in range(2)]
    stores = [open_store(backend_url) for _ in links]
    try:
        for m in messages:
            await publisher.js.publish(subject(m.gateway_id, MessageKind.TELEMETRY), encode(m))
        workers = []
        for link, store in zip(links, stores, strict=True):
            consumer = await link.consumer(Stream.TELEMETRY, "ingest", ack_wait_s=1.0)
            workers.append(Ingest(store, [consumer], batch_size=10, fetch_timeout_s=0.3))  # type: ignore[arg-type]  # open_store: Store
        quiet = 0
        while quiet < 4:
            fetched = await asyncio.gather(*(w.step() for w in workers))
            quiet = quiet + 1 if sum(fetched) == 0 else 0
    finally:
        for link in (publisher, *links):
            await link.close()
        for s in stores:
            s.close()
    check: Any = open_store(backend_url)
    assert check.count_rows("uplink_seen") == 2 * n
    assert check.count_rows("telemetry") == 6 * 2 * n
    assert sum(w.stats.messages for w in workers) == 2 * n
    assert sum(w.stats.duplicates for w in workers) == 20
    power = [v for _, p, _, v, _, _ in check.telemetry("site-1.r0") if p == "power_w"]
    assert power == [100.0 * s for s in range(1, n + 1)]
    check.close()


def test_an_alert_is_cleared_once(ra: Any) -> None:
    ra.raise_alert("gateway_silent", "gw-a silent", START, gateway_id="gw-a")
    [alert] = ra.alerts(open_only=True)
    assert ra.clear_alert(alert.alert_id, START + timedelta(minutes=5)) is True
    assert ra.clear_alert(alert.alert_id, START + timedelta(minutes=9)) is False
    assert ra.alerts(open_only=True) == []
    [cleared] = ra.alerts()
    assert cleared.cleared_at == START + timedelta(minutes=5)


# --- site meters and contract caps (migration 4) ------------------------------------------------


def test_a_site_keeps_its_meter_and_a_meter_serves_one_site_only(ra: Any) -> None:
    reg = Registry(ra, SimulatedClock(START))
    assert ra.site("site-0").meter_id is None
    reg.update_site("site-0", meter_id="M000007")
    reg.add_site(Site("site-9", "nine", meter_id="M000009"))
    assert ra.site("site-0").meter_id == "M000007"
    assert {s.site_id: s.meter_id for s in ra.sites()} == {
        "site-0": "M000007", "site-1": None, "site-9": "M000009"}  # fmt: skip
    with pytest.raises(RegistryError, match="meter 'M000007' already measures site 'site-0'"):
        reg.update_site("site-1", meter_id="M000007")
    with pytest.raises(StoreConflict):  # the store's own rule, for any other writer
        ra.update_site(replace(ra.site("site-1"), meter_id="M000007"))
    assert ra.site("site-1").meter_id is None  # the refused change left nothing behind
    reg.update_site("site-0", meter_id=None)
    reg.update_site("site-1", meter_id="M000007")  # freed, it may move
    assert ra.site("site-1").meter_id == "M000007"


def test_a_contract_keeps_its_incentive_cap_or_none(ra: Any) -> None:
    from erab.store import Contract, Customer

    reg = Registry(ra, SimulatedClock(START))
    reg.add_customer(Customer("c1", "one"))
    reg.add_contract(Contract("k1", "c1", ("tertiary-1",), 20.0, "high-4-of-5", 500.0))
    reg.add_contract(Contract("k2", "c1", ("tertiary-2",), 15.0, "high-4-of-5"))
    assert {c.contract_id: c.incentive_cap_yen for c in ra.contracts()} == {"k1": 500.0,
                                                                            "k2": None}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_version_3_registry_gains_meter_and_cap_columns_keeping_its_rows(
    backend: str, request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erab.store import Contract, pg_schema
    from erab.store import migrations as sqlite_steps

    url = (f"sqlite:///{tmp_path / 'v3.sqlite'}" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))  # fmt: skip
    monkeypatch.setattr(sqlite_steps, "MIGRATIONS", sqlite_steps.MIGRATIONS[:3])
    monkeypatch.setattr(pg_schema, "POSTGRES_MIGRATIONS", pg_schema.POSTGRES_MIGRATIONS[:3])
    old = open_store(url)
    assert old.schema_version == 3
    old._write(lambda: (  # type: ignore[attr-defined]
        old._sql("INSERT INTO customers VALUES ('c1', 'one', 0)"),  # type: ignore[attr-defined]
        old._sql("INSERT INTO sites (site_id, customer_id, name, kind, created_at) "  # type: ignore[attr-defined]
                 "VALUES ('s1', 'c1', 'one', 'home', 0)"),
        old._sql("INSERT INTO contracts (contract_id, customer_id, products, "  # type: ignore[attr-defined]
                 "incentive_yen_per_kwh, baseline_method, created_at) VALUES "
                 "('k1', 'c1', '[\"tertiary-1\"]', 20.0, 'high-4-of-5', 0)"),
    ))  # fmt: skip
    old.close()
    monkeypatch.undo()
    store = open_store(url)
    try:
        assert store.migrations_applied == [4] and store.schema_version == 4
        assert store.sites() == [Site("s1", "one", "home", "c1", None)]  # type: ignore[attr-defined]
        assert store.contracts() == [  # type: ignore[attr-defined]
            Contract("k1", "c1", ("tertiary-1",), 20.0, "high-4-of-5", None)]
        Registry(store, SimulatedClock(START)).update_site("s1", meter_id="M1")  # type: ignore[arg-type]
        assert store.site("s1").meter_id == "M1"  # type: ignore[attr-defined]
    finally:
        store.close()


def test_registry_sql_is_rendered_for_psycopg_and_a_percent_is_refused() -> None:
    from erab.store.registry_sql import pg_placeholders

    assert pg_placeholders("UPDATE sites SET meter_id = ? WHERE site_id = ?") == (
        "UPDATE sites SET meter_id = %s WHERE site_id = %s")  # fmt: skip
    with pytest.raises(ValueError, match="may not contain '%'"):
        pg_placeholders("SELECT * FROM sites WHERE name LIKE 'a%' AND site_id = ?")
