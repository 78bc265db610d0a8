"""The production store: PostgreSQL through psycopg 3 (the optional extra ``erab[postgres]``).

It implements :class:`~erab.store.base.Store` and :class:`~erab.store.base.AggregatorStore`
over the same schema as SQLite (:mod:`erab.store.pg_schema`), chosen with a URL
``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``; opening it applies the migrations it
lacks, under an advisory lock so that several processes starting at once migrate once.

Bulk writes go through COPY (binary format, built with numpy).  New rows — a collection's
new slot end, the telemetry of new messages — are copied straight into their table inside a
savepoint; if any key is already stored, the savepoint is rolled back and the batch is copied
into a temporary staging table and moved with ``INSERT … ON CONFLICT`` instead.  So the keyed
idempotence is SQLite's: the same rows twice leave the same table, and of two writers storing
the same key concurrently one waits for the other and then skips or merges.
``meter_readings`` (per JST month) and ``telemetry`` (per JST day) are range partitions,
created before the first write that needs one, in their own short transaction.

Every psycopg failure is raised as one :class:`~erab.store.base.StoreError` line naming the
store (never its password) and what was wrong.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import errors as pg_errors

from erab.store import migrations, pg_schema
from erab.store.base import (
    FloatArray,
    MeterAction,
    MeterInfo,
    MeterReading,
    StoreError,
    StoreNotFound,
)
from erab.store.matrix import SLOT_S, check_window, day_start_s, fan_out, slot_energy_kwh
from erab.store.pg_common import (
    CONNECT_TIMEOUT_S,
    binary_copy,
    check_url,
    describe_url,
    explain,
    first_line,
)
from erab.store.pg_common import dt as _dt
from erab.store.pg_common import guarded as _guarded
from erab.store.pg_common import ts as _ts
from erab.store.pg_ra import PgRaTables
from erab.store.pg_schema import (
    METER_PARTITIONS,
    PARTITIONED,
    TELEMETRY_PARTITIONS,
    VERSION_TABLE,
    Partitioning,
    partition_ddl,
)

ATTEMPTS = 4  # a transaction that lost a deadlock or serialization race is tried again
_MIGRATE_LOCK = 0x65726162_00000001  # advisory lock keys ("erab" + purpose)
_PARTITION_LOCK = 0x65726162_00000002
MATRIX_CONNECTIONS = 2  # a baseline load of most meters reads on this many connections
_MATRIX_ROWS_PER_QUERY = 8_000_000  # readings per reply: 128 MB (a bytea holds up to 1 GB)

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])
Connection = psycopg.Connection[tuple[Any, ...]]

_UPSERT_SET = (
    "ON CONFLICT (slot_end, meter_key) DO UPDATE SET "
    "import_kwh = coalesce(excluded.import_kwh, meter_readings.import_kwh), "
    "export_kwh = coalesce(excluded.export_kwh, meter_readings.export_kwh), "
    "read_at = excluded.read_at, source = excluded.source"
)

_METER_COLUMNS = "slot_end, meter_key, import_kwh, export_kwh, read_at, source"
_STAGING = (
    # ON COMMIT DELETE ROWS: a staging table is empty at the start of every transaction
    "CREATE TEMP TABLE IF NOT EXISTS stage_point (meter_key INTEGER, import_kwh "
    "DOUBLE PRECISION, export_kwh DOUBLE PRECISION) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_reading (meter_key INTEGER, slot_end BIGINT, "
    "import_kwh DOUBLE PRECISION, export_kwh DOUBLE PRECISION, read_at BIGINT, source_ix "
    "INTEGER) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_ids (meter_id TEXT COLLATE \"C\", pos INTEGER, "
    "meter_key INTEGER) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_telemetry (measured_at BIGINT, resource_key "
    "INTEGER, point_key INTEGER, value DOUBLE PRECISION, gateway_key INTEGER, seq BIGINT, "
    "flagged INTEGER) ON COMMIT DELETE ROWS",
)


_NO_PARTITION = re.compile(r"no partition of relation|relation \"\w+_p\d{6,8}\" does not exist")


class PostgresStore(PgRaTables):
    """:class:`~erab.store.base.Store` and the RA's tables on PostgreSQL.

    ``url`` is ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``; the database must exist
    (an administrator creates it, see docs/store.md).  With ``create=False`` a database
    without erab's tables is not migrated: :class:`StoreNotFound` is raised instead."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        check_url(url)
        self.url = url
        self.where = describe_url(url)
        self.path = self.where  # what messages shared with the SQLite store name
        self._keys: dict[str, int] = {}
        self._point_keys: dict[str, int] = {}
        self._partitions: set[str] = set()
        self._last_ids: Sequence[str] = ()
        self._last_keys = np.zeros(0, np.int32)
        self._unique_ids: Sequence[str] = ()  # the last fleet tuple seen without repeats
        self._lock = threading.RLock()  # one connection: one caller at a time
        try:
            self._conn: Connection = psycopg.connect(
                url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise explain(self.where, exc) from None
        try:
            self.migrations_applied = self._migrate(create)
            for sql in _STAGING:
                self._conn.execute(sql)
        except psycopg.Error as exc:
            self._conn.close()
            raise explain(self.where, exc) from None
        except BaseException:
            self._conn.close()
            raise

    # -- schema ----------------------------------------------------------------------------
    def _version(self) -> int:
        row = self._conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not row or not row[0]:
            return 0
        found = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(found[0] or 0) if found else 0

    @property
    def schema_version(self) -> int:
        """The schema version of the open store (the last migration applied)."""
        with self._lock:
            return self._version()

    def _migrate(self, create: bool) -> list[int]:
        steps = migrations_for_postgres()
        known = len(steps)
        version = self._version()  # a read: opening an up-to-date store takes no lock
        if version > known:
            raise self._too_new(version, known)
        if version == known:
            return []
        if version == 0 and not create:
            raise StoreNotFound(
                f"PostgreSQL store {self.where} has no erab tables (it was never opened "
                "to be created)"
            )
        now_s = round(time.time())
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            start = self._version()  # again under the lock: another process may have won
            if start > known:
                raise self._too_new(start, known)
            todo = steps[start:]
            for step in todo:
                try:
                    with self._conn.transaction():  # a savepoint per step
                        for statement in migrations.statements(step.sql):
                            self._conn.execute(statement)
                        self._conn.execute(VERSION_TABLE)
                        self._conn.execute(
                            "INSERT INTO schema_migrations (version, name, applied_at) "
                            "VALUES (%s, %s, %s)",
                            (step.version, step.name, now_s),
                        )
                except psycopg.Error as exc:
                    raise StoreError(
                        f"PostgreSQL store {self.where}: migration {step.version} "
                        f"({step.name}) failed: {first_line(exc)}; nothing was changed, the "
                        f"store stays at version {start}"
                    ) from None
            if todo:
                self._conn.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('schema_version', %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (str(todo[-1].version),),
                )
        return [step.version for step in todo]

    def _too_new(self, found: int, known: int) -> StoreError:
        return StoreError(
            f"PostgreSQL store {self.where} has schema version {found}, newer than this "
            f"erab ({known}): upgrade erab"
        )

    # -- transactions and partitions ---------------------------------------------------------
    def _write(
        self,
        work: Callable[[], _T],
        partitions: Sequence[tuple[Partitioning, npt.NDArray[np.int64]]] = (),
    ) -> _T:
        """``work`` as one transaction (rolled back on error), after creating the partitions
        its rows need; tried again after a deadlock, a serialization failure, or a partition
        that another process dropped meanwhile."""
        with self._lock:
            for attempt in range(1, ATTEMPTS + 1):
                for part, times in partitions:
                    self._ensure_partitions(part, times)
                try:
                    with self._conn.transaction():
                        return work()
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                    self._forget_keys()
                    if attempt == ATTEMPTS:
                        raise
                    time.sleep(0.05 * attempt)
                except (pg_errors.CheckViolation, pg_errors.UndefinedTable) as exc:
                    # a partition this process made was dropped by another's retention
                    self._forget_keys()
                    if not _NO_PARTITION.search(str(exc)) or attempt == ATTEMPTS:
                        raise
                    self._partitions.clear()
                except BaseException:
                    self._forget_keys()
                    raise
        raise AssertionError("unreachable")

    def _ensure_partitions(self, part: Partitioning, times: npt.NDArray[np.int64]) -> None:
        if times.size == 0:
            return
        needed = {p for p in part.for_times(times) if p[0] not in self._partitions}
        if not needed:
            return
        # its own short transaction, before the batch's: creating a partition locks the
        # parent table, and two batches that each did it mid-way could deadlock
        with self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PARTITION_LOCK,))
            for name, first, end in sorted(needed):
                self._conn.execute(partition_ddl(part.table, name, first, end))
        self._partitions.update(p[0] for p in needed)

    @_guarded
    def create_partitions(self, first: datetime, last: datetime) -> list[str]:
        """Create the partitions of both time-partitioned tables covering ``first`` to
        ``last`` ahead of time (partition maintenance); returns their names."""
        lo, hi = _ts(first), _ts(last)
        names: list[str] = []
        with self._lock:
            for part in PARTITIONED:
                covering = part.covering(lo, hi)
                self._ensure_partitions(part, np.array([p[1] for p in covering], np.int64))
                names += [p[0] for p in covering]
        return names

    @_guarded
    def partitions(self, table: str) -> list[str]:
        """The partitions of ``meter_readings`` or ``telemetry``, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = to_regclass(%s) ORDER BY 1",
                (table,),
            ).fetchall()
        return [str(r[0]) for r in rows]

    def _drop_partitions_before(self, part: Partitioning, cutoff_s: int) -> int:
        """Drop the partitions of ``part`` that end at or before ``cutoff_s``; rows dropped."""
        dropped = 0
        for name in self.partitions(part.table):
            end = part.end_of(name)
            if end is not None and end <= cutoff_s:
                row = self._conn.execute(f"SELECT count(*) FROM {name}").fetchone()
                self._conn.execute(f"DROP TABLE {name}")
                self._partitions.discard(name)
                dropped += int(row[0]) if row else 0
        return dropped

    # -- meters ----------------------------------------------------------------------------
    @_guarded
    def register_meters(self, meters: Iterable[MeterInfo]) -> int:
        rows = [(m.meter_id, m.wrap_kwh) for m in meters]

        def work() -> None:
            with self._conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO meters (meter_id, wrap_kwh) VALUES (%s, %s) ON CONFLICT "
                    "(meter_id) DO UPDATE SET wrap_kwh = excluded.wrap_kwh",
                    rows,
                )

        self._write(work)
        return len(rows)

    @_guarded
    def meters(self) -> list[MeterInfo]:
        with self._lock:
            cur = self._conn.execute("SELECT meter_id, wrap_kwh FROM meters ORDER BY meter_id")
            return [MeterInfo(mid, wrap) for mid, wrap in cur]

    def _stage_ids(self, meter_ids: Iterable[str]) -> None:
        """Copy ``meter_ids`` with their positions into ``stage_ids`` (inside a transaction)
        and look up the keys of those the store knows."""
        with self._conn.cursor() as cur:
            cur.execute("DELETE FROM stage_ids")
            with cur.copy("COPY stage_ids (meter_id, pos) FROM STDIN") as cp:
                for pos, m in enumerate(meter_ids):
                    cp.write_row((m, pos))
            cur.execute(
                "UPDATE stage_ids s SET meter_key = m.meter_key FROM meters m "
                "WHERE m.meter_id = s.meter_id"
            )
            cur.execute("ANALYZE stage_ids")  # a temporary table has no statistics

    def _meter_keys(self, meter_ids: Sequence[str]) -> list[int]:
        """Surrogate keys for ``meter_ids`` (inside a transaction); new meters registered."""
        keys = self._keys
        unknown = [m for m in dict.fromkeys(meter_ids) if m not in keys]
        if unknown:
            for m in unknown:
                if not isinstance(m, str) or not m:
                    raise ValueError(f"meter ids must be non-empty strings, got {m!r}")
            self._stage_ids(unknown)
            self._conn.execute(
                "INSERT INTO meters (meter_id) SELECT meter_id FROM stage_ids "
                "WHERE meter_key IS NULL ORDER BY meter_id ON CONFLICT (meter_id) DO NOTHING"
            )
            for mid, key in self._conn.execute(
                "SELECT m.meter_id, m.meter_key FROM meters m JOIN stage_ids s USING (meter_id)"
            ):
                keys[mid] = key
        return [keys[m] for m in meter_ids]

    def _fleet_keys(self, meter_ids: Sequence[str]) -> npt.NDArray[np.int32]:
        """:meth:`_meter_keys` as an array, kept for the same (immutable) fleet tuple."""
        if meter_ids is self._last_ids:
            return self._last_keys
        found = np.asarray(self._meter_keys(meter_ids), dtype=np.int32)
        if isinstance(meter_ids, tuple):
            self._last_ids, self._last_keys = meter_ids, found
        return found

    def _forget_keys(self) -> None:
        # after a rollback, meters and points registered inside it are gone
        self._keys.clear()
        self._point_keys.clear()
        self._last_ids, self._last_keys = (), np.zeros(0, np.int32)

    # -- readings ----------------------------------------------------------------------------
    @_guarded
    def upsert_readings(self, readings: Iterable[MeterReading]) -> int:
        batch = list(readings)
        if not batch:
            return 0
        # merge repeats of one key as SQLite's row-by-row upsert would (a later value wins,
        # a None never overwrites): one INSERT … ON CONFLICT may touch a row only once
        merged: dict[tuple[str, int], list[Any]] = {}
        for r in batch:
            key = (r.meter_id, _ts(r.slot_end))
            row = [r.import_kwh, r.export_kwh, _ts(r.read_at), r.source]
            old = merged.get(key)
            if old is not None:
                row[0] = old[0] if row[0] is None else row[0]
                row[1] = old[1] if row[1] is None else row[1]
            merged[key] = row
        for m, _ in merged:
            if not isinstance(m, str) or not m:
                raise ValueError(f"meter ids must be non-empty strings, got {m!r}")
        sources = sorted({row[3] for row in merged.values()})
        source_ix = {s: i + 1 for i, s in enumerate(sources)}  # SQL arrays count from 1
        ends = np.fromiter((k[1] for k in merged), np.int64, len(merged))

        def nan(v: float | None) -> float:
            return np.nan if v is None else float(v)

        def work() -> None:
            keys = self._meter_keys([k[0] for k in merged])
            rows = list(merged.values())
            payload = binary_copy(
                [
                    ("int4", keys),
                    ("int8", ends),
                    ("float8", [nan(r[0]) for r in rows]),
                    ("float8", [nan(r[1]) for r in rows]),
                    ("int8", [r[2] for r in rows]),
                    ("int4", [source_ix[r[3]] for r in rows]),
                ]
            )
            with self._conn.cursor() as cur:
                with cur.copy("COPY stage_reading FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(payload)
                cur.execute(
                    "INSERT INTO meter_readings (slot_end, meter_key, import_kwh, export_kwh, "
                    "read_at, source) SELECT slot_end, meter_key, nullif(import_kwh, 'NaN'), "
                    "nullif(export_kwh, 'NaN'), read_at, (%s::text[])[source_ix] "
                    f"FROM stage_reading ORDER BY slot_end, meter_key {_UPSERT_SET}",
                    (sources,),
                )

        self._write(work, [(METER_PARTITIONS, ends)])
        return len(batch)

    @_guarded
    def upsert_point(
        self,
        meter_ids: Sequence[str],
        slot_end: datetime,
        import_kwh: FloatArray,
        export_kwh: FloatArray,
        read_at: datetime,
        source: str = "collect",
    ) -> int:
        imp = np.asarray(import_kwh, dtype=np.float64)
        exp = np.asarray(export_kwh, dtype=np.float64)
        if imp.shape != (len(meter_ids),) or exp.shape != imp.shape:
            raise ValueError(
                f"upsert_point: {len(meter_ids)} meter ids but value arrays of shape "
                f"{imp.shape} and {exp.shape}"
            )
        end_s, read_s = _ts(slot_end), _ts(read_at)
        if meter_ids is not self._unique_ids and len(set(meter_ids)) != len(meter_ids):
            # repeats: merged as upsert_readings does
            return self.upsert_readings(
                MeterReading(m, slot_end, _none(i), _none(e), read_at, source)
                for m, i, e in zip(meter_ids, imp.tolist(), exp.tolist(), strict=True)
                if not (np.isnan(i) and np.isnan(e))
            )
        if isinstance(meter_ids, tuple):
            self._unique_ids = meter_ids
        keep = ~(np.isnan(imp) & np.isnan(exp))
        ids: Sequence[str] = meter_ids
        if not keep.all():
            idx = np.flatnonzero(keep)
            ids = [meter_ids[i] for i in idx.tolist()]
            imp, exp = imp[idx], exp[idx]
        if not ids:
            return 0

        def work() -> None:
            keys = self._fleet_keys(ids)
            direct = [
                ("int8", end_s),
                ("int4", keys),
                ("float8?", imp),
                ("float8?", exp),
                ("int8", read_s),
                ("text", source),
            ]
            # straight into the month's partition: the rows need no routing
            month = METER_PARTITIONS.bounds(end_s)[0]
            if self._copy_new_rows(month, _METER_COLUMNS, direct):
                return
            payload = binary_copy([("int4", keys), ("float8", imp), ("float8", exp)])
            with self._conn.cursor() as cur:
                with cur.copy("COPY stage_point FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(payload)
                cur.execute(
                    "INSERT INTO meter_readings (slot_end, meter_key, import_kwh, export_kwh, "
                    "read_at, source) SELECT %s, meter_key, nullif(import_kwh, 'NaN'), "
                    "nullif(export_kwh, 'NaN'), %s, %s FROM stage_point ORDER BY meter_key "
                    f"{_UPSERT_SET}",
                    (end_s, read_s, source),
                )

        self._write(work, [(METER_PARTITIONS, np.array([end_s], np.int64))])
        return len(ids)

    def _copy_new_rows(
        self, table: str, columns: str, data: Sequence[tuple[str, Any]]
    ) -> bool:
        """COPY rows straight into ``table`` inside a savepoint; False (nothing written) if
        any of their keys is already stored.  A collection writes a new slot end, so this
        is the common case, at the speed of a plain COPY; the caller then merges the rows
        through a staging table and ``INSERT … ON CONFLICT`` instead."""
        sql = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        try:
            with self._conn.transaction(), self._conn.cursor() as cur, cur.copy(sql) as cp:
                cp.write(binary_copy(data))
        except pg_errors.UniqueViolation:
            return False
        return True

    _SELECT_READINGS = (
        "SELECT m.meter_id, r.slot_end, r.import_kwh, r.export_kwh, r.read_at, r.source "
        "FROM meter_readings r JOIN meters m ON m.meter_key = r.meter_key"
    )

    @_guarded
    def readings(
        self,
        meter_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[MeterReading]:
        clauses: list[str] = []
        args: list[object] = []
        if start is not None:
            clauses.append("r.slot_end >= %s")
            args.append(_ts(start))
        if end is not None:
            clauses.append("r.slot_end <= %s")
            args.append(_ts(end))
        if meter_ids is not None:
            clauses.append("m.meter_id = ANY(%s)")
            args.append(list(dict.fromkeys(meter_ids)))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        with self._lock:
            cur = self._conn.execute(
                f"{self._SELECT_READINGS} {where} ORDER BY m.meter_id, r.slot_end",
                args,
            )
            return [MeterReading(m, _dt(s), i, e, _dt(r), src) for m, s, i, e, r, src in cur]

    @_guarded
    def missing(
        self, meter_ids: Sequence[str], slot_ends: Sequence[datetime]
    ) -> dict[str, list[datetime]]:
        if not slot_ends or not meter_ids:
            return {}
        wanted = sorted({_ts(e) for e in slot_ends})
        ids = list(dict.fromkeys(meter_ids))
        out: dict[str, list[int]] = {}

        def work() -> set[str]:
            self._stage_ids(ids)
            cur = self._conn.execute(
                "SELECT s.meter_id, w.slot_end FROM stage_ids s CROSS JOIN "
                "unnest(%s::bigint[]) AS w (slot_end) WHERE s.meter_key IS NOT NULL AND NOT "
                "EXISTS (SELECT 1 FROM meter_readings r WHERE r.slot_end = w.slot_end AND "
                "r.meter_key = s.meter_key AND r.import_kwh IS NOT NULL AND r.export_kwh IS "
                "NOT NULL)",
                (wanted,),
            )
            for mid, s_end in cur:
                out.setdefault(mid, []).append(s_end)
            known = self._conn.execute(
                "SELECT meter_id FROM stage_ids WHERE meter_key IS NOT NULL"
            ).fetchall()
            return {str(r[0]) for r in known}

        registered = self._write(work)
        for mid in ids:  # meters never seen by the store miss every slot
            if mid not in registered:
                out[mid] = list(wanted)
        return {mid: [_dt(t) for t in sorted(out[mid])] for mid in meter_ids if out.get(mid)}

    @_guarded
    def meter_matrix(
        self,
        meter_ids: Sequence[str],
        first_day: date,
        days: int,
        *,
        register: str = "import",
    ) -> FloatArray:
        """kWh per 30-minute slot, shape ``(len(meter_ids), days, 48)``, from ``first_day``
        00:00 JST; NaN where a reading at either end of the slot is missing (see
        :mod:`erab.store.matrix`).

        The server packs each reading as 16 bytes and sends a range of slot ends as one
        ``bytea`` (one message per query instead of one per row, which is what bounds a
        row-by-row COPY on the client).  When most of the store's meters are asked for, the
        slot ranges are read on :data:`MATRIX_CONNECTIONS` connections at once (the packing
        is the server's work, one core per connection) and the meters are picked out on the
        client; for a few meters, one query per range joins them on the server."""
        check_window(meter_ids, days, register)
        order = {m: i for i, m in enumerate(dict.fromkeys(meter_ids))}
        t0 = day_start_s(first_day)
        width = days * 48 + 1
        cumulative = np.full((len(order), width), np.nan)
        flat = cumulative.reshape(-1)
        wraps = np.full(len(order), np.nan)
        if not order:
            return fan_out(slot_energy_kwh(cumulative, wraps, days), meter_ids, order)
        column = f"r.{register}_kwh"  # checked above: import or export
        where = (
            f"r.slot_end >= %s AND r.slot_end < %s AND {column} IS NOT NULL "
            f"AND (r.slot_end - {t0}) %% 1800 = 0"
        )
        joined = (  # (position × width + slot-end index) as int8, then the value
            f"SELECT string_agg(int8send(s.pos::bigint * {width} + (r.slot_end - {t0}) / 1800)"
            f" || float8send({column}), ''::bytea) FROM meter_readings r JOIN stage_ids s "
            f"ON s.meter_key = r.meter_key WHERE {where}"
        )
        scanned = (  # meter key, slot-end index, value
            f"SELECT string_agg(int4send(r.meter_key) || int4send(((r.slot_end - {t0}) / 1800)"
            f"::integer) || float8send({column}), ''::bytea) FROM meter_readings r WHERE {where}"
        )
        at_pos = np.dtype([("at", ">i8"), ("kwh", ">f8")])
        at_key = np.dtype([("key", ">i4"), ("slot", ">i4"), ("kwh", ">f8")])

        def ranges(per_query: int) -> list[tuple[int, int]]:
            step = max(1, per_query)
            return [
                (t0 + lo * SLOT_S, t0 + min(width, lo + step) * SLOT_S)
                for lo in range(0, width, step)
            ]

        def work() -> tuple[npt.NDArray[np.int64], int] | None:
            """Wraps and keys; in join mode the whole load (inside this transaction)."""
            self._stage_ids(order)
            rows = self._conn.execute(
                "SELECT s.pos, s.meter_key, m.wrap_kwh FROM stage_ids s "
                "JOIN meters m USING (meter_key)"
            ).fetchall()
            count = self._conn.execute("SELECT count(*) FROM meters").fetchone()
            total = int(count[0]) if count else 0
            keys = np.full(max((k for _, k, _ in rows), default=0) + 1, -1, np.int64)
            for pos, key, wrap in rows:
                keys[key] = pos
                wraps[pos] = np.nan if wrap is None else wrap
            if 2 * len(rows) >= total:
                return keys, total
            with self._conn.cursor(binary=True) as cur:
                for lo, hi in ranges(_MATRIX_ROWS_PER_QUERY // max(1, len(rows))):
                    cur.execute(joined, (lo, hi))
                    got = cur.fetchone()
                    if got is not None and got[0] is not None:
                        packed = np.frombuffer(got[0], dtype=at_pos)
                        flat[packed["at"]] = packed["kwh"]
            return None

        with self._lock:
            scan = self._write(work)
            if scan is not None:
                keys, total = scan
                self._scan_ranges(
                    scanned, ranges(_MATRIX_ROWS_PER_QUERY // max(1, total)), keys, at_key, flat,
                    width,
                )  # fmt: skip
        return fan_out(slot_energy_kwh(cumulative, wraps, days), meter_ids, order)

    def _scan_ranges(
        self,
        sql: str,
        ranges: list[tuple[int, int]],
        keys: npt.NDArray[np.int64],
        record: np.dtype[Any],
        flat: FloatArray,
        width: int,
    ) -> None:
        """Run ``sql`` for each slot-end range on up to :data:`MATRIX_CONNECTIONS`
        connections (this store's and short-lived others) and scatter what comes back."""
        extra = min(MATRIX_CONNECTIONS, len(ranges)) - 1
        conns = [self._conn] + [
            psycopg.connect(self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
            for _ in range(extra)
        ]
        scatter = threading.Lock()

        def run(k: int) -> None:
            with conns[k].cursor(binary=True) as cur:
                for lo, hi in ranges[k :: len(conns)]:
                    cur.execute(sql, (lo, hi))
                    got = cur.fetchone()
                    if got is None or got[0] is None:
                        continue
                    packed = np.frombuffer(got[0], dtype=record)
                    key = packed["key"].astype(np.int64)
                    inside = key < len(keys)
                    pos = np.where(inside, keys[np.where(inside, key, 0)], -1)
                    wanted = pos >= 0  # readings of meters not asked for are dropped
                    at = pos[wanted] * width + packed["slot"][wanted]
                    with scatter:
                        flat[at] = packed["kwh"][wanted]

        try:
            with ThreadPoolExecutor(len(conns)) as pool:
                for future in [pool.submit(run, k) for k in range(len(conns))]:
                    future.result()
        finally:
            for conn in conns[1:]:
                conn.close()

    @_guarded
    def count_readings(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT count(*) FROM meter_readings").fetchone()
        return int(row[0]) if row else 0

    @_guarded
    def slot_end_range(self) -> tuple[datetime | None, datetime | None]:
        with self._lock:
            row = self._conn.execute(
                "SELECT min(slot_end), max(slot_end) FROM meter_readings"
            ).fetchone()
        lo, hi = row if row else (None, None)
        return (None if lo is None else _dt(lo), None if hi is None else _dt(hi))

    @_guarded
    def delete_readings_before(self, cutoff: datetime) -> int:
        """Retention: whole months before ``cutoff`` are dropped as partitions (no row by
        row delete, no bloat); the rest of the month holding ``cutoff`` is deleted."""
        cutoff_s = _ts(cutoff)

        def work() -> int:
            dropped = self._drop_partitions_before(METER_PARTITIONS, cutoff_s)
            cur = self._conn.execute(
                "DELETE FROM meter_readings WHERE slot_end < %s", (cutoff_s,)
            )
            return dropped + cur.rowcount

        return self._write(work)

    @_guarded
    def delete_telemetry_before(self, cutoff: datetime) -> int:
        """Retention of the RA's telemetry: whole JST days before ``cutoff`` are dropped as
        partitions, the rest of the day holding ``cutoff`` deleted; returns rows removed."""
        cutoff_s = _ts(cutoff)

        def work() -> int:
            dropped = self._drop_partitions_before(TELEMETRY_PARTITIONS, cutoff_s)
            cur = self._conn.execute("DELETE FROM telemetry WHERE measured_at < %s", (cutoff_s,))
            return dropped + cur.rowcount

        return self._write(work)

    # -- actions -----------------------------------------------------------------------------
    @_guarded
    def record_action(self, action: MeterAction) -> int:
        def work() -> int:
            row = self._conn.execute(
                "INSERT INTO meter_actions (meter_id, action, params, requested_at, result, "
                "detail, actor) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING action_id",
                (
                    action.meter_id,
                    action.action,
                    json.dumps(dict(action.params), sort_keys=True),
                    _ts(action.requested_at),
                    action.result,
                    action.detail,
                    action.actor,
                ),
            ).fetchone()
            return int(row[0]) if row else 0

        return self._write(work)

    @_guarded
    def actions(self, meter_id: str | None = None) -> list[MeterAction]:
        sql = (
            "SELECT action_id, meter_id, action, params, requested_at, result, detail, actor "
            "FROM meter_actions"
        )
        args: tuple[object, ...] = ()
        if meter_id is not None:
            sql += " WHERE meter_id = %s"
            args = (meter_id,)
        with self._lock:
            cur = self._conn.execute(sql + " ORDER BY action_id", args)
            return [
                MeterAction(mid, act, _dt(at), res, json.loads(params), detail, actor, aid)
                for aid, mid, act, params, at, res, detail, actor in cur
            ]

    # -- settings ----------------------------------------------------------------------------
    @_guarded
    def get_setting(self, key: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT value FROM store_meta WHERE key = %s", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def set_setting(self, key: str, value: str) -> None:
        self._write(
            lambda: self._conn.execute(
                "INSERT INTO store_meta (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    def close(self) -> None:
        self._conn.close()


def _none(v: float) -> float | None:
    return None if np.isnan(v) else v


def migrations_for_postgres() -> tuple[migrations.Migration, ...]:
    """The PostgreSQL steps, checked against SQLite's (same versions, same names)."""
    sqlite_steps = migrations.MIGRATIONS
    pg_steps = pg_schema.POSTGRES_MIGRATIONS
    for mine, theirs in zip(pg_steps, sqlite_steps, strict=False):
        if (mine.version, mine.name) != (theirs.version, theirs.name):
            raise StoreError(
                f"migration {theirs.version} ({theirs.name}) has no PostgreSQL form "
                f"(found {mine.version}, {mine.name!r}): erab is built wrong"
            )
    if len(sqlite_steps) > len(pg_steps):
        step = sqlite_steps[len(pg_steps)]
        raise StoreError(
            f"migration {step.version} ({step.name}) has no PostgreSQL form yet: "
            "erab is built wrong"
        )
    return pg_steps
