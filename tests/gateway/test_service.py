"""The gateway's run loop against an emulated home (TownServer on a random loopback address,
real UDP), a real nats-server (MQTT over mutual TLS) and the RA's durable JetStream
consumers: the hello lists the home's devices, telemetry carries what the devices report,
a broker outage loses nothing, and a signed command is carried out and acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import (
    Acknowledgement,
    BrokerProcess,
    Heartbeat,
    Hello,
    MeterReading,
    Ports,
    RaLink,
    RunningBroker,
    Sample,
    State,
    Stream,
    TelemetryBatch,
    UplinkMessage,
    prepare,
)
from erab.bus.ra import UplinkConsumer
from erab.clock import JST, RealClock
from erab.echonet.frame import EOJ
from erab.echonet.transport import random_loopback_address
from erab.gateway.config import load_site_config
from erab.gateway.outbox import Outbox
from erab.gateway.service import Gateway, points_of, read_status
from erab.security import EnvelopeSigner, public_key_text
from tests.bus.conftest import Deployment, connect_ra
from tests.gateway.conftest import Home

pytestmark = pytest.mark.timeout(120)
GW = "gw-a"
START = datetime(2026, 8, 3, 13, 0, tzinfo=JST)


def write_site_config(
    path: Path, deployment: Deployment, broker: RunningBroker, home: Home, command_key: Path,
    *, poll_interval_s: float = 0.3, extra: str = "",
) -> Path:  # fmt: skip
    ident = deployment.gateways[GW]
    path.write_text(f"""
gateway_id = "{GW}"
site_id = "site-{GW}"
poll_interval_s = {poll_interval_s}
heartbeat_interval_s = 30

[broker]
host = "{broker.host}"
port = {broker.mqtt_port}
reconnect_max_s = 1

[lan]
hosts = ["{home.server.addresses[0]}"]
multicast = false
bind = "{random_loopback_address()}"

[identity]
cert = "{ident.cert}"
key = "{ident.key}"
ca_bundle = "{deployment.layout.security.ca_bundle}"
command_key = "{command_key}"

