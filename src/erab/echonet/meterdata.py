"""Smart electric energy meter (class 0x0288) scaling and 30-minute history layouts.

A low-voltage smart meter reports cumulative energy as a count: kWh = count × 0xD3
(coefficient, 1 when the meter does not have it) × the 0xE1 unit.  Its history properties
(APPENDIX Detailed Requirements for ECHONET Device Objects, "Low-voltage smart electric
energy meter class", the property table for 0x0288):

- 0xE2 / 0xE4 (normal / reverse direction): day to collect (2 bytes, 0 = today … 99) and 48
  cumulative counts (4 bytes each) taken at 00:00, 00:30 … 23:30 of that day;
- 0xEA / 0xEB: the latest fixed-time reading: date-time YYYY MM DD hh mm ss (7 bytes) and a
  cumulative count (4 bytes);
- 0xEC: date-time YYYY MM DD hh mm (6 bytes), number of collection segments (1 byte, 1..12),
  then that many pairs of normal / reverse counts (4 + 4 bytes), the first at the given time
  and each next one 30 minutes earlier; 0xED sets the time and segment count 0xEC answers for.

A count of 0xFFFFFFFE means "no data" (not measured); it decodes to ``None``.  Times on the
wire are the meter's local time, Japan Standard Time; readings carry aware JST datetimes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from erab.echonet.codecs import ValueCodecError

__all__ = [
    "ENERGY_UNITS_KWH",
    "JST",
    "NO_DATA",
    "SLOT",
    "DailyHistory",
    "HistoryRequest",
    "Reading",
    "SegmentReading",
    "decode_daily_history",
    "decode_fixed_time_reading",
    "decode_history_request",
    "decode_segment_history",
    "encode_daily_history",
    "encode_fixed_time_reading",
    "encode_history_request",
    "encode_segment_history",
    "energy_count",
    "energy_unit_kwh",
    "scale",
]

JST = dt.timezone(dt.timedelta(hours=9), "JST")
"""Japan Standard Time (equal to ``erab.clock.JST``; echonet/ imports the stdlib only)."""
NO_DATA = 0xFFFFFFFE
"""The count a meter reports for a slot it has not measured."""
SLOT = dt.timedelta(minutes=30)
MAX_COUNT = 99_999_999  # 8 decimal digits (0x05F5E0FF), the largest cumulative count

ENERGY_UNITS_KWH: Mapping[int, float] = MappingProxyType(
    {
        0x00: 1.0,
        0x01: 0.1,
        0x02: 0.01,
        0x03: 0.001,
        0x04: 0.0001,
        0x0A: 10.0,
        0x0B: 100.0,
        0x0C: 1000.0,
        0x0D: 10000.0,
    }
)
"""0xE1 "Unit for cumulative amounts of electric energy": unit code -> kWh per count."""


def energy_unit_kwh(unit_code: int) -> float:
    """kWh per count for a 0xE1 unit code (0x00 = 1 kWh … 0x04 = 0.0001, 0x0A = 10 … 0x0D)."""
    try:
        return ENERGY_UNITS_KWH[unit_code]
    except KeyError:
        allowed = ", ".join(f"0x{c:02X}" for c in ENERGY_UNITS_KWH)
        raise ValueCodecError(
            f"0x0288 unit (0xE1): code 0x{unit_code:02X} is not defined; allowed: {allowed}"
        ) from None


def scale(count: int, coefficient: int, unit: float) -> float:
    """kWh of a cumulative count: count × coefficient (0xD3) × unit (kWh per count, 0xE1)."""
    # rounding to 0.1 Wh removes binary noise (3 × 0.1 = 0.30000000000000004)
    return round(count * coefficient * unit, 7)


def energy_count(
    energy_kwh: float, *, coefficient: int = 1, unit_code: int = 0x01, digits: int = 8
) -> int:
    """The count a meter reports for ``energy_kwh``, wrapping at its effective digits (0xD7)."""
    per_count = coefficient * energy_unit_kwh(unit_code)
    count: int = round(energy_kwh / per_count)
    modulus: int = 10**digits
    return count % modulus


@dataclass(frozen=True)
class Reading:
    """A cumulative reading taken at the end of a 30-minute slot."""

    slot_end: dt.datetime
    """Aware, JST."""
    energy_kwh: float | None
    """Cumulative energy; None where the meter has no data (0xFFFFFFFE)."""


@dataclass(frozen=True)
class DailyHistory:
    """0xE2 / 0xE4: one day's 48 readings."""

    day: int
    """Days before today (0 = today)."""
    readings: tuple[Reading, ...]


