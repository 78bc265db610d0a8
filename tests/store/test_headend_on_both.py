"""The route A head-end on each backend: a collection and its settlement export through
``erab meter ami`` give byte-identical files from SQLite and from PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from erab.cli import main
from tests.store.conftest import store_url

NOW = "2026-08-03T10:00"


def export(url: str, capsys: pytest.CaptureFixture[str]) -> str:
    args = ["meter", "ami", "collect", "--db", url, "--now", NOW]
    assert main([*args, "--meters", "30", "--days", "1.5", "--loss", "0.1", "--json"]) == 0
    capsys.readouterr()
    out = ["--start", "2026-08-02T00:00", "--end", NOW, "--format", "csv"]
    assert main(["meter", "ami", "export", "--db", url, "--now", NOW, *out]) == 0
    return capsys.readouterr().out


def test_the_settlement_export_is_the_same_from_both_stores(
    request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {b: export(store_url(b, request, tmp_path), capsys) for b in ("sqlite", "postgresql")}
    assert files["sqlite"] == files["postgresql"]
    lines = files["sqlite"].splitlines()
    assert lines[0] == "meter_id,slot_start,slot_end,import_kwh,export_kwh,quality"
    assert len(lines) == 1 + 30 * 68  # 34 hours of 30-minute slots per meter
    assert sum(line.endswith(",measured") for line in lines) > 0.8 * 30 * 68
