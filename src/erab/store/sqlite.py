"""The embedded default store: one SQLite file (stdlib ``sqlite3``, WAL journal).

Several processes may use one file at once (two collectors, a collector and an export):
readers never wait (WAL), and a writer waits up to :data:`BUSY_TIMEOUT_S` for another
writer's transaction to end, then tries its transaction again a few times before giving up
with a :class:`StoreError`.  Every batch is one transaction, so a writer that gives up
stores nothing of that batch, and keyed upserts make a batch written twice harmless.

Any SQLite failure (a file that is not a database, a damaged or truncated one, a lock that
never ends) is raised as :class:`StoreError` naming the file, never as ``sqlite3`` errors.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from itertools import repeat
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from erab.clock import JST
from erab.store import migrations
from erab.store.base import (
    FloatArray,
    MeterAction,
    MeterInfo,
    MeterReading,
    StoreError,
    StoreNotFound,
)
from erab.store.matrix import SLOT_S, check_window, day_start_s, fan_out, slot_energy_kwh
from erab.store.migrations import MigrationError, SchemaTooNew, migrate
from erab.store.ra_sqlite import RaTables

BUSY_TIMEOUT_S = 30.0  # how long one attempt waits for another process's write to end
BUSY_ATTEMPTS = 4  # attempts at a transaction that found the store locked
SCHEMA_VERSION = len(migrations.MIGRATIONS)
_SCHEMA = migrations.MIGRATIONS[0].sql  # the meter tables (bench_headend's baseline uses them)

_UPSERT = """
INSERT INTO meter_readings (meter_key, slot_end, import_kwh, export_kwh, read_at, source)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (slot_end, meter_key) DO UPDATE SET
    import_kwh = coalesce(excluded.import_kwh, meter_readings.import_kwh),
    export_kwh = coalesce(excluded.export_kwh, meter_readings.export_kwh),
    read_at = excluded.read_at,
    source = excluded.source
