"""The town's announcement cycle: besides status changes, every site multicasts INF of its
devices' power (a battery's SOC, the meter's 0xE7) once per cycle of simulated time, each
site at its own moment.  Received on a real UDP socket joined to 224.0.23.0 on loopback."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

import pytest

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.server import TownServer
from erab.echonet.frame import EOJ, ESV, Frame, decode_frame
from erab.echonet.transport import random_loopback_address
from erab.meter.smartmeter import MeterFleet, SmartMeter
from tests.devices.multicast import loopback_multicast_listener

START = datetime(2026, 8, 3, 13, 0, 5, tzinfo=JST)
METER = EOJ(0x02, 0x88, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)
PV = EOJ(0x02, 0x79, 0x01)
SITES = (
    SiteSpec("home-pv-battery", pv_w=4500.0, battery_wh=9800.0),
    SiteSpec("home-plain"),
    SiteSpec("store", kind="store", showcases=1),
)


@dataclass
class Heard:
    """INF frames from our sites, with the simulated time of the tick that sent them."""

    server: TownServer
    clock: SimulatedClock
    listener: socket.socket
    frames: list[tuple[float, str, Frame]] = field(default_factory=list)

    async def tick_and_listen(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.server.tick()
        when = self.server.town.time_s
        ours = set(self.server.addresses)
        quiet_since = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - quiet_since < 0.05:
            try:
                data, addr = self.listener.recvfrom(1500)
            except BlockingIOError:
                await asyncio.sleep(0.005)
                continue
            quiet_since = asyncio.get_running_loop().time()
            frame = decode_frame(data)
            if addr[0] in ours and isinstance(frame, Frame) and frame.esv is ESV.INF:
                self.frames.append((when, addr[0], frame))

    def periodic(self, address: str, seoj: EOJ, epcs: tuple[int, ...]) -> list[tuple[float, Frame]]:
        """The INFs of exactly ``epcs`` (a periodic announcement) from one object."""
        return [
            (t, f)
            for t, a, f in self.frames
            if a == address and f.seoj == seoj and tuple(p.epc for p in f.props) == epcs
        ]


async def _serve(every_s: float) -> AsyncIterator[Heard]:
    town = Town(Scenario(SITES, seed=12), START)
    meters = MeterFleet(town.n_sites, START)
    town.observers.append(meters.observe)
    clock = SimulatedClock(START, speed=0)
    server = TownServer(
        town,
        clock,
        base=random_loopback_address(),
        extra_objects=lambda i: [SmartMeter(meters, i)],
        announce_every_s=every_s,
    )
    listener = loopback_multicast_listener()
    await server.start()
    try:
        yield Heard(server, clock, listener)
    finally:
        listener.close()
        await server.close()


@pytest.fixture
async def every_60s() -> AsyncIterator[Heard]:
    async for heard in _serve(60.0):
        yield heard


async def test_every_site_announces_its_meter_power_once_a_cycle_at_its_own_moment(
    every_60s: Heard,
) -> None:
    heard = every_60s
    server = heard.server
    for _ in range(20):  # 200 s of simulated time in 10 s ticks
        await heard.tick_and_listen(10.0)
    phases = server.announce_phase_s
    assert len({round(p) for p in phases}) == 3  # jittered: three different moments
    for site, address in enumerate(server.addresses):
        times = [t for t, _ in heard.periodic(address, METER, (0xE7,))]
        assert len(times) in (3, 4)  # 200 s at one a minute
        assert all(b - a == pytest.approx(60.0) for a, b in itertools.pairwise(times))
        for t in times:  # at the first tick at or after the site's moment in the cycle
            into_cycle = (t - phases[site]) % 60.0
            assert into_cycle < 10.0 + 1e-6


async def test_the_announced_values_are_the_models_values_at_that_moment(
    every_60s: Heard,
) -> None:
    heard = every_60s
    server, town = heard.server, heard.server.town
    seen: dict[tuple[str, EOJ], dict[int, bytes]] = {}
    compared: list[str] = []
    for _ in range(7):  # 70 s: every site's moment comes once at least
        before = len(heard.frames)
        await heard.tick_and_listen(10.0)
        for _, address, frame in heard.frames[before:]:
            seen[(address, frame.seoj)] = {p.epc: p.edt for p in frame.props}
        for address in server.addresses:  # compare with the model right after the tick
            site = server.addresses.index(address)
            meter = seen.pop((address, METER), None)
            if meter is not None and set(meter) == {0xE7}:
                assert struct.unpack(">i", meter[0xE7])[0] == round(town.site_net_w[site])
                compared.append(f"meter {site}")
            battery = seen.pop((address, BATTERY), None)
            if battery is not None and set(battery) == {0xD3, 0xE4}:
                assert struct.unpack(">i", battery[0xD3])[0] == round(town.battery.power_w[0])
                assert battery[0xE4][0] == round(town.battery.soc_pct[0])
                compared.append("battery")
            pv = seen.pop((address, PV), None)
            if pv is not None and set(pv) == {0xE0}:
                assert struct.unpack(">H", pv[0xE0])[0] == round(town.pv.power_w[0])
                compared.append("pv")
    assert {"meter 0", "meter 1", "meter 2", "battery", "pv"} <= set(compared)
    first = server.addresses[0]
    assert heard.periodic(first, BATTERY, (0xD3, 0xE4))  # the battery: power and SOC
    assert heard.periodic(first, PV, (0xE0,))  # PV: generation now
    store = server.addresses[2]
    assert heard.periodic(store, EOJ(0x03, 0xCE, 0x01), (0x84,))  # a showcase's power


async def test_a_cycle_of_zero_announces_status_changes_only() -> None:
    async for heard in _serve(0.0):
        for _ in range(10):
            await heard.tick_and_listen(30.0)
        for address in heard.server.addresses:
            assert heard.periodic(address, METER, (0xE7,)) == []


def test_a_negative_cycle_is_refused() -> None:
    town = Town(Scenario(SITES[:1]), START)
    with pytest.raises(ValueError, match="announcement cycle must be >= 0 s"):
        TownServer(town, SimulatedClock(START, speed=0), announce_every_s=-1.0)


def test_erab_emulate_announces_each_sites_meter_at_the_cycle_it_is_given() -> None:
    base = random_loopback_address()
    listener = loopback_multicast_listener()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "erab", "emulate", "--json", "--homes", "2", "--stores", "0"),
            *("--history-days", "0", "--start", "2026-08-01T12:00", "--base", base),
            *("--speed", "60", "--announce-every", "120", "--duration", "6"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    try:
        assert proc.stdout is not None
        sites = json.loads(proc.stdout.readline())["sites"]
        addresses = {s["address"] for s in sites}
        meter_infs: dict[str, int] = {}
        listener.settimeout(0.5)
        while proc.poll() is None:
            try:
                data, addr = listener.recvfrom(1500)
            except TimeoutError:
                continue
            frame = decode_frame(data)
            if (
                addr[0] in addresses
                and isinstance(frame, Frame)
                and frame.esv is ESV.INF
                and frame.seoj == METER
                and [p.epc for p in frame.props] == [0xE7]
            ):
                meter_infs[addr[0]] = meter_infs.get(addr[0], 0) + 1
        out, err = proc.communicate(timeout=30)
    finally:
        listener.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    simulated_s = json.loads(out.strip().splitlines()[-1])["summary"]["simulated_s"]
    # 6 s at 60x is 360 simulated seconds: three cycles of 120 s, give or take one
    assert simulated_s == pytest.approx(360.0, abs=30.0)
    assert set(meter_infs) == addresses
    for count in meter_infs.values():
        assert simulated_s / 120.0 - 1 <= count <= simulated_s / 120.0 + 1
