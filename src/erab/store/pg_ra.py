"""The aggregator's tables on PostgreSQL: registry reads and writes, and the batched ingest
write (mixed into :class:`~erab.store.postgres.PostgresStore`).

The same records and rules as :mod:`erab.store.ra_sqlite`, which it follows method by
method.  The ingest write is set-based: a batch's ``(gateway, seq)`` keys go into
``uplink_seen`` in one ``INSERT … ON CONFLICT DO NOTHING RETURNING``, whose answer is the
set of messages new to the store (a concurrent writer holding the same key makes this one
wait for its commit, then skip it), and the telemetry rows of those messages are copied
(binary COPY) into a staging table and moved with ``INSERT … ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
import psycopg

from erab.store.pg_common import binary_copy
from erab.store.pg_common import dt as _aware
from erab.store.pg_common import guarded as _guarded
from erab.store.pg_common import ts as _ts
from erab.store.pg_schema import TELEMETRY_PARTITIONS, Partitioning
from erab.store.ra_sqlite import (
    _COUNTABLE,
    _GATEWAY_COLUMNS,
    _RESOURCE_COLUMNS,
    _gateway,
    _opt,
    _resource,
    _resource_row,
)
from erab.store.records import (
    GATEWAY_TRANSITIONS,
    Alert,
    AllowEntry,
    BatchOutcome,
    Contract,
    Customer,
    Gateway,
    GatewayStatus,
    PendingDevice,
    ProposedDevice,
    Resource,
    Site,
    UplinkBatch,
)

_T = TypeVar("_T")
_TELEMETRY_COLUMNS = "measured_at, resource_key, point_key, value, gateway_key, seq, flagged"


def _dt(ts: int | None) -> datetime | None:
    return None if ts is None else _aware(ts)


class PgRaTables:
    """Registry, alerts and ingest on the store's PostgreSQL connection."""

    where: str
    _conn: psycopg.Connection[tuple[Any, ...]]
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

    # -- customers, sites, contracts --------------------------------------------------------
    @_guarded
    def add_customer(self, customer: Customer, at: datetime) -> None:
        self._write(
            lambda: self._conn.execute(
                "INSERT INTO customers (customer_id, name, created_at) VALUES (%s, %s, %s)",
                (customer.customer_id, customer.name, _ts(at)),
            )
        )

    @_guarded
    def customers(self) -> list[Customer]:
        cur = self._conn.execute("SELECT customer_id, name FROM customers ORDER BY customer_id")
        return [Customer(*row) for row in cur]

    @_guarded
    def add_site(self, site: Site, at: datetime) -> None:
        self._write(
            lambda: self._conn.execute(
                "INSERT INTO sites (site_id, customer_id, name, kind, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (site.site_id, site.customer_id, site.name, site.kind, _ts(at)),
            )
        )

    @_guarded
    def update_site(self, site: Site) -> None:
        self._write(
            lambda: self._conn.execute(
                "UPDATE sites SET customer_id = %s, name = %s, kind = %s WHERE site_id = %s",
                (site.customer_id, site.name, site.kind, site.site_id),
            )
        )

    @_guarded
    def sites(self) -> list[Site]:
        cur = self._conn.execute(
            "SELECT site_id, name, kind, customer_id FROM sites ORDER BY site_id"
        )
        return [Site(*row) for row in cur]

    @_guarded
    def site(self, site_id: str) -> Site | None:
        row = self._conn.execute(
            "SELECT site_id, name, kind, customer_id FROM sites WHERE site_id = %s", (site_id,)
        ).fetchone()
        return None if row is None else Site(*row)

    @_guarded
    def add_contract(self, contract: Contract, at: datetime) -> None:
        self._write(
            lambda: self._conn.execute(
                "INSERT INTO contracts (contract_id, customer_id, products, incentive_yen_per_kwh, "
                "baseline_method, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    contract.contract_id,
                    contract.customer_id,
                    json.dumps(list(contract.products)),
                    contract.incentive_yen_per_kwh,
                    contract.baseline_method,
                    _ts(at),
                ),
            )
        )

    @_guarded
    def contracts(self) -> list[Contract]:
        cur = self._conn.execute(
            "SELECT contract_id, customer_id, products, incentive_yen_per_kwh, baseline_method "
            "FROM contracts ORDER BY contract_id"
        )
        return [Contract(c, cu, tuple(json.loads(p)), float(i), b) for c, cu, p, i, b in cur]

    # -- gateways ---------------------------------------------------------------------------
    @_guarded
    def add_gateway(self, gateway: Gateway, at: datetime) -> None:
        self._write(
            lambda: self._conn.execute(
                "INSERT INTO gateways (gateway_id, site_id, cert_serial, status, status_since) "
                "VALUES (%s, %s, %s, %s, %s)",
                (
                    gateway.gateway_id,
                    gateway.site_id,
                    gateway.cert_serial,
                    gateway.status.value,
                    _ts(at),
                ),
            )
        )

    @_guarded
    def gateways(self, site_id: str | None = None) -> list[Gateway]:
        sql = f"SELECT {_GATEWAY_COLUMNS} FROM gateways"
        args: tuple[str, ...] = ()
        if site_id is not None:
            sql, args = sql + " WHERE site_id = %s", (site_id,)
        return [_gateway(row) for row in self._conn.execute(sql + " ORDER BY gateway_id", args)]

    @_guarded
    def gateway(self, gateway_id: str) -> Gateway | None:
        row = self._conn.execute(
            f"SELECT {_GATEWAY_COLUMNS} FROM gateways WHERE gateway_id = %s", (gateway_id,)
        ).fetchone()
        return None if row is None else _gateway(row)

    @_guarded
    def set_gateway(
        self, gateway_id: str, *, status: GatewayStatus, cert_serial: str | None, at: datetime
    ) -> None:
        """Set status (its ``status_since`` only when it changes) and certificate serial."""
        self._write(
            lambda: self._conn.execute(
                "UPDATE gateways SET status_since = CASE WHEN status = %s THEN status_since "
                "ELSE %s END, status = %s, cert_serial = %s WHERE gateway_id = %s",
                (status.value, _ts(at), status.value, cert_serial, gateway_id),
            )
        )

    @_guarded
    def mark_silent_gateways(self, seen_before: datetime, at: datetime) -> list[str]:
        """Online gateways whose last message was sent before ``seen_before`` go offline,
        each with a ``gateway_silent`` alert; returns their ids."""
        cutoff, now_s = _ts(seen_before), _ts(at)

        def work() -> list[str]:
            ids = [
                row[0]
                for row in self._conn.execute(
                    "SELECT gateway_id FROM gateways WHERE status = 'online' "
                    "AND coalesce(last_seen, status_since) < %s ORDER BY gateway_id",
                    (cutoff,),
                )
            ]
            for gw in ids:
                self._transition(gw, GatewayStatus.ONLINE, "silent", now_s)
                self._alert(
                    now_s,
                    "gateway_silent",
                    f"gateway {gw} silent since before {_dt(cutoff)}; marked offline",
                    gw,
                )
            return ids

        return self._write(work)

    def _transition(
        self, gateway_id: str, state: GatewayStatus, trigger: str, now_s: int
    ) -> GatewayStatus:
        nxt = GATEWAY_TRANSITIONS.get((state, trigger))
        if nxt is None:
            raise ValueError(f"gateway {gateway_id}: no transition from {state} on {trigger}")
        if nxt is not state:
            self._conn.execute(
                "UPDATE gateways SET status = %s, status_since = %s WHERE gateway_id = %s",
                (nxt.value, now_s, gateway_id),
            )
        return nxt

    # -- resources --------------------------------------------------------------------------
    @_guarded
    def add_resource(self, resource: Resource, at: datetime) -> None:
        def work() -> None:
            self._conn.execute(
                f"INSERT INTO resources ({_RESOURCE_COLUMNS}, created_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (*_resource_row(resource), _ts(at)),
            )
            self._conn.execute(  # proposed before, registered now: no longer pending
                "DELETE FROM pending_devices WHERE gateway_id = %s AND node_id = %s AND eoj = %s",
                (resource.gateway_id, resource.node_id, resource.eoj),
            )

        self._write(work)

    @_guarded
    def update_resource(self, resource: Resource) -> None:
        row = _resource_row(resource)
        self._write(
            lambda: self._conn.execute(
                "UPDATE resources SET site_id = %s, gateway_id = %s, device_class = %s, "
                "node_id = %s, eoj = %s, rated_kw = %s, rated_kwh = %s, comfort_min_c = %s, "
                "comfort_max_c = %s, soc_reserve_pct = %s, soc_max_pct = %s, availability = %s, "
                "allowed = %s WHERE resource_id = %s",
                (*row[1:], row[0]),
            )
        )

    @_guarded
    def resources(
        self, *, site_id: str | None = None, gateway_id: str | None = None
    ) -> list[Resource]:
        sql = f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE 1 = 1"
        args: list[str] = []
        for column, value in (("site_id", site_id), ("gateway_id", gateway_id)):
            if value is not None:
                sql += f" AND {column} = %s"
                args.append(value)
        return [_resource(row) for row in self._conn.execute(sql + " ORDER BY resource_id", args)]

    @_guarded
    def resource(self, resource_id: str) -> Resource | None:
        row = self._conn.execute(
            f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE resource_id = %s", (resource_id,)
        ).fetchone()
        return None if row is None else _resource(row)

    @_guarded
    def resource_keys(self) -> dict[str, int]:
        """Every resource's compact key (the index the ingest hook's arrays use)."""
        return dict(self._conn.execute("SELECT resource_id, resource_key FROM resources"))

    @_guarded
    def pending_devices(self, gateway_id: str | None = None) -> list[PendingDevice]:
        sql = (
            "SELECT gateway_id, node_id, eoj, device_id, rated_power_w, name, first_seen, "
            "last_seen FROM pending_devices"
        )
        args: tuple[str, ...] = ()
        if gateway_id is not None:
            sql, args = sql + " WHERE gateway_id = %s", (gateway_id,)
        return [
            PendingDevice(g, n, e, d, _opt(p), name, cast(datetime, _dt(f)), cast(datetime, _dt(s)))
            for g, n, e, d, p, name, f, s in self._conn.execute(sql + " ORDER BY 1, 2, 3", args)
        ]

    @_guarded
    def propose_inventory(
        self, gateway_id: str, devices: Sequence[ProposedDevice], at: datetime
    ) -> list[AllowEntry]:
        """Record a gateway's proposed devices; return its allow-list (see registry)."""
        return self._write(lambda: self._propose(gateway_id, devices, _ts(at)))

    def _propose(
        self, gateway_id: str, devices: Sequence[ProposedDevice], now_s: int
    ) -> list[AllowEntry]:
        known = {
            (node, eoj)
            for node, eoj in self._conn.execute(
                "SELECT node_id, eoj FROM resources WHERE gateway_id = %s", (gateway_id,)
            )
        }
        new = [d for d in devices if d.node_id is not None and (d.node_id, d.eoj) not in known]
        self._conn.cursor().executemany(
            "INSERT INTO pending_devices (gateway_id, node_id, eoj, device_id, rated_power_w, "
            "name, first_seen, last_seen) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (gateway_id, node_id, eoj) DO UPDATE SET last_seen = excluded.last_seen,"
            " device_id = excluded.device_id, rated_power_w = excluded.rated_power_w, "
            "name = excluded.name",
            [
                (gateway_id, d.node_id, d.eoj, d.device_id, d.rated_power_w, d.name, now_s, now_s)
                for d in new
            ],
        )
        return self._allow_list(gateway_id)

    @_guarded
    def allow_list(self, gateway_id: str) -> list[AllowEntry]:
        return self._allow_list(gateway_id)

    def _allow_list(self, gateway_id: str) -> list[AllowEntry]:
        cur = self._conn.execute(
            "SELECT resource_id, node_id, eoj, rated_kw FROM resources WHERE gateway_id = %s "
            "AND allowed = 1 ORDER BY resource_id",
            (gateway_id,),
        )
        return [AllowEntry(r, n, e, None if kw is None else kw * 1000.0) for r, n, e, kw in cur]

    # -- alerts -------------------------------------------------------------------------------
    def _alert(
        self,
        now_s: int,
        kind: str,
        message: str,
        gateway_id: str | None = None,
        resource_id: str | None = None,
    ) -> None:
        self._conn.execute(
            "INSERT INTO alerts (raised_at, kind, gateway_id, resource_id, message) "
            "VALUES (%s, %s, %s, %s, %s)",
            (now_s, kind, gateway_id, resource_id, message),
        )

    @_guarded
    def raise_alert(
        self,
        kind: str,
        message: str,
        at: datetime,
        *,
        gateway_id: str | None = None,
        resource_id: str | None = None,
    ) -> None:
        self._write(lambda: self._alert(_ts(at), kind, message, gateway_id, resource_id))

    @_guarded
    def alerts(self, *, open_only: bool = False) -> list[Alert]:
        sql = (
            "SELECT alert_id, raised_at, kind, message, gateway_id, resource_id, cleared_at "
            "FROM alerts"
        )
        if open_only:
            sql += " WHERE cleared_at IS NULL"
        return [
            Alert(a, cast(datetime, _dt(r)), k, m, g, res, _dt(c))
            for a, r, k, m, g, res, c in self._conn.execute(sql + " ORDER BY alert_id")
        ]

    @_guarded
    def clear_alert(self, alert_id: int, at: datetime) -> bool:
        """Mark an open alert cleared at ``at``; False if it was not open."""
        cur = self._write(
            lambda: self._conn.execute(
                "UPDATE alerts SET cleared_at = %s WHERE alert_id = %s AND cleared_at IS NULL",
                (_ts(at), alert_id),
            )
        )
        return cur.rowcount == 1

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

    def _point_key(self, name: str) -> int:
        key = self._point_keys.get(name)
        if key is None:
            self._conn.execute(
                "INSERT INTO telemetry_points (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                (name,),
            )
            row = self._conn.execute(
                "SELECT point_key FROM telemetry_points WHERE name = %s", (name,)
            ).fetchone()
            assert row is not None  # inserted just above, or by another writer before
            key = int(row[0])
            self._point_keys[name] = key
        return key

    def _write_batch(self, batch: UplinkBatch, now_s: int) -> BatchOutcome:
        db = self._conn
        gw_ids = sorted({m[0] for m in batch.messages})
        gw_rows: dict[str, tuple[int, GatewayStatus, str, int | None, int] | None]
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

        # gateway lifecycle: any message sent after the last status change puts it online
        ids = {v[0]: k for k, v in gw_rows.items() if v is not None}
        if newest:
            seen = sorted(newest.items())
            db.execute(  # one statement for the batch's gateways (rows locked above)
                "UPDATE gateways g SET last_seen = greatest(coalesce(g.last_seen, 0), u.sent) "
                "FROM unnest(%s::text[], %s::bigint[]) AS u (id, sent) WHERE g.gateway_id = u.id",
                ([gw for gw, _ in seen], [sent for _, sent in seen]),
            )
        for gw, sent_s in sorted(newest.items()):
            info = gw_rows[gw]
            assert info is not None
            if info[1] is GatewayStatus.ENROLLED or (
                info[1] is GatewayStatus.OFFLINE and sent_s >= info[4]
            ):
                self._transition(gw, info[1], "message", now_s)
                gw_rows[gw] = (info[0], GatewayStatus.ONLINE, info[2], info[3], now_s)
        allow_lists: dict[str, list[AllowEntry]] = {}
        for i, site_id, devices in batch.hellos:
            o = admitted[i]
            if o is None:
                continue
            gw = ids[o[0]]
            info = gw_rows[gw]
            assert info is not None
            sent_s = batch.messages[i][3]
            db.execute(
                "UPDATE gateways SET session_at = greatest(coalesce(session_at, 0), %s) "
                "WHERE gateway_id = %s",
                (sent_s, gw),
            )
            gw_rows[gw] = (*info[:3], max(info[3] or 0, sent_s), info[4])
            if site_id != info[2]:
                self._alert(
                    now_s,
                    "wrong_site",
                    f"gateway {gw} said hello for site "
                    f"{site_id!r} but is registered at {info[2]!r}; inventory ignored",
                    gw,
                )
                continue
            allow_lists[gw] = self._propose(gw, devices, now_s)
        for i, reason in batch.offline:
            o = admitted[i]
            if o is None:
                continue
            gw = ids[o[0]]
            info = gw_rows[gw]
            assert info is not None
            connected_s = batch.messages[i][3]
            # the will of an older connection says nothing about the current one
            if info[1] is GatewayStatus.ONLINE and connected_s >= (info[3] or 0):
                self._transition(gw, info[1], "last_will", now_s)
                gw_rows[gw] = (info[0], GatewayStatus.OFFLINE, info[2], info[3], now_s)
                self._alert(now_s, "gateway_offline", f"gateway {gw} went offline ({reason})", gw)
        return BatchOutcome(
            stored=sum(1 for a in admitted if a is not None),
            duplicates=duplicates,
            refused=refused,
            readings=len(rows),
            unknown_devices=unknown,
            rows=live,
            allow_lists=allow_lists,
        )

    # -- reading back ---------------------------------------------------------------------
    @_guarded
    def telemetry(
        self, resource_id: str | None = None, *, include_flagged: bool = False
    ) -> list[tuple[str, str, datetime, float, str, int]]:
        """Rows as (resource_id, point, measured_at, value, gateway_id, seq), by resource,
        point and time; flagged rows only with ``include_flagged``."""
        sql = (
            "SELECT r.resource_id, p.name, t.measured_at, t.value, g.gateway_id, t.seq "
            "FROM telemetry t JOIN resources r ON r.resource_key = t.resource_key "
            "JOIN telemetry_points p ON p.point_key = t.point_key "
            "JOIN gateways g ON g.gateway_key = t.gateway_key WHERE 1 = 1"
        )
        args: list[object] = []
        if not include_flagged:
            sql += " AND t.flagged = 0"
        if resource_id is not None:
            sql += " AND r.resource_id = %s"
            args.append(resource_id)
        cur = self._conn.execute(sql + " ORDER BY 1, 2, 3", args)
        return [(r, p, cast(datetime, _dt(t)), v, g, s) for r, p, t, v, g, s in cur]

    @_guarded
    def count_rows(self, table: str) -> int:
        """Rows in one of the ingest tables (for monitoring and tests)."""
        if table not in _COUNTABLE:
            raise ValueError(f"count_rows: {table!r} is not one of {', '.join(_COUNTABLE)}")
        row = self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    @_guarded
    def command_acks(self, gateway_id: str) -> list[tuple[int, str | None, list[tuple[str, str]]]]:
        """(command_seq, rejected, [(device_id, outcome)]) of one gateway's acknowledgements."""
        out = []
        for cseq, rejected in self._conn.execute(
            "SELECT a.command_seq, a.rejected FROM command_acks a JOIN gateways g ON "
            "g.gateway_key = a.gateway_key WHERE g.gateway_id = %s ORDER BY 1",
            (gateway_id,),
        ).fetchall():
            outcomes = self._conn.execute(
                "SELECT o.device_id, o.outcome FROM command_outcomes o JOIN gateways g ON "
                "g.gateway_key = o.gateway_key WHERE g.gateway_id = %s AND o.command_seq = %s "
                "ORDER BY 1",
                (gateway_id, cseq),
            ).fetchall()
            out.append((int(cseq), rejected, [(d, o) for d, o in outcomes]))
        return out


