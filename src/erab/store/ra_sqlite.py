"""The aggregator's tables on SQLite: the batched ingest write, and the hooks through which
the registry's statements (:mod:`erab.store.registry_sql`, shared with PostgreSQL) run.

Mixed into :class:`~erab.store.sqlite.SqliteStore`.  The rules (what a valid resource is,
which devices a gateway may control) live in ``erab.aggregator.registry``; this module only
keeps the records, and does the one thing that must happen inside the ingest transaction:
deduplicate by ``(gateway, seq)`` against the rows already stored, so that several workers,
and an RA restarted in the middle of a batch, store every message exactly once.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

from erab.store.records import BatchOutcome, GatewayStatus, UplinkBatch
from erab.store.registry_sql import GatewayRow, RegistryTables, StoreConflict, _ts
from erab.store.registry_sql import guarded as _guarded

_T = TypeVar("_T")


class RaTables(RegistryTables):
    """Registry, alerts and ingest on the store's SQLite connection."""

    path: str
    _db: sqlite3.Connection
    _point_keys: dict[str, int]

    def _write(self, work: Callable[[], _T]) -> _T:  # provided by SqliteStore
        raise NotImplementedError

    def _sql(self, sql: str, args: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self._db.execute(sql, args)

    def _sql_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise StoreConflict(f"SQLite store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            from erab.store.sqlite import _explain

            raise _explain(self.path, exc) from exc

    # -- ingest -------------------------------------------------------------------------------
    @_guarded
    def write_uplink_batch(self, batch: UplinkBatch, at: datetime) -> BatchOutcome:
        """Store a batch in one transaction: messages already stored (same gateway and
        seq) and messages of unknown or revoked gateways are dropped with all their rows."""
        now_s = _ts(at)
        try:
            return self._write(lambda: self._write_batch(batch, now_s))
        except BaseException:
            self._point_keys.clear()  # keys made inside the rolled-back transaction are gone
            raise

    def _write_batch(self, batch: UplinkBatch, now_s: int) -> BatchOutcome:
        db = self._db
        gw_rows: dict[str, GatewayRow | None] = {}
        for gw in {m[0] for m in batch.messages}:
            row = db.execute(
                "SELECT gateway_key, status, site_id, session_at, status_since FROM gateways "
                "WHERE gateway_id = ?",
                (gw,),
            ).fetchone()
            gw_rows[gw] = None if row is None else (row[0], GatewayStatus(row[1]), *row[2:])
        refused: dict[str, int] = {}
        admitted: list[tuple[int, int] | None] = []  # per message: (gateway_key, seq)
        insert_seen = "INSERT INTO uplink_seen VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
        duplicates = 0
        newest: dict[str, int] = {}
        for gw, seq, kind, sent_s in batch.messages:
            info = gw_rows[gw]
            if info is None or info[1] is GatewayStatus.REVOKED:
                why = "unknown_gateway" if info is None else "revoked_gateway"
                refused[why] = refused.get(why, 0) + 1
                admitted.append(None)
                continue
            if db.execute(insert_seen, (info[0], seq, kind, now_s)).rowcount != 1:
                duplicates += 1
                admitted.append(None)
                continue
            admitted.append((info[0], seq))
            newest[gw] = max(newest.get(gw, sent_s), sent_s)

        resource_maps: dict[int, dict[str, int]] = {}

        def resources_of(gateway_key: int) -> dict[str, int]:
            found = resource_maps.get(gateway_key)
            if found is None:
                found = resource_maps[gateway_key] = dict(
                    db.execute(
                        "SELECT r.resource_id, r.resource_key FROM resources r JOIN gateways g "
                        "ON g.gateway_id = r.gateway_id WHERE g.gateway_key = ?",
                        (gateway_key,),
                    )
                )
            return found

        rows: list[tuple[int, int, int, float, int, int, int]] = []
        live: list[tuple[int, str, float, int]] = []
        unknown = 0
        point_key = self._point_key
        for index, device_id, t, values, flagged in batch.samples:
            origin = admitted[index]
            if origin is None:
                continue
            gk, seq = origin
            rk = resources_of(gk).get(device_id)
            if rk is None:
                unknown += 1
                continue
            for point, value in values.items():
                bad = point in flagged
                rows.append((t, rk, point_key(point), value, gk, seq, int(bad)))
                if not bad:
                    live.append((rk, point, value, t))
        db.executemany(
            "INSERT INTO telemetry (measured_at, resource_key, point_key, value, gateway_key, "
            "seq, flagged) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            rows,
        )

        db.executemany(
            "INSERT INTO site_meter_readings VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [
                (o[0], meter, t, p, imp, exp, o[1])
                for i, meter, t, p, imp, exp in batch.meter
                if (o := admitted[i]) is not None
            ],
        )
        state_rows = []
        for i, device_id, t, online, operating, mode, controlled in batch.states:
            o = admitted[i]
            if o is not None and (rk := resources_of(o[0]).get(device_id)) is not None:
                state_rows.append(
                    (
                        rk,
                        t,
                        int(online),
                        None if operating is None else int(operating),
                        mode,
                        int(controlled),
                    )
                )
        db.executemany(
            "INSERT INTO device_states VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (resource_key) "
            "DO UPDATE SET measured_at = excluded.measured_at, online = excluded.online, "
            "operating = excluded.operating, mode = excluded.mode, controlled = "
            "excluded.controlled WHERE excluded.measured_at >= device_states.measured_at",
            state_rows,
        )
        for i, command_seq, received_s, rejected, outcomes in batch.acks:
            o = admitted[i]
            if o is None:
                continue
            db.execute(
                "INSERT INTO command_acks VALUES (?, ?, ?, ?, ?) ON CONFLICT (gateway_key, "
                "command_seq) DO UPDATE SET seq = excluded.seq, received_at = "
                "excluded.received_at, rejected = excluded.rejected",
                (o[0], command_seq, o[1], received_s, rejected),
            )
            db.executemany(
                "INSERT INTO command_outcomes VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO "
                "UPDATE SET outcome = excluded.outcome, reason = excluded.reason, readback = "
                "excluded.readback, measured_at = excluded.measured_at",
                [
                    (o[0], command_seq, d, out, why, json.dumps(dict(rb), sort_keys=True), m)
                    for d, out, why, rb, m in outcomes
                ],
            )

        # gateway lifecycle: last seen, then status, hellos and wills (shared with PostgreSQL)
        db.executemany(
            "UPDATE gateways SET last_seen = max(coalesce(last_seen, 0), ?) WHERE gateway_id = ?",
            [(sent_s, gw) for gw, sent_s in newest.items()],
        )
        allow_lists = self._gateway_lifecycle(batch, admitted, gw_rows, newest, now_s)
        return BatchOutcome(
            stored=sum(1 for a in admitted if a is not None),
            duplicates=duplicates,
            refused=refused,
            readings=len(rows),
            unknown_devices=unknown,
            rows=live,
            allow_lists=allow_lists,
        )

