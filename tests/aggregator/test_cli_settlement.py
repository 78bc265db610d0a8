"""``erab settle``, ``erab report``, ``erab products list`` on a deployment home holding an
emulated town's route A history and its RA's events (tests/aggregator/test_settlement.py
says how that home is built)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from erab.cli import main
from tests.aggregator.test_settlement import TownHome, build_town_home


@pytest.fixture(scope="module")
def town_home(tmp_path_factory: pytest.TempPathFactory) -> TownHome:
    return build_town_home(tmp_path_factory.mktemp("cli-town"), homes=20, seed=2)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_settle_json_is_reproducible_and_names_its_method(
    town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ("settle", town_home.event_id, "--home", str(town_home.home), "--json")
    code, first, err = run(capsys, *args)
    assert code == 0, err
    _, second, _ = run(capsys, *args)
    assert first == second  # byte-identical
    doc = json.loads(first)
    assert doc["event"]["event_id"] == town_home.event_id
    assert doc["baseline"]["name"] == "high-4-of-5 + same-day 5h-2h"
    assert {c["customer_id"] for c in doc["customers"]} == set(town_home.participants)
    assert doc["summary"]["delivered_kwh"] == pytest.approx(town_home.discharged_kwh, rel=0.05)
    assert {c["name"] for c in doc["checks"]} >= {"response", "held for duration"}


def test_settle_csv_has_a_row_per_customer_and_slot_and_the_fleet(
    town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "settle", town_home.event_id, "--home",
                         str(town_home.home), "--csv")  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    slots = 6
    assert len(rows) == (len(town_home.participants) + 1) * slots
    fleet = [r for r in rows if r["customer_id"] == "*fleet*"]
    assert sum(float(r["delivered_kwh"]) for r in fleet) == pytest.approx(
        town_home.discharged_kwh, rel=0.05
    )
    assert all(r["delivered_kwh"].count(".") == 1 and len(r["delivered_kwh"].split(".")[1]) == 4
               for r in rows)  # fmt: skip


def test_settle_text_shows_the_slots_and_the_checks(
    town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "settle", town_home.event_id, "--home", str(town_home.home))
    assert code == 0, err
    assert "baseline: high-4-of-5 + same-day 5h-2h" in out
    assert "13:00" in out and "15:30" in out
    assert "[PASS] held for duration" in out
    assert "[FAIL] minimum offer" in out  # 20 kW is below the market's 1,000 kW


def test_an_unknown_event_lists_the_events_there(
    town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "settle", "ev-nope", "--home", str(town_home.home))
    assert code == 2
    assert "no event 'ev-nope'" in err and town_home.event_id in err
    assert "Traceback" not in err


def test_a_home_without_meter_data_says_what_to_do(
    tmp_path: Path, town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"event_id": "ev-x", "start": town_home.start.isoformat(),
                                 "end": town_home.end.isoformat(), "target_kw": -5,
                                 "product": "tertiary-1"}))  # fmt: skip
    code, _, err = run(capsys, "settle", "ev-x", "--home", str(tmp_path), "--event-file",
                       str(event))  # fmt: skip
    assert code == 2 and "no RA registry" in err and "erab ra import" in err


def test_settle_rules_from_flags_reach_the_output(
    town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "settle", town_home.event_id, "--home", str(town_home.home),
                         "--json", "--missing", "exclude-customer",
                         "--price-yen-per-kwh", "7.5", "--incentive-cap-yen", "100")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["rules"]["missing_rule"] == "exclude-customer"
    assert doc["rules"]["price_yen_per_kwh"] == 7.5
    committed = doc["summary"]["committed_kwh"]
    paid = sum(min(max(s["delivered_kwh"], 0), s["committed_kwh"]) for s in doc["slots"])
    assert doc["summary"]["revenue_yen"] == pytest.approx(7.5 * paid, abs=0.01)
    assert committed > 0
    # every participant delivered about 6 kWh (120 yen at 20 yen/kWh): capped at 100
    assert {c["incentive_yen"] for c in doc["customers"]} == {100.0}


def test_report_writes_csv_json_plots_and_html(
    town_home: TownHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "report"
    code, out, err = run(capsys, "report", town_home.event_id, "--home", str(town_home.home),
                         "--out-dir", str(out_dir))  # fmt: skip
    assert code == 0, err
    for name in ("settlement.json", "settlement.csv", "fleet.png", "customers.png",
                 "report.html"):  # fmt: skip
        assert (out_dir / name).is_file() and str(out_dir / name) in out
    assert (out_dir / "fleet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, again, _ = run(capsys, "settle", town_home.event_id, "--home", str(town_home.home),
                      "--json")  # fmt: skip
    assert (out_dir / "settlement.json").read_text() == again
    page = (out_dir / "report.html").read_text()
    assert town_home.event_id in page and 'src="fleet.png"' in page


def test_products_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "products", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["primary", "10", "s"]
    assert any(line.startswith("capacity-dr") and "3 h" in line for line in lines)
    code, out, _ = run(capsys, "products", "list", "--json")
    assert [p["name"] for p in json.loads(out)][:2] == ["primary", "secondary-1"]


def test_products_list_refuses_a_bad_file(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    bad = tmp_path / "p.toml"
    bad.write_text("[[product]]\nname = 'x'\n")
    code, _, err = run(capsys, "products", "list", "--products", str(bad))
    assert code == 2 and "missing" in err and "Traceback" not in err


def test_stores_named_by_url_instead_of_the_home(
    town_home: TownHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"event_id": "ev-url", "start": town_home.start.isoformat(),
                                 "end": town_home.end.isoformat(), "target_kw": -5,
                                 "product": "tertiary-1"}))  # fmt: skip
    code, out, err = run(capsys, "settle", "ev-url", "--home", str(tmp_path / "elsewhere"),
                         "--event-file", str(event),
                         "--store", f"sqlite:///{town_home.home / 'ra' / 'ra.sqlite'}",
                         "--meter-store", f"sqlite:///{town_home.home / 'erab.sqlite'}",
                         "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["delivered_kwh"] == pytest.approx(town_home.discharged_kwh, rel=0.05)


def test_a_primary_event_is_verified_on_the_telemetry_in_the_ras_store(
    town_home: TownHome, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Telemetry as the RA's ingest stores it (one batch per gateway, 1-s samples of the
    participants' batteries: 2 kW consumption, then discharging 2 kW from 4 s after the
    start), a primary event on it."""
    from datetime import timedelta

    from erab.store import SqliteStore, UplinkBatch

    start = town_home.start - timedelta(hours=3)  # 10:00, before the settled event
    t0 = int(start.timestamp())
    store = SqliteStore(town_home.home / "ra" / "ra.sqlite")
    try:
        for seq, site in enumerate(town_home.participants, 1):
            batch = UplinkBatch(messages=[(f"gw-{site}", 90_000 + seq, "telemetry", t0)])
            for k in range(-300, 400):
                kw = 2.0 if k < 4 else -2.0
                batch.samples.append((0, f"{site}.battery-1", t0 + k, {"power_w": kw * 1000},
                                      frozenset()))  # fmt: skip
            outcome = store.write_uplink_batch(batch, start)
            assert outcome.stored == 1 and outcome.unknown_devices == 0
    finally:
        store.close()
    event = tmp_path / "fast.json"
    event.write_text(json.dumps({"event_id": "ev-fast", "start": start.isoformat(),
                                 "end": (start + timedelta(minutes=6)).isoformat(),
                                 "target_kw": -4.0 * len(town_home.participants),
                                 "product": "primary"}))  # fmt: skip
    code, out, err = run(capsys, "settle", "ev-fast", "--home", str(town_home.home),
                         "--event-file", str(event), "--json")  # fmt: skip
    assert code == 0, err
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    assert checks["telemetry interval"]["value"] == 1.0 and checks["telemetry interval"]["passed"]
    assert checks["response"]["value"] == 4.0 and checks["response"]["passed"]
    assert checks["held for duration"]["passed"]


