"""Baselines: the consumption a customer would have had on an event day without the event.

Arrays in, arrays out: consumption is kWh per 30-minute slot, shape ``(customers, days, 48)``
(slot 0 is 00:00-00:30 JST), NaN where the meter gave no usable reading.  One call computes
the baseline of every customer for one event day, in a handful of numpy operations.

Methods (METI, ERAB guideline, the "High X of Y" baselines of its appendix on measuring
demand response; the balancing market's submitted baseline plan):

- ``high-4-of-5`` (working days): of the 5 most recent working days before the event day
  that are no DR-event day, have complete readings and are not "low" (their average over the
  event window is below 25 % of the 5-day average), the 4 with the highest consumption over
  the event window; each slot's baseline is the mean of that slot over those 4 days.
- ``high-2-of-3`` (non-working days: Saturdays, Sundays, Japanese public holidays from
  ``jpholiday``): the same with 3 and 2.  Which of the two applies follows the event day.
- ``average-of-5``: the mean of the pool (all 5 / 3 days), the registry's
  "previous-days-average".
- ``plan``: a per-slot plan the aggregator submitted before gate closure (基準値計画); taken
  as it is, never adjusted.
- Same-day adjustment (当日調整), optional: the mean of (actual − unadjusted baseline) over a
  window before the event is added to every slot; ``5h-2h`` (6 slots ending 2 h before the
  start, the default) or ``4h-1h``; an optional cap on its size.

Rules where the guideline leaves a choice, fixed here so that a settlement can be re-done:

- Candidate days are searched back ``lookback_days`` (30) calendar days from the event day.
- A past day with any missing reading in the slots the baseline needs (the event window and
  the adjustment window) is skipped for that customer, as a DR-event day is.
- The 25 % reference is the average over the 5 most recent complete candidate days; a low
  day is replaced by the next older candidate, and the reference is not recomputed.  Where
  that reference is ≤ 0 (a customer exporting more than importing) no day is low.
- Ties in the event-window consumption go to the more recent day.
- With fewer pool days than the method picks, the baseline is the mean of what there is and
  the customer is flagged ``short_history``; with none it is NaN and flagged ``no_baseline``.
- The adjustment window is clock hours before the start (ERAB guideline, 当日調整: "N hours
  before the event"), so for an event starting before 05:00 it reaches back into the day
  before: 5h-2h before 01:00 is 20:00-23:00 of the previous evening.  On the event's side
  that evening's meters are read; on the baseline's side each chosen day's own evening
  before (the same clock hours, the day before each baseline day, whatever that day's
  kind), so a Monday 01:00 event compares Sunday evening with the evenings before its
  working baseline days.  A candidate day whose evening before lacks a reading there is no
  baseline day for that customer (as for any slot the baseline needs).  Only where the day
  before is not among the days given is the window cut (flag ``adjustment_truncated``); a
  window with no reading left gives no adjustment (flag ``no_adjustment``).  Settlements
  made before this rule (erab 0.1.0 up to 3 December 2026) cut the window at 00:00.
- An event crossing midnight (JST) is cut at each midnight, and each calendar day's part is
  baselined as an event of that day (that day's kind and pool, ranked on that part's slots):
  a slot's baseline comes from past days of its own date's kind.  One same-day adjustment,
  measured before the start, is added to every slot; its cap is a share of the whole
  event's unadjusted baseline.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import cached_property
from typing import Any

import jpholiday
import numpy as np
import numpy.typing as npt

from erab.clock import JST

SLOTS_PER_DAY = 48
SLOT = timedelta(minutes=30)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

# method name -> (pool days, days picked) on working / non-working days
HIGH_X_OF_Y = {"working": (5, 4), "non-working": (3, 2)}
METHODS = ("high-x-of-y", "average-of-y", "plan")
# the registry's contract names for baseline methods -> (method, same-day adjustment)
CONTRACT_METHODS: dict[str, tuple[str, str | None]] = {
    "high-4-of-5": ("high-x-of-y", None),
    "same-day-adjusted": ("high-x-of-y", "5h-2h"),
    "previous-days-average": ("average-of-y", None),
}
# same-day adjustment windows: (hours before the start the window opens, hours it closes)
ADJUSTMENT_WINDOWS = {"5h-2h": (5, 2), "4h-1h": (4, 1)}
# named in a settlement's output when the window reaches before 00:00 of the event day
# (earlier settlements cut it there): whose evening is read for the slots before midnight
ADJUSTMENT_BEFORE_MIDNIGHT = "day before the event and before each baseline day"
FLAGS = (
    "short_history",
    "no_baseline",
    "adjustment_capped",
    "adjustment_truncated",
    "no_adjustment",
)


class BaselineError(ValueError):
    """Inputs a baseline cannot be computed from; the message says which and why."""


def is_working_day(day: date) -> bool:
    """Monday to Friday and no Japanese public holiday (substitute holidays included)."""
    return day.weekday() < 5 and not jpholiday.is_holiday(day)


def day_kind(day: date) -> str:
    return "working" if is_working_day(day) else "non-working"


@dataclass(frozen=True)
class EventWindow:
    """Where the event lies in the arrays: ``day`` (index into the days axis of its start)
    and its slots ``first_slot`` .. ``first_slot + slots - 1`` counted from 00:00 of that
    day.  An event crossing midnight runs on past slot 47 into the next day(s): slot 48 is
    00:00-00:30 of the day after (:attr:`day_count` days in all)."""

    day: int
    first_slot: int
    slots: int

    def __post_init__(self) -> None:
        if self.slots < 1 or not 0 <= self.first_slot < SLOTS_PER_DAY:
            raise BaselineError(
                f"event slots {self.first_slot}..{self.first_slot + self.slots - 1}: the first "
                f"must be one of the start day's {SLOTS_PER_DAY} slots and there must be one "
                "at least"
            )

    @property
    def day_count(self) -> int:
        """Calendar days (JST) the event touches: 2 for 23:00-02:00."""
        return -(-(self.first_slot + self.slots) // SLOTS_PER_DAY)

    @property
    def crosses_midnight(self) -> bool:
        return self.day_count > 1

    def by_day(self) -> list[EventWindow]:
        """The event cut at each midnight: one window per calendar day it touches."""
        out, first, left = [], self.first_slot, self.slots
        for j in range(self.day_count):
            n = min(left, SLOTS_PER_DAY - first)
            out.append(EventWindow(self.day + j, first, n))
            first, left = 0, left - n
        return out

    @classmethod
    def from_times(cls, days: Sequence[date], start: datetime, end: datetime) -> EventWindow:
        """The window of an event from ``start`` to ``end`` (aware); slots it touches.  Every
        calendar day it touches must be among ``days``."""
        s, e = start.astimezone(JST), end.astimezone(JST)
        if e <= s:
            raise BaselineError(f"event end {e.isoformat()} is not after its start")
        listed = list(days)
        try:
            day = listed.index(s.date())
        except ValueError:
            raise BaselineError(f"the event day {s.date()} is not among the days given") from None
        first = (s.hour * 60 + s.minute) // 30
        midnight = datetime(s.year, s.month, s.day, tzinfo=JST)
        last_end = -(-int((e - midnight).total_seconds()) // 1800)  # ceil to a slot end
        window = cls(day, first, last_end - first)
        last_day = s.date() + timedelta(days=window.day_count - 1)
        if day + window.day_count > len(listed) or listed[day + window.day_count - 1] != last_day:
            raise BaselineError(f"the event runs into {last_day}, which is not among the days "
                                "given (they must be consecutive and include every day the "
                                "event touches)")  # fmt: skip
        return window

    def slot_starts(self, days: Sequence[date]) -> list[datetime]:
        d = days[self.day]
        midnight = datetime(d.year, d.month, d.day, tzinfo=JST)
        return [midnight + SLOT * (self.first_slot + k) for k in range(self.slots)]


@dataclass(frozen=True)
class BaselineParams:
    """How to compute a baseline; every field is named in the settlement's output."""

    method: str = "high-x-of-y"
    adjustment: str | None = "5h-2h"  # None: no same-day adjustment
    adjustment_cap_pct: float | None = None  # |adjustment| ≤ this % of the window's baseline
    low_day_pct: float = 25.0
    lookback_days: int = 30

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise BaselineError(f"baseline method {self.method!r} is not one of {METHODS}")
        if self.adjustment is not None and self.adjustment not in ADJUSTMENT_WINDOWS:
            raise BaselineError(
                f"same-day adjustment {self.adjustment!r} is not one of "
                f"{tuple(ADJUSTMENT_WINDOWS)} (or none)"
            )
        if self.adjustment_cap_pct is not None and not self.adjustment_cap_pct >= 0:
            raise BaselineError(f"adjustment cap must be >= 0 %, got {self.adjustment_cap_pct}")
        if not 0 <= self.low_day_pct < 100:
            raise BaselineError(f"low-day share must be in [0, 100) %, got {self.low_day_pct}")
        if self.lookback_days < 1:
            raise BaselineError(f"lookback must be >= 1 day, got {self.lookback_days}")

    @classmethod
    def for_contract(cls, name: str, **overrides: Any) -> BaselineParams:
        """The parameters of a contract's baseline method (registry names)."""
        try:
            method, adjustment = CONTRACT_METHODS[name]
        except KeyError:
            raise BaselineError(
                f"contract baseline method {name!r} cannot be settled from route A data; "
                f"settled methods: {', '.join(CONTRACT_METHODS)}"
            ) from None
        return cls(**{"method": method, "adjustment": adjustment, **overrides})


