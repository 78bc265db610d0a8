"""`erab meter` commands end to end: emulator on a pty, route B read, route A head-end."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from erab.cli import main
from tests.meter.conftest import PASSWORD, RBID

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def emulator() -> Iterator[dict[str, str]]:
    """`erab meter emulate-dongle` in its own process; yields what it printed."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erab",
            "meter",
            "emulate-dongle",
            "--id",
            RBID,
            "--password",
            PASSWORD,
            "--dialect",
            "no-side",
            "--duration",
            "60",
            "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        yield info
    finally:
        proc.terminate()
        proc.wait(10)


def test_emulator_prints_its_pty_and_accepted_credentials(emulator: dict[str, str]) -> None:
    assert emulator["pty"].startswith("/dev/pts/")
    assert (emulator["route_b_id"], emulator["password"]) == (RBID, PASSWORD)
    assert emulator["dialect"] == "no-side"


def test_read_through_the_emulator_with_credentials_from_the_environment(
    emulator: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERAB_ROUTEB_ID", RBID)
    monkeypatch.setenv("ERAB_ROUTEB_PASSWORD", PASSWORD)
    code = main(["meter", "read", "--device", emulator["pty"], "--timeout", "2", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    result = json.loads(out)
    assert isinstance(result["instant"]["power_w"], int)
    assert len(result["history"]) == 48 and result["dialect"] == "no-side"
    assert result["scaling"] == {"coefficient": 1, "unit_kwh": 0.1, "digits": 6}
    assert PASSWORD not in out


def test_read_with_a_credentials_file(
    emulator: dict[str, str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    creds = tmp_path / "routeb.json"
    creds.write_text(json.dumps({"id": RBID, "password": PASSWORD}))
    code = main(
        [
            "meter",
            "read",
            "--device",
            emulator["pty"],
            "--credentials",
            str(creds),
            "--timeout",
            "2",
            "--no-history",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and captured.out.startswith("power: ")
    assert "scanning for the meter" in captured.err and "joining" in captured.err  # progress
    assert PASSWORD not in captured.out + captured.err


def test_read_with_a_wrong_password_is_one_clear_line(
    emulator: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "meter",
            "read",
            "--device",
            emulator["pty"],
            "--id",
            RBID,
            "--password",
            "WRONGPASS123",
            "--timeout",
            "2",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "refused authentication" in err and "Traceback" not in err
    assert "WRONGPASS123" not in err


def test_read_without_credentials_says_where_to_put_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ERAB_ROUTEB_ID", raising=False)
    monkeypatch.delenv("ERAB_ROUTEB_PASSWORD", raising=False)
    assert main(["meter", "read", "--device", "/dev/null"]) == 2
    assert "ERAB_ROUTEB_ID" in capsys.readouterr().err


def test_read_with_a_malformed_id_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["meter", "read", "--device", "/dev/null", "--id", "abc", "--password", PASSWORD]) == 2
    )
    assert "32 ASCII" in capsys.readouterr().err


def test_read_from_a_missing_port_is_one_clear_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["meter", "read", "--device", "/dev/does-not-exist", "--id", RBID, "--password", PASSWORD]
    )
    assert code == 2
    assert "cannot open serial port /dev/does-not-exist" in capsys.readouterr().err


def test_unknown_fault_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["meter", "emulate-dongle", "--fault", "meteor-strike", "--duration", "0"]) == 2
    assert "silent-meter" in capsys.readouterr().err


def ami(db: Path, *args: str) -> list[str]:
    return ["meter", "ami", *args, "--db", str(db), "--now", "2026-08-01T12:10"]


def test_ami_collect_action_status_and_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ami.sqlite"
    assert main([*ami(db, "collect", "--meters", "5", "--days", "0.5"), "--json"]) == 0
    collected = json.loads(capsys.readouterr().out)
    assert collected["stored"] == 5 * 24 and collected["gaps"]["still_missing"] == 0
    assert main(ami(db, "disconnect", "M000002", "--actor", "carol")) == 0
    assert "disconnect ok" in capsys.readouterr().out
    assert main([*ami(db, "read", "M000002"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["connected"] is False  # state kept across runs
    assert main([*ami(db, "status"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["disconnected"] == ["M000002"] and status["actions"] == 2
    out = tmp_path / "slots.csv"
    assert (
        main(
            [
                *ami(
                    db,
                    "export",
                    "--start",
                    "2026-08-01T10:00",
                    "--end",
                    "2026-08-01T12:00",
                    "--out",
                    str(out),
                )
            ]
        )
        == 0
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "meter_id,slot_start,slot_end,import_kwh,export_kwh,quality"
    assert len(lines) == 1 + 5 * 4


def test_ami_refuses_an_unknown_meter_and_a_different_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ami.sqlite"
    assert main(ami(db, "collect", "--meters", "3", "--days", "0.1")) == 0
    assert main(ami(db, "connect", "M123456")) == 2
    assert "unknown meter 'M123456'" in capsys.readouterr().err
    assert main(ami(db, "status", "--meters", "9")) == 2
    assert "fleet of 3 meters" in capsys.readouterr().err


def test_ami_configure_needs_something_to_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ami.sqlite"
    assert main(ami(db, "configure", "M000000", "--meters", "2")) == 2
    assert "breaker capacity and/or a demand limit" in capsys.readouterr().err


def test_module_runs_as_erab_command() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-m", "erab", "meter", "--help"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0 and "emulate-dongle" in done.stdout


def _export_csv(db: Path, now: str, capsys: pytest.CaptureFixture[str]) -> str:
    args = ["export", "--start", "2026-07-31T12:30", "--end", "2026-08-03T12:00"]
    assert main(["meter", "ami", *args, "--db", str(db), "--now", now]) == 0
    return capsys.readouterr().out


def test_ami_runs_on_different_days_store_one_consistent_fleet(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    day1, day3 = "2026-08-01T12:10", "2026-08-03T12:10"
    twice, once = tmp_path / "twice.sqlite", tmp_path / "once.sqlite"
    base = ["meter", "ami", "collect", "--meters", "3"]
    # two collections two days apart; the day between is filled as a gap
    assert main([*base, "--days", "1", "--db", str(twice), "--now", day1]) == 0
    assert main([*base, "--days", "1", "--db", str(twice), "--now", day3]) == 0
    # the same fleet (first used on day 1) collected in one go on day 3
    pin = ["meter", "ami", "read", "M000000", "--meters", "3", "--db", str(once), "--now", day1]
    assert main(pin) == 0  # the fleet begins on day 1 in this store too
    assert main([*base, "--days", "3", "--db", str(once), "--now", day3]) == 0
    capsys.readouterr()
    exported = _export_csv(twice, day3, capsys)
    assert exported == _export_csv(once, day3, capsys)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 3 * 143 and {r["quality"] for r in rows} == {"measured"}
    assert max(float(r["import_kwh"]) for r in rows) < 5.0  # no jump where the runs meet


def test_ami_refuses_a_time_before_the_stored_fleet_began(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ami.sqlite"
    assert main(ami(db, "read", "M000000", "--meters", "2")) == 0
    capsys.readouterr()
    assert main(["meter", "ami", "status", "--db", str(db), "--now", "2026-01-01T00:00"]) == 2
    assert "before the first day of this store's emulated fleet" in capsys.readouterr().err


def test_ami_refuses_a_fleet_too_large_to_emulate_in_one_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(ami(tmp_path / "big.sqlite", "collect", "--meters", "200000")) == 2
    err = capsys.readouterr().err
    assert "200000 meters is too much" in err and "Traceback" not in err


def test_ami_long_collection_shows_progress_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(ami(tmp_path / "ami.sqlite", "collect", "--meters", "2", "--days", "6")) == 0
    captured = capsys.readouterr()
    assert "collected 240/288 slot ends" in captured.err
    assert captured.out.startswith("collected 576 readings over 288 slots")


def test_ami_demand_limit_reaches_the_emulated_meter_and_changes_what_it_measures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ami.sqlite"
    evening = ["--db", str(db), "--now", "2026-08-01T19:10", "--meters", "2", "--json"]

    def read() -> dict[str, object]:
        assert main(["meter", "ami", "read", "M000001", *evening]) == 0
        result: dict[str, object] = json.loads(capsys.readouterr().out)
        return result

    before = read()
    power = before["power_w"]
    assert isinstance(power, float) and power > 100.0  # a household in the evening imports
    limit = str(power / 2)
    assert main(["meter", "ami", "configure", "M000001", "--demand-limit", limit, *evening]) == 0
    capsys.readouterr()
    cut = read()  # a new process rebuilds the fleet and re-applies the recorded limit
    assert (cut["power_w"], cut["connected"], cut["demand_limit_w"]) == (0.0, False, power / 2)
    raised = str(power * 2)
    assert main(["meter", "ami", "configure", "M000001", "--demand-limit", raised, *evening]) == 0
    capsys.readouterr()
    restored = read()
    assert (restored["power_w"], restored["connected"]) == (power, True)
