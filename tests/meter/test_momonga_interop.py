"""momonga, an independent route B client from PyPI, reads the emulated meter through the pty."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from erab.meter.skstack import Dialect
from tests.meter.conftest import PASSWORD, RBID, rig
from tests.requires import peer

momonga = peer("momonga")

pytestmark = pytest.mark.timeout(90)


async def _in_thread(fn: Any) -> Any:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except Exception as exc:  # surfaced below
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.02)
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.parametrize("dialect", list(Dialect))
async def test_momonga_reads_power_and_energy_unit(dialect: Dialect) -> None:
    async with rig(dialect=dialect, open_port=False) as r:

        def read() -> tuple[int | None, float, int]:
            mo = momonga.Momonga(RBID, PASSWORD, r.dongle.path)
            mo.internal_xmit_interval = 0
            with mo:
                return mo.get_instantaneous_power(), mo.energy_unit, mo.energy_coefficient

        power, unit, coefficient = await _in_thread(read)
    assert power == 1234
    assert (unit, coefficient) == (0.1, 1)


async def test_momonga_is_refused_with_a_wrong_password() -> None:
    async with rig(open_port=False) as r:

        def read() -> None:
            mo = momonga.Momonga(RBID, "WRONGPASS123", r.dongle.path, join_retries=1)
            mo.internal_xmit_interval = 0
            with mo:
                pass

        with pytest.raises(momonga.MomongaSkJoinFailure):
            await _in_thread(read)


async def test_momonga_reads_currents_history_and_the_latest_30_minute_reading() -> None:
    async with rig(open_port=False) as r:

        def read() -> tuple[Any, Any, Any]:
            mo = momonga.Momonga(RBID, PASSWORD, r.dongle.path)
            mo.internal_xmit_interval = 0
            with mo:
                return (
                    mo.get_instantaneous_current(),
                    mo.get_historical_cumulative_energy_1(day=1),
                    mo.get_cumulative_energy_measured_at_fixed_time(),
                )

        currents, history, fixed = await _in_thread(read)
    assert currents == pytest.approx({"r phase current": 6.8, "t phase current": 5.6})
    assert len(history) == 48
    assert history[0]["cumulative energy"] == pytest.approx(4.8)
    assert r.meter.history_day == 1
    assert fixed["cumulative energy"] == pytest.approx(12.5)
    assert (fixed["timestamp"].hour, fixed["timestamp"].minute) == (12, 0)


async def test_momonga_switches_a_binary_mode_dongle_to_hex_with_wopt_and_reads() -> None:
    async with rig(dialect=Dialect.NO_SIDE, hex_payload=False, open_port=False) as r:

        def read() -> int | None:
            mo = momonga.Momonga(RBID, PASSWORD, r.dongle.path)
            mo.internal_xmit_interval = 0
            with mo:
                return mo.get_instantaneous_power()

        power = await _in_thread(read)
    assert power == 1234
    assert [c.line for c in r.core.log if getattr(c, "name", "") == "WOPT"] == ["WOPT 01"]
    assert r.core.hex_payload
