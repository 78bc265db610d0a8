"""Signed commands carried out on a real emulated battery over UDP (the town's TownServer on a
random loopback address): the envelope verified, the safety envelope applied, the Set read
back, the previous state restored, every step in the site's audit log."""

from __future__ import annotations

import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.server import TownServer
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.echonet.transport import random_loopback_address
from erab.gateway.envelope import BatteryLimits
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
START = datetime(2026, 8, 3, 13, 0, tzinfo=JST)
BATTERY = EOJ(0x02, 0x7D, 0x01)


@dataclass
class Site:
    town: Town
    clock: SimulatedClock
    server: TownServer
    controller: Controller
    signer: EnvelopeSigner
    executor: CommandExecutor
    audit: AuditLog
    key: Ed25519PrivateKey

    def discharge(self, power_w: float, minutes: float = 30.0, **sign: object) -> bytes:
        now = self.clock.now()
        body = {
            "type": "battery_power",
            "device_id": "battery-1",
            "power_w": power_w,
            "start": now.isoformat(),
            "end": (now + timedelta(minutes=minutes)).isoformat(),
        }
        return self.signer.sign(sign.pop("gateway_id", GW), body, **sign)  # type: ignore[arg-type]

    async def read(self, epc: int) -> bytes:
        raw = await self.controller.get_raw(self.server.addresses[0], BATTERY, [epc])
        return raw[epc]

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.server.tick()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    home = SiteSpec("home", pv_w=4500.0, battery_wh=9800.0, battery_export_allowed=True)
    town = Town(Scenario((home,), seed=21), START)
    town.advance_to(START.timestamp())
    town.battery.stored_wh[0] = 0.6 * town.battery.capacity_wh[0]
    clock = SimulatedClock(START, speed=0)
    server = TownServer(town, clock, base=random_loopback_address())
    await server.start()
    server.tick()
    controller = Controller(random_loopback_address(), timeout_s=1.0)
    await controller.open()
    key = Ed25519PrivateKey.generate()
    audit = AuditLog(SqliteAuditStore(tmp_path / "audit.sqlite"), clock)
    verifier = EnvelopeVerifier(
        GW, clock, MemoryVerifierStateStore(), trusted_key=key.public_key(), audit=audit
    )
    device = ControlledDevice(
        "battery-1",
        "battery",
        server.addresses[0],
        BATTERY,
        battery=BatteryLimits(rated_power_w=3000.0, soc_reserve_pct=20.0),
    )
    outbox = Outbox(tmp_path / "outbox.sqlite", GW)
    executor = CommandExecutor(
        GW,
        verifier=verifier,
        controller=controller,
        devices={"battery-1": device},
        audit=audit,
        clock=clock,
        ack_seq=outbox,
        uplink_grace=timedelta(minutes=5),
    )
    try:
        yield Site(
            town, clock, server, controller, EnvelopeSigner(key, clock), executor, audit, key
        )
    finally:
        outbox.close()
        await controller.close()
        await server.close()


async def test_a_signed_discharge_drives_the_battery_and_is_restored_at_the_window_end(
    site: Site,
) -> None:
    mode_before = await site.read(0xDA)
    ack = await site.executor.handle(site.discharge(-2500.0))
    assert ack.rejected is None
    [outcome] = ack.outcomes
    assert (outcome.outcome, outcome.reason) == ("applied", None)
    assert outcome.readback["mode_code"] == 0x43
    assert outcome.readback["discharge_setting_w"] == 2500.0
    assert await site.read(0xDA) == b"\x43"  # discharging, read over the LAN
    site.advance(60.0)
    assert struct.unpack(">i", await site.read(0xD3))[0] == -2500

    site.advance(29 * 60.0)
    assert await site.executor.restore_due() == [ack.command_seq]
    assert await site.read(0xDA) == mode_before
    assert site.executor.lives[ack.command_seq].stage is Stage.RESTORED


async def test_a_discharge_above_the_rating_is_clipped_and_the_ack_says_so(site: Site) -> None:
    ack = await site.executor.handle(site.discharge(-3500.0))
    [outcome] = ack.outcomes
    assert outcome.outcome == "clipped"
    assert outcome.reason == "above rated power 3000 W"
    assert struct.unpack(">I", await site.read(0xEC))[0] == 3000


async def test_a_discharge_below_the_reserve_is_refused_and_the_battery_untouched(
    site: Site,
) -> None:
    site.town.battery.stored_wh[0] = 0.15 * site.town.battery.capacity_wh[0]
    site.advance(1.0)
    before = await site.read(0xDA)
    ack = await site.executor.handle(site.discharge(-1000.0))
    [outcome] = ack.outcomes
    assert outcome.outcome == "refused"
    assert outcome.reason is not None and "reserve" in outcome.reason
    assert await site.read(0xDA) == before


async def test_replayed_expired_forged_misaddressed_and_unknown_key_commands_are_rejected(
    site: Site,
) -> None:
    before = await site.read(0xDA)
    good = site.discharge(-1000.0)
    assert (await site.executor.handle(good)).rejected is None
    replay = await site.executor.handle(good)
    assert replay.rejected == "replayed"

    stale = site.discharge(-1000.0, valid_for=timedelta(seconds=10))
    site.advance(120.0)
    assert (await site.executor.handle(stale)).rejected == "expired"

    wire = json.loads(site.discharge(-1000.0))
    wire["envelope"]["body"]["power_w"] = -3000  # changed after signing
    forged = await site.executor.handle(json.dumps(wire).encode())
    assert forged.rejected == "bad_signature"

    other = await site.executor.handle(site.discharge(-1000.0, gateway_id="gw-0002"))
    assert other.rejected == "wrong_gateway"

    stranger = EnvelopeSigner(Ed25519PrivateKey.generate(), site.clock)
    unknown = await site.executor.handle(
        stranger.sign(GW, {"type": "cancel", "device_id": "battery-1"})
    )
    assert unknown.rejected == "unknown_key"
    for ack in (replay, forged, other, unknown):
        assert ack.outcomes == []
    # only the good command touched the battery; nothing after it did
    assert await site.read(0xDA) == b"\x43" != before


async def test_losing_the_uplink_past_the_grace_restores_the_battery(site: Site) -> None:
    before = await site.read(0xDA)
    ack = await site.executor.handle(site.discharge(-2000.0, minutes=120))
    assert ack.outcomes[0].outcome == "applied"
    assert await site.executor.uplink_state(False) == []
    site.advance(4 * 60.0)
    assert await site.executor.uplink_state(False) == []  # within the 5-minute grace
    assert await site.read(0xDA) == b"\x43"
    site.advance(61.0)
    assert await site.executor.uplink_state(False) == [ack.command_seq]
    assert await site.read(0xDA) == before


async def test_cancel_restores_and_every_transition_is_in_the_audit_log(site: Site) -> None:
    before = await site.read(0xDA)
    first = await site.executor.handle(site.discharge(-2000.0))
    cancel = await site.executor.handle(
        site.signer.sign(GW, {"type": "cancel", "device_id": "battery-1"})
    )
    assert cancel.outcomes[0].outcome == "applied"
    assert await site.read(0xDA) == before

    def stages(seq: int) -> list[object]:
        records = site.audit.store.records()
        return [r.details.get("action") for r in records if r.subject == f"command {seq}"]

    assert stages(first.command_seq) == ["verified", "scheduled", "applied", "restored"]
    assert stages(cancel.command_seq) == ["verified", "scheduled", "restored"]
    assert site.audit.verify().intact
