"""Shared pieces for the meter tests: an emulated meter behind a dongle on a real pty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from erab.clock import SimulatedClock
from erab.echonet.node import LocalNode
from erab.meter.dongle import DongleCore, DongleFaults, PtyDongle
from erab.meter.routeb import RouteBCredentials, RouteBReader
from erab.meter.serialport import SerialPort
from erab.meter.skstack import Dialect
from erab.meter.smartmeter import SmartMeter
from tests.meter.meters import NOW, emulated_meter

RBID = "00112233445566778899AABBCCDDEEFF"
PASSWORD = "0123456789AB"
CREDENTIALS = RouteBCredentials(RBID, PASSWORD)


def make_meter(*, coefficient: int = 1, unit_code: int = 0x01) -> tuple[SmartMeter, LocalNode]:
    """The emulated meter object hosted by its ECHONET Lite node."""
    meter = emulated_meter(coefficient=coefficient, unit_code=unit_code)
    return meter, LocalNode([meter])


@dataclass
class Rig:
    core: DongleCore
    dongle: PtyDongle
    port: SerialPort
    meter: SmartMeter


@asynccontextmanager
async def rig(
    *,
    dialect: Dialect = Dialect.WITH_SIDE,
    faults: DongleFaults | None = None,
    hex_payload: bool = True,
    line_ending: bytes = b"\r\n",
    open_port: bool = True,
    coefficient: int = 1,
    unit_code: int = 0x01,
) -> AsyncIterator[Rig]:
    meter, node = make_meter(coefficient=coefficient, unit_code=unit_code)
    core = DongleCore(
        node,
        route_b_id=RBID,
        password=PASSWORD,
        dialect=dialect,
        faults=faults,
        hex_payload=hex_payload,
        line_ending=line_ending,
    )
    async with PtyDongle(core) as dongle:
        port = SerialPort(dongle.path)
        if open_port:  # a pty has one reader: leave it to an outside client otherwise
            port.open()
        try:
            yield Rig(core, dongle, port, meter)
        finally:
            port.close()


def reader(
    port: SerialPort, credentials: RouteBCredentials = CREDENTIALS, **kw: float
) -> RouteBReader:
    kw.setdefault("property_timeout_s", 0.3)
    kw.setdefault("join_timeout_s", 5.0)
    clock = SimulatedClock(NOW, speed=0)  # the meter's own time
    return RouteBReader(port, credentials, clock=clock, **kw)  # type: ignore[arg-type]
