"""The VEN's decisions as pure functions: an EiEvent to RA event requests, flexibility to an
opt, each with its reason (OpenADR 2.0b profile §8: signals, randomisation, ramp-up)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.openadr.mapping import (
    MappingError,
    SignalMapping,
    VenEvent,
    decide_opt,
    event_to_requests,
)

T0 = datetime(2026, 8, 3, 5, 0, tzinfo=UTC)
KW = {"name": "powerReal", "unit": "W", "scale": "k", "description": "RealPower"}


def event(name: str = "LOAD_DISPATCH", kind: str = "delta", payloads: tuple[float, ...] = (-50,),
          *, status: str = "far", measurement: dict[str, Any] | None = KW,
          period: dict[str, Any] | None = None,
          with_dtstart: bool = True) -> dict[str, Any]:  # fmt: skip
    intervals = []
    for i, value in enumerate(payloads):
        interval: dict[str, Any] = {"duration": timedelta(minutes=30), "signal_payload": value,
                                    "uid": i}  # fmt: skip
        if with_dtstart:
            interval["dtstart"] = T0 + i * timedelta(minutes=30)
        intervals.append(interval)
    signal: dict[str, Any] = {"signal_name": name, "signal_type": kind, "intervals": intervals}
    if measurement is not None:
        signal["measurement"] = measurement
    return {
        "event_descriptor": {"event_id": "e1", "modification_number": 2, "event_status": status},
        "active_period": {"dtstart": T0, "duration": len(payloads) * timedelta(minutes=30),
                          **(period or {})},
        "event_signals": [signal], "response_required": "always",
    }  # fmt: skip


def test_load_dispatch_delta_in_kw_becomes_one_ra_event_with_the_vtn_event_id() -> None:
    mapped = event_to_requests(event(), SignalMapping(), fleet_kw=300.0, ven_id="ra-1")
    [request] = mapped.requests
    assert (request.target_kw, request.start, request.duration) == (-50, T0,
                                                                      timedelta(minutes=30))
    assert (request.source, request.external_id, request.requested_by) == (
        "openadr", "e1", "openadr:ra-1")
    assert mapped.modification_number == 2 and not mapped.problems


@pytest.mark.parametrize(("context", "product"), [
    ("oadr://erab/ac/tertiary-1", "tertiary-1"), ("oadr://erab/ac/primary/", "primary"),
    ("oadr://erab/ac", "openadr"), ("http://other/tertiary-9", "openadr"), (None, "openadr"),
])  # fmt: skip
def test_the_market_context_names_the_product(context: str | None, product: str) -> None:
    e = event()
    e["event_descriptor"]["market_context"] = context
    [request] = event_to_requests(e, SignalMapping(), fleet_kw=300.0).requests
    assert request.product == product


@pytest.mark.parametrize(("scale", "factor"), [("none", 0.001), ("k", 1.0), ("M", 1000.0)])
def test_the_signal_unit_is_converted_to_kw(scale: str, factor: float) -> None:
    mapped = event_to_requests(event(payloads=(-2,), measurement={**KW, "scale": scale}),
                               SignalMapping(), fleet_kw=0.0)  # fmt: skip
    assert mapped.requests[0].target_kw == pytest.approx(-2 * factor)


def test_a_signal_that_is_not_power_is_refused_naming_its_unit() -> None:
    mapped = event_to_requests(event(measurement={**KW, "unit": "Wh"}), SignalMapping(),
                               fleet_kw=0.0)  # fmt: skip
    assert mapped.requests == () and "kWh is not a power" in mapped.problems[0]


def test_consecutive_intervals_asking_the_same_kw_merge_and_level_zero_asks_nothing() -> None:
    mapped = event_to_requests(event(payloads=(-50, -50, -80, 0)), SignalMapping(),
                               fleet_kw=0.0)  # fmt: skip
    assert [(r.target_kw, r.start, r.duration) for r in mapped.requests] == [
        (-50, T0, timedelta(hours=1)), (-80, T0 + timedelta(hours=1), timedelta(minutes=30))]


def test_intervals_without_their_own_start_follow_the_active_period() -> None:
    mapped = event_to_requests(event(payloads=(-10, -20), with_dtstart=False), SignalMapping(),
                               fleet_kw=0.0)  # fmt: skip
    assert [r.start for r in mapped.requests] == [T0, T0 + timedelta(minutes=30)]


def test_simple_levels_take_their_kw_from_the_configuration() -> None:
    mapping = SignalMapping.parse_levels("1=-40, 2=-90,3=-200")
    mapped = event_to_requests(event("SIMPLE", "level", (1, 2, 0), measurement=None), mapping,
                               fleet_kw=0.0)  # fmt: skip
    assert [r.target_kw for r in mapped.requests] == [-40, -90]


def test_a_simple_level_without_configuration_is_refused_saying_how_to_configure_it() -> None:
    mapped = event_to_requests(event("SIMPLE", "level", (3,), measurement=None),
                               SignalMapping.parse_levels("1=-40"), fleet_kw=0.0)  # fmt: skip
    assert mapped.requests == () and "--simple-levels" in mapped.problems[0]


@pytest.mark.parametrize("text", ["1", "4=-10", "1=abc", "x=1", "1=nan"])
def test_a_bad_level_mapping_names_the_part(text: str) -> None:
    with pytest.raises(MappingError, match="LEVEL=KW"):
        SignalMapping.parse_levels(text)


def test_a_setpoint_is_counted_from_the_fleets_power_now() -> None:
    mapped = event_to_requests(event(kind="setpoint", payloads=(250,)), SignalMapping(),
                               fleet_kw=300.0)  # fmt: skip
    assert mapped.requests[0].target_kw == pytest.approx(-50)
    control = event_to_requests(event("LOAD_CONTROL", "x-loadControlCapacity", (0.8,),
                                      measurement=None), SignalMapping(), fleet_kw=300.0)
    assert control.requests[0].target_kw == pytest.approx(-60)


def test_randomisation_and_ramp_up_move_the_ra_events_start() -> None:
    period = {"tolerance": {"tolerate": {"startafter": timedelta(minutes=10)}},
              "ramp_up": timedelta(minutes=4)}  # fmt: skip
    mapped = event_to_requests(event(period=period), SignalMapping(), fleet_kw=0.0,
                               start_fraction=0.5)  # fmt: skip
    # §8.3: a random start inside "startafter" (half of 10 min), ramping 4 min before it
    assert mapped.requests[0].start == T0 + timedelta(minutes=5) - timedelta(minutes=4)
    assert (mapped.start_offset_s, mapped.ramp_up_s) == (300.0, 240.0)


def test_cancelled_and_completed_events_ask_for_nothing() -> None:
    for status in ("cancelled", "completed"):
        mapped = event_to_requests(event(status=status), SignalMapping(), fleet_kw=0.0)
        assert mapped.final and mapped.requests == () and not mapped.problems


def test_price_signals_alone_are_refused_listing_what_is_supported() -> None:
    mapped = event_to_requests(event("ELECTRICITY_PRICE", "price", (30,), measurement=None),
                               SignalMapping(), fleet_kw=0.0)  # fmt: skip
    assert "ELECTRICITY_PRICE/price" in mapped.problems[0]
    assert "LOAD_DISPATCH/delta" in mapped.problems[0]


def test_the_fleet_opts_in_when_it_can_give_what_is_asked() -> None:
    mapped = event_to_requests(event(payloads=(-50, -80)), SignalMapping(), fleet_kw=0.0)
    decision = decide_opt(mapped, [60.0, 90.0])
    assert (decision.opt, decision.reason) == ("optIn", "participating")
    assert "-50 kW" in decision.detail and "-80 kW" in decision.detail


def test_the_fleet_opts_out_saying_which_window_falls_short() -> None:
    mapped = event_to_requests(event(payloads=(-50, -80)), SignalMapping(), fleet_kw=0.0)
    decision = decide_opt(mapped, [60.0, 30.0])
    assert (decision.opt, decision.reason) == ("optOut", "notParticipating")
    assert "30.0 kW down" in decision.detail and "80.0 kW" in decision.detail
    # a lower share is enough when configured so
    assert decide_opt(mapped, [60.0, 41.0], min_share=0.5).opt == "optIn"


def test_no_telemetry_counts_as_nothing_available() -> None:
    mapped = event_to_requests(event(), SignalMapping(), fleet_kw=0.0)
    decision = decide_opt(mapped, [math.nan])
    assert decision.opt == "optOut" and "0.0 kW down" in decision.detail


def test_an_event_with_problems_is_refused_with_them() -> None:
    bad = VenEvent("e", 0, "far", (), ("no active period start",))
    assert decide_opt(bad, []).detail == "no active period start"


values = st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8),
                   st.datetimes(timezones=st.just(UTC)), st.timedeltas())  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.dictionaries(st.sampled_from([
    "event_descriptor", "active_period", "event_signals", "intervals", "signal_name",
    "signal_type", "signal_payload", "duration", "dtstart", "measurement", "unit", "scale",
    "event_status", "tolerance", "tolerate", "startafter", "ramp_up"]), values, max_size=6),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.sampled_from(["event_descriptor",
                                               "active_period", "event_signals", "intervals",
                                               "measurement", "tolerance", "tolerate"]),
                                               children, max_size=4)),
    max_leaves=20), st.floats(0, 1))  # fmt: skip
def test_any_event_shape_gives_requests_or_problems_never_an_exception(
    shape: Any, fraction: float
) -> None:
    try:
        mapped = event_to_requests(shape if isinstance(shape, dict) else {}, SignalMapping(),
                                   fleet_kw=100.0, start_fraction=fraction)  # fmt: skip
    except (AttributeError, TypeError) as exc:
        # a dict where a list is expected, etc.: still a refusal, never deep inside
        pytest.fail(f"raised {exc!r}")
    assert not (mapped.requests and mapped.problems)
    for request in mapped.requests:  # what does come out is a valid RA request
        assert request.start.tzinfo is not None and request.duration > timedelta(0)
        assert math.isfinite(request.target_kw) and request.target_kw != 0
