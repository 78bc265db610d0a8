"""The emulated low-voltage smart meter (0x0288): counters, history, wire layouts, actions.

Wire layouts are checked with erab.echonet.meterdata and the class database's codecs, an
implementation of the Appendix written separately from the meter's own encoders.
"""

from __future__ import annotations

import struct
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.clock import JST
from erab.echonet import meterdata
from erab.echonet.classdb import get_class
from erab.echonet.frame import EOJ, ESV, Frame, Property, decode_frame
from erab.echonet.node import LocalNode
from erab.meter.smartmeter import NO_DATA, MeterFleet, SmartMeter

NOW = datetime(2026, 8, 20, 14, 10, tzinfo=JST)
METER = get_class(0x0288)


@pytest.fixture(scope="module")
def fleet() -> MeterFleet:
    return MeterFleet.synthetic(50, NOW, seed=3)


def test_45_days_of_history_are_kept_and_older_days_have_no_data(fleet) -> None:
    m = SmartMeter(fleet, 7)
    day_45 = m.history(45)
    assert day_45[0].point == datetime(2026, 7, 6, tzinfo=JST)
    assert all(r.import_kwh is not None for r in day_45)
    assert all(r.import_kwh is None for r in m.history(46))


def test_today_has_data_up_to_the_newest_point_only(fleet) -> None:
    today = SmartMeter(fleet, 0).history(0)
    # 14:10 now: 00:00 … 14:00 measured (29 points), 14:30 onwards not yet
    assert [r.import_kwh is not None for r in today] == [True] * 29 + [False] * 19


def test_cumulative_readings_never_decrease(fleet) -> None:
    m = SmartMeter(fleet, 3)
    values = [
        r.import_kwh for d in range(45, -1, -1) for r in m.history(d) if r.import_kwh is not None
    ]
    assert values == sorted(values)
    exports = [
        r.export_kwh for d in range(45, -1, -1) for r in m.history(d) if r.export_kwh is not None
    ]
    assert exports == sorted(exports)


def test_e2_is_the_day_and_48_values_as_meterdata_reads_them(fleet) -> None:
    m = SmartMeter(fleet, 5)
    node = LocalNode([m])
    assert m.write(0xE5, b"\x02")  # yesterday's yesterday
    edt = m.read(0xE2)
    assert edt is not None and len(edt) == 194
    decoded = meterdata.decode_daily_history(edt, today=NOW.date(), unit_code=0x01)
    assert decoded.day == 2
    assert [r.energy_kwh for r in decoded.readings] == [r.import_kwh for r in m.history(2)]
    assert decoded.readings[0].slot_end == datetime(2026, 8, 18, tzinfo=JST)
    assert node.objects == (m,)


def test_e4_carries_the_reverse_direction(fleet) -> None:
    m = SmartMeter(fleet, 5)
    edt = m.read(0xE4)
    assert edt is not None
    decoded = meterdata.decode_daily_history(edt, today=NOW.date())
    assert [r.energy_kwh for r in decoded.readings] == [r.export_kwh for r in m.history(0)]
    assert struct.unpack(">I", edt[-4:])[0] == NO_DATA  # 23:30 today: no data yet


def test_ea_and_eb_give_the_newest_half_hour_point(fleet) -> None:
    m = SmartMeter(fleet, 9)
    imp = meterdata.decode_fixed_time_reading(m.read(0xEA) or b"")
    exp = meterdata.decode_fixed_time_reading(m.read(0xEB) or b"")
    point = datetime(2026, 8, 20, 14, 0, tzinfo=JST)
    assert imp.slot_end == point and exp.slot_end == point
    assert imp.energy_kwh == m.reading_at(point).import_kwh
    assert exp.energy_kwh == m.reading_at(point).export_kwh


def test_ec_answers_the_segments_asked_by_ed_going_back_in_time(fleet) -> None:
    m = SmartMeter(fleet, 2)
    point = datetime(2026, 8, 19, 9, 30, tzinfo=JST)
    request = meterdata.encode_history_request(meterdata.HistoryRequest(point, 4))
    assert m.write(0xED, request)
    segments = meterdata.decode_segment_history(m.read(0xEC) or b"")
    assert [s.slot_end for s in segments] == [point - timedelta(minutes=30 * k) for k in range(4)]
    for s in segments:
        r = m.reading_at(s.slot_end)
        assert (s.normal_kwh, s.reverse_kwh) == (r.import_kwh, r.export_kwh)


def test_ed_refuses_minutes_other_than_0_or_30(fleet) -> None:
    m = SmartMeter(fleet, 2)
    bad = struct.pack(">HBBBBB", 2026, 8, 19, 9, 15, 4)
    assert not m.write(0xED, bad)


