"""Residential PV (0x0279): sun position, clouds, inverter limit, curtailment."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from erab.clock import JST
from erab.devices import PVFleet, Sky
from erab.devices.pv import plane_of_array_w_m2


def _output_over_day(
    day: datetime, cloud: float = 0.0, fleet: PVFleet | None = None
) -> tuple[np.ndarray, np.ndarray]:
    pv = fleet or PVFleet(1, rated_w=4500.0)
    hours = np.arange(0.0, 24.0, 0.25)
    sky = Sky().at(day.timestamp() + hours * 3600.0, np.full(hours.shape, cloud))
    out = []
    for k in range(len(hours)):
        poa = plane_of_array_w_m2(sky, k, pv.tilt_deg, pv.azimuth_deg)
        out.append(float(pv.step(900.0, poa, 25.0)[0]))
    return hours, np.array(out)


def test_pv_gives_nothing_at_night() -> None:
    hours, power = _output_over_day(datetime(2026, 6, 21, tzinfo=JST))
    night = (hours < 4.0) | (hours > 19.5)
    assert np.all(power[night] == 0.0)


def test_pv_peaks_near_solar_noon() -> None:
    # Tokyo (139.77 °E) lies 4.77° east of JST's 135 °E meridian: solar noon ≈ 11:41 JST
    # in mid-June (equation of time about zero).
    hours, power = _output_over_day(datetime(2026, 6, 15, tzinfo=JST))
    peak_hour = hours[int(np.argmax(power))]
    assert 11.0 <= peak_hour <= 12.25
    assert 2500.0 < power.max() <= 4500.0


def test_clouds_reduce_output() -> None:
    day = datetime(2026, 5, 10, tzinfo=JST)
    _, clear = _output_over_day(day, 0.0)
    _, overcast = _output_over_day(day, 1.0)
    assert overcast.sum() < 0.4 * clear.sum()


def test_inverter_limit_and_curtailment_cap_the_output() -> None:
    pv = PVFleet(3, rated_w=6000.0, inverter_limit_w=[6000.0, 4000.0, 6000.0])
    pv.curtail_pct[2] = 50.0  # EPC 0xA0: output control to 50 % of rated
    power = pv.step(60.0, np.full(3, 1000.0), 20.0)
    assert power[0] > 4000.0
    assert power[1] == 4000.0
    assert power[2] == 3000.0


def test_hot_modules_give_less_than_cool_ones() -> None:
    pv = PVFleet(2, rated_w=4000.0, inverter_limit_w=10_000.0)
    power = pv.available_w(np.full(2, 900.0), np.array([5.0, 35.0]))
    assert power[0] > power[1]
