"""``erab gateway fleet``: one whole gateway per site of an emulated town, in one process,
against the real nats-server (MQTT over mutual TLS) and the RA's JetStream consumers.

Each gateway must arrive under its own identity (the broker's per-gateway permissions would
refuse anything else), commission its own site's devices, and a second run must reuse the
certificates and site configs of the first."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest

from erab.bus import Hello, RunningBroker, Stream, TelemetryBatch, regenerate_and_reload
from erab.clock import JST, RealClock, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.server import TownServer
from erab.echonet.transport import random_loopback_address
from erab.gateway.config import load_site_config
from erab.gateway.fleet import (
    Fleet,
    FleetError,
    FleetSettings,
    FleetSite,
    bind_addresses,
    read_fleet_status,
    render_site_config,
)
from erab.security import CertificateAuthority, SecurityHome, public_key_text
from erab.security.keys import load_or_create_ed25519_key
from tests.bus.conftest import Deployment, connect_ra
from tests.gateway.test_service import collect

pytestmark = pytest.mark.timeout(120)
START = datetime(2026, 8, 3, 13, 0, tzinfo=JST)
SPECS = (
    SiteSpec("home-1", pv_w=4500.0, battery_wh=9800.0),
    SiteSpec("home-2", pv_w=3000.0),
    SiteSpec("home-3", battery_wh=6500.0),
)


@pytest.fixture
async def town() -> AsyncIterator[TownServer]:
    town = Town(Scenario(SPECS, seed=5), START)
    town.advance_to(START.timestamp())
    server = TownServer(town, SimulatedClock(START, speed=0), base=random_loopback_address())
    await server.start()
    server.tick()
    try:
        yield server
    finally:
        await server.close()


def with_command_key(deployment: Deployment) -> None:
    security = SecurityHome(deployment.home)
    key = load_or_create_ed25519_key(security.command_key)
    security.command_public_key.write_text(public_key_text(key.public_key()) + "\n")


def make_fleet(deployment: Deployment, broker: RunningBroker, town: TownServer) -> Fleet:
    sites = [FleetSite(s.name, a) for s, a in zip(SPECS, town.addresses, strict=True)]
    settings = FleetSettings(
        broker_host=broker.host, broker_port=broker.mqtt_port,
        bind_base=random_loopback_address(), poll_interval_s=0.5, heartbeat_interval_s=30,
        status_every_s=0.5,
    )  # fmt: skip
    return Fleet(deployment.home, sites, settings)


async def test_every_site_gets_its_own_gateway_identity_and_its_telemetry_arrives(
    deployment: Deployment, broker: RunningBroker, town: TownServer
) -> None:
    with_command_key(deployment)
    fleet = make_fleet(deployment, broker, town)
    assert sorted(fleet.enrol()) == ["gw-home-1", "gw-home-2", "gw-home-3"]
    counts = await fleet.commission()
    # home-1: battery + PV; home-2: PV; home-3: battery (and each its air conditioner)
    config = load_site_config(fleet.site_dir(fleet.sites[0]) / "site.toml")
    kinds = sorted(d.device_id.split(".")[1].split("-")[0] for d in config.devices)
    assert "battery" in kinds and "pv" in kinds
    assert counts["home-1"] == len(config.devices)
    assert counts["home-2"] >= 1 and counts["home-3"] >= 1
    node_ids = {town.endpoints()[0].identification}
    assert {d.node_id for d in config.devices} == node_ids

    ra = await connect_ra(deployment, broker)
    try:
        events = await ra.consumer(Stream.EVENTS, "events")
        telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")
        threshold = gc.get_threshold()
        runner = asyncio.create_task(fleet.run(6.0))
        frozen_seen: list[int] = []  # objects the collector no longer scans, over the run

        async def watch() -> None:
            while not runner.done():
                frozen_seen.append(gc.get_freeze_count())
                await asyncio.sleep(0.1)

        watcher = asyncio.create_task(watch())
        got = await collect(telemetry, lambda g: {m.gateway_id for m in g
                                                  if isinstance(m, TelemetryBatch)} == {
            "gw-home-1", "gw-home-2", "gw-home-3"}, timeout_s=20)  # fmt: skip
        hellos = await collect(events, lambda g: len({m.gateway_id for m in g
                                                      if isinstance(m, Hello)}) == 3)  # fmt: skip
        status = await runner
        await watcher
    finally:
        await ra.close()
    # once its links were up the fleet froze what it had built; at its end it thawed it
    assert max(frozen_seen) > 0
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == threshold
    batches = [m for m in got if isinstance(m, TelemetryBatch)]
    assert {b.gateway_id for b in batches} == {"gw-home-1", "gw-home-2", "gw-home-3"}
    # a battery's SOC as the town has it (the clock stands still: the same on every poll)
    soc = {s.values["soc_pct"] for b in batches if b.gateway_id == "gw-home-1"
           for s in b.samples if "soc_pct" in s.values}  # fmt: skip
    town_soc = round(100 * town.town.battery.stored_wh[0] / town.town.battery.capacity_wh[0])
    assert soc and all(abs(v - town_soc) <= 1 for v in soc)
    sites_of = {m.gateway_id: m.site_id for m in hellos if isinstance(m, Hello)}
    assert sites_of == {"gw-home-1": "home-1", "gw-home-2": "home-2", "gw-home-3": "home-3"}
    assert status.gateways == 3 and status.polls >= 3 and status.all_up_after_s is not None
    written = read_fleet_status(deployment.home)
    assert written["running"] is False and written["gateways"] == 3

    # a second run reuses what the first made
    again = make_fleet(deployment, broker, town)
    assert again.enrol() == []
    assert await again.commission() == {}


async def test_a_revoked_fleet_gateway_is_cut_off_and_the_others_stay(
    deployment: Deployment, broker: RunningBroker, town: TownServer
) -> None:

    with_command_key(deployment)
    fleet = make_fleet(deployment, broker, town)
    fleet.enrol()
    await fleet.commission()
    runner = asyncio.create_task(fleet.run(20.0))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while fleet.refresh_status().links_up < 3:
        assert loop.time() < deadline, "the fleet did not connect"
        await asyncio.sleep(0.1)
    ca = CertificateAuthority.open(SecurityHome(deployment.home), RealClock())
    assert len(ca.revoke_gateway("gw-home-2", "keyCompromise")) == 1
    regenerate_and_reload(deployment.home)
    deadline = loop.time() + 10
    while True:
        up = {g.gateway_id: g.link_up for g in fleet.gateways}
        if not up["gw-home-2"]:
            break
        assert loop.time() < deadline, "the revoked gateway kept its link"
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)
    up = {g.gateway_id: g.link_up for g in fleet.gateways}
    assert up == {"gw-home-1": True, "gw-home-2": False, "gw-home-3": True}
    runner.cancel()
    await asyncio.gather(runner, return_exceptions=True)


def test_a_fleet_refuses_a_home_without_a_ca(tmp_path: Path) -> None:
    settings = FleetSettings(broker_host="127.0.0.1", broker_port=8883)
    fleet = Fleet(tmp_path, [FleetSite("home-1", "127.1.0.1")], settings)
    with pytest.raises(FleetError, match="erab pki init"):
        fleet.enrol()


def test_gateway_addresses_stay_on_loopback() -> None:
    assert bind_addresses("127.3.0.254", 3) == ["127.3.0.254", "127.3.0.255", "127.3.1.0"]
    with pytest.raises(FleetError, match="loopback"):
        bind_addresses("127.255.255.254", 3)
    with pytest.raises(FleetError, match="not an IPv4"):
        bind_addresses("nowhere", 1)


def test_the_site_config_written_at_commissioning_reads_back(tmp_path: Path) -> None:
    site = FleetSite('home-"1', "127.1.0.9")  # a quote in an id must not break the TOML
    settings = FleetSettings(broker_host="127.0.0.1", broker_port=18883, poll_interval_s=5.0)
    path = tmp_path / "site.toml"
    path.write_text(render_site_config(site, settings, "127.3.0.9",
                                       [("home-1-battery-1", "fe00", "027d01")]))  # fmt: skip
    config = load_site_config(path)
    assert (config.gateway_id, config.site_id) == ('gw-home-"1', 'home-"1')
    assert (config.broker_port, config.poll_interval_s, config.bind) == (18883, 5.0, "127.3.0.9")
    assert config.hosts == ("127.1.0.9",) and config.multicast is False
    assert [(d.device_id, d.node_id, d.eoj.class_code) for d in config.devices] == [
        ("home-1-battery-1", "fe00", 0x027D)
    ]
    assert config.identity.cert == tmp_path / "identity" / 'gw-home-"1.pem'


def test_the_status_file_names_the_running_fleet(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no fleet"):
        read_fleet_status(tmp_path)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fleet.json").write_text(json.dumps({"gateways": 2}))
    assert read_fleet_status(tmp_path)["gateways"] == 2

