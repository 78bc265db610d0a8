"""An early-morning event settled from a deployment home: ``erab settle`` and ``erab
report`` on an emulated town whose batteries discharge from 01:00, the meters of the
evening before read for the same-day adjustment, and the day before the oldest baseline
day loaded for its own evening (tests/aggregator/test_settlement.py builds the town)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from erab.aggregator.baseline import ADJUSTMENT_BEFORE_MIDNIGHT
from erab.cli import main
from erab.clock import JST
from erab.store import MeterReading, SqliteStore
from tests.aggregator.test_settlement import ORIGIN, TownHome, build_town_home

EARLY_START = ORIGIN + timedelta(days=45, hours=1)  # Friday 2026-10-16, 01:00-04:00


@pytest.fixture(scope="module")
def early_home(tmp_path_factory: pytest.TempPathFactory) -> TownHome:
    return build_town_home(tmp_path_factory.mktemp("early-home"), homes=20, seed=2,
                           event_start=EARLY_START)  # fmt: skip


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_settle_an_early_morning_event_adjusted_on_the_evening_before(
    early_home: TownHome, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Half the town's batteries discharge 2 kW from Friday 01:00 to 04:00; the adjustment
    window (5h-2h) is Thursday 20:00-23:00.  Every settled customer is adjusted (none cut,
    none without), the settlement finds what the batteries discharged, and the output and
    the report name the rule."""
    code, out, err = run(capsys, "settle", early_home.event_id, "--home",
                         str(early_home.home), "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    b = doc["baseline"]
    assert b["name"] == "high-4-of-5 + same-day 5h-2h"
    assert b["adjustment_slots"] == [-8, -2]
    assert b["adjustment_before_midnight"] == ADJUSTMENT_BEFORE_MIDNIGHT
    customers = doc["customers"]
    assert {c["customer_id"] for c in customers} == set(early_home.participants)
    assert not any({"no_adjustment", "adjustment_truncated"} & set(c["flags"])
                   for c in customers)  # fmt: skip
    # (one home's is 0.0000 to the four decimals written)
    assert sum(1 for c in customers if c["adjustment_kwh"] != 0.0) >= len(customers) - 2
    assert doc["summary"]["customers_excluded"] == 0
    assert doc["summary"]["delivered_kwh"] == pytest.approx(early_home.discharged_kwh, rel=0.1)
    code, plain, err = run(capsys, "settle", early_home.event_id, "--home", str(early_home.home))
    assert code == 0, err
    assert ("same-day adjustment window: 20:00 to 23:00 the day before (the evening before "
            "the event and before each baseline day)") in plain  # fmt: skip
    code, _, err = run(capsys, "report", early_home.event_id, "--home",
                       str(early_home.home), "--out-dir", str(tmp_path))  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "settlement.json").read_text() == out  # the same bytes
    page = (tmp_path / "report.html").read_text()
    assert "window runs from 20:00 to 23:00 the day before" in page


def test_without_the_evening_before_the_early_event_is_not_adjusted(
    early_home: TownHome, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The same home with Thursday's 20:30-23:00 readings deleted from the head-end's store:
    the evening before is what the adjustment reads, so now no customer is adjusted."""
    import shutil

    home = tmp_path / "home"
    shutil.copytree(early_home.home, home)
    thursday_2000 = EARLY_START - timedelta(hours=5)
    ends = [int((thursday_2000 + timedelta(minutes=30 * k)).timestamp()) for k in range(1, 7)]
    with sqlite3.connect(home / "erab.sqlite") as db:
        gone = db.execute(f"DELETE FROM meter_readings WHERE slot_end IN "
                          f"({','.join('?' * len(ends))})", ends).rowcount  # fmt: skip
    assert gone == 6 * 20  # six slot ends of the town's 20 meters
    code, out, err = run(capsys, "settle", early_home.event_id, "--home", str(home), "--json")
    assert code == 0, err
    customers = json.loads(out)["customers"]
    assert customers and all("no_adjustment" in c["flags"] for c in customers)
    assert all(c["adjustment_kwh"] == 0.0 for c in customers)


def test_the_evening_before_the_oldest_baseline_day_is_read(tmp_path: Path) -> None:
    """A customer whose only usable weekday is the oldest the baseline looks back to (Mon
    18 May for an event on Wed 17 June, 30 days back): its evening before is Sunday 17 May,
    a day further back than a baseline day can be, which the settlement reads for the
    adjustment.  Otherwise that day would lack its window and leave the customer without a
    baseline."""
    from erab.aggregator.registry import Registry
    from erab.aggregator.settlement import HomeSources, RecordedEvent, settle_home
    from erab.clock import SimulatedClock
    from erab.store import Contract, Customer, Site

    start = datetime(2026, 6, 17, 1, tzinfo=JST)
    (tmp_path / "ra").mkdir()
    ra = SqliteStore(tmp_path / "ra" / "ra.sqlite")
    reg = Registry(ra, SimulatedClock(start, speed=0))
    reg.add_customer(Customer("c-1", "house"))
    reg.add_site(Site("house-1", "house", "home", "c-1", "M1"))
    reg.add_contract(Contract("k-1", "c-1", ("tertiary-2",), 20.0, "same-day-adjusted"))
    ra.close()
    sunday_2000 = datetime(2026, 5, 17, 20, tzinfo=JST)
    tuesday_2000 = datetime(2026, 6, 16, 20, tzinfo=JST)
    reads, total = [], 100.0
    t = sunday_2000
    while t <= start + timedelta(hours=24):
        # readings from Sunday 17 May 20:00 to the end of Monday 18 May, and from Tuesday 16
        # June 20:00 on: the days between have none (no usable baseline day)
        if t <= datetime(2026, 5, 19, tzinfo=JST) or t >= tuesday_2000:
            reads.append(MeterReading("M1", t, total, 0.0, t))
        # what the slot starting at t uses
        evening = tuesday_2000 <= t < tuesday_2000 + timedelta(hours=3)
        in_event = start <= t < start + timedelta(hours=1)
        total += 2.0 if evening else 0.5 if in_event else 1.0
        t += timedelta(minutes=30)
    store = SqliteStore(tmp_path / "erab.sqlite")
    store.upsert_readings(reads)
    store.close()
    event = RecordedEvent("ev-early", start, start + timedelta(hours=1), -1.0, "tertiary-2",
                          ("received", "dispatch"))  # fmt: skip
    s = settle_home(HomeSources.of(tmp_path), event)
    assert s.exclusion == {}
    assert bool(s.baseline.flags["short_history"][0])  # one baseline day: Mon 18 May
    # baseline 1 + adjustment (2 on Tuesday's evening - 1 on Sunday 17 May's) = 2; used 0.5
    assert s.baseline.adjustment_kwh[0] == pytest.approx(1.0)
    np.testing.assert_allclose(s.delivered_kwh[0], [1.5, 1.5])
