"""The heat-pump water heater's hot-water draw follows the mains water temperature."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from erab.devices.waterheater import HEATING_MANUAL_OFF, WaterHeaterFleet

JST = timezone(timedelta(hours=9))


def _heat_drawn_in_a_day(outdoor_c: float, draw_l: float = 425.0) -> float:
    wh = WaterHeaterFleet(1, daily_draw_l=draw_l, fill_fraction=1.0)
    wh.mode[:] = HEATING_MANUAL_OFF  # no heating: only the draw moves the tank
    t = datetime(2026, 4, 1, tzinfo=JST).timestamp()
    for _ in range(96):
        t += 900.0
        wh.step(900.0, t, outdoor_c)
    return float(wh.drawn_wh[0]) / 1000.0


def test_mains_water_follows_the_energy_standards_region_6_formula() -> None:
    # 0.8516 × T + 2.473, at least 0.5 °C (calculation method ch. 7, table 7)
    temps = WaterHeaterFleet.supply_water_temp_c(np.array([15.8, 5.0, -5.0]))
    assert temps == pytest.approx([0.8516 * 15.8 + 2.473, 0.8516 * 5.0 + 2.473, 0.5])


def test_a_day_draws_425_litres_heated_from_the_mains_to_42_degrees() -> None:
    mains_c = 0.8516 * 16.0 + 2.473
    expected_kwh = 425.0 * 4.186 / 3600.0 * (42.0 - mains_c)
    assert _heat_drawn_in_a_day(16.0) == pytest.approx(expected_kwh, rel=1e-6)


def test_a_winter_day_draws_more_heat_than_a_summer_day_for_the_same_water() -> None:
    assert _heat_drawn_in_a_day(5.0) > 1.5 * _heat_drawn_in_a_day(27.0)


def test_an_empty_tank_delivers_no_more_heat_than_it_holds() -> None:
    wh = WaterHeaterFleet(1, fill_fraction=0.0)
    wh.mode[:] = HEATING_MANUAL_OFF
    evening = datetime(2026, 1, 10, 20, tzinfo=JST).timestamp()
    wh.step(3600.0, evening, 5.0)
    assert wh.stored_kwh[0] == 0.0
    assert wh.drawn_wh[0] == 0.0


def test_heat_into_the_tank_is_electricity_times_cop() -> None:
    wh = WaterHeaterFleet(1, fill_fraction=0.3)
    night = datetime(2026, 1, 10, 1, tzinfo=JST).timestamp()
    wh.step(900.0, night, 4.0)
    cop = float(WaterHeaterFleet.cop(np.array([4.0]))[0])
    assert wh.heat_wh[0] > 0.0
    assert wh.heat_wh[0] == pytest.approx(wh.energy_wh[0] * cop)


def test_a_negative_draw_is_refused_with_its_name() -> None:
    with pytest.raises(ValueError, match="daily_draw_l"):
        WaterHeaterFleet(1, daily_draw_l=-1.0)


def test_a_town_started_on_a_summer_noon_starts_its_mains_from_the_last_ten_days() -> None:
    from erab.devices.scenario import Scenario, SiteSpec
    from erab.devices.town import Town

    start = datetime(2025, 8, 10, 12, tzinfo=JST)
    town = Town(Scenario((SiteSpec("home", water_heater=True),), seed=3), start)
    day0 = int((start.timestamp() + 9 * 3600) // 86_400)
    past_c = float(np.mean([town._day_means(d)[0] for d in range(day0 - 10, day0)]))
    noon_c = float(town.weathers[0].temperature_c(start.timestamp()))
    mains_c = float(town.water_heater.supply_water_c[0])
    assert mains_c == pytest.approx(0.8516 * past_c + 2.473)
    assert abs(mains_c - (0.8516 * noon_c + 2.473)) > 0.5  # not the noon temperature
    assert 20.0 <= mains_c <= 30.0  # Tokyo's August mains