def test_e0_e3_are_counts_scaled_by_coefficient_and_unit() -> None:
    f = MeterFleet(
        1, NOW - timedelta(days=1), coefficient=2, unit_code=0x02, initial_import_kwh=123.456
    )
    m = SmartMeter(f, 0)
    count = struct.unpack(">I", m.read(0xE0) or b"")[0]
    # 123.456 kWh / (2 × 0.01 kWh) = 6172.8 -> 6172
    assert count == 6172
    assert METER.property(0xD3).decode(m.read(0xD3) or b"") == 2
    assert METER.property(0xE1).decode(m.read(0xE1) or b"") == 0.01


def test_counts_wrap_at_the_number_of_digits() -> None:
    f = MeterFleet(1, NOW, digits=6, unit_code=0x01, initial_import_kwh=99_999.95)
    f.observe(f.time_s, f.time_s + 3600, np.array([1000.0]))  # +1 kWh
    assert f.counts(f.import_wh)[0] == 9  # 100000.9 kWh -> 1000009 mod 10^6
    m = SmartMeter(f, 0)
    assert METER.property(0xD7).decode(m.read(0xD7) or b"") == 6


def test_instantaneous_power_and_currents_follow_the_site() -> None:
    f = MeterFleet(1, NOW)
    f.observe(f.time_s, f.time_s + 60, np.array([-2000.0]))
    m = SmartMeter(f, 0)
    assert METER.property(0xE7).decode(m.read(0xE7) or b"") == -2000
    currents = METER.property(0xE8).decode(m.read(0xE8) or b"")
    assert currents == {"rPhase": -11.0, "tPhase": -9.0}  # 20 A split 55/45


def test_observing_records_each_half_hour_point_with_the_energy_up_to_it() -> None:
    start = datetime(2026, 8, 20, tzinfo=JST)  # a fleet's time starts at its origin
    f = MeterFleet(1, start)
    f.observe(f.time_s, f.time_s + 3600, np.array([600.0]))  # 600 W for an hour
    m = SmartMeter(f, 0)
    assert m.reading_at(start + timedelta(minutes=30)).import_kwh == 0.3
    assert m.reading_at(start + timedelta(minutes=60)).import_kwh == 0.6


def test_disconnect_stops_counting_and_connect_resumes() -> None:
    f = MeterFleet(1, NOW)
    m = SmartMeter(f, 0)
    m.disconnect()
    f.observe(f.time_s, f.time_s + 3600, np.array([1000.0]))
    assert m.import_kwh == 0.0 and m.power_w == 0.0
    assert m.read(0x80) == b"\x31"
    m.connect()
    f.observe(f.time_s, f.time_s + 3600, np.array([1000.0]))
    assert m.import_kwh == pytest.approx(1.0)


def test_a_remote_breaker_setting_trips_on_overcurrent() -> None:
    f = MeterFleet(1, NOW)
    m = SmartMeter(f, 0)
    m.set_breaker(30)
    f.observe(f.time_s, f.time_s + 60, np.array([2500.0]))
    assert m.connected
    f.observe(f.time_s, f.time_s + 60, np.array([4000.0]))  # 40 A > 30 A
    assert not m.connected
    with pytest.raises(ValueError, match="5-200 A"):
        m.set_breaker(1000)


def test_vectorised_history_matches_a_per_meter_loop() -> None:
    rng = np.random.default_rng(1)
    imp = rng.uniform(0, 600, (96, 4))
    exp = rng.uniform(0, 100, (96, 4))
    f = MeterFleet(4, datetime(2026, 8, 1, tzinfo=JST), initial_import_kwh=[0, 10, 20, 30])
    f.load_history(imp, exp)
    for i in range(4):
        total = [0.0, 10_000.0, 20_000.0, 30_000.0][i]
        for k in range(96):
            total += imp[k, i]
            point = datetime(2026, 8, 1, tzinfo=JST) + timedelta(minutes=30 * (k + 1))
            assert SmartMeter(f, i).reading_at(point).import_kwh == pytest.approx(
                np.floor(total / 100.0 + 1e-9) / 10.0
            )


def test_no_history_leaves_the_registers_and_the_clock_where_they_were() -> None:
    f = MeterFleet(2, datetime(2026, 8, 1, tzinfo=JST), initial_import_kwh=[5, 7])
    before = (f.time_s, f.import_wh.copy(), f.export_wh.copy())
    f.load_history(np.zeros((0, 2)), np.zeros((0, 2)))  # erab emulate --history-days 0
    assert f.time_s == before[0]
    assert (f.import_wh == before[1]).all() and (f.export_wh == before[2]).all()


