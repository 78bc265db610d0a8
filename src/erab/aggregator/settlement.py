"""Measured delivery and settlement of a DR event, per customer and 30-minute slot.

Three layers, each usable alone:

- Measurement (:func:`meter_data`): route A cumulative readings → kWh per slot per
  customer (the difference of consecutive registers, corrected for roll-over), net of export,
  shape ``(customers, days, 48)``; a slot whose reading at either end is missing is
  ``missing``, one from an estimated reading (source ``estimated``/``substituted``) is
  ``estimated``.  Neither is ever taken as zero.
- Settlement (:func:`settle`): baseline (:mod:`erab.aggregator.baseline`) − metered (down-DR)
  or metered − baseline (up-DR) per customer and slot; a missing or estimated slot follows
  the :class:`SettlementRules`' rule (drop the slot, or drop the customer from the event);
  the fleet's per-slot table against the commitment, the product checks
  (:mod:`erab.aggregator.products`), customer incentives, the aggregator's revenue and
  shortfall penalties.
- Output (:meth:`Settlement.to_json`, :meth:`Settlement.to_csv`): sorted keys, fixed decimals
  (kWh and kW to 4 places, yen to 2), no clock reading: the same inputs give the same bytes.

Money rules (docs/settlement.md): a customer's incentive is its price × its delivered kWh
over the event (floored at zero: a customer who used more is not charged), at most its cap;
the aggregator is paid the product's price for each slot's delivered kWh up to that slot's
commitment (over-delivery is not paid); a slot delivering less than (1 − tolerance) × its
commitment is a failed slot, and its whole shortfall is charged at the product's penalty.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from erab.aggregator.baseline import (
    SLOTS_PER_DAY,
    Baseline,
    BaselineError,
    BaselineParams,
    EventWindow,
    adjustment_slots,
    compute_baseline,
    merge_baselines,
)
from erab.aggregator.products import (
    Check,
    Product,
    ProductError,
    TelemetryDelivery,
    telemetry_delivery,
    verify_slots,
    verify_telemetry,
)
from erab.clock import JST
from erab.store import MeterReading

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ESTIMATED_SOURCES = frozenset({"estimated", "substituted"})
MISSING_RULES = ("exclude-slot", "exclude-customer")
FORMAT = "erab.settlement/1"


class SettlementError(ValueError):
    """A settlement that cannot be made from the inputs; the message says why."""


# --- measurement ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MeterData:
    """kWh per slot for ``meter_ids`` over ``days``: ``consumption_kwh`` (import − export,
    NaN where ``missing``), ``missing`` and ``estimated`` masks, all (meters, days, 48)."""

    meter_ids: tuple[str, ...]
    days: tuple[date, ...]
    consumption_kwh: FloatArray
    missing: BoolArray
    estimated: BoolArray

    def usable_kwh(self, accept_estimated: bool = False) -> FloatArray:
        """Consumption with estimated slots as NaN too (unless accepted)."""
        if accept_estimated or not self.estimated.any():
            return self.consumption_kwh
        return np.where(self.estimated, np.nan, self.consumption_kwh)


def interval_kwh(
    cumulative_kwh: npt.ArrayLike, wrap_kwh: npt.ArrayLike | None = None
) -> FloatArray:
    """Energy per interval from cumulative registers (…, points) → (…, points − 1).

    A decrease is a roll-over past the register's range when ``wrap_kwh`` is known (add it);
    without it the interval is NaN, never a negative energy."""
    c = np.asarray(cumulative_kwh, dtype=np.float64)
    d = np.diff(c, axis=-1)
    if wrap_kwh is None:
        return np.asarray(np.where(d < 0, np.nan, d), dtype=np.float64)
    w = np.asarray(wrap_kwh, dtype=np.float64)
    w = w.reshape(w.shape + (1,) * (d.ndim - w.ndim))
    rolled = np.where(np.isnan(w), np.nan, d + w)
    return np.asarray(np.where(d < 0, rolled, d), dtype=np.float64)


def meter_data(
    readings: Iterable[MeterReading],
    meter_ids: Sequence[str],
    days: Sequence[date],
    wrap_kwh: Mapping[str, float | None] | None = None,
) -> MeterData:
    """Per-slot kWh of consecutive ``days`` (JST) from cumulative readings.  Readings at
    slot ends from 00:00 of the first day to 24:00 of the last are used; others ignored."""
    ds = tuple(days)
    if not ds:
        raise SettlementError("no days to measure")
    if any((b - a).days != 1 for a, b in itertools.pairwise(ds)):
        raise SettlementError("the days to measure must be consecutive")
    ids = tuple(meter_ids)
    row = {m: i for i, m in enumerate(ids)}
    n, points = len(ids), len(ds) * SLOTS_PER_DAY + 1
    t0 = datetime(ds[0].year, ds[0].month, ds[0].day, tzinfo=JST).timestamp()
    imp = np.full((n, points), np.nan)
    exp = np.full((n, points), np.nan)
    est = np.zeros((n, points), dtype=np.bool_)
    for r in readings:
        i = row.get(r.meter_id)
        if i is None:
            continue
        k = (r.slot_end.timestamp() - t0) / 1800.0
        if k != int(k) or not 0 <= k < points:
            continue
        k = int(k)
        imp[i, k] = np.nan if r.import_kwh is None else r.import_kwh
        exp[i, k] = np.nan if r.export_kwh is None else r.export_kwh
        est[i, k] = r.source in ESTIMATED_SOURCES
    wraps = np.array([np.nan if not wrap_kwh or wrap_kwh.get(m) is None else wrap_kwh[m]
                      for m in ids], dtype=np.float64)  # fmt: skip
    net = interval_kwh(imp, wraps) - interval_kwh(exp, wraps)
    estimated = est[:, 1:] | est[:, :-1]
    missing = np.isnan(net)
    shape = (n, len(ds), SLOTS_PER_DAY)
    return MeterData(ids, ds, net.reshape(shape), missing.reshape(shape),
                     (estimated & ~missing).reshape(shape))  # fmt: skip


# --- settlement -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SettlementRules:
    """``missing_rule``: "exclude-slot" (the customer's missing or estimated slots are left
    out of its delivery and the fleet's) or "exclude-customer" (a customer with any such slot
    in the event is left out entirely); ``accept_estimated``: count estimated reads."""

    missing_rule: str = "exclude-slot"
    accept_estimated: bool = False

    def __post_init__(self) -> None:
        if self.missing_rule not in MISSING_RULES:
            raise SettlementError(
                f"missing-read rule {self.missing_rule!r} is not one of {MISSING_RULES}"
            )


@dataclass(frozen=True)
class EventTerms:
    """The event as settled: ``target_kw`` signed as the grid sees it (< 0 down, > 0 up)."""

    event_id: str
    start: datetime
    end: datetime
    target_kw: float
    product: Product
    price_yen_per_kwh: float | None = None  # None: the product's
    penalty_yen_per_kwh: float | None = None  # None: the product's

    @property
    def direction(self) -> str:
        return "down" if self.target_kw < 0 else "up"


@dataclass(frozen=True)
class CustomerTerms:
    """Per customer (aligned with the meter data): id, incentive price and cap (NaN: none)."""

    customer_ids: tuple[str, ...]
    incentive_yen_per_kwh: FloatArray
    cap_yen: FloatArray

    @classmethod
    def uniform(cls, ids: Sequence[str], yen_per_kwh: float,
                cap_yen: float | None = None) -> CustomerTerms:  # fmt: skip
        n = len(ids)
        return cls(tuple(ids), np.full(n, float(yen_per_kwh)),
                   np.full(n, np.nan if cap_yen is None else float(cap_yen)))  # fmt: skip


@dataclass(frozen=True)
class Settlement:
    """An event settled.  Arrays per customer (rows) and event slot (columns)."""

    terms: EventTerms
    rules: SettlementRules
    baseline: Baseline
    customers: CustomerTerms
    slot_starts: tuple[datetime, ...]
    baseline_kwh: FloatArray  # (customers, slots)
    metered_kwh: FloatArray  # (customers, slots), NaN where missing
    delivered_kwh: FloatArray  # (customers, slots), NaN where excluded
    excluded_slot: BoolArray  # (customers, slots)
    exclusion: Mapping[int, str]  # customer index -> why it was left out (only those)
    committed_kwh: FloatArray  # (slots,)
    incentive_yen: FloatArray  # (customers,)
    checks: tuple[Check, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    # (customers, 48 × days the event touches): its whole days, for the plots
    day_metered_kwh: FloatArray | None = None
    event_window: EventWindow | None = None

    # -- per slot, the fleet (included customers and slots only) ----------------------------
    @cached_property
    def excluded_customer(self) -> BoolArray:
        out = np.zeros(len(self.customers.customer_ids), dtype=np.bool_)
        out[list(self.exclusion)] = True
        return out

    @cached_property
    def included(self) -> BoolArray:
        return np.asarray(~self.excluded_slot & ~self.excluded_customer[:, None])

    @cached_property
    def fleet_baseline_kwh(self) -> FloatArray:
        return np.asarray(np.where(self.included, self.baseline_kwh, 0.0).sum(axis=0))

    @cached_property
    def fleet_metered_kwh(self) -> FloatArray:
        return np.asarray(np.where(self.included, self.metered_kwh, 0.0).sum(axis=0))

    @cached_property
    def fleet_delivered_kwh(self) -> FloatArray:
        return np.asarray(np.where(self.included, self.delivered_kwh, 0.0).sum(axis=0))

    @cached_property
    def customer_delivered_kwh(self) -> FloatArray:
        return np.asarray(np.where(self.included, self.delivered_kwh, 0.0).sum(axis=1))

    @property
    def price_yen_per_kwh(self) -> float:
        t = self.terms
        return t.product.price_yen_per_kwh if t.price_yen_per_kwh is None else t.price_yen_per_kwh

    @property
    def penalty_yen_per_kwh(self) -> float:
        t = self.terms
        p = t.product.penalty_yen_per_kwh
        return p if t.penalty_yen_per_kwh is None else t.penalty_yen_per_kwh

    @property
    def slot_failed(self) -> BoolArray:
        tol = self.terms.product.tolerance_pct / 100.0
        return np.asarray(self.fleet_delivered_kwh < (1 - tol) * self.committed_kwh - 1e-9)

    @property
    def revenue_yen(self) -> float:
        paid = np.clip(self.fleet_delivered_kwh, 0.0, self.committed_kwh)
        return float(paid.sum() * self.price_yen_per_kwh)

    @property
    def shortfall_kwh(self) -> FloatArray:
        return np.asarray(np.maximum(self.committed_kwh - self.fleet_delivered_kwh, 0.0))

    @property
    def penalty_yen(self) -> float:
        return float((self.shortfall_kwh * self.slot_failed).sum() * self.penalty_yen_per_kwh)

    # -- output ---------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        committed = float(self.committed_kwh.sum())
        delivered = float(self.fleet_delivered_kwh.sum())
        out_customer = self.excluded_customer
        return {
            "committed_kwh": committed,
            "delivered_kwh": delivered,
            "achieved_ratio": delivered / committed if committed else None,
            "customers": len(self.customers.customer_ids),
            "customers_excluded": int(out_customer.sum()),
            "slots_excluded": int((self.excluded_slot & ~out_customer[:, None]).sum()),
            "incentives_yen": float(self.incentive_yen.sum()),
            "revenue_yen": self.revenue_yen,
            "penalty_yen": self.penalty_yen,
            "margin_yen": self.revenue_yen - self.penalty_yen - float(self.incentive_yen.sum()),
            "slots_failed": int(self.slot_failed.sum()),
            "checks_passed": all(c.passed is not False for c in self.checks),
        }  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        t = self.terms
        slots = []
        fb, fm, fd = self.fleet_baseline_kwh, self.fleet_metered_kwh, self.fleet_delivered_kwh
        for k, s in enumerate(self.slot_starts):
            slots.append({
                "slot_start": s.isoformat(), "baseline_kwh": fb[k], "metered_kwh": fm[k],
                "delivered_kwh": fd[k], "committed_kwh": self.committed_kwh[k],
                "shortfall_kwh": self.shortfall_kwh[k], "failed": bool(self.slot_failed[k]),
                "customers_included": int(self.included[:, k].sum()),
            })  # fmt: skip
        customers = []
        delivered = self.customer_delivered_kwh
        for i, cid in enumerate(self.customers.customer_ids):
            customers.append({
                "customer_id": cid, "excluded": self.exclusion.get(i),
                "baseline": self.baseline.method_of(i),
                "delivered_kwh": delivered[i], "incentive_yen": self.incentive_yen[i],
                "incentive_yen_per_kwh": self.customers.incentive_yen_per_kwh[i],
                "cap_yen": self.customers.cap_yen[i],
                "adjustment_kwh": self.baseline.adjustment_kwh[i],
                "flags": sorted(k for k, v in self.baseline.flags.items() if v[i]),
                "slots": [{"baseline_kwh": self.baseline_kwh[i, k],
                           "metered_kwh": self.metered_kwh[i, k],
                           "delivered_kwh": self.delivered_kwh[i, k],
                           "excluded": bool(self.excluded_slot[i, k])}
                          for k in range(len(self.slot_starts))],
            })  # fmt: skip
        return {
            "format": FORMAT,
            "event": {"event_id": t.event_id, "start": t.start.astimezone(JST).isoformat(),
                      "end": t.end.astimezone(JST).isoformat(), "target_kw": t.target_kw,
                      "direction": t.direction, "product": t.product.name},
            "baseline": {**self.baseline.describe(), "customers_by_method": self._methods()},
            "rules": {"missing_rule": self.rules.missing_rule,
                      "accept_estimated": self.rules.accept_estimated,
                      "price_yen_per_kwh": self.price_yen_per_kwh,
                      "penalty_yen_per_kwh": self.penalty_yen_per_kwh,
                      "tolerance_pct": t.product.tolerance_pct},
            "summary": self.summary(),
            "checks": [c.as_dict() for c in self.checks],
            "slots": slots,
            "customers": customers,
            "notes": list(self.notes),
        }  # fmt: skip

    def _methods(self) -> dict[str, int]:
        """How many customers each baseline method settled (contracts may differ)."""
        b = self.baseline
        if not b.methods:
            return {b.name: len(self.customers.customer_ids)}
        out: dict[str, int] = {}
        for m in b.methods:
            out[m] = out.get(m, 0) + 1
        return out

    def to_json(self) -> str:
        return dumps(self.as_dict()) + "\n"

    def to_csv(self) -> str:
        """One row per customer and slot, then the fleet's rows (customer ``*fleet*``)."""
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["event_id", "customer_id", "slot_start", "baseline_kwh", "metered_kwh",
                    "delivered_kwh", "committed_kwh", "status"])  # fmt: skip
        eid = self.terms.event_id
        for i, cid in enumerate(self.customers.customer_ids):
            for k, s in enumerate(self.slot_starts):
                status = ("excluded: " + self.exclusion[i] if i in self.exclusion
                          else "excluded: missing or estimated read" if self.excluded_slot[i, k]
                          else "measured")  # fmt: skip
                w.writerow([eid, cid, s.isoformat(), num(self.baseline_kwh[i, k]),
                            num(self.metered_kwh[i, k]), num(self.delivered_kwh[i, k]), "",
                            status])  # fmt: skip
        fb, fm, fd = self.fleet_baseline_kwh, self.fleet_metered_kwh, self.fleet_delivered_kwh
        for k, s in enumerate(self.slot_starts):
            w.writerow([eid, "*fleet*", s.isoformat(), num(fb[k]), num(fm[k]), num(fd[k]),
                        num(self.committed_kwh[k]),
                        "failed" if self.slot_failed[k] else "passed"])  # fmt: skip
        return out.getvalue()


