"""A town of homes and stores: every device of every site, advanced together.

Each kind of equipment is one fleet (arrays over all units of that kind in the town), and
``*_site`` arrays say which site each unit belongs to, so one step of the whole town is a
fixed number of numpy operations whatever its size.  Per step:

1. weather and sky per region (sites of a 0.1° cell share one weather);
2. occupants: at 06:00 homes choose cooling / heating / nothing for the day from the day's
   weather, heating goes off at 23:30; stores run their air conditioning in opening hours;
3. PV, loads, water heaters, showcases, EVs; fuel cells cover what is left of demand;
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
from erab.devices.showcase import ShowcaseFleet
from erab.devices.waterheater import WaterHeaterFleet
from erab.devices.weather import Sky, SkyState, Weather

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

SiteObserver = Callable[[float, float, FloatArray], None]
"""Called after each step with (start POSIX s, end POSIX s, net power W per site)."""

COOLING_SEASON_MEAN_C = 22.0
HEATING_SEASON_MEAN_C = 12.0


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
    ``water_heater``, ``fuel_cell``, ``lighting``, ``showcase``, ``household``,
    ``store_base``; each with a matching ``<name>_site`` array of site indices.
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
        self.home_ac = AirConditionerFleet(
            n_home_ac,
            room=HOME_ROOM,
            set_temp_c=rng.choice([26.0, 27.0, 28.0], n_home_ac),
            scale=rng.uniform(0.85, 1.15, n_home_ac),
        )
        self.store_ac = AirConditionerFleet(
            len(self.store_ac_site), room=STORE_FLOOR, mode=MODE_AUTO, set_temp_c=26.0
        )
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
        self.fuel_cell = FuelCellFleet(len(self.fuel_cell_site))
        light_is_store = np.array(
            [self.sites[i].kind == "store" for i in self.lighting_site], dtype=np.bool_
        )
        opening = col("open_hour", self.lighting_site)
        closing = col("close_hour", self.lighting_site)
        # Lights go off at closing time (wrapping past midnight); always-open stores never.
        store_lights_off = np.where(closing - opening >= 24.0, 24.0, closing % 24.0)
        self.lighting = LightingFleet(
            len(self.lighting_site),
            rated_w=np.where(light_is_store, 2500.0, 120.0),
            on_hour=np.where(light_is_store, opening, 17.5),
            off_hour=np.where(light_is_store, store_lights_off, 23.5),
        )
        self.showcase = ShowcaseFleet(len(self.showcase_site))
        self.household = HouseholdLoad(
            len(self.household_site),
            seed=seed,
            monthly_kwh=col("household_kwh_month", self.household_site),
        )
        self.store_base = ScheduledLoad(
            len(self.store_base_site),
            open_w=1800.0,
            closed_w=700.0,
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
        self._home_heating = np.zeros(n_home_ac, dtype=np.bool_)
        self._store_open: npt.NDArray[np.bool_] | None = None
        self._occupants(self.time_s, force=True)

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
    def _occupants(self, time_s: float, *, force: bool = False) -> None:
        local = time_s + JST_OFFSET_S
        day = int(local // 86_400)
        hour = (local % 86_400) / 3600.0
        n = self.home_ac.n
        if n and (force or (hour >= 6.0 and self._decided_home_day != day)):
            self._decided_home_day = day if hour >= 6.0 else day - 1
            # The day's mean temperature decides the season's behaviour.
            noon_s = np.asarray(
                day * 86_400 - JST_OFFSET_S + np.arange(0, 86_400, 10_800), dtype=np.float64
            )
            region_mean = np.array([float(np.mean(w.temperature_c(noon_s))) for w in self.weathers])
            mean = region_mean[self.site_region[self.home_ac_site]]
            cooling = mean > COOLING_SEASON_MEAN_C
            heating = mean < HEATING_SEASON_MEAN_C
            self.home_ac.on = cooling | (heating & (hour < 23.5))
            self.home_ac.mode = np.where(heating, MODE_HEATING, MODE_COOLING)
            self.home_ac.set_temp_c = np.where(heating, 20.0, self.home_ac.set_temp_c)
            self._home_heating = heating
        elif n and hour >= 23.5 and np.any(self._home_heating & self.home_ac.on):
            self.home_ac.on = self.home_ac.on & ~self._home_heating
            self._home_heating = np.zeros(n, dtype=np.bool_)
        if self.store_ac.n:
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
        load += self._per_site(
            self.store_ac_site,
            self.store_ac.step(dt_s, site_temp[self.store_ac_site], site_ghi[self.store_ac_site]),
        )
        load += self._per_site(self.lighting_site, self.lighting.step(dt_s, t1 - dt_s / 2))
        load += self._per_site(
            self.water_heater_site,
            self.water_heater.step(dt_s, t1, site_temp[self.water_heater_site]),
        )
        if self.showcase.n:
            floor = np.full(self.n_sites, 24.0)
            if self.store_ac.n:
                floor[self.store_ac_site] = self.store_ac.room_temp_c
            store_open = self.store_base.is_open(t1)[
                np.searchsorted(self.store_base_site, self.showcase_site)
            ]
            load += self._per_site(
                self.showcase_site,
                self.showcase.step(dt_s, t1, floor[self.showcase_site], store_open),
            )
        generation = self._per_site(self.pv_site, pv_power)
        storage = (
            self._per_site(
                self.ev_site, self.ev.step(dt_s, t1, (load - generation)[self.ev_site])
            )
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
