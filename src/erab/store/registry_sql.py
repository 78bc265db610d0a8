"""The aggregator's registry tables, written once for both backends.

Every statement here is plain SQL that SQLite and PostgreSQL both take, written with ``?``
placeholders; a backend runs it through :meth:`RegistryTables._sql` (PostgreSQL's renders
each ``?`` as psycopg's ``%s``: :func:`pg_placeholders`).  What really differs between the
backends, the batched ingest write, stays in :mod:`erab.store.ra_sqlite` and
:mod:`erab.store.pg_ra`, which mix this class in and provide its four hooks.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, TypeVar, cast

from erab.clock import JST
from erab.store.base import StoreError
from erab.store.records import (
    GATEWAY_TRANSITIONS,
    Alert,
    AllowEntry,
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

# a gateway's row as the ingest write reads it: (gateway_key, status, site_id, session_at,
# status_since)
GatewayRow = tuple[int, GatewayStatus, str, int | None, int]

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


class StoreConflict(StoreError):
    """A record with that id already exists (or another unique rule would be broken)."""


def guarded(method: _F) -> _F:
    """Run ``method`` inside the backend's :meth:`RegistryTables._guard` (its errors become
    one :class:`StoreError` naming the store; PostgreSQL also takes its connection lock)."""

    @functools.wraps(method)
    def wrapper(self: RegistryTables, *args: Any, **kwargs: Any) -> Any:
        with self._guard():
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


@functools.lru_cache(maxsize=512)
def pg_placeholders(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (the statements here hold no literal ``?`` or
    ``%``: a ``%`` would be read by psycopg as a placeholder of its own)."""
    if "%" in sql:
        raise ValueError(f"registry SQL may not contain '%': {sql!r}")
    return sql.replace("?", "%s")


def _ts(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"store times must be timezone-aware, got naive {when!r}")
    return round(when.timestamp())


def _dt(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, JST)


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


_RESOURCE_COLUMNS = (
    "resource_id, site_id, gateway_id, device_class, node_id, eoj, rated_kw, rated_kwh, "
    "comfort_min_c, comfort_max_c, soc_reserve_pct, soc_max_pct, availability, allowed"
)
_SITE_COLUMNS = "site_id, name, kind, customer_id, meter_id"
_GATEWAY_COLUMNS = "gateway_id, site_id, cert_serial, status, status_since, last_seen"


def _resource(row: Sequence[Any]) -> Resource:
    return Resource(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        _opt(row[6]),
        _opt(row[7]),
        _opt(row[8]),
        _opt(row[9]),
        _opt(row[10]),
        _opt(row[11]),
        tuple(json.loads(row[12])),
        bool(row[13]),
    )


def _resource_row(r: Resource) -> tuple[Any, ...]:
    return (
        r.resource_id,
        r.site_id,
        r.gateway_id,
        r.device_class,
        r.node_id,
        r.eoj,
        r.rated_kw,
        r.rated_kwh,
        r.comfort_min_c,
        r.comfort_max_c,
        r.soc_reserve_pct,
        r.soc_max_pct,
        json.dumps(list(r.availability)),
        int(r.allowed),
    )


def _gateway(row: Sequence[Any]) -> Gateway:
    return Gateway(row[0], row[1], row[2], GatewayStatus(row[3]), _dt(row[4]), _dt(row[5]))