def test_the_meter_answers_over_echonet_lite_get_with_the_class_layouts(fleet) -> None:
    node = LocalNode([SmartMeter(fleet, 1)])
    request = Frame(
        1,
        EOJ(0x05, 0xFF, 1),
        EOJ(0x02, 0x88, 1),
        ESV.Get,
        tuple(
            Property(e, b"")
            for e in (0xE0, 0xE3, 0xE7, 0xE8, 0xD7, 0xE1, 0xE2, 0xE4, 0xEA, 0xEB, 0xEC)
        ),
    )
    replies = node.handle(request.encode(), ("127.0.0.1", 3610))
    frame = decode_frame(replies[0][0])
    assert isinstance(frame, Frame) and frame.esv is ESV.Get_Res
    # the class database's schema-driven codecs: each value fits the Appendix layout
    values = {p.epc: METER.property(p.epc).decode(p.edt) for p in frame.props}
    assert len(values) == 11
    assert values[0xE2]["day"] == 0 and len(values[0xE2]["electricEnergy"]) == 48
    assert values[0xEA]["electricEnergy"] == values[0xE2]["electricEnergy"][28]  # 14:00
    assert values[0xEC]["numberOfCollectionSegments"] == 6


def test_history_day_out_of_range_is_an_error(fleet) -> None:
    m = SmartMeter(fleet, 0)
    with pytest.raises(ValueError, match="0-99"):
        m.history(100)
    assert not m.write(0xE5, b"\x64")  # 100 is not a day


FINEST_COUNT_WH = 0.1
"""The finest register step any meter can show: unit code 0x04 (0.0001 kWh), coefficient 1."""


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.floats(1.0, 5400.0), st.floats(-8000.0, 8000.0)), min_size=1, max_size=20)
)
def test_import_and_export_are_the_integrals_of_net_power_each_way(steps) -> None:
    f = MeterFleet(1, NOW)
    expected_import = expected_export = 0.0
    for dt, power in steps:
        f.observe(f.time_s, f.time_s + dt, np.array([power]))
        expected_import += max(power, 0.0) * dt / 3600.0
        expected_export += max(-power, 0.0) * dt / 3600.0
    # The registers agree with the integral to within a thousandth of the finest count a
    # meter can show; what remains is float rounding of POSIX times near 1.8e9 s (≈1e-7 s
    # per step at up to 8 kW ≈ 3e-7 Wh per step), far below any register step.
    tolerance_wh = FINEST_COUNT_WH / 1000.0
    assert f.import_wh[0] == pytest.approx(expected_import, abs=tolerance_wh)
    assert f.export_wh[0] == pytest.approx(expected_export, abs=tolerance_wh)
    imp, _ = f.points(0, f.newest_point_s(), 1)
    assert imp[0] <= f.counts(np.array([f.import_wh[0]]))[0]  # the point is not after now


def test_a_minute_boundary_just_after_the_step_end_does_not_count_ahead() -> None:
    f = MeterFleet(1, NOW)
    t0 = f.time_s
    t1 = t0 + 60.0 - 5e-7  # float rounding can leave a step end this short of a minute
    f.observe(t0, t1, np.array([3600.0]))  # 3.6 kW: 1 Wh per second
    assert f.import_wh[0] == pytest.approx(t1 - t0, abs=1e-9)


def test_d0_and_ee_give_one_minute_points_and_ef_selects_them() -> None:
    start = datetime(2026, 8, 20, tzinfo=JST)
    f = MeterFleet(1, start)
    f.observe(f.time_s, f.time_s + 600, np.array([600.0]))  # 600 W: 0.01 kWh a minute
    m = SmartMeter(f, 0)
    d0 = METER.property(0xD0).decode(m.read(0xD0) or b"")
    assert d0["dateAndTime"] == datetime(2026, 8, 20, 0, 10)
    assert d0["normalDirectionElectricEnergy"] == 1  # 0.1 kWh at 00:10, in 0.1 kWh counts
    request = struct.pack(">HBBBBB", 2026, 8, 20, 0, 9, 3)
    assert m.write(0xEF, request)
    ee = METER.property(0xEE).decode(m.read(0xEE) or b"")
    assert ee["dateAndTime"] == datetime(2026, 8, 20, 0, 9)
    assert [p["normalDirectionElectricEnergy"] for p in ee["electricEnergy"]] == [0, 0, 0]
    assert not m.write(0xEF, struct.pack(">HBBBBB", 2026, 8, 20, 0, 9, 11))  # 1-10 segments


