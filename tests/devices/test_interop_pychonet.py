"""pychonet (PyPI; the library behind Home Assistant's ECHONET Lite integration), an
independent controller, reads and controls an emulated home over loopback UDP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.server import TownServer
from erab.echonet.transport import random_loopback_address
from erab.meter.smartmeter import MeterFleet, SmartMeter
from tests.requires import peer

pychonet = peer("pychonet")
from pychonet import HomeAirConditioner, StorageBattery  # noqa: E402
from pychonet.LowVoltageSmartElectricEnergyMeter import (  # noqa: E402
    LowVoltageSmartElectricEnergyMeter,
)

from tests.pychonet_peer import discovered, pychonet_client  # noqa: E402

START = datetime(2026, 8, 3, 15, 0, tzinfo=JST)


@pytest.fixture
async def home() -> AsyncIterator[tuple[str, Town, SimulatedClock, TownServer]]:
    # storage export allowed: at 15:00 PV covers the house, and the discharge shows in full
    home = SiteSpec("home", pv_w=4000.0, battery_wh=9800.0, battery_export_allowed=True)
    town = Town(Scenario((home,), seed=8), START)
    meters = MeterFleet(1, START)
    town.observers.append(meters.observe)
    clock = SimulatedClock(START, speed=0)
    server = TownServer(
        town, clock, base=random_loopback_address(), extra_objects=lambda i: [SmartMeter(meters, i)]
    )
    await server.start()
    server.tick()
    yield server.addresses[0], town, clock, server
    await server.close()


@pytest.fixture
async def api() -> AsyncIterator[Any]:
    async with pychonet_client() as client:
        yield client


async def test_pychonet_discovers_the_homes_devices(api, home) -> None:
    host, _, _, _ = home
    state = await discovered(api, host)
    found = {(g, c) for g, classes in state["instances"].items() for c in classes}
    assert {(0x01, 0x30), (0x02, 0x79), (0x02, 0x7D), (0x02, 0x88)} <= found


async def test_pychonet_reads_live_values_of_the_emulated_home(api, home) -> None:
    host, town, _, _ = home
    await discovered(api, host)
    await api.getAllPropertyMaps(host, 0x02, 0x7D, 0x01)
    battery = StorageBattery(host, api)
    values = await battery.update([0xE4, 0xD3])
    assert values[0xE4] == round(town.battery.soc_pct[0])
    assert values[0xD3] == round(town.battery.power_w[0])


async def test_pychonet_controls_the_air_conditioner_and_the_model_follows(api, home) -> None:
    host, town, clock, server = home
    await discovered(api, host)
    await api.getAllPropertyMaps(host, 0x01, 0x30, 0x01)
    aircon = HomeAirConditioner(host, api)
    assert await aircon.on() is True
    assert await aircon.setMode("cool") is True
    assert await aircon.setOperationalTemperature(23) is True
    assert town.home_ac.on[0] and town.home_ac.set_temp_c[0] == 23.0
    clock.advance(3600)
    server.tick()
    assert abs(town.home_ac.room_temp_c[0] - 23.0) < 0.5
    assert await aircon.update(0xB3) == 23


async def test_pychonet_tells_the_battery_to_discharge_and_reads_the_meter_see_it(
    api, home
) -> None:
    host, town, clock, server = home
    await discovered(api, host)
    await api.getAllPropertyMaps(host, 0x02, 0x7D, 0x01)
    await api.getAllPropertyMaps(host, 0x02, 0x88, 0x01)
    battery = StorageBattery(host, api)
    meter = LowVoltageSmartElectricEnergyMeter(host, api)
    before_w = await meter.update(0xE7)
    assert before_w == round(town.site_net_w[0])
    assert await battery.setMessage(0xEC, 2000, 4) is True  # discharging power, W
    assert await battery.setOperationMode(0x43) is True  # discharging
    clock.advance(60)
    server.tick()
    assert await battery.update(0xD3) == -2000
    without_battery_w = town.site_load_w[0] - town.site_generation_w[0]
    assert await meter.update(0xE7) == round(without_battery_w - 2000)