@dataclass(frozen=True)
class Baseline:
    """The baseline of every customer on the event day.

    ``kwh`` (customers, 48): the (adjusted) baseline per slot, NaN outside the slots
    computed (``span``: all 48 unless ``whole_day=False``); ``at(slots)`` gives some slots
    without building the whole day; ``unadjusted_kwh`` before the same-day adjustment;
    ``adjustment_kwh`` (customers,) the kWh per slot added; ``days_used`` (customers,
    picked) the day indices averaged (-1: none); ``flags`` one boolean column per name of
    :data:`FLAGS`.  ``name`` says the method as applied, e.g. "high-4-of-5 + same-day
    5h-2h"."""

    name: str
    params: BaselineParams
    span_kwh: FloatArray  # (customers, span[1] - span[0])
    unadjusted_span_kwh: FloatArray
    adjustment_kwh: FloatArray
    days_used: IntArray
    flags: dict[str, BoolArray] = field(default_factory=dict)
    adjustment_slots: tuple[int, int] = (0, 0)  # [first, end) of the event day, empty if none
    methods: tuple[str, ...] = ()  # per customer, where customers follow different methods
    span: tuple[int, int] = (0, SLOTS_PER_DAY)  # [first, end) slots computed
    day_count: int = 1  # days from the event's start day on: slot 48 is 00:00 of the next
    day_names: tuple[str, ...] = ()  # per day of an event crossing midnight, its method

    @property
    def width(self) -> int:
        """Slots from 00:00 of the event's start day to 24:00 of its last day."""
        return SLOTS_PER_DAY * self.day_count

    def method_of(self, customer: int) -> str:
        return self.methods[customer] if self.methods else self.name

    def _full(self, part: FloatArray) -> FloatArray:
        lo, hi = self.span
        if (lo, hi) == (0, self.width):
            return part
        out = np.full((part.shape[0], self.width), np.nan)
        out[:, lo:hi] = part
        return out

    @cached_property
    def kwh(self) -> FloatArray:
        return self._full(self.span_kwh)

    @cached_property
    def unadjusted_kwh(self) -> FloatArray:
        return self._full(self.unadjusted_span_kwh)

    def at(self, slots: slice) -> FloatArray:
        """The (adjusted) baseline of ``slots`` (a slice of the day's 48), from the span."""
        lo, hi = self.span
        if slots.start < lo or slots.stop > hi:
            raise BaselineError(f"slots {slots.start}..{slots.stop - 1} are outside the "
                                f"baseline's computed slots {lo}..{hi - 1}")  # fmt: skip
        return self.span_kwh[:, slots.start - lo : slots.stop - lo]

    def describe(self) -> dict[str, Any]:
        p = self.params
        out: dict[str, Any] = {
            "name": self.name, "method": p.method, "adjustment": p.adjustment or "none",
            "adjustment_cap_pct": p.adjustment_cap_pct, "low_day_pct": p.low_day_pct,
            "lookback_days": p.lookback_days,
            "adjustment_slots": list(self.adjustment_slots),
        }  # fmt: skip
        if self.adjustment_slots[0] < 0:  # only then: unchanged output for other events
            out["adjustment_before_midnight"] = ADJUSTMENT_BEFORE_MIDNIGHT
        if self.day_names:  # only for an event crossing midnight: unchanged output otherwise
            out["per_day"] = list(self.day_names)
        return out