@dataclass(frozen=True)
class SegmentReading:
    """One 0xEC segment: normal- and reverse-direction readings at ``slot_end``."""

    slot_end: dt.datetime
    normal_kwh: float | None
    reverse_kwh: float | None


@dataclass(frozen=True)
class HistoryRequest:
    """0xED: the time (a slot end) and number of segments 0xEC reports."""

    slot_end: dt.datetime
    segments: int


def _kwh(count: int, coefficient: int, unit_code: int) -> float | None:
    if count == NO_DATA:
        return None
    if count > MAX_COUNT:
        raise ValueCodecError(
            f"0x0288 cumulative energy: count {count} (0x{count:08X}) is beyond 8 digits; "
            f"allowed: 0..{MAX_COUNT} or 0xFFFFFFFE (no data)"
        )
    return scale(count, coefficient, energy_unit_kwh(unit_code))


def _count(energy_kwh: float | None, coefficient: int, unit_code: int) -> bytes:
    if energy_kwh is None:
        return NO_DATA.to_bytes(4, "big")
    if energy_kwh < 0:
        raise ValueCodecError(f"0x0288 cumulative energy: {energy_kwh} kWh is negative")
    return energy_count(energy_kwh, coefficient=coefficient, unit_code=unit_code).to_bytes(4, "big")


def _check_size(edt: bytes, size: int, what: str) -> None:
    if len(edt) != size:
        raise ValueCodecError(f"0x0288 {what}: {len(edt)} bytes where {size} expected")


def _jst(moment: dt.datetime, what: str) -> dt.datetime:
    if moment.tzinfo is None:
        raise ValueCodecError(f"0x0288 {what}: give an aware datetime (JST), not {moment}")
    return moment.astimezone(JST)


def _read_datetime(edt: bytes, what: str) -> dt.datetime:
    try:
        return dt.datetime(
            int.from_bytes(edt[0:2], "big"),
            edt[2],
            edt[3],
            edt[4],
            edt[5],
            edt[6] if len(edt) > 6 else 0,
            tzinfo=JST,
        )
    except ValueError as exc:
        raise ValueCodecError(f"0x0288 {what}: invalid date-time 0x{edt.hex()} ({exc})") from None


def _write_datetime(moment: dt.datetime, seconds: bool) -> bytes:
    head = moment.year.to_bytes(2, "big") + bytes(
        (moment.month, moment.day, moment.hour, moment.minute)
    )
    return head + bytes((moment.second,)) if seconds else head


# 0xE2 / 0xE4 ---------------------------------------------------------------------------------


def decode_daily_history(
    edt: bytes, *, today: dt.date, coefficient: int = 1, unit_code: int = 0x01
) -> DailyHistory:
    """0xE2 / 0xE4: day number and 48 readings at 00:00 … 23:30 JST of ``today`` − day."""
    _check_size(edt, 194, "daily history (0xE2/0xE4)")
    day = int.from_bytes(edt[0:2], "big")
    if day > 99:
        raise ValueCodecError(f"0x0288 daily history: day {day}; allowed: 0..99")
    start = dt.datetime.combine(today - dt.timedelta(days=day), dt.time(0, 0), tzinfo=JST)
    readings = tuple(
        Reading(
            start + i * SLOT,
            _kwh(int.from_bytes(edt[2 + 4 * i : 6 + 4 * i], "big"), coefficient, unit_code),
        )
        for i in range(48)
    )
    return DailyHistory(day, readings)