def test_minutes_older_than_kept_have_no_data() -> None:
    start = datetime(2026, 8, 20, tzinfo=JST)
    f = MeterFleet(1, start)
    f.observe(f.time_s, f.time_s + 3 * 3600, np.array([100.0]))
    imp, _ = f.minute_points(0, f.time_s, 200)
    assert imp[0] != NO_DATA and imp[119] != NO_DATA
    assert imp[120] == NO_DATA


def _meter_drawing(power_w: float, n: int = 1) -> tuple[MeterFleet, SmartMeter]:
    f = MeterFleet(n, NOW)
    f.observe(f.time_s, f.time_s + 60, np.full(n, power_w))
    return f, SmartMeter(f, 0)


def test_demand_limit_cuts_the_supply_when_import_exceeds_it() -> None:
    f, m = _meter_drawing(1500.0)
    m.set_demand_limit(2000)
    assert m.connected and m.power_w == 1500.0
    f.observe(f.time_s, f.time_s + 60, np.array([2500.0]))
    assert not m.connected and m.demand_cut
    assert m.power_w == 0.0 and m.read(0xE7) == struct.pack(">i", 0)
    assert m.read(0x80) == b"\x31"


def test_a_meter_cut_by_its_demand_limit_counts_nothing() -> None:
    f, m = _meter_drawing(3000.0)
    m.set_demand_limit(2000)
    before = m.import_kwh
    f.observe(f.time_s, f.time_s + 3600, np.array([3000.0]))
    assert m.import_kwh == before


def test_setting_a_demand_limit_below_the_present_load_cuts_at_once() -> None:
    _, m = _meter_drawing(1200.0)
    m.set_demand_limit(1000)
    assert not m.connected and m.power_w == 0.0 and m.demand_limit_w == 1000.0


def test_export_is_never_limited_by_the_demand_limit() -> None:
    f, m = _meter_drawing(-4000.0)
    m.set_demand_limit(500)
    f.observe(f.time_s, f.time_s + 60, np.array([-4000.0]))
    assert m.connected and m.power_w == -4000.0


def test_raising_the_demand_limit_above_the_load_restores_the_supply() -> None:
    _, m = _meter_drawing(2500.0)
    m.set_demand_limit(2000)
    m.set_demand_limit(2400)  # still below the load: stays cut
    assert not m.connected
    m.set_demand_limit(3000)
    assert m.connected and not m.demand_cut and m.power_w == 2500.0
    assert m.read(0x80) == b"\x30"


def test_removing_the_demand_limit_restores_the_supply() -> None:
    _, m = _meter_drawing(2500.0)
    m.set_demand_limit(2000)
    m.set_demand_limit(None)
    assert m.connected and m.demand_limit_w is None


def test_connect_after_a_demand_cut_trips_again_while_the_load_is_over() -> None:
    f, m = _meter_drawing(2500.0)
    m.set_demand_limit(2000)
    m.connect()
    assert not m.connected  # closed onto 2500 W > 2000 W: cut again
    f.observe(f.time_s, f.time_s + 60, np.array([800.0]))  # the household switched loads off
    assert not m.connected  # the meter stays cut until told
    m.connect()
    assert m.connected and m.power_w == 800.0


def test_raising_the_demand_limit_does_not_undo_a_remote_disconnect() -> None:
    _, m = _meter_drawing(2500.0)
    m.set_demand_limit(2000)
    m.disconnect()
    m.set_demand_limit(5000)
    assert not m.connected and not m.demand_cut


def test_demand_limits_are_per_meter_across_the_fleet() -> None:
    f = MeterFleet(3, NOW)
    meters = [SmartMeter(f, i) for i in range(3)]
    meters[0].set_demand_limit(1000)
    meters[1].set_demand_limit(3000)
    f.observe(f.time_s, f.time_s + 60, np.array([2000.0, 2000.0, 2000.0]))
    assert [m.connected for m in meters] == [False, True, True]
    assert f.net_w.tolist() == [0.0, 2000.0, 2000.0]


@pytest.mark.parametrize("bad", [0.0, -100.0, float("nan"), float("inf")])
def test_a_demand_limit_that_is_not_a_positive_wattage_is_refused(bad: float) -> None:
    _, m = _meter_drawing(100.0)
    with pytest.raises(ValueError, match="demand limit must be a positive number of W"):
        m.set_demand_limit(bad)
    assert m.demand_limit_w is None


def test_configure_with_one_bad_value_changes_nothing() -> None:
    _, m = _meter_drawing(100.0)
    with pytest.raises(ValueError, match="5-200 A"):
        m.configure(breaker_a=500, demand_limit_w=50)
    assert (m.breaker_a, m.demand_limit_w, m.connected) == (None, None, True)
