"""A served town over real UDP on loopback: Gets read the model, Sets drive it, the meter
sees it, and changes are announced (ECHONET Lite Part 2 §4.2.3, Appendix INF rules)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

import pytest

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, SiteSpec, Town
from erab.devices.battery import MODE_AUTO
from erab.devices.server import TownServer, site_addresses
from erab.echonet.frame import EOJ, ESV, Frame, Property, decode_frame
from erab.echonet.transport import random_loopback_address
from erab.meter.smartmeter import MeterFleet, SmartMeter
from tests.devices.multicast import loopback_multicast_listener
from tests.requires import missing

START = datetime(2026, 8, 3, 13, 0, tzinfo=JST)
CONTROLLER = EOJ(0x05, 0xFF, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)
METER = EOJ(0x02, 0x88, 0x01)
AIRCON = EOJ(0x01, 0x30, 0x01)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.frames: asyncio.Queue[Frame] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        frame = decode_frame(data)
        if isinstance(frame, Frame):
            self.frames.put_nowait(frame)


@dataclass
class Served:
    town: Town
    meters: MeterFleet
    clock: SimulatedClock
    server: TownServer
    client: _Client
    transport: asyncio.DatagramTransport
    tid: int = 0

    def send(self, deoj: EOJ, esv: ESV, props: tuple[Property, ...]) -> None:
        self.tid += 1
        frame = Frame(self.tid, CONTROLLER, deoj, esv, props)
        self.transport.sendto(frame.encode(), (self.server.addresses[0], self.server.port))

    async def request(self, deoj: EOJ, esv: ESV, props: tuple[Property, ...]) -> Frame:
        self.send(deoj, esv, props)
        while True:
            reply = await asyncio.wait_for(self.client.frames.get(), 2.0)
            if reply.tid == self.tid:
                return reply

    async def get(self, deoj: EOJ, epc: int) -> bytes:
        reply = await self.request(deoj, ESV.Get, (Property(epc, b""),))
        assert reply.esv is ESV.Get_Res, reply
        return reply.props[0].edt

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.server.tick()


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    # a contract that lets storage export, so a discharge Set shows in full on the meter at
    # 13:00 with the sun up (by default a battery gives only the site's import)
    home = SiteSpec("home", pv_w=4500.0, battery_wh=9800.0, battery_export_allowed=True)
    town = Town(Scenario((home,), seed=21), START)
    meters = MeterFleet(1, START)
    town.observers.append(meters.observe)
    town.advance_to(START.timestamp())
    clock = SimulatedClock(START, speed=0)
    server = TownServer(
        town, clock, base=random_loopback_address(), extra_objects=lambda i: [SmartMeter(meters, i)]
    )
    await server.start()
    client = _Client()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: client, local_addr=(random_loopback_address(0), 0)
    )
    server.tick()
    try:
        yield Served(town, meters, clock, server, client, transport)
    finally:
        transport.close()
        await server.close()


async def test_get_returns_the_models_state(served: Served) -> None:
    soc = (await served.get(BATTERY, 0xE4))[0]
    assert soc == round(served.town.battery.soc_pct[0])
    room = struct.unpack(">b", await served.get(AIRCON, 0xBB))[0]
    assert room == round(served.town.home_ac.room_temp_c[0])


async def test_set_to_discharge_makes_the_battery_discharge_and_the_meter_sees_it(
    served: Served,
) -> None:
    reply = await served.request(
        BATTERY,
        ESV.SetC,
        (
            Property(0xEC, struct.pack(">I", 2500)),  # discharging power setting, W
            Property(0xDA, b"\x43"),  # operation mode: discharging
        ),
    )
    assert reply.esv is ESV.Set_Res
    served.advance(60.0)
    battery_w = struct.unpack(">i", await served.get(BATTERY, 0xD3))[0]
    assert battery_w == -2500
    town = served.town
    meter_w = struct.unpack(">i", await served.get(METER, 0xE7))[0]
    without_battery = town.site_load_w[0] - town.site_generation_w[0]
    assert meter_w == pytest.approx(without_battery - 2500, abs=1)
    served.advance(1800.0)  # the meter's 30-minute point takes the discharge too
    assert served.meters.import_wh[0] - served.meters.export_wh[0] < without_battery * 0.6


async def test_a_battery_at_its_reserve_discharges_once_the_reserve_is_lowered(
    served: Served,
) -> None:
    battery = served.town.battery
    battery.stored_wh[0] = 0.1 * battery.capacity_wh[0]  # at the 10 % reserve (0xA7)
    assert (await served.get(BATTERY, 0xA7))[0] == 10
    set_mode = await served.request(BATTERY, ESV.SetC, (Property(0xDA, b"\x43"),))
    assert set_mode.esv is ESV.Set_Res
    served.advance(60.0)
    assert struct.unpack(">i", await served.get(BATTERY, 0xD3))[0] == 0
    assert struct.unpack(">I", await served.get(BATTERY, 0xA5))[0] == 0  # nothing to give
    assert await served.get(BATTERY, 0xCF) == b"\x44"  # working: standby
    lowered = await served.request(BATTERY, ESV.SetC, (Property(0xA7, bytes((0,))),))
    assert lowered.esv is ESV.Set_Res
    served.advance(60.0)
    assert struct.unpack(">i", await served.get(BATTERY, 0xD3))[0] < -1000
    assert await served.get(BATTERY, 0xCF) == b"\x43"  # working: discharging
    # a lower limit at or above the upper one (0xA6, 100 %) is refused
    refused = await served.request(BATTERY, ESV.SetC, (Property(0xA7, bytes((100,))),))
    assert refused.esv is ESV.SetC_SNA
    assert battery.lower_limit_pct[0] == 0.0


async def test_a_set_outside_the_rating_is_refused_and_changes_nothing(served: Served) -> None:
    reply = await served.request(BATTERY, ESV.SetC, (Property(0xEC, struct.pack(">I", 99_000)),))
    assert reply.esv is ESV.SetC_SNA
    assert served.town.battery.discharge_setting_w[0] < 99_000
    assert served.town.battery.mode[0] == MODE_AUTO


async def test_raising_the_set_temperature_lowers_the_air_conditioners_power(
    served: Served,
) -> None:
    cool = await served.request(
        AIRCON,
        ESV.SetC,
        (Property(0x80, b"\x30"), Property(0xB0, b"\x42"), Property(0xB3, bytes((24,)))),
    )
    assert cool.esv is ESV.Set_Res
    served.advance(1800.0)
    before = struct.unpack(">H", await served.get(AIRCON, 0x84))[0]
    reply = await served.request(AIRCON, ESV.SetC, (Property(0xB3, bytes((28,))),))
    assert reply.esv is ESV.Set_Res
    served.advance(600.0)
    after = struct.unpack(">H", await served.get(AIRCON, 0x84))[0]
    assert after < before


async def test_a_change_of_an_announced_property_is_sent_as_inf(served: Served) -> None:
    listener = loopback_multicast_listener()
    try:
        served.send(BATTERY, ESV.SetI, (Property(0xDA, b"\x42"),))  # charging
        for _ in range(50):  # SetI has no answer: wait until the node applied it
            if served.town.battery.mode[0] == 0x42:
                break
            await asyncio.sleep(0.02)
        served.advance(60.0)
        loop = asyncio.get_running_loop()
        seen: list[Frame] = []
        deadline = loop.time() + 2.0
        while loop.time() < deadline:
            try:
                data, addr = listener.recvfrom(1500)
            except BlockingIOError:
                await asyncio.sleep(0.02)
                continue
            frame = decode_frame(data)
            if (
                isinstance(frame, Frame)
                and frame.esv is ESV.INF
                and frame.seoj == BATTERY
                and addr[0] == served.server.addresses[0]
            ):
                seen.append(frame)
                if {p.epc for f in seen for p in f.props} >= {0xDA, 0xCF}:
                    break
        announced = {p.epc: p.edt for f in seen for p in f.props}
        assert announced.get(0xDA) == b"\x42"  # the new operation mode setting
        assert announced.get(0xCF) == b"\x42"  # working operation status: now charging
    finally:
        listener.close()


def test_site_addresses_count_up_and_refuse_to_leave_loopback() -> None:
    assert site_addresses("127.1.0.254", 3) == ["127.1.0.254", "127.1.0.255", "127.1.1.0"]
    with pytest.raises(ValueError, match="run past the end"):
        site_addresses("127.255.255.250", 10)
    with pytest.raises(ValueError, match="not an IPv4 address"):
        site_addresses("home", 1)


def test_too_many_sites_for_the_open_file_limit_is_a_clear_error() -> None:
    import resource

    from erab.devices.server import ensure_open_files

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        missing("no hard limit on open files here")
    with pytest.raises(OSError, match=r"ulimit -n"):
        ensure_open_files(hard + 1)
