"""The aggregator's tables on SQLite: registry reads and writes, and the batched ingest write.

Mixed into :class:`~erab.store.sqlite.SqliteStore`.  The rules (what a valid resource is,
which devices a gateway may control) live in ``erab.aggregator.registry``; this module only
keeps the records, and does the one thing that must happen inside the ingest transaction:
deduplicate by ``(gateway, seq)`` against the rows already stored, so that several workers,
and an RA restarted in the middle of a batch, store every message exactly once.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

from erab.clock import JST
from erab.store.base import StoreError
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

_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


class StoreConflict(StoreError):
    """A record with that id already exists (or another unique rule would be broken)."""


def _guarded(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: RaTables, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.IntegrityError as exc:
            raise StoreConflict(f"SQLite store {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            from erab.store.sqlite import _explain

            raise _explain(self.path, exc) from exc

    return cast(_F, wrapper)


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


class RaTables:
    """Registry, alerts and ingest on the store's SQLite connection."""

    path: str
    _db: sqlite3.Connection
    _point_keys: dict[str, int]

    def _write(self, work: Callable[[], _T]) -> _T:  # provided by SqliteStore
        raise NotImplementedError

    # -- customers, sites, contracts --------------------------------------------------------
    @_guarded
    def add_customer(self, customer: Customer, at: datetime) -> None:
        self._write(
            lambda: self._db.execute(
                "INSERT INTO customers (customer_id, name, created_at) VALUES (?, ?, ?)",
                (customer.customer_id, customer.name, _ts(at)),
            )
        )

    @_guarded
    def customers(self) -> list[Customer]:
        cur = self._db.execute("SELECT customer_id, name FROM customers ORDER BY customer_id")
        return [Customer(*row) for row in cur]

    @_guarded
    def add_site(self, site: Site, at: datetime) -> None:
        self._write(
            lambda: self._db.execute(
                "INSERT INTO sites (site_id, customer_id, name, kind, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (site.site_id, site.customer_id, site.name, site.kind, _ts(at)),
            )
        )

    @_guarded
    def update_site(self, site: Site) -> None:
        self._write(
            lambda: self._db.execute(
                "UPDATE sites SET customer_id = ?, name = ?, kind = ? WHERE site_id = ?",
                (site.customer_id, site.name, site.kind, site.site_id),
            )
        )

    @_guarded
    def sites(self) -> list[Site]:
        cur = self._db.execute(
            "SELECT site_id, name, kind, customer_id FROM sites ORDER BY site_id"
        )
        return [Site(*row) for row in cur]

    @_guarded
    def site(self, site_id: str) -> Site | None:
        row = self._db.execute(
            "SELECT site_id, name, kind, customer_id FROM sites WHERE site_id = ?", (site_id,)
        ).fetchone()
        return None if row is None else Site(*row)

    @_guarded
    def add_contract(self, contract: Contract, at: datetime) -> None:
        self._write(
            lambda: self._db.execute(
                "INSERT INTO contracts (contract_id, customer_id, products, incentive_yen_per_kwh, "
                "baseline_method, created_at) VALUES (?, ?, ?, ?, ?, ?)",
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
        cur = self._db.execute(
            "SELECT contract_id, customer_id, products, incentive_yen_per_kwh, baseline_method "
            "FROM contracts ORDER BY contract_id"
        )
        return [Contract(c, cu, tuple(json.loads(p)), float(i), b) for c, cu, p, i, b in cur]

    # -- gateways ---------------------------------------------------------------------------
    @_guarded
    def add_gateway(self, gateway: Gateway, at: datetime) -> None:
        self._write(
            lambda: self._db.execute(
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

    @_guarded
    def gateways(self, site_id: str | None = None) -> list[Gateway]:
        sql = f"SELECT {_GATEWAY_COLUMNS} FROM gateways"
        args: tuple[str, ...] = ()
        if site_id is not None:
            sql, args = sql + " WHERE site_id = ?", (site_id,)
        return [_gateway(row) for row in self._db.execute(sql + " ORDER BY gateway_id", args)]

    @_guarded
    def gateway(self, gateway_id: str) -> Gateway | None:
        row = self._db.execute(
            f"SELECT {_GATEWAY_COLUMNS} FROM gateways WHERE gateway_id = ?", (gateway_id,)
        ).fetchone()
        return None if row is None else _gateway(row)

    @_guarded
    def set_gateway(
        self, gateway_id: str, *, status: GatewayStatus, cert_serial: str | None, at: datetime
    ) -> None:
        """Set status (its ``status_since`` only when it changes) and certificate serial."""
        self._write(
            lambda: self._db.execute(
                "UPDATE gateways SET status_since = CASE WHEN status = ? THEN status_since "
                "ELSE ? END, status = ?, cert_serial = ? WHERE gateway_id = ?",
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
                for row in self._db.execute(
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
            self._db.execute(
                "UPDATE gateways SET status = ?, status_since = ? WHERE gateway_id = ?",
                (nxt.value, now_s, gateway_id),
            )
        return nxt

    # -- resources --------------------------------------------------------------------------
    @_guarded
    def add_resource(self, resource: Resource, at: datetime) -> None:
        def work() -> None:
            self._db.execute(
                f"INSERT INTO resources ({_RESOURCE_COLUMNS}, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*_resource_row(resource), _ts(at)),
            )
            self._db.execute(  # proposed before, registered now: no longer pending
                "DELETE FROM pending_devices WHERE gateway_id = ? AND node_id = ? AND eoj = ?",
                (resource.gateway_id, resource.node_id, resource.eoj),
            )

        self._write(work)

    @_guarded
    def update_resource(self, resource: Resource) -> None:
        row = _resource_row(resource)
        self._write(
            lambda: self._db.execute(
                "UPDATE resources SET site_id = ?, gateway_id = ?, device_class = ?, node_id = ?, "
                "eoj = ?, rated_kw = ?, rated_kwh = ?, comfort_min_c = ?, comfort_max_c = ?, "
                "soc_reserve_pct = ?, soc_max_pct = ?, availability = ?, allowed = ? "
                "WHERE resource_id = ?",
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
                sql += f" AND {column} = ?"
                args.append(value)
        return [_resource(row) for row in self._db.execute(sql + " ORDER BY resource_id", args)]

    @_guarded
    def resource(self, resource_id: str) -> Resource | None:
        row = self._db.execute(
            f"SELECT {_RESOURCE_COLUMNS} FROM resources WHERE resource_id = ?", (resource_id,)
        ).fetchone()
        return None if row is None else _resource(row)

    @_guarded
    def resource_keys(self) -> dict[str, int]:
        """Every resource's compact key (the index the ingest hook's arrays use)."""
        return dict(self._db.execute("SELECT resource_id, resource_key FROM resources"))

    @_guarded
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
            for g, n, e, d, p, name, f, s in self._db.execute(sql + " ORDER BY 1, 2, 3", args)
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
            for node, eoj in self._db.execute(
                "SELECT node_id, eoj FROM resources WHERE gateway_id = ?", (gateway_id,)
            )
        }
        new = [d for d in devices if d.node_id is not None and (d.node_id, d.eoj) not in known]
        self._db.executemany(
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

    @_guarded
    def allow_list(self, gateway_id: str) -> list[AllowEntry]:
        return self._allow_list(gateway_id)

    def _allow_list(self, gateway_id: str) -> list[AllowEntry]:
        cur = self._db.execute(
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
        self._db.execute(
            "INSERT INTO alerts (raised_at, kind, gateway_id, resource_id, message) "
            "VALUES (?, ?, ?, ?, ?)",
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
            for a, r, k, m, g, res, c in self._db.execute(sql + " ORDER BY alert_id")
        ]

    @_guarded
    def clear_alert(self, alert_id: int, at: datetime) -> bool:
        """Mark an open alert cleared at ``at``; False if it was not open."""
        cur = self._write(
            lambda: self._db.execute(
                "UPDATE alerts SET cleared_at = ? WHERE alert_id = ? AND cleared_at IS NULL",
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
        try:
            return self._write(lambda: self._write_batch(batch, now_s))
        except BaseException:
            self._point_keys.clear()  # keys made inside the rolled-back transaction are gone
            raise

    def _point_key(self, name: str) -> int:
        key = self._point_keys.get(name)
        if key is None:
            self._db.execute(
                "INSERT INTO telemetry_points (name) VALUES (?) ON CONFLICT (name) DO NOTHING",
                (name,),
            )
            key = int(
                self._db.execute(
                    "SELECT point_key FROM telemetry_points WHERE name = ?", (name,)
                ).fetchone()[0]
            )
            self._point_keys[name] = key
        return key

    def _write_batch(self, batch: UplinkBatch, now_s: int) -> BatchOutcome:
        db = self._db
        gw_rows: dict[str, tuple[int, GatewayStatus, str, int | None, int] | None] = {}
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

        # gateway lifecycle: any message sent after the last status change puts it online
        ids = {v[0]: k for k, v in gw_rows.items() if v is not None}
        for gw, sent_s in newest.items():
            info = gw_rows[gw]
            assert info is not None
            db.execute(
                "UPDATE gateways SET last_seen = max(coalesce(last_seen, 0), ?) "
                "WHERE gateway_id = ?",
                (sent_s, gw),
            )
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
                "UPDATE gateways SET session_at = max(coalesce(session_at, 0), ?) "
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
            sql += " AND r.resource_id = ?"
            args.append(resource_id)
        cur = self._db.execute(sql + " ORDER BY 1, 2, 3", args)
        return [(r, p, cast(datetime, _dt(t)), v, g, s) for r, p, t, v, g, s in cur]

    @_guarded
    def count_rows(self, table: str) -> int:
        """Rows in one of the ingest tables (for monitoring and tests)."""
        if table not in _COUNTABLE:
            raise ValueError(f"count_rows: {table!r} is not one of {', '.join(_COUNTABLE)}")
        return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    @_guarded
    def command_acks(self, gateway_id: str) -> list[tuple[int, str | None, list[tuple[str, str]]]]:
        """(command_seq, rejected, [(device_id, outcome)]) of one gateway's acknowledgements."""
        out = []
        for cseq, rejected in self._db.execute(
            "SELECT a.command_seq, a.rejected FROM command_acks a JOIN gateways g ON "
            "g.gateway_key = a.gateway_key WHERE g.gateway_id = ? ORDER BY 1",
            (gateway_id,),
        ).fetchall():
            outcomes = self._db.execute(
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
