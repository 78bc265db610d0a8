"""Heat-pump water heaters (0x026B, "EcoCute"): a hot-water tank heated by a heat pump.

The tank's useful heat (kWh thermal above the cold-water temperature) falls with the
household's hot-water draw (a little in the morning, most in the evening bath) and rises
while the heat pump runs.  The draw is a volume of hot water at the tap (JRA 4050's
standard household: about 425 L of 42 °C water a day); the heat it takes is that volume
times the rise from the mains, and the mains water follows the weather (the residential
energy-efficiency standard's supply-water formula), so a winter bath costs about three
times a summer one.  Automatic mode heats at night (23:00-07:00, the cheap tariff)
until the tank is full, and at any hour when it runs low; manual heating (0xB0 = 0x42)
heats now, e.g. to soak up PV surplus; manual stop (0x43) never heats.  Electric power is
the heat pump's thermal output divided by its COP, which rises with outdoor temperature.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import FloatArray, per_unit
from erab.devices.loads import local_hour

# EPC 0xB0 automatic water heating setting (Appendix 0x026B)
HEATING_AUTO = 0x41
HEATING_MANUAL_ON = 0x42
HEATING_MANUAL_OFF = 0x43

_WATER_KWH_PER_L_K = 4.186 / 3600.0
# JRA 4050:2007R (the JIS C 9220 efficiency test's load): a standard household draws about
# 425 L of 42 °C water a day (Toshiba's 2014 EcoCute catalogue states the condition).
STANDARD_DRAW_L_PER_DAY = 425.0
DRAW_TEMP_C = 42.0
# Daily mean supply (mains) water temperature = a × (10-day mean outdoor temperature) + b,
# at least 0.5 °C: Japan's residential energy-efficiency standard, calculation method
# ch. 7 (hot water), eq. 12 and table 7, region 6 (Tokyo).
SUPPLY_WATER_A = 0.8516
SUPPLY_WATER_B_C = 2.473
_TEN_DAY_TAU_S = 5.0 * 86_400.0  # an exponential mean with the lag of a 10-day running mean
# Hot-water draw by hour as a fraction of the day's draw (morning wash, evening bath).
_DRAW_SHAPE = np.array(
    [
        0.01,
        0.0,
        0.0,
        0.0,
        0.0,
        0.01,
        0.04,
        0.07,
        0.04,
        0.02,
        0.02,
        0.02,
        0.03,
        0.02,
        0.02,
        0.02,
        0.03,
        0.05,
        0.08,
        0.16,
        0.17,
        0.11,
        0.06,
        0.02,
    ],
    dtype=np.float64,
)
DRAW_SHAPE = _DRAW_SHAPE / _DRAW_SHAPE.sum()


class WaterHeaterFleet:
    """``n`` heat-pump water heaters advanced together.

    Arrays: ``tank_l`` (0xE2), ``stored_kwh`` (useful heat in the tank), ``mode`` (0xB0),
    ``heating`` (0xB2), ``power_w`` (electric), ``energy_wh`` (electric, cumulative),
    ``heat_wh`` (heat put into the tank, cumulative), ``drawn_wh`` (heat drawn at the taps,
    cumulative), ``supply_water_c`` (mains water temperature now).
    """

    def __init__(
        self,
        n: int,
        *,
        tank_l: float | npt.ArrayLike = 370.0,
        tank_temp_c: float = 65.0,
        cold_water_c: float = 15.0,
        heat_output_w: float | npt.ArrayLike = 4500.0,
        daily_draw_l: float | npt.ArrayLike = STANDARD_DRAW_L_PER_DAY,
        fill_fraction: float | npt.ArrayLike = 0.6,
    ) -> None:
        self.n = n
        self.tank_l = per_unit(tank_l, n)
        self.tank_temp_c = tank_temp_c
        self.capacity_kwh = self.tank_l * (tank_temp_c - cold_water_c) * _WATER_KWH_PER_L_K
        self.heat_output_w = per_unit(heat_output_w, n)
        self.daily_draw_l = per_unit(daily_draw_l, n)
        if (self.daily_draw_l < 0).any():
            raise ValueError("daily_draw_l must not be negative (litres of 42 °C water a day)")
        self.stored_kwh = self.capacity_kwh * per_unit(fill_fraction, n)
        self.mode = np.full(n, HEATING_AUTO, dtype=np.int64)
        self.heating = np.zeros(n, dtype=np.bool_)
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)
        self.heat_wh = np.zeros(n)
        self.drawn_wh = np.zeros(n)
        self._outdoor_mean_c: FloatArray | None = None  # set by the first step
        self.supply_water_c = np.full(n, cold_water_c)

    def prime_outdoor_mean(self, outdoor_mean_c: float | npt.ArrayLike) -> None:
        """Start the 10-day mean outdoor temperature (°C) the mains water follows.

        Without it the first step's temperature starts the mean, so a start at a summer
        noon would warm the mains by a few kelvin until the mean catches up (days).
        """
        self._outdoor_mean_c = per_unit(outdoor_mean_c, self.n)
        self.supply_water_c = self.supply_water_temp_c(self._outdoor_mean_c)

    @staticmethod
    def supply_water_temp_c(outdoor_mean_c: FloatArray) -> FloatArray:
        """Mains water temperature from the 10-day mean outdoor temperature (region 6)."""
        return np.asarray(np.maximum(SUPPLY_WATER_A * outdoor_mean_c + SUPPLY_WATER_B_C, 0.5))

    def remaining_hot_water_l(self) -> FloatArray:
        """Hot water left in the tank at tank temperature (EPC 0xE1), litres."""
        return np.asarray(self.tank_l * self.stored_kwh / self.capacity_kwh)

    @staticmethod
    def cop(outdoor_temp_c: FloatArray) -> FloatArray:
        """COP of a CO2 heat-pump water heater: about 3.5 at 16 °C, lower in the cold."""
        return np.asarray(np.clip(3.5 + 0.06 * (outdoor_temp_c - 16.0), 1.8, 4.8))

    def step(self, dt_s: float, time_s: float, outdoor_temp_c: FloatArray | float) -> FloatArray:
        if dt_s <= 0:
            return self.power_w
        t_out = np.broadcast_to(np.asarray(outdoor_temp_c, dtype=np.float64), (self.n,))
        hour = float(local_hour(time_s - dt_s / 2.0))
        if self._outdoor_mean_c is None:
            self._outdoor_mean_c = t_out.copy()
        else:
            weight = 1.0 - np.exp(-dt_s / _TEN_DAY_TAU_S)
            self._outdoor_mean_c = self._outdoor_mean_c + weight * (t_out - self._outdoor_mean_c)
        self.supply_water_c = self.supply_water_temp_c(self._outdoor_mean_c)
        rise_k = np.maximum(DRAW_TEMP_C - self.supply_water_c, 0.0)
        daily_draw_kwh = self.daily_draw_l * rise_k * _WATER_KWH_PER_L_K
        draw_kwh = daily_draw_kwh * DRAW_SHAPE[int(hour) % 24] * dt_s / 3600.0
        draw_kwh = np.minimum(draw_kwh, self.stored_kwh)  # an empty tank runs cold
        stored = self.stored_kwh - draw_kwh
        fraction = stored / self.capacity_kwh
        night = hour >= 23.0 or hour < 7.0
        # Automatic: start below 90 % at night, or below 20 % any time; stop when full.
        start = (self.mode == HEATING_AUTO) & (((fraction < 0.9) & night) | (fraction < 0.2))
        keep = (self.mode == HEATING_AUTO) & self.heating & (night | (fraction < 0.5))
        heating = (start | keep | (self.mode == HEATING_MANUAL_ON)) & (fraction < 0.999)
        heat_kwh = np.where(heating, self.heat_output_w * dt_s / 3.6e6, 0.0)
        heat_kwh = np.minimum(heat_kwh, self.capacity_kwh - stored)
        self.stored_kwh = stored + heat_kwh
        power = np.where(heating, heat_kwh * 3.6e6 / dt_s / self.cop(t_out), 0.0)
        self.heating = heating
        self.power_w = power
        self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        self.heat_wh = self.heat_wh + heat_kwh * 1000.0
        self.drawn_wh = self.drawn_wh + draw_kwh * 1000.0
        return power
