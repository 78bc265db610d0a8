"""Showcases and warmers: the flexibility is the physics of their contents."""

from __future__ import annotations

import numpy as np

from erab.devices.showcase import CHILLED_MAX_C, ShowcaseFleet
from erab.devices.store import CONVENIENCE, WarmerFleet


def _case() -> ShowcaseFleet:
    return ShowcaseFleet(1, ua_w_per_k=80.0, heat_capacity_j_per_k=80.0 * 16_000.0)


def test_a_paused_chilled_case_warms_and_draws_no_compressor_power() -> None:
    case = _case()
    case.pause(0, until_s=3600.0)
    case.step(600.0, 600.0, 24.0, np.array([True]))
    assert case.inside_temp_c[0] > 4.5
    assert case.power_w[0] == case.lighting_w[0]  # fans and compressor off, lights on


def test_a_case_at_its_safe_limit_cools_whatever_the_pause_says() -> None:
    case = _case()
    case.pause(0, until_s=1e9)
    for k in range(1, 200):
        case.step(300.0, 300.0 * k, 24.0, np.array([False]))
    assert case.inside_temp_c[0] < CHILLED_MAX_C + 0.5


def test_hold_time_matches_the_time_the_contents_take_to_reach_the_limit() -> None:
    case = _case()
    hold = float(case.hold_time_s(24.0)[0])
    case.pause(0, until_s=1e9)
    steps = int(hold // 60)
    for k in range(1, steps):
        case.step(60.0, 60.0 * k, 24.0, np.array([False]))
    assert CHILLED_MAX_C - 0.3 < case.inside_temp_c[0] < CHILLED_MAX_C


def test_shifting_a_defrost_moves_its_heater_window() -> None:
    case = ShowcaseFleet(1, defrost_w=1500.0)
    assert case.defrosting(600.0)[0]
    case.shift_defrost(0, 3600.0)
    assert not case.defrosting(600.0)[0]
    assert case.defrosting(3600.0 + 600.0)[0]


def test_a_paused_warmer_keeps_its_food_above_the_hot_holding_minimum() -> None:
    warmers = WarmerFleet(list(CONVENIENCE.warmers))
    hot_case = warmers.names.index("hot showcase")
    hold = float(warmers.hold_time_s(24.0)[hot_case])
    assert 600.0 < hold < 4 * 3600.0
    warmers.pause(hot_case, until_s=1e9)
    for k in range(1, 24 * 12):
        warmers.step(300.0, 300.0 * k, 24.0)
    assert warmers.food_temp_c[hot_case] >= warmers.min_temp_c[hot_case] - 0.5
    assert warmers.power_w[hot_case] > 0.0  # it reheats once the food reaches 65 °C


def test_raising_a_stores_showcase_targets_sheds_load_and_keeps_food_safe() -> None:
    from datetime import datetime

    from erab.clock import JST
    from erab.devices import Scenario, SiteSpec, Town

    start = datetime(2026, 8, 3, 13, tzinfo=JST)
    store = SiteSpec("konbini", kind="store", showcases=4, open_hour=0.0, close_hour=24.0)
    towns = [Town(Scenario((store,), seed=5), start) for _ in range(2)]
    for town in towns:
        town.advance_to(start.timestamp() + 3600)  # settle
    chilled = towns[1].showcase.target_temp_c > 0
    towns[1].showcase.target_temp_c[chilled] = 9.0  # as a Set of 0xEF would
    used = []
    for town in towns:
        before = float(town.showcase.energy_wh.sum())
        town.advance_to(start.timestamp() + 2 * 3600)
        used.append(float(town.showcase.energy_wh.sum()) - before)
    assert used[1] < 0.7 * used[0]  # the compressors rest while the contents warm
    assert np.all(towns[1].showcase.inside_temp_c[chilled] <= CHILLED_MAX_C)
