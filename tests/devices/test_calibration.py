"""The emulated town against published Japanese statistics (one seeded year, shared)."""

from __future__ import annotations

import argparse
import json

import pytest

from erab.cli.emulate import run_calibration
from erab.devices.calibration import (
    CalibrationYear,
    calibration_table,
    calibration_year,
    format_table,
)


@pytest.fixture(scope="module")
def year() -> CalibrationYear:
    # One year of the calibration town at 15-minute steps, shared by every test here.
    return calibration_year(seed=0, year=2025)


def test_pv_yield_of_a_south_facing_30_degree_array_in_tokyo_is_1000_to_1250(year) -> None:
    assert 1000.0 <= year.pv_kwh_per_kw.sum() <= 1250.0


def test_annual_irradiation_is_within_5_percent_of_the_jma_normal(year) -> None:
    assert 0.95 * 1314.0 <= year.ghi_kwh_m2.sum() <= 1.05 * 1314.0


def test_a_convenience_store_uses_144000_kwh_a_year_within_15_percent(year) -> None:
    assert 0.85 * 144_000 <= year.store_kwh <= 1.15 * 144_000


@pytest.mark.parametrize(
    ("use", "published_pct"),
    [
        ("hot food", 26.1),
        ("refrigeration", 24.6),
        ("air conditioning", 20.6),
        ("lighting", 15.9),
        ("other", 12.8),
    ],
)
def test_each_convenience_store_end_use_share_is_within_5_points(year, use, published_pct) -> None:
    assert abs(year.store_shares[use] - published_pct) <= 5.0
    assert sum(year.store_shares.values()) == pytest.approx(100.0)


def test_a_convenience_store_stays_under_its_30_kw_contract(year) -> None:
    assert year.store_peak_kw < 30.0


def test_a_standard_homes_monthly_average_is_within_10_percent_of_248_7_kwh(year) -> None:
    assert abs(year.standard_kwh.mean() - 248.7) <= 0.1 * 248.7


def test_a_standard_home_peaks_in_winter_and_rises_again_in_summer(year) -> None:
    per_day = year.standard_kwh / year.month_days
    assert int(per_day.argmax()) in (0, 1, 11)  # December to February
    assert per_day[7] > 1.1 * per_day[4]  # August above May


def test_air_conditioning_is_40_to_60_percent_of_home_demand_at_14_in_august(year) -> None:
    assert 0.40 <= year.ac_share_14h_august <= 0.60


def test_an_ev_uses_about_155_wh_per_km_at_the_socket(year) -> None:
    assert 140.0 <= year.ev_wh_per_km <= 170.0


def test_all_electric_homes_use_more_than_a_standard_home(year) -> None:
    assert year.all_electric_kwh.mean() > year.standard_kwh.mean() + 50.0


def test_an_ev_drives_jamas_370_km_a_month_within_10_percent(year) -> None:
    assert abs(year.ev_km_per_year / 12.0 - 370.0) <= 37.0


def test_an_ev_home_uses_the_standard_total_plus_its_charging_within_10_percent(year) -> None:
    published = 248.7 + 370.0 * 0.155  # TEPCO's total + JAMA's distance × the Leaf's rate
    assert abs(year.ev_home_kwh.mean() - published) <= 0.1 * published


def test_the_table_names_a_source_for_every_row_and_marks_rows_out_of_range(year) -> None:
    rows = calibration_table([year])
    assert all(r.source for r in rows)
    text = format_table(rows)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert len(table) == len(rows) + 2  # header, separator and one line per row
    sources = {r.source for r in rows}
    assert all(any(line.endswith(s) for line in text.splitlines()) for s in sources)
    assert all(r.within for r in rows if r.high != float("inf")), text


def test_emulate_calibration_json_lists_every_row_with_its_source(year, capsys) -> None:
    args = argparse.Namespace(seed=0, json=True)
    assert run_calibration(args, [year]) == 0  # every figure in range: exit 0
    out = json.loads(capsys.readouterr().out)
    assert out["seed"] == 0
    pv = next(r for r in out["rows"] if r["figure"].startswith("PV yield"))
    assert 1000.0 <= pv["emulated"] <= 1250.0 and pv["within"] is True
    assert all(r["source"] for r in out["rows"])


def test_emulate_calibration_prints_the_table_and_its_sources(year, capsys) -> None:
    assert run_calibration(argparse.Namespace(seed=0, json=False), [year]) == 0
    out = capsys.readouterr().out
    assert out.startswith("| figure | emulated | published |")
    assert "METI" in out and "Tokyo Metropolitan Government" in out


def test_a_supermarkets_refrigeration_is_about_half_its_use(year) -> None:
    # ANRE: showcases and cold rooms 47-51 % at peak times; the annual share sits near it
    assert 40.0 <= year.supermarket_shares["refrigeration"] <= 56.0
    assert year.supermarket_kwh > 2 * year.store_kwh
