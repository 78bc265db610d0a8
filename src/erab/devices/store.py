"""Kinds of retail store and their hot-food warmers.

A :class:`StoreProfile` sizes every piece of a store's equipment: sales floor (its air
conditioning), refrigeration (split over the site's showcase objects, so the store's
refrigeration load does not depend on how many objects serve it), hot-food warmers,
lighting and the rest (tills, coffee machines, ATM, ventilation, back office).

Two kinds, sized so their energy and end-use shares fall inside the published figures
(docs/calibration.md):

- ``convenience``: 24 hours, about 165 m² (most convenience stores have 100-250 m² of
  sales floor, METI Census of Commerce), a 30 kW low-voltage contract, about 144,000 kWh a
  year (METI, FY2022 per-store figure) split hot food 26 %, refrigeration 25 %, air
  conditioning 21 %, lighting 16 %, other 13 % (Tokyo Metropolitan Government, Bureau of
  Environment, convenience-store energy-saving guide, 2013: a 165 m² single-storey store);
- ``supermarket``: a food supermarket of 1,500 m² open 09:00-22:00, refrigeration the
  largest use (showcases and cold rooms about half), then lighting and air conditioning
  (Agency for Natural Resources and Energy, summer and winter energy-saving menus for food
  supermarkets).

Hot-food warmers (fryer, hot showcase, steamer, hot-drink cabinet) are thermal masses held
at a set temperature by an electric heater against their losses to the room, plus the food
they heat (a meal-time shape).  Their flexibility is the contents' heat: a heater may pause
while the food stays above its hot-holding minimum (65 °C, the usual Japanese guidance for
hot-held food); :meth:`WarmerFleet.hold_time_s` says for how long.  No ECHONET Lite class
covers them, so they are served to no controller; a gateway sees them in the store's meter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from erab.devices.aircon import RoomSpec
from erab.devices.arrays import BoolArray, FloatArray, per_unit
from erab.devices.loads import local_hour

STORE_TYPES = ("convenience", "supermarket")


@dataclass(frozen=True)
class WarmerSpec:
    """One hot-food warmer: contents and cabinet as one thermal node."""

    name: str
    set_temp_c: float
    min_temp_c: float
    ua_w_per_k: float
    heat_capacity_j_per_k: float
    heater_w: float
    product_w: float
    """Mean heat going into fresh food while cooking (W), shaped by meal times."""
    on_hour: float = 0.0
    off_hour: float = 24.0


@dataclass(frozen=True)
class StoreProfile:
    """Equipment of one kind of store (powers in W, areas in m²)."""

    store_type: str
    floor_area_m2: float
    contract_kw: float
    floor: RoomSpec
    chilled_ua_w_per_k: float
    """All chilled cases and cold rooms together: heat leak per K (air curtains, doors)."""
    frozen_ua_w_per_k: float
    chilled_capacity_w: float
    frozen_capacity_w: float
    case_fan_w: float
    case_lighting_w: float
    frozen_defrost_w: float
    night_cover: float
    """Share of the chilled cases' heat leak left when the store is closed (night covers)."""
    warmers: tuple[WarmerSpec, ...]
    lighting_w: float
    closed_lighting_w: float
    other_open_w: float
    other_closed_w: float
    winter_set_c: float = 22.0
    summer_set_c: float = 26.0


CONVENIENCE_FLOOR = RoomSpec(
    # Walls, roof and glass front (~300 W/K) and outdoor air: the door opens for about a
    # thousand customers a day and the kitchen hood runs (~2,000 m³/h × 0.34 W·h/(m³·K)).
    ua_w_per_k=1000.0,
    heat_capacity_j_per_k=1.6e7,
    solar_aperture_m2=2.0,
    internal_gain_w=600.0,  # customers and staff
    rated_cooling_w=14_000.0,
    rated_heating_w=16_000.0,
    fan_w=750.0,  # indoor and outdoor fans run whenever the unit is on
    standby_w=10.0,
    carnot_fraction=0.30,  # package units at part load, cycling all day
    latent_fraction=0.5,  # humid outdoor air through the door in summer
)
"""A convenience-store sales floor of about 165 m² with a 14 kW package air conditioner."""

CONVENIENCE = StoreProfile(
    store_type="convenience",
    floor_area_m2=165.0,
    contract_kw=30.0,
    floor=CONVENIENCE_FLOOR,
    chilled_ua_w_per_k=245.0,
    frozen_ua_w_per_k=48.0,
    chilled_capacity_w=9000.0,
    frozen_capacity_w=3500.0,
    case_fan_w=320.0,
    case_lighting_w=250.0,
    frozen_defrost_w=1500.0,
    night_cover=1.0,  # open 24 hours: no covers
    warmers=(
        WarmerSpec("fryer", 175.0, 160.0, 7.0, 8.0e4, 6000.0, 1500.0, 6.0, 23.0),
        WarmerSpec("hot showcase", 70.0, 65.0, 10.0, 1.5e5, 1500.0, 150.0),
        WarmerSpec("steamer", 85.0, 70.0, 11.0, 2.0e5, 2000.0, 300.0),
        WarmerSpec("hot drinks", 58.0, 50.0, 10.0, 3.0e5, 1200.0, 60.0),
    ),
    lighting_w=2650.0,
    closed_lighting_w=2650.0,
    other_open_w=2150.0,
    other_closed_w=2150.0,
)

