"""Route B reader against the dongle emulator on a real pty, with each injected fault."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import pytest

from erab.clock import RealClock
from erab.meter.dongle import DongleFaults
from erab.meter.routeb import (
    MeterNotFound,
    MeterTimeout,
    RouteBAuthError,
    RouteBCredentials,
    SetUnconfirmed,
)
from erab.meter.skstack import Dialect
from tests.meter.conftest import PASSWORD, RBID, reader, rig

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("dialect", "hex_payload", "ending"),
    [
        (Dialect.WITH_SIDE, True, b"\r\n"),
        (Dialect.WITH_SIDE, False, b"\r"),
        (Dialect.NO_SIDE, True, b"\r"),
        (Dialect.NO_SIDE, False, b"\r\n"),
    ],
)
async def test_reader_reads_power_in_every_dialect_mode_and_line_ending(
    dialect: Dialect, hex_payload: bool, ending: bytes
) -> None:
    settings = {"dialect": dialect, "hex_payload": hex_payload, "line_ending": ending}
    async with rig(**settings) as r, reader(r.port) as meter:  # type: ignore[arg-type]
        reading = await meter.read_instant()
        assert meter.dialect is dialect
    assert reading.power_w == 1234
    assert (reading.current_r_a, reading.current_t_a) == (6.8, 5.6)  # 55/45 split at 100 V


async def test_reader_reads_scaling_once_at_connect() -> None:
    async with rig() as r, reader(r.port) as meter:
        assert (meter.scaling.coefficient, meter.scaling.unit_kwh, meter.scaling.digits) == (
            1,
            0.1,
            6,
        )


async def test_history_sets_the_day_then_reads_48_values() -> None:
    async with rig() as r, reader(r.port) as meter:
        history = await meter.read_history(1)
        assert r.meter.history_day == 1
    assert len(history) == 48
    assert (history[0].at.day, history[0].at.hour, history[1].at.minute) == (26, 0, 30)
    assert history[0].energy_kwh == pytest.approx(4.8)  # 48 slots x 100 Wh since the 25th
    assert history[-1].energy_kwh == pytest.approx(9.5)


async def test_history_of_days_before_the_meter_existed_is_no_data() -> None:
    async with rig() as r, reader(r.port) as meter:
        history = await meter.read_history(5)
    assert {h.energy_kwh for h in history} == {None}


async def test_wrong_password_stops_with_a_clear_error() -> None:
    async with rig() as r:
        with pytest.raises(RouteBAuthError, match="password"):
            async with reader(r.port, RouteBCredentials(RBID, "WRONGPASS123")):
                pass


async def test_rejecting_meter_stops_with_auth_error() -> None:
    async with rig(faults=DongleFaults(wrong_credentials=True)) as r:
        with pytest.raises(RouteBAuthError):
            async with reader(r.port):
                pass


async def test_wrong_route_b_id_finds_no_meter() -> None:
    other = RouteBCredentials("F" * 32, PASSWORD)
    async with rig() as r:
        with pytest.raises(MeterNotFound, match="route B ID"):
            async with reader(r.port, other, scan_attempts=2):
                pass


async def test_lost_replies_are_resent_and_answered() -> None:
    async with rig(faults=DongleFaults(lost_replies=2)) as r, reader(r.port) as meter:
        # the two losses hit the scaling read at connect; it still completed
        assert meter.resends == 2
        assert (await meter.read_instant()).power_w == 1234


async def test_delayed_reply_within_the_wait_is_taken() -> None:
    faults = DongleFaults(reply_delay_s=0.2)
    async with rig(faults=faults) as r, reader(r.port, property_timeout_s=0.5) as meter:
        assert (await meter.read_instant()).power_w == 1234
        assert meter.resends == 0


async def test_wait_grows_with_the_number_of_properties() -> None:
    # 2 properties x 0.3 s: a reply 0.45 s late still counts as an answer
    faults = DongleFaults(reply_delay_s=0.45)
    async with rig(faults=faults) as r, reader(r.port, property_timeout_s=0.3, retries=0) as m:
        assert (await m.read_instant()).power_w == 1234


async def test_silent_meter_raises_timeout_after_resends() -> None:
    async with rig(faults=DongleFaults(meter_silent=True)) as r:
        with pytest.raises(MeterTimeout, match="did not answer"):
            async with reader(r.port, property_timeout_s=0.1, retries=2):
                pass


async def test_session_expiry_leads_to_a_rejoin() -> None:
    async with rig(faults=DongleFaults(session_expiry_s=0.3)) as r, reader(r.port) as meter:
        await asyncio.sleep(0.5)
        assert (await meter.read_instant()).power_w == 1234
        assert meter.rejoins == 1
    joins = [c for c in r.core.log if getattr(c, "name", "") == "SKJOIN"]
    assert len(joins) == 2


async def test_meter_ending_the_session_leads_to_a_rejoin() -> None:
    async with rig(faults=DongleFaults(session_end_s=0.3)) as r, reader(r.port) as meter:
        await asyncio.sleep(0.5)
        assert (await meter.read_instant()).power_w == 1234
        assert meter.rejoins == 1


async def test_transmit_limit_holds_requests_until_lifted() -> None:
    faults = DongleFaults(transmit_limit_after=1, transmit_limit_s=0.4)
    async with rig(faults=faults) as r, reader(r.port) as meter:
        start = time.monotonic()
        reading = await meter.read_instant()
        waited = time.monotonic() - start
    assert reading.power_w == 1234
    assert waited >= 0.3


async def test_set_with_lost_answer_is_read_back_not_resent() -> None:
    async with rig() as r, reader(r.port) as meter:
        r.core.state.lost_left = 1  # the Set_Res is lost on the radio
        await meter.set(0xE5, b"\x07")
        set_frames = [f for f in r.core.frames_received if f[10] == 0x61]
    assert len(set_frames) == 1
    assert r.meter.history_day == 7


async def test_set_unconfirmed_when_meter_goes_silent() -> None:
    async with rig() as r, reader(r.port, retries=1) as meter:
        r.core.faults = DongleFaults(meter_silent=True)
        with pytest.raises((SetUnconfirmed, MeterTimeout)):
            await meter.set(0xE5, b"\x05")
        set_frames = [f for f in r.core.frames_received if f[10] == 0x61]
    assert len(set_frames) == 1  # never resent without a read-back showing it failed


async def test_pushed_30_minute_readings_are_decoded() -> None:
    async with rig() as r, reader(r.port) as meter:
        r.dongle.send(r.core.push_fixed_time_readings(r.meter, r.dongle.now()))
        first = await meter.next_pushed_reading(2)
        second = await meter.next_pushed_reading(2)
    assert first.direction == "import" and first.energy_kwh == pytest.approx(12.5)
    assert second.direction == "export" and second.energy_kwh == pytest.approx(1.1)
    assert (first.at.hour, first.at.minute, first.at.day) == (12, 0, 27)


async def test_malformed_line_from_dongle_is_recorded_and_reading_continues() -> None:
    from erab.meter.dongle import Output

    async with rig() as r, reader(r.port) as meter:
        r.dongle.send([Output(0, b"EVENT QQ garbage\r\n")])
        reading = await meter.read_instant()
        assert reading.power_w == 1234
        assert any("EVENT" in m.text for m in meter.malformed)


async def test_session_is_terminated_on_close() -> None:
    async with rig() as r:
        async with reader(r.port):
            pass
        await asyncio.sleep(0.05)
        assert not r.core.state.joined
        assert [c for c in r.core.log if getattr(c, "name", "") == "SKTERM"]


async def test_a_command_the_dongle_refuses_names_the_command_and_code() -> None:
    from erab.meter.routeb import DongleCommandFailed

    # told the wrong dialect, the reader sends SKSCAN without the side argument
    async with rig(dialect=Dialect.WITH_SIDE) as r:
        with pytest.raises(DongleCommandFailed, match="SKSCAN: FAIL ER05") as info:
            async with reader(r.port, dialect=Dialect.NO_SIDE):  # type: ignore[arg-type]
                pass
    assert info.value.code == 5


async def test_poll_reads_power_at_the_given_interval() -> None:
    async with rig() as r, reader(r.port) as meter:
        meter.clock = RealClock()
        start = time.monotonic()
        readings = [reading async for reading in meter.poll(0.2, count=3)]
        elapsed = time.monotonic() - start
    assert [x.power_w for x in readings] == [1234, 1234, 1234]
    assert elapsed >= 0.4


@pytest.mark.parametrize("dialect", list(Dialect))
async def test_binary_payload_with_cr_lf_bytes_crosses_the_pty_intact(dialect: Dialect) -> None:
    async with rig(dialect=dialect, hex_payload=False) as r, reader(r.port) as meter:
        r.meter.fleet.net_w[0] = 0x0D0A  # 3338 W: the answer's EDT is 00 00 0D 0A
        reading = await meter.read_instant()
    assert reading.power_w == 3338
    assert meter.parser.hex_payload is False


async def test_session_renewal_is_waited_for_without_rejoining() -> None:
    faults = DongleFaults(session_lifetime_s=0.3)
    async with rig(faults=faults) as r, reader(r.port) as meter:
        await asyncio.sleep(0.35)  # EVENT 29 is out, EVENT 25 not yet
        assert (await meter.read_instant()).power_w == 1234
        assert meter.rejoins == 0
    assert len([c for c in r.core.log if getattr(c, "name", "") == "SKJOIN"]) == 1
    sends = [c for c in r.core.log if getattr(c, "name", "") == "SKSENDTO"]
    assert len(sends) == len(r.core.frames_received)  # none refused: it waited for EVENT 25


async def test_unplugged_dongle_gives_a_clear_error() -> None:
    from erab.meter.routeb import RouteBError

    async with rig() as r, reader(r.port) as meter:
        r.dongle.close()  # the pty's other end goes away, as when the USB stick is pulled
        with pytest.raises(RouteBError, match="serial port closed or failed"):
            await asyncio.wait_for(meter.read_instant(), 5)


async def test_segment_history_reads_import_and_export_backwards_from_a_slot_end() -> None:
    from tests.meter.meters import NOW

    async with rig() as r, reader(r.port) as meter:
        rows = await meter.read_segments(NOW - timedelta(hours=1), segments=3)
        assert r.meter.log2_segments == 3
    assert [imp.at for imp, _ in rows] == [
        NOW - timedelta(hours=1),
        NOW - timedelta(minutes=90),
        NOW - timedelta(hours=2),
    ]
    # 100 Wh imported and 10 Wh exported per slot since the 25th, 0.1 kWh units
    assert [imp.energy_kwh for imp, _ in rows] == pytest.approx([11.8, 11.7, 11.6])
    assert [exp.energy_kwh for _, exp in rows] == pytest.approx([1.1, 1.1, 1.1])


async def test_segment_history_refuses_a_time_off_the_half_hour() -> None:
    from tests.meter.meters import NOW

    async with rig() as r, reader(r.port) as meter:
        with pytest.raises(ValueError, match="slot end"):
            await meter.read_segments(NOW - timedelta(minutes=10))
        assert not [f for f in r.core.frames_received if f[10] == 0x61 and f[12] == 0xED]


async def test_meter_pushes_its_30_minute_reading_when_the_boundary_passes() -> None:
    from erab.clock import SimulatedClock
    from tests.meter.meters import NOW

    async with rig() as r, reader(r.port) as meter:
        clock = SimulatedClock(NOW, speed=3600)  # an hour per real second
        pushes = await r.dongle.run_meter(r.meter, clock, tick_s=60, duration_s=31 * 60)
        pushed = [await meter.next_pushed_reading(2) for _ in range(2)]
    assert pushes == 1
    assert [(p.direction, p.at) for p in pushed] == [
        ("import", NOW + timedelta(minutes=30)),
        ("export", NOW + timedelta(minutes=30)),
    ]
    # 30 minutes at 1234 W adds 617 Wh: 12.517 + 0.617 kWh, counted in 0.1 kWh
    assert pushed[0].energy_kwh == pytest.approx(13.1)


async def test_reader_waits_for_a_long_scan_beyond_the_join_timeout() -> None:
    # duration 10 listens 28 x 10.25 s on a real dongle (0.29 s emulated): longer than
    # the 0.1 s join timeout, and the reader waits it out
    async with rig() as r, reader(r.port, scan_duration=10, join_timeout_s=0.1) as meter:
        assert (await meter.read_instant()).power_w == 1234
    scans = [c for c in r.core.log if getattr(c, "name", "") == "SKSCAN"]
    assert len(scans) == 1


def _esv_epc(frame: bytes) -> tuple[int, int]:
    return frame[10], frame[12]


async def test_set_lost_before_the_meter_is_read_back_then_sent_again() -> None:
    async with rig() as r, reader(r.port) as meter:
        r.core.state.lost_requests_left = 1  # the SetC never reaches the meter
        await meter.set(0xE5, b"\x07")
        sent = [c.data for c in r.core.log if getattr(c, "name", "") == "SKSENDTO"]
    assert [_esv_epc(f) for f in sent[-3:]] == [(0x61, 0xE5), (0x62, 0xE5), (0x61, 0xE5)]
    assert r.meter.history_day == 7


async def test_set_that_never_takes_effect_is_unconfirmed_and_read_back_before_each_resend() -> (
    None
):
    from erab.echonet.frame import decode_frame

    async with rig() as r, reader(r.port, retries=1) as meter:
        handle = r.core.node.handle

        def sets_lost(data: bytes, addr: object) -> list[tuple[bytes, object]]:
            frame = decode_frame(data)
            return [] if frame.esv.value == 0x61 else handle(data, addr)  # type: ignore[union-attr,arg-type]

        r.core.node.handle = sets_lost  # type: ignore[assignment,method-assign]
        with pytest.raises(SetUnconfirmed, match="did not take effect"):
            await meter.set(0xE5, b"\x05")
        sent = [c.data for c in r.core.log if getattr(c, "name", "") == "SKSENDTO"]
    tail = [_esv_epc(f) for f in sent if _esv_epc(f)[1] == 0xE5]
    assert tail == [(0x61, 0xE5), (0x62, 0xE5), (0x61, 0xE5), (0x62, 0xE5)]
    assert r.meter.history_day == 0


async def test_session_end_timeout_event_28_leads_to_a_rejoin() -> None:
    from erab.meter import skstack as sk
    from erab.meter.dongle import Output

    async with rig() as r, reader(r.port) as meter:
        r.core.state.joined = False  # the dongle's session is gone ...
        line = sk.format_event(0x28, r.core.meter_ip, Dialect.WITH_SIDE) + "\r\n"
        r.dongle.send([Output(0, line.encode())])  # ... and it says so with EVENT 28
        await asyncio.sleep(0.05)
        assert (await meter.read_instant()).power_w == 1234
        assert meter.rejoins == 1


async def test_closing_with_a_silent_meter_ends_on_event_28_without_waiting() -> None:
    async with rig() as r:
        meter = reader(r.port, command_timeout_s=5.0)
        await meter.connect()
        r.core.faults = DongleFaults(meter_silent=True)
        start = time.monotonic()
        await meter.close()
        assert time.monotonic() - start < 1.0
    assert not r.core.state.joined


async def test_reading_time_is_given_in_jst() -> None:
    async with rig() as r, reader(r.port) as meter:
        meter.clock = RealClock()
        reading = await meter.read_instant()
    assert reading.read_at.utcoffset() == timedelta(hours=9)


async def test_infc_reading_is_taken_and_answered_with_infc_res() -> None:
    from erab.echonet.frame import ESV, Frame, Property, decode_frame
    from erab.meter.dongle import CONTROLLER_EOJ

    async with rig() as r, reader(r.port) as meter:
        edt = r.meter.read(0xEA)
        assert edt is not None
        infc = Frame(0x4242, r.meter.eoj, CONTROLLER_EOJ, ESV.INFC, (Property(0xEA, edt),))
        r.dongle.send([r.core._rx(r.dongle.now(), infc.encode())])
        pushed = await meter.next_pushed_reading(2)
        for _ in range(100):  # the INFC_Res goes out through the dongle
            if any(f[10] == 0x7A for f in r.core.frames_received):
                break
            await asyncio.sleep(0.01)
    assert (pushed.direction, pushed.energy_kwh) == ("import", pytest.approx(12.5))
    [answer] = [decode_frame(f) for f in r.core.frames_received if f[10] == 0x7A]
    assert isinstance(answer, Frame) and answer.tid == 0x4242
    assert [(p.epc, p.edt) for p in answer.props] == [(0xEA, b"")]


async def test_request_pending_when_the_session_drops_is_resent_after_rejoining() -> None:
    # two properties may take 2 x 30 s to answer; the session's end means no answer will come
    async with rig() as r, reader(r.port, property_timeout_s=30.0) as meter:
        r.core.state.lost_left = 1  # the answer to the next Get is lost ...
        r.core.state.timers["end"] = r.dongle.now() + 0.3  # ... and the meter ends the session
        r.dongle.send([])  # arm the timer
        reading = await asyncio.wait_for(meter.read_instant(), 15)
    assert reading.power_w == 1234 and meter.rejoins == 1


async def test_a_session_left_by_a_program_that_died_does_not_stop_the_next_one() -> None:
    async with rig() as r:
        first = reader(r.port)
        await first.connect()  # ... and is killed without SKTERM
        assert first._pump is not None
        first._pump.cancel()
        assert r.core.state.joined
        async with reader(r.port) as second:
            assert (await second.read_instant()).power_w == 1234
    assert [c.name for c in r.core.log if getattr(c, "name", "") in ("SKRESET", "SKJOIN")] == [
        "SKRESET",
        "SKJOIN",
        "SKRESET",
        "SKJOIN",
    ]


async def test_an_emulated_home_drives_the_meter_the_reader_sees() -> None:
    from erab.clock import SimulatedClock
    from erab.devices import Scenario
    from erab.echonet.node import LocalNode
    from erab.meter.dongle import DongleCore, PtyDongle
    from erab.meter.serialport import SerialPort
    from erab.meter.smartmeter import SmartMeter
    from erab.sim import build_emulation
    from tests.meter.meters import NOW

    home = build_emulation(Scenario.generate(1, seed=3), NOW, history_days=1)
    meter = SmartMeter(home.meters, 0)
    core = DongleCore(LocalNode([meter]), route_b_id=RBID, password=PASSWORD)
    async with PtyDongle(core) as dongle, SerialPort(dongle.path) as port, reader(port) as m:
        clock = SimulatedClock(NOW, speed=3600)
        pushes = await dongle.run_meter(
            meter, clock, tick_s=60, duration_s=31 * 60, advance=home.town.advance_to
        )
        pushed = await m.next_pushed_reading(2)
        reading = await m.read_instant()
    assert pushes == 1 and pushed.at == NOW + timedelta(minutes=30)
    assert home.town.time_s >= (NOW + timedelta(minutes=31)).timestamp()  # physics ran along
    assert reading.power_w == round(float(home.town.site_net_w[0]))


def test_default_wait_is_the_aif_specs_20_s_per_requested_property() -> None:
    from erab.meter.routeb import RouteBReader
    from erab.meter.serialport import SerialPort
    from tests.meter.conftest import CREDENTIALS

    meter = RouteBReader(SerialPort("/dev/null"), CREDENTIALS)  # not opened
    assert meter.property_timeout_s == 20.0
    assert meter._timeout(3) == 60.0  # three properties in one Get
