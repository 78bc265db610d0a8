"""The class database generator: reproducible output and the CSV-to-schema translation."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from erab.echonet.classdb import get_class
from erab.echonet.generate import (
    MRA_COPYRIGHT,
    build_database,
    default_output,
    default_spec_dir,
    main,
    render,
)
from tests.requires import missing

# The repository's own copy (tests/echonet/ is two folders below the repository root), so
# the comparison holds whether erab is installed editable or not.
REPO = Path(__file__).resolve().parents[2]
SPEC = REPO.parent / "shared" / "spec"
COMMITTED = REPO / "src" / "erab" / "echonet" / "data" / "classes.json"
SPEC_PRESENT = (SPEC / "mra" / "metaData.json").exists()
# Under CI the spec folder must be there: a skip would let CI drop the comparison silently.
pytestmark = pytest.mark.skipif(
    not SPEC_PRESENT and not os.environ.get("CI"), reason=f"spec folder {SPEC} not present"
)


@pytest.fixture(scope="module")
def generated() -> str:
    if not SPEC_PRESENT:
        pytest.fail(f"CI is set and the spec folder {SPEC} is missing: the class database "
                    "cannot be checked against its source")
    return render(build_database(SPEC))


def test_regenerating_gives_the_committed_file_byte_for_byte(generated: str) -> None:
    assert COMMITTED.read_text(encoding="utf-8") == generated


def test_default_paths_are_the_repository_ones_in_an_editable_install() -> None:
    if default_output().resolve() != COMMITTED.resolve():
        missing("erab is installed from a copy, not from this repository")
    assert default_spec_dir().resolve() == SPEC.resolve()


def test_generation_is_deterministic(generated: str) -> None:
    assert render(build_database(SPEC)) == generated


def test_output_carries_the_mra_copyright_line_and_the_cc0_note(generated: str) -> None:
    notice = json.loads(generated)["notice"]
    assert any(MRA_COPYRIGHT in line for line in notice)
    assert any("CC0" in line and "Sony CSL" in line for line in notice)


def test_check_mode_passes_on_the_committed_file() -> None:
    assert main(["--check", "--spec", str(SPEC), "--output", str(COMMITTED)]) == 0


def test_check_mode_fails_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = tmp_path / "classes.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert main(["--check", "--output", str(stale)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert stale.read_text(encoding="utf-8") == "{}\n"  # --check never writes


def test_writes_to_the_named_output(tmp_path: Path, generated: str) -> None:
    target = tmp_path / "out" / "classes.json"
    assert main(["--output", str(target), "--spec", str(SPEC)]) == 0
    assert target.read_text(encoding="utf-8") == generated


def test_missing_spec_folder_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--spec", str(tmp_path), "--output", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert "no MRA metaData.json" in err and str(tmp_path) in err
    assert not (tmp_path / "x.json").exists()


def test_a_broken_spec_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    broken = spec / "mra" / "devices" / "0x0130.json"
    broken.write_text('{"eoj": ', encoding="utf-8")
    assert main(["--spec", str(spec), "--output", str(tmp_path / "x.json")]) == 2
    assert f"{broken}: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_a_changed_mra_copyright_line_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    shutil.copytree(SPEC, spec)
    meta = spec / "mra" / "metaData.json"
    meta.write_text(meta.read_text(encoding="utf-8").replace("Kanagawa", "K"), encoding="utf-8")
    with pytest.raises(ValueError, match="unexpected MRA copyright line"):
        build_database(spec)


# ---- the CSV tables turned into schemas (classes only the CSV tables describe) ---------------


def test_on_off_text_becomes_the_mra_on_off_state() -> None:
    assert get_class(0x0139).property(0x80).schema["enum"][0] == {
        "descriptions": {"en": "On", "ja": "ON"},
        "edt": "0x30",
        "name": "true",
    }


def test_code_first_text_becomes_named_states() -> None:
    # 0x0283 0xE9: "Residual volume control warning level 1 0x31 ..."; 0x0267 0xE0 name first
    schema = get_class(0x0267).property(0xE0).schema
    assert [(i["edt"], i["name"]) for i in schema["enum"]] == [
        ("0x40", "automaticON"),
        ("0x41", "manualON"),
        ("0x42", "manualOFF"),
    ]
    assert schema["enum"][1]["descriptions"]["ja"] != schema["enum"][1]["descriptions"]["en"]


def test_hex_range_with_scaled_unit_becomes_a_number() -> None:
    schema = get_class(0x0145).property(0xB9).schema  # 0x0000-0xFFFD, unit "0.1A"
    assert schema == {
        "type": "number",
        "format": "uint16",
        "minimum": 0,
        "maximum": 0xFFFD,
        "unit": "A",
        "multiple": 0.1,
    }


def test_unsigned_range_that_wraps_becomes_signed() -> None:
    schema = get_class(0x0145).property(0xE3).schema  # 0xFE0C-0x3E8 (-50.0..100.0 °C)
    assert schema["format"] == "int16"
    assert (schema["minimum"], schema["maximum"]) == (-500, 1000)
    assert get_class(0x0145).property(0xE3).decode(b"\xfe\x0c") == -50.0


def test_range_beside_named_codes_becomes_one_of() -> None:
    # 0x0142 0xA0: "Automatic air flow rate control used = 0x41 Air flow rate = 0x31 to 0x38"
    spec = get_class(0x0142).property(0xA0)
    assert spec.decode(b"\x41") == spec.parse("automaticAirFlowRateControlUsed")
    assert spec.decode(b"\x33") == 0x33


def test_threshold_level_range_becomes_a_level() -> None:
    assert get_class(0x000B).property(0xB0).schema == {
        "type": "level",
        "base": "0x31",
        "maximum": 8,
    }


def test_hour_minute_pair_becomes_a_time() -> None:
    assert get_class(0x0142).property(0x92).schema == {"type": "time", "size": 2}


def test_composite_value_stays_raw_of_the_stated_size() -> None:
    assert get_class(0x0289).property(0xEE).schema == {"type": "raw", "minSize": 6, "maxSize": 6}


def test_csv_access_rules_map_to_mra_words() -> None:
    # columns Set, Get, "Announcement at status change": mandatory / mandatory / -
    humidifying = get_class(0x0139).property(0xC1)
    assert (humidifying.get, humidifying.set, humidifying.inf) == (
        "required",
        "required",
        "optional",  # any property may be announced; only mandatory announcements are marked
    )
    location = get_class(0x0139).property(0x82)  # a super class property: not in the CSV
    assert location.set == "notApplicable"


def test_codes_standing_for_numbers_become_coded_numbers() -> None:
    # 0x0289 0xE3: "0x00: 1m3 0x01: 0.1m3 … 0x06: 0.000001m3"
    unit = get_class(0x0289).property(0xE3)
    assert unit.schema["type"] == "numericValue"
    assert unit.decode(b"\x02") == 0.01
    assert unit.encode(0.000001) == b"\x06"


def test_regenerating_replaces_the_file_whole(tmp_path: Path, generated: str) -> None:
    target = tmp_path / "classes.json"
    target.write_text("old\n", encoding="utf-8")
    assert main(["--output", str(target), "--spec", str(SPEC)]) == 0
    assert target.read_text(encoding="utf-8") == generated
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes.json"]  # no partial left
