"""The site's smart meter, as the run loop reads it: by route B (a Wi-SUN dongle on a serial
port, or erab's dongle emulator on a pty) when the site config has a ``[meter]`` table, else
the low-voltage smart electric energy meter object (0x0288) on the LAN.

:func:`meter_values` is the pure part (the meter's EDTs → powers and kWh); :class:`LanMeter`
and :class:`RouteBMeter` are the thin shells that fetch those EDTs.  EPCs are those of the
ECHONET Lite Appendix (Release R), class 0x0288, as the AIF spec for route B uses them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from erab.clock import Clock
from erab.echonet.codecs import ValueCodecError
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.meter.routeb import (
    MeterScaling,
    RouteBCredentials,
    RouteBError,
    RouteBReader,
    decode_fixed_time,
    decode_instant,
)
from erab.meter.serialport import SerialPort

METER_CLASS = 0x0288
INSTANT_POWER_W = 0xE7  # measured instantaneous electric power (W, signed, import +)
IMPORT_COUNT = 0xE0  # measured cumulative electric energy, normal direction
EXPORT_COUNT = 0xE3  # measured cumulative electric energy, reverse direction
FIXED_IMPORT = 0xEA  # cumulative energy measured at fixed time (every 30 min), normal
FIXED_EXPORT = 0xEB  # the same, reverse
COEFFICIENT = 0xD3  # coefficient the counts are multiplied by
UNIT = 0xE1  # unit of the counts (0x01: 0.1 kWh ...)
READ_EPCS = (INSTANT_POWER_W, IMPORT_COUNT, EXPORT_COUNT, FIXED_IMPORT, FIXED_EXPORT)


@dataclass(frozen=True)
class MeterValues:
    """One reading, in W and kWh; ``fixed_at`` is the newest 30-minute point (0xEA)."""

    measured_at: datetime
    power_w: float | None = None
    import_kwh: float | None = None
    export_kwh: float | None = None
    fixed_at: datetime | None = None
    fixed_import_kwh: float | None = None
    fixed_export_kwh: float | None = None


def scaling_from(raw: Mapping[int, bytes]) -> MeterScaling:
    """The meter's coefficient (0xD3, 1 when absent or 0) and unit (0xE1, 0.1 kWh when absent,
    as the Appendix says a meter without 0xE1 counts in)."""
    d3 = raw.get(COEFFICIENT)
    coefficient = int.from_bytes(d3) if d3 is not None and len(d3) == 4 else 1
    e1 = raw.get(UNIT)
    unit = e1[0] if e1 is not None and len(e1) == 1 else 0x01
    return MeterScaling(coefficient or 1, unit)


def _kwh(edt: bytes | None, scaling: MeterScaling) -> float | None:
    if edt is None or len(edt) != 4:
        return None
    try:
        return scaling.kwh(int.from_bytes(edt))
    except ValueCodecError:  # a unit code (0xE1) the Appendix does not define: no kWh
        return None


def meter_values(
    raw: Mapping[int, bytes], scaling: MeterScaling, measured_at: datetime
) -> MeterValues:
    """Decode what the meter answered; a property missing or unreadable is left as None."""
    fixed_at = fixed_import = fixed_export = None
    try:
        if FIXED_IMPORT in raw:
            reading = decode_fixed_time(raw[FIXED_IMPORT], scaling, "import")
            fixed_at, fixed_import = reading.at, reading.energy_kwh
        if FIXED_EXPORT in raw:
            reading = decode_fixed_time(raw[FIXED_EXPORT], scaling, "export")
            if fixed_at is None or reading.at == fixed_at:  # the pair only at one point
                fixed_at, fixed_export = reading.at, reading.energy_kwh
    except RouteBError:
        fixed_at = fixed_import = fixed_export = None
    power = decode_instant(raw.get(INSTANT_POWER_W), None, measured_at).power_w
    return MeterValues(
        measured_at=measured_at,
        power_w=None if power is None else float(power),
        import_kwh=_kwh(raw.get(IMPORT_COUNT), scaling),
        export_kwh=_kwh(raw.get(EXPORT_COUNT), scaling),
        fixed_at=fixed_at,
        fixed_import_kwh=fixed_import,
        fixed_export_kwh=fixed_export,
    )


class MeterSource(Protocol):
    """Where the run loop gets meter readings from."""

    meter_id: str
    kind: str  # "route_b" or "lan"

    async def read(self) -> MeterValues: ...

    async def close(self) -> None: ...


class LanMeter:
    """The meter object 0x0288 on the LAN, read with the gateway's ECHONET Lite controller."""

    kind = "lan"

    def __init__(
        self, controller: Controller, host: str, eoj: EOJ, meter_id: str, clock: Clock
    ) -> None:
        self.controller = controller
        self.host = host
        self.eoj = eoj
        self.meter_id = meter_id
        self.clock = clock
        self.scaling: MeterScaling | None = None

    async def read(self) -> MeterValues:
        if self.scaling is None:  # fixed for the meter's life: read once
            self.scaling = scaling_from(
                await self.controller.get_raw(self.host, self.eoj, (COEFFICIENT, UNIT))
            )
        raw = await self.controller.get_raw(self.host, self.eoj, READ_EPCS)
        return self.values_from(raw, self.clock.now())

    def values_from(self, raw: Mapping[int, bytes], measured_at: datetime) -> MeterValues:
        """A reading from the EDTs the meter gave (read with the site's other objects, in
        one poll); :meth:`read` must have read the meter's scaling first."""
        if self.scaling is None:
            raise RuntimeError("the meter's scaling is not read yet: call read() first")
        return meter_values(raw, self.scaling, measured_at)

    async def close(self) -> None:
        return None


class RouteBMeter:
    """The meter by route B: a :class:`~erab.meter.routeb.RouteBReader` on a serial port.
    :meth:`read` connects (scan, join, scaling) first when there is no session."""

    kind = "route_b"

    def __init__(
        self,
        port: str,
        credentials: RouteBCredentials,
        meter_id: str,
        clock: Clock,
        *,
        property_timeout_s: float = 20.0,
    ) -> None:
        self.port_path = port
        self.credentials = credentials
        self.meter_id = meter_id
        self.clock = clock
        self.property_timeout_s = property_timeout_s
        self._port: SerialPort | None = None
        self._reader: RouteBReader | None = None

    async def _connect(self) -> RouteBReader:
        port = SerialPort(self.port_path)
        try:
            port.open()
        except OSError as exc:
            raise RouteBError(f"cannot open the route B port {self.port_path}: {exc}") from None
        reader = RouteBReader(port, self.credentials, clock=self.clock,
                              property_timeout_s=self.property_timeout_s)  # fmt: skip
        try:
            await reader.connect()
        except BaseException:
            await reader.close()
            port.close()
            raise
        self._port, self._reader = port, reader
        return reader

    async def read(self) -> MeterValues:
        reader = self._reader or await self._connect()
        try:
            raw = await reader.get(READ_EPCS)
        except RouteBError:
            await self.close()  # start again from a fresh session next time
            raise
        return meter_values(raw, reader.scaling, self.clock.now())

    async def close(self) -> None:
        reader, port = self._reader, self._port
        self._reader = self._port = None
        if reader is not None:
            await reader.close()
        if port is not None:
            port.close()
