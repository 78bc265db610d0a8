"""Residential fuel cells (0x027C, "ENE-FARM"): load-following generation without export.

A generating unit follows the home's demand between its minimum and rated output, at a
limited ramp rate; it never exports (Japanese interconnection rules for fuel cells), so
output above the home's demand is cut.  Switching on (0xCA = 0x41) goes through a start-up
period with no output.  Gas use follows the electric efficiency (city gas 13A, 45 MJ/m³).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import FloatArray, per_unit

# EPC 0xCB power generation status (Appendix 0x027C)
STATUS_GENERATING = 0x41
STATUS_STOPPED = 0x42
STATUS_STARTING = 0x43
GAS_MJ_PER_M3 = 45.0


class FuelCellFleet:
    """``n`` fuel cells. Arrays: ``rated_w`` (0xC2), ``status`` (0xCB), ``power_w`` (0xC4),
    ``energy_wh`` (0xC5), ``gas_m3`` (0xC8)."""

    def __init__(
        self,
        n: int,
        *,
        rated_w: float | npt.ArrayLike = 700.0,
        min_w: float | npt.ArrayLike = 200.0,
        ramp_w_per_s: float = 5.0,
        electric_efficiency: float = 0.40,
        startup_s: float = 1800.0,
    ) -> None:
        self.n = n
        self.rated_w = per_unit(rated_w, n)
        self.min_w = per_unit(min_w, n)
        self.ramp_w_per_s = ramp_w_per_s
        self.electric_efficiency = electric_efficiency
        self.startup_s = startup_s
        self.status = np.full(n, STATUS_GENERATING, dtype=np.int64)
        self.starting_left_s = np.zeros(n)
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)
        self.gas_m3 = np.zeros(n)

    def switch(self, index: int, on: bool) -> None:
        """Generation setting (0xCA): on starts up, off stops at once."""
        if on and self.status[index] == STATUS_STOPPED:
            self.status[index] = STATUS_STARTING
            self.starting_left_s[index] = self.startup_s
        elif not on:
            self.status[index] = STATUS_STOPPED
            self.starting_left_s[index] = 0.0

    def gas_m3_per_h(self) -> FloatArray:
        """Gas use now (EPC 0xC7), m³/h."""
        return np.asarray(self.power_w / self.electric_efficiency * 3600.0 / (GAS_MJ_PER_M3 * 1e6))

    def step(self, dt_s: float, site_demand_w: FloatArray) -> FloatArray:
        """Advance ``dt_s``; ``site_demand_w`` is the site's consumption it may cover."""
        if dt_s <= 0:
            return self.power_w
        demand = np.broadcast_to(np.asarray(site_demand_w, dtype=np.float64), (self.n,))
        starting = self.status == STATUS_STARTING
        self.starting_left_s = np.where(starting, self.starting_left_s - dt_s, 0.0)
        done = starting & (self.starting_left_s <= 0)
        self.status = np.where(done, STATUS_GENERATING, self.status)
        generating = self.status == STATUS_GENERATING
        target = np.clip(demand, self.min_w, self.rated_w)
        ramp = self.ramp_w_per_s * dt_s
        ramped = np.clip(target, self.power_w - ramp, self.power_w + ramp)
        # No reverse flow: never more than the site consumes.
        power = np.where(generating, np.minimum(np.maximum(ramped, 0.0), demand), 0.0)
        power = np.maximum(power, 0.0)
        self.power_w = power
        self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        self.gas_m3 = self.gas_m3 + self.gas_m3_per_h() * dt_s / 3600.0
        return power