def committed_kwh(start: datetime, end: datetime, target_kw: float,
                  slot_starts: Sequence[datetime]) -> FloatArray:  # fmt: skip
    """|target| kW × the hours of each slot inside the event window."""
    out = []
    for s in slot_starts:
        lo, hi = max(s, start), min(s + timedelta(minutes=30), end)
        out.append(max((hi - lo).total_seconds(), 0.0) / 3600.0 * abs(target_kw))
    return np.asarray(out, dtype=np.float64)


def settle(
    data: MeterData,
    terms: EventTerms,
    customers: CustomerTerms,
    *,
    params: BaselineParams | Sequence[BaselineParams] | None = None,
    rules: SettlementRules | None = None,
    dr_days: Iterable[date] = (),
    plan_kwh: npt.ArrayLike | None = None,
    baseline: Baseline | None = None,
    whole_day: bool = True,
    telemetry: TelemetryDelivery | None = None,
) -> Settlement:
    """Settle one event from meter data covering its history and every day it touches (an
    event crossing midnight is baselined per calendar day: :func:`compute_baseline`).

    The baseline is computed here (``params``: one for all, or one per customer; ``dr_days``,
    ``plan_kwh``) unless one is given.  The event's own day is never a baseline day.
    ``whole_day=False`` computes the baseline of the needed slots only (no day curve for
    the report's plot: a fleet settled for its figures).  ``telemetry``: the fleet's
    delivered kW from the RA's telemetry, which the fast products are verified on."""
    rules = rules or SettlementRules()
    if len(customers.customer_ids) != len(data.meter_ids):
        raise SettlementError(f"{len(customers.customer_ids)} customers' terms for "
                              f"{len(data.meter_ids)} meters")  # fmt: skip
    try:
        window = EventWindow.from_times(data.days, terms.start, terms.end)
    except BaselineError as exc:
        raise SettlementError(f"event {terms.event_id}: {exc}") from None
    usable = data.usable_kwh(rules.accept_estimated)
    # the event's days as one run of slots from 00:00 of its start day (slot 48: next day)
    event_days_kwh = usable[:, window.day : window.day + window.day_count, :].reshape(
        usable.shape[0], SLOTS_PER_DAY * window.day_count
    )
    if baseline is None:
        # no day the event touches is a baseline day (for its later days' parts either)
        excluded_days = {*dr_days, *data.days[window.day : window.day + window.day_count]}
        if params is None or isinstance(params, BaselineParams):
            baseline = compute_baseline(usable, data.days, window, params=params,
                                        dr_days=excluded_days, plan_kwh=plan_kwh,
                                        whole_day=whole_day)  # fmt: skip
        else:
            if len(params) != len(data.meter_ids):
                raise SettlementError(f"{len(params)} baseline parameters for "
                                      f"{len(data.meter_ids)} customers")  # fmt: skip
            groups: dict[BaselineParams, list[int]] = {}
            for i, p in enumerate(params):
                groups.setdefault(p, []).append(i)
            plan = None if plan_kwh is None else np.asarray(plan_kwh, dtype=np.float64)
            parts = [(ix, compute_baseline(usable[ix], data.days, window, params=p,
                                           dr_days=excluded_days,
                                           plan_kwh=None if plan is None else plan[ix],
                                           whole_day=whole_day))
                     for p, ix in groups.items()]  # fmt: skip
            baseline = merge_baselines(parts, len(data.meter_ids))
    ev = slice(window.first_slot, window.first_slot + window.slots)
    base = np.asarray(baseline.at(ev), dtype=np.float64)
    metered = np.asarray(event_days_kwh[:, ev], dtype=np.float64)
    sign = -1.0 if terms.direction == "up" else 1.0
    delivered = sign * (base - metered)
    bad = np.isnan(metered)
    bad_slots = bad.sum(axis=1)
    exclusion: dict[int, str] = {}
    no_base = baseline.flags["no_baseline"]
    whole = (bad_slots > 0) if rules.missing_rule == "exclude-customer" else np.zeros_like(no_base)
    for i in np.flatnonzero(no_base | whole | (bad_slots == window.slots)).tolist():
        if no_base[i]:
            exclusion[i] = "no baseline (no usable past day)"
        elif whole[i]:
            exclusion[i] = f"{int(bad_slots[i])} event slot(s) missing or estimated"
        else:
            exclusion[i] = "no usable reading in the event"
    delivered = np.where(bad, np.nan, delivered)
    slot_starts = tuple(window.slot_starts(data.days))
    committed = committed_kwh(terms.start, terms.end, terms.target_kw, slot_starts)
    out_customer = np.zeros(len(data.meter_ids), dtype=np.bool_)
    out_customer[list(exclusion)] = True
    per_customer = np.where(bad | out_customer[:, None], 0.0, delivered).sum(axis=1)
    incentive = customers.incentive_yen_per_kwh * np.maximum(per_customer, 0.0)
    incentive = np.where(np.isnan(customers.cap_yen), incentive,
                         np.minimum(incentive, customers.cap_yen))  # fmt: skip
    partial = Settlement(terms, rules, baseline, customers, slot_starts, base, metered,
                         delivered, bad, exclusion, committed, incentive)  # fmt: skip
    offset_s = (terms.start - slot_starts[0]).total_seconds()
    duration_s = (terms.end - terms.start).total_seconds()
    notes = []
    if terms.product.assessment == "slot-kwh":
        checks = verify_slots(terms.product, terms.target_kw, duration_s, offset_s,
                              partial.fleet_delivered_kwh, committed)  # fmt: skip
    elif telemetry is not None:
        checks = verify_telemetry(terms.product, terms.target_kw, duration_s,
                                  telemetry.times_s, telemetry.delivered_kw,
                                  interval_s=telemetry.interval_s)  # fmt: skip
        notes.append(f"{terms.product.name} verified on telemetry of {telemetry.resources} "
                     f"resources against the fleet's {telemetry.reference_kw:.3f} kW in the 5 "
                     f"minutes before the start; {telemetry.dropped} left out for gaps in "
                     "their telemetry")  # fmt: skip
    else:
        checks = verify_slots(terms.product, terms.target_kw, duration_s, offset_s,
                              partial.fleet_delivered_kwh, committed)[:3]  # fmt: skip
        notes.append(f"{terms.product.name} is assessed on instantaneous kW from "
                     f"{terms.product.telemetry_interval_s:g}-s telemetry: response and "
                     "holding are verified from the RA's telemetry (verify_telemetry), not "
                     "from 30-minute meter data")  # fmt: skip
    return Settlement(terms, rules, baseline, customers, slot_starts, base, metered, delivered,
                      bad, exclusion, committed, incentive, tuple(checks),
                      tuple(notes), event_days_kwh, window)  # fmt: skip