def candidate_days(
    days: Sequence[date], event_day: int, dr_days: Collection[date], lookback_days: int
) -> list[int]:
    """Indices of the past days of the event day's kind (working or not), newest first,
    within the lookback, that are no DR-event day."""
    target = days[event_day]
    kind = day_kind(target)
    out = []
    for j in range(len(days) - 1, -1, -1):
        d = days[j]
        if d >= target or (target - d).days > lookback_days:
            continue
        if d in dr_days or day_kind(d) != kind:
            continue
        out.append(j)
    out.sort(key=lambda j: days[j], reverse=True)
    return out


def adjustment_slots(first_slot: int, adjustment: str | None) -> tuple[int, int]:
    """[first, end) slots of the adjustment window, counted from 00:00 of the event day: 5h-2h
    before a 14:00 start (slot 28) is slots 18..23 (09:00-12:00); before a 01:00 start
    (slot 2) it is (-8, -2), 20:00-23:00 of the day before (slot -1 is 23:30 there, as
    slot 48 is 00:00 of the day after in an event crossing midnight).  (0, 0) for none."""
    if adjustment is None:
        return 0, 0
    opens_h, closes_h = ADJUSTMENT_WINDOWS[adjustment]
    # ERAB guideline, 当日調整: hours before the event's start, across midnight if need be
    return first_slot - 2 * opens_h, first_slot - 2 * closes_h


