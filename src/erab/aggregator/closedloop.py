"""The closed loop: delivered kW against the target, and the correction to make.

During an event the RA compares, every minute, what it delivers with what was asked
(ARCHITECTURE.md: "the RA plans kW per 30-minute slot and corrects every minute from
telemetry").  Delivery is that of the resources the event commanded
(:func:`commanded_delivery`): each one's power now against its own level when it was
commanded, summed, so that the rest of the town (homes' loads, PV, air conditioners nobody
commanded) neither hides a shortfall nor cancels commands that work.  Pure functions; the
service acts on their answer (deeper or lighter setpoints for the resources in force, more
resources from the reserve, or fewer commands in force; :func:`allocate` splits the kW).

Per site, :func:`site_delivery` compares each site's power with its own pre-event baseline
(the mean of its readings in the 15 minutes before the event, :class:`SiteSnapshots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

DEFAULT_TOLERANCE = 0.10  # hold delivery within ±10 % of the target (issue 11)


@dataclass(frozen=True)
class DeliveryCheck:
    """``delivered_kw`` ≥ 0 in the event's direction; ``adjust_kw`` > 0: call this much more,
    < 0: release this much, 0: inside the band."""

    target_kw: float  # signed, as the event: < 0 down, > 0 up
    reference_kw: float  # the commanded resources' level before they were commanded
    now_kw: float
    delivered_kw: float
    adjust_kw: float

    @property
    def ratio(self) -> float:
        return self.delivered_kw / abs(self.target_kw) if self.target_kw else 0.0


def check_delivery(
    target_kw: float, reference_kw: float, now_kw: float, *, tolerance: float = DEFAULT_TOLERANCE
) -> DeliveryCheck:
    """How far the fleet's power ``now_kw`` has moved from ``reference_kw`` in the direction of
    ``target_kw``, and the correction that brings it back to the target when it is outside
    ±``tolerance`` of it."""
    if not target_kw:
        raise ValueError("an event's target must be non-zero")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    want = abs(target_kw)
    delivered = (reference_kw - now_kw) if target_kw < 0 else (now_kw - reference_kw)
    adjust = 0.0
    if abs(delivered - want) > tolerance * want:
        adjust = want - delivered
    return DeliveryCheck(target_kw, reference_kw, now_kw, delivered, adjust)


def commanded_delivery(
    target_kw: float,
    reference_kw: npt.ArrayLike,
    now_kw: npt.ArrayLike,
    planned_kw: npt.ArrayLike,
    settled: npt.ArrayLike,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> DeliveryCheck:
    """What the resources an event commanded deliver together, and the correction.

    Per commanded resource: ``reference_kw`` its power when it was commanded, ``now_kw`` its
    power now, ``planned_kw`` (≥ 0, in the event's direction) what its command in force asks
    of it, ``settled`` whether its telemetry shows that command yet.  A resource not settled
    (its command not yet carried out or not yet measured) or not heard (NaN) counts its
    planned kW, so one check does not correct again for a change already under way."""
    ref = np.nan_to_num(np.asarray(reference_kw, dtype=np.float64))
    now = np.asarray(now_kw, dtype=np.float64)
    planned = np.asarray(planned_kw, dtype=np.float64)
    sign = 1.0 if target_kw < 0 else -1.0  # down: power falls below the reference
    use = np.asarray(settled, dtype=np.bool_) & np.isfinite(now)
    now_kw_ = np.where(use, now, ref - sign * planned)
    return check_delivery(target_kw, float(ref.sum()), float(now_kw_.sum()), tolerance=tolerance)


def allocate(need_kw: float, room_kw: npt.ArrayLike) -> FloatArray:
    """``need_kw`` split over resources in their order, each taking at most its ``room_kw``
    (NaN or negative: none) before the next takes any."""
    room = np.maximum(np.nan_to_num(np.asarray(room_kw, dtype=np.float64)), 0.0)
    before = np.cumsum(room) - room
    return np.asarray(np.clip(max(need_kw, 0.0) - before, 0.0, room), dtype=np.float64)


# --- delivery per site --------------------------------------------------------------------

BASELINE_WINDOW_S = 900.0  # the pre-event baseline: the mean of the last 15 minutes' readings


def site_power_kw(site: npt.NDArray[np.int64], power_kw: FloatArray, sites: int) -> FloatArray:
    """Each site's power (kW, consumption positive): the sum of its resources' power now;
    NaN for a site none of whose resources has been heard."""
    heard = np.isfinite(power_kw)
    total = np.bincount(site[heard], weights=power_kw[heard], minlength=sites)[:sites]
    count = np.bincount(site[heard], minlength=sites)[:sites]
    return np.where(count > 0, total, np.nan)


@dataclass
class SiteSnapshots:
    """The sites' power at past moments, kept ``keep_s``; the pre-event baseline of a site is
    the mean of its snapshots in the ``window_s`` before the event (until the settlement
    baselines of issue 12 take over)."""

    keep_s: float = 3600.0
    times_s: list[float] = field(default_factory=list)
    power_kw: list[FloatArray] = field(default_factory=list)

    def add(self, time_s: float, power_kw: FloatArray) -> None:
        self.times_s.append(time_s)
        self.power_kw.append(np.asarray(power_kw, dtype=np.float64).copy())
        while self.times_s and self.times_s[0] < time_s - self.keep_s:
            self.times_s.pop(0)
            self.power_kw.pop(0)

    def pad_sites(self, sites: int) -> None:
        """Widen every snapshot to ``sites`` sites: one registered since was not heard then
        (NaN)."""
        self.power_kw = [p if len(p) >= sites else np.concatenate([p, np.full(sites - len(p),
                                                                              np.nan)])
                         for p in self.power_kw]  # fmt: skip

    def baseline(self, before_s: float, window_s: float = BASELINE_WINDOW_S) -> FloatArray | None:
        """Per site, the mean of its snapshots in ``[before_s − window_s, before_s]`` (NaN
        where none heard it); None when no snapshot falls there."""
        rows = [p for t, p in zip(self.times_s, self.power_kw, strict=True)
                if before_s - window_s <= t <= before_s]  # fmt: skip
        if not rows:
            return None
        stacked = np.vstack(rows)
        heard = np.isfinite(stacked).sum(axis=0)
        total = np.nansum(stacked, axis=0)
        return np.where(heard > 0, total / np.maximum(heard, 1), np.nan)


@dataclass(frozen=True)
class SiteDelivery:
    """Per site of an event: its baseline, power now, what it delivers (≥ 0 in the event's
    direction) and what its commands asked for."""

    site_ids: tuple[str, ...]
    baseline_kw: FloatArray
    now_kw: FloatArray
    delivered_kw: FloatArray
    commanded_kw: FloatArray

    @property
    def ratio(self) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.commanded_kw > 0, self.delivered_kw / self.commanded_kw, np.nan)

    def rows(self) -> list[dict[str, Any]]:
        def num(x: float) -> float | None:
            return None if not np.isfinite(x) else round(float(x), 3)

        ratio = self.ratio
        return [
            {"site": s, "baseline_kw": num(self.baseline_kw[i]), "now_kw": num(self.now_kw[i]),
             "delivered_kw": num(self.delivered_kw[i]),
             "commanded_kw": num(self.commanded_kw[i]), "ratio": num(ratio[i])}
            for i, s in enumerate(self.site_ids)
        ]  # fmt: skip


def site_delivery(
    target_kw: float,
    site_ids: Sequence[str],
    baseline_kw: FloatArray,
    now_kw: FloatArray,
    commanded_kw: FloatArray,
) -> SiteDelivery:
    """What each site delivers against its own baseline, in the direction of ``target_kw``
    (< 0 down: baseline − now; > 0 up: now − baseline)."""
    if not target_kw:
        raise ValueError("an event's target must be non-zero")
    moved = (baseline_kw - now_kw) if target_kw < 0 else (now_kw - baseline_kw)
    return SiteDelivery(tuple(site_ids), np.asarray(baseline_kw, dtype=np.float64),
                        np.asarray(now_kw, dtype=np.float64), np.asarray(moved, np.float64),
                        np.asarray(commanded_kw, dtype=np.float64))  # fmt: skip


# --- the batteries' limits over what is left of the window -------------------------------

SOC_READING_MARGIN_PCT = 1.0  # EPC 0xE4 reads the SOC in whole per cent (Appendix 0x027D)
CONVERTER_EFFICIENCY = 0.95  # one way, AC ⇄ cells (a 90 % round trip): the cells give
# 1/η kWh per kWh delivered, and store η per kWh drawn


def battery_hold_kw(
    soc_pct: npt.ArrayLike,
    capacity_kwh: npt.ArrayLike,
    reserve_pct: npt.ArrayLike,
    max_pct: npt.ArrayLike,
    hours_left: float,
    *,
    down: bool,
) -> FloatArray:
    """The most kW each battery can discharge (``down``) or charge steadily until the end of
    an event ``hours_left`` away without crossing its reserve (or its maximum): the energy
    from its SOC reading, less the reading's resolution, through the converter's losses.
    NaN where the SOC or a limit is unknown (nothing to guard by)."""
    if not hours_left > 0:
        raise ValueError(f"hours_left must be positive, got {hours_left}")
    soc = np.asarray(soc_pct, dtype=np.float64)
    cap = np.asarray(capacity_kwh, dtype=np.float64)
    if down:
        room_pct = soc - np.asarray(reserve_pct, dtype=np.float64) - SOC_READING_MARGIN_PCT
        ac_kwh = np.maximum(room_pct, 0.0) * cap / 100.0 * CONVERTER_EFFICIENCY
    else:
        room_pct = np.asarray(max_pct, dtype=np.float64) - soc - SOC_READING_MARGIN_PCT
        ac_kwh = np.maximum(room_pct, 0.0) * cap / 100.0 / CONVERTER_EFFICIENCY
    return np.asarray(ac_kwh / hours_left, dtype=np.float64)