"""

_SELECT_READINGS = """
SELECT m.meter_id, r.slot_end, r.import_kwh, r.export_kwh, r.read_at, r.source
FROM meter_readings r JOIN meters m ON m.meter_key = r.meter_key
"""


def _ts(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"store times must be timezone-aware, got naive {when!r}")
    return round(when.timestamp())


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, JST)


_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _explain(path: str, exc: sqlite3.Error) -> StoreError:
    """One line naming the file and what is wrong with it, with what to do."""
    text = str(exc)
    if "not a database" in text:
        why = "it is not an SQLite database (not an erab store?): give another --db or --home"
    elif "malformed" in text or "corrupt" in text:
        why = (
            "the file is damaged or truncated (database disk image is malformed): restore it "
            "from a backup or give another --db or --home"
        )
    elif "locked" in text or "busy" in text:
        why = (
            f"another process kept it locked for more than {BUSY_TIMEOUT_S * BUSY_ATTEMPTS:.0f}"
            " s (database is locked): try again when it has finished"
        )
    elif "unable to open" in text:
        why = "cannot open the file (unable to open database file): check the path and rights"
    elif "readonly" in text:
        why = "the file is read-only for this user (attempt to write a readonly database)"
    else:
        why = text
    return StoreError(f"SQLite store {path}: {why}")


def _guarded(method: _F) -> _F:
    """Raise sqlite3 errors of ``method`` as :class:`StoreError` naming the file."""

    @functools.wraps(method)
    def wrapper(self: SqliteStore, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc

    return cast(_F, wrapper)


def _is_busy(exc: sqlite3.Error) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and (
        "locked" in str(exc) or "busy" in str(exc)
    )


class SqliteStore(RaTables):
    """:class:`~erab.store.base.Store` on SQLite.  ``path`` may be ``":memory:"``.

    With ``create=False`` a missing file is not created: :class:`StoreNotFound` is raised
    (for commands that only read, so that they leave no empty store behind)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = str(path)
        self._keys: dict[str, int] = {}
        self._point_keys: dict[str, int] = {}
        self._last_ids: tuple[str, ...] = ()
        self._last_keys: list[int] = []
        target: str = self.path
        uri = False
        if self.path != ":memory:":
            file = Path(self.path)
            if file.is_dir():
                raise StoreError(f"SQLite store {self.path}: is a directory, not a file")
            if not create:
                if not file.exists():
                    raise StoreNotFound(f"SQLite store {self.path} does not exist")
                # mode=rw: never create the file, even if it vanishes meanwhile
                target, uri = file.resolve().as_uri() + "?mode=rw", True
            else:
                try:
                    file.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(
                        f"SQLite store {self.path}: cannot create its folder ({exc.strerror})"
                    ) from None
        try:
            self._db = sqlite3.connect(
                target, isolation_level=None, timeout=BUSY_TIMEOUT_S, uri=uri
            )
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from None
        try:
            self._retry_busy(self._init_schema)
        except sqlite3.Error as exc:
            self._db.close()
            raise _explain(self.path, exc) from None
        except StoreError:
            self._db.close()
            raise

    def _init_schema(self) -> None:
        # Reading the header first: a file that is not SQLite fails here, before any write.
        # A store already up to date is only read, so opening one never waits for a writer.
        self._db.execute("PRAGMA schema_version").fetchone()
        if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            self.migrations_applied = migrate(
                self._db, migrations.MIGRATIONS, round(time.time())
            )
        except SchemaTooNew as exc:
            raise StoreError(
                f"SQLite store {self.path} has schema version {exc.found}, newer than this "
                f"erab ({exc.known}): upgrade erab"
            ) from None
        except MigrationError as exc:
            raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    @property
    def schema_version(self) -> int:
        """The schema version of the open store (the last migration applied)."""
        return migrations.current_version(self._db)

    def _retry_busy(self, work: Callable[[], _T]) -> _T:
        """Run one transaction, again if another process kept the store locked."""
        for attempt in range(1, BUSY_ATTEMPTS + 1):
            try:
                return work()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or attempt == BUSY_ATTEMPTS:
                    raise
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    # -- meters -------------------------------------------------------------------------
    @_guarded
    def register_meters(self, meters: Iterable[MeterInfo]) -> int:
        rows = [(m.meter_id, m.wrap_kwh) for m in meters]
        self._write(
            lambda: self._db.executemany(
                "INSERT INTO meters (meter_id, wrap_kwh) VALUES (?, ?) ON CONFLICT (meter_id) "
                "DO UPDATE SET wrap_kwh = excluded.wrap_kwh",
                rows,
            )
        )
        return len(rows)

    @_guarded
    def meters(self) -> list[MeterInfo]:
        cur = self._db.execute("SELECT meter_id, wrap_kwh FROM meters ORDER BY meter_id")
        return [MeterInfo(mid, wrap) for mid, wrap in cur]

    def _meter_keys(self, meter_ids: Sequence[str]) -> list[int]:
        """Surrogate keys for ``meter_ids``; meters not seen before are registered."""
        if meter_ids is self._last_ids:  # the same (immutable) fleet tuple as last time
            return self._last_keys
        keys = self._keys
        unknown = [m for m in dict.fromkeys(meter_ids) if m not in keys]
        if unknown:
            for m in unknown:
                if not isinstance(m, str) or not m:
                    raise ValueError(f"meter ids must be non-empty strings, got {m!r}")
            self._db.executemany(
                "INSERT INTO meters (meter_id) VALUES (?) ON CONFLICT (meter_id) DO NOTHING",
                ((m,) for m in unknown),
            )
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS lookup (meter_id TEXT)")
            self._db.execute("DELETE FROM lookup")
            self._db.executemany("INSERT INTO lookup VALUES (?)", ((m,) for m in unknown))
            for mid, key in self._db.execute(
                "SELECT m.meter_id, m.meter_key FROM meters m JOIN lookup l USING (meter_id)"
            ):
                keys[mid] = key
        found = [keys[m] for m in meter_ids]
        if isinstance(meter_ids, tuple):
            self._last_ids, self._last_keys = meter_ids, found
        return found

    # -- readings -----------------------------------------------------------------------
    @_guarded
    def upsert_readings(self, readings: Iterable[MeterReading]) -> int:
        batch = list(readings)

        def work() -> None:
            keys = self._meter_keys([r.meter_id for r in batch])
            rows = [
                (k, _ts(r.slot_end), r.import_kwh, r.export_kwh, _ts(r.read_at), r.source)
                for k, r in zip(keys, batch, strict=True)
            ]
            self._db.executemany(_UPSERT, rows)

        self._write(work)
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
        imp_nan, exp_nan = np.isnan(imp), np.isnan(exp)
        keep = ~(imp_nan & exp_nan)
        if not keep.all():
            idx = np.flatnonzero(keep)
            ids: Sequence[str] = [meter_ids[i] for i in idx.tolist()]
            imp, exp, imp_nan, exp_nan = imp[idx], exp[idx], imp_nan[idx], exp_nan[idx]
        else:
            ids = meter_ids
        imp_list: list[float | None] = imp.tolist()
        exp_list: list[float | None] = exp.tolist()
        if imp_nan.any() or exp_nan.any():
            imp_list = [None if math.isnan(v) else v for v in imp_list]  # type: ignore[arg-type]
            exp_list = [None if math.isnan(v) else v for v in exp_list]  # type: ignore[arg-type]

        def work() -> None:
            keys = self._meter_keys(ids)
            rows = zip(
                keys,
                repeat(_ts(slot_end)),
                imp_list,
                exp_list,
                repeat(_ts(read_at)),
                repeat(source),
                strict=False,
            )
            self._db.executemany(_UPSERT, rows)

        self._write(work)
        return len(ids)

    @_guarded
    def readings(
        self,
        meter_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[MeterReading]:
        where, args = self._window(meter_ids, start, end)
        cur = self._db.execute(f"{_SELECT_READINGS} {where} ORDER BY m.meter_id, r.slot_end", args)
        return [MeterReading(m, _dt(s), i, e, _dt(r), src) for m, s, i, e, r, src in cur]

    def _window(
        self, meter_ids: Sequence[str] | None, start: datetime | None, end: datetime | None
    ) -> tuple[str, list[object]]:
        clauses: list[str] = []
        args: list[object] = []
        if start is not None:
            clauses.append("r.slot_end >= ?")
            args.append(_ts(start))
        if end is not None:
            clauses.append("r.slot_end <= ?")
            args.append(_ts(end))
        if meter_ids is not None:
            self._fill_wanted(meter_ids)
            clauses.append("r.meter_key IN (SELECT meter_key FROM wanted)")
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", args

    def _fill_wanted(self, meter_ids: Sequence[str]) -> None:
        self._db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS wanted (meter_key INTEGER PRIMARY KEY, meter_id TEXT)"
        )
        self._db.execute("DELETE FROM wanted")
        self._db.executemany(
            "INSERT OR IGNORE INTO wanted "
            "SELECT meter_key, meter_id FROM meters WHERE meter_id = ?",
            ((m,) for m in dict.fromkeys(meter_ids)),
        )

    @_guarded
    def missing(
        self, meter_ids: Sequence[str], slot_ends: Sequence[datetime]
    ) -> dict[str, list[datetime]]:
        if not slot_ends or not meter_ids:
            return {}
        wanted = sorted({_ts(e) for e in slot_ends})
        self._fill_wanted(meter_ids)
        self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted_slots (slot_end INTEGER)")
        self._db.execute("DELETE FROM wanted_slots")
        self._db.executemany("INSERT INTO wanted_slots VALUES (?)", ((s,) for s in wanted))
        # anti-join in SQLite: one primary-key probe per (meter, slot) pair
        cur = self._db.execute(
            "SELECT w.meter_id, s.slot_end FROM wanted w CROSS JOIN wanted_slots s "
            "WHERE NOT EXISTS (SELECT 1 FROM meter_readings r WHERE r.slot_end = s.slot_end "
            "AND r.meter_key = w.meter_key AND r.import_kwh IS NOT NULL "
            "AND r.export_kwh IS NOT NULL)"
        )
        out: dict[str, list[int]] = {}
        for mid, s_end in cur:
            out.setdefault(mid, []).append(s_end)
        registered = self._registered()
        for mid in meter_ids:  # meters never seen by the store miss every slot
            if mid not in registered:
                out[mid] = list(wanted)
        return {mid: [_dt(t) for t in sorted(out[mid])] for mid in meter_ids if out.get(mid)}

    def _registered(self) -> set[str]:
        """The meter ids of the last :meth:`_fill_wanted` that the store knows."""
        return {row[0] for row in self._db.execute("SELECT meter_id FROM wanted")}

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
        :mod:`erab.store.matrix`)."""
        check_window(meter_ids, days, register)
        order = {m: i for i, m in enumerate(dict.fromkeys(meter_ids))}
        t0 = day_start_s(first_day)
        width = days * 48 + 1
        cumulative = np.full((len(order), width), np.nan)
        wraps = np.full(len(order), np.nan)
        if order:
            db = self._db
            db.execute(
                "CREATE TEMP TABLE IF NOT EXISTS matrix_rows "
                "(meter_key INTEGER PRIMARY KEY, pos INTEGER NOT NULL)"
            )
            db.execute("DELETE FROM matrix_rows")
            db.executemany(
                "INSERT INTO matrix_rows SELECT meter_key, ? FROM meters WHERE meter_id = ?",
                ((i, m) for m, i in order.items()),
            )
            for pos, wrap in db.execute(
                "SELECT w.pos, m.wrap_kwh FROM matrix_rows w JOIN meters m USING (meter_key)"
            ):
                wraps[pos] = np.nan if wrap is None else wrap
            column = f"r.{register}_kwh"  # checked above: import or export
            cur = db.execute(
                f"SELECT w.pos, r.slot_end, {column} FROM meter_readings r JOIN matrix_rows w "
                f"ON w.meter_key = r.meter_key WHERE r.slot_end BETWEEN ? AND ? "
                f"AND {column} IS NOT NULL AND (r.slot_end - ?) % {SLOT_S} = 0",
                (t0, t0 + (width - 1) * SLOT_S, t0),
            )
            rows = np.fromiter(cur, dtype=[("pos", "i8"), ("end", "i8"), ("kwh", "f8")])
            cumulative[rows["pos"], (rows["end"] - t0) // SLOT_S] = rows["kwh"]
        return fan_out(slot_energy_kwh(cumulative, wraps, days), meter_ids, order)

    @_guarded
    def count_readings(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM meter_readings").fetchone()[0])

    @_guarded
    def slot_end_range(self) -> tuple[datetime | None, datetime | None]:
        lo, hi = self._db.execute(
            "SELECT min(slot_end), max(slot_end) FROM meter_readings"
        ).fetchone()
        return (None if lo is None else _dt(lo), None if hi is None else _dt(hi))

    @_guarded
    def delete_readings_before(self, cutoff: datetime) -> int:
        cutoff_s = _ts(cutoff)
        cur = self._write(
            lambda: self._db.execute("DELETE FROM meter_readings WHERE slot_end < ?", (cutoff_s,))
        )
        return cur.rowcount

    # -- actions ------------------------------------------------------------------------
    @_guarded
    def record_action(self, action: MeterAction) -> int:
        cur = self._write(
            lambda: self._db.execute(
                "INSERT INTO meter_actions (meter_id, action, params, requested_at, result, "
                "detail, actor) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    action.meter_id,
                    action.action,
                    json.dumps(dict(action.params), sort_keys=True),
                    _ts(action.requested_at),
                    action.result,
                    action.detail,
                    action.actor,
                ),
            )
        )
        return int(cur.lastrowid or 0)

    @_guarded
    def actions(self, meter_id: str | None = None) -> list[MeterAction]:
        sql = (
            "SELECT action_id, meter_id, action, params, requested_at, result, detail, actor "
            "FROM meter_actions"
        )
        args: tuple[object, ...] = ()
        if meter_id is not None:
            sql += " WHERE meter_id = ?"
            args = (meter_id,)
        cur = self._db.execute(sql + " ORDER BY action_id", args)
        return [
            MeterAction(mid, act, _dt(at), res, json.loads(params), detail, actor, aid)
            for aid, mid, act, params, at, res, detail, actor in cur
        ]

    # -- settings -----------------------------------------------------------------------
    @_guarded
    def get_setting(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM store_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @_guarded
    def set_setting(self, key: str, value: str) -> None:
        self._write(
            lambda: self._db.execute(
                "INSERT INTO store_meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )
        )

    def close(self) -> None:
        self._db.close()

    def _tx(self) -> _Transaction:
        return _Transaction(self)

    def _write(self, work: Callable[[], _T]) -> _T:
        """``work`` as one transaction, tried again while another process holds the store
        (the rollback of a failed attempt leaves the data as it was)."""

        def attempt() -> _T:
            with self._tx():
                return work()

        return self._retry_busy(attempt)

    def _forget_keys(self) -> None:
        # after a rollback, meters registered inside it are gone: drop what we cached
        self._keys.clear()
        self._point_keys.clear()
        self._last_ids, self._last_keys = (), []


class _Transaction:
    """BEGIN … COMMIT, ROLLBACK on error: a failed batch leaves the stored data as it was."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._store._db.execute("COMMIT")
        else:
            self._store._db.execute("ROLLBACK")
            self._store._forget_keys()
