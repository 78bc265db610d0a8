"""Flexibility: the kW each resource, and the fleet, can shed (down) or add (up) and hold.

A kW of flexibility is a change against the resource's baseline (what it would do
untouched) that it can *hold* for a given duration without breaking a limit:

- batteries: from SOC, rating, reserve and maximum, energy-limited (kW × hours ≤ usable
  kWh); the baseline is the power now, continued until the SOC reaches a limit; a battery
  whose site may not export (``FleetState.export_allowed`` False, the usual Japanese
  contract) discharges at most what its site imports without it (:func:`site_import_kw`:
  the site's meter, or its other resources where they export), so down it offers at most
  its charging power plus its share of that import;
- air conditioners: from the site's thermal model and the comfort band (a room held now
  must not leave the band before the hold ends); the baseline is the power now, or the power
  that holds the room under a forecast outdoor temperature;
- water heaters and EVs: shiftable energy ``shiftable_kwh`` due by ``deadline_s``; the
  baseline runs at the power now until that energy is in; down delays it (only if the rest
  still fits before the deadline at the rated power), up brings it forward;
- PV: down nothing, up its generation (curtailing it raises the site's demand).

Offline and unavailable resources, and readings not yet heard, give 0.

:func:`flexibility` forecasts this in slots (30 minutes over 24 h by default);
:func:`flexibility_for_window` gives the kW each resource holds over a whole event window
(what the merit order dispatches); :func:`slot_limits` gives the per-slot bounds and the
energy caps that couple slots (what the LP dispatches).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from erab.aggregator.state import FleetState, ResourceKind
from erab.aggregator.thermal import (
    ThermalModel,
    comfort_margin_k,
    max_held_kw,
    rebound_share,
)
from erab.clock import JST

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

AC_ON_KW = 0.05
"""An air conditioner drawing less than this is off (standby) and offers nothing."""


class Direction(Enum):
    """Down reduces the fleet's demand (the usual DR); up raises it (absorb PV surplus)."""

    DOWN = "down"
    UP = "up"


@dataclass(frozen=True)
class Forecast:
    """What the state cannot say about the future, per slot from ``start_s``.

    ``outdoor_temp_c`` is ``(slots,)`` for the region; ``pv_output_kw`` is ``(resources,
    slots)``, generation ≥ 0 (only PV rows are read).  A time before or after the covered
    slots uses the first or last slot.
    """

    start_s: float
    slot_s: float
    outdoor_temp_c: FloatArray | None = None
    pv_output_kw: FloatArray | None = None

    def __post_init__(self) -> None:
        if not self.slot_s > 0:
            raise ValueError(f"Forecast.slot_s must be positive, got {self.slot_s}")

    def slot_of(self, time_s: FloatArray, slots: int) -> npt.NDArray[np.int64]:
        index = np.floor((np.asarray(time_s) - self.start_s) / self.slot_s).astype(np.int64)
        return np.clip(index, 0, slots - 1)


@dataclass(frozen=True)
class FlexParams:
    """How flexibility is computed.

    ``hold_s``: how long each slot's kW must be held (:func:`flexibility`); ``thermal``:
    the per-site thermal models (air conditioners without a valid model offer nothing);
    ``forecast``: outdoor temperature and PV output ahead (None: the values now persist).
    """

    hold_s: float = 3600.0
    thermal: ThermalModel | None = None
    forecast: Forecast | None = None

    def __post_init__(self) -> None:
        if not self.hold_s > 0:
            raise ValueError(f"FlexParams.hold_s must be positive, got {self.hold_s}")


@dataclass(frozen=True)
class Flexibility:
    """kW each resource can shed (``down_kw``) or add (``up_kw``), per slot, held ``hold_s``."""

    slot_start_s: FloatArray
    slot_s: float
    hold_s: float
    down_kw: FloatArray
    """(resources, slots), ≥ 0."""
    up_kw: FloatArray
    """(resources, slots), ≥ 0."""

    @property
    def fleet_down_kw(self) -> FloatArray:
        return np.asarray(self.down_kw.sum(axis=0), dtype=np.float64)

    @property
    def fleet_up_kw(self) -> FloatArray:
        return np.asarray(self.up_kw.sum(axis=0), dtype=np.float64)

    def kw(self, direction: Direction) -> FloatArray:
        return self.down_kw if direction is Direction.DOWN else self.up_kw