def test_settle_output_is_the_same_bytes_from_another_process(
    town_home: TownHome, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import subprocess
    import sys

    args = ["settle", town_home.event_id, "--home", str(town_home.home), "--csv"]
    _, here, _ = run(capsys, *args)
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another hash order for sets and dicts
    other = subprocess.run([sys.executable, "-m", "erab", *args], capture_output=True,
                           text=True, env=env, timeout=120, check=True)  # fmt: skip
    assert other.stdout == here


def test_a_meter_set_with_erab_ra_site_meter_is_the_one_settle_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sites named as no emulated town names them: settle refuses the one without a meter,
    naming it and the command; once 'erab ra site meter' sets it, both are settled."""
    from tests.aggregator.test_settlement import small_home

    event = small_home(tmp_path, meters={"shop-a": "22-0001"}, caps={"shop-a": 12.0})
    event_file = tmp_path / "event.json"
    event_file.write_text(json.dumps({
        "event_id": event.event_id, "start": event.start.isoformat(),
        "end": event.end.isoformat(), "target_kw": event.target_kw,
        "product": event.product}))  # fmt: skip
    settle = ("settle", event.event_id, "--home", str(tmp_path), "--event-file",
              str(event_file), "--json")  # fmt: skip
    code, out, err = run(capsys, *settle)
    assert code != 0 and "house-b" in err and "erab ra site meter SITE METER" in err
    assert "Traceback" not in err
    code, out, err = run(capsys, "ra", "site", "meter", "house-b", "22-0002", "--home",
                         str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert "site house-b: meter 22-0002" in out
    code, out, err = run(capsys, *settle)
    assert code == 0, err
    doc = json.loads(out)
    by_id = {c["customer_id"]: c for c in doc["customers"]}
    assert by_id["house-b"]["delivered_kwh"] == pytest.approx(1.0)
    assert by_id["shop-a"]["incentive_yen"] == pytest.approx(12.0)  # its contract's cap
    assert by_id["house-b"]["incentive_yen"] == pytest.approx(20.0)
    # one meter for two sites is refused by the registry, the stored meter unchanged
    code, out, err = run(capsys, "ra", "site", "meter", "shop-a", "22-0002", "--home",
                         str(tmp_path))  # fmt: skip
    assert code != 0 and "already measures site 'house-b'" in err
    code, out, err = run(capsys, "ra", "site", "show", "shop-a", "--home", str(tmp_path))
    assert "meter: 22-0001" in out


def test_settle_and_report_an_event_across_midnight(
    tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.aggregator.test_settlement import NIGHT_START

    night = build_town_home(tmp_path_factory.mktemp("cli-night"), homes=20, seed=3,
                            event_start=NIGHT_START)  # fmt: skip
    code, out, err = run(capsys, "settle", night.event_id, "--home", str(night.home))
    assert code == 0, err
    assert "baseline: high-4-of-5 then high-2-of-3 + same-day 5h-2h" in out
    assert "10-16 23:30" in out and "10-17 01:30" in out
    code, settled, err = run(capsys, "settle", night.event_id, "--home", str(night.home),
                             "--json")  # fmt: skip
    doc = json.loads(settled)
    assert doc["baseline"]["per_day"] == ["2026-10-16: high-4-of-5", "2026-10-17: high-2-of-3"]
    assert len(doc["slots"]) == 6 and doc["slots"][-1]["slot_start"] == "2026-10-17T01:30:00+09:00"
    assert doc["summary"]["delivered_kwh"] == pytest.approx(night.discharged_kwh, rel=0.1)
    out_dir = tmp_path_factory.mktemp("night-report")
    code, out, err = run(capsys, "report", night.event_id, "--home", str(night.home),
                         "--out-dir", str(out_dir))  # fmt: skip
    assert code == 0, err
    assert (out_dir / "settlement.json").read_text() == settled  # the same bytes
    page = (out_dir / "report.html").read_text()
    assert "2026-10-16T23:00:00+09:00 – 2026-10-17T02:00:00+09:00" in page
    assert "<tr><td>10-16 23:00–23:30" in page and "<tr><td>10-17 01:30–02:00" in page