def window_clock_text(lo: int, hi: int) -> str:
    """Slots counted from 00:00 of the event day as clock times: (-8, -2) is "20:00 to
    23:00 the day before", (-1, 5) "23:30 the day before to 02:30", (18, 24) "09:00 to
    12:00"."""

    def at(slot: int) -> str:
        return f"{slot % SLOTS_PER_DAY // 2:02d}:{slot % 2 * 30:02d}"

    end = "24:00" if hi % SLOTS_PER_DAY == 0 and hi != lo else at(hi)
    if lo >= 0:
        return f"{at(lo)} to {end}"
    return f"{at(lo)} to {end} the day before" if hi <= 0 else f"{at(lo)} the day before to {end}"


def day_run_slots(data: npt.NDArray[Any], day_idx: npt.ArrayLike, lo: int, hi: int) -> FloatArray:
    """Slots ``lo .. hi - 1`` of each day in ``day_idx``, counted from that day's 00:00 in the
    layout of an event crossing midnight read backwards: a negative slot lies on the day
    before (-1: 23:30-24:00), as slot 48 is 00:00 of the day after.  ``day_idx`` 1-D: the
    same days for every customer, out (customers, days, hi - lo); 2-D (customers, k): per
    customer.  NaN where the day before is not among the days given."""
    n, n_days, _ = data.shape
    idx = np.asarray(day_idx, dtype=np.int64)

    def take(days: IntArray, a: int, b: int) -> npt.NDArray[Any]:
        if idx.ndim == 1:
            return np.asarray(data[:, days, a:b])
        # whole rows of the (customers × days, 48) view: np.take copies them fastest
        rows = (np.arange(n, dtype=np.int64)[:, None] * n_days + days).ravel()
        whole = np.take(data.reshape(n * n_days, SLOTS_PER_DAY), rows, axis=0)
        return np.asarray(whole.reshape(*days.shape, SLOTS_PER_DAY)[..., a:b])

    if lo >= 0:  # within the day
        return take(idx, lo, hi)
    before = take(np.maximum(idx - 1, 0), SLOTS_PER_DAY + lo, SLOTS_PER_DAY + min(hi, 0))
    before = before.astype(np.float64)
    before[np.broadcast_to(idx == 0, before.shape[:2])] = np.nan  # no day before the first
    if hi <= 0:
        return before
    return np.concatenate([before, take(idx, 0, hi)], axis=2)


