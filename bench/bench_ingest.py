"""Telemetry readings ingested per second into SQLite by the RA's ingest (target ≥ 50,000/s).

A registered fleet of 200 gateways with 10 resources each sends telemetry messages (one
sample per resource, 5 values each: 50 readings per message), 5 % of them delivered twice
as JetStream does after a lost acknowledgement.  Timed: everything the ingest does to a
batch of 500 wire payloads after fetching them — checked decoding
(:class:`erab.bus.UplinkDecoder`), conversion, dedup by (gateway, seq) against the store,
plausibility flags and the insert, one transaction per batch, in a WAL file.  The same-run
baseline inserts the very same telemetry rows with a plain ``executemany`` into an
identical table, in the same batches and transactions: the least any store could do.

Run: ``python bench/bench_ingest.py [--quick] [--messages N]``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from erab.aggregator.ingest import to_batch
from erab.aggregator.registry import Inventory, Registry
from erab.bus import MessageKind, Sample, TelemetryBatch, UplinkDecoder, encode
from erab.bus.topics import subject
from erab.store import Gateway, Resource, Site, SqliteStore
from erab.store.migrations import MIGRATIONS, statements

GATEWAYS = 200
RESOURCES_PER_GATEWAY = 10
BATCH_MESSAGES = 500
T0 = datetime(2026, 8, 1, 3, 0, tzinfo=UTC)


def inventory() -> Inventory:
    inv = Inventory()
    for g in range(GATEWAYS):
        site, gw = f"site-{g:04d}", f"gw-{g:04d}"
        inv.sites.append(Site(site, site))
        inv.gateways.append(Gateway(gw, site))
        for r in range(RESOURCES_PER_GATEWAY):
            inv.resources.append(
                Resource(f"{site}.r{r}", site, gw, "", f"{g + 1:04x}", f"027d{r + 1:02x}")
            )
    return inv


def payloads(n_messages: int) -> list[tuple[str, bytes]]:
    """(subject, wire bytes) of ``n_messages`` telemetry messages, 5 % sent twice."""
    out = []
    for i in range(n_messages):
        g, step = i % GATEWAYS, i // GATEWAYS
        when = T0 + timedelta(seconds=60 * step)
        gw = f"gw-{g:04d}"
        message = TelemetryBatch(
            gateway_id=gw,
            seq=step + 1,
            sent_at=when,
            samples=[
                Sample(
                    device_id=f"site-{g:04d}.r{r}",
                    measured_at=when,
                    values={
                        "power_w": -1500.0 + r,
                        "soc_pct": 55.0,
                        "energy_kwh": 12.5,
                        "setpoint_w": 0.0,
                        "temp_c": 31.0,
                    },
                )
                for r in range(RESOURCES_PER_GATEWAY)
            ],
        )
        wire = (subject(gw, MessageKind.TELEMETRY), encode(message))
        out.append(wire)
        if i % 20 == 7:
            out.append(wire)  # a redelivery
    return out


def ingest_run(path: Path, wire: list[tuple[str, bytes]]) -> tuple[float, int]:
    store = SqliteStore(path)
    Registry(store).import_inventory(inventory())
    decoder = UplinkDecoder()
    now = T0 + timedelta(days=30)
    start = time.perf_counter()
    readings = 0
    for k in range(0, len(wire), BATCH_MESSAGES):
        messages = [decoder.decode(s, p, now) for s, p in wire[k : k + BATCH_MESSAGES]]
        readings += store.write_uplink_batch(to_batch(messages), now).readings
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed, readings


def baseline_run(path: Path, rows: list[tuple[object, ...]], per_batch: int) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    for statement in statements(MIGRATIONS[2].sql):
        db.execute(statement)
    sql = "INSERT INTO telemetry VALUES (?, ?, ?, ?, ?, ?, ?)"
    start = time.perf_counter()
    for k in range(0, len(rows), per_batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(sql, rows[k : k + per_batch])
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4,000 messages, 3 repeats")
    parser.add_argument("--messages", type=int, default=None, help="telemetry messages per run")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each (median)")
    args = parser.parse_args()
    n = args.messages or (4_000 if args.quick else 20_000)
    repeats = args.repeats or (3 if args.quick else 5)
    wire = payloads(n)
    per_message = RESOURCES_PER_GATEWAY * 5
    ingest_s, base_s = [], []
    with tempfile.TemporaryDirectory() as folder:
        for i in range(repeats):
            path = Path(folder) / f"ingest-{i}.sqlite"
            elapsed, readings = ingest_run(path, wire)
            assert readings == n * per_message, (readings, n * per_message)
            ingest_s.append(elapsed)
            db = sqlite3.connect(path)
            rows = db.execute("SELECT * FROM telemetry").fetchall()
            db.close()
            assert len(rows) == readings
            base_s.append(
                baseline_run(Path(folder) / f"base-{i}.sqlite", rows, BATCH_MESSAGES * per_message)
            )
    readings = n * per_message
    ingest_rate = readings / statistics.median(ingest_s)
    base_rate = readings / statistics.median(base_s)
    print(
        f"fleet: {GATEWAYS} gateways x {RESOURCES_PER_GATEWAY} resources; {n:,} messages "
        f"(+{len(wire) - n:,} redelivered), {readings:,} readings per run, "
        f"{BATCH_MESSAGES} messages per transaction, {repeats} runs"
    )
    print(
        f"ingest (decode + dedup + flags + insert): median {statistics.median(ingest_s):.3f} s"
        f" = {ingest_rate:,.0f} readings/s  (target >= 50,000/s: "
        f"{'met' if ingest_rate >= 50_000 else 'NOT met'})"
    )
    print(
        f"baseline (plain executemany, same rows): median {statistics.median(base_s):.3f} s"
        f" = {base_rate:,.0f} readings/s"
    )
    print(f"ratio ingest / baseline throughput: {ingest_rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
