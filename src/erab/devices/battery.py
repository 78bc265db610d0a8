"""Stationary storage batteries (0x027D) and the energy bookkeeping EVs share with them.

Power is seen from the AC side: positive charges, negative discharges (the sign of EPC
0xD3 "measured instantaneous charging/discharging electric power").  Losses are split
evenly between the two directions: charging ``P`` watts for ``t`` seconds stores
``P·t·η`` and discharging ``P`` watts draws ``P·t/η`` from the cells, with ``η`` the square
root of the round-trip efficiency.  The stored energy never leaves
[lower limit, upper limit] of the capacity.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Operation mode codes, EPC 0xDA (set) and 0xCF (working operation status), Appendix 0x027D.
MODE_RAPID_CHARGING = 0x41
MODE_CHARGING = 0x42
MODE_DISCHARGING = 0x43
MODE_STANDBY = 0x44
MODE_AUTO = 0x46
BATTERY_MODES = frozenset(
    {MODE_RAPID_CHARGING, MODE_CHARGING, MODE_DISCHARGING, MODE_STANDBY, MODE_AUTO}
)


def _array(value: float | npt.ArrayLike, n: int) -> FloatArray:
    out = np.empty(n, dtype=np.float64)
    out[:] = value
    return out


class BatteryFleet:
    """``n`` storage batteries advanced together.

    Modes: charging / rapid charging at the charging power setting (0xEB, capped by the
    rating), discharging at the discharging power setting (0xEC), standby, and auto:
    self-consumption (charge from surplus PV, discharge to cover the site's import).
    Arrays: ``capacity_wh``, ``stored_wh``, ``mode``, ``power_w`` (last step, AC side),
    ``charged_wh`` / ``discharged_wh`` (cumulative, AC side).
    """

    def __init__(
        self,
        n: int,
        *,
        capacity_wh: float | npt.ArrayLike = 9800.0,
        max_charge_w: float | npt.ArrayLike = 3000.0,
        max_discharge_w: float | npt.ArrayLike = 3000.0,
        round_trip_efficiency: float | npt.ArrayLike = 0.9,
        soc_pct: float | npt.ArrayLike = 50.0,
        mode: int | npt.ArrayLike = MODE_AUTO,
        lower_limit_pct: float | npt.ArrayLike = 10.0,
        upper_limit_pct: float | npt.ArrayLike = 100.0,
    ) -> None:
        self.n = n
        self.capacity_wh = _array(capacity_wh, n)
        if np.any(self.capacity_wh <= 0):
            raise ValueError("battery capacity_wh must be > 0")
        self.max_charge_w = _array(max_charge_w, n)
        self.max_discharge_w = _array(max_discharge_w, n)
        rte = _array(round_trip_efficiency, n)
        if np.any((rte <= 0) | (rte > 1)):
            raise ValueError("battery round_trip_efficiency must be in (0, 1]")
        self.efficiency = np.sqrt(rte)
        self.lower_limit_pct = _array(lower_limit_pct, n)
        self.upper_limit_pct = _array(upper_limit_pct, n)
        self.stored_wh = self.capacity_wh * np.clip(_array(soc_pct, n), 0, 100) / 100.0
        self.mode = np.empty(n, dtype=np.int64)
        self.mode[:] = mode
        self.charge_setting_w = self.max_charge_w.copy()
        self.discharge_setting_w = self.max_discharge_w.copy()
        self.power_w = np.zeros(n)
        self.working: npt.NDArray[np.int64] = np.full(n, MODE_STANDBY, dtype=np.int64)
        """What each battery did in the last step (EPC 0xCF code)."""
        self.charged_wh = np.zeros(n)
        self.discharged_wh = np.zeros(n)

    @property
    def soc_pct(self) -> FloatArray:
        """State of charge in percent of capacity (EPC 0xE4)."""
        return np.asarray(100.0 * self.stored_wh / self.capacity_wh, dtype=np.float64)

    def chargeable_wh(self) -> FloatArray:
        """AC energy that can still be charged before the upper limit (EPC 0xA4)."""
        room = self.capacity_wh * self.upper_limit_pct / 100.0 - self.stored_wh
        return np.asarray(np.maximum(room, 0.0) / self.efficiency, dtype=np.float64)

    def dischargeable_wh(self) -> FloatArray:
        """AC energy that can still be discharged before the lower limit (EPC 0xA5)."""
        avail = self.stored_wh - self.capacity_wh * self.lower_limit_pct / 100.0
        return np.asarray(np.maximum(avail, 0.0) * self.efficiency, dtype=np.float64)

    def working_mode(self) -> npt.NDArray[np.int64]:
        """What each battery is really doing (EPC 0xCF): charging, discharging or standby."""
        return np.where(
            self.power_w > 0.5,
            MODE_CHARGING,
            np.where(self.power_w < -0.5, MODE_DISCHARGING, MODE_STANDBY),
        ).astype(np.int64)

    def requested_power_w(self, site_net_w: FloatArray | float = 0.0) -> FloatArray:
        """AC power each battery wants (before energy limits); auto follows ``site_net_w``."""
        net = np.broadcast_to(np.asarray(site_net_w, dtype=np.float64), (self.n,))
        charge = np.minimum(self.charge_setting_w, self.max_charge_w)
        discharge = np.minimum(self.discharge_setting_w, self.max_discharge_w)
        mode = self.mode
        want = np.zeros(self.n)
        want = np.where((mode == MODE_CHARGING) | (mode == MODE_RAPID_CHARGING), charge, want)
        want = np.where(mode == MODE_DISCHARGING, -discharge, want)
        # Self-consumption: absorb export, cover import, within the ratings.
        auto = np.clip(-net, -self.max_discharge_w, self.max_charge_w)
        return np.where(mode == MODE_AUTO, auto, want)

    def step(self, dt_s: float, site_net_w: FloatArray | float = 0.0) -> FloatArray:
        """Advance ``dt_s`` seconds; returns AC power (W, + charging, − discharging).

        ``site_net_w`` is the site's import (+) / export (−) without this battery, which
        auto mode follows.
        """
        if dt_s <= 0:
            return self.power_w
        want = self.requested_power_w(site_net_w)
        hours = dt_s / 3600.0
        max_in = self.chargeable_wh() / hours
        max_out = self.dischargeable_wh() / hours
        power = np.clip(want, -max_out, max_in)
        energy_ac_wh = power * hours
        # ΔE_cells = P·t·η when charging, P·t/η when discharging.
        delta = np.where(power >= 0, energy_ac_wh * self.efficiency, energy_ac_wh / self.efficiency)
        self.stored_wh = np.clip(self.stored_wh + delta, 0.0, self.capacity_wh)
        self.charged_wh = self.charged_wh + np.maximum(energy_ac_wh, 0.0)
        self.discharged_wh = self.discharged_wh + np.maximum(-energy_ac_wh, 0.0)
        self.power_w = power
        self.working = self.working_mode()
        return power
