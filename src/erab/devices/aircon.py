"""Air conditioners: a room thermal model with a heat pump (home 0x0130, commercial 0x0156).

Each unit conditions one room, modelled as one thermal resistance and one capacitance
(1R1C): ``C dT/dt = UA (T_out - T) + G_solar + G_internal - Q``, where ``Q`` is the heat the
heat pump removes (negative when heating).  The heat pump is an ideal thermostat with a
capacity limit: it delivers what holds the room at the set temperature, up to its rated
capacity; the room then follows the exact solution of the model over the step, so large
steps (30 minutes, for history) stay stable.

Electric power = |Q| / COP + fan.  The COP is a fixed fraction of the Carnot COP between
the evaporating and condensing temperatures, so it falls as the outdoor temperature moves
away from the room's: hotter outside means more power for the same cooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import BoolArray, FloatArray, per_unit

# Operation mode codes, EPC 0xB0 of 0x0130 / 0x0156 (Appendix, home air conditioner).
MODE_AUTO = 0x41
MODE_COOLING = 0x42
MODE_HEATING = 0x43
MODE_DEHUMIDIFICATION = 0x44
MODE_AIR_CIRCULATION = 0x45

_KELVIN = 273.15


@dataclass(frozen=True)
class RoomSpec:
    """Thermal and heat-pump parameters of one kind of conditioned room."""

    ua_w_per_k: float = 80.0
    """A 16 m² living room: 6 m² of single-glazed aluminium windows (~4.7 W/(m²·K)), walls,
    air leaks and the doors to the rest of the house."""
    heat_capacity_j_per_k: float = 2.5e6
    solar_aperture_m2: float = 1.0
    internal_gain_w: float = 200.0
    rated_cooling_w: float = 2800.0
    rated_heating_w: float = 3600.0
    fan_w: float = 25.0
    standby_w: float = 1.5
    carnot_fraction: float = 0.45
    latent_fraction: float = 0.2
    """Moisture removed while cooling, as a share of the sensible load (humid summers)."""


HOME_ROOM = RoomSpec()
"""A Japanese living room with a 2.8 kW (8-10 tatami) air conditioner."""

STORE_FLOOR = RoomSpec(
    ua_w_per_k=700.0,
    heat_capacity_j_per_k=1.6e7,
    solar_aperture_m2=3.0,
    internal_gain_w=2500.0,
    rated_cooling_w=14_000.0,
    rated_heating_w=16_000.0,
    fan_w=250.0,
    standby_w=10.0,
    carnot_fraction=0.42,
)
"""A convenience-store sales floor with a 14 kW package air conditioner."""


def heat_pump_cop(
    outdoor_temp_c: FloatArray,
    room_temp_c: FloatArray,
    cooling: BoolArray,
    carnot_fraction: FloatArray | float,
) -> FloatArray:
    """COP of a heat pump: a fraction of Carnot between evaporator and condenser.

    Cooling evaporates 12 K below the room and condenses 13 K above outdoors; heating
    condenses 15 K above the room and evaporates 8 K below outdoors.
    """
    t_evap = np.where(cooling, room_temp_c - 12.0, outdoor_temp_c - 8.0) + _KELVIN
    t_cond = np.where(cooling, outdoor_temp_c + 13.0, room_temp_c + 15.0) + _KELVIN
    lift = np.maximum(t_cond - t_evap, 5.0)
    carnot = np.where(cooling, t_evap / lift, t_cond / lift)
    return np.asarray(np.clip(carnot_fraction * carnot, 1.2, 8.0), dtype=np.float64)


class AirConditionerFleet:
    """``n`` air conditioners, each in its own room, advanced together.

    State arrays (one entry per unit): ``on``, ``mode`` (0xB0 code), ``set_temp_c``,
    ``room_temp_c``, ``power_w`` (electric, last step), ``heat_removed_w`` (thermal,
    negative when heating), ``energy_wh`` (cumulative electric).
    """

    def __init__(
        self,
        n: int,
        *,
        room: RoomSpec = HOME_ROOM,
        on: bool | npt.ArrayLike = False,
        mode: int | npt.ArrayLike = MODE_COOLING,
        set_temp_c: float | npt.ArrayLike = 27.0,
        room_temp_c: float | npt.ArrayLike = 26.0,
        scale: float | npt.ArrayLike = 1.0,
    ) -> None:
        self.n = n
        self.room = room
        s = per_unit(scale, n)
        self.ua_w_per_k = room.ua_w_per_k * s
        self.heat_capacity_j_per_k = room.heat_capacity_j_per_k * s
        self.solar_aperture_m2 = room.solar_aperture_m2 * s
        self.internal_gain_w = room.internal_gain_w * s
        self.rated_cooling_w = room.rated_cooling_w * s
        self.rated_heating_w = room.rated_heating_w * s
        self.fan_w = per_unit(room.fan_w, n)
        self.standby_w = per_unit(room.standby_w, n)
        self.on: BoolArray = np.zeros(n, dtype=np.bool_)
        self.on[:] = on
        self.mode: npt.NDArray[np.int64] = np.zeros(n, dtype=np.int64)
        self.mode[:] = mode
        self.set_temp_c = per_unit(set_temp_c, n)
        self.room_temp_c = per_unit(room_temp_c, n)
        self.power_w = np.zeros(n)
        self.heat_removed_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def step(
        self,
        dt_s: float,
        outdoor_temp_c: FloatArray,
        ghi_w_m2: FloatArray,
        extra_gain_w: FloatArray | float = 0.0,
    ) -> FloatArray:
        """Advance ``dt_s`` seconds under the given weather; returns electric power (W).

        ``extra_gain_w``: heat other equipment puts into each room (W; negative where it
        takes heat out, as a store's open refrigerated cases do)."""
        if dt_s <= 0:
            return self.power_w
        t_out = np.broadcast_to(np.asarray(outdoor_temp_c, dtype=np.float64), (self.n,))
        ghi = np.broadcast_to(np.asarray(ghi_w_m2, dtype=np.float64), (self.n,))
        ua = self.ua_w_per_k
        gains = self.solar_aperture_m2 * ghi + self.internal_gain_w + extra_gain_w
        decay = np.exp(-dt_s * ua / self.heat_capacity_j_per_k)
        t = self.room_temp_c
        # Heat to remove so the room ends the step at the set temperature (exact 1R1C).
        t_eq_needed = (self.set_temp_c - decay * t) / (1.0 - decay)
        needed = ua * (t_out - t_eq_needed) + gains

        mode = self.mode
        auto = mode == MODE_AUTO
        cooling = (mode == MODE_COOLING) | (mode == MODE_DEHUMIDIFICATION) | (auto & (needed > 0))
        heating = (mode == MODE_HEATING) | (auto & (needed <= 0))
        max_cool = self.rated_cooling_w * np.where(mode == MODE_DEHUMIDIFICATION, 0.6, 1.2)
        # Heating capacity fades below 7 °C outdoors (defrost, lower density).
        max_heat = self.rated_heating_w * np.clip(1.0 - 0.015 * np.maximum(7.0 - t_out, 0), 0.5, 1)
        q = np.where(cooling, np.clip(needed, 0.0, max_cool), 0.0)
        q = np.where(heating, -np.clip(-needed, 0.0, max_heat), q)
        q = np.where(self.on, q, 0.0)

        t_eq = t_out + (gains - q) / ua
        self.room_temp_c = t_eq + (t - t_eq) * decay
        cop = heat_pump_cop(t_out, 0.5 * (t + self.room_temp_c), q >= 0, self.room.carnot_fraction)
        # Cooling also condenses moisture out of the air: latent load on top of sensible.
        load = np.where(q >= 0, q * (1.0 + self.room.latent_fraction), -q)
        power = np.where(self.on, load / cop + self.fan_w, self.standby_w)
        self.heat_removed_w = q
        self.power_w = power
        self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power
