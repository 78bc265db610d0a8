"""Residential PV (0x0279): plane-of-array irradiance, module temperature, inverter limit.

Irradiance comes from :class:`erab.devices.weather.Sky` (pvlib solar position and clear
sky under the weather's clouds); the array's tilt and azimuth turn it into plane-of-array
irradiance (pvlib, isotropic sky).  DC power follows PVWatts: ``P_dc = P_rated · POA/1000 ·
(1 + γ (T_cell − 25))`` with the module temperature from the SAPM model.  AC power is
``η_inv · P_dc`` capped by the inverter's rating and by output curtailment: EPC 0xA0
(percent of rated output) and EPC 0xA1 (watts), the grid operator's output control.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import FloatArray, per_unit
from erab.devices.weather import SkyState


def plane_of_array_w_m2(
    sky: SkyState, index: int | slice, tilt_deg: FloatArray, azimuth_deg: FloatArray
) -> FloatArray:
    """Plane-of-array irradiance for arrays of panels under one instant of ``sky``."""
    import pvlib

    zenith = float(np.atleast_1d(sky.zenith_deg)[index])
    if zenith >= 90.0:
        return np.zeros(np.shape(tilt_deg))
    poa = pvlib.irradiance.get_total_irradiance(
        surface_tilt=tilt_deg,
        surface_azimuth=azimuth_deg,
        solar_zenith=zenith,
        solar_azimuth=float(np.atleast_1d(sky.azimuth_deg)[index]),
        dni=float(np.atleast_1d(sky.dni_w_m2)[index]),
        ghi=float(np.atleast_1d(sky.ghi_w_m2)[index]),
        dhi=float(np.atleast_1d(sky.dhi_w_m2)[index]),
        model="isotropic",
    )
    return np.nan_to_num(np.asarray(poa["poa_global"], dtype=np.float64))


class PVFleet:
    """``n`` PV systems advanced together.

    Arrays: ``rated_w`` (DC array size, EPC 0xE8), ``inverter_limit_w``, ``tilt_deg``,
    ``azimuth_deg`` (180 = south), ``curtail_pct`` (0xA0), ``curtail_w`` (0xA1),
    ``power_w`` (AC output, last step, 0xE0), ``energy_wh`` (cumulative, 0xE1).
    """

    def __init__(
        self,
        n: int,
        *,
        rated_w: float | npt.ArrayLike = 4500.0,
        inverter_limit_w: float | npt.ArrayLike | None = None,
        tilt_deg: float | npt.ArrayLike = 30.0,
        azimuth_deg: float | npt.ArrayLike = 180.0,
        inverter_efficiency: float = 0.96,
        system_losses: float = 0.10,
        temp_coefficient_per_k: float = -0.004,
    ) -> None:
        self.n = n
        self.rated_w = per_unit(rated_w, n)
        self.inverter_limit_w = (
            self.rated_w.copy() if inverter_limit_w is None else per_unit(inverter_limit_w, n)
        )
        self.tilt_deg = per_unit(tilt_deg, n)
        self.azimuth_deg = per_unit(azimuth_deg, n)
        self.inverter_efficiency = inverter_efficiency
        self.system_losses = system_losses
        self.temp_coefficient_per_k = temp_coefficient_per_k
        self.curtail_pct = per_unit(100.0, n)
        self.curtail_w = self.rated_w.copy()
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def output_limit_w(self) -> FloatArray:
        """The AC output cap now: inverter rating and both curtailment settings."""
        return np.asarray(
            np.minimum(
                self.inverter_limit_w,
                np.minimum(self.rated_w * self.curtail_pct / 100.0, self.curtail_w),
            ),
            dtype=np.float64,
        )

    def available_w(self, poa_w_m2: FloatArray, outdoor_temp_c: FloatArray | float) -> FloatArray:
        """AC power the panels could give now without any cap."""
        poa = np.broadcast_to(np.asarray(poa_w_m2, dtype=np.float64), (self.n,))
        t_air = np.broadcast_to(np.asarray(outdoor_temp_c, dtype=np.float64), (self.n,))
        # SAPM module temperature, open rack glass/polymer: T_m = E·exp(a + b·WS) + T_a
        # with a = -3.56, b = -0.075 and 1 m/s wind.
        t_cell = poa * np.exp(-3.56 - 0.075 * 1.0) + t_air + poa / 1000.0 * 3.0
        dc = self.rated_w * poa / 1000.0 * (1.0 + self.temp_coefficient_per_k * (t_cell - 25.0))
        dc = np.maximum(dc, 0.0) * (1.0 - self.system_losses)
        return np.asarray(dc * self.inverter_efficiency, dtype=np.float64)

    def step(
        self, dt_s: float, poa_w_m2: FloatArray, outdoor_temp_c: FloatArray | float
    ) -> FloatArray:
        """Advance ``dt_s`` seconds; returns AC output (W, ≥ 0)."""
        power = np.minimum(self.available_w(poa_w_m2, outdoor_temp_c), self.output_limit_w())
        self.power_w = power
        if dt_s > 0:
            self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power
