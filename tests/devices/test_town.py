"""A town of sites: energy balance, AC share of summer demand, store hours."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from erab.clock import JST
from erab.devices import Scenario, SiteSpec, Town
from erab.meter.smartmeter import MeterFleet

FULL_HOME = SiteSpec(
    "full-home",
    pv_w=5000.0,
    battery_wh=9800.0,
    ev=True,
    water_heater=True,
    fuel_cell=True,
    aircons=2,
)
STORE = SiteSpec("store", kind="store", pv_w=10_000.0, battery_wh=16_400.0, showcases=3)


def _site_sum(town: Town, fleet_site: np.ndarray, values: np.ndarray, site: int) -> float:
    return float(values[fleet_site == site].sum())


def _consumption_wh(town: Town, site: int) -> float:
    total = 0.0
    for where, fleet in (
        (town.home_ac_site, town.home_ac),
        (town.store_ac_site, town.store_ac),
        (town.lighting_site, town.lighting),
        (town.water_heater_site, town.water_heater),
        (town.showcase_site, town.showcase),
        (town.warmer_site, town.warmer),
        (town.household_site, town.household),
        (town.store_base_site, town.store_base),
    ):
        total += _site_sum(town, where, fleet.energy_wh, site)
    return total


def _generation_wh(town: Town, site: int) -> float:
    return _site_sum(town, town.pv_site, town.pv.energy_wh, site) + _site_sum(
        town, town.fuel_cell_site, town.fuel_cell.energy_wh, site
    )


def _storage_wh(town: Town, site: int) -> float:
    b, e = town.battery, town.ev.battery
    return _site_sum(town, town.battery_site, b.charged_wh - b.discharged_wh, site) + _site_sum(
        town, town.ev_site, e.charged_wh - e.discharged_wh, site
    )


@pytest.fixture(scope="module")
def day_run() -> tuple[Town, MeterFleet]:
    start = datetime(2026, 7, 20, tzinfo=JST)
    town = Town(Scenario((FULL_HOME, STORE), seed=11), start, max_step_s=300.0)
    meters = MeterFleet(town.n_sites, start)
    town.observers.append(meters.observe)
    town.advance_to(start.timestamp() + 86_400)
    return town, meters


def test_meter_equals_loads_minus_generation_plus_storage_over_a_day(day_run) -> None:
    town, meters = day_run
    for site in range(town.n_sites):
        expected = (
            _consumption_wh(town, site) - _generation_wh(town, site) + _storage_wh(town, site)
        )
        metered = meters.import_wh[site] - meters.export_wh[site]
        assert metered == pytest.approx(expected, abs=1e-6 * max(1.0, abs(expected)))


def test_meter_registers_agree_with_the_balance_within_their_resolution(day_run) -> None:
    town, meters = day_run
    imp = meters.counts(meters.import_wh).astype(np.int64)
    exp = meters.counts(meters.export_wh).astype(np.int64)
    for site in range(town.n_sites):
        expected_kwh = (
            _consumption_wh(town, site) - _generation_wh(town, site) + _storage_wh(town, site)
        ) / 1000.0
        # each register truncates to 0.1 kWh (0xE1 = 0x01)
        assert abs((imp[site] - exp[site]) * 0.1 - expected_kwh) <= 0.2


def test_every_device_of_the_full_home_did_something(day_run) -> None:
    town, _ = day_run
    assert town.pv.energy_wh[0] > 5000.0  # a July day with 5 kW of panels
    assert town.battery.charged_wh[0] > 0 and town.battery.discharged_wh[0] > 0
    assert town.water_heater.energy_wh[0] > 0
    assert town.fuel_cell.energy_wh[0] > 0
    # a Monday: the car drives on 78 % of weekdays; where its trip plan has one, the trip
    # drained the battery, and either way the car charged at home
    monday = int((datetime(2026, 7, 20, tzinfo=JST).timestamp() + 9 * 3600) // 86_400)
    planned_km = float(town.ev.sessions(monday).distance_km[0])
    assert (town.ev.driven_wh[0] > 0) == (planned_km > 0)
    assert town.ev.battery.charged_wh[0] > 0


def test_a_store_uses_more_while_open_than_at_night() -> None:
    start = datetime(2026, 10, 5, tzinfo=JST)
    store = SiteSpec("s", kind="store", showcases=4, open_hour=7.0, close_hour=23.0)
    town = Town(Scenario((store,), seed=1), start)
    net = town.simulate(start.timestamp() + 86_400, 1800.0)[:, 0]
    night = net[2:10].mean()  # 01:00-05:00
    day = net[24:34].mean()  # 12:00-17:00
    assert day > 1.5 * night
    assert night > 1000.0  # showcases run all night


def test_in_a_thousand_site_town_each_units_power_lands_on_its_own_site() -> None:
    town = Town(Scenario.generate(1000, 10, seed=2), datetime(2026, 8, 1, 12, tzinfo=JST))
    net = town.step(60.0)
    assert net.shape == (1010,) and np.all(np.isfinite(net))
    assert np.array_equal(net, town.site_load_w - town.site_generation_w + town.site_storage_w)
    # generation only where there are panels or a fuel cell, and there it is a noon's worth
    generating = np.zeros(town.n_sites, dtype=bool)
    generating[town.pv_site] = True
    generating[town.fuel_cell_site] = True
    assert np.all(town.site_generation_w[~generating] == 0.0)
    assert np.all(town.site_generation_w[town.pv_site] > 0.0)
    # storage only where there is a battery or a car
    storing = np.zeros(town.n_sites, dtype=bool)
    storing[town.battery_site] = True
    storing[town.ev_site] = True
    assert np.all(town.site_storage_w[~storing] == 0.0)
    # every site draws something: the household or store base load at least
    assert np.all(town.site_load_w > 0.0)
    pv_home = int(town.pv_site[0])
    assert town.site_generation_w[pv_home] == pytest.approx(
        town.pv.power_w[town.pv_site == pv_home].sum()
        + town.fuel_cell.power_w[town.fuel_cell_site == pv_home].sum()
    )


def test_an_always_open_store_keeps_its_lights_on_at_night() -> None:
    start = datetime(2026, 10, 5, 3, tzinfo=JST)
    store = SiteSpec("konbini", kind="store", open_hour=0.0, close_hour=24.0)
    town = Town(Scenario((store,), seed=1), start)
    town.step(60.0)
    assert town.lighting.on[0]
    assert town.store_base.power_w[0] == 2150.0  # a convenience store's other load at 03:00
