"""30-minute readings ingested per second by the route A head-end, for a fleet over a day.

The head-end collects every meter of an emulated fleet (10,000 meters; 1,000 with --quick)
at each of the 48 slot ends of a simulated day: it reads the registers over the emulated AMI
network (vectorised over the fleet), converts counts to kWh, and upserts the rows into SQLite
(WAL, keyed (meter_id, slot_end), one transaction per slot end).  The same-run baseline
inserts the very same rows with a plain ``executemany`` INSERT into an unkeyed table, the
least a store could do.  Also timed: collecting the day again (idempotent upserts) and
filling the gaps left by a 1 % reading loss.

Run: ``python bench/bench_headend.py [--quick] [--meters N]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from erab.clock import JST, SimulatedClock
from erab.meter.headend import EmulatedAmi, HeadEnd, slot_ends
from erab.meter.smartmeter import MeterFleet
from erab.store import SqliteStore
from erab.store.sqlite import _SCHEMA, _UPSERT

NOW = datetime(2026, 8, 2, 0, 5, tzinfo=JST)  # just after the simulated day 2026-08-01


def headend_run(fleet: MeterFleet, folder: Path, loss: float = 0.0) -> tuple[float, HeadEnd]:
    store = SqliteStore(folder / f"headend-{time.monotonic_ns()}.sqlite")
    he = HeadEnd(EmulatedAmi(fleet, loss_rate=loss, seed=1), store, SimulatedClock(NOW, 0))
    end = he.latest_slot_end()
    start = time.perf_counter()
    he.collect_range(end - timedelta(days=1) + timedelta(minutes=30), end)
    return time.perf_counter() - start, he


def baseline_run(
    rows_per_slot: list[list[tuple[str, int, float, float]]], folder: Path, *, keyed: bool = False
) -> float:
    """Insert prebuilt rows: into an unkeyed table (plain), or with the store's own keyed
    upsert statement into its own schema (keyed: the SQL cost alone, without the head-end)."""
    db = sqlite3.connect(folder / f"baseline-{time.monotonic_ns()}.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    if keyed:
        db.executescript(_SCHEMA)
        db.executemany(
            "INSERT INTO meters (meter_key, meter_id) VALUES (?, ?)",
            ((i, r[0]) for i, r in enumerate(rows_per_slot[0])),
        )
        sql = _UPSERT
        rows_per_slot = [
            [(i, s, a, b, s, "collect") for i, (_, s, a, b) in enumerate(rows)]  # type: ignore[misc]
            for rows in rows_per_slot
        ]
    else:
        db.execute("CREATE TABLE r (meter_id TEXT, slot_end INTEGER, imp REAL, exp REAL)")
        sql = "INSERT INTO r VALUES (?, ?, ?, ?)"
    start = time.perf_counter()
    for rows in rows_per_slot:
        db.execute("BEGIN")
        db.executemany(sql, rows)
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 meters, fewer repeats")
    parser.add_argument("--meters", type=int, help="fleet size (default 10,000)")
    parser.add_argument("--repeats", type=int, help="timed runs per figure (median)")
    args = parser.parse_args()
    n = args.meters or (1_000 if args.quick else 10_000)
    repeats = args.repeats or (2 if args.quick else 3)

    t = time.perf_counter()
    fleet = MeterFleet.synthetic(n, NOW, days=1, seed=7)
    print(f"fleet: {n} meters, 1 simulated day of history built in {time.perf_counter() - t:.2f} s")

    network = EmulatedAmi(fleet)
    points = slot_ends(NOW - timedelta(days=1), NOW)
    rows_per_slot = []
    for p in points:
        ids, imp, exp = network.read_point(p)
        ts = round(p.timestamp())
        rows_per_slot.append(list(zip(ids, [ts] * n, imp.tolist(), exp.tolist(), strict=True)))
    total = sum(len(r) for r in rows_per_slot)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        head_s, base_s, keyed_s, again_s = [], [], [], []
        for _ in range(repeats):
            elapsed, he = headend_run(fleet, folder)
            head_s.append(elapsed)
            assert he.store.count_readings() == total, "head-end stored a different row count"
            end = he.latest_slot_end()
            t = time.perf_counter()
            he.collect_range(end - timedelta(days=1) + timedelta(minutes=30), end)
            again_s.append(time.perf_counter() - t)
            assert he.store.count_readings() == total, "re-collecting must not add rows"
            he.store.close()
            base_s.append(baseline_run(rows_per_slot, folder))
            keyed_s.append(baseline_run(rows_per_slot, folder, keyed=True))
        _, lossy = headend_run(fleet, folder, loss=0.01)
        assert isinstance(lossy.network, EmulatedAmi)
        lossy.network.loss_rate = 0.0
        t = time.perf_counter()
        gaps = lossy.fill_gaps()
        gap_s = time.perf_counter() - t
        lossy.store.close()

    head = statistics.median(head_s)
    base = statistics.median(base_s)
    keyed = statistics.median(keyed_s)
    again = statistics.median(again_s)
    print(f"readings per run: {total} ({n} meters x {len(points)} slot ends)")
    print(f"head-end collect + upsert:     {total / head:12,.0f} readings/s  (median {head:.2f} s)")
    print(f"baseline plain executemany:    {total / base:12,.0f} readings/s  (median {base:.2f} s)")
    print(f"ratio head-end / baseline:     {base / head:12.2f}")
    print(
        f"store's keyed upsert SQL only: {total / keyed:12,.0f} readings/s  (median {keyed:.2f} s)"
    )
    print(f"ratio head-end / upsert SQL:   {keyed / head:12.2f}")
    print(f"re-collect (idempotent upsert): {total / again:11,.0f} readings/s")
    print(
        f"gap filling after 1% loss:     {gaps.filled} of {gaps.missing_before} re-read in "
        f"{gap_s:.2f} s ({gaps.filled / gap_s:,.0f} readings/s)"
    )


if __name__ == "__main__":
    main()
