"""EV sessions and V2H (0x027E), heat-pump water heater (0x026B), fuel cell (0x027C)."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from erab.clock import JST
from erab.devices import EVFleet, FuelCellFleet, WaterHeaterFleet
from erab.devices.battery import MODE_DISCHARGING, MODE_STANDBY
from erab.devices.ev import CONSUMPTION_WH_PER_KM
from erab.devices.fuelcell import STATUS_GENERATING, STATUS_STARTING, STATUS_STOPPED
from erab.devices.waterheater import HEATING_MANUAL_OFF, HEATING_MANUAL_ON


def _run_day(ev: EVFleet, day: datetime, step: float = 300.0) -> None:
    t0 = day.timestamp()
    for k in range(int(86_400 / step)):
        ev.step(step, t0 + (k + 1) * step)


def test_a_trip_uses_40_kwh_per_400_km() -> None:
    ev = EVFleet(200, seed=9, soc_pct=100.0)
    ev.mode[:] = MODE_STANDBY  # no charging: the only change is driving
    day = datetime(2026, 6, 3, tzinfo=JST)  # a Wednesday
    before = ev.battery.stored_wh.copy()
    _run_day(ev, day)
    used = before - ev.battery.stored_wh
    distance = ev.sessions(int((day.timestamp() + 9 * 3600) // 86_400)).distance_km
    assert np.allclose(used, distance * CONSUMPTION_WH_PER_KM)  # 145 Wh/km from the battery
    assert 0.8 < np.mean(distance > 0) <= 1.0


def test_the_car_is_unplugged_while_away() -> None:
    ev = EVFleet(1, seed=1)
    day_number = int((datetime(2026, 6, 3, tzinfo=JST).timestamp() + 9 * 3600) // 86_400)
    s = ev.sessions(day_number)
    midway = day_number * 86_400 - 9 * 3600 + (s.depart_hour[0] + 0.5) * 3600
    assert not ev.at_home(midway)[0]
    ev.step(60.0, midway)
    assert ev.status()[0] == 0x30  # not connected
    assert ev.power_w[0] == 0.0


def test_a_plugged_car_charges_and_can_discharge_to_the_home() -> None:
    ev = EVFleet(1, seed=1, soc_pct=50.0)
    night = datetime(2026, 6, 3, 23, tzinfo=JST).timestamp()
    assert ev.step(60.0, night)[0] == 6000.0
    ev.mode[:] = MODE_DISCHARGING
    assert ev.step(60.0, night + 60)[0] == -6000.0


def test_water_heater_heats_at_night_in_auto_mode_not_at_noon() -> None:
    wh = WaterHeaterFleet(1, fill_fraction=0.5)
    noon = datetime(2026, 4, 1, 12, tzinfo=JST).timestamp()
    assert wh.step(60.0, noon, 18.0)[0] == 0.0
    assert wh.step(60.0, noon + 12 * 3600, 12.0)[0] > 0.0


def test_manual_heating_starts_now_and_manual_stop_never_heats() -> None:
    wh = WaterHeaterFleet(2, fill_fraction=0.5)
    wh.mode[:] = [HEATING_MANUAL_ON, HEATING_MANUAL_OFF]
    noon = datetime(2026, 4, 1, 12, tzinfo=JST).timestamp()
    power = wh.step(60.0, noon, 18.0)
    assert power[0] > 800.0
    assert power[1] == 0.0
    # electric = thermal / COP
    assert abs(power[0] * wh.cop(np.array([18.0]))[0] - wh.heat_output_w[0]) < 1e-6


def test_fuel_cell_follows_demand_and_never_exports() -> None:
    fc = FuelCellFleet(2, ramp_w_per_s=100.0)
    out = fc.step(60.0, np.array([150.0, 2000.0]))
    assert out[0] == 150.0  # below its minimum output: cut to the home's demand
    assert out[1] == 700.0  # at its rating


def test_fuel_cell_switched_on_starts_up_before_generating() -> None:
    fc = FuelCellFleet(1, startup_s=600.0)
    fc.switch(0, False)
    assert fc.status[0] == STATUS_STOPPED
    fc.switch(0, True)
    assert fc.status[0] == STATUS_STARTING
    assert fc.step(300.0, np.array([500.0]))[0] == 0.0
    fc.step(300.0, np.array([500.0]))
    assert fc.status[0] == STATUS_GENERATING
