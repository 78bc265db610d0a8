"""Refrigerated showcases of a retail store (0x03CE commercial showcase).

A showcase's compressor duty rises with the sales floor's temperature and falls when its
inside target temperature (0xEF) is raised; a defrost heater runs for 20 minutes every 6
hours; internal lighting (0xE0) is on while the store is open.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import BoolArray, FloatArray, per_unit

# EPC 0xB0 operation mode (Appendix 0x03CE)
SHOWCASE_COOLING = 0x41


class ShowcaseFleet:
    """``n`` showcases. Arrays: ``rated_w`` (compressor and fans, 0xE4), ``target_temp_c``
    (0xEF), ``inside_temp_c`` (0xE3), ``lighting_on`` (0xE0), ``heater_on`` (0xE7),
    ``power_w``, ``energy_wh``."""

    def __init__(
        self,
        n: int,
        *,
        rated_w: float | npt.ArrayLike = 1500.0,
        lighting_w: float | npt.ArrayLike = 120.0,
        defrost_w: float | npt.ArrayLike = 400.0,
        target_temp_c: float | npt.ArrayLike = 5.0,
    ) -> None:
        self.n = n
        self.rated_w = per_unit(rated_w, n)
        self.lighting_w = per_unit(lighting_w, n)
        self.defrost_w = per_unit(defrost_w, n)
        self.target_temp_c = per_unit(target_temp_c, n)
        self.inside_temp_c = self.target_temp_c.copy()
        self.lighting_on: BoolArray = np.ones(n, dtype=np.bool_)
        self.heater_on: BoolArray = np.zeros(n, dtype=np.bool_)
        # Stagger defrost cycles across showcases.
        self._defrost_offset_s = np.arange(n, dtype=np.float64) * 1800.0 % 21_600.0
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def step(
        self, dt_s: float, time_s: float, floor_temp_c: FloatArray | float, store_open: BoolArray
    ) -> FloatArray:
        if dt_s <= 0:
            return self.power_w
        floor = np.broadcast_to(np.asarray(floor_temp_c, dtype=np.float64), (self.n,))
        # Heat leaking in is proportional to floor minus inside temperature.
        duty = np.clip(0.45 * (floor - self.target_temp_c) / (25.0 - 5.0), 0.1, 1.0)
        phase = (time_s + self._defrost_offset_s) % 21_600.0
        self.heater_on = phase < 1200.0
        self.lighting_on = np.asarray(store_open, dtype=np.bool_)
        compressor = np.where(self.heater_on, 0.0, self.rated_w * duty)
        power = (
            compressor
            + np.where(self.heater_on, self.defrost_w, 0.0)
            + np.where(self.lighting_on, self.lighting_w, 0.0)
        )
        self.inside_temp_c = np.where(
            self.heater_on, self.target_temp_c + 3.0, self.target_temp_c + 0.3
        )
        self.power_w = power
        self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power