# --- reproducible text ----------------------------------------------------------------------


def num(value: Any, places: int = 4) -> str:
    """A number in fixed decimals ("" for None or NaN)."""
    if value is None:
        return ""
    v = float(value)
    if math.isnan(v):
        return ""
    text = f"{v:.{places}f}"
    return "0." + "0" * places if text.lstrip("-").strip("0.") == "" else text  # no "-0.0000"


def dumps(value: Any, key: str = "", indent: int = 0) -> str:
    """JSON with sorted keys and fixed decimals: yen (keys ending ``_yen``) to 2 places,
    other floats to 4; NaN as null."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f'{inner}"{k}": {dumps(value[k], k, indent + 1)}' for k in sorted(value)]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        items = [inner + dumps(v, key, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        text = num(value, 2 if key.endswith("_yen") else 4)
        return text or "null"
    if isinstance(value, str):
        import json

        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} at {key!r}")


# --- a deployment home: its events, sites, meters and contracts ----------------------------

HISTORY_DAYS = 31  # the event day and the 30 days a baseline may look back over
METER_MAP_FILE = "meters.csv"  # HOME/ra/meters.csv: site_id,meter_id


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the RA's audit log recorded it (``erab ra serve``, the REST API)."""

    event_id: str
    start: datetime
    end: datetime
    target_kw: float
    product: str
    triggers: tuple[str, ...]  # every transition recorded, in order

    @property
    def dispatched(self) -> bool:
        return "dispatch" in self.triggers

    @property
    def cancelled_before_dispatch(self) -> bool:
        return "cancel" in self.triggers and not self.dispatched


