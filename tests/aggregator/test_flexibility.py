"""Flexibility: what each kind of resource can shed or add, held, per slot and per window."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from erab.aggregator.flexibility import (
    Direction,
    FlexParams,
    Forecast,
    flexibility,
    flexibility_for_window,
    slot_limits,
)
from erab.aggregator.state import FleetState, ResourceKind, TelemetryBatch
from erab.aggregator.state import TelemetryField as F
from erab.aggregator.thermal import ThermalModel

NOW = 1_780_000_000.0
K = ResourceKind


def heard(state: FleetState, readings: list[tuple[int, F, float]]) -> FleetState:
    rows, fields, values = zip(*readings, strict=True)
    state.apply(TelemetryBatch.of(rows, fields, values, [NOW] * len(rows)), NOW)
    return state


def battery(soc_pct: float, power_kw: float, **kw: float) -> FleetState:
    state = FleetState.create(
        [K.BATTERY], rated_kw=5.0, capacity_kwh=10.0, soc_reserve_pct=20.0, soc_max_pct=95.0, **kw
    )
    return heard(state, [(0, F.SOC_PCT, soc_pct), (0, F.POWER_KW, power_kw)])


def test_battery_is_limited_by_power_and_by_usable_energy() -> None:
    # 50 % of 10 kWh, reserve 20 %: 3 kWh usable down, 4.5 kWh up to 95 %
    state = battery(50.0, 0.0)
    one_hour = flexibility(state, FlexParams(hold_s=3600), NOW, slots=1)
    assert one_hour.down_kw[0, 0] == pytest.approx(3.0)  # energy-limited: 3 kWh / 1 h
    assert one_hour.up_kw[0, 0] == pytest.approx(4.5)
    half_hour = flexibility(state, FlexParams(hold_s=1800), NOW, slots=1)
    assert half_hour.down_kw[0, 0] == pytest.approx(5.0)  # power-limited: 6 kW > 5 kW rated
    assert half_hour.up_kw[0, 0] == pytest.approx(5.0)


def test_a_charging_battery_sheds_its_charging_and_the_forecast_follows_its_soc() -> None:
    # charging at 1 kW from 80 %: it reaches 95 % (9.5 kWh) 1.5 h later and then stops
    state = battery(80.0, 1.0)
    flex = flexibility(state, FlexParams(hold_s=3600), NOW, slots=4, slot_s=1800)
    assert flex.down_kw[0].tolist() == pytest.approx([6.0, 6.0, 6.0, 5.0])
    assert flex.up_kw[0].tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0])


def test_shiftable_load_sheds_only_while_its_deadline_can_still_be_met() -> None:
    # an EV charging at 6 kW needs 10 kWh more by NOW + 3 h
    state = FleetState.create(
        [K.EV], rated_kw=6.0, capacity_kwh=40.0, shiftable_kwh=10.0, deadline_s=NOW + 3 * 3600
    )
    heard(state, [(0, F.POWER_KW, 6.0)])
    flex = flexibility(state, FlexParams(hold_s=3600), NOW, slots=3, slot_s=1800)
    # now: a 1 h pause leaves 2 h x 6 kW = 12 kWh >= 10 kWh: the full 6 kW
    # +30 min: 7 kWh left, 1.5 h after the pause: 9 kWh >= 7 kWh, still 6 kW
    # +1 h: 4 kWh left; the baseline would only draw 4 kWh in the hour: 4 kW
    assert flex.down_kw[0].tolist() == pytest.approx([6.0, 6.0, 4.0])
    assert flex.up_kw[0].tolist() == [0.0, 0.0, 0.0]  # already at its rating


def test_an_idle_water_heater_can_bring_its_heating_forward() -> None:
    state = FleetState.create(
        [K.WATER_HEATER], rated_kw=1.5, shiftable_kwh=1.0, deadline_s=NOW + 4 * 3600
    )
    heard(state, [(0, F.POWER_KW, 0.0)])
    window = flexibility_for_window(state, NOW, 3600)
    assert window.up_kw[0] == pytest.approx(1.0)  # 1 kWh over the hour
    assert window.down_kw[0] == 0.0  # nothing to shed: it is off


def aircon(room_c: float, power_kw: float, thermal: ThermalModel) -> tuple[FleetState, FlexParams]:
    state = FleetState.create([K.AIRCON], rated_kw=2.0, comfort_low_c=24.0, comfort_high_c=28.0)
    heard(
        state, [(0, F.ROOM_TEMP_C, room_c), (0, F.POWER_KW, power_kw), (0, F.OUTDOOR_TEMP_C, 33.0)]
    )
    return state, FlexParams(hold_s=3600 * 2 * math.log(2), thermal=thermal)


def test_aircon_sheds_what_keeps_the_room_in_its_band_for_the_hold() -> None:
    # a = 0.5/h, b = 2 K/h per kW, 2 K to the top of the band: held 2 ln 2 h, 1 kW
    state, params = aircon(26.0, 1.2, ThermalModel.of([0.5], [2.0]))
    flex = flexibility(state, params, NOW, slots=1)
    assert flex.down_kw[0, 0] == pytest.approx(1.0)
    # boosting towards 24 °C: 2 K as well, but only 0.8 kW of headroom to its rating
    assert flex.up_kw[0, 0] == pytest.approx(0.8)
    # without a thermal model it offers nothing
    assert flexibility(state, FlexParams(), NOW, slots=1).down_kw[0, 0] == 0.0


def test_aircon_baseline_follows_the_outdoor_forecast() -> None:
    state, params = aircon(26.0, 1.0, ThermalModel.of([0.5], [2.0], [0.0]))
    forecast = Forecast(NOW, 1800.0, outdoor_temp_c=np.array([30.0, 29.0]))
    flex = flexibility(
        state,
        FlexParams(hold_s=params.hold_s, thermal=params.thermal, forecast=forecast),
        NOW,
        slots=2,
    )
    # holding 26 °C needs 0.5 (T_out − 26) / 2 kW: 1.0 kW then 0.75 kW; both below 1 kW held
    assert flex.down_kw[0].tolist() == pytest.approx([1.0, 0.75])


def test_pv_offers_its_generation_up_and_nothing_down() -> None:
    state = FleetState.create([K.PV, K.PV], rated_kw=5.0)
    heard(state, [(0, F.POWER_KW, -3.0), (1, F.POWER_KW, -1.0)])
    forecast = Forecast(NOW, 1800.0, pv_output_kw=np.array([[3.0, 0.5], [1.0, 0.0]]))
    flex = flexibility(state, FlexParams(forecast=forecast), NOW, slots=2)
    assert flex.up_kw.tolist() == [[3.0, 0.5], [1.0, 0.0]]
    assert flex.fleet_up_kw.tolist() == [4.0, 0.5]
    assert flex.fleet_down_kw.tolist() == [0.0, 0.0]


def test_offline_unavailable_and_unheard_resources_offer_nothing() -> None:
    state = FleetState.create(
        [K.BATTERY] * 3, rated_kw=5.0, capacity_kwh=10.0, available=[True, False, True]
    )
    heard(state, [(0, F.SOC_PCT, 60.0), (1, F.SOC_PCT, 60.0)])
    flex = flexibility(state, FlexParams(), NOW, slots=1)
    assert flex.down_kw[:, 0].tolist() == [4.0, 0.0, 0.0]
    state.mark_silent(NOW + 10_000)
    assert flexibility(state, FlexParams(), NOW, slots=1).fleet_down_kw.tolist() == [0.0]


def test_the_default_forecast_is_48_half_hour_slots_from_an_aware_start() -> None:
    state = battery(50.0, 0.0)
    start = datetime.fromtimestamp(NOW, tz=UTC)
    flex = flexibility(state, FlexParams(), start)
    assert flex.down_kw.shape == (1, 48) and flex.slot_start_s[-1] == NOW + 47 * 1800
    with pytest.raises(ValueError, match="no time zone"):
        flexibility(state, FlexParams(), datetime(2026, 8, 1, 14))
    with pytest.raises(ValueError, match="hold_s"):
        FlexParams(hold_s=0)


def test_slot_limits_couple_a_batterys_slots_through_its_energy() -> None:
    state = battery(50.0, 0.0)
    limits = slot_limits(state, Direction.DOWN, NOW, slots=6)
    assert limits.kw[0].tolist() == [5.0] * 6  # the power rating per slot
    assert limits.energy_cap_kwh[0].tolist() == pytest.approx([3.0] * 6)  # 3 kWh in all
    up = slot_limits(state, Direction.UP, NOW, slots=6)
    assert up.energy_cap_kwh[0].tolist() == pytest.approx([4.5] * 6)


def test_slot_limits_give_aircons_a_rebound_share() -> None:
    state, _ = aircon(26.0, 1.2, ThermalModel.of([0.5], [2.0]))
    limits = slot_limits(
        state,
        Direction.DOWN,
        NOW,
        slots=6,
        params=FlexParams(thermal=ThermalModel.of([0.5], [2.0])),
    )
    # held over the 3 h window: 2 / (2 (1 − e^{−1.5}) / 0.5) kW; share (1 − e^{−1.5}) / 1.5
    held = 2.0 / (2.0 * (1 - math.exp(-1.5)) / 0.5)
    assert limits.kw[0].tolist() == pytest.approx([held] * 6)
    assert limits.rebound_share[0] == pytest.approx((1 - math.exp(-1.5)) / 1.5)


# -- a battery that may not export ---------------------------------------------------------
def home(battery_kw: float, aircon_kw: float, pv_kw: float,
         export_allowed: bool = False) -> FleetState:  # fmt: skip
    """One home: a 5 kW / 10 kWh battery at 50 %, an air conditioner and PV (all heard)."""
    state = FleetState.create([K.BATTERY, K.AIRCON, K.PV], site=[0, 0, 0],
                              rated_kw=[5.0, 2.0, 4.0], capacity_kwh=[10.0, 0.0, 0.0],
                              export_allowed=export_allowed)  # fmt: skip
    return heard(state, [(0, F.SOC_PCT, 50.0), (0, F.POWER_KW, battery_kw),
                         (1, F.POWER_KW, aircon_kw), (2, F.POWER_KW, -pv_kw)])  # fmt: skip


def test_a_battery_that_may_not_export_gives_down_only_its_sites_import() -> None:
    # the site's meter: 1.2 kW imported, the battery standing still: it can discharge 1.2
    # kW, not its 5 kW rating
    metered = home(0.0, 1.2, 0.0)
    metered.apply_meter([0], [1.2], [NOW], NOW)
    assert flexibility_for_window(metered, NOW, 1800).down_kw[0] == pytest.approx(1.2)
    # charging at 2 kW (the meter sees 3.2): it sheds its charging and covers the import
    charging = home(2.0, 1.2, 0.0)
    charging.apply_meter([0], [3.2], [NOW], NOW)
    assert flexibility_for_window(charging, NOW, 1800).down_kw[0] == pytest.approx(3.2)
    # no meter, but PV above the known loads (1.2 kW against 3 kW): only its charging
    assert flexibility_for_window(home(1.5, 1.2, 3.0), NOW, 1800).down_kw[0] == pytest.approx(1.5)
    # no meter and the known loads above PV: the base load is unknown, nothing to cap by
    assert flexibility_for_window(home(0.0, 1.2, 0.0), NOW, 1800).down_kw[0] == pytest.approx(5.0)
    # where export is allowed, the rating and the energy hold again
    allowed = home(1.5, 1.2, 3.0, export_allowed=True)
    assert flexibility_for_window(allowed, NOW, 1800).down_kw[0] == pytest.approx(6.5)


def test_the_sites_meter_counts_its_whole_import_and_batteries_share_it_by_rating() -> None:
    from erab.aggregator.flexibility import site_import_kw

    state = FleetState.create([K.BATTERY, K.BATTERY, K.AIRCON], site=[0, 0, 0],
                              rated_kw=[3.0, 1.0, 2.0], capacity_kwh=[10.0, 10.0, 0.0])
    heard(state, [(0, F.SOC_PCT, 50.0), (1, F.SOC_PCT, 50.0), (0, F.POWER_KW, -0.5),
                  (1, F.POWER_KW, 0.0), (2, F.POWER_KW, 0.3)])  # fmt: skip
    # without a meter the resources' 0.3 kW says only "at least 0.3": unknown
    assert np.isnan(site_import_kw(state)[0])
    # the meter sees 1.5 kW (a base load no resource reports): 2 kW without the batteries
    assert state.apply_meter([0], [1.5], [NOW], NOW) == 1
    assert site_import_kw(state).tolist() == pytest.approx([2.0])
    down = flexibility_for_window(state, NOW, 1800).down_kw
    assert down[:2].tolist() == pytest.approx([-0.5 + 0.75 * 2.0, 0.25 * 2.0])
    # an older reading does not replace a newer; a silent meter is forgotten
    assert state.apply_meter([0], [9.0], [NOW - 60], NOW) == 0
    state.mark_silent(NOW + 301)
    assert np.isnan(state.site_meter_kw[0])


def test_a_site_whose_import_nobody_sees_keeps_the_battery_rating() -> None:
    # a lone battery (no meter, no other resource heard): nothing to cap it by
    assert flexibility_for_window(battery(50.0, 0.0), NOW, 1800).down_kw[0] == pytest.approx(5.0)
