"""Stationary storage batteries (0x027D) and the energy bookkeeping EVs share with them.

Power is seen from the AC side: positive charges, negative discharges (the sign of EPC
0xD3 "measured instantaneous charging/discharging electric power").  Losses are split
evenly between the two directions: charging ``P`` watts for ``t`` seconds stores
``P·t·η`` and discharging ``P`` watts draws ``P·t/η`` from the cells, with ``η`` the square
root of the round-trip efficiency.  The stored energy never leaves
[lower limit, upper limit] of the capacity (EPC 0xA7 / 0xA6; the lower limit is the
reserve kept for a power cut, 10 % by default).

Auto mode is what Japanese home batteries call economy (経済) operation: from 23:00 to
07:00 JST, the cheap night tariff, the battery charges from the grid towards its night
target (spread over the rest of the night) and does not discharge; in the day it runs
for self-consumption, absorbing surplus PV and covering the site's import.

Reverse power flow: under the usual Japanese low-voltage contracts only PV surplus may flow
back to the grid, not energy from storage.  A battery whose site does not allow export
(``export_allowed`` False, the default of every emulated site) discharges at most what the
site would import without it (its load net of PV and other generation), so the meter never
shows export caused by the battery: :func:`discharge_limit_w` is that rule.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import BoolArray, FloatArray, per_unit

# Operation mode codes, EPC 0xDA (set) and 0xCF (working operation status), Appendix 0x027D.
MODE_RAPID_CHARGING = 0x41
MODE_CHARGING = 0x42
MODE_DISCHARGING = 0x43
MODE_STANDBY = 0x44
MODE_AUTO = 0x46
BATTERY_MODES = frozenset(
    {MODE_RAPID_CHARGING, MODE_CHARGING, MODE_DISCHARGING, MODE_STANDBY, MODE_AUTO}
)
NIGHT_START_HOUR = 23.0
NIGHT_END_HOUR = 7.0
"""The night tariff window of Japanese time-of-use plans (JST), when auto mode charges."""


def night_hours_left(local_hour: float) -> float:
    """Hours from ``local_hour`` (JST) to the end of the night window; 0 in the day."""
    if local_hour >= NIGHT_START_HOUR:
        return 24.0 - local_hour + NIGHT_END_HOUR
    if local_hour < NIGHT_END_HOUR:
        return NIGHT_END_HOUR - local_hour
    return 0.0


def discharge_limit_w(
    max_discharge_w: npt.ArrayLike,
    site_net_w: npt.ArrayLike,
    export_allowed: npt.ArrayLike,
) -> FloatArray:
    """Most AC power (W, >= 0) each battery may discharge at its site right now.

    ``max_discharge_w`` is what the battery could give (its rating, or less); ``site_net_w``
    the site's import (+) / export (-) without the battery.  Where ``export_allowed`` is
    false, storage must not flow back to the grid (only PV surplus may), so the battery
    gives at most the site's import: nothing while PV already exports, the house's load
    net of PV otherwise.  The flexibility a battery offers by discharging therefore
    depends on its site's load; arrays in, array out, for a fleet or an aggregator."""
    rating = np.maximum(np.asarray(max_discharge_w, dtype=np.float64), 0.0)
    site_import = np.maximum(np.asarray(site_net_w, dtype=np.float64), 0.0)
    allowed = np.asarray(export_allowed, dtype=np.bool_)
    return np.asarray(np.where(allowed, rating, np.minimum(rating, site_import)), dtype=np.float64)


