"""What the console shows, computed from the RA (``erab.aggregator``), never in the page.

Each function takes the RA backend (the :class:`erab.aggregator.service.RaService`, or
anything with the API's :class:`~erab.aggregator.api.RaBackend` shape; the fleet's columns
``state`` and ``resources``, the events' ``plans`` and the ``store`` are used where the
backend has them) and returns plain dicts: the pages render them and the JSON endpoints of
:mod:`erab.web.app` send them to the page's script for live updates.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from erab.aggregator.api import AlertSource, RaBackend
from erab.aggregator.closedloop import check_delivery
from erab.aggregator.events import SLOT, DrEvent, EventError
from erab.aggregator.flexibility import flexibility_for_window
from erab.aggregator.registry import RegistryError, inventory_rows
from erab.aggregator.state import FleetState, ResourceKind

FLEX_HOLD_S = 3600.0  # flexibility shown: what each site holds for an hour from now
HISTORY_POINTS = 4000  # fleet samples kept (at one per 2 s: a little over 2 h of real time)


class NotFound(LookupError):
    """An unknown site, gateway or event: the message names it."""


def _round(value: float, digits: int = 2) -> float | None:
    return None if value != value else round(float(value), digits)  # NaN -> None (JSON null)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _now(ra: RaBackend) -> datetime:
    now: datetime = ra.events.clock.now()
    return now


def _columns(ra: RaBackend) -> tuple[FleetState | None, Sequence[Any]]:
    state = getattr(ra, "state", None)
    resources = getattr(ra, "resources", None) or []
    if not isinstance(state, FleetState) or len(resources) != len(state.power_kw):
        return None, []
    return state, resources


@dataclass
class FleetSample:
    at_s: float  # the RA's clock (simulated in a demo), POSIX seconds
    power_kw: float
    online: int


class FleetHistory:
    """The fleet's power over time, sampled by the console's background task: what the
    fleet and event charts draw (the RA keeps no time series of its own fleet total)."""

    def __init__(self, maxlen: int = HISTORY_POINTS) -> None:
        self.samples: deque[FleetSample] = deque(maxlen=maxlen)

    def sample(self, ra: RaBackend) -> FleetSample:
        state, _ = _columns(ra)
        power = float(np.nansum(state.power_kw)) if state is not None else float(
            ra.fleet_summary().get("power_kw") or 0.0)  # fmt: skip
        online = int(np.sum(state.online)) if state is not None else 0
        s = FleetSample(ra.events.clock.timestamp(), power, online)
        self.samples.append(s)
        return s

    def between(self, start_s: float, end_s: float) -> list[FleetSample]:
        return [s for s in self.samples if start_s <= s.at_s <= end_s]


class Cache:
    """One computed value per key for ``ttl_s`` of real time: a dozen consoles polling the
    fleet every few seconds cost one computation, not a dozen."""

    def __init__(self, ttl_s: float = 1.0) -> None:
        self.ttl_s = ttl_s
        self._values: dict[str, tuple[float, Any]] = {}

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        now = time.monotonic()
        hit = self._values.get(key)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        value = make()
        self._values[key] = (now, value)
        return value



def fleet_view(ra: RaBackend) -> dict[str, Any]:
    """The fleet now: the RA's summary and one row per site (gateway status, resources online,
    kW now, mean battery SOC, flexibility down and up held for an hour)."""
    now = _now(ra)
    sites = ra.registry.sites()
    index = {s.site_id: i for i, s in enumerate(sites)}
    n = len(sites)
    gateway_of: dict[str, Any] = {}  # site id -> its (first) gateway
    gateways = ra.registry.gateways()
    fleet_down = fleet_up = 0.0
    for g in gateways:
        gateway_of.setdefault(g.site_id, g)
    zeros = np.zeros(n)
    power, online, count, soc_sum, soc_n, down, up = (zeros.copy() for _ in range(7))
    last_seen = np.full(n, np.nan)
    state, resources = _columns(ra)
    if state is not None and n:
        site_of_row = np.array([index.get(r.site_id, -1) for r in resources], dtype=np.int64)
        keep = site_of_row >= 0
        rows = site_of_row[keep]

        def per_site(values: np.ndarray) -> np.ndarray:
            return np.bincount(rows, weights=np.nan_to_num(values[keep]), minlength=n)

        power = per_site(state.power_kw)
        online = per_site(state.online.astype(np.float64))
        count = np.bincount(rows, minlength=n).astype(np.float64)
        battery = (state.kind == ResourceKind.BATTERY) & ~np.isnan(state.soc_pct)
        soc_sum = per_site(np.where(battery, state.soc_pct, 0.0))
        soc_n = per_site(battery.astype(np.float64))
        window = flexibility_for_window(state, now, FLEX_HOLD_S)
        down, up = per_site(window.down_kw), per_site(window.up_kw)
        fleet_down = float(np.nansum(window.down_kw))
        fleet_up = float(np.nansum(window.up_kw))
        seen = np.where(np.isfinite(state.last_seen_s[keep]), state.last_seen_s[keep], -np.inf)
        latest = np.full(n, -np.inf)
        np.maximum.at(latest, rows, seen)
        last_seen = np.where(np.isfinite(latest), latest, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        soc = np.where(soc_n > 0, soc_sum / np.maximum(soc_n, 1), np.nan)
    if state is not None:
        # the RA's fleet_summary() figures, from the columns and the window computed above
        # (one flexibility computation and one registry read instead of three and two)
        summary: dict[str, Any] = {
            "resources": len(resources), "online": int(np.sum(state.online)),
            "gateways": len(gateways), "power_kw": float(np.nansum(state.power_kw)),
            "flexibility_down_kw": fleet_down, "flexibility_up_kw": fleet_up}  # fmt: skip
    else:
        summary = dict(ra.fleet_summary())
    rows_out = []
    for i, s in enumerate(sites):
        gw = gateway_of.get(s.site_id)
        rows_out.append({
            "site_id": s.site_id, "name": s.name, "kind": s.kind,
            "gateway": None if gw is None else gw.gateway_id,
            "gateway_status": None if gw is None else str(gw.status),
            "resources": int(count[i]), "online": int(online[i]),
            "power_kw": _round(power[i]), "soc_pct": _round(soc[i], 1),
            "flex_down_kw": _round(down[i]), "flex_up_kw": _round(up[i]),
            "last_seen": None if np.isnan(last_seen[i])
            else datetime.fromtimestamp(float(last_seen[i]), UTC).isoformat(),
        })
    sites_online = sum(1 for r in rows_out if r["gateway_status"] == "online")
    battery_soc = None
    if state is not None:
        battery = (state.kind == ResourceKind.BATTERY) & ~np.isnan(state.soc_pct)
        battery_soc = _round(float(np.mean(state.soc_pct[battery])), 1) if battery.any() else None
    return {
        "at": now.isoformat(),
        "summary": {
            "sites": n, "sites_online": sites_online,
            "resources": summary.get("resources"), "resources_online": summary.get("online"),
            "gateways": summary.get("gateways"),
            "power_kw": _round(float(summary.get("power_kw") or 0.0)),
            "soc_pct": battery_soc,
            "flex_down_kw": _round(float(summary.get("flexibility_down_kw") or 0.0)),
            "flex_up_kw": _round(float(summary.get("flexibility_up_kw") or 0.0)),
        },
        "sites": rows_out,
        "alerts": alerts_view(ra),
    }


MAX_ALERTS = 20


def alerts_view(ra: RaBackend) -> list[dict[str, Any]]:
    """The RA's open alerts, newest first (the first ``MAX_ALERTS``); none from a backend
    that keeps no alerts."""
    if not isinstance(ra, AlertSource):
        return []
    return ra.alert_rows(open_only=True)[:MAX_ALERTS]


def fleet_series(history: FleetHistory, since_s: float | None = None) -> dict[str, Any]:
    samples = list(history.samples)
    if since_s is not None:
        samples = [s for s in samples if s.at_s >= since_s]
    return {"t": [round(s.at_s, 1) for s in samples],
            "power_kw": [round(s.power_kw, 3) for s in samples],
            "online": [s.online for s in samples]}  # fmt: skip


_LIVE_COLUMNS = ("power_kw", "soc_pct", "setpoint_c", "room_temp_c")


def site_view(
    ra: RaBackend,
    site_id: str,
    *,
    meter_history: Callable[[str], list[dict[str, Any]] | None] | None = None,
    points: int = 240,
) -> dict[str, Any]:
    """One site: its record, gateways, resources with live values from the fleet's columns,
    each resource's recent power from the store, and the meter's 30-minute history where a
    source for it is given (None: not available)."""
    try:
        site = ra.registry.site(site_id)
    except RegistryError as exc:
        raise NotFound(str(exc)) from None
    state, resources = _columns(ra)
    row_of = {r.resource_id: i for i, r in enumerate(resources)}
    devices = []
    for record in inventory_rows(ra.registry.resources(site_id=site_id)):
        row = row_of.get(record["resource_id"])
        live: dict[str, Any] = {"online": False, "last_seen": None}
        if state is not None and row is not None:
            live = {c: _round(float(getattr(state, c)[row])) for c in _LIVE_COLUMNS}
            seen = float(state.last_seen_s[row])
            live["online"] = bool(state.online[row])
            live["last_seen"] = (datetime.fromtimestamp(seen, UTC).isoformat()
                                 if np.isfinite(seen) else None)  # never heard: -inf or NaN
        devices.append({**record, **live})
    series: dict[str, dict[str, list[float]]] = {}
    store = getattr(ra, "store", None)
    if store is not None and hasattr(store, "telemetry"):
        for d in devices:
            rows = [r for r in store.telemetry(d["resource_id"]) if r[1] == "power_w"][-points:]
            if rows:
                series[d["resource_id"]] = {
                    "t": [round(r[2].timestamp(), 1) for r in rows],
                    "power_kw": [round(r[3] / 1000.0, 3) for r in rows]}  # fmt: skip
    meter = None if meter_history is None else meter_history(site_id)
    return {
        "site": inventory_rows([site])[0],
        "gateways": inventory_rows(ra.registry.gateways(site_id)),
        "devices": devices,
        "power_series": series,
        "meter": meter,
    }


def _commands(ra: RaBackend, event_id: str | None = None) -> list[Any]:
    if ra.fanout is None:
        return []
    return [c for c in ra.fanout.commands.values() if event_id is None or c.event_id == event_id]


def events_view(ra: RaBackend) -> dict[str, Any]:
    """Every event, newest first, with its commands by stage."""
    book = ra.events.events
    out = []
    for event in sorted(book.values(), key=lambda e: e.received_at, reverse=True):
        stages: dict[str, int] = {}
        for c in _commands(ra, event.event_id):
            stages[c.stage.value] = stages.get(c.stage.value, 0) + 1
        out.append({**event.as_dict(), "commands": stages,
                    "cancellable": event.stage.value not in ("completed", "cancelled")})
    return {"at": _now(ra).isoformat(), "events": out}


def _find_event(ra: RaBackend, event_id: str) -> DrEvent:
    try:
        return ra.events.get(event_id)
    except EventError as exc:
        raise NotFound(str(exc)) from None


def event_view(
    ra: RaBackend,
    event_id: str,
    history: FleetHistory,
    *,
    baseline: Callable[[str], Mapping[float, float] | None] | None = None,
) -> dict[str, Any]:
    """One event: target against the fleet's power and its baseline over time, per 30-minute
    slot (baseline, target level, fleet power, delivered, ratio), commands acknowledged and
    refused (with each reason).

    The baseline is ``baseline(event_id)`` (slot start POSIX s → kW, the settlement's) where given
    and known; otherwise the fleet's level just before dispatch (the closed loop's reference)."""
    event = _find_event(ra, event_id)
    request = event.request
    plan = getattr(ra, "plans", {}).get(event_id)
    reference = None if plan is None else float(plan.reference_kw)
    settled = None if baseline is None else baseline(event_id)
    slots = request.slots()

    def baseline_at(t: datetime) -> float | None:
        if settled:
            slot = t - timedelta(minutes=t.minute % 30, seconds=t.second,
                                 microseconds=t.microsecond)  # fmt: skip
            value = settled.get(slot.timestamp())
            if value is not None:
                return float(value)
        return reference

    margin = timedelta(minutes=30)
    samples = history.between((request.start - margin).timestamp(),
                              (request.end + margin).timestamp())
    chart: dict[str, list[float | None]] = {"t": [], "actual_kw": [], "baseline_kw": [],
                                            "target_kw": []}
    for s in samples:
        t = datetime.fromtimestamp(s.at_s, UTC)
        b = baseline_at(t)
        inside = request.start <= t < request.end
        chart["t"].append(round(s.at_s, 1))
        chart["actual_kw"].append(round(s.power_kw, 3))
        chart["baseline_kw"].append(None if b is None else round(b, 3))
        level = None if b is None or not inside else round(b + request.target_kw, 3)
        chart["target_kw"].append(level)
    planned = None if plan is None else plan.plan
    slot_rows = []
    for k, slot_start in enumerate(slots):
        slot_end = slot_start + SLOT
        lo, hi = max(slot_start, request.start), min(slot_end, request.end)
        in_slot = history.between(lo.timestamp(), hi.timestamp())
        actual = float(np.mean([s.power_kw for s in in_slot])) if in_slot else None
        b = baseline_at(slot_start)
        delivered = ratio = None
        if actual is not None and b is not None:
            check = check_delivery(request.target_kw, b, actual)
            delivered, ratio = check.delivered_kw, check.ratio
        planned_kw = None
        if planned is not None and k < planned.kw.shape[1]:
            planned_kw = float(planned.kw[:, k].sum())
        slot_rows.append({
            "slot": slot_start.isoformat(), "baseline_kw": None if b is None else round(b, 3),
            "target_kw": request.target_kw,
            "planned_kw": None if planned_kw is None else round(planned_kw, 3),
            "actual_kw": None if actual is None else round(actual, 3),
            "delivered_kw": None if delivered is None else round(delivered, 3),
            "ratio": None if ratio is None else round(ratio, 3),
        })  # fmt: skip
    commands = sorted(_commands(ra, event_id), key=lambda c: (c.gateway_id, c.sequence))
    acks = [c for c in commands if c.stage.value == "acknowledged"]
    refusals = [{"gateway": c.gateway_id, "device_id": c.body.get("device_id"),
                 "stage": c.stage.value, "reason": c.reason or ", ".join(
                     str(o.get("reason") or o.get("outcome")) for o in c.outcomes) or "—"}
                for c in commands if c.stage.value in ("refused", "expired")]  # fmt: skip
    checks = [] if plan is None else [
        {"delivered_kw": round(c.delivered_kw, 3), "ratio": round(c.ratio, 3),
         "adjust_kw": round(c.adjust_kw, 3)} for c in plan.checks[-20:]]  # fmt: skip
    return {
        "at": _now(ra).isoformat(),
        "event": event.as_dict(),
        "cancellable": event.stage.value not in ("completed", "cancelled"),
        "baseline_source": "settlement" if settled else "reference",
        "reference_kw": None if reference is None else round(reference, 3),
        "chart": chart,
        "slots": slot_rows,
        "commands": {"total": len(commands), "acknowledged": len(acks),
                     "in_flight": sum(1 for c in commands
                                      if c.stage.value in ("signed", "sent")),
                     "refused": len(refusals)},
        "acknowledgements": [{"gateway": c.gateway_id, "device_id": c.body.get("device_id"),
                              "type": c.body.get("type"), "at": _iso(c.acknowledged_at),
                              "outcomes": c.outcomes} for c in acks[:200]],
        "refusals": refusals,
        "checks": checks,
    }


def gateways_view(
    ra: RaBackend,
    certificates: Mapping[str, Mapping[str, Any]],
    outbox_depth: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Every gateway: registry status, last seen, its certificate's expiry and status (from
    the PKI), days left, and its outbox depth where known."""
    now = _now(ra)
    rows = []
    for g in inventory_rows(ra.registry.gateways()):
        cert = certificates.get(g["gateway_id"], {})
        not_after = cert.get("not_after")
        days = None
        if not_after:
            days = round((datetime.fromisoformat(str(not_after)) - now).total_seconds() / 86400, 1)
        rows.append({**g, "certificate_serial": cert.get("serial"),
                     "certificate_status": cert.get("status"), "not_after": not_after,
                     "days_left": days,
                     "outbox_depth": None if outbox_depth is None
                     else outbox_depth.get(g["gateway_id"])})  # fmt: skip
    # what needs the operator first: not online, then the certificates nearest expiry
    rows.sort(key=lambda r: (r["status"] == "online", r["certificate_status"] == "revoked",
                             r["days_left"] if r["days_left"] is not None else float("inf"),
                             r["gateway_id"]))  # fmt: skip
    return {"at": now.isoformat(), "gateways": rows}