@dataclass(frozen=True)
class WindowFlexibility:
    """kW each resource can hold over the whole window ``[start_s, start_s + duration_s)``."""

    start_s: float
    duration_s: float
    down_kw: FloatArray
    up_kw: FloatArray

    def kw(self, direction: Direction) -> FloatArray:
        return self.down_kw if direction is Direction.DOWN else self.up_kw


@dataclass(frozen=True)
class SlotLimits:
    """What the LP needs for one direction over ``slots`` slots from ``start_s``.

    ``kw[i, k]`` bounds resource ``i`` in slot ``k``; ``energy_cap_kwh[i, k]`` bounds its
    energy from the window start to the end of slot ``k`` (inf: no such limit), which is how
    a battery's SOC or a water heater's deadline couples the slots; ``rebound_share[i]`` is
    the share of an air conditioner's curtailed energy that comes back after the window.
    """

    direction: Direction
    start_s: float
    slot_s: float
    kw: FloatArray
    energy_cap_kwh: FloatArray
    rebound_share: FloatArray


def posix_seconds(when: datetime | float) -> float:
    """POSIX seconds of an aware datetime (or a number already in seconds)."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError(f"{when.isoformat()} has no time zone; give an aware datetime")
        return when.timestamp()
    return float(when)


def _nan_to(value: FloatArray, default: float) -> FloatArray:
    return np.asarray(np.where(np.isfinite(value), value, default), dtype=np.float64)


def _elapsed_h(state: FleetState, rows: npt.NDArray[np.int64], times_s: FloatArray) -> FloatArray:
    """Hours from each resource's last reading to each time (0 if never heard or later)."""
    seen = state.last_seen_s[rows][:, None]
    elapsed = np.where(np.isfinite(seen), times_s[None, :] - seen, 0.0)
    return np.asarray(np.maximum(elapsed, 0.0) / 3600.0, dtype=np.float64)


def _usable(state: FleetState, rows: npt.NDArray[np.int64]) -> BoolArray:
    return np.asarray(state.online[rows] & state.available[rows], dtype=np.bool_)


