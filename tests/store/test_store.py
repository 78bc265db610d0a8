"""Both stores (SQLite and PostgreSQL): idempotent upserts keyed (meter_id, slot_end),
windows in JST, gaps, retention, actions, settings, the baseline matrix; bad input refused
without storing anything."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from erab.clock import JST
from erab.store import MeterAction, MeterInfo, MeterReading, Store, open_store

T0 = datetime(2026, 8, 1, 12, 0, tzinfo=JST)
READ = T0 + timedelta(minutes=5)


def reading(meter: str, minutes: int, imp: float | None, exp: float | None = 0.0) -> MeterReading:
    return MeterReading(meter, T0 + timedelta(minutes=minutes), imp, exp, READ)


def test_upserting_the_same_rows_twice_keeps_one_copy(store: Store) -> None:
    rows = [reading("M1", 0, 10.0), reading("M1", 30, 10.5), reading("M2", 0, 3.0)]
    store.upsert_readings(rows)
    store.upsert_readings(rows)
    assert store.count_readings() == 3
    assert [r.import_kwh for r in store.readings()] == [10.0, 10.5, 3.0]


def test_a_later_value_replaces_the_earlier_one(store: Store) -> None:
    store.upsert_readings([reading("M1", 0, 10.0)])
    store.upsert_readings([reading("M1", 0, 11.0)])
    assert [r.import_kwh for r in store.readings()] == [11.0]


def test_no_value_never_overwrites_a_known_one(store: Store) -> None:
    store.upsert_readings([reading("M1", 0, 10.0, 2.0)])
    store.upsert_readings([reading("M1", 0, None, None)])
    [r] = store.readings()
    assert (r.import_kwh, r.export_kwh) == (10.0, 2.0)


def test_readings_come_back_in_jst_within_the_window(store: Store) -> None:
    store.upsert_readings([reading("M1", m, float(m)) for m in (0, 30, 60, 90)])
    got = store.readings(["M1"], T0 + timedelta(minutes=30), T0 + timedelta(minutes=60))
    assert [r.slot_end for r in got] == [T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)]
    assert got[0].slot_end.utcoffset() == timedelta(hours=9)


def test_bulk_point_skips_meters_without_any_value(store: Store) -> None:
    n = store.upsert_point(
        ["A", "B", "C"], T0, np.array([1.0, np.nan, 3.0]), np.array([0.5, np.nan, np.nan]), READ
    )
    assert n == 2
    got = {r.meter_id: (r.import_kwh, r.export_kwh) for r in store.readings()}
    assert got == {"A": (1.0, 0.5), "C": (3.0, None)}


def test_bulk_point_rejects_misaligned_arrays(store: Store) -> None:
    with pytest.raises(ValueError, match="2 meter ids"):
        store.upsert_point(["A", "B"], T0, np.zeros(3), np.zeros(3), READ)


def test_missing_lists_slots_without_a_complete_reading(store: Store) -> None:
    store.upsert_readings([reading("A", 0, 1.0), reading("A", 30, 1.0, None)])
    ends = [T0, T0 + timedelta(minutes=30), T0 + timedelta(minutes=60)]
    gaps = store.missing(["A", "B"], ends)
    assert gaps == {"A": ends[1:], "B": ends}


def test_retention_deletes_only_older_slots(store: Store) -> None:
    store.upsert_readings([reading("A", -60 * 24 * d, 1.0) for d in range(50)])
    deleted = store.delete_readings_before(T0 - timedelta(days=45))
    assert deleted == 4
    assert min(r.slot_end for r in store.readings()) == T0 - timedelta(days=45)


def test_actions_are_recorded_with_their_parameters(store: Store) -> None:
    first = store.record_action(MeterAction("A", "configure", T0, "ok", {"breaker_a": 30}))
    store.record_action(MeterAction("B", "disconnect", T0, "failed", detail="no answer"))
    assert first == 1
    assert [(a.action, a.params, a.result) for a in store.actions("A")] == [
        ("configure", {"breaker_a": 30}, "ok")
    ]
    assert [a.detail for a in store.actions()] == ["", "no answer"]


def test_meters_register_with_their_wrap(store: Store) -> None:
    store.register_meters([MeterInfo("A", 100000.0), MeterInfo("B")])
    assert store.meters() == [MeterInfo("A", 100000.0), MeterInfo("B", None)]


def test_naive_times_are_refused_with_a_clear_error(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.upsert_readings([MeterReading("A", datetime(2026, 8, 1), 1.0, 0.0, READ)])


def test_a_failing_batch_stores_nothing(store: Store) -> None:
    store.upsert_readings([reading("A", 0, 1.0)])
    bad = [reading("A", 30, 2.0), MeterReading(object(), T0, 1.0, 1.0, READ)]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="meter ids must be non-empty strings"):
        store.upsert_readings(bad)
    assert [r.slot_end for r in store.readings()] == [T0]


def test_meters_first_seen_in_a_failed_batch_are_usable_afterwards(store: Store) -> None:
    naive = MeterReading("NEW", datetime(2026, 8, 1), 1.0, 1.0, READ)  # fails after keying
    with pytest.raises(ValueError, match="timezone-aware"):
        store.upsert_readings([reading("NEW", 0, 1.0), naive])
    store.upsert_readings([reading("NEW", 0, 5.0)])
    assert [(r.meter_id, r.import_kwh) for r in store.readings()] == [("NEW", 5.0)]


def test_times_given_in_any_zone_come_back_as_the_same_instant_in_jst(store: Store) -> None:
    utc = datetime(2026, 8, 1, 3, 0, tzinfo=UTC)  # 12:00 JST
    store.upsert_readings([MeterReading("A", utc, 1.0, 0.0, utc + timedelta(seconds=90))])
    [r] = store.readings()
    assert r.slot_end == T0 and r.slot_end.tzinfo == JST
    assert r.read_at == T0 + timedelta(seconds=90)
    assert store.slot_end_range() == (T0, T0)


def test_readings_are_ordered_by_meter_id_byte_wise_then_time(store: Store) -> None:
    ids = ["b", "B", "M10", "M9", "a"]
    store.upsert_readings([reading(m, 30, 1.0) for m in ids] + [reading("B", 0, 1.0)])
    got = [(r.meter_id, r.slot_end) for r in store.readings()]
    assert got == [
        ("B", T0),
        ("B", T0 + timedelta(minutes=30)),
        ("M10", T0 + timedelta(minutes=30)),
        ("M9", T0 + timedelta(minutes=30)),
        ("a", T0 + timedelta(minutes=30)),
        ("b", T0 + timedelta(minutes=30)),
    ]


def test_repeats_of_one_key_in_one_batch_end_as_the_row_by_row_upsert(store: Store) -> None:
    store.upsert_readings(
        [reading("A", 0, 1.0, 5.0), reading("A", 0, None, 6.0), reading("A", 0, 2.0, None)]
    )
    [r] = store.readings()
    assert (r.import_kwh, r.export_kwh) == (2.0, 6.0)
    store.upsert_point(["A", "A"], T0, np.array([3.0, np.nan]), np.array([np.nan, 7.0]), READ)
    [r] = store.readings()
    assert (r.import_kwh, r.export_kwh) == (3.0, 7.0)


def test_a_point_for_a_fleet_is_idempotent_and_merges_with_earlier_values(store: Store) -> None:
    ids = [f"M{i:05d}" for i in range(2000)]
    imp = np.arange(2000, dtype=np.float64)
    exp = np.where(imp % 2 == 0, np.nan, 0.5)
    assert store.upsert_point(ids, T0, imp, exp, READ) == 2000
    assert store.upsert_point(ids, T0, imp, exp, READ, "reread") == 2000
    assert store.count_readings() == 2000
    store.upsert_point(ids[:2], T0, np.array([np.nan, np.nan]), np.array([9.0, 9.0]), READ)
    first = store.readings(ids[:3])
    assert [(r.import_kwh, r.export_kwh, r.source) for r in first] == [
        (0.0, 9.0, "collect"),
        (1.0, 9.0, "collect"),
        (2.0, None, "reread"),
    ]


def test_settings_are_kept_and_replaced(store: Store) -> None:
    assert store.get_setting("fleet") is None
    store.set_setting("fleet", "10")
    store.set_setting("fleet", "20")
    assert store.get_setting("fleet") == "20"


def test_a_store_keeps_its_data_across_reopening(backend_url: str) -> None:
    first = open_store(backend_url)
    first.upsert_readings([reading("A", 0, 1.0)])
    first.record_action(MeterAction("A", "read", T0, "ok"))
    first.close()
    again = open_store(backend_url, create=False)
    assert again.count_readings() == 1 and [a.action for a in again.actions()] == ["read"]
    again.close()


# --- the baseline's bulk load -------------------------------------------------------------------

DAY = date(2026, 8, 1)
MIDNIGHT = datetime(2026, 8, 1, tzinfo=JST)


def cumulative(meter: str, kwh: list[float | None]) -> list[MeterReading]:
    return [
        MeterReading(meter, MIDNIGHT + timedelta(minutes=30 * k), v, 0.0, READ)
        for k, v in enumerate(kwh)
        if v is not None
    ]


def test_the_matrix_is_the_energy_of_each_slot_with_nan_for_a_gap(store: Store) -> None:
    regs: list[float | None] = [100.0 + 0.25 * k for k in range(97)]
    regs[10] = None  # slots 9 and 10 (either end missing) are unknown, not zero
    store.upsert_readings(cumulative("A", regs))
    m = store.meter_matrix(["A"], DAY, 2)
    assert m.shape == (1, 2, 48)
    gaps = np.argwhere(np.isnan(m[0].reshape(-1))).ravel().tolist()
    assert gaps == [9, 10]
    assert np.allclose(np.delete(m[0].reshape(-1), gaps), 0.25)


def test_the_matrix_rows_follow_the_ids_given_unknown_meters_all_nan(store: Store) -> None:
    store.upsert_readings(cumulative("A", [float(k) for k in range(49)]))
    store.upsert_readings(cumulative("B", [2.0 * k for k in range(49)]))
    m = store.meter_matrix(["B", "ghost", "A", "B"], DAY, 1)
    assert m.shape == (4, 1, 48)
    assert np.allclose(m[0], 2.0) and np.allclose(m[2], 1.0) and np.allclose(m[3], 2.0)
    assert np.isnan(m[1]).all()


def test_the_matrix_undoes_a_register_roll_over_with_the_meters_wrap(store: Store) -> None:
    store.register_meters([MeterInfo("W", 100000.0)])
    regs = [(99999.0 + 0.5 * k) % 100000.0 for k in range(49)]
    store.upsert_readings(cumulative("W", regs))
    m = store.meter_matrix(["W"], DAY, 1)
    assert np.allclose(m, 0.5)


def test_the_matrix_reads_the_export_register_and_ignores_other_days(store: Store) -> None:
    rows = [
        MeterReading("A", MIDNIGHT + timedelta(minutes=30 * k), 1.0 * k, 0.1 * k, READ)
        for k in range(-48, 97)
    ]
    store.upsert_readings(rows)
    m = store.meter_matrix(["A"], date(2026, 8, 2), 1, register="export")
    assert m.shape == (1, 1, 48) and np.allclose(m, 0.1)


def test_the_matrix_refuses_a_bad_window(store: Store) -> None:
    with pytest.raises(ValueError, match="days must be at least 1"):
        store.meter_matrix(["A"], DAY, 0)
    with pytest.raises(ValueError, match="register must be 'import' or 'export'"):
        store.meter_matrix(["A"], DAY, 1, register="reactive")


def test_two_collectors_writing_the_same_point_at_once_store_it_once(backend_url: str) -> None:
    ids = [f"M{i:05d}" for i in range(5000)]
    values = np.arange(5000, dtype=np.float64)
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def collector(source: str) -> None:
        s = open_store(backend_url)
        try:
            go.wait()
            for k in range(4):
                end = T0 + timedelta(minutes=30 * k)
                s.upsert_point(ids, end, values + k, values, READ, source)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=collector, args=(src,)) for src in ("collect", "reread")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    check = open_store(backend_url)
    assert check.count_readings() == 4 * 5000
    got = check.readings(["M00007"])
    assert [r.import_kwh for r in got] == [7.0, 8.0, 9.0, 10.0]
    check.close()


def test_the_matrix_of_a_few_meters_among_many(store: Store) -> None:
    # a few meters of a large store are picked out on the server; most of them, on the client
    for k in range(20):
        store.upsert_readings(cumulative(f"M{k:02d}", [float(k) * s for s in range(49)]))
    few = store.meter_matrix(["M07", "M03"], DAY, 1)
    assert np.allclose(few[0], 7.0) and np.allclose(few[1], 3.0)
    most = store.meter_matrix([f"M{k:02d}" for k in range(19, 2, -1)], DAY, 1)
    assert np.allclose(most[:, 0, :], np.arange(19, 2, -1, dtype=float)[:, None])
