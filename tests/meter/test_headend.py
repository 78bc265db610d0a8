"""Route A head-end: collection, gap filling, 45-day retention, remote actions, export."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

import numpy as np
import pytest

from erab.clock import JST, SimulatedClock
from erab.meter.headend import (
    CSV_COLUMNS,
    EmulatedAmi,
    HeadEnd,
    HeadEndError,
    slot_end_at_or_before,
    slot_ends,
)
from erab.meter.smartmeter import MeterFleet
from erab.store import SqliteStore

ORIGIN = datetime(2026, 11, 25, tzinfo=JST)
SLOT = timedelta(minutes=30)


def fleet(n: int = 3, days: float = 2.5, capacity_days: int = 47) -> MeterFleet:
    """n meters importing 200 Wh and exporting 100 Wh every slot since ORIGIN."""
    slots = int(days * 48)
    f = MeterFleet(n, ORIGIN, unit_code=0x01, capacity_days=capacity_days)
    f.load_history(np.full((slots, n), 200.0), np.full((slots, n), 100.0))
    return f


def headend(f: MeterFleet, **ami: object) -> tuple[HeadEnd, EmulatedAmi, SqliteStore]:
    now = datetime.fromtimestamp(f.time_s, JST) + timedelta(minutes=3)
    network = EmulatedAmi(f, **ami)  # type: ignore[arg-type]
    store = SqliteStore(":memory:")
    return HeadEnd(network, store, SimulatedClock(now, speed=0)), network, store


def test_slot_boundaries_are_on_the_hour_and_half_hour() -> None:
    t = datetime(2026, 8, 1, 12, 44, 10, tzinfo=JST)
    assert slot_end_at_or_before(t) == datetime(2026, 8, 1, 12, 30, tzinfo=JST)
    assert len(slot_ends(t - timedelta(hours=2), t)) == 4


def test_collect_stores_every_meter_at_the_latest_slot_end() -> None:
    he, _, store = headend(fleet())
    report = he.collect()
    assert (report.stored, report.missing) == (3, 0)
    assert report.slot_end == datetime(2026, 11, 27, 12, 0, tzinfo=JST)
    r = store.readings(["M000001"])[0]
    assert (r.import_kwh, r.export_kwh) == pytest.approx((120 * 0.2, 120 * 0.1))


def test_collecting_a_day_gives_48_readings_per_meter() -> None:
    he, _, store = headend(fleet())
    end = he.latest_slot_end()
    he.collect_range(end - timedelta(days=1) + SLOT, end)
    assert store.count_readings() == 48 * 3


def test_collecting_twice_is_idempotent() -> None:
    he, _, store = headend(fleet())
    he.collect()
    he.collect()
    assert store.count_readings() == 3


def test_lost_readings_are_filled_by_re_reading() -> None:
    he, network, store = headend(fleet(n=50), loss_rate=0.3, seed=4)
    end = he.latest_slot_end()
    reports = he.collect_range(end - timedelta(hours=12) + SLOT, end)
    lost = sum(r.missing for r in reports)
    assert lost > 0
    network.loss_rate = 0.0
    gaps = he.fill_gaps(since=end - timedelta(hours=12) + SLOT)
    assert (gaps.missing_before, gaps.filled, gaps.still_missing) == (lost, lost, 0)
    assert store.count_readings() == 50 * 24
    assert {r.source for r in store.readings()} == {"collect", "reread"}


def test_unreachable_meter_stays_a_gap_until_it_answers() -> None:
    he, network, _ = headend(fleet(), unreachable={"M000002"})
    he.collect()
    first = he.fill_gaps(since=he.latest_slot_end())
    assert first.still_missing == 1
    network.unreachable.clear()
    second = he.fill_gaps(since=he.latest_slot_end())
    assert (second.filled, second.still_missing) == (1, 0)


def test_retention_keeps_45_days() -> None:
    he, _, store = headend(fleet(n=2, days=47, capacity_days=48))
    end = he.latest_slot_end()
    he.collect_range(end - timedelta(days=47), end)
    deleted = he.enforce_retention()
    assert deleted > 0
    oldest = min(r.slot_end for r in store.readings())
    assert oldest == end - timedelta(days=45)
    assert store.count_readings() == 2 * (45 * 48 + 1)


def test_remote_disconnect_reaches_the_meter_and_is_recorded() -> None:
    he, network, store = headend(fleet())
    action = he.disconnect("M000000", actor="alice").action
    meter = network.meter("M000000")
    assert not meter.connected
    assert meter.read(0x80) == b"\x31"  # operation status OFF over ECHONET Lite too
    assert he.read("M000000").power_w == 0.0
    assert (action.action, action.result, action.actor) == ("disconnect", "ok", "alice")
    assert [a.action for a in store.actions("M000000")] == ["disconnect", "read"]


def test_remote_connect_restores_supply() -> None:
    he, network, _ = headend(fleet())
    he.disconnect("M000000")
    he.connect("M000000")
    assert network.meter("M000000").connected
    assert he.status().disconnected == []


def test_remote_configuration_sets_breaker_and_demand_limit() -> None:
    he, network, store = headend(fleet())
    he.configure("M000001", breaker_a=30, demand_limit_w=3000)
    reading = he.read("M000001")
    assert (reading.breaker_a, reading.demand_limit_w) == (30.0, 3000.0)
    assert network.fleet.breaker_a[1] == 30.0
    assert store.actions("M000001")[0].params == {"breaker_a": 30, "demand_limit_w": 3000}


def test_a_remote_demand_limit_reaches_the_meter_and_cuts_its_supply() -> None:
    he, network, _ = headend(fleet())  # every meter draws 200 W net
    assert he.read("M000001").power_w == pytest.approx(200.0)
    he.configure("M000001", demand_limit_w=150)
    meter = network.meter("M000001")
    assert meter.demand_limit_w == 150.0 and not meter.connected
    assert meter.read(0x80) == b"\x31"
    reading = he.read("M000001")
    assert (reading.power_w, reading.connected, reading.demand_limit_w) == (0.0, False, 150.0)
    he.configure("M000001", demand_limit_w=300)  # raised above the load: supply restored
    assert he.read("M000001").power_w == pytest.approx(200.0)


def test_recorded_demand_limit_is_restored_on_a_new_network() -> None:
    he, _, store = headend(fleet())
    he.configure("M000000", demand_limit_w=100)
    fresh = EmulatedAmi(fleet())
    HeadEnd(fresh, store, he.clock).restore_remote_state()
    assert fresh.meter("M000000").demand_cut and fresh.fleet.net_w[0] == 0.0


def test_invalid_demand_limit_is_refused_naming_the_meter() -> None:
    he, network, store = headend(fleet())
    with pytest.raises(HeadEndError, match="M000001: demand limit must be a positive"):
        he.configure("M000001", breaker_a=30, demand_limit_w=-5)
    assert network.meter("M000001").breaker_a is None  # nothing applied
    assert store.actions()[0].result == "failed"


def test_invalid_configuration_is_refused_and_recorded_as_failed() -> None:
    he, _, store = headend(fleet())
    with pytest.raises(HeadEndError, match="5-200 A"):
        he.configure("M000001", breaker_a=500)
    assert store.actions()[0].result == "failed"


def test_unknown_meter_is_named_in_the_error() -> None:
    he, _, _ = headend(fleet())
    with pytest.raises(HeadEndError, match="M999999"):
        he.disconnect("M999999")


def test_action_on_unreachable_meter_is_recorded_as_failed() -> None:
    he, _, store = headend(fleet(), unreachable={"M000000"})
    with pytest.raises(HeadEndError, match="did not answer"):
        he.disconnect("M000000")
    assert [(a.action, a.result) for a in store.actions()] == [("disconnect", "failed")]


def test_recorded_state_is_restored_on_a_new_network() -> None:
    f = fleet()
    he, _, store = headend(f)
    he.disconnect("M000002")
    he.configure("M000001", breaker_a=40)
    fresh = EmulatedAmi(fleet())
    again = HeadEnd(fresh, store, he.clock)
    assert again.restore_remote_state() == 2
    assert not fresh.meter("M000002").connected and fresh.fleet.breaker_a[1] == 40.0


def test_csv_export_gives_energy_per_slot() -> None:
    he, _, _ = headend(fleet())
    end = he.latest_slot_end()
    he.collect_range(end - timedelta(hours=2), end)
    out = io.StringIO()
    n = he.export(out, end - timedelta(hours=2), end, meter_ids=["M000000"])
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert n == 4 and tuple(rows[0]) == CSV_COLUMNS
    assert {(r["import_kwh"], r["export_kwh"], r["quality"]) for r in rows} == {
        ("0.2000", "0.1000", "measured")
    }
    assert rows[0]["slot_start"] == "2026-11-27T10:00:00+09:00"
    assert rows[-1]["slot_end"] == "2026-11-27T12:00:00+09:00"


def test_export_marks_slots_with_a_missing_end_as_missing() -> None:
    he, network, _ = headend(fleet(), unreachable={"M000000"})
    end = he.latest_slot_end()
    he.collect_range(end - timedelta(hours=1), end - SLOT)
    network.unreachable.clear()
    he.collect(end)
    he.collect(end - timedelta(hours=1))
    rows = he.settlement_rows(end - timedelta(hours=1), end, ["M000000"])
    assert [r.quality for r in rows] == ["missing", "missing"]
    assert rows[0].import_kwh is None


def test_json_export_names_its_format_and_units() -> None:
    he, _, _ = headend(fleet())
    end = he.latest_slot_end()
    he.collect_range(end - SLOT, end)
    out = io.StringIO()
    he.export(out, end - SLOT, end, fmt="json")
    doc = json.loads(out.getvalue())
    assert (doc["format"], doc["unit"], doc["slot_minutes"]) == ("erab.meter-data/1", "kWh", 30)
    assert doc["rows"][0]["import_kwh"] == pytest.approx(0.2)


def test_register_roll_over_is_corrected_in_the_export() -> None:
    f = MeterFleet(1, ORIGIN, unit_code=0x01, digits=3, initial_import_kwh=99.9)
    f.load_history(np.full((4, 1), 200.0), np.zeros((4, 1)))
    he, _, _ = headend(f)
    end = he.latest_slot_end()
    he.collect_range(end - timedelta(hours=2), end)
    rows = he.settlement_rows(end - timedelta(hours=2), end)
    assert [r.import_kwh for r in rows] == pytest.approx([0.2] * 4)


def test_unknown_export_format_is_refused() -> None:
    he, _, _ = headend(fleet())
    with pytest.raises(HeadEndError, match="csv or json"):
        he.export(io.StringIO(), ORIGIN, ORIGIN + SLOT, fmt="xml")


def test_status_counts_readings_gaps_and_actions() -> None:
    he, _, _ = headend(fleet())
    he.collect()
    he.disconnect("M000001")
    status = he.status()
    assert (status.meters, status.readings, status.actions) == (3, 3, 1)
    assert status.missing_last_day == 3 * 47
    assert status.disconnected == ["M000001"]
    assert status.oldest_slot_end == status.newest_slot_end == he.latest_slot_end()


def test_a_remotely_disconnected_meter_counts_nothing_until_connected() -> None:
    f = fleet()
    he, _, _ = headend(f)
    he.disconnect("M000000")
    t0 = f.time_s
    f.observe(t0, t0 + 3600, np.full(3, 2000.0))  # every site draws 2 kW for an hour
    off, on = he.read("M000000"), he.read("M000001")
    assert off.import_kwh == pytest.approx(120 * 0.2)  # unchanged since the last slot
    assert on.import_kwh == pytest.approx(120 * 0.2 + 2.0)
    he.connect("M000000")
    f.observe(t0 + 3600, t0 + 7200, np.full(3, 2000.0))
    assert he.read("M000000").import_kwh == pytest.approx(120 * 0.2 + 2.0)


def test_a_remotely_set_breaker_trips_the_meter_over_its_current() -> None:
    f = fleet()
    he, _, _ = headend(f)
    he.configure("M000002", breaker_a=10)
    t0 = f.time_s
    f.observe(t0, t0 + 60, np.full(3, 1500.0))  # 15 A at 100 V: over 10 A
    reading = he.read("M000002")
    assert not reading.connected and reading.power_w == 0.0
    assert he.read("M000001").connected


def test_collecting_a_range_reports_its_progress() -> None:
    he, _, _ = headend(fleet())
    end = he.latest_slot_end()
    seen: list[tuple[int, int]] = []
    he.collect_range(
        end - timedelta(hours=2) + SLOT, end, progress=lambda d, t: seen.append((d, t))
    )
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_demand_limit_below_the_load_says_the_supply_was_cut_and_records_it() -> None:
    he, _, store = headend(fleet())  # every meter draws 200 W net
    outcome = he.configure("M000001", demand_limit_w=100)
    assert outcome.action.result == "ok"
    assert outcome.supply == "cut-by-demand-limit"
    assert outcome.meter is not None and not outcome.meter.connected
    recorded = store.actions("M000001")[-1].detail
    assert recorded.startswith("supply CUT") and "demand limit of 100 W" in recorded
    restored = he.configure("M000001", demand_limit_w=300)
    assert restored.supply == "on" and "supply on, 200 W" in restored.action.detail


def test_a_connect_onto_a_load_over_the_limit_says_it_was_cut_again() -> None:
    he, _, _ = headend(fleet())
    he.configure("M000000", demand_limit_w=100)
    assert he.connect("M000000").supply == "cut-by-demand-limit"
    assert he.disconnect("M000000").supply == "off"


def test_cumulative_energy_is_scaled_by_coefficient_and_unit_everywhere() -> None:
    # coefficient 10 (0xD3) x unit 0.01 kWh (0xE1 = 0x02): 0.1 kWh per count; a raw count
    # (x10), or a count times only one of the two factors, would be far off
    n, slots = 3, 120
    f = MeterFleet(n, ORIGIN, coefficient=10, unit_code=0x02, capacity_days=47)
    f.load_history(np.full((slots, n), 200.0), np.full((slots, n), 100.0))
    he, network, store = headend(f)
    he.collect_range(he.latest_slot_end() - timedelta(hours=2))
    meter = network.meter("M000002")
    latest = store.readings(["M000002"])[-1]
    assert latest.import_kwh == pytest.approx(meter.import_kwh, abs=0.1 + 1e-9)
    assert latest.export_kwh == pytest.approx(meter.export_kwh, abs=0.1 + 1e-9)
    now = he.read("M000002")
    assert now.import_kwh == pytest.approx(meter.import_kwh, abs=0.1 + 1e-9)
    rows = he.settlement_rows(he.latest_slot_end() - timedelta(hours=1), he.latest_slot_end())
    assert {(r.import_kwh, r.export_kwh) for r in rows} == {(0.2, 0.1)}
    assert store.meters()[0].wrap_kwh == pytest.approx(10**f.digits * 0.1)
