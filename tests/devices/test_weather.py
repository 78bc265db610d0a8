"""Seeded weather: reproducible, seasonal, diurnal, and shared by a region."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.clock import JST
from erab.devices import Scenario, SiteSpec, Sky, Town, Weather


def _hours(day: datetime, hours: np.ndarray) -> np.ndarray:
    return day.timestamp() + hours * 3600.0


def test_same_seed_gives_same_weather_in_any_order() -> None:
    t = _hours(datetime(2026, 8, 1, tzinfo=JST), np.arange(0, 72, 0.5))
    forward = Weather(seed=5).temperature_c(t)
    backward = Weather(seed=5).temperature_c(t[::-1])[::-1]
    assert np.array_equal(forward, backward)
    assert not np.allclose(forward, Weather(seed=6).temperature_c(t))


def test_august_is_warmer_than_january_in_tokyo() -> None:
    w = Weather(seed=1)
    aug = w.temperature_c(_hours(datetime(2026, 8, 1, tzinfo=JST), np.arange(0, 24 * 31, 1.0)))
    jan = w.temperature_c(_hours(datetime(2026, 1, 1, tzinfo=JST), np.arange(0, 24 * 31, 1.0)))
    # JMA normals: August 26.9 °C, January 5.4 °C monthly means
    assert abs(aug.mean() - 26.9) < 2.5
    assert abs(jan.mean() - 5.4) < 2.5


def test_afternoon_is_warmer_than_dawn() -> None:
    w = Weather(seed=2)
    days = [datetime(2026, 5, d, tzinfo=JST) for d in range(1, 29)]
    at_14 = np.array([w.temperature_c(d.timestamp() + 14 * 3600) for d in days])
    at_05 = np.array([w.temperature_c(d.timestamp() + 5 * 3600) for d in days])
    assert np.all(at_14 > at_05)


@settings(max_examples=50, deadline=None)
@given(st.floats(min_value=1.6e9, max_value=1.9e9), st.integers(0, 2**31))
def test_cloudiness_stays_a_fraction(time_s: float, seed: int) -> None:
    c = float(Weather(seed=seed).cloudiness(time_s))
    assert 0.0 <= c <= 1.0


def test_sky_is_dark_at_night_and_bright_at_noon() -> None:
    day = datetime(2026, 6, 21, tzinfo=JST)
    state = Sky().at(_hours(day, np.array([0.0, 11.7])), np.array([0.0, 0.0]))
    assert state.ghi_w_m2[0] == 0.0
    assert state.ghi_w_m2[1] > 800.0


def test_nearby_sites_share_one_weather_and_far_sites_do_not() -> None:
    sites = (
        SiteSpec("a", latitude_deg=35.68, longitude_deg=139.77),
        SiteSpec("b", latitude_deg=35.70, longitude_deg=139.76),
        SiteSpec("c", latitude_deg=34.69, longitude_deg=135.50),  # Osaka
    )
    town = Town(Scenario(sites, seed=3), datetime(2026, 8, 1, 14, tzinfo=JST))
    assert town.site_region[0] == town.site_region[1] != town.site_region[2]
    town.step(60.0)
    assert town.site_temperature_c[0] == town.site_temperature_c[1]
    assert town.site_temperature_c[0] != town.site_temperature_c[2]
