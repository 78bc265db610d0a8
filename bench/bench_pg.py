"""The PostgreSQL store: ingest through the store against a raw COPY, and a baseline's bulk load.

1. Meter readings: a route A collection writes one slot end for the whole fleet
   (:meth:`PostgresStore.upsert_point`, 100,000 meters a call: binary COPY into a staging
   table, then ``INSERT … ON CONFLICT`` into the month's partition).  Same-run baseline: a
   raw binary COPY of the very same rows, in the same batches and transactions, into a plain
   table with the same columns and primary key — the least any keyed store could do.
   Target: ≥ 100,000 readings/s, and ≥ 1/3 of the raw COPY.
2. Telemetry: the RA's batch write (:meth:`write_uplink_batch`, 500 messages of 50 readings:
   dedup by (gateway, seq), COPY, day partitions), against a raw COPY of the same rows.
3. A baseline's load: 45 days × 100,000 customers × 48 slots from PostgreSQL into a numpy
   array (customers, days, 48) with :meth:`meter_matrix`; time and readings/s, against a
   row-per-message binary ``COPY … TO STDOUT`` of the same readings (measured on a few days).

Each ingest figure is the median of several runs, each into a fresh database.  The bench
starts its own throw-away cluster (tests/pg.py) with the server's durability defaults (fsync
on) and a production-like memory setting.

Run: ``python bench/bench_pg.py [--quick] [--meters N] [--customers N] [--days N]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/pg.py: the cluster

from tests.pg import PgCluster

from erab.aggregator.ingest import to_batch
from erab.bus import Sample, TelemetryBatch
from erab.clock import JST
from erab.store import Gateway, MeterInfo, Resource, Site, UplinkBatch
from erab.store.matrix import day_start_s
from erab.store.pg_common import binary_copy
from erab.store.postgres import PostgresStore

SETTINGS = {  # a small production-like server: memory for sorts and hashes, rare checkpoints
    "shared_buffers": "1GB",
    "work_mem": "256MB",
    "maintenance_work_mem": "1GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
}
SLOT_END = datetime(2026, 8, 1, 0, 30, tzinfo=JST)


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f}/s"


# --- 1. meter readings ----------------------------------------------------------------------------


def meter_run(cluster: PgCluster, meters: int, slots: int) -> tuple[float, float]:
    """Seconds for ``slots`` fleet points through the store, and for the raw COPY."""
    ids = tuple(f"M{i:07d}" for i in range(meters))
    rng = np.random.default_rng(1)
    points = [
        (rng.uniform(0, 5e4, meters), np.where(rng.random(meters) < 0.3, 0.0, np.nan))
        for _ in range(slots)
    ]
    store = PostgresStore(cluster.fresh_database(template="bench_migrated"))
    store.register_meters(MeterInfo(m, 1e5) for m in ids)
    store.upsert_point(ids, SLOT_END - timedelta(minutes=30), *points[0], SLOT_END)  # warm-up
    start = time.perf_counter()
    for k, (imp, exp) in enumerate(points):
        end = SLOT_END + timedelta(minutes=30 * k)
        store.upsert_point(ids, end, imp, exp, end + timedelta(minutes=5))
    through_store = time.perf_counter() - start
    assert store.count_readings() == meters * (slots + 1)
    keys = np.asarray(store._meter_keys(ids), dtype=np.int32)  # the same rows, raw
    store.close()

    conn = psycopg.connect(cluster.fresh_database(), autocommit=True)
    conn.execute(
        "CREATE TABLE raw (slot_end BIGINT NOT NULL, meter_key INTEGER NOT NULL, import_kwh "
        "DOUBLE PRECISION, export_kwh DOUBLE PRECISION, read_at BIGINT NOT NULL, source TEXT "
        "NOT NULL DEFAULT 'collect', PRIMARY KEY (slot_end, meter_key))"
    )
    start = time.perf_counter()
    for k, (imp, exp) in enumerate(points):
        end_s = round((SLOT_END + timedelta(minutes=30 * k)).timestamp())
        payload = binary_copy(
            [
                ("int8", np.full(meters, end_s, np.int64)),
                ("int4", keys),
                ("float8", imp),
                ("float8", exp),
                ("int8", np.full(meters, end_s + 300, np.int64)),
            ]
        )
        with conn.transaction(), conn.cursor() as cur:
            copy_sql = "COPY raw (slot_end, meter_key, import_kwh, export_kwh, read_at) "
            with cur.copy(copy_sql + "FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(payload)
    raw = time.perf_counter() - start
    conn.close()
    return through_store, raw


# --- 2. telemetry -----------------------------------------------------------------------------


def fleet(store: PostgresStore, gateways: int, resources: int) -> None:
    for g in range(gateways):
        site = f"site-{g:04d}"
        store.add_site(Site(site, site), SLOT_END)
        store.add_gateway(Gateway(f"gw-{g:04d}", site), SLOT_END)
        for r in range(resources):
            node, eoj = f"{g + 1:04x}", f"027d{r + 1:02x}"
            resource = Resource(f"{site}.r{r}", site, f"gw-{g:04d}", "", node, eoj)
            store.add_resource(resource, SLOT_END)


def telemetry_batches(n_batches: int, gateways: int, resources: int) -> list[UplinkBatch]:
    t0 = datetime(2026, 8, 1, 3, 0, tzinfo=UTC)
    out, i = [], 0
    for _ in range(n_batches):
        messages = []
        for _ in range(500):
            g, step = i % gateways, i // gateways
            when = t0 + timedelta(seconds=60 * step)
            messages.append(
                TelemetryBatch(
                    gateway_id=f"gw-{g:04d}",
                    seq=step + 1,
                    sent_at=when,
                    samples=[
                        Sample(
                            device_id=f"site-{g:04d}.r{r}",
                            measured_at=when,
                            values={
                                "power_w": 100.0 + r,
                                "soc_pct": 50.0,
                                "energy_wh": 1e3 * step,
                                "room_temp_c": 26.0,
                                "setpoint_c": 27.0,
                            },
                        )
                        for r in range(resources)
                    ],
                )
            )
            i += 1
        out.append(to_batch(messages))
    return out


def telemetry_run(cluster: PgCluster, n_batches: int) -> tuple[float, float, int]:
    store = PostgresStore(cluster.fresh_database(template="bench_migrated"))
    fleet(store, 200, 10)
    batches = telemetry_batches(n_batches + 1, 200, 10)
    store.write_uplink_batch(batches[0], SLOT_END)  # warm-up: point keys, first partition
    start = time.perf_counter()
    readings = 0
    for b in batches[1:]:
        readings += store.write_uplink_batch(b, SLOT_END).readings
    through_store = time.perf_counter() - start
    assert store.count_rows("telemetry") == readings + 500 * 50
    rows = store._conn.execute(
        "SELECT measured_at, resource_key, point_key, value, gateway_key, seq, flagged "
        "FROM telemetry ORDER BY measured_at, resource_key, point_key"
    ).fetchall()[500 * 50 :]
    store.close()
    columns = list(zip(*rows, strict=True))
    kinds = ("int8", "int4", "int4", "float8", "int4", "int8", "int4")
    conn = psycopg.connect(cluster.fresh_database(), autocommit=True)
    conn.execute(
        "CREATE TABLE raw (measured_at BIGINT NOT NULL, resource_key INTEGER NOT NULL, "
        "point_key INTEGER NOT NULL, value DOUBLE PRECISION NOT NULL, gateway_key INTEGER NOT "
        "NULL, seq BIGINT NOT NULL, flagged INTEGER NOT NULL, "
        "PRIMARY KEY (measured_at, resource_key, point_key))"
    )
    per = 500 * 50
    start = time.perf_counter()
    for lo in range(0, len(rows), per):
        payload = binary_copy([(k, c[lo : lo + per]) for k, c in zip(kinds, columns, strict=True)])
        with (
            conn.transaction(),
            conn.cursor() as cur,
            cur.copy("COPY raw FROM STDIN (FORMAT BINARY)") as cp,
        ):
            cp.write(payload)
    raw = time.perf_counter() - start
    conn.close()
    return through_store, raw, readings


# --- 3. a baseline's load ---------------------------------------------------------------------


def fill_history(url: str, customers: int, first: date, days: int) -> float:
    """Server-side: ``customers`` meters with cumulative registers at every slot end from 00:00
    of ``first`` for ``days`` days; meter k uses 0.2 + (k % 10) × 0.05 kWh every slot, and
    one slot end in 1,000 is missing.  Two connections, a day each at a time (two cores).
    Returns the seconds it took."""
    store = PostgresStore(url)
    t0 = day_start_s(first)
    start = time.perf_counter()
    store.create_partitions(
        datetime.fromtimestamp(t0, JST), datetime.fromtimestamp(t0 + days * 86400, JST)
    )
    store._conn.execute(
        "INSERT INTO meters (meter_key, meter_id) SELECT g, 'C' || lpad(g::text, 7, '0') "
        "FROM generate_series(1, %s) g",
        (customers,),
    )
    store.close()
    done = [0]

    def day(d: int) -> None:
        last = 48 if d < days else 1  # the day after: only its 00:00 reading
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO meter_readings (slot_end, meter_key, import_kwh, export_kwh, "
                "read_at, source) SELECT %s::bigint + s * 1800, k, 1000 + s * (0.2 + "
                "(k %% 10) * 0.05), 0.0, %s::bigint + s * 1800 + 300, 'collect' FROM "
                "generate_series(%s::int, %s::int) s, generate_series(1, %s::int) k "
                "WHERE (k * 7919 + s * 104729) %% 1000 <> 0",
                (t0, t0, d * 48, d * 48 + last - 1, customers),
            )
        done[0] += 1
        print(f"  history: {done[0]}/{days + 1} days loaded", end="\r", flush=True)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(day, range(days + 1)))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE meter_readings")
    return time.perf_counter() - start


def matrix_run(url: str, customers: int, first: date, days: int) -> tuple[float, np.ndarray]:
    store = PostgresStore(url)
    ids = [f"C{k:07d}" for k in range(1, customers + 1)]
    start = time.perf_counter()
    m = store.meter_matrix(ids, first, days)
    seconds = time.perf_counter() - start
    store.close()
    return seconds, m


def copy_out_rate(url: str, first: date, days: int) -> tuple[int, float]:
    """Readings per second of a row-by-row binary COPY TO STDOUT of ``days`` days."""
    t0 = day_start_s(first)
    with psycopg.connect(url) as conn, conn.cursor() as cur:
        start = time.perf_counter()
        n = 0
        sql = (
            "COPY (SELECT meter_key, slot_end, import_kwh FROM meter_readings WHERE slot_end "
            f">= {t0} AND slot_end < {t0 + days * 86400}) TO STDOUT (FORMAT BINARY)"
        )
        with cur.copy(sql) as cp:
            for _ in cp:
                n += 1
        return n - 1, time.perf_counter() - start  # the last message is the trailer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the bench runs")
    parser.add_argument("--meters", type=int, default=100_000, help="fleet size for ingest")
    parser.add_argument("--slots", type=int, default=10, help="fleet points per ingest run")
    parser.add_argument("--runs", type=int, default=5, help="runs per ingest figure")
    parser.add_argument("--customers", type=int, default=100_000, help="customers to load")
    parser.add_argument("--days", type=int, default=45, help="days of history to load")
    parser.add_argument("--skip-matrix", action="store_true", help="only the ingest figures")
    args = parser.parse_args()
    if args.quick:
        args.meters, args.slots, args.runs, args.customers, args.days = 5000, 4, 3, 2000, 3

    cluster = PgCluster.start(durable=True, settings=SETTINGS)
    try:
        cluster.admin("CREATE DATABASE bench_migrated OWNER erab TEMPLATE template0")
        PostgresStore(cluster.url("bench_migrated")).close()
        print(f"PostgreSQL store bench (throw-away cluster on 127.0.0.1:{cluster.port})")

        store_s, raw_s = [], []
        for _ in range(args.runs):
            s, r = meter_run(cluster, args.meters, args.slots)
            store_s.append(s)
            raw_s.append(r)
        n = args.meters * args.slots
        s_med, r_med = statistics.median(store_s), statistics.median(raw_s)
        print(f"\n1. meter readings: {args.slots} points × {args.meters:,} meters, "
              f"median of {args.runs} runs")  # fmt: skip
        print(f"   through the store (upsert_point) {s_med:8.3f} s {rate(n, s_med)}")
        print(f"   raw binary COPY, same rows       {r_med:8.3f} s {rate(n, r_med)}")
        print(f"   ratio store / raw COPY: {r_med / s_med:.2f} (target ≥ 0.33; "
              f"≥ 100,000/s: {'yes' if n / s_med >= 1e5 else 'NO'})")  # fmt: skip

        t_store, t_raw, t_n = [], [], 0
        batches = 4 if args.quick else 10
        for _ in range(args.runs):
            s, r, t_n = telemetry_run(cluster, batches)
            t_store.append(s)
            t_raw.append(r)
        s_med, r_med = statistics.median(t_store), statistics.median(t_raw)
        print(f"\n2. telemetry: {batches} batches of 500 messages × 50 readings, "
              f"median of {args.runs} runs")  # fmt: skip
        print(f"   through the store (write_uplink_batch) {s_med:8.3f} s {rate(t_n, s_med)}")
        print(f"   raw binary COPY, same rows             {r_med:8.3f} s {rate(t_n, r_med)}")
        print(f"   ratio store / raw COPY: {r_med / s_med:.2f}")

        if args.skip_matrix:
            return
        first = date(2026, 6, 1)
        url = cluster.fresh_database(template="bench_migrated")
        total = args.customers * args.days * 48
        print(f"\n3. baseline load: {args.days} days × {args.customers:,} customers × 48 slots "
              f"= {total:,} readings")  # fmt: skip
        fill_s = fill_history(url, args.customers, first, args.days)
        print(f"   history written server-side in {fill_s:.0f} s" + " " * 20)
        times = []
        for _ in range(3):
            seconds, m = matrix_run(url, args.customers, first, args.days)
            times.append(seconds)
        k = np.arange(1, args.customers + 1)
        want = (0.2 + (k % 10) * 0.05)[:, None, None]
        known = ~np.isnan(m)
        assert m.shape == (args.customers, args.days, 48)
        assert np.allclose(np.broadcast_to(want, m.shape)[known], m[known])
        med = statistics.median(times)
        print(f"   meter_matrix → ndarray {m.shape}, {m.nbytes / 2**30:.2f} GiB, "
              f"{(~known).mean():.2%} NaN (gaps)")  # fmt: skip
        print(f"   median of 3: {med:.1f} s {rate(total, med)}")
        sample_days = min(args.days, 3)
        rows, copy_s = copy_out_rate(url, first, sample_days)
        print(f"   row-per-message binary COPY TO STDOUT of {sample_days} days: {rows:,} rows "
              f"in {copy_s:.1f} s {rate(rows, copy_s)}")  # fmt: skip
        print(f"   ratio meter_matrix / row COPY: {(total / med) / (rows / copy_s):.2f}")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