SUPERMARKET_FLOOR = RoomSpec(
    ua_w_per_k=2400.0,
    heat_capacity_j_per_k=1.2e8,
    solar_aperture_m2=6.0,
    internal_gain_w=4000.0,
    rated_cooling_w=120_000.0,
    rated_heating_w=130_000.0,
    fan_w=2500.0,
    standby_w=50.0,
    carnot_fraction=0.36,
)
"""A 1,500 m² supermarket sales floor with a 120 kW packaged system."""

SUPERMARKET = StoreProfile(
    store_type="supermarket",
    floor_area_m2=1500.0,
    contract_kw=250.0,
    floor=SUPERMARKET_FLOOR,
    chilled_ua_w_per_k=1700.0,
    frozen_ua_w_per_k=260.0,
    chilled_capacity_w=60_000.0,
    frozen_capacity_w=22_000.0,
    case_fan_w=2200.0,
    case_lighting_w=1800.0,
    frozen_defrost_w=9000.0,
    night_cover=0.55,
    warmers=(WarmerSpec("deli hot case", 70.0, 65.0, 25.0, 4.0e5, 4000.0, 600.0, 9.0, 22.0),),
    lighting_w=18_000.0,  # 12 W/m²
    closed_lighting_w=1500.0,
    other_open_w=9000.0,
    other_closed_w=3500.0,
)

STORE_PROFILES = {p.store_type: p for p in (CONVENIENCE, SUPERMARKET)}

# Fresh food going into the warmers by hour (00:00 first): breakfast, lunch, evening.
_MEAL_SHAPE = np.array(
    [0.3, 0.2, 0.2, 0.2, 0.3, 0.6, 1.2, 1.6, 1.3, 0.9, 1.1, 2.0,
     2.3, 1.4, 0.9, 0.9, 1.2, 1.8, 2.0, 1.6, 1.1, 0.8, 0.6, 0.4],
    dtype=np.float64,
)  # fmt: skip
MEAL_SHAPE = _MEAL_SHAPE / _MEAL_SHAPE.mean()


class WarmerFleet:
    """``n`` hot-food warmers. Arrays: ``set_temp_c``, ``min_temp_c`` (hot-holding
    minimum), ``food_temp_c`` (contents), ``heater_w``, ``paused_until_s``, ``power_w``,
    ``energy_wh``, ``heat_to_room_w`` (losses that heat the sales floor)."""

    def __init__(self, specs: list[WarmerSpec]) -> None:
        n = len(specs)
        self.n = n
        self.names = [s.name for s in specs]

        def col(name: str) -> FloatArray:
            return per_unit([float(getattr(s, name)) for s in specs], n)

        self.set_temp_c = col("set_temp_c")
        self.min_temp_c = col("min_temp_c")
        self.ua_w_per_k = col("ua_w_per_k")
        self.heat_capacity_j_per_k = col("heat_capacity_j_per_k")
        self.heater_w = col("heater_w")
        self.product_w = col("product_w")
        self.on_hour = col("on_hour")
        self.off_hour = col("off_hour")
        self.food_temp_c = self.set_temp_c.copy()
        self.paused_until_s = np.full(n, -np.inf)
        self.power_w = np.zeros(n)
        self.heat_to_room_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def in_service(self, time_s: float) -> BoolArray:
        hour = float(local_hour(time_s))
        return np.asarray((hour >= self.on_hour) & (hour < self.off_hour))

    def pause(self, index: int | list[int], until_s: float) -> None:
        """Hold heater(s) off until POSIX second ``until_s`` while the food stays above its
        hot-holding minimum."""
        self.paused_until_s[np.atleast_1d(np.asarray(index, dtype=np.int64))] = until_s

    def hold_time_s(self, room_temp_c: FloatArray | float) -> FloatArray:
        """How long each warmer's food can go unheated before reaching its minimum (s)."""
        room = np.broadcast_to(np.asarray(room_temp_c, dtype=np.float64), (self.n,))
        tau = self.heat_capacity_j_per_k / self.ua_w_per_k
        with np.errstate(divide="ignore", invalid="ignore"):
            t = tau * np.log((self.food_temp_c - room) / (self.min_temp_c - room))
        return np.asarray(np.where(self.food_temp_c <= self.min_temp_c, 0.0, t))

    def step(self, dt_s: float, time_s: float, room_temp_c: FloatArray | float) -> FloatArray:
        """Advance ``dt_s`` seconds ending at ``time_s``; returns electric power (W)."""
        if dt_s <= 0:
            return self.power_w
        room = np.broadcast_to(np.asarray(room_temp_c, dtype=np.float64), (self.n,))
        mid = time_s - dt_s / 2.0
        service = self.in_service(mid)
        hour = int(float(local_hour(mid))) % 24
        # Fresh, cold food takes heat as it goes in (a sink on the contents).
        product = np.where(service, self.product_w * MEAL_SHAPE[hour], 0.0)
        ua = self.ua_w_per_k
        t = self.food_temp_c
        decay = np.exp(-dt_s * ua / self.heat_capacity_j_per_k)
        # A paused heater lets the food cool down to its minimum and holds it there.
        paused = mid < self.paused_until_s
        target = np.where(paused, self.min_temp_c, self.set_temp_c)
        t_eq_needed = (target - decay * t) / (1.0 - decay)
        needed = ua * (t_eq_needed - room) + product
        heat = np.where(service, np.clip(needed, 0.0, self.heater_w), 0.0)
        t_eq = room + (heat - product) / ua
        self.food_temp_c = t_eq + (t - t_eq) * decay
        self.heat_to_room_w = ua * (0.5 * (t + self.food_temp_c) - room)
        self.power_w = heat
        self.energy_wh = self.energy_wh + heat * dt_s / 3600.0
        return heat
