"""``erab el classes`` and ``erab el class``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from erab.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_classes_lists_one_group(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "el", "classes", "--group", "0x02")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("0x")]
    assert rows and all(line.startswith("0x02") for line in rows)
    meter = next(line for line in rows if line.startswith("0x0288"))
    assert "lvSmartElectricEnergyMeter" in meter and "低圧スマート電力量メータ" in meter
    assert f"{len(rows)} classes, group 0x02 (housing and facilities)" in out


def test_classes_json_lists_every_class(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "el", "classes", "--json")
    assert code == 0
    classes = json.loads(out)
    codes = {c["class_code"] for c in classes}
    assert {"0x0000", "0x0130", "0x0288", "0x0EF0"} <= codes
    aircon = next(c for c in classes if c["class_code"] == "0x0130")
    assert aircon["source"] == "mra" and aircon["name_ja"] == "家庭用エアコン"


def test_classes_refuses_an_unknown_group(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "el", "classes", "--group", "0x09")
    assert code == 2
    assert out == ""
    assert err.strip() == (
        "erab: error: --group 0x09 is not a class group; "
        "allowed: 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x0E"
    )


def test_class_shows_the_property_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "el", "class", "0x0288")
    assert code == 0
    assert out.splitlines()[0] == (
        "0x0288 lvSmartElectricEnergyMeter: Low-voltage smart electric energy meter / "
        "低圧スマート電力量メータ"
    )
    e0 = next(line for line in out.splitlines() if line.startswith("0xE0"))
    assert "normalDirectionCumulativeElectricEnergy" in e0
    assert "req/-/opt" in e0 and "kWh" in e0


def test_class_by_short_name_with_json_schemas(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "el", "class", "homeAirConditioner", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["class_code"] == "0x0130"
    mode = next(p for p in data["properties"] if p["epc"] == "0xB0")
    assert {"edt": "0x42", "name": "cooling"}.items() <= mode["schema"]["enum"][1].items()


def test_unknown_class_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "el", "class", "0x0999")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "class 0x0999 is not in the class database" in err


def test_erab_command_runs_as_a_process() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "erab", "el", "class", "0x013001"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "0xB0  operationMode" in done.stdout


def test_class_property_shows_every_state_with_both_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "el", "class", "0x0130", "operationMode")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "0x0130 homeAirConditioner  0xB0 operationMode"
    assert "  access:   get required, set required, inf required" in lines
    cooling = next(line for line in lines if "cooling" in line)
    assert cooling.split() == ["0x42", "cooling", "Cooling", "/", "冷房"]


def test_class_property_json_lists_every_release_definition(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "el", "class", "0x0130", "0x93", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["short_name"] == "remoteControl"
    assert [v["valid_from"] for v in data["versions"]] == ["A", "B", "C", "H"]


def test_unknown_property_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "el", "class", "0x0130", "fanSpeed")
    assert (code, out) == (2, "")
    assert err.startswith("erab: error: class homeAirConditioner (0x0130) has no property")


def test_node_profile_table_is_its_own_not_merged(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "el", "class", "0x0EF0")
    assert code == 0
    assert out.splitlines()[1] == "source: mra; 19 properties"
    assert any(line.startswith("0xD6  selfNodeInstanceListS") for line in out.splitlines())
