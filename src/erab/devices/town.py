"""A town of homes and stores: every device of every site, advanced together.

Each kind of equipment is one fleet (arrays over all units of that kind in the town), and
``*_site`` arrays say which site each unit belongs to, so one step of the whole town is a
fixed number of numpy operations whatever its size.  Per step:

1. weather and sky per region (sites of a 0.1° cell share one weather);
2. occupants: at 06:00 homes choose cooling / heating / nothing for the day from the day's
   weather; they heat while at home and awake (06:00-08:00, 18:00-23:30) and cool from
   10:00 (or from 17:00 where nobody is home that afternoon) to midnight, and on to
   07:00 when the day is hot; stores run their air
   conditioning in opening hours, set to 22 °C in the heating season and 26 °C otherwise;
3. PV, loads, water heaters, showcases, hot-food warmers, EVs (a store's lighting, base
   load and warmers heat its sales floor, its open cases cool it); fuel cells cover what
   is left of demand;
   batteries in auto mode absorb surplus and cover import; a discharging battery gives at
   most its site's import unless the site allows battery export;
4. each site's net power (import +, export −) = loads − generation + storage charging,
   which observers (the smart meters) integrate.

Sets from the network change fleet arrays directly (mode, set temperature, power
settings); they hold until the occupant's or store's next scheduled decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from erab.devices.aircon import (
    HOME_ROOM,
    MODE_AUTO,
    MODE_COOLING,
    MODE_HEATING,
    STORE_FLOOR,
    AirConditionerFleet,
)
from erab.devices.battery import BatteryFleet
from erab.devices.ev import EVFleet
from erab.devices.fuelcell import FuelCellFleet
from erab.devices.loads import JST_OFFSET_S, HouseholdLoad, LightingFleet, ScheduledLoad
from erab.devices.pv import PVFleet, plane_of_array_w_m2
from erab.devices.scenario import Scenario, SiteSpec
from erab.devices.showcase import FROZEN_MAX_C, ShowcaseFleet
from erab.devices.store import STORE_PROFILES, StoreProfile, WarmerFleet
from erab.devices.waterheater import WaterHeaterFleet
from erab.devices.weather import Sky, SkyState, Weather

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SiteObserver = Callable[[float, float, FloatArray], None]
"""Called after each step with (start POSIX s, end POSIX s, net power W per site)."""

COOLING_SEASON_MEAN_C = 24.0
HEATING_SEASON_MEAN_C = 10.0
HOT_NIGHT_MEAN_C = 27.0
"""A day this warm on average has a tropical night: homes cool through it."""
STORE_HEATING_MEAN_C = 15.0
HOME_HEATING_HOURS = ((6.0, 8.0), (18.0, 23.5))
HOME_COOLING_HOURS = ((10.0, 24.0),)
AWAY_COOLING_HOURS = ((17.0, 24.0),)
HOT_NIGHT_HOURS = ((0.0, 7.0),)
DAYTIME_AT_HOME_SHARE = 0.45
"""Share of homes with someone at home in an afternoon (drawn per home and day; the rest
cool from 17:00)."""


def _within(hour: float, spans: tuple[tuple[float, float], ...]) -> bool:
    return any(a <= hour < b for a, b in spans)


@dataclass(frozen=True)
class DeviceRef:
    """One device of a site: its ECHONET Lite class, fleet and index in that fleet."""

    class_code: int
    kind: str
    index: int


@dataclass(frozen=True)
class Environment:
    """Weather of every region at one instant."""

    temperature_c: FloatArray  # per region
    cloudiness: FloatArray  # per region
    sky: SkyState  # per region (arrays of length n_regions)


def _indices(mask: Sequence[int]) -> IntArray:
    return np.asarray(mask, dtype=np.int64)


class Town:
    """All sites of a :class:`~erab.devices.scenario.Scenario`, starting at ``start``.

    Fleets (attributes): ``home_ac``, ``store_ac``, ``pv``, ``battery``, ``ev``,
    ``water_heater``, ``fuel_cell``, ``lighting``, ``showcase``, ``warmer``,
    ``household``, ``store_base``; each with a matching ``<name>_site`` array of site
    indices.  ``store_profiles`` gives each store's :class:`StoreProfile` (in the order of
    ``store_base_site``).  Warmers are no ECHONET Lite objects (no class covers them).
    """

    def __init__(self, scenario: Scenario, start: datetime, *, max_step_s: float = 60.0) -> None:
        self.scenario = scenario
        self.sites: tuple[SiteSpec, ...] = scenario.sites
        self.n_sites = len(self.sites)
        self.max_step_s = max_step_s
        self.time_s = start.timestamp()
        seed = scenario.seed
        regions = sorted({s.region for s in self.sites})
        self.regions = regions
        self.site_region = _indices([regions.index(s.region) for s in self.sites])
        self.weathers = [Weather(seed=seed * 1009 + i) for i in range(len(regions))]
        self.skies = [Sky(latitude_deg=r[0], longitude_deg=r[1]) for r in regions]
        self.devices: list[list[DeviceRef]] = [[] for _ in self.sites]

        def units(pred: Callable[[SiteSpec], int], kind: str, code: int) -> IntArray:
            out: list[int] = []
            for i, spec in enumerate(self.sites):
                for _ in range(pred(spec)):
                    self.devices[i].append(DeviceRef(code, kind, len(out)))
                    out.append(i)
            return _indices(out)

        rng = np.random.default_rng([seed & 0xFFFFFFFF, 5])
        self.home_ac_site = units(lambda s: s.aircons if s.kind == "home" else 0, "home_ac", 0x0130)
        self.store_ac_site = units(
            lambda s: s.aircons if s.kind == "store" else 0, "store_ac", 0x0156
        )
        self.pv_site = units(lambda s: 1 if s.pv_w > 0 else 0, "pv", 0x0279)
        self.battery_site = units(lambda s: 1 if s.battery_wh > 0 else 0, "battery", 0x027D)
        self.ev_site = units(lambda s: 1 if s.ev else 0, "ev", 0x027E)
        self.water_heater_site = units(lambda s: 1 if s.water_heater else 0, "water_heater", 0x026B)
        self.fuel_cell_site = units(lambda s: 1 if s.fuel_cell else 0, "fuel_cell", 0x027C)
        self.lighting_site = units(lambda s: 1 if s.lighting else 0, "lighting", 0x0290)
        self.showcase_site = units(lambda s: s.showcases, "showcase", 0x03CE)
        self.household_site = _indices([i for i, s in enumerate(self.sites) if s.kind == "home"])
        self.store_base_site = _indices([i for i, s in enumerate(self.sites) if s.kind == "store"])

        def col(name: str, where: IntArray) -> FloatArray:
            return np.asarray([float(getattr(self.sites[i], name)) for i in where])

        n_home_ac = len(self.home_ac_site)
        # Whether someone is at home this afternoon, per AC (drawn each day from the seed).
        self._home_by_day = np.zeros(len(self.home_ac_site), dtype=np.bool_)
        self.home_ac = AirConditionerFleet(
            n_home_ac,
            room=HOME_ROOM,
            set_temp_c=rng.choice([26.0, 27.0, 28.0], n_home_ac),
            scale=rng.uniform(0.85, 1.15, n_home_ac),
        )
        self.store_profiles: list[StoreProfile] = [
            STORE_PROFILES[self.sites[i].store_type] for i in self.store_base_site
        ]
        site_profile = {
            int(i): p for i, p in zip(self.store_base_site, self.store_profiles, strict=True)
        }
        self.store_ac = AirConditionerFleet(
            len(self.store_ac_site), room=STORE_FLOOR, mode=MODE_AUTO, set_temp_c=26.0
        )
        for k, site in enumerate(self.store_ac_site.tolist()):
            # A store's floor is shared by its units: each conditions 1/aircons of it.
            floor = site_profile[site].floor
            share = 1.0 / self.sites[site].aircons
            self.store_ac.ua_w_per_k[k] = floor.ua_w_per_k * share
            self.store_ac.heat_capacity_j_per_k[k] = floor.heat_capacity_j_per_k * share
            self.store_ac.solar_aperture_m2[k] = floor.solar_aperture_m2 * share
            self.store_ac.internal_gain_w[k] = floor.internal_gain_w * share
            self.store_ac.rated_cooling_w[k] = floor.rated_cooling_w * share
            self.store_ac.rated_heating_w[k] = floor.rated_heating_w * share
            self.store_ac.fan_w[k] = floor.fan_w * share
            self.store_ac.standby_w[k] = floor.standby_w * share
        self.pv = PVFleet(
            len(self.pv_site),
            rated_w=col("pv_w", self.pv_site),
            azimuth_deg=rng.uniform(135.0, 225.0, len(self.pv_site)),
        )
        n_batt = len(self.battery_site)
        batt_wh = col("battery_wh", self.battery_site)
        self.battery = BatteryFleet(
            n_batt,
            capacity_wh=batt_wh,
            max_charge_w=np.minimum(batt_wh * 0.5, 5900.0),
            max_discharge_w=np.minimum(batt_wh * 0.5, 5900.0),
            soc_pct=rng.uniform(30.0, 80.0, n_batt),
            # Night charging: full without PV; half with PV, leaving room for the sun.
            night_target_pct=np.where(col("pv_w", self.battery_site) > 0, 50.0, 100.0),
            export_allowed=[self.sites[i].battery_export_allowed for i in self.battery_site],
        )
        self.ev = EVFleet(
            len(self.ev_site),
            seed=seed,
            export_allowed=[self.sites[i].battery_export_allowed for i in self.ev_site],
        )
        self.water_heater = WaterHeaterFleet(len(self.water_heater_site))
        if len(self.water_heater_site):
            # the mains follow the last 10 days' weather, not the first step's hour
            day0 = int((self.time_s + JST_OFFSET_S) // 86_400)
            past_c = np.mean([self._day_means(d) for d in range(day0 - 10, day0)], axis=0)
            self.water_heater.prime_outdoor_mean(past_c[self.site_region[self.water_heater_site]])
        self.fuel_cell = FuelCellFleet(len(self.fuel_cell_site))
        light_is_store = np.array(
            [self.sites[i].kind == "store" for i in self.lighting_site], dtype=np.bool_
        )
        store_light_w = np.array(
            [site_profile[i].lighting_w if i in site_profile else 120.0 for i in self.lighting_site]
        )
        opening = col("open_hour", self.lighting_site)
        closing = col("close_hour", self.lighting_site)
        # Lights go off at closing time (wrapping past midnight); always-open stores never.
        store_lights_off = np.where(closing - opening >= 24.0, 24.0, closing % 24.0)
        self.lighting = LightingFleet(
            len(self.lighting_site),
            rated_w=np.where(light_is_store, store_light_w, 120.0),
            on_hour=np.where(light_is_store, opening, 17.5),
            off_hour=np.where(light_is_store, store_lights_off, 23.5),
        )
        self.showcase = self._showcases(site_profile)
        warmer_specs = [(site, w) for site, p in site_profile.items() for w in p.warmers]
        self.warmer_site = _indices([site for site, _ in warmer_specs])
        self.warmer = WarmerFleet([w for _, w in warmer_specs])
        self.household = HouseholdLoad(
            len(self.household_site),
            seed=seed,
            monthly_kwh=col("household_kwh_month", self.household_site),
        )
        self.store_base = ScheduledLoad(
            len(self.store_base_site),
            open_w=[p.other_open_w for p in self.store_profiles],
            # A store closed at night keeps some lights on (shelf filling, security).
            closed_w=[
                p.other_closed_w + min(p.closed_lighting_w, p.lighting_w)
                if p.closed_lighting_w < p.lighting_w
                else p.other_closed_w
                for p in self.store_profiles
            ],
            open_hour=col("open_hour", self.store_base_site),
            close_hour=col("close_hour", self.store_base_site),
        )

        self.site_load_w = np.zeros(self.n_sites)
        self.site_generation_w = np.zeros(self.n_sites)
        self.site_storage_w = np.zeros(self.n_sites)
        self.site_net_w = np.zeros(self.n_sites)
        self.site_temperature_c = np.full(self.n_sites, 20.0)
        self.observers: list[SiteObserver] = []
        self._decided_home_day = -1
        self._decided_store_day = -1
        self._home_heating = np.zeros(n_home_ac, dtype=np.bool_)
        self._home_cooling = np.zeros(n_home_ac, dtype=np.bool_)
        self._home_hot_night = np.zeros(n_home_ac, dtype=np.bool_)
        self._home_wanted: npt.NDArray[np.bool_] | None = None
        self._store_open: npt.NDArray[np.bool_] | None = None
        self._occupants(self.time_s, force=True)

    def _showcases(self, site_profile: dict[int, StoreProfile]) -> ShowcaseFleet:
        """A store's refrigeration split over its showcase objects: a quarter of them
        (at least one of two or more) frozen, the rest chilled."""
        n = len(self.showcase_site)
        ua = np.zeros(n)
        capacity = np.zeros(n)
        target = np.full(n, 4.0)
        limit = np.full(n, 10.0)
        fan = np.zeros(n)
        light = np.zeros(n)
        defrost = np.zeros(n)
        capacity_j = np.zeros(n)
        for site in np.unique(self.showcase_site).tolist():
            idx = np.flatnonzero(self.showcase_site == site)
            p = site_profile.get(site)
            if p is None:  # showcases at a home: a small chilled case each
                ua[idx], capacity[idx], fan[idx], light[idx] = 40.0, 1500.0, 40.0, 40.0
                capacity_j[idx] = 6.0e5
                continue
            k = len(idx)
            n_frozen = max(1, k // 4) if k >= 2 else 0
            chilled, frozen = idx[: k - n_frozen], idx[k - n_frozen :]
            for part, share_ua, cap, temp, lim in (
                (chilled, p.chilled_ua_w_per_k, p.chilled_capacity_w, 4.0, 10.0),
                (frozen, p.frozen_ua_w_per_k, p.frozen_capacity_w, -22.0, FROZEN_MAX_C),
            ):
                if len(part) == 0:
                    continue
                ua[part] = share_ua / len(part)
                capacity[part] = cap / len(part)
                target[part] = temp
                limit[part] = lim
                # Product and cabinet: a time constant C/UA of about 4.4 h, so chilled
                # contents left without cooling warm from 4 °C to the 10 °C limit in
                # about 1.3 h on a 24 °C floor.
                capacity_j[part] = ua[part] * 16_000.0
                ua_share = share_ua / (p.chilled_ua_w_per_k + p.frozen_ua_w_per_k)
                fan[part] = p.case_fan_w * ua_share / len(part)
                light[part] = p.case_lighting_w / k
            defrost[frozen] = p.frozen_defrost_w / max(len(frozen), 1)
        return ShowcaseFleet(
            n,
            ua_w_per_k=ua,
            heat_capacity_j_per_k=capacity_j,
            cooling_capacity_w=capacity,
            target_temp_c=target,
            max_temp_c=limit,
            fan_w=fan,
            lighting_w=light,
            defrost_w=defrost,
        )

    # -- bookkeeping ------------------------------------------------------------------
    def _per_site(self, where: IntArray, values: FloatArray) -> FloatArray:
        if len(where) == 0:
            return np.zeros(self.n_sites)
        return np.asarray(
            np.bincount(where, weights=values, minlength=self.n_sites), dtype=np.float64
        )

    def devices_of(self, site: int) -> list[DeviceRef]:
        """The devices of site number ``site`` (its ECHONET Lite objects)."""
        return list(self.devices[site])

    def battery_discharge_limit_w(self, horizon_s: float | None = None) -> FloatArray:
        """Most AC power each battery could discharge now (W, per battery, in the order of
        ``battery_site``): its rating, its energy above the reserve over ``horizon_s``, and
        where its site does not allow battery export, the site's import without it (the
        last step's load net of PV, EV and fuel cell).  What a battery can shed therefore
        follows its site's load."""
        if not self.battery.n:
            return np.zeros(0)
        without_battery_w = self.site_net_w[self.battery_site] - self.battery.power_w
        return self.battery.discharge_limit_w(without_battery_w, horizon_s)

    def site_index(self, name: str) -> int:
        for i, s in enumerate(self.sites):
            if s.name == name:
                return i
        raise KeyError(f"no site named {name!r}")

    # -- weather ------------------------------------------------------------------------
    def environment(self, times_s: FloatArray) -> list[Environment]:
        """Weather of every region at each of ``times_s`` (one pvlib call per region)."""
        t = np.atleast_1d(np.asarray(times_s, dtype=np.float64))
        per_region = []
        for weather, sky in zip(self.weathers, self.skies, strict=True):
            temp = weather.temperature_c(t)
            cloud = weather.cloudiness(t)
            per_region.append((temp, cloud, sky.at(t, cloud)))
        out = []
        for k in range(len(t)):
            out.append(
                Environment(
                    temperature_c=np.array([r[0][k] for r in per_region]),
                    cloudiness=np.array([r[1][k] for r in per_region]),
                    sky=SkyState(
                        *(
                            np.array([getattr(r[2], f)[k] for r in per_region])
                            for f in (
                                "zenith_deg",
                                "azimuth_deg",
                                "ghi_w_m2",
                                "dni_w_m2",
                                "dhi_w_m2",
                                "clear_ghi_w_m2",
                            )
                        )
                    ),
                )
            )
        return out

    # -- behaviour ------------------------------------------------------------------------
    def _day_means(self, day: int) -> FloatArray:
        """Each region's mean temperature over local day number ``day``."""
        samples_s = np.asarray(
            day * 86_400 - JST_OFFSET_S + np.arange(0, 86_400, 10_800), dtype=np.float64
        )
        return np.array([float(np.mean(w.temperature_c(samples_s))) for w in self.weathers])

    def _occupants(self, time_s: float, *, force: bool = False) -> None:
        local = time_s + JST_OFFSET_S
        day = int(local // 86_400)
        hour = (local % 86_400) / 3600.0
        n = self.home_ac.n
        decide_day = day if hour >= 6.0 else day - 1
        if n and (force or self._decided_home_day != decide_day):
            self._decided_home_day = decide_day
            # The day's mean temperature decides the season's behaviour.
            mean = self._day_means(decide_day)[self.site_region[self.home_ac_site]]
            self._home_cooling = mean > COOLING_SEASON_MEAN_C
            self._home_heating = mean < HEATING_SEASON_MEAN_C
            self._home_hot_night = mean > HOT_NIGHT_MEAN_C
            day_rng = np.random.default_rng([self.scenario.seed & 0xFFFFFFFF, 13, decide_day])
            at_home = day_rng.random(self.n_sites) < DAYTIME_AT_HOME_SHARE
            self._home_by_day = at_home[self.home_ac_site]
            self.home_ac.mode = np.where(self._home_heating, MODE_HEATING, MODE_COOLING)
            self.home_ac.set_temp_c = np.where(
                self._home_heating, 20.0, np.maximum(self.home_ac.set_temp_c, 24.0)
            )
            self._home_wanted = None  # a new day's plan: apply it whatever was Set
        if n:
            # Occupants switch at the edges of their schedule; a Set holds until the next edge.
            wanted = np.where(
                self._home_heating,
                _within(hour, HOME_HEATING_HOURS),
                self._home_cooling
                & (
                    np.where(
                        self._home_by_day,
                        _within(hour, HOME_COOLING_HOURS),
                        _within(hour, AWAY_COOLING_HOURS),
                    )
                    | (self._home_hot_night & _within(hour, HOT_NIGHT_HOURS))
                ),
            )
            if self._home_wanted is None:
                self.home_ac.on = wanted.copy()
            else:
                changed = wanted != self._home_wanted
                if np.any(changed):
                    self.home_ac.on = np.where(changed, wanted, self.home_ac.on)
            self._home_wanted = wanted
        if self.store_ac.n:
            if force or (hour >= 6.0 and self._decided_store_day != day):
                self._decided_store_day = day if hour >= 6.0 else day - 1
                mean = self._day_means(self._decided_store_day)[
                    self.site_region[self.store_ac_site]
                ]
                profile = [
                    self.store_profiles[int(k)]
                    for k in np.searchsorted(self.store_base_site, self.store_ac_site)
                ]
                self.store_ac.set_temp_c = np.where(
                    mean < STORE_HEATING_MEAN_C,
                    [p.winter_set_c for p in profile],
                    [p.summer_set_c for p in profile],
                )
            open_now = self.store_base.is_open(time_s)[
                np.searchsorted(self.store_base_site, self.store_ac_site)
            ]
            if self._store_open is None or np.any(open_now != self._store_open):
                changed = (
                    (open_now != self._store_open)
                    if self._store_open is not None
                    else np.ones(self.store_ac.n, dtype=np.bool_)
                )
                self.store_ac.on = np.where(changed, open_now, self.store_ac.on)
                self._store_open = open_now

    # -- stepping ---------------------------------------------------------------------------
    def step(self, dt_s: float, env: Environment | None = None) -> FloatArray:
        """Advance the whole town by ``dt_s`` seconds; returns net power per site (W)."""
        t0 = self.time_s
        t1 = t0 + dt_s
        if env is None:
            env = self.environment(np.array([t0 + dt_s / 2.0]))[0]
        self._occupants(t1)
        site_temp = env.temperature_c[self.site_region]
        site_ghi = env.sky.ghi_w_m2[self.site_region]
        self.site_temperature_c = site_temp

        # generation
        pv_power = np.zeros(0)
        if self.pv.n:
            poa = np.zeros(self.pv.n)
            pv_region = self.site_region[self.pv_site]
            for r in np.unique(pv_region).tolist():
                mask = pv_region == r
                poa[mask] = plane_of_array_w_m2(
                    env.sky, r, self.pv.tilt_deg[mask], self.pv.azimuth_deg[mask]
                )
            pv_power = self.pv.step(dt_s, poa, site_temp[self.pv_site])

        # loads
        load = self._per_site(self.household_site, self.household.step(dt_s, t1))
        load += self._per_site(self.store_base_site, self.store_base.step(dt_s, t1))
        load += self._per_site(
            self.home_ac_site,
            self.home_ac.step(dt_s, site_temp[self.home_ac_site], site_ghi[self.home_ac_site]),
        )
        light_w = self.lighting.step(dt_s, t1 - dt_s / 2)
        load += self._per_site(self.lighting_site, light_w)
        load += self._per_site(
            self.water_heater_site,
            self.water_heater.step(dt_s, t1, site_temp[self.water_heater_site]),
        )
        floor = np.full(self.n_sites, 24.0)
        if self.store_ac.n:
            floor[self.store_ac_site] = self.store_ac.room_temp_c
        floor_heat = np.zeros(self.n_sites)
        if self.showcase.n:
            store_open = self.store_base.is_open(t1)[
                np.searchsorted(self.store_base_site, self.showcase_site)
            ]
            load += self._per_site(
                self.showcase_site,
                self.showcase.step(
                    dt_s,
                    t1,
                    floor[self.showcase_site],
                    store_open,
                    site_temp[self.showcase_site],
                ),
            )
            floor_heat -= self._per_site(self.showcase_site, self.showcase.heat_leak_w)
        if self.warmer.n:
            load += self._per_site(
                self.warmer_site, self.warmer.step(dt_s, t1, floor[self.warmer_site])
            )
            floor_heat += self._per_site(self.warmer_site, self.warmer.heat_to_room_w)
        if self.store_ac.n:
            # Lights and the base load end up as heat on the sales floor.
            floor_heat += self._per_site(self.lighting_site, light_w)
            floor_heat += self._per_site(self.store_base_site, self.store_base.power_w)
            units = np.bincount(self.store_ac_site, minlength=self.n_sites).astype(np.float64)
            per_unit_heat = floor_heat[self.store_ac_site] / units[self.store_ac_site]
            load += self._per_site(
                self.store_ac_site,
                self.store_ac.step(
                    dt_s,
                    site_temp[self.store_ac_site],
                    site_ghi[self.store_ac_site],
                    per_unit_heat,
                ),
            )
        generation = self._per_site(self.pv_site, pv_power)
        storage = (
            self._per_site(self.ev_site, self.ev.step(dt_s, t1, (load - generation)[self.ev_site]))
            if self.ev.n
            else np.zeros(self.n_sites)
        )

        # the fuel cell covers what the site would still import
        if self.fuel_cell.n:
            demand = np.maximum(load + storage - generation, 0.0)[self.fuel_cell_site]
            generation += self._per_site(self.fuel_cell_site, self.fuel_cell.step(dt_s, demand))
        if self.battery.n:
            net_before = (load + storage - generation)[self.battery_site]
            hour = ((t0 + JST_OFFSET_S) % 86_400) / 3600.0
            storage += self._per_site(
                self.battery_site, self.battery.step(dt_s, net_before, local_hour=hour)
            )

        self.site_load_w = load
        self.site_generation_w = generation
        self.site_storage_w = storage
        self.site_net_w = load - generation + storage
        self.time_s = t1
        for observer in self.observers:
            observer(t0, t1, self.site_net_w)
        return self.site_net_w

    def advance_to(self, when_s: float) -> int:
        """Step until POSIX second ``when_s`` in steps of at most ``max_step_s``; the count."""
        if when_s <= self.time_s + 1e-6:
            return 0
        n_steps = int(np.ceil((when_s - self.time_s) / self.max_step_s - 1e-9))
        dt = (when_s - self.time_s) / n_steps
        # One batched weather/sky computation for all the steps (pvlib per call is costly).
        envs = self.environment(
            np.asarray(self.time_s + dt * (np.arange(n_steps) + 0.5), dtype=np.float64)
        )
        for env in envs:
            self.step(dt, env)
        return n_steps

    def simulate(
        self,
        end_s: float,
        step_s: float = 1800.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> FloatArray:
        """Run to ``end_s`` in fixed steps (weather computed in one batch); net power per
        step and site, shape (steps, n_sites).  Used to build meters' past history."""
        n_steps = round((end_s - self.time_s) / step_s)
        if n_steps <= 0:
            return np.zeros((0, self.n_sites))
        mids = np.asarray(self.time_s + step_s * (np.arange(n_steps) + 0.5), dtype=np.float64)
        envs = self.environment(mids)
        out = np.empty((n_steps, self.n_sites))
        for k, env in enumerate(envs):
            out[k] = self.step(step_s, env)
            if progress is not None and (k % 48 == 0 or k == n_steps - 1):
                progress(k + 1, n_steps)
        return out
