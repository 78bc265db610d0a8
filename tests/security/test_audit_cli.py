"""`erab audit verify` and `erab security assess` on wiped, cut-back or empty homes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from erab.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "home"
    assert run(capsys, "pki", "init", "--home", str(path))[0] == 0
    return path


def audit_db(home: Path) -> Path:
    return home / "security" / "audit.sqlite"


def test_pki_init_leaves_a_checkpointed_log_and_a_head_file(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home), "--json")
    data = json.loads(out)
    assert code == 0 and data["intact"]
    assert data["checkpoints_checked"] == 1 and data["head_file_checkpoint"] == 1
    assert (home / "security" / "audit-head.json").exists()


def test_verify_of_dropped_tables_fails_and_recreates_nothing(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(audit_db(home)) as db:
        db.executescript("DROP TABLE audit_records; DROP TABLE audit_checkpoints;")
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 1 and out.startswith("audit log BROKEN")
    assert "log: missing: table(s) audit_records, audit_checkpoints gone" in out
    with sqlite3.connect(audit_db(home)) as db:
        assert (
            db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'audit%'").fetchall() == []
        )
    code, out, _ = run(capsys, "security", "assess", "--home", str(home), "--no-save")
    assert code == 1 and "FAIL  security events are logged" in out


def test_verify_of_a_deleted_database_fails_and_does_not_create_one(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit_db(home).unlink()
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 1 and "no audit log at" in out
    assert not audit_db(home).exists()


def test_deleted_head_file_fails_verify_and_assess(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "security" / "audit-head.json").unlink()
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 1 and "log: missing: no head file" in out
    code, out, _ = run(capsys, "security", "assess", "--home", str(home), "--json", "--no-save")
    logging = next(r for r in json.loads(out)["requirements"] if r["id"] == "logging")
    assert code == 1 and logging["status"] == "fail"


@pytest.mark.parametrize("made", [False, True], ids=["missing", "empty-dir"])
def test_assess_and_verify_of_an_empty_or_missing_home_are_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], made: bool
) -> None:
    home = tmp_path / "nothing"
    if made:
        (home / "security").mkdir(parents=True)
    code, out, err = run(capsys, "security", "assess", "--home", str(home))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("erab: error: nothing to assess: no security state in ")
    code, _, err = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 2 and err.startswith("erab: error: no security state in ")
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["nothing", "security"] if made else [])


def test_assess_marks_checks_with_nothing_to_examine_na(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = run(capsys, "security", "assess", "--home", str(home), "--no-save")
    assert "N/A  revoked gateways are no longer connected: no connection records yet" in out
    assert "PASS  revoked gateways" not in out