def compute_baseline(
    consumption_kwh: npt.ArrayLike,
    days: Sequence[date],
    window: EventWindow,
    *,
    params: BaselineParams | None = None,
    dr_days: Collection[date] = (),
    plan_kwh: npt.ArrayLike | None = None,
    whole_day: bool = True,
) -> Baseline:
    """The baseline of every customer for the event in ``window``.

    With ``whole_day=False`` only the slots the settlement needs (from the adjustment
    window's start to the event's end) are computed, the others left NaN: a third of the
    work for a fleet settled without its day curve.

    ``consumption_kwh`` (customers, days, 48) in kWh per slot, NaN for missing readings;
    ``days`` the calendar date of each day on its axis, the event day among them;
    ``dr_days`` the dates of DR events (never baseline days); ``plan_kwh`` (customers, 48)
    the submitted plan for the ``plan`` method (customers, 48 × the days the event touches).

    An event crossing midnight is baselined day by day (docs/settlement.md): each calendar
    day's part of the window as an event on that day (that day's kind, its own past days,
    High X of Y ranked over that part), and one same-day adjustment, from the window before
    the start, added to every slot.  The arrays then run on past slot 47 into the next day.
    """
    p = params or BaselineParams()
    data = np.asarray(consumption_kwh)
    if data.ndim != 3 or data.shape[2] != SLOTS_PER_DAY:
        raise BaselineError(
            f"consumption must have shape (customers, days, {SLOTS_PER_DAY}), got {data.shape}"
        )
    n_days = data.shape[1]
    if len(days) != n_days:
        raise BaselineError(f"{len(days)} dates for {n_days} days of consumption")
    if window.day < 0 or window.day + window.day_count > n_days:
        raise BaselineError(f"event days {window.day}..{window.day + window.day_count - 1} "
                            f"are outside the {n_days} days given")  # fmt: skip
    if window.crosses_midnight:
        return _across_midnight(data, days, window, p, dr_days, plan_kwh, whole_day)
    return _one_day(data, days, window, p, dr_days, plan_kwh, whole_day)


