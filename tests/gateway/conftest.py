"""The bus tests' deployment (erab's PKI) and real nats-server, reused for the uplink tests;
an emulated home (TownServer on a random loopback address) for the run-loop tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.server import TownServer
from erab.echonet.transport import random_loopback_address
from erab.meter.smartmeter import MeterFleet, SmartMeter
from tests.bus.conftest import broker, deployment, ra  # noqa: F401

START = datetime(2026, 8, 3, 13, 0, tzinfo=JST)


@dataclass
class Home:
    town: Town
    server: TownServer
    meter: SmartMeter
    clock: SimulatedClock  # stands still unless a test advances it (then server.tick())

    @property
    def node_id(self) -> str:
        return self.server.endpoints()[0].identification


@pytest.fixture
async def home() -> AsyncIterator[Home]:
    spec = SiteSpec("home", pv_w=4500.0, battery_wh=9800.0, battery_export_allowed=True)
    town = Town(Scenario((spec,), seed=21), START)
    # a coefficient and unit other than 1 and 0.1 kWh, so scaling shows in the readings
    meters = MeterFleet(1, START, coefficient=2, unit_code=0x02, initial_import_kwh=4321.0)
    town.observers.append(meters.observe)
    town.advance_to(START.timestamp())
    town.battery.stored_wh[0] = 0.6 * town.battery.capacity_wh[0]
    meter = SmartMeter(meters, 0)
    # a clock that stands still: the devices report the same values on every poll
    clock = SimulatedClock(START, speed=0)
    server = TownServer(town, clock, base=random_loopback_address(),
                        extra_objects=lambda i: [meter])  # fmt: skip
    await server.start()
    server.tick()
    try:
        yield Home(town, server, meter, clock)
    finally:
        await server.close()


