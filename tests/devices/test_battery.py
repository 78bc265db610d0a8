"""Storage battery (0x027D): SOC bounds, energy bookkeeping with efficiency, modes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.devices import BatteryFleet
from erab.devices.battery import (
    MODE_AUTO,
    MODE_CHARGING,
    MODE_DISCHARGING,
    MODE_STANDBY,
)


def test_discharging_lowers_stored_energy_by_power_times_time_over_efficiency() -> None:
    b = BatteryFleet(
        1, capacity_wh=10_000, soc_pct=80, mode=MODE_DISCHARGING, round_trip_efficiency=0.81
    )
    b.discharge_setting_w[:] = 2000.0
    before = b.stored_wh[0]
    b.step(1800.0)
    # 2 kW for 0.5 h = 1 kWh delivered, η = sqrt(0.81) = 0.9 -> 1111.1 Wh from the cells
    assert b.power_w[0] == -2000.0
    assert abs((before - b.stored_wh[0]) - 1000.0 / 0.9) < 1e-6
    assert abs(b.soc_pct[0] - (80.0 - 100.0 * 1000.0 / 0.9 / 10_000)) < 1e-9


def test_charging_stores_power_times_time_times_efficiency() -> None:
    b = BatteryFleet(
        1,
        capacity_wh=10_000,
        soc_pct=20,
        mode=MODE_CHARGING,
        round_trip_efficiency=0.81,
        max_charge_w=3000,
    )
    before = b.stored_wh[0]
    b.step(3600.0)
    assert b.power_w[0] == 3000.0
    assert abs((b.stored_wh[0] - before) - 3000.0 * 0.9) < 1e-6


def test_discharge_stops_at_the_lower_limit() -> None:
    b = BatteryFleet(1, capacity_wh=5000, soc_pct=12, mode=MODE_DISCHARGING, lower_limit_pct=10)
    b.step(3600.0)
    assert abs(b.soc_pct[0] - 10.0) < 1e-9
    b.step(3600.0)
    assert b.power_w[0] == 0.0
    assert b.working_mode()[0] == MODE_STANDBY


def test_auto_mode_absorbs_export_and_covers_import() -> None:
    b = BatteryFleet(
        2, capacity_wh=10_000, soc_pct=50, mode=MODE_AUTO, max_charge_w=3000, max_discharge_w=3000
    )
    power = b.step(60.0, np.array([-1200.0, 800.0]))
    assert power[0] == 1200.0
    assert power[1] == -800.0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([MODE_CHARGING, MODE_DISCHARGING, MODE_STANDBY, MODE_AUTO]),
            st.floats(1.0, 7200.0),
            st.floats(-8000.0, 8000.0),
        ),
        min_size=1,
        max_size=30,
    ),
    st.floats(0.0, 100.0),
)
def test_soc_never_leaves_0_to_100(steps: list[tuple[int, float, float]], soc: float) -> None:
    b = BatteryFleet(1, capacity_wh=6500, soc_pct=soc, lower_limit_pct=0, upper_limit_pct=100)
    for mode, dt, net in steps:
        b.mode[:] = mode
        b.step(dt, np.array([net]))
        assert 0.0 <= b.soc_pct[0] <= 100.0 + 1e-9


def test_auto_mode_charges_from_the_grid_over_the_night_to_its_target() -> None:
    # economy operation: 23:00-07:00 JST, spread evenly, no discharge at night
    b = BatteryFleet(
        2, capacity_wh=10_000, soc_pct=20, mode=MODE_AUTO, night_target_pct=[100.0, np.nan]
    )
    powers = []
    for k in range(8 * 6):  # 23:00 to 07:00 in 10-minute steps, the house importing 500 W
        hour = (23.0 + k / 6.0) % 24.0
        powers.append(b.step(600.0, np.array([500.0, 500.0]), local_hour=hour).copy())
    assert abs(b.soc_pct[0] - 100.0) < 1e-6
    first = powers[0][0]
    assert 0 < first <= 3000.0  # 8 kWh to store over 8 h at 0.95: about 1.05 kW
    assert abs(powers[-1][0] - first) < 1.0  # even, not a spike at 23:00
    assert b.soc_pct[1] == 20.0  # no target: it holds through the night
    day = b.step(600.0, np.array([800.0, 800.0]), local_hour=9.0)
    assert list(day) == [-800.0, -800.0]  # in the day it covers the import


def test_a_charge_amount_stops_charging_once_it_has_flowed() -> None:
    b = BatteryFleet(1, capacity_wh=10_000, soc_pct=20, mode=MODE_CHARGING, max_charge_w=3000)
    b.charge_amount_wh[0] = 1000.0  # 0xAA
    b.step(600.0)  # 500 Wh
    b.step(1800.0)  # would be 1500 Wh: stops at the amount
    assert abs(b.charged_wh[0] - 1000.0) < 1e-6
    assert b.step(600.0)[0] == 0.0
    assert b.working_mode()[0] == MODE_STANDBY


def test_limits_must_keep_the_lower_below_the_upper() -> None:
    b = BatteryFleet(1)
    b.set_limits(0, lower_pct=0.0)
    assert b.lower_limit_pct[0] == 0.0
    with pytest.raises(ValueError, match="0 <= lower < upper <= 100"):
        b.set_limits(0, lower_pct=100.0)


def test_standby_holds_the_charge_whatever_the_site_does() -> None:
    b = BatteryFleet(1, capacity_wh=10_000, soc_pct=60, mode=MODE_STANDBY)
    for net_w, hour in ((-3000.0, 12.0), (2500.0, 19.0), (800.0, 2.0)):
        assert b.step(1800.0, np.array([net_w]), local_hour=hour)[0] == 0.0
    assert b.soc_pct[0] == 60.0
    assert b.working_mode()[0] == MODE_STANDBY