def _battery_baseline(
    state: FleetState, rows: npt.NDArray[np.int64], times_s: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """(soc kWh, baseline kW) at ``times_s`` (rows × times), and the reserve and max kWh."""
    cap = state.capacity_kwh[rows][:, None]
    soc0 = (state.soc_pct[rows] * state.capacity_kwh[rows] / 100.0)[:, None]
    reserve = state.soc_reserve_pct[rows][:, None] * cap / 100.0
    top = state.soc_max_pct[rows][:, None] * cap / 100.0
    rated = state.rated_kw[rows][:, None]
    p = np.clip(_nan_to(state.power_kw[rows], 0.0)[:, None], -rated, rated)
    elapsed_h = _elapsed_h(state, rows, times_s)
    # The baseline keeps the power now until the battery management stops it at a limit.
    lo, hi = np.minimum(soc0, reserve), np.maximum(soc0, top)
    soc = np.clip(soc0 + p * elapsed_h, lo, hi)
    stopped = ((p > 0) & (soc >= hi)) | ((p < 0) & (soc <= lo))
    return soc, np.where(stopped, 0.0, p), reserve, top


def site_import_kw(state: FleetState) -> FloatArray:
    """Per site (``0 … state.sites − 1``), the kW it imports now without its batteries
    (negative: it exports, e.g. PV surplus); NaN where the RA cannot tell.

    From the site's smart meter when heard (``site_meter_kw`` less the batteries' power).
    Without a meter, the sum of its other resources' power as heard counts only where it is
    negative (their PV above their loads): a home's base load is no resource, so a positive
    sum says only that the site imports at least that much, and a cap on it would withhold
    flexibility the site has."""
    sites = state.sites
    power = state.power_kw
    heard = np.isfinite(power)
    battery = state.kind == ResourceKind.BATTERY
    site = state.site

    def total(rows: BoolArray) -> FloatArray:
        summed = np.bincount(site[rows], weights=power[rows], minlength=sites)[:sites]
        return np.asarray(summed, dtype=np.float64)

    batteries_kw = total(heard & battery)
    others_kw = total(heard & ~battery)
    others = np.bincount(site[heard & ~battery], minlength=sites)[:sites]
    meter = state.site_meter_kw
    return np.asarray(
        np.where(np.isfinite(meter), meter - batteries_kw,
                 np.where((others > 0) & (others_kw < 0), others_kw, np.nan)),
        dtype=np.float64,
    )  # fmt: skip


def _battery_export_cap(
    state: FleetState, rows: npt.NDArray[np.int64], p: FloatArray
) -> FloatArray:
    """The most each battery (``rows``, baseline power ``p`` rows × times) can shed where
    its site may not export: down to its share (by rating) of the site's import without
    its batteries, i.e. ``p + share × max(import, 0)``; inf where export is allowed or the
    site's import is unknown."""
    site = state.site[rows]
    rated = state.rated_kw[rows]
    site_rated = np.bincount(site, weights=rated, minlength=state.sites)[site]
    share = np.where(site_rated > 0, rated / np.where(site_rated > 0, site_rated, 1.0), 0.0)
    net = site_import_kw(state)[site]
    capped = np.isfinite(net) & ~state.export_allowed[rows]
    cap = p + (share * np.maximum(_nan_to(net, 0.0), 0.0))[:, None]
    return np.asarray(np.where(capped[:, None], cap, np.inf), dtype=np.float64)


def _battery(
    state: FleetState, rows: npt.NDArray[np.int64], times_s: FloatArray, hold_h: float
) -> tuple[FloatArray, FloatArray]:
    soc, p, reserve, top = _battery_baseline(state, rows, times_s)
    rated = state.rated_kw[rows][:, None]
    down = np.minimum(p + rated, p + (soc - reserve) / hold_h)
    down = np.minimum(down, _battery_export_cap(state, rows, p))
    up = np.minimum(rated - p, (top - soc) / hold_h - p)
    return down, up


def _shiftable_baseline(
    state: FleetState, rows: npt.NDArray[np.int64], times_s: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(energy still due kWh, baseline kW, hours to the deadline) at ``times_s``."""
    energy0 = _nan_to(state.shiftable_kwh[rows], 0.0)[:, None]
    p = np.maximum(_nan_to(state.power_kw[rows], 0.0), 0.0)[:, None]
    elapsed_h = _elapsed_h(state, rows, times_s)
    energy = np.maximum(energy0 - p * elapsed_h, 0.0)
    baseline = np.where(energy > 0, p, 0.0)
    left_h = _nan_to(state.deadline_s[rows], np.inf)[:, None] - times_s[None, :]
    return energy, baseline, left_h / 3600.0


def _shiftable(
    state: FleetState, rows: npt.NDArray[np.int64], times_s: FloatArray, hold_h: float
) -> tuple[FloatArray, FloatArray]:
    energy, p, left_h = _shiftable_baseline(state, rows, times_s)
    rated = state.rated_kw[rows][:, None]
    with np.errstate(invalid="ignore"):
        # What must still go in after the hold has to fit before the deadline at full power.
        slack = np.where(np.isinf(left_h), np.inf, ((left_h - hold_h) * rated - energy) / hold_h)
    down = np.minimum(np.minimum(p, energy / hold_h), p + slack)
    up = np.where(left_h >= hold_h, np.minimum(rated - p, energy / hold_h - p), 0.0)
    return down, up


def _thermal_rows(
    state: FleetState, params: FlexParams, rows: npt.NDArray[np.int64]
) -> ThermalModel | None:
    if params.thermal is None or len(rows) == 0:
        return None
    return params.thermal.for_sites(state.site[rows])


def _outdoor(
    state: FleetState, params: FlexParams, rows: npt.NDArray[np.int64], times_s: FloatArray
) -> FloatArray:
    forecast = params.forecast
    if forecast is not None and forecast.outdoor_temp_c is not None:
        series = np.asarray(forecast.outdoor_temp_c, dtype=np.float64)
        return np.broadcast_to(
            series[forecast.slot_of(times_s, len(series))], (len(rows), len(times_s))
        )
    return np.broadcast_to(state.outdoor_temp_c[rows][:, None], (len(rows), len(times_s)))


def _aircon_baseline_kw(
    state: FleetState,
    params: FlexParams,
    rows: npt.NDArray[np.int64],
    model: ThermalModel,
    times_s: FloatArray,
) -> FloatArray:
    on = (_nan_to(state.power_kw[rows], 0.0) >= AC_ON_KW)[:, None]
    rated = state.rated_kw[rows][:, None]
    now_kw = np.maximum(_nan_to(state.power_kw[rows], 0.0), 0.0)[:, None]
    forecast = params.forecast
    if forecast is not None and forecast.outdoor_temp_c is not None:
        room = state.room_temp_c[rows][:, None]
        outdoor = _outdoor(state, params, rows, times_s)
        a, b, c = (
            np.asarray(v)[:, None] for v in (model.a_per_h, model.b_k_per_kwh, model.c_k_per_h)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            holding_kw = (a * (outdoor - room) + c) / b  # dT/dt = 0 at the room temperature now
        holding = np.clip(_nan_to(holding_kw, 0.0), 0.0, rated)
        holding = np.where(model.valid[:, None], holding, 0.0)
        baseline = np.where(on, holding, 0.0)
    else:
        baseline = np.broadcast_to(np.where(on, now_kw, 0.0), (len(rows), len(times_s)))
    return np.asarray(baseline, dtype=np.float64)


def _aircon(
    state: FleetState,
    params: FlexParams,
    rows: npt.NDArray[np.int64],
    times_s: FloatArray,
    hold_h: float,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(down, up, rebound share) for air conditioners held ``hold_h`` from each time."""
    shape = (len(rows), len(times_s))
    model = _thermal_rows(state, params, rows)
    if model is None:
        return np.zeros(shape), np.zeros(shape), np.zeros(len(rows))
    room = _nan_to(state.room_temp_c[rows], np.nan)
    curtail_k, boost_k = comfort_margin_k(
        model, room, state.comfort_low_c[rows], state.comfort_high_c[rows]
    )
    baseline = _aircon_baseline_kw(state, params, rows, model, times_s)
    rated = state.rated_kw[rows][:, None]
    down = np.minimum(baseline, _nan_to(max_held_kw(model, curtail_k, hold_h), 0.0)[:, None])
    on = baseline > 0  # only boost a unit the customer runs
    boost = _nan_to(max_held_kw(model, boost_k, hold_h), 0.0)[:, None]
    up = np.where(on, np.minimum(rated - baseline, boost), 0.0)
    return down, up, rebound_share(model, hold_h)


def _pv_output(
    state: FleetState, params: FlexParams, rows: npt.NDArray[np.int64], times_s: FloatArray
) -> FloatArray:
    forecast = params.forecast
    if forecast is not None and forecast.pv_output_kw is not None:
        table = np.asarray(forecast.pv_output_kw, dtype=np.float64)
        if table.ndim != 2 or table.shape[0] != len(state):
            raise ValueError(
                f"Forecast.pv_output_kw has shape {table.shape}; expected ({len(state)}, slots)"
            )
        index = forecast.slot_of(times_s, table.shape[1])
        return np.maximum(table[rows][:, index], 0.0)
    generation = np.maximum(-_nan_to(state.power_kw[rows], 0.0), 0.0)
    return np.broadcast_to(generation[:, None], (len(rows), len(times_s)))


def _limits(
    state: FleetState, params: FlexParams, times_s: FloatArray, hold_h: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(down, up) as (resources, times) held ``hold_h`` from each time; AC rebound shares."""
    n = len(state)
    down = np.zeros((n, len(times_s)))
    up = np.zeros((n, len(times_s)))
    rebound = np.zeros(n)
    kind = state.kind
    rows = np.flatnonzero(kind == ResourceKind.BATTERY)
    if len(rows):
        down[rows], up[rows] = _battery(state, rows, times_s, hold_h)
    rows = np.flatnonzero((kind == ResourceKind.WATER_HEATER) | (kind == ResourceKind.EV))
    if len(rows):
        down[rows], up[rows] = _shiftable(state, rows, times_s, hold_h)
    rows = np.flatnonzero(kind == ResourceKind.AIRCON)
    if len(rows):
        down[rows], up[rows], rebound[rows] = _aircon(state, params, rows, times_s, hold_h)
    rows = np.flatnonzero(kind == ResourceKind.PV)
    if len(rows):
        up[rows] = _pv_output(state, params, rows, times_s)
    usable = (state.online & state.available)[:, None]
    # NaN (a reading not yet heard) and negative results both mean "nothing to offer".
    down = np.where(usable & (down > 0), down, 0.0)
    up = np.where(usable & (up > 0), up, 0.0)
    return down, up, rebound


def flexibility(
    state: FleetState,
    params: FlexParams,
    start: datetime | float,
    slots: int = 48,
    slot_s: float = 1800.0,
) -> Flexibility:
    """Per resource and slot, the kW it can shed and add from the slot's start, held ``hold_s``.

    ``start`` is an aware datetime or POSIX seconds; the forecast covers ``slots`` slots of
    ``slot_s`` seconds (48 × 30 min = the next 24 h by default).
    """
    if slots < 1 or not slot_s > 0:
        raise ValueError(f"need slots >= 1 and slot_s > 0, got slots={slots}, slot_s={slot_s}")
    start_s = posix_seconds(start)
    times = start_s + slot_s * np.arange(slots, dtype=np.float64)
    down, up, _ = _limits(state, params, times, params.hold_s / 3600.0)
    return Flexibility(times, float(slot_s), params.hold_s, down, up)


def flexibility_for_window(
    state: FleetState,
    start: datetime | float,
    duration_s: float,
    params: FlexParams | None = None,
) -> WindowFlexibility:
    """The kW each resource can hold from ``start`` for the whole ``duration_s`` (an event)."""
    if not duration_s > 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    start_s = posix_seconds(start)
    down, up, _ = _limits(state, params or FlexParams(), np.array([start_s]), duration_s / 3600.0)
    return WindowFlexibility(start_s, float(duration_s), down[:, 0], up[:, 0])


def slot_limits(
    state: FleetState,
    direction: Direction,
    start: datetime | float,
    slots: int,
    slot_s: float = 1800.0,
    params: FlexParams | None = None,
) -> SlotLimits:
    """Per-slot bounds and slot-coupling energy caps over an event window, for the LP.

    Batteries are bounded by power per slot and by SOC through the energy cap from the
    window start to each slot's end; water heaters and EVs by their baseline (down) or
    headroom (up) per slot and by their deadline or remaining energy over the window; air
    conditioners hold one kW over the whole window (the comfort band must hold to its end)
    and carry a rebound share; PV by its generation per slot.
    """
    if slots < 1 or not slot_s > 0:
        raise ValueError(f"need slots >= 1 and slot_s > 0, got slots={slots}, slot_s={slot_s}")
    params = params or FlexParams()
    start_s = posix_seconds(start)
    slot_h = slot_s / 3600.0
    times = start_s + slot_s * np.arange(slots, dtype=np.float64)
    ends = times + slot_s
    n = len(state)
    down_slot, up_slot, _ = _limits(state, params, times, slot_h)
    kw = down_slot if direction is Direction.DOWN else up_slot
    cap = np.full((n, slots), np.inf)
    rebound = np.zeros(n)
    usable = state.online & state.available
    kind = state.kind

    rows = np.flatnonzero((kind == ResourceKind.BATTERY) & usable)
    if len(rows):
        soc0, _, reserve, top = _battery_baseline(state, rows, np.array([start_s]))
        soc_end, _, _, _ = _battery_baseline(state, rows, ends)
        baseline_kwh = soc_end - soc0  # what the untouched battery stores by each slot's end
        rated = state.rated_kw[rows][:, None]
        _, p = _battery_baseline(state, rows, times)[:2]
        if direction is Direction.DOWN:
            kw[rows] = np.maximum(np.minimum(p + rated, _battery_export_cap(state, rows, p)), 0.0)
            cap[rows] = np.maximum(soc0 - reserve + baseline_kwh, 0.0)
        else:
            kw[rows] = np.maximum(rated - p, 0.0)
            cap[rows] = np.maximum(top - soc0 - baseline_kwh, 0.0)

    rows = np.flatnonzero(
        ((kind == ResourceKind.WATER_HEATER) | (kind == ResourceKind.EV)) & usable
    )
    if len(rows):
        energy, p, left_h = _shiftable_baseline(state, rows, times)
        rated = state.rated_kw[rows][:, None]
        energy0, left0 = energy[:, :1], left_h[:, :1]
        window_h = slots * slot_h
        # Baseline energy per slot: the power now until the energy due is in.
        baseline_kwh = np.minimum(p * slot_h, energy)
        if direction is Direction.DOWN:
            kw[rows] = baseline_kwh / slot_h
            with np.errstate(invalid="ignore"):
                fits = (
                    (left0 - window_h) * rated - energy0 + baseline_kwh.sum(axis=1, keepdims=True)
                )
            total = np.where(np.isinf(left0), np.inf, np.maximum(fits, 0.0))
        else:
            kw[rows] = np.where(
                ends[None, :] <= _nan_to(state.deadline_s[rows], np.inf)[:, None],
                np.maximum(rated - baseline_kwh / slot_h, 0.0),
                0.0,
            )
            total = np.maximum(energy0 - baseline_kwh.sum(axis=1, keepdims=True), 0.0)
        cap[rows, -1] = total[:, 0]

    rows = np.flatnonzero(kind == ResourceKind.AIRCON)
    if len(rows):
        window_h = slots * slot_h
        down_w, up_w, share = _aircon(state, params, rows, times[:1], window_h)
        held = (down_w if direction is Direction.DOWN else up_w)[:, 0]
        kw[rows] = np.where(usable[rows], held, 0.0)[:, None]
        if direction is Direction.DOWN:
            rebound[rows] = np.where(usable[rows], share, 0.0)

    kw = np.where(usable[:, None] & (kw > 0), kw, 0.0)
    return SlotLimits(direction, start_s, float(slot_s), kw, cap, rebound)


def forecast_table(flex: Flexibility, kind: npt.ArrayLike) -> dict[str, Any]:
    """The fleet's and each resource kind's flexibility per slot, as JSON-ready rows:
    ``{"slot_s", "hold_s", "slots": [{"start", "down_kw", "up_kw", "by_kind": {kind:
    {"down_kw", "up_kw"}}}]}`` (slot starts in JST, kW rounded to W)."""
    kinds = np.asarray(kind)
    present = [k for k in ResourceKind if (kinds == k).any()]
    per_kind = {k.name.lower(): (flex.down_kw[kinds == k].sum(axis=0),
                                 flex.up_kw[kinds == k].sum(axis=0)) for k in present}  # fmt: skip
    down, up = flex.fleet_down_kw, flex.fleet_up_kw
    return {
        "slot_s": flex.slot_s, "hold_s": flex.hold_s,
        "slots": [
            {"start": datetime.fromtimestamp(float(t), JST).isoformat(),
             "down_kw": round(float(down[j]), 3), "up_kw": round(float(up[j]), 3),
             "by_kind": {name: {"down_kw": round(float(d[j]), 3), "up_kw": round(float(u[j]), 3)}
                         for name, (d, u) in per_kind.items()}}
            for j, t in enumerate(flex.slot_start_s)
        ],
    }  # fmt: skip
