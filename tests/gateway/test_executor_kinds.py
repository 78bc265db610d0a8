"""The command kinds beyond the battery, each on a real emulated device over UDP (the town's
TownServer on a random loopback address): EV charge/discharge (0x027E), water-heater shift
(0x026B), air-conditioner offset and power limit (0x0130), PV limit (0x0279); each through
the safety envelope and restored at the window's end."""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import DeviceOutcome
from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.server import TownServer
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.echonet.transport import random_loopback_address
from erab.gateway.envelope import ComfortBand, EvLimits, PvLimits, WaterHeaterLimits
from erab.gateway.executor import CommandExecutor, ControlledDevice
from erab.gateway.lifecycle import Stage
from erab.gateway.outbox import Outbox
from erab.security import (
    AuditLog,
    EnvelopeSigner,
    EnvelopeVerifier,
    MemoryVerifierStateStore,
    SqliteAuditStore,
)

GW = "gw-0001"
# late evening: every emulated car is home and plugged in (trips end by 23:30)
START = datetime(2026, 8, 3, 23, 40, tzinfo=JST)
EV, HEATER = EOJ(0x02, 0x7E, 0x01), EOJ(0x02, 0x6B, 0x01)
AIRCON, PV = EOJ(0x01, 0x30, 0x01), EOJ(0x02, 0x79, 0x01)


@dataclass
class Site:
    town: Town
    clock: SimulatedClock
    server: TownServer
    controller: Controller
    signer: EnvelopeSigner
    executor: CommandExecutor

    async def command(self, body: dict[str, object], minutes: float = 30.0) -> DeviceOutcome:
        now = self.clock.now()
        body = {**body, "start": now.isoformat(),
                "end": (now + timedelta(minutes=minutes)).isoformat()}  # fmt: skip
        ack = await self.executor.handle(self.signer.sign(GW, body))
        assert ack.rejected is None
        [outcome] = ack.outcomes
        return outcome

    async def read(self, eoj: EOJ, epc: int) -> bytes:
        return (await self.controller.get_raw(self.server.addresses[0], eoj, [epc]))[epc]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.server.tick()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    spec = SiteSpec("home", pv_w=4500.0, ev=True, water_heater=True)
    town = Town(Scenario((spec,), seed=5), START)
    town.advance_to(START.timestamp())
    clock = SimulatedClock(START, speed=0)
    server = TownServer(town, clock, base=random_loopback_address())
    await server.start()
    server.tick()
    controller = Controller(random_loopback_address(), timeout_s=1.0)
    await controller.open()
    key = Ed25519PrivateKey.generate()
    audit = AuditLog(SqliteAuditStore(tmp_path / "audit.sqlite"), clock)
    verifier = EnvelopeVerifier(GW, clock, MemoryVerifierStateStore(),
                                trusted_key=key.public_key(), audit=audit)  # fmt: skip
    host = server.addresses[0]
    devices = {
        "ev-1": ControlledDevice("ev-1", "ev", host, EV, ev=EvLimits(soc_reserve_pct=30.0)),
        "heater-1": ControlledDevice("heater-1", "water_heater", host, HEATER,
                                     water_heater=WaterHeaterLimits(min_hot_water_l=100.0)),
        "aircon-1": ControlledDevice("aircon-1", "aircon", host, AIRCON,
                                     comfort=ComfortBand(cooling_max_c=28.0)),
        "pv-1": ControlledDevice("pv-1", "pv", host, PV, pv=PvLimits(min_limit_pct=10.0)),
    }  # fmt: skip
    outbox = Outbox(tmp_path / "outbox.sqlite", GW)
    executor = CommandExecutor(GW, verifier=verifier, controller=controller, devices=devices,
                               audit=audit, clock=clock, ack_seq=outbox)  # fmt: skip
    try:
        yield Site(town, clock, server, controller, EnvelopeSigner(key, clock), executor)
    finally:
        outbox.close()
        await controller.close()
        await server.close()


async def test_an_ev_discharge_drives_the_charger_and_is_restored_at_the_window_end(
    site: Site,
) -> None:
    assert site.town.ev.connected[0]
    site.town.ev.battery.stored_wh[0] = 0.7 * site.town.ev.battery.capacity_wh[0]
    site.advance(1.0)
    mode_before = await site.read(EV, 0xDA)
    outcome = await site.command({"type": "ev_power", "device_id": "ev-1", "power_w": -3000.0})
    assert (outcome.outcome, outcome.readback["mode_code"]) == ("applied", 0x43)
    assert outcome.readback["discharge_setting_w"] == 3000.0
    site.advance(60.0)
    assert struct.unpack(">i", await site.read(EV, 0xD3))[0] < 0  # the car gives power
    site.advance(30 * 60.0)
    assert len(await site.executor.restore_due()) == 1
    assert await site.read(EV, 0xDA) == mode_before


