"""The shared clock: real and simulated (accelerated, settable)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from erab.clock import JST, Clock, RealClock, SimulatedClock, parse_start

START = datetime(2026, 8, 1, 14, 0, tzinfo=JST)


def test_real_clock_is_aware_and_near_wall_time() -> None:
    now = RealClock().now()
    assert now.tzinfo is not None
    assert abs(now.timestamp() - time.time()) < 1.0


def test_frozen_clock_moves_only_when_told() -> None:
    clock = SimulatedClock(START, speed=0)
    time.sleep(0.02)
    assert clock.now() == START
    clock.advance(1800)
    assert clock.now() == START + timedelta(minutes=30)


def test_accelerated_clock_runs_faster_than_real_time() -> None:
    clock = SimulatedClock(START, speed=3600)
    time.sleep(0.05)
    elapsed = (clock.now() - START).total_seconds()
    assert elapsed >= 0.05 * 3600 * 0.9  # at least ~3 simulated minutes in 50 ms


def test_set_jumps_and_keeps_running() -> None:
    clock = SimulatedClock(START, speed=0)
    target = datetime(2026, 12, 24, tzinfo=UTC)
    clock.set(target)
    assert clock.now() == target


async def test_sleep_on_an_accelerated_clock_takes_less_real_time() -> None:
    clock = SimulatedClock(START, speed=100)
    begun = time.monotonic()
    await clock.sleep(5)  # 5 simulated seconds = 50 ms real
    assert time.monotonic() - begun < 1.0
    assert clock.now() - START >= timedelta(seconds=5)


def test_naive_start_and_backwards_steps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulatedClock(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="backwards"):
        SimulatedClock(START, speed=0).advance(-1)


def test_parse_start_takes_naive_times_as_jst() -> None:
    assert parse_start("2026-08-01T14:00") == START
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_start("yesterday")


def test_both_clocks_satisfy_the_clock_protocol() -> None:
    assert isinstance(RealClock(), Clock)
    assert isinstance(SimulatedClock(START), Clock)
    assert RealClock().speed == 1.0


def test_changing_speed_keeps_the_current_time() -> None:
    clock = SimulatedClock(START, speed=0)
    clock.advance(60)
    clock.set_speed(3600)
    assert clock.speed == 3600
    time.sleep(0.05)
    elapsed = (clock.now() - START).total_seconds()
    assert 60 + 0.05 * 3600 * 0.9 <= elapsed < 60 + 3600 * 5  # continued from +60 s, faster


async def test_sleep_on_a_frozen_clock_ends_when_the_clock_is_advanced() -> None:
    clock = SimulatedClock(START, speed=0)
    sleeper = asyncio.create_task(clock.sleep(600))
    await asyncio.sleep(0.05)
    assert not sleeper.done()  # frozen: real time passing does not move it
    clock.advance(600)
    await asyncio.wait_for(sleeper, timeout=2)
    assert clock.now() == START + timedelta(minutes=10)


def test_negative_speed_is_refused() -> None:
    with pytest.raises(ValueError, match="speed must be >= 0"):
        SimulatedClock(START, speed=-1)
    with pytest.raises(ValueError, match="speed must be >= 0"):
        SimulatedClock(START).set_speed(-2)
