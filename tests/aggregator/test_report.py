"""The settlement report: its files, what the page and the plots show, and a bad folder."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from erab.aggregator.products import get_product
from erab.aggregator.report import FILES, write_report
from erab.aggregator.settlement import CustomerTerms, EventTerms, MeterData, Settlement, settle
from erab.clock import JST

DAYS = [date(2026, 6, 1) + timedelta(days=k) for k in range(15)]


def small_settlement() -> Settlement:
    rng = np.random.default_rng(1)
    values = rng.uniform(0.4, 0.6, (8, 15, 48))
    values[:, 14, 28:34] -= np.linspace(0.1, 0.3, 8)[:, None]  # every customer cuts a little
    values[3, 14, 30] = np.nan  # one missing read
    md = MeterData(tuple(f"M{i}" for i in range(8)), tuple(DAYS), values, np.isnan(values),
                   np.zeros(values.shape, dtype=np.bool_))  # fmt: skip
    start = datetime(2026, 6, 15, 14, tzinfo=JST)
    terms = EventTerms("ev-r", start, start + timedelta(hours=3), -0.8, get_product("tertiary-1"))
    return settle(md, terms, CustomerTerms.uniform(md.meter_ids, 20.0))


def test_report_writes_every_file_and_the_json_is_the_settlements(tmp_path: Path) -> None:
    s = small_settlement()
    files = write_report(s, tmp_path / "r")
    assert [f.name for f in files.files] == list(FILES)
    assert (tmp_path / "r" / "settlement.json").read_text() == s.to_json()
    assert (tmp_path / "r" / "settlement.csv").read_text() == s.to_csv()
    for png in ("fleet.png", "customers.png"):
        data = (tmp_path / "r" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a drawn plot


def test_the_page_states_method_checks_and_money_with_numbers(tmp_path: Path) -> None:
    s = small_settlement()
    write_report(s, tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "high-4-of-5 + same-day 5h-2h" in page
    assert "minimum offer" in page and "FAILED" in page  # 0.8 kW is below 1,000 kW
    sm = s.summary()
    assert f"{sm['delivered_kwh']:.2f} kWh" in page
    assert f"{sm['incentives_yen']:.2f} yen" in page
    # the event's six slots, no others
    assert "<tr><td>14:00–14:30" in page and "<tr><td>16:30–17:00" in page
    assert "<tr><td>13:30" not in page and "<tr><td>17:00" not in page


def test_a_file_where_the_folder_should_be_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a folder"):
        write_report(small_settlement(), tmp_path / "taken")