async def test_an_ev_command_above_the_chargers_rating_is_clipped_to_it(site: Site) -> None:
    rating = struct.unpack(">II", await site.read(EV, 0xC8))[1]  # min/max charging power
    outcome = await site.command({"type": "ev_power", "device_id": "ev-1", "power_w": 50_000.0})
    assert outcome.outcome == "clipped"
    assert outcome.reason == f"above rated power {rating} W"
    assert struct.unpack(">I", await site.read(EV, 0xEB))[0] == rating


async def test_an_ev_command_below_the_chargers_minimum_is_raised_to_it(site: Site) -> None:
    minimum = struct.unpack(">II", await site.read(EV, 0xC8))[0]
    outcome = await site.command({"type": "ev_power", "device_id": "ev-1", "power_w": 100.0})
    assert outcome.outcome == "clipped"
    assert outcome.reason == f"below the charger's minimum {minimum} W"
    assert outcome.readback["charge_setting_w"] == minimum


async def test_an_ev_discharge_at_the_cars_reserve_or_with_no_car_is_refused(site: Site) -> None:
    site.town.ev.battery.stored_wh[0] = 0.25 * site.town.ev.battery.capacity_wh[0]
    site.advance(1.0)
    before = await site.read(EV, 0xDA)
    outcome = await site.command({"type": "ev_power", "device_id": "ev-1", "power_w": -1000.0})
    assert outcome.outcome == "refused"
    assert outcome.reason is not None and "at or below 30%" in outcome.reason
    assert await site.read(EV, 0xDA) == before

    away = datetime(2026, 8, 4, 13, 0, tzinfo=JST)  # 13:00 next day
    site.advance((away - site.clock.now()).total_seconds())
    if site.town.ev.connected[0]:
        pytest.fail("the emulated car was expected to be out at 13:00")
    outcome = await site.command({"type": "ev_power", "device_id": "ev-1", "power_w": 2000.0})
    assert (outcome.outcome, outcome.reason) == ("refused", "no car connected to the charger")


async def test_a_water_heater_shift_starts_boiling_and_restores_the_automatic_setting(
    site: Site,
) -> None:
    assert await site.read(HEATER, 0xB0) == b"\x41"  # automatic
    outcome = await site.command(
        {"type": "water_heater_shift", "device_id": "heater-1", "heating": True}, minutes=60
    )
    assert (outcome.outcome, outcome.readback["heating_code"]) == ("applied", 0x42)
    assert await site.read(HEATER, 0xB0) == b"\x42"  # manual heating, over the LAN
    site.advance(61 * 60.0)
    await site.executor.restore_due()
    assert await site.read(HEATER, 0xB0) == b"\x41"


async def test_stopping_the_water_heater_with_too_little_hot_water_is_refused(
    site: Site,
) -> None:
    left = int.from_bytes(await site.read(HEATER, 0xE1))
    device = site.executor.devices["heater-1"]
    site.executor.devices["heater-1"] = ControlledDevice(
        device.device_id, device.kind, device.host, device.eoj,
        water_heater=WaterHeaterLimits(min_hot_water_l=left + 1.0),
    )  # fmt: skip
    outcome = await site.command(
        {"type": "water_heater_shift", "device_id": "heater-1", "heating": False}
    )
    assert outcome.outcome == "refused"
    assert outcome.reason == (f"only {left} L of hot water left, below the minimum {left + 1} L: "
                              "boiling not stopped")  # fmt: skip
    assert await site.read(HEATER, 0xB0) == b"\x41"


async def test_an_aircon_power_limit_is_refused_where_the_unit_does_not_offer_0x99(
    site: Site,
) -> None:
    outcome = await site.command(
        {"type": "aircon_power_limit", "device_id": "aircon-1", "limit_w": 500.0}
    )
    assert outcome.outcome == "refused"
    assert outcome.reason is not None and "power limit setting 0x99" in outcome.reason
    assert site.executor.active == {}


async def test_an_aircon_offset_and_a_pv_limit_are_set_and_restored(site: Site) -> None:
    site.town.home_ac.mode[0] = 0x42  # cooling
    site.town.home_ac.set_temp_c[0] = 25.0
    pv_before = await site.read(PV, 0xA0)
    aircon = await site.command({"type": "aircon_offset", "device_id": "aircon-1",
                                 "offset_c": 2.0})  # fmt: skip
    pv = await site.command({"type": "pv_limit", "device_id": "pv-1", "limit_pct": 5.0})
    assert (aircon.outcome, aircon.readback) == ("applied", {"setpoint_c": 27.0})
    assert (pv.outcome, pv.reason, pv.readback) == (
        "clipped", "below the site's minimum 10%", {"limit_pct": 10.0})
    assert await site.read(AIRCON, 0xB3) == b"\x1b"  # 27 °C over the LAN
    site.advance(31 * 60.0)
    assert len(await site.executor.restore_due()) == 2
    assert await site.read(AIRCON, 0xB3) == b"\x19"  # 25 °C again
    assert await site.read(PV, 0xA0) == pv_before
    assert all(life.stage is Stage.RESTORED for life in site.executor.lives.values())
