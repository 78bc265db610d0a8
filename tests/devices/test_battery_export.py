"""Reverse power flow from a battery: under the usual Japanese contracts only PV surplus may
flow back to the grid, so by default a discharging battery gives at most its site's import;
a site that allows battery export (``battery_export_allowed``) may push it out."""

from __future__ import annotations

import struct
from datetime import datetime

import numpy as np
import pytest

from erab.clock import JST
from erab.devices import BatteryFleet, Scenario, SiteSpec, Town, load_scenario
from erab.devices.battery import MODE_DISCHARGING, discharge_limit_w
from erab.devices.objects import site_objects
from erab.meter.smartmeter import MeterFleet, SmartMeter

MIDNIGHT = datetime(2026, 5, 12, tzinfo=JST)  # a sunny-ish spring day, no air conditioning


def _small_home(export: bool) -> SiteSpec:
    # a low load (100 kWh a month, no AC, no lights), a big battery that cannot run empty
    return SiteSpec(
        "home",
        aircons=0,
        lighting=False,
        household_kwh_month=100.0,
        pv_w=4500.0,
        battery_wh=200_000.0,
        battery_export_allowed=export,
    )


class _Day:
    """A day of one home whose battery is told to discharge at its rating from midnight."""

    def __init__(self, export: bool) -> None:
        self.town = Town(Scenario((_small_home(export),), seed=5), MIDNIGHT)
        self.meters = MeterFleet(1, MIDNIGHT)
        self.town.observers.append(self.meters.observe)
        battery = self.town.battery
        battery.stored_wh[:] = battery.capacity_wh  # full: 5.9 kW all day would not empty it
        battery.mode[:] = MODE_DISCHARGING
        battery.discharge_setting_w[:] = battery.max_discharge_w  # 0xEC at the rating
        self.pv_only_export_wh = 0.0
        self.meter_w: list[float] = []
        self.battery_w: list[float] = []
        self.load_net_of_pv_w: list[float] = []
        meter = SmartMeter(self.meters, 0)
        battery_object = next(o for o in site_objects(self.town, 0) if o.eoj.class_code == 0x027D)
        for _ in range(24 * 60):
            self.town.advance_to(self.town.time_s + 60.0)
            load_net_of_pv = float(self.town.site_load_w[0] - self.town.site_generation_w[0])
            self.pv_only_export_wh += max(-load_net_of_pv, 0.0) * 60.0 / 3600.0
            self.load_net_of_pv_w.append(load_net_of_pv)
            self.meter_w.append(struct.unpack(">i", meter.read(0xE7) or b"")[0])
            self.battery_w.append(struct.unpack(">i", battery_object.read(0xD3) or b"")[0])


@pytest.fixture(scope="module")
def no_export() -> _Day:
    return _Day(export=False)


@pytest.fixture(scope="module")
def export() -> _Day:
    return _Day(export=True)


def test_a_home_battery_discharging_at_its_rating_never_makes_the_meter_export(
    no_export: _Day,
) -> None:
    day = no_export
    rating_w = float(day.town.battery.max_discharge_w[0])
    assert rating_w == 5900.0 and max(day.load_net_of_pv_w) < rating_w  # load is low
    # reverse energy on the meter is exactly the PV surplus (to 1 mWh), nothing from storage
    assert day.meters.export_wh[0] == pytest.approx(day.pv_only_export_wh, abs=1e-3)
    assert day.pv_only_export_wh > 1000.0  # the sun did export
    for meter_w, battery_w, net_w in zip(
        day.meter_w, day.battery_w, day.load_net_of_pv_w, strict=True
    ):
        if net_w >= 0:  # the house imports without the battery: the battery covers it, no more
            assert battery_w == -round(net_w)
            assert meter_w == 0
        else:  # PV already exports: the battery gives nothing, 0xE7 shows PV's export only
            assert battery_w == 0
            assert meter_w == round(net_w)
    # and it did discharge: all the night's and evening's load
    covered_wh = sum(max(n, 0.0) for n in day.load_net_of_pv_w) * 60.0 / 3600.0
    assert day.town.battery.discharged_wh[0] == pytest.approx(covered_wh, rel=1e-9)