def _one_day(
    data: npt.NDArray[Any],
    days: Sequence[date],
    window: EventWindow,
    p: BaselineParams,
    dr_days: Collection[date],
    plan_kwh: npt.ArrayLike | None,
    whole_day: bool,
) -> Baseline:
    n, n_days, _ = data.shape
    ev = slice(window.first_slot, window.first_slot + window.slots)
    flags = {name: np.zeros(n, dtype=np.bool_) for name in FLAGS}

    if p.method == "plan":
        if plan_kwh is None:
            raise BaselineError("the plan method needs the submitted plan (plan_kwh)")
        plan = np.asarray(plan_kwh, dtype=np.float64)
        if plan.shape != (n, SLOTS_PER_DAY):
            raise BaselineError(f"plan must have shape ({n}, {SLOTS_PER_DAY}), got {plan.shape}")
        flags["no_baseline"] = np.asarray(np.isnan(plan[:, ev]).any(axis=1), dtype=np.bool_)
        return Baseline("plan", p, plan.copy(), plan.copy(), np.zeros(n),
                        np.full((n, 0), -1, dtype=np.int64), flags)  # fmt: skip

    kind = day_kind(days[window.day])
    pool, pick = HIGH_X_OF_Y[kind]
    if p.method == "average-of-y":
        pick = pool
    name = f"high-{pick}-of-{pool}" if pick < pool else f"average-of-{pool}"
    adj_lo, adj_hi = adjustment_slots(window.first_slot, p.adjustment)
    # a window reaching before 00:00 reads each day's evening before: its baseline is
    # gathered from the chosen days apart from the day's span
    before_midnight = adj_lo < 0

    cand = np.asarray(candidate_days(days, window.day, set(dr_days), p.lookback_days),
                      dtype=np.int64)  # fmt: skip
    c = len(cand)
    # only the slots the choice needs are copied for every candidate day (newest first);
    # whole days are gathered for the chosen ones only
    event_slots = data[:, cand, ev]  # (n, c, event slots)
    # a past day lacking any slot the baseline needs is not a baseline day for that customer
    complete = ~np.isnan(event_slots).any(axis=2)
    if adj_hi > adj_lo:
        complete &= ~np.isnan(day_run_slots(data, cand, adj_lo, adj_hi)).any(axis=2)
    # an incomplete day's NaN sum is masked right here
    window_avg = np.where(complete, event_slots.sum(axis=2, dtype=np.float64) / window.slots, 0.0)

    # ERAB guideline: days whose event-window average is below 25 % of the 5-day average
    # are dropped (the reference: the 5 most recent complete days)
    first = complete & (np.cumsum(complete, axis=1) <= pool)
    counted = first.sum(axis=1)
    ref = (window_avg * first).sum(axis=1) / np.maximum(counted, 1)
    low = complete & (ref[:, None] > 0) & (window_avg < (p.low_day_pct / 100.0) * ref[:, None])
    eligible = complete & ~low
    in_pool = eligible & (np.cumsum(eligible, axis=1) <= pool)
    pooled = in_pool.sum(axis=1)

    # the `pick` highest event-window days of the pool; a stable sort keeps ties newest first
    score = np.where(in_pool, window_avg, -np.inf)
    order = np.argsort(-score, axis=1, kind="stable")[:, :pick]
    taken = np.take_along_axis(in_pool, order, axis=1)
    days_used = np.where(taken, cand[order], -1) if c else np.full((n, 0), -1, dtype=np.int64)
    in_day_adj = adj_hi > adj_lo and not before_midnight
    lo = 0 if whole_day else min(adj_lo if in_day_adj else ev.start, ev.start)
    hi = SLOTS_PER_DAY if whole_day else ev.stop
    if c:
        # the chosen days' slots lo..hi: rows of the (customers × days, 48) view
        # (whole rows: np.take copies them fastest; the slots lo..hi are a view of that copy)
        rows = (np.arange(n, dtype=np.int64)[:, None] * n_days + cand[order]).ravel()
        chosen = np.take(data.reshape(n * n_days, SLOTS_PER_DAY), rows, axis=0)
        chosen = chosen.reshape(n, order.shape[1], SLOTS_PER_DAY)[:, :, lo:hi]
        gap = np.isnan(chosen)
        if not taken.all():
            gap |= ~taken[:, :, None]  # a pick the pool could not fill
    else:
        chosen = np.zeros((n, 0, hi - lo))
        gap = np.zeros(chosen.shape, dtype=np.bool_)
    # each slot's mean over the chosen days that have it (a gap outside the needed slots
    # leaves that day out of that slot only, never counts as 0); `chosen` is our own copy
    counts = chosen.shape[1] - gap.sum(axis=1, dtype=np.int8)
    np.copyto(chosen, 0.0, where=gap)
    part = chosen.sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        part /= counts  # 0 / 0: no day has that slot, NaN
    unadjusted = part  # slots lo..hi of the day
    flags["short_history"] = (pooled > 0) & (pooled < pick)
    flags["no_baseline"] = pooled == 0
    unadjusted[flags["no_baseline"]] = np.nan
    ev_part = slice(ev.start - lo, ev.stop - lo)

    adjustment = np.zeros(n, dtype=np.float64)
    if p.adjustment is not None:
        # cut only where the day before the event is not given
        flags["adjustment_truncated"][:] = window.day * SLOTS_PER_DAY + adj_lo < 0
        if adj_hi > adj_lo:
            if before_midnight:
                actual = day_run_slots(data, [window.day], adj_lo, adj_hi)[:, 0]
                picked = cand[order] if c else np.zeros((n, 0), dtype=np.int64)
                window_base = _mean_of_days(day_run_slots(data, picked, adj_lo, adj_hi), taken)
                window_base[flags["no_baseline"]] = np.nan
            else:
                actual = np.asarray(data[:, window.day, adj_lo:adj_hi], dtype=np.float64)
                window_base = unadjusted[:, adj_lo - lo : adj_hi - lo]
            diff = actual - window_base
            have = ~np.isnan(diff)
            counts = have.sum(axis=1)
            adjustment = np.where(have, diff, 0.0).sum(axis=1) / np.maximum(counts, 1)
            flags["no_adjustment"] = (counts == 0) & ~flags["no_baseline"]
            if p.adjustment_cap_pct is not None:
                ref_kwh = np.abs(unadjusted[:, ev_part].mean(axis=1))
                cap = (p.adjustment_cap_pct / 100.0) * ref_kwh
                capped = np.abs(adjustment) > cap
                adjustment = np.clip(adjustment, -cap, cap)
                flags["adjustment_capped"] = capped & ~flags["no_baseline"]
            adjustment = np.where(flags["no_baseline"], 0.0, adjustment)
        else:
            flags["no_adjustment"][:] = True
        name += f" + same-day {p.adjustment}"
    adjusted = unadjusted + adjustment[:, None]
    return Baseline(name, p, adjusted, unadjusted, adjustment, days_used, flags,
                    (adj_lo, adj_hi), (), (lo, hi))  # fmt: skip


