"""The one source of time for every erab component.

Domain code never calls ``time.time()`` or ``datetime.now()``; it is handed a
:class:`Clock`.  :class:`RealClock` follows the wall clock; :class:`SimulatedClock`
runs from a chosen start at a chosen speed (accelerated simulation) and can be set or
stepped by hand (tests).  All datetimes are timezone-aware.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

JST = timezone(timedelta(hours=9), "JST")
"""Japan Standard Time (UTC+9, no daylight saving): the market and meter time zone."""


@runtime_checkable
class Clock(Protocol):
    """What components need of time."""

    def now(self) -> datetime:
        """Current time, timezone-aware (UTC)."""
        ...

    def timestamp(self) -> float:
        """Current time as POSIX seconds."""
        ...

    @property
    def speed(self) -> float:
        """Clock seconds per real second (1.0 for the real clock)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...


class RealClock:
    """The wall clock."""

    speed = 1.0

    def now(self) -> datetime:
        return datetime.now(UTC)

    def timestamp(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def __repr__(self) -> str:
        return "RealClock()"


class SimulatedClock:
    """A clock that starts at ``start`` and runs ``speed`` times faster than real time.

    ``speed=0`` freezes it: time then moves only by :meth:`advance` or :meth:`set`,
    which is what deterministic tests want.  Thread-safe.
    """

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        if start.tzinfo is None:
            raise ValueError(f"SimulatedClock start must be timezone-aware, got naive {start!r}")
        if speed < 0:
            raise ValueError(f"SimulatedClock speed must be >= 0, got {speed}")
        self._lock = threading.Lock()
        self._origin_sim = start.timestamp()
        self._origin_real = time.monotonic()
        self._speed = float(speed)

    @property
    def speed(self) -> float:
        return self._speed

    def timestamp(self) -> float:
        with self._lock:
            return self._origin_sim + (time.monotonic() - self._origin_real) * self._speed

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp(), UTC)

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (aware); the clock keeps running at its speed from there."""
        if when.tzinfo is None:
            raise ValueError(f"SimulatedClock.set needs an aware datetime, got {when!r}")
        with self._lock:
            self._origin_sim = when.timestamp()
            self._origin_real = time.monotonic()

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (negative values are refused)."""
        if seconds < 0:
            raise ValueError(f"cannot advance a clock backwards ({seconds} s)")
        with self._lock:
            self._origin_sim += seconds

    def set_speed(self, speed: float) -> None:
        if speed < 0:
            raise ValueError(f"SimulatedClock speed must be >= 0, got {speed}")
        now = self.timestamp()
        with self._lock:
            self._origin_sim = now
            self._origin_real = time.monotonic()
            self._speed = float(speed)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self._speed == 0:
            # A frozen clock only moves by advance()/set(); poll for that.
            target = self.timestamp() + seconds
            while self.timestamp() < target:
                await asyncio.sleep(0.01)
            return
        await asyncio.sleep(seconds / self._speed)

    def __repr__(self) -> str:
        return f"SimulatedClock(now={self.now().isoformat()}, speed={self._speed})"


def parse_start(text: str) -> datetime:
    """Parse a user-given start time (ISO 8601); a naive time is taken as JST."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(
            f"cannot read start time {text!r}: use ISO 8601, e.g. 2026-08-01T09:00+09:00"
        ) from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=JST)
    return when