def encode_daily_history(
    day: int,
    energy_kwh: Sequence[float | None],
    *,
    coefficient: int = 1,
    unit_code: int = 0x01,
) -> bytes:
    """0xE2 / 0xE4 from 48 cumulative values (None: no data) for 00:00 … 23:30."""
    if not 0 <= day <= 99:
        raise ValueCodecError(f"0x0288 daily history: day {day}; allowed: 0..99")
    if len(energy_kwh) != 48:
        raise ValueCodecError(f"0x0288 daily history: {len(energy_kwh)} values; allowed: 48")
    return day.to_bytes(2, "big") + b"".join(
        _count(value, coefficient, unit_code) for value in energy_kwh
    )


# 0xEA / 0xEB ---------------------------------------------------------------------------------


def decode_fixed_time_reading(
    edt: bytes, *, coefficient: int = 1, unit_code: int = 0x01
) -> Reading:
    """0xEA / 0xEB: the latest reading at a fixed (30-minute) time."""
    _check_size(edt, 11, "fixed-time reading (0xEA/0xEB)")
    moment = _read_datetime(edt[0:7], "fixed-time reading")
    return Reading(moment, _kwh(int.from_bytes(edt[7:11], "big"), coefficient, unit_code))


def encode_fixed_time_reading(
    reading: Reading, *, coefficient: int = 1, unit_code: int = 0x01
) -> bytes:
    moment = _jst(reading.slot_end, "fixed-time reading")
    return _write_datetime(moment, seconds=True) + _count(
        reading.energy_kwh, coefficient, unit_code
    )


# 0xEC / 0xED ---------------------------------------------------------------------------------


def decode_history_request(edt: bytes) -> HistoryRequest:
    """0xED: date-time YYYY MM DD hh mm and the number of segments (1..12)."""
    _check_size(edt, 7, "history request (0xED)")
    moment = _read_datetime(edt[0:6], "history request")
    segments = edt[6]
    if not 1 <= segments <= 12:
        raise ValueCodecError(f"0x0288 history request: {segments} segments; allowed: 1..12")
    return HistoryRequest(moment, segments)


def encode_history_request(request: HistoryRequest) -> bytes:
    moment = _jst(request.slot_end, "history request")
    if moment.second or moment.microsecond or moment.minute not in (0, 30):
        raise ValueCodecError(
            f"0x0288 history request: {moment} is not a slot end (minute 0 or 30, no seconds)"
        )
    if not 1 <= request.segments <= 12:
        raise ValueCodecError(
            f"0x0288 history request: {request.segments} segments; allowed: 1..12"
        )
    return _write_datetime(moment, seconds=False) + bytes((request.segments,))


def decode_segment_history(
    edt: bytes, *, coefficient: int = 1, unit_code: int = 0x01
) -> list[SegmentReading]:
    """0xEC: readings from the requested time backwards, newest first."""
    if len(edt) < 7:
        raise ValueCodecError(f"0x0288 segment history (0xEC): {len(edt)} bytes, too short")
    request = decode_history_request(edt[0:7])
    _check_size(edt, 7 + 8 * request.segments, "segment history (0xEC)")
    out = []
    for i in range(request.segments):
        base = 7 + 8 * i
        out.append(
            SegmentReading(
                request.slot_end - i * SLOT,
                _kwh(int.from_bytes(edt[base : base + 4], "big"), coefficient, unit_code),
                _kwh(int.from_bytes(edt[base + 4 : base + 8], "big"), coefficient, unit_code),
            )
        )
    return out


def encode_segment_history(
    readings: Sequence[SegmentReading], *, coefficient: int = 1, unit_code: int = 0x01
) -> bytes:
    """0xEC from readings newest first, each 30 minutes before the one before it."""
    if not 1 <= len(readings) <= 12:
        raise ValueCodecError(f"0x0288 segment history: {len(readings)} segments; allowed: 1..12")
    first = _jst(readings[0].slot_end, "segment history")
    for i, reading in enumerate(readings):
        if _jst(reading.slot_end, "segment history") != first - i * SLOT:
            raise ValueCodecError(
                f"0x0288 segment history: segment {i} is at {reading.slot_end}, "
                f"expected {first - i * SLOT} (30 minutes apart, newest first)"
            )
    head = encode_history_request(HistoryRequest(first, len(readings)))
    return head + b"".join(
        _count(r.normal_kwh, coefficient, unit_code) + _count(r.reverse_kwh, coefficient, unit_code)
        for r in readings
    )
