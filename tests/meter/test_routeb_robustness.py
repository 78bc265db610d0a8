"""The route B reader keeps reading whatever a dongle or meter sends (real pty, emulator)."""

from __future__ import annotations

import asyncio

import pytest

from erab.echonet.frame import ESV, Frame, Property
from erab.meter import routeb
from erab.meter.dongle import CONTROLLER_EOJ, DongleFaults, Output
from erab.meter.routeb import MeterTimeout
from tests.meter.conftest import reader, rig

pytestmark = pytest.mark.timeout(60)


def _fixed_time_edt(year: int, month: int, day: int, count: int) -> bytes:
    # 0xEA: YYYY MM DD hh mm ss, then the cumulative count (Appendix, class 0x0288)
    return year.to_bytes(2, "big") + bytes((month, day, 12, 0, 0)) + count.to_bytes(4, "big")


async def test_a_pushed_reading_with_an_impossible_date_is_recorded_and_reading_goes_on() -> None:
    async with rig() as r, reader(r.port) as meter:
        month_13 = Property(0xEA, _fixed_time_edt(2026, 13, 1, 5))
        bad = Frame(0, r.meter.eoj, CONTROLLER_EOJ, ESV.INF, (month_13,))
        r.dongle.send([r.core._rx(r.dongle.now(), bad.encode())])
        r.dongle.send(r.core.push_fixed_time_readings(r.meter, r.dongle.now()))
        good = await meter.next_pushed_reading(5)
        instant = await meter.read_instant()
    assert (good.direction, good.energy_kwh) == ("import", pytest.approx(12.5))
    assert instant.power_w == 1234
    assert meter.malformed_total == 1
    assert "unreadable 30-minute reading" in meter.malformed[0].reason


async def test_an_erxudp_with_a_corrupted_length_does_not_swallow_later_answers() -> None:
    async with rig(hex_payload=False) as r, reader(r.port) as meter:
        header = (
            f"ERXUDP {r.core.meter_ip} {r.core.own_ip} 0E1A 0E1A {r.core.meter_mac} B4 1 0 FFFF "
        )
        r.dongle.send([Output(0, header.encode() + b"\x10\x81\x00\x01\x02\x88\x01\r\n")])
        instant = await meter.read_instant()
    assert instant.power_w == 1234
    assert any("65535" in m.reason for m in meter.malformed)


async def test_unreadable_lines_are_counted_but_only_the_latest_are_kept() -> None:
    n = routeb.MALFORMED_KEPT * 3
    async with rig() as r, reader(r.port) as meter:
        r.dongle.send([Output(0, b"".join(b"EVENT Q%d x\r\n" % i for i in range(n)))])
        for _ in range(500):
            if meter.malformed_total == n:
                break
            await asyncio.sleep(0.01)
        assert (await meter.read_instant()).power_w == 1234
    assert meter.malformed_total == n
    assert len(meter.malformed) == routeb.MALFORMED_KEPT
    assert meter.malformed[-1].text == f"EVENT Q{n - 1} x"


async def test_pushed_readings_nobody_takes_are_bounded_keeping_the_newest() -> None:
    async with rig() as r, reader(r.port) as meter:
        pushes = routeb.PUSHED_KEPT  # each push holds 0xEA and 0xEB: twice the room
        for _ in range(pushes):
            r.dongle.send(r.core.push_fixed_time_readings(r.meter, r.dongle.now()))
            await asyncio.sleep(0.005)  # the emulator writes synchronously: let the pty drain
        await meter.read_instant()  # the answer comes after every push
        assert meter.pushed_dropped == pushes
        assert (await meter.next_pushed_reading(1)).direction == "import"


async def test_a_silent_meter_is_reported_while_it_is_waited_for() -> None:
    told: list[str] = []
    async with rig(faults=DongleFaults(meter_silent=True)) as r:
        with pytest.raises(MeterTimeout):
            async with reader(
                r.port,
                property_timeout_s=0.2,
                retries=2,
                progress_every_s=0.25,
                progress=told.append,  # type: ignore[arg-type]
            ):
                pass
    waits = [t for t in told if t.startswith("still waiting for the meter's answer")]
    assert any("0xd3, 0xe1, 0xd7 (attempt 1 of 3)" in t and "of up to 1 s" in t for t in waits)
    assert any("asking again (attempt 3 of 3)" in t for t in told)
    # throttled: 3 attempts of 0.6 s with a report at most every 0.25 s
    assert len(waits) <= 3 * 3


async def test_cumulative_energy_is_scaled_by_coefficient_and_unit() -> None:
    # coefficient 10 (0xD3) x unit 0.01 kWh (0xE1 = 0x02): 0.1 kWh per count
    async with rig(coefficient=10, unit_code=0x02) as r, reader(r.port) as meter:
        assert (meter.scaling.coefficient, meter.scaling.unit_kwh) == (10, 0.01)
        history = await meter.read_history(0)
        r.dongle.send(r.core.push_fixed_time_readings(r.meter, r.dongle.now()))
        pushed = await meter.next_pushed_reading(5)
    expected = {h.point: h.import_kwh for h in r.meter.history(0)}
    assert {h.at: h.energy_kwh for h in history} == expected
    assert pushed.energy_kwh == pytest.approx(r.meter.import_kwh, abs=0.1)
    # 12.5 kWh at noon: a raw count (125), or count x unit (1.25), would be far off
    assert expected[pushed.at] == pytest.approx(12.5)