def recorded_events(records: Iterable[Any]) -> dict[str, RecordedEvent]:
    """Events from audit records (``subject`` "event:ID", ``details["event"]`` the
    transition); an id received twice (an RA restarted the same day) keeps the latest."""
    out: dict[str, RecordedEvent] = {}
    for r in records:
        subject = getattr(r, "subject", "")
        if not isinstance(subject, str) or not subject.startswith("event:"):
            continue
        eid, details = subject.removeprefix("event:"), getattr(r, "details", {}) or {}
        what = details.get("event")
        if what == "received":
            try:
                out[eid] = RecordedEvent(
                    eid, datetime.fromisoformat(details["start"]),
                    datetime.fromisoformat(details["end"]), float(details["target_kw"]),
                    str(details.get("product", "tertiary-1")), ("received",),
                )  # fmt: skip
            except (KeyError, TypeError, ValueError):
                continue
        elif eid in out and isinstance(what, str):
            e = out[eid]
            out[eid] = RecordedEvent(e.event_id, e.start, e.end, e.target_kw, e.product,
                                     (*e.triggers, what))  # fmt: skip
    return out


def event_from_file(path: str) -> RecordedEvent:
    """An event from a JSON file (``erab ra event show --json`` output, or by hand:
    ``event_id``, ``start``, ``end``, ``target_kw``, ``product``)."""
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        start = datetime.fromisoformat(doc["start"])
        return RecordedEvent(str(doc["event_id"]), start, datetime.fromisoformat(doc["end"]),
                             float(doc["target_kw"]), str(doc.get("product", "tertiary-1")),
                             ("received", "dispatch"))  # fmt: skip
    except OSError as exc:
        raise SettlementError(f"cannot read event file {path}: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise SettlementError(
            f"event file {path} is not an event (JSON with event_id, start, end, target_kw, "
            f"product): {exc}"
        ) from None