class RegistryTables:
    """Customers, sites, contracts, gateways, resources, pending devices, alerts and the
    read-back queries, on either backend's connection."""

    _point_keys: dict[str, int]

    # -- the backend's hooks ------------------------------------------------------------------
    def _sql(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders); the cursor: iterable, ``fetchone``,
        ``fetchall``, ``rowcount``."""
        raise NotImplementedError

    def _sql_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _guard(self) -> AbstractContextManager[None]:
        """Where a public method runs: the backend's errors become a :class:`StoreError`."""
        raise NotImplementedError

    def _write(self, work: Callable[[], _T]) -> _T:
        """``work`` in one transaction, committed (rolled back if it raises)."""
        raise NotImplementedError

    # -- customers, sites, contracts --------------------------------------------------------
    @guarded
    def add_customer(self, customer: Customer, at: datetime) -> None:
        self._write(
            lambda: self._sql(
                "INSERT INTO customers (customer_id, name, created_at) VALUES (?, ?, ?)",
                (customer.customer_id, customer.name, _ts(at)),
            )
        )

    @guarded
    def customers(self) -> list[Customer]:
        cur = self._sql("SELECT customer_id, name FROM customers ORDER BY customer_id")
        return [Customer(*row) for row in cur]

    @guarded
    def add_site(self, site: Site, at: datetime) -> None:
        self._write(
            lambda: self._sql(
                "INSERT INTO sites (site_id, customer_id, name, kind, meter_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (site.site_id, site.customer_id, site.name, site.kind, site.meter_id, _ts(at)),
            )
        )

    @guarded
    def update_site(self, site: Site) -> None:
        self._write(
            lambda: self._sql(
                "UPDATE sites SET customer_id = ?, name = ?, kind = ?, meter_id = ? "
                "WHERE site_id = ?",
                (site.customer_id, site.name, site.kind, site.meter_id, site.site_id),
            )
        )

    @guarded
    def sites(self) -> list[Site]:
        cur = self._sql(
            f"SELECT {_SITE_COLUMNS} FROM sites ORDER BY site_id"
        )
        return [Site(*row) for row in cur]

    @guarded
    def site(self, site_id: str) -> Site | None:
        row = self._sql(
            f"SELECT {_SITE_COLUMNS} FROM sites WHERE site_id = ?", (site_id,)
        ).fetchone()
        return None if row is None else Site(*row)

    @guarded
    def add_contract(self, contract: Contract, at: datetime) -> None:
        self._write(
            lambda: self._sql(
                "INSERT INTO contracts (contract_id, customer_id, products, incentive_yen_per_kwh, "
                "baseline_method, incentive_cap_yen, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    contract.contract_id,
                    contract.customer_id,
                    json.dumps(list(contract.products)),
                    contract.incentive_yen_per_kwh,
                    contract.baseline_method,
                    contract.incentive_cap_yen,
                    _ts(at),
                ),
            )
        )

    @guarded
    def contracts(self) -> list[Contract]:
        cur = self._sql(
            "SELECT contract_id, customer_id, products, incentive_yen_per_kwh, baseline_method, "
            "incentive_cap_yen FROM contracts ORDER BY contract_id"
        )
        return [Contract(c, cu, tuple(json.loads(p)), float(i), b, _opt(cap))
                for c, cu, p, i, b, cap in cur]  # fmt: skip

    # -- gateways ---------------------------------------------------------------------------
    @guarded
    def add_gateway(self, gateway: Gateway, at: datetime) -> None:
        self._write(
            lambda: self._sql(
                "INSERT INTO gateways (gateway_id, site_id, cert_serial, status, status_since) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    gateway.gateway_id,
                    gateway.site_id,
                    gateway.cert_serial,
                    gateway.status.value,
                    _ts(at),
                ),
            )
        )

    @guarded
    def gateways(self, site_id: str | None = None) -> list[Gateway]:
        sql = f"SELECT {_GATEWAY_COLUMNS} FROM gateways"
        args: tuple[str, ...] = ()
        if site_id is not None:
            sql, args = sql + " WHERE site_id = ?", (site_id,)
        return [_gateway(row) for row in self._sql(sql + " ORDER BY gateway_id", args)]

    @guarded
    def gateway(self, gateway_id: str) -> Gateway | None:
        row = self._sql(
            f"SELECT {_GATEWAY_COLUMNS} FROM gateways WHERE gateway_id = ?", (gateway_id,)
        ).fetchone()
        return None if row is None else _gateway(row)

    @guarded
    def set_gateway(
        self, gateway_id: str, *, status: GatewayStatus, cert_serial: str | None, at: datetime
    ) -> None:
        """Set status (its ``status_since`` only when it changes) and certificate serial."""
        self._write(
            lambda: self._sql(
                "UPDATE gateways SET status_since = CASE WHEN status = ? THEN status_since "
                "ELSE ? END, status = ?, cert_serial = ? WHERE gateway_id = ?",
                (status.value, _ts(at), status.value, cert_serial, gateway_id),
            )
        )

    @guarded
    def mark_silent_gateways(self, seen_before: datetime, at: datetime) -> list[str]:
        """Online gateways whose last message was sent before ``seen_before`` go offline,
        each with a ``gateway_silent`` alert; returns their ids."""
        cutoff, now_s = _ts(seen_before), _ts(at)

        def work() -> list[str]:
            ids = [
                row[0]
                for row in self._sql(
                    "SELECT gateway_id FROM gateways WHERE status = 'online' "
                    "AND coalesce(last_seen, status_since) < ? ORDER BY gateway_id",
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
            self._sql(
                "UPDATE gateways SET status = ?, status_since = ? WHERE gateway_id = ?",
                (nxt.value, now_s, gateway_id),
            )
        return nxt

    # -- resources --------------------------------------------------------------------------
    @guarded
    def add_resource(self, resource: Resource, at: datetime) -> None:
        def work() -> None:
            self._sql(
                f"INSERT INTO resources ({_RESOURCE_COLUMNS}, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_resource_row(resource), _ts(at)),
            )
            self._sql(  # proposed before, registered now: no longer pending
                "DELETE FROM pending_devices WHERE gateway_id = ? AND node_id = ? AND eoj = ?",
                (resource.gateway_id, resource.node_id, resource.eoj),
            )

        self._write(work)

    @guarded
    def update_resource(self, resource: Resource) -> None:
        row = _resource_row(resource)
        self._write(
            lambda: self._sql(
                "UPDATE resources SET site_id = ?, gateway_id = ?, device_class = ?, node_id = ?, "
                "eoj = ?, rated_kw = ?, rated_kwh = ?, comfort_min_c = ?, comfort_max_c = ?, "
                "soc_reserve_pct = ?, soc_max_pct = ?, availability = ?, allowed = ? "
                "WHERE resource_id = ?",
                (*row[1:], row[0]),
            )
        )

    @guarded
    def resources(
        self, *, site_id: str | None = None, gateway_id: str | None = None
    ) -> list[Resource]:
        sql = f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE 1 = 1"
        args: list[str] = []
        for column, value in (("site_id", site_id), ("gateway_id", gateway_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        return [_resource(row) for row in self._sql(sql + " ORDER BY resource_id", args)]

    @guarded
    def resource(self, resource_id: str) -> Resource | None:
        row = self._sql(
            f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE resource_id = ?", (resource_id,)
        ).fetchone()
        return None if row is None else _resource(row)

    @guarded
    def resource_keys(self) -> dict[str, int]:
        """Every resource's compact key (the index the ingest hook's arrays use)."""
        return dict(self._sql("SELECT resource_id, resource_key FROM resources"))

    @guarded
    def pending_devices(self, gateway_id: str | None = None) -> list[PendingDevice]:
        sql = (
            "SELECT gateway_id, node_id, eoj, device_id, rated_power_w, name, first_seen, "
            "last_seen FROM pending_devices"
        )
        args: tuple[str, ...] = ()
        if gateway_id is not None:
            sql, args = sql + " WHERE gateway_id = ?", (gateway_id,)
        return [
            PendingDevice(g, n, e, d, _opt(p), name, cast(datetime, _dt(f)), cast(datetime, _dt(s)))
            for g, n, e, d, p, name, f, s in self._sql(sql + " ORDER BY 1, 2, 3", args)
        ]

    @guarded
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
            for node, eoj in self._sql(
                "SELECT node_id, eoj FROM resources WHERE gateway_id = ?", (gateway_id,)
            )
        }
        new = [d for d in devices if d.node_id is not None and (d.node_id, d.eoj) not in known]
        self._sql_many(
            "INSERT INTO pending_devices (gateway_id, node_id, eoj, device_id, rated_power_w, "
            "name, first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (gateway_id, node_id, eoj) DO UPDATE SET last_seen = excluded.last_seen,"
            " device_id = excluded.device_id, rated_power_w = excluded.rated_power_w, "
            "name = excluded.name",
            [
                (gateway_id, d.node_id, d.eoj, d.device_id, d.rated_power_w, d.name, now_s, now_s)
                for d in new
            ],
        )
        return self._allow_list(gateway_id)

    @guarded
    def allow_list(self, gateway_id: str) -> list[AllowEntry]:
        return self._allow_list(gateway_id)

    def _allow_list(self, gateway_id: str) -> list[AllowEntry]:
        cur = self._sql(
            "SELECT resource_id, node_id, eoj, rated_kw FROM resources WHERE gateway_id = ? "
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
        self._sql(
            "INSERT INTO alerts (raised_at, kind, gateway_id, resource_id, message) "
            "VALUES (?, ?, ?, ?, ?)",
            (now_s, kind, gateway_id, resource_id, message),
        )

    @guarded
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

    @guarded
    def alerts(self, *, open_only: bool = False) -> list[Alert]:
        sql = (
            "SELECT alert_id, raised_at, kind, message, gateway_id, resource_id, cleared_at "
            "FROM alerts"
        )
        if open_only:
            sql += " WHERE cleared_at IS NULL"
        return [
            Alert(a, cast(datetime, _dt(r)), k, m, g, res, _dt(c))
            for a, r, k, m, g, res, c in self._sql(sql + " ORDER BY alert_id")
        ]

    @guarded
    def clear_alert(self, alert_id: int, at: datetime) -> bool:
        """Mark an open alert cleared at ``at``; False if it was not open."""
        cur = self._write(
            lambda: self._sql(
                "UPDATE alerts SET cleared_at = ? WHERE alert_id = ? AND cleared_at IS NULL",
                (_ts(at), alert_id),
            )
        )
        return bool(cur.rowcount == 1)

    def _point_key(self, name: str) -> int:
        """The compact key of a telemetry point's name, made on first use (inside the
        ingest transaction; the caller clears the cache if that transaction rolls back)."""
        key = self._point_keys.get(name)
        if key is None:
            self._sql(
                "INSERT INTO telemetry_points (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (name,),
            )
            row = self._sql("SELECT point_key FROM telemetry_points WHERE name = ?", (name,))
            found = row.fetchone()
            assert found is not None  # inserted just above, or by another writer before
            key = int(found[0])
            self._point_keys[name] = key
        return key

    # -- the gateway lifecycle an ingest batch drives (both backends' _write_batch) ----------
    _GREATEST = "max"  # SQL's two-argument maximum: SQLite's scalar max, PostgreSQL's greatest

    def _gateway_lifecycle(
        self,
        batch: UplinkBatch,
        admitted: Sequence[tuple[int, int] | None],
        gw_rows: dict[str, GatewayRow | None],
        newest: Mapping[str, int],
        now_s: int,
    ) -> dict[str, list[AllowEntry]]:
        """Status changes, hellos and last wills of a batch's stored messages (``admitted``:
        per message its (gateway_key, seq), None if not stored; ``gw_rows`` the batch's
        gateways as read at its start, kept current here; ``newest``: per gateway its newest
        stored message's sending time, ``last_seen`` already written).  Returns the
        allow-list of each gateway whose hello was for its registered site."""
        ids = {v[0]: k for k, v in gw_rows.items() if v is not None}
        # any message sent after the last status change puts a gateway online
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
            self._sql(
                f"UPDATE gateways SET session_at = {self._GREATEST}(coalesce(session_at, 0), ?) "
                "WHERE gateway_id = ?",
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
        return allow_lists

    # -- reading back ---------------------------------------------------------------------
    @guarded
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
            sql += " AND r.resource_id = ?"
            args.append(resource_id)
        cur = self._sql(sql + " ORDER BY 1, 2, 3", args)
        return [(r, p, cast(datetime, _dt(t)), v, g, s) for r, p, t, v, g, s in cur]

    @guarded
    def count_rows(self, table: str) -> int:
        """Rows in one of the ingest tables (for monitoring and tests)."""
        if table not in _COUNTABLE:
            raise ValueError(f"count_rows: {table!r} is not one of {', '.join(_COUNTABLE)}")
        row = self._sql(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    @guarded
    def command_acks(self, gateway_id: str) -> list[tuple[int, str | None, list[tuple[str, str]]]]:
        """(command_seq, rejected, [(device_id, outcome)]) of one gateway's acknowledgements."""
        out = []
        for cseq, rejected in self._sql(
            "SELECT a.command_seq, a.rejected FROM command_acks a JOIN gateways g ON "
            "g.gateway_key = a.gateway_key WHERE g.gateway_id = ? ORDER BY 1",
            (gateway_id,),
        ).fetchall():
            outcomes = self._sql(
                "SELECT o.device_id, o.outcome FROM command_outcomes o JOIN gateways g ON "
                "g.gateway_key = o.gateway_key WHERE g.gateway_id = ? AND o.command_seq = ? "
                "ORDER BY 1",
                (gateway_id, cseq),
            ).fetchall()
            out.append((int(cseq), rejected, [(d, o) for d, o in outcomes]))
        return out




_COUNTABLE = (
    "telemetry",
    "uplink_seen",
    "site_meter_readings",
    "device_states",
    "command_acks",
    "command_outcomes",
    "pending_devices",
    "alerts",
)
