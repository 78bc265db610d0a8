"""The class database: coverage of the spec's classes, lookups, mandatory properties."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from erab.echonet.classdb import (
    UnknownClass,
    UnknownProperty,
    all_classes,
    database_info,
    get_class,
    property_spec,
)
from erab.echonet.frame import EOJ
from erab.echonet.generate import MRA_COPYRIGHT
from tests.requires import skip_unless

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec"
needs_spec = skip_unless((SPEC / "sonycsl-objectdb").exists(), f"spec folder {SPEC} not present")


def test_at_least_106_device_classes_have_property_tables() -> None:
    tables = [c for c in all_classes() if c.source in ("mra", "sonycsl")]
    device_classes = [c for c in tables if c.class_code not in (0x0000, 0x0EF0)]
    assert len(device_classes) >= 106
    assert all(len(c.properties) > len(get_class(0x0000).properties) // 2 for c in device_classes)


def test_super_class_and_node_profile_are_present() -> None:
    assert get_class(0x0000).name_en == "Super class"
    profile = get_class(0x0EF0)
    assert profile.name_en == "Node profile"
    assert {0xD3, 0xD4, 0xD5, 0xD6, 0xD7} <= set(profile.properties)


@needs_spec
def test_every_class_code_of_the_device_list_is_named_in_english_and_japanese() -> None:
    base = SPEC / "sonycsl-objectdb"
    with (base / "en" / "DeviceList.csv").open(encoding="utf-8") as f:
        english = list(csv.reader(f))[1:]
    with (base / "ja" / "DeviceList.csv").open(encoding="utf-8") as f:
        japanese = list(csv.reader(f))[1:]
    assert len(english) == len(japanese) >= 160
    groups = set()
    for row_en, row_ja in zip(english, japanese, strict=True):
        code = int(row_en[2], 16) << 8 | int(row_en[3], 16)
        cls = get_class(code)
        groups.add(cls.group_code)
        assert cls.name_en and cls.name_ja, hex(code)
        if cls.source != "mra":  # the MRA's newer names win where it has the class
            assert cls.name_ja == row_ja[0].strip()
    assert groups == {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}


def test_mra_wins_where_both_sources_describe_a_class() -> None:
    aircon = get_class(0x0130)  # in the MRA and in the CSV tables
    assert aircon.source == "mra"
    assert aircon.short_name == "homeAirConditioner"


def test_class_only_in_the_csv_tables_comes_from_them() -> None:
    humidifier = get_class(0x0139)
    assert humidifier.source == "sonycsl"
    assert humidifier.name_ja == "加湿器"
    assert humidifier.property(0x80).decode(b"\x30") == "true"


def test_class_with_a_name_only_has_the_super_class_properties() -> None:
    curtain = get_class(0x0262)
    assert curtain.source == "names"
    assert set(curtain.properties) == set(get_class(0x0000).properties)


@pytest.mark.parametrize(
    "key", [0x0130, "0x0130", 0x013001, "0x013001", EOJ(0x01, 0x30, 0x01), "homeAirConditioner"]
)
def test_class_lookup_by_code_eoj_and_short_name(key: int | str | EOJ) -> None:
    assert get_class(key).class_code == 0x0130


def test_class_lookup_by_english_name_prefers_the_mra_class() -> None:
    assert get_class("Illuminance sensor").class_code == 0x00D0


def test_class_lookup_by_japanese_name() -> None:
    assert get_class("低圧スマート電力量メータ").class_code == 0x0288


def test_class_short_names_are_unique() -> None:
    names = [c.short_name for c in all_classes()]
    assert len(names) == len(set(names))


def test_unknown_class_says_what_was_asked() -> None:
    with pytest.raises(UnknownClass, match="class 0x0999 is not in the class database"):
        get_class(0x0999)
    with pytest.raises(UnknownClass, match="no class named 'teleporter'"):
        get_class("teleporter")
    with pytest.raises(UnknownClass, match="'0xZZ' is not a hexadecimal class code"):
        get_class("0xZZ")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (-1, "class code -1 is not a 2-byte class code or 3-byte EOJ"),
        (0x1000000, "class code 0x1000000 is not a 2-byte class code or 3-byte EOJ"),
        (1.5, "class 1.5: give a class code such as 0x0130 or a short name"),
        (True, "class True: give a class code"),
    ],
)
def test_class_keys_that_are_no_code_are_refused_with_what_to_give(
    key: object, reason: str
) -> None:
    with pytest.raises(UnknownClass) as info:
        get_class(key)  # type: ignore[arg-type]
    assert str(info.value).startswith(reason)


def test_property_lookup_by_epc_and_short_name() -> None:
    aircon = get_class(0x0130)
    assert aircon.property(0xB0) is aircon.property("operationMode")
    assert aircon.property("0xB0").name_en == "Operation mode setting"
    assert aircon.property(0xB0).name_ja == "運転モード設定"


def test_unknown_property_names_the_class() -> None:
    expected = r"homeAirConditioner \(0x0130\) has no property 0xF5"
    with pytest.raises(UnknownProperty, match=expected):
        get_class(0x0130).property(0xF5)
    with pytest.raises(UnknownProperty, match="no property 'fanSpeed'"):
        get_class(0x0130).property("fanSpeed")


def test_device_class_properties_include_the_super_class() -> None:
    meter = get_class(0x0288)
    assert meter.property(0x8A).short_name == "manufacturer"
    assert meter.property(0x9F).short_name == "getPropertyMap"
    assert meter.property(0xE0).unit == "kWh"


def test_node_profile_does_not_take_device_super_class_properties() -> None:
    assert 0x81 not in get_class(0x0EF0).properties  # installation location: devices only


def test_mandatory_get_properties_of_the_home_air_conditioner() -> None:
    epcs = [p.epc for p in get_class(0x0130).mandatory("get")]
    assert epcs == [0x80, 0x81, 0x82, 0x88, 0x8A, 0x8F, 0x9D, 0x9E, 0x9F, 0xA0, 0xB0, 0xB3, 0xBB]


def test_mandatory_set_properties_of_the_home_air_conditioner() -> None:
    epcs = [p.epc for p in get_class(0x0130).mandatory("set")]
    assert epcs == [0x80, 0x81, 0x8F, 0xA0, 0xB0, 0xB3]


def test_mandatory_properties_follow_the_release() -> None:
    # power-saving operation (0x8F) entered the air conditioner's table in release D
    release_c = [p.epc for p in get_class(0x0130).mandatory("get", release="C")]
    release_j = [p.epc for p in get_class(0x0130).mandatory("get", release="J")]
    assert 0x8F not in release_c
    assert 0x8F in release_j


def test_class_has_no_mandatory_properties_before_its_release() -> None:
    meter = get_class(0x0288)  # the low-voltage smart meter class came in release F
    assert meter.valid_from == "F"
    assert meter.mandatory("get", release="E") == []
    assert 0xE7 in [p.epc for p in meter.mandatory("get", release="F")]


def test_property_redefined_between_releases_keeps_every_definition() -> None:
    versions = get_class(0x0000).versions[0x93]
    assert [(v.valid_from, v.valid_to) for v in versions] == [
        ("A", "A"),
        ("B", "B"),
        ("C", "G"),
        ("H", "latest"),
    ]
    assert get_class(0x0130).properties[0x93] == versions[-1]


def test_super_class_property_errors_name_the_class_in_use() -> None:
    with pytest.raises(ValueError, match=r"^homeAirConditioner \(0x0130\) faultStatus \(0x88\)"):
        get_class(0x0130).property(0x88).decode(b"\x00")


def test_mandatory_refuses_an_unknown_access_or_release() -> None:
    with pytest.raises(ValueError, match="access 'put'"):
        get_class(0x0130).mandatory("put")
    with pytest.raises(ValueError, match="release 'R2'"):
        get_class(0x0130).mandatory("get", release="R2")


def test_property_spec_fast_path() -> None:
    assert property_spec(0x0130, 0xB0) is get_class(0x0130).property(0xB0)
    assert property_spec(0x0130, 0xF5) is None


def test_property_spec_of_an_unlisted_device_class_falls_back_to_the_super_class() -> None:
    spec = property_spec(0x0199, 0x80)
    assert spec is not None and spec.short_name == "operationStatus"
    assert property_spec(0x0E99, 0x80) is None


def test_group_filter_lists_only_that_group() -> None:
    housing = all_classes(0x02)
    assert housing and all(c.group_code == 0x02 for c in housing)
    assert 0x0288 in {c.class_code for c in housing}
    assert 0x0000 not in {c.class_code for c in all_classes(0x00)}


def test_database_carries_the_mra_copyright_and_the_cc0_note() -> None:
    info = database_info()
    assert info["sources"]["mra"]["copyright"] == MRA_COPYRIGHT
    assert info["sources"]["mra"]["dataVersion"] == "1.3.0"
    assert any("CC0" in line for line in info["notice"])


def test_class_database_file_is_in_the_package() -> None:
    import erab.echonet.classdb as classdb

    assert Path(classdb.DATA_FILE).is_file()
    assert Path(classdb.DATA_FILE).parent.name == "data"


# ---- an independent implementation's coded values (pychonet, test-only peer) ----------------

# Codes pychonet maps that the appendix does not define for the property: vendor extensions
# or another property's values.  Everything else pychonet knows must be a defined state here.
PYCHONET_EXTRAS = {
    (0x0130, 0xB0): {0xFF},
    (0x0130, 0xC1): set(range(0x31, 0x39)),
    (0x0130, 0xCC): {0x45},
    (0x026B, 0xD7): {0x41, 0x42},
}


@pytest.mark.parametrize(
    ("class_code", "name"),
    [
        (0x0130, "HomeAirConditioner"),
        (0x026B, "ElectricWaterHeater"),
        (0x0279, "HomeSolarPower"),
        (0x027D, "StorageBattery"),
        (0x0288, "LowVoltageSmartElectricEnergyMeter"),
    ],
)
def test_pychonet_coded_values_are_defined_states(class_code: int, name: str) -> None:
    import importlib

    from pychonet.lib.epc_functions import _int

    peer = getattr(importlib.import_module(f"pychonet.{name}"), name)
    cls = get_class(class_code)
    checked = 0
    for epc, function in peer.EPC_FUNCTIONS.items():
        if not (isinstance(function, list) and function[0] is _int and len(function) > 1):
            continue
        spec = cls.property(epc)
        for code in set(function[1]) - PYCHONET_EXTRAS.get((class_code, epc), set()):
            edt = bytes([code])
            assert spec.encode(spec.decode(edt)) == edt, (hex(epc), hex(code))
            checked += 1
    assert checked >= 5
