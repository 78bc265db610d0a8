"""Room thermal model and heat pump air conditioner (0x0130 / 0x0156)."""

from __future__ import annotations

import numpy as np

from erab.devices import AirConditionerFleet, heat_pump_cop
from erab.devices.aircon import MODE_AIR_CIRCULATION, MODE_COOLING, MODE_HEATING


def _settle(
    fleet: AirConditionerFleet, outdoor_c: float, ghi: float = 0.0, hours: float = 12.0
) -> np.ndarray:
    for _ in range(int(hours * 60)):
        fleet.step(60.0, np.full(fleet.n, outdoor_c), np.full(fleet.n, ghi))
    return fleet.power_w.copy()


def test_cooling_power_rises_with_outdoor_temperature() -> None:
    powers = []
    for outdoor in (28.0, 31.0, 34.0, 37.0):
        ac = AirConditionerFleet(1, on=True, mode=MODE_COOLING, set_temp_c=27.0, room_temp_c=27.0)
        powers.append(float(_settle(ac, outdoor)[0]))
    assert powers == sorted(powers)
    assert powers[-1] > 2 * powers[0]


def test_raising_the_set_temperature_lowers_cooling_power() -> None:
    ac = AirConditionerFleet(
        3, on=True, mode=MODE_COOLING, set_temp_c=[25.0, 27.0, 29.0], room_temp_c=[25.0, 27.0, 29.0]
    )
    power = _settle(ac, 33.0, ghi=600.0)
    assert power[0] > power[1] > power[2]


def test_room_holds_the_set_temperature_when_capacity_suffices() -> None:
    ac = AirConditionerFleet(1, on=True, mode=MODE_COOLING, set_temp_c=26.0, room_temp_c=30.0)
    _settle(ac, 33.0, ghi=500.0, hours=3)
    assert abs(ac.room_temp_c[0] - 26.0) < 0.05


def test_switched_off_room_drifts_towards_outdoors_and_draws_standby() -> None:
    ac = AirConditionerFleet(1, on=False, room_temp_c=26.0)
    power = _settle(ac, 33.0, hours=48)
    assert power[0] == ac.room.standby_w
    assert 32.0 < ac.room_temp_c[0] < 34.0 + ac.room.internal_gain_w / ac.room.ua_w_per_k


def test_heating_in_winter_keeps_the_room_warm_with_cop_above_one() -> None:
    ac = AirConditionerFleet(1, on=True, mode=MODE_HEATING, set_temp_c=20.0, room_temp_c=20.0)
    power = _settle(ac, 5.0)
    heat = -ac.heat_removed_w[0]
    assert abs(ac.room_temp_c[0] - 20.0) < 0.05
    assert heat > 0
    assert 2.0 < heat / (power[0] - ac.room.fan_w) < 6.0


def test_cop_falls_as_the_lift_grows() -> None:
    cooling = np.array([True, True])
    cop = heat_pump_cop(np.array([30.0, 38.0]), np.array([27.0, 27.0]), cooling, 0.45)
    assert cop[0] > cop[1]


def test_half_hour_steps_stay_stable() -> None:
    ac = AirConditionerFleet(1, on=True, mode=MODE_COOLING, set_temp_c=27.0, room_temp_c=35.0)
    for _ in range(48):
        ac.step(1800.0, np.array([35.0]), np.array([800.0]))
        assert 20.0 < ac.room_temp_c[0] < 40.0


def test_a_mode_change_moves_power_and_room_temperature() -> None:
    # 0xB0: cooling -> air circulation (fan only) on a hot afternoon, and back
    ac = AirConditionerFleet(1, on=True, mode=MODE_COOLING, set_temp_c=26.0, room_temp_c=26.0)
    cooling_w = float(_settle(ac, 34.0, ghi=600.0, hours=2)[0])
    ac.mode[:] = MODE_AIR_CIRCULATION
    fan_w = float(_settle(ac, 34.0, ghi=600.0, hours=2)[0])
    assert fan_w == ac.room.fan_w < cooling_w / 10
    assert ac.room_temp_c[0] > 29.0  # the room heats up towards outdoors
    ac.mode[:] = MODE_COOLING
    _settle(ac, 34.0, ghi=600.0, hours=2)
    assert abs(ac.room_temp_c[0] - 26.0) < 0.05