def test_a_site_that_allows_battery_export_exports_at_the_rating(export: _Day) -> None:
    day = export
    assert all(w == -5900 for w in day.battery_w)
    # at 02:00 the meter shows the house's load minus the battery's 5.9 kW: export
    at_2 = 2 * 60 - 1
    assert day.meter_w[at_2] == round(day.load_net_of_pv_w[at_2] - 5900.0) < -5000
    assert day.meters.export_wh[0] > day.pv_only_export_wh + 24 * 5900.0 - 24 * 1000.0


def test_the_discharge_limit_follows_the_site_import_unless_export_is_allowed() -> None:
    limit = discharge_limit_w(
        max_discharge_w=[3000.0, 3000.0, 3000.0, 3000.0],
        site_net_w=[800.0, -1200.0, 5000.0, -1200.0],
        export_allowed=[False, False, False, True],
    )
    assert list(limit) == [800.0, 0.0, 3000.0, 3000.0]


def test_a_fleets_flexibility_depends_on_each_sites_load_and_energy() -> None:
    b = BatteryFleet(
        3, capacity_wh=10_000, soc_pct=[50, 50, 11], max_discharge_w=4000, export_allowed=False
    )
    # site imports without the battery: 600 W, 6 kW, 6 kW (the third almost at its reserve)
    limit = b.discharge_limit_w(np.array([600.0, 6000.0, 6000.0]), horizon_s=1800.0)
    reserve_wh = 0.01 * 10_000 * np.sqrt(0.9)  # 1 % above the 10 % reserve, AC side
    assert limit == pytest.approx([600.0, 4000.0, reserve_wh * 2.0])


def test_the_town_reports_what_each_battery_could_discharge_now() -> None:
    sites = (_small_home(False), SiteSpec("store", kind="store", battery_wh=16_400.0))
    town = Town(Scenario(sites, seed=5), MIDNIGHT.replace(hour=20))
    town.advance_to(town.time_s + 60.0)
    limit = town.battery_discharge_limit_w()
    without_battery = town.site_net_w[town.battery_site] - town.battery.power_w
    assert limit[0] == pytest.approx(without_battery[0])  # the home: its own import
    assert limit[1] == pytest.approx(min(8200.0, 5900.0, without_battery[1]))


def test_scenario_files_set_battery_export_per_mix_and_per_site(tmp_path) -> None:
    path = tmp_path / "town.toml"
    path.write_text(
        "[homes]\ncount = 2\nbattery = 1.0\n"
        "[stores]\ncount = 1\nbattery = 1.0\nbattery_export_allowed = true\n"
        '[[sites]]\nname = "x"\nbattery_wh = 5000\nbattery_export_allowed = true\n'
    )
    scenario = load_scenario(path)
    assert [s.battery_export_allowed for s in scenario.sites] == [False, False, True, True]
    town = Town(scenario, MIDNIGHT)
    assert list(town.battery.export_allowed) == [False, False, True, True]
    path.write_text('[homes]\nbattery_export_allowed = "yes"\n')
    with pytest.raises(ValueError, match="battery_export_allowed must be true or false"):
        load_scenario(path)


def _ev_evening(export: bool) -> tuple[Town, MeterFleet]:
    """A home with a V2H car (no PV, no battery) told to discharge at its rating all evening."""
    home = SiteSpec("home", aircons=0, lighting=False, household_kwh_month=100.0, ev=True,
                    battery_export_allowed=export)
    evening = datetime(2026, 5, 12, 20, 0, tzinfo=JST)  # the car is home
    town = Town(Scenario((home,), seed=5), evening)
    meters = MeterFleet(1, evening)
    town.observers.append(meters.observe)
    car = town.ev
    car.battery.stored_wh[:] = car.battery.capacity_wh
    car.mode[:] = MODE_DISCHARGING
    car.battery.discharge_setting_w[:] = car.battery.max_discharge_w
    for _ in range(60):
        town.advance_to(town.time_s + 60.0)
    return town, meters


def test_a_v2h_car_follows_the_same_rule_as_a_battery() -> None:
    town, meters = _ev_evening(export=False)
    assert town.ev.connected[0]
    assert meters.export_wh[0] == pytest.approx(0.0, abs=1e-6)  # no reverse flow from the car
    assert town.site_storage_w[0] == pytest.approx(-town.site_load_w[0])  # it covers the house
    town, meters = _ev_evening(export=True)
    assert meters.export_wh[0] > 1000.0  # 6 kW for an hour, less the house's load
