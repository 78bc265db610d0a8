"""FleetState: columns over resources, vectorised telemetry apply, flags, offline marking."""

from __future__ import annotations

import numpy as np
import pytest

from erab.aggregator.state import (
    FleetState,
    ReadingFlag,
    ResourceKind,
    TelemetryBatch,
)
from erab.aggregator.state import TelemetryField as F

NOW = 1_000_000.0


def small_fleet() -> FleetState:
    return FleetState.create(
        [ResourceKind.BATTERY, ResourceKind.AIRCON, ResourceKind.PV],
        rated_kw=[4.0, 2.0, 5.0],
        capacity_kwh=[10.0, 0.0, 0.0],
        silence_s=300.0,
    )


def test_apply_stores_valid_readings_in_their_columns() -> None:
    state = small_fleet()
    batch = TelemetryBatch.of(
        [0, 0, 1, 1, 2],
        [F.SOC_PCT, F.POWER_KW, F.ROOM_TEMP_C, F.SETPOINT_C, F.POWER_KW],
        [55.0, -1.5, 26.5, 27.0, -3.2],
        [NOW - 10] * 5,
    )
    result = state.apply(batch, NOW)
    assert result.stored == 5 and result.flagged == 0
    assert state.soc_pct[0] == 55.0
    assert state.power_kw.tolist() == [-1.5, pytest.approx(np.nan, nan_ok=True), -3.2]
    assert state.room_temp_c[1] == 26.5 and state.setpoint_c[1] == 27.0
    assert state.online.tolist() == [True, True, True]
    assert state.last_seen_s.tolist() == [NOW - 10] * 3
    assert state.soc_kwh()[0] == pytest.approx(5.5)


def test_impossible_readings_are_flagged_and_not_stored() -> None:
    state = small_fleet()
    batch = TelemetryBatch.of(
        [0, 0, 1, 1, 0, 7, 2],
        [F.SOC_PCT, F.POWER_KW, F.ROOM_TEMP_C, F.POWER_KW, F.POWER_KW, F.POWER_KW, F.SOC_PCT],
        # SOC 120 %, 6.5 kW on a 4 kW battery (> 1.5 x), 70 °C room, a reading 1 h ahead,
        # an unknown resource, a SOC from PV
        [120.0, 6.5, 70.0, 1.0, 1.0, 1.0, 50.0],
        [NOW, NOW, NOW, NOW, NOW + 3600, NOW, NOW],
    )
    flags = state.apply(batch, NOW).flags
    assert flags.tolist() == [
        ReadingFlag.SOC_OUT_OF_RANGE,
        ReadingFlag.POWER_BEYOND_RATED,
        ReadingFlag.ROOM_TEMP_OUT_OF_RANGE,
        ReadingFlag.OK,
        ReadingFlag.TIME_IN_FUTURE,
        ReadingFlag.UNKNOWN_RESOURCE,
        ReadingFlag.FIELD_NOT_APPLICABLE,
    ]
    assert np.isnan(state.soc_pct[0]) and np.isnan(state.power_kw[0])
    assert np.isnan(state.room_temp_c[1]) and state.power_kw[1] == 1.0
    assert state.online.tolist() == [False, True, False]


def test_power_up_to_one_and_a_half_times_rated_is_accepted() -> None:
    state = small_fleet()
    flags = state.apply(TelemetryBatch.of([0], [F.POWER_KW], [6.0], [NOW]), NOW).flags
    assert flags.tolist() == [0] and state.power_kw[0] == 6.0


def test_the_latest_reading_of_a_field_wins_and_an_older_one_is_flagged() -> None:
    state = small_fleet()
    batch = TelemetryBatch.of(
        [0, 0, 0], [F.SOC_PCT] * 3, [50.0, 52.0, 51.0], [NOW - 30, NOW - 10, NOW - 20]
    )
    assert state.apply(batch, NOW).stored == 3
    assert state.soc_pct[0] == 52.0
    late = state.apply(TelemetryBatch.of([0], [F.SOC_PCT], [40.0], [NOW - 15]), NOW)
    assert late.flags.tolist() == [ReadingFlag.OUT_OF_ORDER]
    assert state.soc_pct[0] == 52.0


def test_resources_silent_past_the_limit_go_offline_and_are_reported_once() -> None:
    state = small_fleet()
    state.apply(TelemetryBatch.of([0, 1], [F.POWER_KW, F.POWER_KW], [0.0, 1.0], [NOW, NOW]), NOW)
    assert state.online.tolist() == [True, True, False]
    # resource 1 keeps talking; resource 0 falls silent for more than 300 s
    later = NOW + 301
    result = state.apply(TelemetryBatch.of([1], [F.POWER_KW], [1.1], [later]), later)
    assert result.went_offline.tolist() == [0]
    assert state.online.tolist() == [False, True, False]
    assert state.mark_silent(later + 1).tolist() == []


def test_bad_construction_names_the_problem() -> None:
    with pytest.raises(ValueError, match="unknown resource kind"):
        FleetState.create([0, 9])
    with pytest.raises(ValueError, match="rated_kw"):
        FleetState.create([0, 1], rated_kw=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="comfort_low_c"):
        FleetState.create([1], comfort_low_c=29.0, comfort_high_c=25.0)
    with pytest.raises(ValueError, match="SOC limits"):
        FleetState.create([0], soc_reserve_pct=50.0, soc_max_pct=40.0)
    with pytest.raises(ValueError, match="differ in length"):
        TelemetryBatch.of([0, 1], [F.POWER_KW], [1.0], [NOW])


def test_a_large_batch_is_applied_in_one_vectorised_step() -> None:
    n = 100_000
    state = FleetState.create(np.zeros(n, dtype=np.int64), rated_kw=5.0, capacity_kwh=10.0)
    rng = np.random.default_rng(0)
    soc = rng.uniform(-10, 110, n)  # about 17 % impossible
    result = state.apply(
        TelemetryBatch.of(np.arange(n), np.full(n, F.SOC_PCT), soc, np.full(n, NOW)), NOW
    )
    bad = (soc < 0) | (soc > 100)
    assert result.flagged == int(bad.sum())
    assert np.array_equal(state.soc_pct[~bad], soc[~bad])
    assert np.isnan(state.soc_pct[bad]).all()


def test_a_sites_meter_reading_is_kept_per_site_newest_first_and_bad_ones_dropped() -> None:
    state = FleetState.create([ResourceKind.BATTERY, ResourceKind.AIRCON], site=[0, 1])
    stored = state.apply_meter([1, 1, 0, 7, 0], [0.4, 0.9, float("nan"), 1.0, 2.0],
                               [NOW - 60, NOW, NOW, NOW, NOW + 3600], NOW)  # fmt: skip
    assert stored == 1  # site 1's newest; NaN, an unknown site and the future are dropped
    assert np.isnan(state.site_meter_kw[0]) and state.site_meter_kw[1] == 0.9
    assert state.export_allowed.tolist() == [False, False]  # storage may not export
