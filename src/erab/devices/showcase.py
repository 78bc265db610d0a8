"""Refrigerated and frozen showcases of a retail store (0x03CE commercial showcase).

Each showcase is its contents and cabinet as one thermal node (heat capacity ``C``, J/K)
that warms towards the sales floor through its air curtain and walls (``UA``, W/K):
``C dT/dt = UA (T_floor − T) + Q_defrost − Q``.  The refrigeration unit is an ideal
thermostat with a capacity limit, like the air conditioners: it removes what holds the
contents at the target (0xEF), solved exactly over each step, so 30-minute history steps
stay stable.  Electric power = Q / COP + fans + case lighting (while the store is open) +
the defrost heater (while defrosting).  The COP is a fraction of the Carnot COP between the
evaporator (10 K below the contents) and the condenser (10 K above outdoors: condensing
units stand outside), so a frozen case costs about twice a chilled one per watt of heat and
every case costs more on a hot afternoon.

Flexibility is the physics of the contents:

- a higher target (0xEF) or a pause (:meth:`ShowcaseFleet.pause`) lets the contents warm
  at ``UA·ΔT / C`` K/s; the compressor stays off while they are below the target;
- the contents may never pass their safe limit (``max_temp_c``: 10 °C for chilled food, the
  Japanese Food Sanitation Act's standard for refrigerated storage; −15 °C for frozen food):
  a target above it is held at the limit, and a paused case lets its contents warm up to
  the limit and then cools just enough to hold them there, so no Set or pause spoils food;
- a defrost (heater on, compressor off, every ``defrost_period_s``) can be moved earlier
  or later (:meth:`ShowcaseFleet.shift_defrost`), e.g. out of a demand-response window.
  :meth:`ShowcaseFleet.hold_time_s` says how long each case can stay off from now.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import BoolArray, FloatArray, per_unit

# EPC 0xB0 operation mode (Appendix 0x03CE)
SHOWCASE_COOLING = 0x41

_KELVIN = 273.15
CHILLED_MAX_C = 10.0
"""Refrigerated food is kept at 10 °C or below (Food Sanitation Act standards)."""
FROZEN_MAX_C = -15.0
"""Frozen food is kept at −15 °C or below (Food Sanitation Act standards)."""


def refrigeration_cop(
    contents_c: FloatArray, outdoor_c: FloatArray, carnot_fraction: float
) -> FloatArray:
    """COP of a condensing unit: a fraction of Carnot, evaporating 10 K below the
    contents and condensing 10 K above the outdoor air."""
    t_evap = contents_c - 10.0 + _KELVIN
    t_cond = np.maximum(outdoor_c, 10.0) + 10.0 + _KELVIN  # head pressure held in winter
    lift = np.maximum(t_cond - t_evap, 10.0)
    return np.asarray(np.clip(carnot_fraction * t_evap / lift, 0.8, 6.0), dtype=np.float64)


class ShowcaseFleet:
    """``n`` showcases. Arrays: ``rated_w`` (refrigeration capacity as electric input,
    0xE4), ``target_temp_c`` (0xEF), ``inside_temp_c`` (contents, 0xE3), ``max_temp_c``
    (safe limit), ``lighting_on`` (0xE0), ``heater_on`` (defrost heater, 0xE7),
    ``paused_until_s`` (POSIX s; compressor held off before it unless unsafe),
    ``power_w``, ``energy_wh``, ``heat_leak_w`` (heat taken from the sales floor)."""

    def __init__(
        self,
        n: int,
        *,
        ua_w_per_k: float | npt.ArrayLike = 75.0,
        heat_capacity_j_per_k: float | npt.ArrayLike = 1.2e6,
        cooling_capacity_w: float | npt.ArrayLike = 3000.0,
        target_temp_c: float | npt.ArrayLike = 4.0,
        max_temp_c: float | npt.ArrayLike = CHILLED_MAX_C,
        fan_w: float | npt.ArrayLike = 60.0,
        lighting_w: float | npt.ArrayLike = 60.0,
        defrost_w: float | npt.ArrayLike = 0.0,
        defrost_period_s: float | npt.ArrayLike = 21_600.0,
        defrost_duration_s: float | npt.ArrayLike = 1200.0,
        carnot_fraction: float = 0.35,
    ) -> None:
        self.n = n
        self.ua_w_per_k = per_unit(ua_w_per_k, n)
        self.heat_capacity_j_per_k = per_unit(heat_capacity_j_per_k, n)
        self.cooling_capacity_w = per_unit(cooling_capacity_w, n)
        self.target_temp_c = per_unit(target_temp_c, n)
        self.max_temp_c = per_unit(max_temp_c, n)
        self.fan_w = per_unit(fan_w, n)
        self.lighting_w = per_unit(lighting_w, n)
        self.defrost_w = per_unit(defrost_w, n)
        self.defrost_period_s = per_unit(defrost_period_s, n)
        self.defrost_duration_s = per_unit(defrost_duration_s, n)
        self.carnot_fraction = carnot_fraction
        # Nameplate electric input at a 32 °C day, for EPC 0xE4.
        self.rated_w = (
            self.cooling_capacity_w
            / refrigeration_cop(self.target_temp_c, np.full(n, 32.0), carnot_fraction)
            + self.fan_w
        )
        self.inside_temp_c = self.target_temp_c.copy()
        self.lighting_on: BoolArray = np.ones(n, dtype=np.bool_)
        self.heater_on: BoolArray = np.zeros(n, dtype=np.bool_)
        # Stagger defrost cycles across showcases (30 minutes apart).
        self.defrost_offset_s = np.arange(n, dtype=np.float64) * 1800.0 % self.defrost_period_s
        self.paused_until_s = np.full(n, -np.inf)
        self.power_w = np.zeros(n)
        self.heat_leak_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def defrosting(self, time_s: float) -> BoolArray:
        """Whether each case is in its defrost at POSIX second ``time_s``."""
        phase = (time_s + self.defrost_offset_s) % self.defrost_period_s
        return np.asarray(phase < self.defrost_duration_s)

    def shift_defrost(self, index: int | list[int], seconds: float) -> None:
        """Move the defrost schedule of case(s) ``index`` later by ``seconds`` (earlier if
        negative); the cycle length stays the same."""
        idx = np.atleast_1d(np.asarray(index, dtype=np.int64))
        self.defrost_offset_s[idx] = (self.defrost_offset_s[idx] - seconds) % (
            self.defrost_period_s[idx]
        )

    def pause(self, index: int | list[int], until_s: float) -> None:
        """Hold the compressor(s) off until POSIX second ``until_s`` while the contents
        stay below their safe limit (a demand-response curtailment)."""
        self.paused_until_s[np.atleast_1d(np.asarray(index, dtype=np.int64))] = until_s

    def hold_time_s(self, floor_temp_c: FloatArray | float) -> FloatArray:
        """How long each case's contents can go without cooling from their present
        temperature before reaching the safe limit (s; exact 1R1C warming)."""
        floor = np.broadcast_to(np.asarray(floor_temp_c, dtype=np.float64), (self.n,))
        tau = self.heat_capacity_j_per_k / self.ua_w_per_k
        gap_now = floor - self.inside_temp_c
        gap_limit = floor - self.max_temp_c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = tau * np.log(gap_now / gap_limit)
        return np.asarray(
            np.where(self.inside_temp_c >= self.max_temp_c, 0.0, np.where(gap_limit > 0, t, np.inf))
        )

    def step(
        self,
        dt_s: float,
        time_s: float,
        floor_temp_c: FloatArray | float,
        store_open: BoolArray,
        outdoor_temp_c: FloatArray | float = 25.0,
    ) -> FloatArray:
        """Advance ``dt_s`` seconds ending at ``time_s``; returns electric power (W)."""
        if dt_s <= 0:
            return self.power_w
        floor = np.broadcast_to(np.asarray(floor_temp_c, dtype=np.float64), (self.n,))
        outdoor = np.broadcast_to(np.asarray(outdoor_temp_c, dtype=np.float64), (self.n,))
        mid = time_s - dt_s / 2.0
        self.heater_on = self.defrosting(mid)
        self.lighting_on = np.asarray(store_open, dtype=np.bool_)
        ua = self.ua_w_per_k
        t = self.inside_temp_c
        decay = np.exp(-dt_s * ua / self.heat_capacity_j_per_k)
        # A third of the defrost heater's heat ends up in the contents and cabinet.
        gains = np.where(self.heater_on, 0.33 * self.defrost_w, 0.0)
        # A paused case lets its contents warm up to the safe limit and holds them there.
        paused = mid < self.paused_until_s
        target = np.where(paused, self.max_temp_c, np.minimum(self.target_temp_c, self.max_temp_c))
        t_eq_needed = (target - decay * t) / (1.0 - decay)
        needed = ua * (floor - t_eq_needed) + gains
        q = np.clip(needed, 0.0, self.cooling_capacity_w)
        q = np.where(self.heater_on, 0.0, q)
        paused = paused & (q == 0.0)  # fans stop only while the compressor is off
        t_eq = floor + (gains - q) / ua
        self.inside_temp_c = t_eq + (t - t_eq) * decay
        mean_t = 0.5 * (t + self.inside_temp_c)
        cop = refrigeration_cop(mean_t, outdoor, self.carnot_fraction)
        power = (
            q / cop
            + np.where(paused, 0.0, self.fan_w)
            + np.where(self.lighting_on, self.lighting_w, 0.0)
            + np.where(self.heater_on, self.defrost_w, 0.0)
        )
        # What leaks into the case is heat the sales floor loses (the "cold aisle").
        self.heat_leak_w = ua * (floor - mean_t)
        self.power_w = power
        self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power
