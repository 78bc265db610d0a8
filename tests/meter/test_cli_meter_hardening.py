"""`erab meter` on bad files, empty homes, shared stores, silent meters: one clear line each."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from erab.cli import main
from tests.meter.conftest import PASSWORD, RBID, rig

pytestmark = pytest.mark.timeout(180)

NOW = "2026-08-01T12:10"


def ami(*args: str) -> list[str]:
    return ["meter", "ami", *args, "--now", NOW]


def one_clear_error(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("erab: error: "), err
    assert "Traceback" not in err and "Errno" not in err
    for needle in needles:
        assert needle in lines[0]


# ----------------------------------------------------------------------------- item 4


def test_status_on_an_empty_home_says_there_is_no_data_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ERAB_HOME", raising=False)
    monkeypatch.delenv("ERAB_DATABASE_URL", raising=False)
    assert main(ami("status")) == 0
    out = capsys.readouterr().out
    assert "no meter data yet: erab-data/erab.sqlite does not exist" in out
    assert "erab meter ami collect" in out and "None" not in out
    assert main([*ami("status"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exists"] is False
    assert list(tmp_path.iterdir()) == []


def test_home_holds_the_store_of_every_ami_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "site"
    collect = ami("collect", "--home", str(home), "--meters", "2", "--days", "0.1")
    assert main([*collect, "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)["stored"]
    assert (home / "erab.sqlite").is_file()
    assert main([*ami("status", "--home", str(home)), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["store"], status["readings"]) == (str(home / "erab.sqlite"), stored)
    assert main([*ami("read", "M000001", "--home", str(home)), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["meter_id"] == "M000001"
    out = tmp_path / "slots.csv"
    args = ["--start", "2026-08-01T10:00", "--end", "2026-08-01T12:00"]
    assert main([*ami("export", "--home", str(home), *args), "--out", str(out)]) == 0
    assert out.read_text().startswith("meter_id,slot_start")
    assert sorted(p.name for p in home.iterdir() if p.suffix == ".sqlite") == ["erab.sqlite"]


def test_status_of_a_store_without_readings_says_how_to_collect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "ami.sqlite"
    assert main(ami("read", "M000000", "--db", str(db), "--meters", "2")) == 0
    capsys.readouterr()
    assert main(ami("status", "--db", str(db))) == 0
    out = capsys.readouterr().out
    assert "no readings stored yet; collect readings with `erab meter ami collect --db" in out
    assert "None" not in out


# ----------------------------------------------------------------------------- item 3


def _damaged(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.sqlite"
    if kind == "not-sqlite":
        path.write_text("meter_id,slot_end\nM1,2026-08-01\n" * 50)
    elif kind == "garbled":
        path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 40)
    else:  # truncated: a real store cut in half
        assert main(ami("collect", "--db", str(path), "--meters", "50", "--days", "2")) == 0
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


@pytest.mark.parametrize("kind", ["not-sqlite", "garbled", "truncated"])
@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["collect", "--days", "0.1"],
        ["export", "--start", "2026-08-01T10:00", "--end", "2026-08-01T12:00"],
    ],
)
def test_a_bad_store_file_is_one_line_naming_it_and_is_left_as_it_was(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str, command: list[str]
) -> None:
    path = _damaged(tmp_path, kind)
    before = path.read_bytes()
    capsys.readouterr()
    assert main(ami(*command, "--db", str(path))) == 2
    one_clear_error(capsys.readouterr().err, f"SQLite store {path}:")
    assert path.read_bytes() == before


def test_two_collectors_on_one_store_both_finish_and_store_every_reading_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "shared.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "erab", *ami("collect", "--db", str(db), "--meters", "400")]
    procs = [
        subprocess.Popen(
            [*cmd, "--days", days],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for days in ("3", "2")
    ]
    results = [p.communicate(timeout=150) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert "locked" not in err and "Traceback" not in err
    with sqlite3.connect(db) as conn:
        rows, distinct, complete = conn.execute(
            "SELECT count(*), count(DISTINCT meter_key || '/' || slot_end), "
            "count(import_kwh) FROM meter_readings"
        ).fetchone()
    assert rows == distinct == complete == 400 * 3 * 48  # every meter at every slot end, once


# ----------------------------------------------------------------------------- item 6


def test_a_demand_limit_below_the_load_says_the_supply_was_cut(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evening = ["--db", str(tmp_path / "ami.sqlite"), "--now", "2026-08-01T19:10", "--meters", "2"]
    assert main(["meter", "ami", "configure", "M000001", "--demand-limit", "100", *evening]) == 0
    out = capsys.readouterr().out
    assert out.startswith("M000001: configure ok (action #1); supply CUT")
    assert "demand limit of 100 W" in out and "disconnected" in out
    args = ["meter", "ami", "configure", "M000001", "--demand-limit", "90", *evening, "--json"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["result"], result["supply"]) == ("ok", "cut-by-demand-limit")
    assert result["meter"]["connected"] is False and result["meter"]["power_w"] == 0.0


# ----------------------------------------------------------------------------- item 7


def _collected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    db = tmp_path / "ami.sqlite"
    assert main(ami("collect", "--db", str(db), "--meters", "2", "--days", "0.2")) == 0
    capsys.readouterr()
    return db


EXPORT = ["export", "--start", "2026-08-01T10:00", "--end", "2026-08-01T12:00"]


def test_export_json_is_json_whichever_way_it_is_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _collected(tmp_path, capsys)
    for flag in (["--json"], ["--format", "json"]):
        assert main([*ami(*EXPORT, "--db", str(db)), *flag]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["format"] == "erab.meter-data/1" and len(doc["rows"]) == 2 * 4


def test_export_old_output_flags_still_work_and_warn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _collected(tmp_path, capsys)
    for flag in ("-o", "--output"):
        out = tmp_path / f"x{flag}.csv"
        assert main([*ami(*EXPORT, "--db", str(db)), flag, str(out)]) == 0
        assert len(out.read_text().splitlines()) == 1 + 2 * 4
        assert f"{flag} is deprecated" in capsys.readouterr().err


def test_export_to_a_missing_folder_is_one_line_and_an_old_file_survives_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _collected(tmp_path, capsys)
    assert main([*ami(*EXPORT, "--db", str(db)), "--out", "/no/such/dir/x.csv"]) == 2
    one_clear_error(capsys.readouterr().err, "/no/such/dir/x.csv", "does not exist")
    old = tmp_path / "old.csv"
    old.write_text("yesterday's export\n")
    assert main([*ami(*EXPORT, "--db", str(db)), "--meter", "M999", "--out", str(old)]) == 2
    one_clear_error(capsys.readouterr().err, "unknown meter 'M999'")
    assert old.read_text() == "yesterday's export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ami.sqlite", "old.csv"] or all(
        not p.name.startswith(".old.csv") for p in tmp_path.iterdir()
    )


def test_export_without_a_store_says_to_collect_first_and_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    assert main([*ami(*EXPORT, "--home", str(home))]) == 2
    one_clear_error(capsys.readouterr().err, "does not exist", "erab meter ami collect --home")
    assert not home.exists()


def test_a_missing_credentials_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "routeb.json"
    assert main(["meter", "read", "--device", "/dev/null", "--credentials", str(missing)]) == 2
    one_clear_error(capsys.readouterr().err, f"credentials file {missing} does not exist")


# ----------------------------------------------------------------------------- items 5, 8, 9


def _read_in_thread(args: list[str]) -> int:
    return main(args)


async def test_route_b_read_shows_energy_scaled_by_coefficient_and_unit(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERAB_ROUTEB_ID", RBID)
    monkeypatch.setenv("ERAB_ROUTEB_PASSWORD", PASSWORD)
    # coefficient 10 (0xD3) x unit 0.01 kWh (0xE1 = 0x02): 0.1 kWh per count
    async with rig(coefficient=10, unit_code=0x02, open_port=False) as r:
        expected = [h.import_kwh for h in r.meter.history(0)]
        base = ["meter", "read", "--device", r.dongle.path, "--timeout", "1"]
        assert await asyncio.to_thread(_read_in_thread, [*base, "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert await asyncio.to_thread(_read_in_thread, base) == 0
        text = capsys.readouterr().out
    assert result["scaling"] == {"coefficient": 10, "unit_kwh": 0.01, "digits": 6}
    # the reader dates day 0 by its own (wall) clock: compare the 48 values in order
    assert [h["energy_kwh"] for h in result["history"]] == expected
    assert expected[24] == pytest.approx(12.5)  # 12:00, the emulated meter's present
    assert "12:00  12.5 kWh" in text


async def test_route_b_read_says_what_it_waits_for_on_stderr_not_on_json_stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from erab.meter.dongle import DongleFaults

    monkeypatch.setenv("ERAB_ROUTEB_ID", RBID)
    monkeypatch.setenv("ERAB_ROUTEB_PASSWORD", PASSWORD)
    async with rig(faults=DongleFaults(meter_silent=True), open_port=False) as r:
        args = ["meter", "read", "--device", r.dongle.path, "--timeout", "1", "--json"]
        assert await asyncio.to_thread(_read_in_thread, args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "joining" in captured.err
    assert "a Get of 0xd3, 0xe1, 0xd7 within 3 s; asking again (attempt 2 of 4)" in captured.err
    assert "attempt 4 of 4" in captured.err
    assert "erab: error: the meter did not answer a Get" in captured.err


async def test_the_old_port_flag_still_names_the_device_and_warns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERAB_ROUTEB_ID", RBID)
    monkeypatch.setenv("ERAB_ROUTEB_PASSWORD", PASSWORD)
    async with rig(open_port=False) as r:
        args = ["meter", "read", "--port", r.dongle.path, "--timeout", "1", "--no-history"]
        assert await asyncio.to_thread(_read_in_thread, args) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("power: 1234 W")
    assert "--port is deprecated" in captured.err and "use --device" in captured.err


def test_read_without_a_device_says_which_flag() -> None:
    with pytest.raises(SystemExit):
        main(["meter", "read", "--help"])
    assert main(["meter", "read", "--id", RBID, "--password", PASSWORD]) == 2


def test_every_meter_subcommand_has_a_description_and_positionals_have_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for action in ("read", "connect", "disconnect", "configure"):
        with pytest.raises(SystemExit):
            main(["meter", "ami", action, "--help"])
        out = capsys.readouterr().out
        assert re.search(r"METER\s+meter id, e\.g\. M000001", out)
        assert "--home HOME" in out
    with pytest.raises(SystemExit):
        main(["meter", "ami", "export", "--help"])
    out = capsys.readouterr().out
    assert "--out FILE" in out and "--output" not in out and "--json" not in out