def _mean_of_days(values: FloatArray, taken: BoolArray) -> FloatArray:
    """Each slot's mean over the days (axis 1) taken that have it: (customers, slots)."""
    gap = np.isnan(values) | ~taken[:, :, None]
    counts = values.shape[1] - gap.sum(axis=1)
    total = np.where(gap, 0.0, values).sum(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(total / counts)  # 0 / 0: no day has that slot, NaN


def _across_midnight(
    data: npt.NDArray[Any],
    days: Sequence[date],
    window: EventWindow,
    p: BaselineParams,
    dr_days: Collection[date],
    plan_kwh: npt.ArrayLike | None,
    whole_day: bool,
) -> Baseline:
    """Each calendar day's part of the window baselined as an event of that day; the
    same-day adjustment is the start day's (its window lies before the start), capped
    against the whole event's unadjusted baseline."""
    n = data.shape[0]
    segments = window.by_day()
    plan = None
    if p.method == "plan":
        if plan_kwh is None:
            raise BaselineError("the plan method needs the submitted plan (plan_kwh)")
        plan = np.asarray(plan_kwh, dtype=np.float64)
        if plan.shape != (n, SLOTS_PER_DAY * window.day_count):
            raise BaselineError(f"plan of an event over {window.day_count} days must have shape "
                                f"({n}, {SLOTS_PER_DAY * window.day_count}), got "
                                f"{plan.shape}")  # fmt: skip
    parts = []
    for j, seg in enumerate(segments):
        # the adjustment is measured once, before the start: on the start day's part only
        sp = replace(p, adjustment_cap_pct=None) if j == 0 else replace(p, adjustment=None)
        sub_plan = None if plan is None else plan[:, j * SLOTS_PER_DAY : (j + 1) * SLOTS_PER_DAY]
        parts.append(_one_day(data, days, seg, sp, dr_days, sub_plan, whole_day))
    first = parts[0]
    lo = first.span[0]
    hi = SLOTS_PER_DAY * (len(parts) - 1) + parts[-1].span[1]
    unadjusted = np.concatenate([b.unadjusted_span_kwh for b in parts], axis=1)
    flags = {name: np.zeros(n, dtype=np.bool_) for name in FLAGS}
    for b in parts:
        flags["short_history"] |= b.flags["short_history"]
        flags["no_baseline"] |= b.flags["no_baseline"]
    flags["adjustment_truncated"] = first.flags["adjustment_truncated"].copy()
    flags["no_adjustment"] = first.flags["no_adjustment"] & ~flags["no_baseline"]
    adjustment = first.adjustment_kwh.copy()
    if p.adjustment is not None and p.adjustment_cap_pct is not None:
        ev = slice(window.first_slot - lo, window.first_slot + window.slots - lo)
        cap = (p.adjustment_cap_pct / 100.0) * np.abs(unadjusted[:, ev].mean(axis=1))
        flags["adjustment_capped"] = (np.abs(adjustment) > cap) & ~flags["no_baseline"]
        adjustment = np.clip(adjustment, -cap, cap)
    adjustment = np.where(flags["no_baseline"], 0.0, adjustment)
    if p.method != "plan":  # a plan is taken as given, never adjusted
        unadjusted[flags["no_baseline"]] = np.nan
    adjusted = unadjusted + adjustment[:, None]
    names = tuple(f"{days[seg.day].isoformat()}: {b.name.split(' + ')[0]}"
                  for seg, b in zip(segments, parts, strict=True))  # fmt: skip
    base_names = list(dict.fromkeys(b.name.split(" + ")[0] for b in parts))
    name = " then ".join(base_names)
    if p.method != "plan" and p.adjustment is not None:
        name += f" + same-day {p.adjustment}"
    used = np.concatenate([b.days_used for b in parts], axis=1)
    return Baseline(name, p, adjusted, unadjusted, adjustment, used, flags,
                    first.adjustment_slots, (), (lo, hi), window.day_count, names)  # fmt: skip


def merge_baselines(parts: Sequence[tuple[npt.ArrayLike, Baseline]], n: int) -> Baseline:
    """One :class:`Baseline` of ``n`` customers from baselines of groups of them
    (``(customer indices, baseline)``), e.g. customers whose contracts name different
    methods; :meth:`Baseline.method_of` gives each customer's."""
    if not parts:
        raise BaselineError("no baselines to merge")
    if len(parts) == 1 and len(np.asarray(parts[0][0])) == n:
        return parts[0][1]
    width = max(b.days_used.shape[1] for _, b in parts)
    day_count = max(b.day_count for _, b in parts)
    spans = {b.span for _, b in parts}
    span = spans.pop() if len(spans) == 1 else (0, SLOTS_PER_DAY * day_count)
    kwh = np.full((n, span[1] - span[0]), np.nan)
    unadjusted = np.full((n, span[1] - span[0]), np.nan)
    adjustment = np.zeros(n)
    used = np.full((n, width), -1, dtype=np.int64)
    flags = {name: np.zeros(n, dtype=np.bool_) for name in FLAGS}
    methods = [""] * n
    for idx, b in parts:
        ix = np.asarray(idx, dtype=np.int64)
        if b.span == span:
            kwh[ix], unadjusted[ix] = b.span_kwh, b.unadjusted_span_kwh
        else:
            kwh[ix], unadjusted[ix] = b.kwh, b.unadjusted_kwh
        adjustment[ix] = b.adjustment_kwh
        used[ix, : b.days_used.shape[1]] = b.days_used
        for name in FLAGS:
            flags[name][ix] = b.flags[name]
        for i in ix.tolist():
            methods[i] = b.name
    names = sorted({b.name for _, b in parts})
    first = parts[0][1]
    day_names = tuple(dict.fromkeys(d for _, b in parts for d in b.day_names))
    return Baseline("; ".join(names), first.params, kwh, unadjusted, adjustment, used, flags,
                    first.adjustment_slots, tuple(methods), span, day_count,
                    day_names)  # fmt: skip
