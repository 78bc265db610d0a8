"""The aggregator's tables on PostgreSQL: the batched ingest write, and the hooks through which
the registry's statements (:mod:`erab.store.registry_sql`, shared with SQLite) run (mixed
into :class:`~erab.store.postgres.PostgresStore`).

The ingest write is set-based: a batch's ``(gateway, seq)`` keys go into ``uplink_seen`` in
one ``INSERT … ON CONFLICT DO NOTHING RETURNING``, whose answer is the set of messages new
to the store (a concurrent writer holding the same key makes this one wait for its commit,
then skip it), and the telemetry rows of those messages are copied (binary COPY) into a
staging table and moved with ``INSERT … ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import errors as pg_errors

from erab.store.pg_common import binary_copy, explain, first_line
from erab.store.pg_common import ts as _ts
from erab.store.pg_schema import TELEMETRY_PARTITIONS, Partitioning
from erab.store.records import BatchOutcome, GatewayStatus, UplinkBatch
from erab.store.registry_sql import GatewayRow, RegistryTables, StoreConflict, pg_placeholders
from erab.store.registry_sql import guarded as _guarded

_T = TypeVar("_T")
_TELEMETRY_COLUMNS = "measured_at, resource_key, point_key, value, gateway_key, seq, flagged"


class PgRaTables(RegistryTables):
    """Registry, alerts and ingest on the store's PostgreSQL connection."""

    _GREATEST = "greatest"

    where: str
    _conn: psycopg.Connection[tuple[Any, ...]]
    _lock: threading.RLock
    _point_keys: dict[str, int]

    def _copy_new_rows(  # provided by PostgresStore
        self, table: str, columns: str, data: Sequence[tuple[str, Any]]
    ) -> bool:
        raise NotImplementedError

    def _write(  # provided by PostgresStore
        self,
        work: Callable[[], _T],
        partitions: Sequence[tuple[Partitioning, npt.NDArray[np.int64]]] = (),
    ) -> _T:
        raise NotImplementedError

    def _sql(self, sql: str, args: Sequence[Any] = ()) -> psycopg.Cursor[tuple[Any, ...]]:
        return self._conn.execute(pg_placeholders(sql), args)

    def _sql_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(pg_placeholders(sql), rows)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """One caller at a time on the store's connection (threads sharing a store take
        turns); psycopg's errors as one :class:`StoreError` naming the store."""
        try:
            with self._lock:
                yield
        except pg_errors.IntegrityError as exc:
            raise StoreConflict(f"PostgreSQL store {self.where}: {first_line(exc)}") from None
        except psycopg.Error as exc:
            raise explain(self.where, exc) from exc

    # -- ingest -------------------------------------------------------------------------------
    @_guarded
    def write_uplink_batch(self, batch: UplinkBatch, at: datetime) -> BatchOutcome:
        """Store a batch in one transaction: messages already stored (same gateway and
        seq) and messages of unknown or revoked gateways are dropped with all their rows."""
        now_s = _ts(at)
        times = np.fromiter((s[2] for s in batch.samples), np.int64, len(batch.samples))
        try:
            return self._write(
                lambda: self._write_batch(batch, now_s), [(TELEMETRY_PARTITIONS, times)]
            )
        except BaseException:
            self._point_keys.clear()  # keys made inside the rolled-back transaction are gone
            raise

    def _write_batch(self, batch: UplinkBatch, now_s: int) -> BatchOutcome:
        db = self._conn
        gw_ids = sorted({m[0] for m in batch.messages})
        gw_rows: dict[str, GatewayRow | None]
        gw_rows = dict.fromkeys(gw_ids)
        # the gateways' rows locked in one order: two workers' batches over the same
        # gateways take turns instead of deadlocking on each other's keys
        for gw, key, status, site, session_at, since in db.execute(
            "SELECT gateway_id, gateway_key, status, site_id, session_at, status_since "
            "FROM gateways WHERE gateway_id = ANY(%s) ORDER BY gateway_id FOR UPDATE",
            (gw_ids,),
        ):
            gw_rows[gw] = (key, GatewayStatus(status), site, session_at, since)
        refused: dict[str, int] = {}
        admitted: list[tuple[int, int] | None] = [None] * len(batch.messages)
        first_of: dict[tuple[int, int], int] = {}  # (gateway_key, seq) -> message index
        duplicates = 0
        for i, (gw, seq, _kind, _sent_s) in enumerate(batch.messages):
            info = gw_rows[gw]
            if info is None or info[1] is GatewayStatus.REVOKED:
                why = "unknown_gateway" if info is None else "revoked_gateway"
                refused[why] = refused.get(why, 0) + 1
            elif (info[0], seq) in first_of:
                duplicates += 1  # the same message twice in one batch
            else:
                first_of[(info[0], seq)] = i
        newest: dict[str, int] = {}
        if first_of:
            keys = sorted(first_of)
            # the dedup: only keys new to the store come back
            new = {
                (int(g), int(s))
                for g, s in db.execute(
                    "INSERT INTO uplink_seen (gateway_key, seq, kind, stored_at) "
                    "SELECT g, s, k, %s FROM unnest(%s::integer[], %s::bigint[], %s::text[]) "
                    "AS u (g, s, k) ORDER BY g, s ON CONFLICT DO NOTHING "
                    "RETURNING gateway_key, seq",
                    (
                        now_s,
                        [k[0] for k in keys],
                        [k[1] for k in keys],
                        [batch.messages[first_of[k]][2] for k in keys],
                    ),
                )
            }
            for key in keys:
                i = first_of[key]
                if key not in new:
                    duplicates += 1
                    continue
                admitted[i] = key
                gw, _, _, sent_s = batch.messages[i]
                newest[gw] = max(newest.get(gw, sent_s), sent_s)

        resource_maps: dict[int, dict[str, int]] = {}
        if newest:
            for gk, rid, rk in db.execute(
                "SELECT g.gateway_key, r.resource_id, r.resource_key FROM resources r "
                "JOIN gateways g ON g.gateway_id = r.gateway_id WHERE g.gateway_key = ANY(%s)",
                ([k for k, _ in new],),
            ):
                resource_maps.setdefault(gk, {})[rid] = rk

        def resources_of(gateway_key: int) -> dict[str, int]:
            return resource_maps.get(gateway_key, {})

        # the rows as columns, a sample at a time (a batch holds tens of thousands)
        at: list[int] = []
        res: list[int] = []
        pts: list[int] = []
        val: list[float] = []
        gws: list[int] = []
        seqs: list[int] = []
        flags: list[int] = []
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
            n = len(values)
            at += [t] * n
            res += [rk] * n
            pts += map(point_key, values)
            val += values.values()
            gws += [gk] * n
            seqs += [seq] * n
            if flagged:
                flags += [int(p in flagged) for p in values]
                live += [(rk, p, v, t) for p, v in values.items() if p not in flagged]
            else:
                flags += [0] * n
                live += [(rk, p, v, t) for p, v in values.items()]
        rows = at
        kinds = ("int8", "int4", "int4", "float8", "int4", "int8", "int4")
        data = list(zip(kinds, (at, res, pts, val, gws, seqs, flags), strict=True))
        if rows and not self._copy_new_rows("telemetry", _TELEMETRY_COLUMNS, data):
            # a reading already stored under another message: the keyed way, skip it
            payload = binary_copy(data)
            with db.cursor() as cur:
                with cur.copy("COPY stage_telemetry FROM STDIN (FORMAT BINARY)") as cp:
                    cp.write(payload)
                cur.execute(
                    "INSERT INTO telemetry SELECT * FROM stage_telemetry "
                    "ORDER BY measured_at, resource_key, point_key ON CONFLICT DO NOTHING"
                )

        with db.cursor() as cur:
            cur.executemany(
                "INSERT INTO site_meter_readings VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
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
            cur.executemany(
                "INSERT INTO device_states VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT "
                "(resource_key) DO UPDATE SET measured_at = excluded.measured_at, online = "
                "excluded.online, operating = excluded.operating, mode = excluded.mode, "
                "controlled = excluded.controlled "
                "WHERE excluded.measured_at >= device_states.measured_at",
                state_rows,
            )
            for i, command_seq, received_s, rejected, outcomes in batch.acks:
                o = admitted[i]
                if o is None:
                    continue
                cur.execute(
                    "INSERT INTO command_acks VALUES (%s, %s, %s, %s, %s) ON CONFLICT "
                    "(gateway_key, command_seq) DO UPDATE SET seq = excluded.seq, received_at "
                    "= excluded.received_at, rejected = excluded.rejected",
                    (o[0], command_seq, o[1], received_s, rejected),
                )
                cur.executemany(
                    "INSERT INTO command_outcomes VALUES (%s, %s, %s, %s, %s, %s, %s) ON "
                    "CONFLICT (gateway_key, command_seq, device_id) DO UPDATE SET outcome = "
                    "excluded.outcome, reason = excluded.reason, readback = excluded.readback, "
                    "measured_at = excluded.measured_at",
                    [
                        (o[0], command_seq, d, out, why, json.dumps(dict(rb), sort_keys=True), m)
                        for d, out, why, rb, m in outcomes
                    ],
                )

        # gateway lifecycle: last seen, then status, hellos and wills (shared with SQLite)
        if newest:
            seen = sorted(newest.items())
            db.execute(  # one statement for the batch's gateways (rows locked above)
                "UPDATE gateways g SET last_seen = greatest(coalesce(g.last_seen, 0), u.sent) "
                "FROM unnest(%s::text[], %s::bigint[]) AS u (id, sent) WHERE g.gateway_id = u.id",
                ([gw for gw, _ in seen], [sent for _, sent in seen]),
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