[[device]]
device_id = "battery-1"
node_id = "{home.node_id}"
eoj = "027d01"
rated_power_w = 3000
{extra}
""")
    return path


def allow(home: Home, device_id: str, eoj: str) -> str:
    """A [[device]] table allow-listing one more device of the home."""
    return f'\n[[device]]\ndevice_id = "{device_id}"\nnode_id = "{home.node_id}"\neoj = "{eoj}"\n'


async def collect(
    consumer: UplinkConsumer, until: object, timeout_s: float = 15.0
) -> list[UplinkMessage]:
    """Fetch (and ack) until ``until(got)`` holds or the time is up."""
    got: list[UplinkMessage] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not until(got) and loop.time() < deadline:  # type: ignore[operator]
        try:
            deliveries = await consumer.fetch(50, 0.3)
        except TimeoutError:  # nats-py's own asyncio.TimeoutError: UplinkConsumer.fetch
            deliveries = []  # catches only nats.errors.TimeoutError (reported)
        for delivery in deliveries:
            await delivery.ack()
            got.append(delivery.message)
    return got


async def wait_for(condition: object, timeout_s: float = 15.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():  # type: ignore[operator]
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(gateway: Gateway) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(gateway.run())
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def command_key_file(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "ra-command.pub"
    path.write_text(public_key_text(key.public_key()) + "\n")
    return path


async def test_hello_and_telemetry_match_the_home_and_an_outage_loses_nothing(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = load_site_config(
        write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    )
    gateway = Gateway(config, tmp_path / "gw-home")
    events = await ra.consumer(Stream.EVENTS, "events")
    telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")
    # the broker is restarted on the same ports, so fix them in its config now
    prepare(deployment.home, ports=Ports(broker.nats_port, broker.mqtt_port, broker.monitor_port))
    restarted: BrokerProcess | None = None
    async with running(gateway):
        [hello] = await collect(events, lambda got: any(isinstance(m, Hello) for m in got))
        assert isinstance(hello, Hello)
        by_eoj = {d.eoj: d for d in hello.devices}
        assert by_eoj["027d01"].device_id == "battery-1"  # allow-listed: its installer's name
        assert by_eoj["027d01"].node_id == home.node_id
        assert {"027901", "028801"} <= set(by_eoj)  # PV and the smart meter
        meter_id = by_eoj["028801"].device_id

        first = await collect(telemetry, lambda got: sum(
            isinstance(m, TelemetryBatch) for m in got) >= 2)  # fmt: skip
        batch = next(m for m in first if isinstance(m, TelemetryBatch))
        values = {s.device_id: s.values for s in batch.samples}
        assert meter_id not in values  # the meter goes out as meter messages, not telemetry
        # one EPC list serves the site's whole poll: each sample keeps its own class's points
        classes = {d.device_id: EOJ.of(d.eoj) for d in hello.devices}
        assert len(batch.samples) >= 4  # battery, PV, air conditioner, ... of the home
        for sample in batch.samples:
            own = {name for name, _ in points_of(classes[sample.device_id]).values()}
            assert sample.values and set(sample.values) <= own, sample
        meter = next(m for m in first if isinstance(m, MeterReading))
        assert meter.meter_id == meter_id
        assert meter.power_w == pytest.approx(round(home.town.site_net_w[0]), abs=1)
        # counts × coefficient 2 × unit 0.01 kWh: within one count of the meter's own kWh
        assert meter.import_kwh == pytest.approx(home.meter.import_kwh, abs=0.02)
        assert meter.import_kwh > 4000 and meter.export_kwh is not None
        newest = home.meter.latest_reading()
        assert meter.fixed_at == newest.point  # the newest 30-minute point, sent once
        assert meter.fixed_import_kwh == pytest.approx(newest.import_kwh, abs=0.02)
        later = [m for m in first if isinstance(m, MeterReading) and m.seq > meter.seq]
        assert later and all(m.fixed_at is None for m in later)
        soc = 100 * home.town.battery.stored_wh[0] / home.town.battery.capacity_wh[0]
        assert values["battery-1"]["soc_pct"] == pytest.approx(soc, abs=1)
        assert values["battery-1"]["power_w"] == pytest.approx(home.town.battery.power_w[0], abs=1)
        # the air conditioner's room and outdoor temperatures (0xBB, 0xBE: whole degrees),
        # what the RA fits the site's room model from
        aircon = values[by_eoj["013001"].device_id]
        assert aircon["room_temp_c"] == pytest.approx(home.town.home_ac.room_temp_c[0], abs=1)
        assert aircon["outdoor_temp_c"] == pytest.approx(home.town.site_temperature_c[0], abs=1)

        # the broker goes away for a few polls: the gateway keeps measuring into its outbox
        broker_process_stop(deployment, broker)
        await wait_for(lambda: not gateway.link_up)
        polls = gateway.polls
        await wait_for(lambda: gateway.polls >= polls + 4)
        assert gateway.outbox is not None and gateway.outbox.status().backlog >= 4
        stored, stored_last = gateway.batches, gateway.last_batch_seq

        restarted = BrokerProcess(deployment.layout)
        again = restarted.start()
        assert again.mqtt_port == broker.mqtt_port
        ra2 = await connect_ra(deployment, again)
        try:
            telemetry2 = await ra2.consumer(Stream.TELEMETRY, "ingest")
            await wait_for(lambda: gateway.link_up, 20.0)
            rest = await collect(telemetry2, lambda got: sum(
                isinstance(m, TelemetryBatch) for m in got) + sum(
                isinstance(m, TelemetryBatch) for m in first) >= stored + 1)  # fmt: skip
        finally:
            await ra2.close()
            restarted.stop()
    seqs = [m.seq for m in [*first, *rest] if isinstance(m, TelemetryBatch)]
    assert len(seqs) >= stored + 1
    assert seqs == sorted(set(seqs))  # each once, in order
    # every batch the gateway stored up to then reached the RA, the outage's included
    assert len([s for s in seqs if s <= stored_last]) == stored
    status = read_status(tmp_path / "gw-home")
    assert status["running"] is False
    assert {d["eoj"] for d in status["inventory"]} >= {"027d01", "028801"}


def broker_process_stop(deployment: Deployment, broker: RunningBroker) -> None:
    """Stop the fixture's nats-server by its pid (the fixture's own stop then finds it gone)."""
    import os
    import signal
    import time

    os.kill(broker.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(broker.pid, 0)
        except ProcessLookupError:
            break
        # reap if it is our child
        with contextlib.suppress(ChildProcessError):
            os.waitpid(broker.pid, os.WNOHANG)
        time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        deployment.layout.state.unlink()


async def test_a_signed_discharge_moves_the_battery_and_the_site_meter_by_the_commanded_power(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    signing = Ed25519PrivateKey.generate()
    key = command_key_file(tmp_path, signing)
    config = load_site_config(
        write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    )
    gateway = Gateway(config, tmp_path / "gw-home")
    acks = await ra.consumer(Stream.ACKS, "acks")
    telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")
    async with running(gateway):
        await wait_for(lambda: gateway.link_up and gateway.batches >= 1)
        # one second of the home's physics, so the meter has measured something
        home.clock.advance(1.0)
        home.server.tick()
        ticked = RealClock().now()
        battery_before = float(home.town.battery.power_w[0])
        before = await collect(telemetry, lambda got: any(
            isinstance(m, MeterReading) and m.measured_at > ticked for m in got) and any(
            isinstance(m, State) for m in got))  # fmt: skip
        states = [m for m in before if isinstance(m, State)]
        battery_state = next(d for m in states for d in m.devices if d.device_id == "battery-1")
        assert (battery_state.online, battery_state.controlled) == (True, False)
        meter_before = next(m.power_w for m in before if isinstance(m, MeterReading)
                            and m.measured_at > ticked)  # fmt: skip
        assert meter_before is not None

        now = RealClock().now()
        body = {"type": "battery_power", "device_id": "battery-1", "power_w": -2000.0,
                "start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
        await ra.send_command(GW, EnvelopeSigner(signing, RealClock()).sign(GW, body))
        [ack] = await collect(acks, lambda got: len(got) >= 1)
        assert isinstance(ack, Acknowledgement)
        assert ack.rejected is None
        [outcome] = ack.outcomes
        assert (outcome.device_id, outcome.outcome) == ("battery-1", "applied")
        assert outcome.readback["mode_code"] == 0x43  # discharging, read back over the LAN
        await wait_for(lambda: read_status(tmp_path / "gw-home")["active_commands"] != [])
        assert read_status(tmp_path / "gw-home")["active_commands"][0]["device_id"] == "battery-1"

        # another second: the battery now gives 2000 W, the meter sees it
        home.clock.advance(1.0)
        home.server.tick()
        assert home.town.battery.power_w[0] == pytest.approx(-2000.0)
        after = await collect(telemetry, lambda got: any(
            isinstance(m, MeterReading) and m.measured_at > ack.sent_at for m in got) and any(
            isinstance(m, State) and any(d.controlled for d in m.devices) for m in got))
        # the state right after the ack: controlled, in the mode read back
        meter_after = next(m.power_w for m in after if isinstance(m, MeterReading)
                           and m.measured_at > ack.sent_at)  # fmt: skip
        assert meter_after is not None
        commanded = -2000.0 - battery_before  # the change in the battery's power
        # the rest of the home moves a little in one second; the battery's step dominates
        assert meter_after - meter_before == pytest.approx(commanded, abs=60)
        controlled = next(d for m in after if isinstance(m, State) for d in m.devices
                          if d.device_id == "battery-1" and d.controlled)  # fmt: skip
        assert controlled.mode == "discharging"


async def test_an_aircon_offset_and_a_pv_limit_from_the_ra_change_the_devices(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    signing = Ed25519PrivateKey.generate()
    key = command_key_file(tmp_path, signing)
    extra = allow(home, "aircon-1", "013001") + allow(home, "pv-1", "027901")
    config = load_site_config(write_site_config(
        tmp_path / "site.toml", deployment, broker, home, key, extra=extra))  # fmt: skip
    home.town.home_ac.on[0] = True
    home.town.home_ac.mode[0] = 0x42  # cooling
    home.town.home_ac.set_temp_c[0] = 25.0
    gateway = Gateway(config, tmp_path / "gw-home")
    acks = await ra.consumer(Stream.ACKS, "acks")
    signer = EnvelopeSigner(signing, RealClock())
    async with running(gateway):
        await wait_for(lambda: gateway.link_up and gateway.batches >= 1)
        now = RealClock().now()
        window = {"start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}
        await ra.send_command(GW, signer.sign(GW, {"type": "aircon_offset",
                                                   "device_id": "aircon-1", "offset_c": 2.0,
                                                   **window}))  # fmt: skip
        await ra.send_command(GW, signer.sign(GW, {"type": "pv_limit", "device_id": "pv-1",
                                                   "limit_pct": 40.0, **window}))  # fmt: skip
        got = await collect(acks, lambda got: len(got) >= 2)
    by_device = {a.outcomes[0].device_id: a.outcomes[0]
                 for a in got if isinstance(a, Acknowledgement)}  # fmt: skip
    assert (by_device["aircon-1"].outcome, by_device["aircon-1"].readback) == (
        "applied", {"setpoint_c": 27.0})
    assert (by_device["pv-1"].outcome, by_device["pv-1"].readback) == (
        "applied", {"limit_pct": 40.0})
    assert home.town.home_ac.set_temp_c[0] == 27.0  # the emulated units themselves
    assert home.town.pv.curtail_pct[0] == 40.0


async def test_the_heartbeat_carries_the_outboxs_drop_count(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = load_site_config(
        write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    )
    # a gateway that ran offline with a bound of 3 messages: 7 of 10 batches dropped
    with Outbox(tmp_path / "gw-home" / "outbox.sqlite", GW, max_messages=3) as earlier:
        for _ in range(10):
            earlier.put(TelemetryBatch(gateway_id=GW, seq=earlier.next_seq(), sent_at=START,
                                       samples=[Sample(device_id="battery-1", measured_at=START,
                                                       values={"soc_pct": 50.0})]))  # fmt: skip
        assert earlier.status().dropped_total == 7
    telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")
    async with running(Gateway(config, tmp_path / "gw-home")):
        got = await collect(telemetry, lambda got: any(isinstance(m, Heartbeat) for m in got))
    [beat] = [m for m in got if isinstance(m, Heartbeat)]
    assert beat.dropped_total == 7
    kept = [m.seq for m in got if isinstance(m, TelemetryBatch) and m.sent_at == START]
    assert kept == [8, 9, 10]  # the 3 the bound kept, then the gateway's own


async def test_a_command_is_restored_at_its_windows_end_while_a_longer_one_stays_in_force(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    # with commands in force the timer loop sleeps until the earliest window's end (not a
    # tick a second), so that end must still wake it, and the later one keep its device
    signing = Ed25519PrivateKey.generate()
    key = command_key_file(tmp_path, signing)
    extra = allow(home, "aircon-1", "013001") + allow(home, "pv-1", "027901")
    config = load_site_config(write_site_config(
        tmp_path / "site.toml", deployment, broker, home, key, extra=extra))  # fmt: skip
    home.town.home_ac.on[0] = True
    home.town.home_ac.mode[0] = 0x42  # cooling
    home.town.home_ac.set_temp_c[0] = 25.0
    gateway = Gateway(config, tmp_path / "gw-home")
    acks = await ra.consumer(Stream.ACKS, "acks")
    signer = EnvelopeSigner(signing, RealClock())
    async with running(gateway):
        await wait_for(lambda: gateway.link_up and gateway.batches >= 1)
        now = RealClock().now()
        short_end = now + timedelta(seconds=3)
        await ra.send_command(GW, signer.sign(GW, {
            "type": "pv_limit", "device_id": "pv-1", "limit_pct": 40.0,
            "start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}))
        await ra.send_command(GW, signer.sign(GW, {
            "type": "aircon_offset", "device_id": "aircon-1", "offset_c": 2.0,
            "start": now.isoformat(), "end": short_end.isoformat()}))  # fmt: skip
        got = await collect(acks, lambda got: len(got) >= 2)
        assert sorted(a.outcomes[0].outcome for a in got
                      if isinstance(a, Acknowledgement)) == ["applied", "applied"]  # fmt: skip
        assert home.town.home_ac.set_temp_c[0] == 27.0
        await wait_for(lambda: home.town.home_ac.set_temp_c[0] == 25.0, timeout_s=10.0)
        restored_after_s = (RealClock().now() - short_end).total_seconds()
        assert -0.1 <= restored_after_s <= 1.5
        assert home.town.pv.curtail_pct[0] == 40.0  # still in force
        assert set(gateway.executor.active) == {"pv-1"}  # type: ignore[union-attr]
