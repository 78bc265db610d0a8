"""Security throughput: command envelopes signed/verified per second, audit records per second.

Each figure is the median over repeats, next to a baseline measured in the same run; the
baseline and the measured code run alternately, repeat by repeat, and the ratio is the median
of the per-repeat ratios, so load from other programs on a shared machine affects both alike:
- envelopes vs raw Ed25519 sign/verify (cryptography) of the same bytes, so the ratio is
  the cost of canonical JSON, parsing and the replay/expiry checks;
- audit appends vs raw SQLite INSERTs of the same rows, one transaction each, same PRAGMAs,
  so the ratio is the cost of hashing and chaining; once without a checkpoint key, once as
  a deployment's log runs (a signed, chained checkpoint every 100 records and the head file
  rewritten atomically each time), so the difference is the cost of checkpointing.

    python bench/bench_security.py           # full run
    python bench/bench_security.py --quick   # short run
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.clock import SimulatedClock
from erab.security import (
    AuditKind,
    AuditLog,
    EnvelopeSigner,
    EnvelopeVerifier,
    FileVerifierStateStore,
    MemoryVerifierStateStore,
    SqliteAuditStore,
)
from erab.security._common import canonical_json

BODY = {
    "action": "set_power",
    "resource": "battery-1",
    "power_w": -1500,
    "slot": "2026-08-01T13:00",
}


Row = tuple[str, float, str, float, float]  # measure, per s, baseline, per s, ratio


def _rate(run: Callable[[], int]) -> float:
    start = time.perf_counter()
    count = run()  # returns how many operations it did
    return count / (time.perf_counter() - start)


def paired(
    name: str,
    run: Callable[[], int],
    base_name: str,
    baseline: Callable[[], int],
    repeats: int,
) -> Row:
    """Median rates of ``run`` and ``baseline`` measured alternately, and the median ratio."""
    rates, base_rates = [], []
    for _ in range(repeats):
        base_rates.append(_rate(baseline))
        rates.append(_rate(run))
    ratio = statistics.median(r / b for r, b in zip(rates, base_rates, strict=True))
    return name, statistics.median(rates), base_name, statistics.median(base_rates), ratio


def bench_envelopes(n: int, repeats: int, tmp: Path) -> list[Row]:
    clock = SimulatedClock(datetime(2026, 8, 1, tzinfo=UTC), speed=0)
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    payload = b"erab-command-envelope-v1\n" + canonical_json(BODY)

    def raw_sign() -> int:
        for _ in range(n):
            key.sign(payload)
        return n

    def env_sign() -> int:
        signer = EnvelopeSigner(key, clock)
        for _ in range(n):
            signer.sign("gw-1", BODY)
        return n

    signature = key.sign(payload)

    def raw_verify() -> int:
        for _ in range(n):
            public.verify(signature, payload)
        return n

    signer = EnvelopeSigner(key, clock)
    wires = [signer.sign("gw-1", BODY) for _ in range(n)]

    def env_verify() -> int:
        verifier = EnvelopeVerifier("gw-1", clock, MemoryVerifierStateStore(), trusted_key=public)
        for wire in wires:
            verifier.verify(wire)
        return n

    counter = iter(range(10**9))

    def env_verify_file() -> int:
        path = tmp / f"verifier-{next(counter)}.json"
        verifier = EnvelopeVerifier("gw-1", clock, FileVerifierStateStore(path), trusted_key=public)
        for wire in wires[: max(1, n // 10)]:
            verifier.verify(wire)
        return max(1, n // 10)

    return [
        paired("envelopes signed", env_sign, "raw Ed25519 sign", raw_sign, repeats),
        paired(
            "envelopes verified (state in memory)",
            env_verify,
            "raw Ed25519 verify",
            raw_verify,
            repeats,
        ),
        paired(
            "envelopes verified (state fsynced to file)",
            env_verify_file,
            "raw Ed25519 verify",
            raw_verify,
            repeats,
        ),
    ]


def bench_audit(n: int, repeats: int, tmp: Path) -> list[Row]:
    clock = SimulatedClock(datetime(2026, 8, 1, tzinfo=UTC), speed=0)
    counter = iter(range(10**9))
    details = {"sequence": 1, "power_w": -1500, "resource": "battery-1"}

    def chained() -> int:
        store = SqliteAuditStore(tmp / f"audit-{next(counter)}.sqlite")
        log = AuditLog(store, clock)
        for i in range(n):
            log.append(AuditKind.COMMAND, "ra", f"gw-{i % 100}", details)
        store.close()
        return n

    key = Ed25519PrivateKey.generate()

    def checkpointed() -> int:
        # As every erab command opens the log: a checkpoint every 100 records + audit-head.json.
        run = next(counter)
        store = SqliteAuditStore(tmp / f"audit-{run}.sqlite")
        log = AuditLog(store, clock, checkpoint_key=key, head_file=tmp / f"head-{run}.json")
        for i in range(n):
            log.append(AuditKind.COMMAND, "ra", f"gw-{i % 100}", details)
        store.close()
        return n

    def raw_insert() -> int:
        db = sqlite3.connect(tmp / f"raw-{next(counter)}.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE audit_records (id INTEGER PRIMARY KEY AUTOINCREMENT, position INTEGER,"
            " recorded_at TEXT, kind TEXT, actor TEXT, subject TEXT, details TEXT,"
            " prev_hash TEXT, record_hash TEXT)"
        )
        text = canonical_json(details).decode()
        for i in range(n):
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "INSERT INTO audit_records (position, recorded_at, kind, actor, subject, details,"
                " prev_hash, record_hash) VALUES (?,?,?,?,?,?,?,?)",
                (
                    i + 1,
                    "2026-08-01T00:00:00.000000Z",
                    "command",
                    "ra",
                    f"gw-{i % 100}",
                    text,
                    "0" * 64,
                    "0" * 64,
                ),
            )
            db.execute("COMMIT")
        db.close()
        return n

    return [
        paired(
            "audit records appended (SQLite file)",
            chained,
            "raw SQLite INSERT, same rows",
            raw_insert,
            repeats,
        ),
        paired(
            "audit appends + checkpoints every 100",
            checkpointed,
            "raw SQLite INSERT, same rows",
            raw_insert,
            repeats,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    args = parser.parse_args()
    n, repeats = (300, 3) if args.quick else (3000, 7)
    with tempfile.TemporaryDirectory(prefix="erab-bench-") as tmp_name:
        tmp = Path(tmp_name)
        rows = bench_envelopes(n, repeats, tmp) + bench_audit(n // 3, repeats, tmp)
    print(
        f"erab security benchmark ({'quick' if args.quick else 'full'}: n={n}, "
        f"median of {repeats} repeats)"
    )
    print(f"{'measure':<44} {'per s':>10}   {'baseline':<30} {'per s':>10}  ratio")
    for name, rate, base_name, base, ratio in rows:
        print(f"{name:<44} {rate:>10,.0f}   {base_name:<30} {base:>10,.0f}  {ratio:5.2f}")


if __name__ == "__main__":
    main()