def site_meters(sites: Sequence[Any], map_file: Any, notes: list[str]) -> dict[str, str]:
    """Each site's meter: the registry's (``Site.meter_id``, set by ``erab ra site meter``
    or an import), else a line of ``map_file`` (HOME/ra/meters.csv); a site the two give
    different meters is refused.  Only where neither names any meter (an emulated town
    imported before the registry kept meters) the town's naming convention is taken, and
    ``notes`` says so."""
    from pathlib import Path

    registered = {s.site_id: s.meter_id for s in sites if getattr(s, "meter_id", None)}
    path = Path(map_file)
    listed = read_meter_map(path) if path.is_file() else {}
    clash = sorted(k for k in registered.keys() & listed.keys() if registered[k] != listed[k])
    if clash:
        k = clash[0]
        raise SettlementError(f"site {k}: the registry's meter is {registered[k]} but {path} "
                              f"says {listed[k]}: correct one of them")  # fmt: skip
    if registered or listed:
        if registered:
            notes.append(f"meters of {len(registered)} site(s) from the registry")
        if listed.keys() - registered.keys():
            notes.append(f"meters of {len(listed.keys() - registered.keys())} site(s) from "
                         f"{path}")  # fmt: skip
        return {**listed, **registered}
    notes.append("no meter in the registry: meters by the emulated town's convention "
                 "(home-1.. then store-1.. are M000000..); set real ones with "
                 "'erab ra site meter'")  # fmt: skip
    return town_meter_ids(s.site_id for s in sites)


