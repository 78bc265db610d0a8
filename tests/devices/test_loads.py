"""Household other load (Tokyo ≈ 249 kWh a month) and lighting schedules."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from erab.clock import JST
from erab.devices import HouseholdLoad, LightingFleet


def test_a_tokyo_household_uses_about_249_kwh_a_month() -> None:
    load = HouseholdLoad(5, variability=0.15, seed=4)
    start = datetime(2026, 1, 1, tzinfo=JST).timestamp()
    step = 1800.0
    for k in range(int(365 * 86_400 / step)):
        load.step(step, start + (k + 1) * step)
    monthly_kwh = load.energy_wh / 1000.0 / 12.0
    assert np.all(np.abs(monthly_kwh - 249.0) < 249.0 * 0.03)


def test_household_load_peaks_in_the_evening() -> None:
    load = HouseholdLoad(1, variability=0.0)
    day = datetime(2026, 4, 1, tzinfo=JST).timestamp()
    at_19 = load.power_at(day + 19.5 * 3600)[0]
    at_04 = load.power_at(day + 4.5 * 3600)[0]
    at_14 = load.power_at(day + 14.5 * 3600)[0]
    assert at_19 > at_14 > at_04


def test_lighting_follows_its_schedule() -> None:
    lights = LightingFleet(1, rated_w=100.0, on_hour=17.5, off_hour=23.5)
    day = datetime(2026, 4, 1, tzinfo=JST).timestamp()
    assert lights.step(60.0, day + 12 * 3600)[0] == lights.standby_w
    assert lights.step(60.0, day + 20 * 3600)[0] == 100.0


def test_a_switched_light_stays_switched_until_the_schedule_changes() -> None:
    lights = LightingFleet(1, rated_w=100.0, on_hour=17.5, off_hour=23.5)
    day = datetime(2026, 4, 1, tzinfo=JST).timestamp()
    lights.step(60.0, day + 18 * 3600)
    lights.switch(0, False)
    assert lights.step(60.0, day + 19 * 3600)[0] == lights.standby_w
    lights.step(60.0, day + 23.6 * 3600)  # scheduled off: the override ends
    assert lights.step(60.0, day + (24 + 18) * 3600)[0] == 100.0


def test_dimming_scales_power() -> None:
    lights = LightingFleet(1, rated_w=100.0, on_hour=0.0, off_hour=23.99)
    lights.level_pct[0] = 40.0
    assert lights.step(60.0, datetime(2026, 4, 1, 12, tzinfo=JST).timestamp())[0] == 40.0


def test_store_hours_may_run_past_midnight() -> None:
    from erab.devices import ScheduledLoad

    store = ScheduledLoad(1, open_w=2000.0, closed_w=500.0, open_hour=10.0, close_hour=26.0)
    day = datetime(2026, 4, 1, tzinfo=JST).timestamp()
    assert store.is_open(day + 1.5 * 3600)[0]  # 01:30, before the 02:00 close
    assert not store.is_open(day + 3 * 3600)[0]
    assert store.is_open(day + 12 * 3600)[0]