class BatteryFleet:
    """``n`` storage batteries advanced together.

    Modes: charging / rapid charging at the charging power setting (0xEB, capped by the
    rating), discharging at the discharging power setting (0xEC), standby, and auto:
    night charging towards ``night_target_pct`` (NaN: none) and daytime self-consumption
    (charge from surplus PV, discharge to cover the site's import).  A charge or discharge
    amount (0xAA / 0xAB, AC Wh, 0 = no setting) stops charging or discharging once that
    much has flowed since it (or the mode) was set.
    Arrays: ``capacity_wh``, ``stored_wh``, ``mode``, ``power_w`` (last step, AC side),
    ``charged_wh`` / ``discharged_wh`` (cumulative, AC side), ``lower_limit_pct`` /
    ``upper_limit_pct``, ``charge_amount_wh`` / ``discharge_amount_wh``.
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
        night_target_pct: float | npt.ArrayLike = np.nan,
        export_allowed: bool | npt.ArrayLike = True,
    ) -> None:
        self.n = n
        self.capacity_wh = per_unit(capacity_wh, n)
        if np.any(self.capacity_wh <= 0):
            raise ValueError("battery capacity_wh must be > 0")
        self.max_charge_w = per_unit(max_charge_w, n)
        self.max_discharge_w = per_unit(max_discharge_w, n)
        rte = per_unit(round_trip_efficiency, n)
        if np.any((rte <= 0) | (rte > 1)):
            raise ValueError("battery round_trip_efficiency must be in (0, 1]")
        self.efficiency = np.sqrt(rte)
        self.lower_limit_pct = per_unit(lower_limit_pct, n)
        self.upper_limit_pct = per_unit(upper_limit_pct, n)
        self.stored_wh = self.capacity_wh * np.clip(per_unit(soc_pct, n), 0, 100) / 100.0
        self.mode = np.empty(n, dtype=np.int64)
        self.mode[:] = mode
        self.charge_setting_w = self.max_charge_w.copy()
        self.discharge_setting_w = self.max_discharge_w.copy()
        self.power_w = np.zeros(n)
        self.working: npt.NDArray[np.int64] = np.full(n, MODE_STANDBY, dtype=np.int64)
        """What each battery did in the last step (EPC 0xCF code)."""
        self.charged_wh = np.zeros(n)
        self.discharged_wh = np.zeros(n)
        self.night_target_pct = per_unit(night_target_pct, n)
        self.charge_amount_wh = np.zeros(n)  # 0xAA, 0 = no setting
        self.discharge_amount_wh = np.zeros(n)  # 0xAB, 0 = no setting
        self.amount_done_wh = np.zeros(n)
        """AC energy moved since the amount or the mode was last set."""
        self.export_allowed: BoolArray = np.empty(n, dtype=np.bool_)
        self.export_allowed[:] = export_allowed

    @property
    def soc_pct(self) -> FloatArray:
        """State of charge in percent of capacity (EPC 0xE4)."""
        return np.asarray(100.0 * self.stored_wh / self.capacity_wh, dtype=np.float64)

    def span_wh(self) -> FloatArray:
        """Stored energy between the lower and the upper limit (cell side)."""
        span = self.capacity_wh * (self.upper_limit_pct - self.lower_limit_pct) / 100.0
        return np.asarray(np.maximum(span, 0.0), dtype=np.float64)

    def set_limits(
        self, index: int, *, lower_pct: float | None = None, upper_pct: float | None = None
    ) -> None:
        """Set the discharge lower limit (0xA7) and / or charge upper limit (0xA6) of one
        battery; the lower must stay below the upper."""
        lower = self.lower_limit_pct[index] if lower_pct is None else lower_pct
        upper = self.upper_limit_pct[index] if upper_pct is None else upper_pct
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(
                f"battery limits must satisfy 0 <= lower < upper <= 100 %, got lower "
                f"{lower:g} % and upper {upper:g} %"
            )
        self.lower_limit_pct[index] = lower
        self.upper_limit_pct[index] = upper

    def chargeable_wh(self) -> FloatArray:
        """AC energy that can still be charged before the upper limit (EPC 0xA4)."""
        room = self.capacity_wh * self.upper_limit_pct / 100.0 - self.stored_wh
        return np.asarray(np.maximum(room, 0.0) / self.efficiency, dtype=np.float64)

    def dischargeable_wh(self) -> FloatArray:
        """AC energy that can still be discharged before the lower limit (EPC 0xA5)."""
        avail = self.stored_wh - self.capacity_wh * self.lower_limit_pct / 100.0
        return np.asarray(np.maximum(avail, 0.0) * self.efficiency, dtype=np.float64)

    def discharge_limit_w(
        self, site_net_w: FloatArray | float = 0.0, horizon_s: float | None = None
    ) -> FloatArray:
        """Most AC power (W, >= 0) each battery could discharge now at its site, whatever
        its mode: its rating, what its site may take (:func:`discharge_limit_w`: the site's
        import ``site_net_w`` without the battery, where export is not allowed) and, over
        ``horizon_s`` seconds if given, its energy above the reserve (0xA5)."""
        net = np.broadcast_to(np.asarray(site_net_w, dtype=np.float64), (self.n,))
        limit = discharge_limit_w(self.max_discharge_w, net, self.export_allowed)
        if horizon_s is not None and horizon_s > 0:
            limit = np.minimum(limit, self.dischargeable_wh() * 3600.0 / horizon_s)
        return np.asarray(limit, dtype=np.float64)

    def working_mode(self) -> npt.NDArray[np.int64]:
        """What each battery is really doing (EPC 0xCF): charging, discharging or standby."""
        return np.where(
            self.power_w > 0.5,
            MODE_CHARGING,
            np.where(self.power_w < -0.5, MODE_DISCHARGING, MODE_STANDBY),
        ).astype(np.int64)

    def requested_power_w(
        self, site_net_w: FloatArray | float = 0.0, local_hour: float | None = None
    ) -> FloatArray:
        """AC power each battery wants (before energy limits); auto follows ``site_net_w``
        in the day and charges towards its night target at night (``local_hour``, JST;
        None: no night window).  Discharging never exceeds the site's import without the
        battery where export is not allowed."""
        net = np.broadcast_to(np.asarray(site_net_w, dtype=np.float64), (self.n,))
        charge = np.minimum(self.charge_setting_w, self.max_charge_w)
        discharge = discharge_limit_w(
            np.minimum(self.discharge_setting_w, self.max_discharge_w), net, self.export_allowed
        )
        mode = self.mode
        want = np.zeros(self.n)
        want = np.where((mode == MODE_CHARGING) | (mode == MODE_RAPID_CHARGING), charge, want)
        want = np.where(mode == MODE_DISCHARGING, -discharge, want)
        # Self-consumption: absorb export, cover import, within the ratings.
        auto = np.clip(-net, -self.max_discharge_w, self.max_charge_w)
        hours_left = 0.0 if local_hour is None else night_hours_left(local_hour)
        if hours_left > 0.0:
            # Night: charge evenly towards the target by 07:00 (no target: hold); PV
            # surplus, if any, is still taken.
            target_wh = (
                self.capacity_wh * np.minimum(self.night_target_pct, self.upper_limit_pct) / 100.0
            )
            needed_ac_wh = np.maximum(target_wh - self.stored_wh, 0.0) / self.efficiency
            night = np.where(np.isnan(target_wh), 0.0, needed_ac_wh / hours_left)
            auto = np.clip(np.maximum(night, auto), 0.0, self.max_charge_w)
        return np.where(mode == MODE_AUTO, auto, want)

    def step(
        self, dt_s: float, site_net_w: FloatArray | float = 0.0, local_hour: float | None = None
    ) -> FloatArray:
        """Advance ``dt_s`` seconds; returns AC power (W, + charging, − discharging).

        ``site_net_w`` is the site's import (+) / export (−) without this battery, which
        auto mode follows; ``local_hour`` (JST, at the step's start) places the night
        window.
        """
        if dt_s <= 0:
            return self.power_w
        want = self.requested_power_w(site_net_w, local_hour)
        hours = dt_s / 3600.0
        max_in = self.chargeable_wh() / hours
        max_out = self.dischargeable_wh() / hours
        # 0xAA / 0xAB: a set amount stops charging / discharging once it has flowed.
        charging = (self.mode == MODE_CHARGING) | (self.mode == MODE_RAPID_CHARGING)
        discharging = self.mode == MODE_DISCHARGING
        left_in = np.where(
            charging & (self.charge_amount_wh > 0),
            self.charge_amount_wh - self.amount_done_wh,
            np.inf,
        )
        left_out = np.where(
            discharging & (self.discharge_amount_wh > 0),
            self.discharge_amount_wh - self.amount_done_wh,
            np.inf,
        )
        max_in = np.minimum(max_in, np.maximum(left_in, 0.0) / hours)
        max_out = np.minimum(max_out, np.maximum(left_out, 0.0) / hours)
        power = np.clip(want, -max_out, max_in)
        energy_ac_wh = power * hours
        # ΔE_cells = P·t·η when charging, P·t/η when discharging.
        delta = np.where(power >= 0, energy_ac_wh * self.efficiency, energy_ac_wh / self.efficiency)
        self.stored_wh = np.clip(self.stored_wh + delta, 0.0, self.capacity_wh)
        self.charged_wh = self.charged_wh + np.maximum(energy_ac_wh, 0.0)
        self.discharged_wh = self.discharged_wh + np.maximum(-energy_ac_wh, 0.0)
        self.amount_done_wh = self.amount_done_wh + np.abs(energy_ac_wh)
        self.power_w = power
        self.working = self.working_mode()
        return power