def town_meter_ids(site_ids: Iterable[str]) -> dict[str, str]:
    """The emulated town's convention: homes ``home-1..N`` then stores ``store-1..M`` are
    the fleet's sites 0, 1, …, whose meters the head-end names ``M000000``, ``M000001``, …
    (:func:`erab.meter.headend.meter_names`).  Raises for a site named otherwise."""
    import re

    pattern = re.compile(r"^(home|store)-([1-9][0-9]*)$")
    keyed = []
    for s in site_ids:
        m = pattern.match(s)
        if m is None:
            raise SettlementError(
                f"site {s!r} has no meter and is not an emulated town's: set it with "
                f"'erab ra site meter {s} METER' (or a line '{s},METER' in HOME/ra/"
                f"{METER_MAP_FILE})"
            )
        keyed.append(((m.group(1) != "home", int(m.group(2))), s))
    return {s: f"M{i:06d}" for i, (_, s) in enumerate(sorted(keyed))}


def read_meter_map(path: Any) -> dict[str, str]:
    """``site_id,meter_id`` lines (a header line and ``#`` comments are allowed); a bad line,
    a site listed twice or a file that is no UTF-8 text is refused naming where."""
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for n, row in enumerate(csv.reader(f), 1):
                if not row or row[0].startswith("#") or row == ["site_id", "meter_id"]:
                    continue
                if len(row) != 2 or not row[0].strip() or not row[1].strip():
                    raise SettlementError(f"{path} line {n}: expected 'site_id,meter_id', "
                                          f"got {row}")  # fmt: skip
                site, meter = row[0].strip(), row[1].strip()
                if out.get(site, meter) != meter:
                    raise SettlementError(f"{path} line {n}: site {site} listed again, with "
                                          f"meter {meter} after {out[site]}")  # fmt: skip
                out[site] = meter
    except UnicodeDecodeError as exc:
        raise SettlementError(f"{path} is not UTF-8 text (byte {exc.start}): expected "
                              "'site_id,meter_id' lines") from None
    except csv.Error as exc:
        raise SettlementError(f"{path}: expected 'site_id,meter_id' lines: {exc}") from None
    return out


def event_days(events: Iterable[RecordedEvent]) -> set[date]:
    """Days of DR events (JST) that are never baseline days: every event dispatched."""
    out: set[date] = set()
    for e in events:
        if e.cancelled_before_dispatch:
            continue
        day = e.start.astimezone(JST).date()
        while day <= (e.end - timedelta(microseconds=1)).astimezone(JST).date():
            out.add(day)
            day += timedelta(days=1)
    return out


@dataclass(frozen=True)
class HomeSources:
    """Where a deployment home keeps what settlement reads."""

    home: Any  # Path
    meter_store_url: str
    ra_store_url: str
    audit_db: Any  # Path

    @classmethod
    def of(cls, home: Any, meter_store_url: str | None = None,
           ra_store_url: str | None = None) -> HomeSources:  # fmt: skip
        """The RA's store (``ra_store_url``, else ``HOME/ra/ra.sqlite``: the registry), the
        meter data in ``meter_store_url``, else the head-end's ``HOME/erab.sqlite`` when it
        exists, else the RA's store; and the audit log of the home (the RA's events)."""
        from pathlib import Path

        from erab.security import SecurityHome

        h = Path(home)
        ra = ra_store_url or f"sqlite:///{h / 'ra' / 'ra.sqlite'}"
        headend = h / "erab.sqlite"
        meters = meter_store_url or (f"sqlite:///{headend}" if headend.is_file() else ra)
        return cls(h, meters, ra, SecurityHome(h).audit_db)

    def events(self) -> dict[str, RecordedEvent]:
        from erab.security import SqliteAuditStore

        try:
            log = SqliteAuditStore.open_read_only(self.audit_db)
        except FileNotFoundError:
            return {}
        try:
            return recorded_events(log.records())
        finally:
            log.close()


