"""The safety envelope, rule by rule (docs/gateway.md lists them)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from erab.gateway.envelope import (
    AirconOffset,
    AirconState,
    BatteryLimits,
    BatteryPower,
    BatteryState,
    Cancel,
    ComfortBand,
    CommandInvalid,
    Decision,
    PvLimits,
    Window,
    decide_aircon,
    decide_battery,
    decide_pv,
    decide_window,
    parse_command,
    start_delay_s,
)

T0 = datetime(2026, 8, 1, 13, 0, tzinfo=UTC)
LIMITS = BatteryLimits(rated_power_w=3000.0, soc_reserve_pct=20.0, soc_max_pct=95.0)
HALF = BatteryState(soc_pct=50.0, power_w=0.0)


def test_a_discharge_within_rating_and_above_reserve_is_applied() -> None:
    assert decide_battery(-2000.0, HALF, LIMITS) == Decision("applied", -2000.0)


def test_a_discharge_above_rated_power_is_clipped_to_the_rating() -> None:
    decision = decide_battery(-3500.0, HALF, LIMITS)
    assert (decision.outcome, decision.value) == ("clipped", -3000.0)
    assert decision.reason == "above rated power 3000 W"


def test_discharging_at_the_reserve_is_refused() -> None:
    decision = decide_battery(-1000.0, BatteryState(20.0, 0.0), LIMITS)
    assert decision.outcome == "refused"
    assert decision.reason == "battery at reserve: soc 20% at or below 20%"
    assert decide_battery(1000.0, BatteryState(20.0, 0.0), LIMITS).outcome == "applied"


def test_charging_a_full_battery_is_refused_but_discharging_it_is_not() -> None:
    full = BatteryState(96.0, 0.0)
    assert decide_battery(1000.0, full, LIMITS).reason == (
        "battery full: soc 96% at or above max 95%"
    )
    assert decide_battery(-1000.0, full, LIMITS).outcome == "applied"


def test_the_ramp_limits_the_change_from_the_present_power() -> None:
    ramped = BatteryLimits(3000.0, max_step_w=1000.0)
    decision = decide_battery(-2500.0, BatteryState(50.0, -500.0), ramped)
    assert (decision.outcome, decision.value) == ("clipped", -1500.0)
    assert decision.reason == "ramp limit 1000 W per step"


def test_cooling_set_point_is_raised_but_never_above_28() -> None:
    band = ComfortBand()
    assert decide_aircon(2.0, AirconState("cooling", 25.0), band) == Decision("applied", 27.0)
    clipped = decide_aircon(3.0, AirconState("cooling", 27.0), band)
    assert (clipped.outcome, clipped.value) == ("clipped", 28.0)
    assert clipped.reason == "cooling never above 28 °C"
    at_limit = decide_aircon(1.0, AirconState("cooling", 28.0), band)
    assert at_limit.outcome == "refused"


def test_heating_set_point_never_below_the_band_and_offsets_are_bounded() -> None:
    band = ComfortBand(heating_min_c=18.0, max_offset_c=3.0)
    decision = decide_aircon(-5.0, AirconState("heating", 22.0), band)
    assert (decision.outcome, decision.value) == ("clipped", 19.0)
    assert decision.reason == "offset beyond 3 °C"
    low = decide_aircon(-3.0, AirconState("heating", 19.0), band)
    assert (low.outcome, low.value) == ("clipped", 18.0)


def test_an_aircon_that_is_off_or_in_fan_mode_is_not_touched() -> None:
    assert decide_aircon(1.0, AirconState("fan", 26.0), ComfortBand()).outcome == "refused"


def test_pv_limit_within_range_applies_and_below_the_site_minimum_clips() -> None:
    assert decide_pv(50.0, PvLimits()) == Decision("applied", 50.0)
    assert decide_pv(10.0, PvLimits(min_limit_pct=30.0)).value == 30.0
    assert decide_pv(120.0, PvLimits()).outcome == "refused"


def test_a_window_already_over_is_refused() -> None:
    window = Window(T0, T0 + timedelta(minutes=30))
    assert decide_window(window, T0 + timedelta(minutes=10)) is None
    refused = decide_window(window, T0 + timedelta(minutes=30))
    assert refused is not None and refused.outcome == "refused"


def test_the_start_delay_is_stable_per_gateway_spread_across_gateways_and_in_bounds() -> None:
    window = Window(T0, T0 + timedelta(minutes=30), max_delay_s=300.0)
    delays = [start_delay_s(f"gw-{n:04d}", 42, window, T0) for n in range(1000)]
    assert all(0.0 <= d < 300.0 for d in delays)
    assert start_delay_s("gw-0007", 42, window, T0) == delays[7]
    # spread out: each of ten 30-second bins gets a fair share of 1000 sites
    bins = [sum(1 for d in delays if k * 30 <= d < (k + 1) * 30) for k in range(10)]
    assert min(bins) > 60
    # before the window opens, the delay counts from its start
    early = start_delay_s("gw-0007", 42, window, T0 - timedelta(seconds=100))
    assert early == pytest.approx(delays[7] + 100.0)


def test_parse_reads_each_command_and_refuses_nonsense_with_a_reason() -> None:
    times = {"start": "2026-08-01T13:00:00Z", "end": "2026-08-01T13:30:00Z"}
    battery = parse_command({"type": "battery_power", "device_id": "b", "power_w": -2000, **times})
    assert isinstance(battery, BatteryPower) and battery.power_w == -2000.0
    aircon = parse_command({"type": "aircon_offset", "device_id": "a", "offset_c": 2, **times})
    assert isinstance(aircon, AirconOffset)
    assert parse_command({"type": "cancel", "device_id": "b"}) == Cancel("b")
    with pytest.raises(CommandInvalid, match="unknown command type"):
        parse_command({"type": "explode", "device_id": "b"})
    with pytest.raises(CommandInvalid, match="power_w must be a number"):
        parse_command({"type": "battery_power", "device_id": "b", "power_w": "lots", **times})
    with pytest.raises(CommandInvalid, match="before it starts"):
        parse_command(
            {
                "type": "pv_limit",
                "device_id": "p",
                "limit_pct": 5,
                "start": times["end"],
                "end": times["start"],
            }
        )


# --- the kinds beyond battery, aircon offset and PV ---------------------------------------------


def test_the_new_kinds_parse_and_a_bad_heating_flag_is_named() -> None:
    from erab.gateway.envelope import AirconPowerLimit, EvPower, WaterHeaterShift

    window = {"start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}
    ev = parse_command({"type": "ev_power", "device_id": "ev-1", "power_w": 2000, **window})
    assert isinstance(ev, EvPower) and ev.power_w == 2000.0
    heater = parse_command({"type": "water_heater_shift", "device_id": "wh", "heating": False,
                            **window})  # fmt: skip
    assert isinstance(heater, WaterHeaterShift) and heater.heating is False
    limit = parse_command({"type": "aircon_power_limit", "device_id": "ac", "limit_w": 600,
                           **window})  # fmt: skip
    assert isinstance(limit, AirconPowerLimit) and limit.limit_w == 600.0
    with pytest.raises(CommandInvalid, match="heating must be true"):
        parse_command({"type": "water_heater_shift", "device_id": "wh", "heating": "on",
                       **window})  # fmt: skip


def test_ev_rules_connection_site_cap_reserve_and_minimum() -> None:
    from erab.gateway.envelope import EvLimits, EvState, decide_ev

    car = EvState(connected=True, soc_pct=60.0, power_w=0.0, max_charge_w=6000.0,
                  max_discharge_w=5000.0, min_power_w=500.0)  # fmt: skip
    assert decide_ev(-5500.0, car, EvLimits()) == Decision(
        "clipped", -5000.0, "above rated power 5000 W")
    assert decide_ev(4000.0, car, EvLimits(rated_power_w=3000.0)).value == 3000.0
    assert decide_ev(200.0, car, EvLimits()).value == 500.0
    assert decide_ev(0.0, car, EvLimits()) == Decision("applied", 0.0)
    low = EvState(True, 29.0, 0.0, 6000.0, 6000.0)
    assert decide_ev(-1000.0, low, EvLimits(soc_reserve_pct=30.0)).outcome == "refused"
    away = EvState(False, 60.0, 0.0, 6000.0, 6000.0)
    assert decide_ev(1000.0, away, EvLimits()).reason == "no car connected to the charger"


def test_water_heater_and_aircon_power_rules() -> None:
    from erab.gateway.envelope import (
        AirconLimits,
        WaterHeaterLimits,
        decide_aircon_power,
        decide_water_heater,
    )

    limits = WaterHeaterLimits(min_hot_water_l=100.0)
    assert decide_water_heater(True, 10.0, limits) == Decision("applied", 1.0)
    assert decide_water_heater(False, 150.0, limits) == Decision("applied", 0.0)
    assert decide_water_heater(False, 90.0, limits).outcome == "refused"
    assert decide_aircon_power(800.0, AirconLimits()) == Decision("applied", 800.0)
    assert decide_aircon_power(100.0, AirconLimits(min_power_w=200.0)).value == 200.0
    assert decide_aircon_power(0.0, AirconLimits()).outcome == "refused"
