"""Every property every emulated object serves fits its class's Appendix layout, and the
values are the model's."""

from __future__ import annotations

import struct
from datetime import datetime

import pytest

from erab.clock import JST
from erab.devices import Scenario, SiteSpec, Town, site_objects
from erab.echonet.classdb import UnknownProperty, get_class

START = datetime(2026, 8, 3, 19, tzinfo=JST)


@pytest.fixture(scope="module")
def town() -> Town:
    sites = (
        SiteSpec(
            "home", pv_w=4000.0, battery_wh=9800.0, ev=True, water_heater=True, fuel_cell=True
        ),
        SiteSpec("store", kind="store", showcases=2, battery_wh=5000.0, pv_w=8000.0),
    )
    t = Town(Scenario(sites, seed=5), START, max_step_s=600.0)
    t.advance_to(START.timestamp() + 3600)
    return t


def test_every_served_value_decodes_with_the_class_database(town: Town) -> None:
    checked = 0
    for site in range(town.n_sites):
        for obj in site_objects(town, site):
            device_class = get_class(obj.eoj.class_code)
            for epc in sorted(obj.get_map - {0x9D, 0x9E, 0x9F}):
                try:
                    spec = device_class.property(epc)
                except UnknownProperty:
                    continue
                edt = obj.read(epc)
                assert edt is not None
                spec.decode(edt)  # raises on a wrong size or value
                checked += 1
    assert checked > 100


def test_each_class_is_served_with_its_model_values(town: Town) -> None:
    objects = {o.eoj.class_code: o for o in site_objects(town, 0)}
    pv = objects[0x0279]
    assert struct.unpack(">H", pv.read(0xE0) or b"")[0] == round(town.pv.power_w[0])
    ev = objects[0x027E]
    assert struct.unpack(">I", ev.read(0xE2) or b"")[0] == round(town.ev.battery.stored_wh[0])
    heater = objects[0x026B]
    assert struct.unpack(">H", heater.read(0xE1) or b"")[0] == round(
        town.water_heater.remaining_hot_water_l()[0]
    )
    cell = objects[0x027C]
    assert struct.unpack(">H", cell.read(0xC4) or b"")[0] == round(town.fuel_cell.power_w[0])
    light = objects[0x0290]
    assert light.read(0x80) == (b"\x30" if town.lighting.on[0] else b"\x31")


def test_classes_settable_properties_without_a_model_are_stored(town: Town) -> None:
    aircon = site_objects(town, 0)[0]
    assert aircon.eoj.class_code == 0x0130
    assert aircon.write(0xA0, b"\x41")  # air flow: auto (no effect on the model)
    assert aircon.read(0xA0) == b"\x41"
    assert not aircon.write(0xBB, b"\x10")  # measured room temperature is get-only


def test_pv_curtailment_set_limits_the_next_steps_output(town: Town) -> None:
    store_pv = next(o for o in site_objects(town, 1) if o.eoj.class_code == 0x0279)
    noon = datetime(2026, 8, 4, 12, tzinfo=JST).timestamp()
    town.advance_to(noon)
    assert store_pv.write(0xA0, bytes((10,)))  # 10 % of rated
    town.advance_to(noon + 300)
    index = store_pv.index
    assert town.pv.power_w[index] <= 0.1 * town.pv.rated_w[index] + 1e-9
    assert store_pv.read(0xD1) in (b"\x41", b"\x44")


def test_capacities_and_ratings_are_the_models_not_placeholders(town: Town) -> None:
    objects = {o.eoj.class_code: o for o in site_objects(town, 0)}
    battery, b = objects[0x027D], town.battery
    decode = get_class(0x027D).property
    eta = b.efficiency[0]
    # 0xA2/0xA3: between the 10 % reserve (0xA7) and the 100 % ceiling (0xA6), AC side
    assert decode(0xA2).decode(battery.read(0xA2) or b"") == round(9800 * 0.9 / eta)
    assert decode(0xA3).decode(battery.read(0xA3) or b"") == round(9800 * 0.9 * eta)
    assert decode(0xA7).decode(battery.read(0xA7) or b"") == 10
    assert decode(0xAA).decode(battery.read(0xAA) or b"").name == "noSetting"
    ev = objects[0x027E]
    spec = get_class(0x027E).property
    assert spec(0xC8).decode(ev.read(0xC8) or b"")["maximumElectricPower"] == 6000
    assert spec(0xCA).decode(ev.read(0xCA) or b"")["maximumCurrent"] == pytest.approx(16.7)
    assert spec(0xD0).decode(ev.read(0xD0) or b"") == 40_000
    assert spec(0xE5).decode(ev.read(0xE5) or b"") == "notNecessary"