def find_event(
    sources: HomeSources, event_id: str
) -> tuple[RecordedEvent, dict[str, RecordedEvent]]:
    events = sources.events()
    if event_id not in events:
        known = ", ".join(sorted(events)) or "none"
        raise SettlementError(
            f"no event {event_id!r} in the audit log of {sources.home} (events there: {known}); "
            "give --event-file FILE for an event recorded elsewhere"
        )
    return events[event_id], events


def settle_home(
    sources: HomeSources,
    event: RecordedEvent,
    *,
    all_events: Iterable[RecordedEvent] = (),
    products: Mapping[str, Product] | None = None,
    default_params: BaselineParams | None = None,
    default_incentive_yen_per_kwh: float = 0.0,
    rules: SettlementRules | None = None,
    price_yen_per_kwh: float | None = None,
    incentive_cap_yen: float | None = None,
    participants: Iterable[str] | None = None,
) -> Settlement:
    """Settle ``event`` from a deployment home: the sites of the RA's registry whose customer
    holds a contract for the event's product (every site where no contract names it; only
    ``participants``, the sites the RA dispatched, when given: the others' baseline noise is
    no part of what the event delivered), each with its meter (:func:`site_meters`: a site
    to settle without one is refused), its customer's contract (incentive price and cap,
    baseline method: the first contract naming the event's product, else the customer's
    first), the meter readings of the 30 days before the event and of every day it touches.
    ``incentive_cap_yen`` caps the customers whose contract has no cap of its own."""
    from pathlib import Path

    from erab.aggregator.products import get_product
    from erab.aggregator.registry import redact_url
    from erab.store import StoreError, StoreNotFound, open_store

    product = get_product(event.product, dict(products) if products is not None else None)
    try:
        ra = open_store(sources.ra_store_url, create=False)
    except StoreNotFound:
        where = redact_url(sources.ra_store_url).removeprefix("sqlite:///")
        raise SettlementError(f"no RA registry at {where}: run 'erab ra import' with this "
                              "--home (or --store) first") from None
    rows: list[Any] = []
    try:
        sites = sorted(ra.sites(), key=lambda s: s.site_id)  # type: ignore[attr-defined]
        contracts = list(ra.contracts())  # type: ignore[attr-defined]
        site_of = {r.resource_id: r.site_id for r in ra.resources()}  # type: ignore[attr-defined]
        if product.assessment == "instantaneous-kw" and hasattr(ra, "telemetry"):
            rows = ra.telemetry()
    except (AttributeError, StoreError) as exc:
        raise SettlementError(f"{redact_url(sources.ra_store_url)} is no RA registry: "
                              f"{exc}") from None
    finally:
        ra.close()
    if not sites:
        raise SettlementError("the RA's registry has no sites: nothing to settle")
    notes: list[str] = []
    meter_of = site_meters(sites, Path(sources.home) / "ra" / METER_MAP_FILE, notes)
    by_customer: dict[str, list[Any]] = {}
    for c in contracts:
        by_customer.setdefault(c.customer_id, []).append(c)
    # the customers enrolled in the event's product are settled; a registry without any
    # (an emulated town imported without contracts) settles every site on default terms
    def enrolled_in(site: Any) -> bool:
        offered = by_customer.get(site.customer_id or "", [])
        return any(product.name in c.products for c in offered)

    enrolled = [s for s in sites if enrolled_in(s)]
    if enrolled:
        if len(enrolled) < len(sites):
            notes.append(f"{len(enrolled)} of {len(sites)} sites have a contract for "
                         f"{product.name}: only they are settled")  # fmt: skip
        sites = enrolled
    if participants is not None:
        taking = set(participants)
        sites = [s for s in sites if s.site_id in taking]
        if not sites:
            raise SettlementError(f"none of the event's {len(taking)} participating sites "
                                  "has a meter and a contract to settle")  # fmt: skip
        notes.append(f"{len(sites)} participating sites settled (those the RA dispatched)")
    # a site to be paid (enrolled, or dispatched) without a meter is an error to fix, never a
    # customer silently left unpaid
    unmetered = [s.site_id for s in sites if s.site_id not in meter_of]
    if unmetered:
        named = ", ".join(unmetered[:5]) + (f" and {len(unmetered) - 5} more"
                                            if len(unmetered) > 5 else "")  # fmt: skip
        raise SettlementError(
            f"{len(unmetered)} site(s) to settle have no meter in the registry: {named}; set "
            "each with 'erab ra site meter SITE METER' (or list them in HOME/ra/"
            f"{METER_MAP_FILE} as 'site_id,meter_id')"
        )
    used = Counter(meter_of[s.site_id] for s in sites)
    shared = sorted(m for m, n in used.items() if n > 1)
    if shared:
        raise SettlementError(f"meter(s) {', '.join(shared)} are given for more than one site: "
                              "a meter measures one site")  # fmt: skip
    params: list[BaselineParams] = []
    prices, caps, excluded_method = [], [], {}
    default_cap = np.nan if incentive_cap_yen is None else float(incentive_cap_yen)
    base = default_params or BaselineParams()
    for i, s in enumerate(sites):
        offered = by_customer.get(s.customer_id or "", [])
        contract = next((c for c in offered if product.name in c.products),
                        offered[0] if offered else None)  # fmt: skip
        if contract is None:
            params.append(base)
            prices.append(default_incentive_yen_per_kwh)
            caps.append(default_cap)
            continue
        prices.append(contract.incentive_yen_per_kwh)
        # the contract's own cap; the command's --incentive-cap-yen where it has none
        own_cap = getattr(contract, "incentive_cap_yen", None)
        caps.append(default_cap if own_cap is None else float(own_cap))
        try:
            params.append(BaselineParams.for_contract(
                contract.baseline_method, adjustment_cap_pct=base.adjustment_cap_pct,
                low_day_pct=base.low_day_pct, lookback_days=base.lookback_days))  # fmt: skip
        except BaselineError as exc:
            params.append(base)
            excluded_method[i] = str(exc)
    no_contract = sum(1 for s in sites if not by_customer.get(s.customer_id or ""))
    if no_contract:
        notes.append(f"{no_contract} site(s) without a contract: baseline "
                     f"{base.method} / adjustment {base.adjustment or 'none'}, incentive "
                     f"{default_incentive_yen_per_kwh:g} yen/kWh")  # fmt: skip
    start_jst = event.start.astimezone(JST)
    day = start_jst.date()
    last_day = (event.end.astimezone(JST) - timedelta(microseconds=1)).date()
    # an adjustment window reaching before 00:00 reads the evening before each baseline day:
    # one day more, before the oldest the baseline may look back to
    first_slot = (start_jst.hour * 60 + start_jst.minute) // 30
    evening = any(adjustment_slots(first_slot, p.adjustment)[0] < 0 for p in params)
    # the 30 days before the start day, and every day the event touches (past midnight too)
    days = [day + timedelta(days=k)
            for k in range(1 - HISTORY_DAYS - evening, (last_day - day).days + 1)]  # fmt: skip
    first = datetime(days[0].year, days[0].month, days[0].day, tzinfo=JST)
    meter_ids = [meter_of[s.site_id] for s in sites]
    try:
        store = open_store(sources.meter_store_url, create=False)
    except StoreNotFound:
        raise SettlementError(f"no meter data store at {redact_url(sources.meter_store_url)}: "
                              "collect readings with 'erab meter ami collect' first") from None
    try:
        readings = store.readings(meter_ids, first, first + timedelta(days=len(days)))
        wraps = {m.meter_id: m.wrap_kwh for m in store.meters()}
    finally:
        store.close()
    if not readings:
        raise SettlementError(
            f"the meter data store {redact_url(sources.meter_store_url)} has no readings of these "
            f"{len(meter_ids)} meters from {days[0]} to {days[-1]}"
        )
    data = meter_data(readings, meter_ids, days, wraps)
    customers = CustomerTerms(tuple(s.site_id for s in sites), np.asarray(prices, dtype=float),
                              np.asarray(caps, dtype=float))  # fmt: skip
    terms = EventTerms(event.event_id, event.start, event.end, event.target_kw, product,
                       price_yen_per_kwh)  # fmt: skip
    others = [e for e in all_events if e.event_id != event.event_id]
    telemetry = None
    if product.assessment == "instantaneous-kw":
        settled = {s.site_id for s in sites}
        lo_s, hi_s = event.start.timestamp() - 360.0, event.end.timestamp()
        samples = [(rid, t.timestamp(), value / 1000.0) for rid, point, t, value, *_ in rows
                   if point == "power_w" and site_of.get(rid) in settled
                   and lo_s <= t.timestamp() <= hi_s]  # fmt: skip
        try:
            telemetry = telemetry_delivery(samples, event.start.timestamp(),
                                           event.end.timestamp(), terms.direction)  # fmt: skip
        except ProductError as exc:
            notes.append(str(exc))
    result = settle(data, terms, customers, params=params, rules=rules,
                    dr_days=event_days(others), telemetry=telemetry)  # fmt: skip
    if excluded_method:
        result = _with(result, exclusion={**result.exclusion, **excluded_method})
    return _with(result, notes=(*result.notes, *notes))


