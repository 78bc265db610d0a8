"""Smart-meter scaling and the 30-minute history layouts of class 0x0288."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from momonga.momonga_echonet_data import EchonetDataParser

from erab.clock import JST as CLOCK_JST
from erab.echonet.classdb import get_class
from erab.echonet.codecs import Special, ValueCodecError
from erab.echonet.meterdata import (
    ENERGY_UNITS_KWH,
    JST,
    NO_DATA,
    HistoryRequest,
    Reading,
    SegmentReading,
    decode_daily_history,
    decode_fixed_time_reading,
    decode_history_request,
    decode_segment_history,
    encode_daily_history,
    encode_fixed_time_reading,
    encode_history_request,
    encode_segment_history,
    energy_count,
    energy_unit_kwh,
    scale,
)


def counts_edt(day: int, counts: list[int]) -> bytes:
    return day.to_bytes(2, "big") + b"".join(c.to_bytes(4, "big") for c in counts)


def test_jst_is_the_clocks_jst() -> None:
    assert JST == CLOCK_JST


@pytest.mark.parametrize(
    ("code", "kwh"),
    [(0x00, 1), (0x01, 0.1), (0x02, 0.01), (0x03, 0.001), (0x04, 0.0001), (0x0A, 10),
     (0x0B, 100), (0x0C, 1000), (0x0D, 10000)],
)  # fmt: skip
def test_unit_codes_of_0xe1(code: int, kwh: float) -> None:
    assert energy_unit_kwh(code) == kwh


def test_unit_table_is_the_class_databases_0xe1_table() -> None:
    schema = get_class(0x0288).property(0xE1).schema
    from_mra = {int(item["edt"], 16): item["numericValue"] for item in schema["enum"]}
    assert dict(ENERGY_UNITS_KWH) == from_mra


def test_unknown_unit_code_is_refused_with_the_allowed_codes() -> None:
    with pytest.raises(ValueCodecError, match=r"code 0x05 is not defined; allowed: 0x00, 0x01"):
        energy_unit_kwh(0x05)


def test_scale_multiplies_count_by_coefficient_and_unit() -> None:
    assert scale(12345, 1, 0.1) == 1234.5
    assert scale(3, 1, 0.1) == 0.3  # no binary noise
    assert scale(250, 40, 0.01) == 100.0


def test_daily_history_has_48_readings_from_midnight_of_the_day() -> None:
    counts = [1000 + i for i in range(47)] + [NO_DATA]
    history = decode_daily_history(
        counts_edt(1, counts), today=dt.date(2024, 11, 27), coefficient=2, unit_code=0x01
    )
    assert history.day == 1
    assert len(history.readings) == 48
    assert history.readings[0] == Reading(dt.datetime(2024, 11, 26, 0, 0, tzinfo=JST), 200.0)
    assert history.readings[1] == Reading(dt.datetime(2024, 11, 26, 0, 30, tzinfo=JST), 200.2)
    assert history.readings[46].slot_end == dt.datetime(2024, 11, 26, 23, 0, tzinfo=JST)
    assert history.readings[47].energy_kwh is None  # 0xFFFFFFFE: no data


def test_daily_history_round_trips() -> None:
    values: list[float | None] = [round(0.1 * i, 1) for i in range(47)] + [None]
    edt = encode_daily_history(3, values, unit_code=0x01)
    history = decode_daily_history(edt, today=dt.date(2024, 1, 10), unit_code=0x01)
    assert [r.energy_kwh for r in history.readings] == values
    assert history.readings[0].slot_end == dt.datetime(2024, 1, 7, tzinfo=JST)


def test_daily_history_agrees_with_the_class_database_layout() -> None:
    counts = [7 * i for i in range(48)]
    decoded = get_class(0x0288).property(0xE2).decode(counts_edt(5, counts))
    history = decode_daily_history(counts_edt(5, counts), today=dt.date(2024, 3, 1), unit_code=0)
    assert decoded == {"day": 5, "electricEnergy": counts}
    assert [r.energy_kwh for r in history.readings] == [float(c) for c in counts]


def test_daily_history_refuses_wrong_size_and_day() -> None:
    with pytest.raises(ValueCodecError, match="193 bytes where 194 expected"):
        decode_daily_history(bytes(193), today=dt.date(2024, 1, 1))
    with pytest.raises(ValueCodecError, match=r"day 100; allowed: 0\.\.99"):
        decode_daily_history(counts_edt(100, [0] * 48), today=dt.date(2024, 1, 1))
    with pytest.raises(ValueCodecError, match="47 values; allowed: 48"):
        encode_daily_history(0, [0.0] * 47)


def test_count_beyond_eight_digits_is_refused() -> None:
    with pytest.raises(ValueCodecError, match="beyond 8 digits"):
        decode_daily_history(counts_edt(0, [100_000_000] * 48), today=dt.date(2024, 1, 1))


def test_energy_count_wraps_at_the_effective_digits() -> None:
    assert energy_count(12_345.6, unit_code=0x01) == 123456
    assert energy_count(100_000_001.0, unit_code=0x00) == 1  # 8 digits roll over
    assert energy_count(123.0, unit_code=0x00, digits=2) == 23


def test_fixed_time_reading_decodes_time_and_energy() -> None:
    edt = bytes.fromhex("07E80B1B0C1E00" + "000004D2")
    reading = decode_fixed_time_reading(edt, unit_code=0x01)
    assert reading == Reading(dt.datetime(2024, 11, 27, 12, 30, tzinfo=JST), 123.4)


def test_fixed_time_reading_converts_to_jst_on_encode() -> None:
    utc = dt.datetime(2024, 11, 27, 3, 30, tzinfo=dt.UTC)
    edt = encode_fixed_time_reading(Reading(utc, 123.4), unit_code=0x01)
    assert edt == bytes.fromhex("07E80B1B0C1E00000004D2")


def test_fixed_time_reading_refuses_naive_time() -> None:
    with pytest.raises(ValueCodecError, match="aware datetime"):
        encode_fixed_time_reading(Reading(dt.datetime(2024, 1, 1), 1.0))


def test_segment_history_goes_back_30_minutes_per_segment() -> None:
    edt = bytes.fromhex("07E80B1B0C1E" + "03") + bytes.fromhex(
        "00000064000000010000006300000001FFFFFFFE00000000"
    )
    segments = decode_segment_history(edt, unit_code=0x02)
    assert segments == [
        SegmentReading(dt.datetime(2024, 11, 27, 12, 30, tzinfo=JST), 1.0, 0.01),
        SegmentReading(dt.datetime(2024, 11, 27, 12, 0, tzinfo=JST), 0.99, 0.01),
        SegmentReading(dt.datetime(2024, 11, 27, 11, 30, tzinfo=JST), None, 0.0),
    ]


def test_segment_history_must_hold_as_many_pairs_as_it_says() -> None:
    edt = bytes.fromhex("07E80B1B0C1E" + "02") + bytes(8)
    with pytest.raises(ValueCodecError, match="15 bytes where 23 expected"):
        decode_segment_history(edt)


def test_segment_history_round_trips() -> None:
    start = dt.datetime(2024, 2, 29, 0, 30, tzinfo=JST)
    readings = [
        SegmentReading(start - i * dt.timedelta(minutes=30), 10.0 - i, None if i == 1 else 0.5)
        for i in range(4)
    ]
    edt = encode_segment_history(readings, unit_code=0x01)
    assert decode_segment_history(edt, unit_code=0x01) == readings


def test_segment_history_refuses_readings_out_of_step() -> None:
    start = dt.datetime(2024, 2, 29, 0, 30, tzinfo=JST)
    readings = [SegmentReading(start, 1.0, 0.0), SegmentReading(start, 1.0, 0.0)]
    with pytest.raises(ValueCodecError, match="segment 1 is at"):
        encode_segment_history(readings)


def test_history_request_is_a_slot_end_and_a_segment_count() -> None:
    request = HistoryRequest(dt.datetime(2024, 11, 27, 12, 0, tzinfo=JST), 12)
    edt = encode_history_request(request)
    assert edt == bytes.fromhex("07E80B1B0C000C")
    assert decode_history_request(edt) == request
    # and it matches the class database's 0xED layout
    assert get_class(0x0288).property(0xED).decode(edt) == {
        "dateAndTime": dt.datetime(2024, 11, 27, 12, 0),
        "numberOfCollectionSegments": 12,
    }


def test_history_request_refuses_a_time_between_slots_and_too_many_segments() -> None:
    with pytest.raises(ValueCodecError, match="not a slot end"):
        encode_history_request(HistoryRequest(dt.datetime(2024, 1, 1, 0, 15, tzinfo=JST), 1))
    with pytest.raises(ValueCodecError, match=r"13 segments; allowed: 1\.\.12"):
        decode_history_request(bytes.fromhex("07E80B1B0C000D"))


def test_class_database_reads_no_data_in_history_as_special() -> None:
    edt = counts_edt(0, [NO_DATA] * 48)
    assert get_class(0x0288).property(0xE2).decode(edt)["electricEnergy"][0] == Special(
        "noData", NO_DATA
    )


# ---- an independent implementation reads what erab writes (momonga, a route B client) -------


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.one_of(st.none(), st.integers(0, 99_999_999)), min_size=48, max_size=48),
    st.integers(0, 99),
    st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x0A]),
)
def test_momonga_reads_erab_daily_history(
    counts: list[int | None], day: int, unit_code: int
) -> None:
    per_count = energy_unit_kwh(unit_code)
    values = [None if c is None else scale(c, 1, per_count) for c in counts]
    edt = encode_daily_history(day, values, unit_code=unit_code)
    theirs = EchonetDataParser.parse_historical_cumulative_energy_1(edt, per_count, 1)
    ours = decode_daily_history(edt, today=dt.date(2024, 6, 1), unit_code=unit_code).readings
    for mine, other in zip(ours, theirs, strict=True):
        assert mine.slot_end.time() == other["timestamp"].time()
        if mine.energy_kwh is None:
            assert other["cumulative energy"] is None
        else:
            assert mine.energy_kwh == pytest.approx(other["cumulative energy"])


def test_momonga_reads_erab_segment_history() -> None:
    start = dt.datetime(2024, 11, 27, 12, 30, tzinfo=JST)
    readings = [
        SegmentReading(start - i * dt.timedelta(minutes=30), 100.0 - i, 5.0) for i in range(6)
    ]
    edt = encode_segment_history(readings, unit_code=0x01)
    theirs = EchonetDataParser.parse_historical_cumulative_energy_2(edt, 0.1, 1)
    assert [t["timestamp"] for t in theirs] == [r.slot_end.replace(tzinfo=None) for r in readings]
    assert [t["cumulative energy"]["normal direction"] for t in theirs] == pytest.approx(
        [r.normal_kwh for r in readings]
    )


def test_momonga_reads_erab_fixed_time_reading() -> None:
    moment = dt.datetime(2024, 11, 27, 13, 0, tzinfo=JST)
    edt = encode_fixed_time_reading(Reading(moment, 4321.5), unit_code=0x01)
    theirs = EchonetDataParser.parse_cumulative_energy_measured_at_fixed_time(edt, 0.1, 1)
    assert theirs["timestamp"] == moment.replace(tzinfo=None)
    assert theirs["cumulative energy"] == pytest.approx(4321.5)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=220))
def test_history_decoders_refuse_random_bytes_only_with_value_codec_error(edt: bytes) -> None:
    decoders = [
        lambda: decode_daily_history(edt, today=dt.date(2024, 1, 1)),
        lambda: decode_fixed_time_reading(edt),
        lambda: decode_segment_history(edt),
        lambda: decode_history_request(edt),
    ]
    for decode in decoders:
        with contextlib.suppress(ValueCodecError):
            decode()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(st.integers(0, 99_999_999), st.just(NO_DATA)), min_size=48, max_size=48),
    st.integers(0, 99),
    st.integers(0, 193),
    st.integers(0, 255),
)
def test_mutated_daily_history_decodes_faithfully_or_is_refused(
    counts: list[int], day: int, where: int, byte: int
) -> None:
    edt = counts_edt(day, counts)
    mutated = edt[:where] + bytes([byte]) + edt[where + 1 :]
    try:
        history = decode_daily_history(mutated, today=dt.date(2024, 1, 1), unit_code=0x00)
    except ValueCodecError:
        return
    again = encode_daily_history(
        history.day, [r.energy_kwh for r in history.readings], unit_code=0x00
    )
    assert again == mutated
