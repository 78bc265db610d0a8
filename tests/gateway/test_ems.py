"""The local EMS: the pure decision rule by rule, then the run loop against an emulated home
(real UDP) and a real nats-server: it charges the battery from the PV surplus the meter
shows, is audited, stands aside while an RA command is in force and resumes after it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import Acknowledgement, RaLink, RunningBroker, Stream
from erab.clock import RealClock
from erab.gateway.config import load_site_config
from erab.gateway.ems import EmsInputs, EmsPolicy, EmsSetpoint, decide_ems
from erab.gateway.envelope import BatteryLimits
from erab.gateway.service import Gateway
from erab.security import AuditLog, EnvelopeSigner, SqliteAuditStore
from tests.bus.conftest import Deployment
from tests.gateway.conftest import Home
from tests.gateway.test_service import (
    GW,
    collect,
    command_key_file,
    running,
    wait_for,
    write_site_config,
)

LIMITS = BatteryLimits(rated_power_w=3000.0, soc_reserve_pct=20.0, soc_max_pct=95.0)
SELF = EmsPolicy(self_consumption=True)


def test_off_by_default_it_never_asks_anything() -> None:
    assert decide_ems(EmsInputs(2500.0, 0.0, 50.0), EmsPolicy(), LIMITS) is None


def test_self_consumption_charges_from_surplus_and_discharges_against_import() -> None:
    surplus = decide_ems(EmsInputs(-1200.0, 0.0, 50.0), SELF, LIMITS)
    assert surplus == EmsSetpoint(1200.0, "self-consumption: charge from PV surplus")
    importing = decide_ems(EmsInputs(800.0, 300.0, 50.0), SELF, LIMITS)  # 300 W charging now
    assert importing == EmsSetpoint(-500.0, "self-consumption: discharge against import")


def test_the_setpoint_stays_inside_rating_reserve_and_max() -> None:
    assert decide_ems(EmsInputs(5000.0, 0.0, 50.0), SELF, LIMITS) == EmsSetpoint(
        -3000.0, "self-consumption: discharge against import")
    at_reserve = decide_ems(EmsInputs(900.0, -500.0, 20.0), SELF, LIMITS)
    assert at_reserve is not None and at_reserve.power_w == 0.0
    assert at_reserve.reason.startswith("at reserve")
    assert decide_ems(EmsInputs(-900.0, 0.0, 95.0), SELF, LIMITS) is None  # full, idle already


def test_peak_cut_discharges_only_above_the_contracted_demand() -> None:
    peak = EmsPolicy(peak_cut_w=4000.0)
    assert decide_ems(EmsInputs(5200.0, 0.0, 60.0), peak, LIMITS) == EmsSetpoint(-1200.0,
                                                                                 "peak cut")
    assert decide_ems(EmsInputs(3000.0, 0.0, 60.0), peak, LIMITS) is None  # below: stays idle
    assert decide_ems(EmsInputs(2500.0, -1200.0, 60.0), peak, LIMITS) == EmsSetpoint(
        0.0, "below the contracted demand")  # 3700 W without it: stop discharging


def test_a_change_inside_the_deadband_is_not_worth_a_set() -> None:
    assert decide_ems(EmsInputs(-50.0, 1000.0, 50.0), SELF, LIMITS) is None


@pytest.mark.timeout(120)
async def test_the_run_loop_charges_from_surplus_stands_aside_for_the_ra_and_resumes(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    town = home.town
    town.battery.mode[0] = 0x44  # standby: the PV surplus goes out through the meter

    def physics() -> None:
        home.clock.advance(1.0)
        home.server.tick()

    physics()
    surplus_w = -float(town.site_net_w[0])
    assert surplus_w > 500
    signing = Ed25519PrivateKey.generate()
    key = command_key_file(tmp_path, signing)
    config = load_site_config(write_site_config(
        tmp_path / "site.toml", deployment, broker, home, key, poll_interval_s=0.1,
        extra="[ems]\nself_consumption = true\n"))  # fmt: skip
    gateway = Gateway(config, tmp_path / "gw-home")
    acks = await ra.consumer(Stream.ACKS, "acks")
    signer = EnvelopeSigner(signing, RealClock())
    async with running(gateway):
        await wait_for(lambda: gateway.ems_actions >= 1)
        assert town.battery.mode[0] == 0x42  # charging
        assert town.battery.charge_setting_w[0] == pytest.approx(surplus_w, abs=1)
        physics()
        assert abs(town.site_net_w[0]) < 5  # the surplus now goes into the battery

        # the RA discharges for the window: the EMS does not fight it
        await wait_for(lambda: gateway.link_up)
        now = RealClock().now()
        await ra.send_command(GW, signer.sign(GW, {
            "type": "battery_power", "device_id": "battery-1", "power_w": -2000.0,
            "start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}))
        [ack] = await collect(acks, lambda got: len(got) >= 1)
        assert isinstance(ack, Acknowledgement) and ack.outcomes[0].outcome == "applied"
        physics()
        actions = gateway.ems_actions
        polls = gateway.polls
        await wait_for(lambda: gateway.polls >= polls + 5)  # the meter shows a big export
        assert gateway.ems_actions == actions
        assert town.battery.mode[0] == 0x43  # still the RA's discharge

        # PV curtailed meanwhile; the RA cancels: restored to the EMS's charging, and the
        # EMS adjusts it to the smaller surplus
        town.pv.curtail_pct[0] = 20.0
        await ra.send_command(GW, signer.sign(GW, {"type": "cancel",
                                                   "device_id": "battery-1"}))  # fmt: skip
        await collect(acks, lambda got: len(got) >= 1)
        physics()
        await wait_for(lambda: gateway.ems_actions > actions)
        physics()
        assert town.battery.charge_setting_w[0] < surplus_w - 100
        assert abs(town.site_net_w[0]) < 5

    audit = AuditLog(SqliteAuditStore(tmp_path / "gw-home" / "audit.sqlite"), RealClock())
    ems = [r for r in audit.store.records() if r.subject == "local ems"]
    assert len(ems) >= 2 and {r.details["action"] for r in ems} <= {"applied", "clipped"}
    assert ems[0].details["device_id"] == "battery-1"
    assert audit.verify().intact