def _with(s: Settlement, **changes: Any) -> Settlement:
    from dataclasses import replace

    out = replace(s, **changes)
    if "exclusion" in changes:  # incentives follow who is settled
        out = replace(out, incentive_yen=np.where(out.excluded_customer, 0.0,
                                                  out.incentive_yen))  # fmt: skip
    return out


def dashboard_settlement(ra: Any, event_id: str) -> dict[str, Any] | None:
    """The console's view of an event's settlement (erab.web.settlement), None when it
    cannot be settled (yet): rows per customer, totals, and the fleet's baseline in kW."""
    home = getattr(ra, "home", None)
    if home is None:
        return None
    try:
        sources = HomeSources.of(home)
        event, events = find_event(sources, event_id)
        s = settle_home(sources, event, all_events=events.values())
    except (SettlementError, ValueError, OSError):
        return None
    doc = s.as_dict()
    rows = [{k: v for k, v in c.items() if k != "slots"} for c in doc["customers"]]
    baseline_kw = {st.isoformat(): float(v) * 2.0
                   for st, v in zip(s.slot_starts, s.fleet_baseline_kwh, strict=True)}  # fmt: skip
    return {"rows": rows, "totals": doc["summary"], "baseline_kw": baseline_kw}


def dashboard_csv(ra: Any, event_id: str) -> str:
    home = getattr(ra, "home", None)
    if home is None:
        raise SettlementError("this RA has no deployment home to settle from")
    sources = HomeSources.of(home)
    event, events = find_event(sources, event_id)
    return settle_home(sources, event, all_events=events.values()).to_csv()
