"""Value codecs: every MRA data form, special values, errors, and a round trip of every schema."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from erab.echonet.classdb import PropertySpec, all_classes, get_class
from erab.echonet.codecs import (
    Special,
    StateInRange,
    ValueCodecError,
    decode_value,
    describe_schema,
    encode_value,
    from_jsonable,
    parse_value,
    to_jsonable,
)
from tests.echonet.schema_values import values


def prop(class_code: int, epc: int) -> PropertySpec:
    return get_class(class_code).property(epc)


# ---- the frames of issue 2 -------------------------------------------------------------------


def test_air_conditioner_operation_mode_0x42_is_cooling() -> None:
    assert prop(0x0130, 0xB0).decode(bytes.fromhex("42")) == "cooling"


def test_water_flow_meter_cumulative_flow_decodes_to_count() -> None:
    assert prop(0x0281, 0xE0).decode(bytes.fromhex("00119E3C")) == 1154620


def test_water_flow_meter_unit_code_0x04_is_one_ten_thousandth() -> None:
    assert prop(0x0281, 0xE1).decode(b"\x04") == 0.0001


def test_water_flow_meter_operation_status_0x30_is_on() -> None:
    assert prop(0x0281, 0x80).decode(b"\x30") == "true"


def test_instantaneous_water_heater_properties_decode() -> None:
    heater = get_class(0x0272)
    assert heater.property(0xD5).decode(b"\x0c") == 12
    assert heater.property(0xEE).decode(b"\x00\xc8") == 200
    assert heater.property(0xEF).decode(b"\x43") == "keepingTemperature"


# ---- each data form ---------------------------------------------------------------------------


def test_scaled_number_decodes_to_float_in_its_unit() -> None:
    # 0x0288 0xE8: R and T phase currents in 0.1 A; 0x7FFE is "no data" for the T phase
    currents = prop(0x0288, 0xE8).decode(bytes.fromhex("007B7FFE"))
    assert currents == {"rPhase": 12.3, "tPhase": Special("noData", 0x7FFE)}


def test_signed_number_decodes_negative_values() -> None:
    assert prop(0x0130, 0xBB).decode(b"\xfe") == -2
    assert prop(0x0130, 0xBB).encode(-2) == b"\xfe"


def test_no_data_code_decodes_to_special() -> None:
    assert prop(0x0288, 0xE0).decode(bytes.fromhex("FFFFFFFE")) == Special("noData", 0xFFFFFFFE)


def test_overflow_and_underflow_codes_are_named() -> None:
    power = prop(0x0130, 0x84)  # uint16 0..65533 W; 0xFFFF overflow, 0xFFFE underflow
    assert power.decode(b"\xff\xff") == Special("overflow", 0xFFFF)
    assert power.decode(b"\xff\xfe") == Special("underflow", 0xFFFE)
    assert power.encode(Special("overflow", 0xFFFF)) == b"\xff\xff"


def test_number_without_overflow_codes_rejects_top_code() -> None:
    schema = {"type": "number", "format": "uint8", "minimum": 0, "maximum": 100}
    assert decode_value(schema, b"\xff") == Special("overflow", 0xFF)
    with pytest.raises(ValueCodecError, match=r"value 255 \(0xFF\) out of range"):
        decode_value({**schema, "overflowCode": False}, b"\xff")
    # the meter's cumulative energy has no overflow code: 0xFFFFFFFF is no valid reading
    with pytest.raises(ValueCodecError, match="matches no alternative"):
        prop(0x0288, 0xE0).decode(bytes.fromhex("FFFFFFFF"))


def test_state_offered_beside_a_number_is_special() -> None:
    target = prop(0x0130, 0xB3)
    assert target.decode(b"\xfd") == Special("undefined", 0xFD)
    assert target.decode(b"\x1a") == 26


def test_number_taking_a_named_states_code_is_refused() -> None:
    # 0..255 would fit uint8, but 0xFD belongs to "undefined"
    schema = {
        "oneOf": [
            {"type": "number", "format": "uint8", "minimum": 0, "maximum": 255},
            {"type": "state", "size": 1, "enum": [{"edt": "0xFD", "name": "undefined"}]},
        ]
    }
    with pytest.raises(ValueCodecError, match="reads as"):
        encode_value(schema, 253)


def test_code_in_a_state_range_keeps_its_code() -> None:
    fault = prop(0x0130, 0x89)
    value = fault.decode(bytes.fromhex("0014"))
    assert value == StateInRange("switch", 0x14)
    assert fault.encode(value) == bytes.fromhex("0014")


def test_level_counts_from_its_base_code() -> None:
    threshold = prop(0x0002, 0xB0)  # level 1..8 at 0x31..0x38
    assert threshold.decode(b"\x31") == 1
    assert threshold.decode(b"\x38") == 8
    assert threshold.encode(3) == b"\x33"


def test_level_or_auto_air_flow() -> None:
    flow = prop(0x0130, 0xA0)
    assert flow.decode(b"\x41") == Special("auto", 0x41)
    assert flow.decode(b"\x33") == 3


def test_bitmap_decodes_each_named_field() -> None:
    method = prop(0x0130, 0xC6)
    decoded = method.decode(b"\x01")
    assert isinstance(decoded, dict)
    assert decoded["equippedElectronic"] == "true"
    assert all(v == "false" for k, v in decoded.items() if k != "equippedElectronic")
    assert method.encode(decoded) == b"\x01"


def test_date_time_and_date_time_forms() -> None:
    assert prop(0x0130, 0x98).decode(bytes.fromhex("07E80B1B")) == dt.date(2024, 11, 27)
    assert prop(0x0130, 0x97).decode(bytes.fromhex("0C1E")) == dt.time(12, 30)
    assert prop(0x0288, 0xEA).decode(bytes.fromhex("07E80B1B0C1E00000004D2")) == {
        "dateAndTime": dt.datetime(2024, 11, 27, 12, 30, 0),
        "electricEnergy": 1234,
    }


def test_relative_time_beyond_a_day_is_a_timedelta() -> None:
    relative = prop(0x0130, 0x92)  # ON timer relative time: hours up to 255
    assert relative.decode(bytes.fromhex("6405")) == dt.timedelta(hours=100, minutes=5)


def test_raw_bytes_pass_through() -> None:
    assert prop(0x0130, 0x8A).decode(b"\x00\x00\x77") == b"\x00\x00\x77"


def test_object_with_fixed_array_of_48_readings() -> None:
    edt = (1).to_bytes(2, "big") + b"".join(i.to_bytes(4, "big") for i in range(47))
    edt += bytes.fromhex("FFFFFFFE")
    value = prop(0x0288, 0xE2).decode(edt)
    assert isinstance(value, dict)
    assert value["day"] == 1
    assert value["electricEnergy"][:3] == [0, 1, 2]
    assert value["electricEnergy"][47] == Special("noData", 0xFFFFFFFE)


def test_variable_array_takes_the_rest_of_the_edt() -> None:
    instances = get_class(0x0EF0).property(0xD5)
    value = instances.decode(bytes.fromhex("02013001028801"))
    assert value == {"numberOfinstances": 2, "instanceList": [b"\x01\x30\x01", b"\x02\x88\x01"]}


def test_numeric_value_code_stands_for_its_number() -> None:
    unit = prop(0x0288, 0xE1)
    assert unit.decode(b"\x0a") == 10
    assert unit.encode(0.01) == b"\x02"


# ---- errors name the class, the property and the allowed form -------------------------------


def test_undefined_state_names_class_property_and_states() -> None:
    with pytest.raises(ValueCodecError) as err:
        prop(0x0130, 0xB0).decode(b"\x50")
    message = str(err.value)
    assert "homeAirConditioner (0x0130)" in message
    assert "operationMode (0xB0)" in message
    assert "undefined state 0x50" in message
    assert "cooling=0x42" in message


def test_out_of_range_value_is_refused_on_encode() -> None:
    with pytest.raises(ValueCodecError) as err:
        prop(0x0130, 0xB3).encode(60)
    assert "targetTemperature (0xB3)" in str(err.value)
    assert "0..50" in str(err.value)


def test_out_of_range_value_is_refused_on_decode() -> None:
    with pytest.raises(ValueCodecError, match="matches no alternative"):
        prop(0x0130, 0xB3).decode(b"\x3c")


def test_wrong_size_edt_is_refused() -> None:
    with pytest.raises(ValueCodecError, match=r"operationMode \(0xB0\): 2 bytes where 1 expected"):
        prop(0x0130, 0xB0).decode(b"\x42\x00")
    with pytest.raises(ValueCodecError, match="4 bytes where 2 expected"):
        prop(0x0130, 0x84).decode(b"\x00\x00\x00\x00")


def test_value_off_the_scale_step_is_refused() -> None:
    with pytest.raises(ValueCodecError, match=r"not a multiple of 0\.1"):
        prop(0x0288, 0xE8).encode({"rPhase": 1.25, "tPhase": 0})


def test_large_value_off_the_step_is_refused() -> None:
    energy = prop(0x0130, 0x85)  # 0.001 kWh steps up to 999999.999 kWh
    assert energy.encode(999999.998) == (999999998).to_bytes(4, "big")
    with pytest.raises(ValueCodecError, match=r"not a multiple of 0\.001"):
        energy.encode(999999.9985)


def test_undefined_state_name_is_refused_on_encode() -> None:
    with pytest.raises(ValueCodecError, match="'freezing' is not a defined state"):
        prop(0x0130, 0xB0).encode("freezing")


def test_object_with_missing_field_is_refused() -> None:
    with pytest.raises(ValueCodecError, match=r"fields missing \['tPhase'\]"):
        prop(0x0288, 0xE8).encode({"rPhase": 1.0})


def test_invalid_calendar_date_is_refused() -> None:
    with pytest.raises(ValueCodecError, match="invalid date"):
        prop(0x0130, 0x98).decode(bytes.fromhex("07E8021E"))  # 30 February


# ---- text and JSON forms ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epc", "text", "expected"),
    [
        (0xB0, "cooling", "cooling"),
        (0xB0, "Heating", "heating"),
        (0xB0, "0x44", "dehumidification"),
        (0x80, "ON", "true"),
        (0xB3, "26", 26),
        (0xB3, "undefined", Special("undefined", 0xFD)),
    ],
)
def test_parse_reads_names_descriptions_codes_and_numbers(
    epc: int, text: str, expected: object
) -> None:
    assert prop(0x0130, epc).parse(text) == expected


def test_parse_refuses_text_that_fits_no_form() -> None:
    with pytest.raises(ValueCodecError, match="cannot read 'warm'"):
        prop(0x0130, 0xB3).parse("warm")


def test_format_shows_what_true_and_false_mean() -> None:
    assert prop(0x0130, 0x80).format("true") == "On"
    assert prop(0x0130, 0x88).format("true") == "Fault occurred"
    assert prop(0x0130, 0x80).parse("On") == "true"


def test_format_adds_units_and_coefficient_hint() -> None:
    assert prop(0x0130, 0xB3).format(26) == "26 °C"
    assert prop(0x0281, 0xE0).format(1154620) == "1154620 m3 (× EPC 0xE1)"
    assert prop(0x0288, 0xE0).format(Special("noData", 0xFFFFFFFE)) == "noData"


def test_describe_schema_states_range_step_and_unit() -> None:
    text = describe_schema(prop(0x0288, 0xE8).schema)
    assert text == "object (rPhase, tPhase)"
    assert "step 0.1 A" in describe_schema(prop(0x0288, 0xE8).schema["properties"][0]["element"])


def test_jsonable_form_round_trips_specials_bytes_and_datetimes() -> None:
    spec = prop(0x0288, 0xEA)
    value = spec.decode(bytes.fromhex("07E80B1B0C1E00FFFFFFFE"))
    text = json.dumps(to_jsonable(value))
    assert json.loads(text) == {
        "dateAndTime": "2024-11-27T12:30:00",
        "electricEnergy": {"special": "noData", "code": "0xFFFFFFFE"},
    }
    assert from_jsonable(spec.schema, json.loads(text)) == value


# ---- every schema in the database -------------------------------------------------------------


def _schemas_by_class() -> dict[int, list[PropertySpec]]:
    """Every distinct schema of the database (all classes, all releases), each under the first
    class that has it: the super class's schemas are tested once, not in every class."""
    seen: set[str] = set()
    out: dict[int, list[PropertySpec]] = {}
    for cls in all_classes():
        if cls.source == "names":
            continue
        mine = out.setdefault(cls.class_code, [])
        for versions in cls.versions.values():
            for spec in versions:
                key = json.dumps(spec.schema, sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    mine.append(spec)
    return out


SCHEMAS = _schemas_by_class()
TABLE_CLASSES = list(SCHEMAS)
_FAST = settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _check_round_trip(spec: PropertySpec) -> None:
    @_FAST
    @given(values(spec.schema))
    def round_trip(value: object) -> None:
        try:
            edt = spec.encode(value)
        except ValueCodecError as exc:
            # only a value another alternative reads differently may be refused
            # (0x027D 0xE0: the uint32 overflow code 0xFFFFFFFF is int32 -1)
            assume("reads as" not in str(exc))
            raise
        assert spec.decode(edt) == value, spec.where
        again = from_jsonable(spec.schema, json.loads(json.dumps(to_jsonable(value))))
        assert spec.encode(again) == edt, spec.where

    round_trip()


@pytest.mark.parametrize("class_code", TABLE_CLASSES, ids=lambda c: f"0x{c:04X}")
def test_every_property_schema_round_trips(class_code: int) -> None:
    """decode(encode(v)) == v, and the JSON form round-trips, for values drawn from each schema."""
    for spec in SCHEMAS[class_code]:
        _check_round_trip(spec)


def test_round_trip_covers_every_class_with_a_table() -> None:
    assert len(TABLE_CLASSES) >= 108  # 106 device classes + super class + node profile
    assert sum(len(specs) for specs in SCHEMAS.values()) >= 600  # distinct schemas


def _mutated(spec: PropertySpec) -> st.SearchStrategy[bytes]:
    """A valid EDT with one byte changed, one dropped or one added."""

    def encodable(value: object) -> bytes | None:
        try:
            return spec.encode(value)
        except ValueCodecError:
            return None

    valid = values(spec.schema).map(encodable).filter(lambda edt: bool(edt))

    def mutate(edt: bytes | None, where: int, byte: int, how: int) -> bytes:
        assert edt is not None
        i = where % len(edt)
        if how == 0:
            return edt[:i] + bytes([byte]) + edt[i + 1 :]
        if how == 1:
            return edt[:i] + edt[i + 1 :]
        return edt[:i] + bytes([byte]) + edt[i:]

    return st.builds(mutate, valid, st.integers(0, 255), st.integers(0, 255), st.integers(0, 2))


def _check_fuzz(spec: PropertySpec) -> None:
    @_FAST
    @given(st.one_of(st.binary(max_size=200), _mutated(spec)))
    def fuzz(edt: bytes) -> None:
        try:
            value = spec.decode(edt)
        except ValueCodecError:
            return
        # whatever decodes encodes back to the same bytes (bitmaps may drop unused bits)
        if "bitmap" not in json.dumps(spec.schema):
            assert spec.encode(value) == edt, spec.where

    fuzz()


@pytest.mark.parametrize("class_code", TABLE_CLASSES, ids=lambda c: f"0x{c:04X}")
def test_decoder_refuses_random_and_mutated_bytes_only_with_value_codec_error(
    class_code: int,
) -> None:
    for spec in SCHEMAS[class_code]:
        _check_fuzz(spec)


def test_schema_without_a_known_form_is_an_error() -> None:
    with pytest.raises(ValueCodecError, match="unknown data form 'matrix'"):
        decode_value({"type": "matrix"}, b"\x00")


def test_parse_value_reads_json_for_objects() -> None:
    schema = prop(0x0288, 0xE8).schema
    assert parse_value(schema, '{"rPhase": 1.5, "tPhase": -2.0}') == {
        "rPhase": 1.5,
        "tPhase": -2.0,
    }


def test_error_inside_an_array_names_the_entry_and_field() -> None:
    edt = bytes.fromhex("07E80B1B0C1E02") + bytes(8) + bytes.fromhex("00000000FFFFFFFF")
    with pytest.raises(ValueCodecError) as err:
        prop(0x0288, 0xEC).decode(edt)
    assert str(err.value).startswith(
        "lvSmartElectricEnergyMeter (0x0288) cumulativeElectricEnergyLog2 (0xEC)"
        ".electricEnergy[1].reverseDirectionElectricEnergy: 0xFFFFFFFF matches no alternative"
    )


def test_collection_segment_count_must_match_the_entries() -> None:
    log2 = prop(0x0288, 0xEC)
    with pytest.raises(ValueCodecError, match="numberOfCollectionSegments is 3 but 2 entries"):
        log2.decode(bytes.fromhex("07E80B1B0C1E03") + bytes(16))
    value = log2.decode(bytes.fromhex("07E80B1B0C1E02") + bytes(16))
    assert isinstance(value, dict)
    with pytest.raises(ValueCodecError, match="is 1 but 2 entries follow"):
        log2.encode({**value, "numberOfCollectionSegments": 1})
