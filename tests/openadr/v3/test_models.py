"""Pure parts: durations, targeting, and an OpenADR 3 event turned into RA event requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erab.openadr.v3.models import (
    DurationError,
    VenIdentity,
    event_to_requests,
    has_target,
    parse_duration,
    targeted_at,
)

T0 = datetime(2026, 8, 3, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("PT1H", timedelta(hours=1)),
        ("PT30M", timedelta(minutes=30)),
        ("P1DT2H", timedelta(hours=26)),
        ("P2W", timedelta(days=14)),
        ("PT0.5S", timedelta(seconds=0.5)),
        ("-PT15M", -timedelta(minutes=15)),
        ("PT0S", timedelta(0)),
    ],
)
def test_iso_8601_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P1M", "P1Y", "1h", "PT", "P", ""])
def test_durations_without_a_fixed_length_or_malformed_are_refused(text: str) -> None:
    with pytest.raises(DurationError, match=repr(text)):
        parse_duration(text)


@given(hours=st.integers(0, 1000), minutes=st.integers(0, 59), seconds=st.integers(0, 59))
def test_a_duration_written_from_parts_reads_back(hours: int, minutes: int, seconds: int) -> None:
    text = f"PT{hours}H{minutes}M{seconds}S"
    assert parse_duration(text) == timedelta(hours=hours, minutes=minutes, seconds=seconds)


def test_targeting_by_name_resource_and_group_and_none() -> None:
    me = VenIdentity.of(
        "ven-one",
        {"venName": "ven-one", "targets": [{"type": "GROUP", "values": ["kanto"]}]},
        [{"resourceName": "bat-1", "targets": [{"type": "POSTAL_CODE", "values": ["100-0001"]}]}],
    )
    assert targeted_at(None, me) and targeted_at([], me)
    assert targeted_at([{"type": "VEN_NAME", "values": ["x", "ven-one"]}], me)
    assert targeted_at([{"type": "RESOURCE_NAME", "values": ["bat-1"]}], me)
    assert targeted_at([{"type": "GROUP", "values": ["kanto"]}], me)
    assert targeted_at([{"type": "POSTAL_CODE", "values": ["100-0001"]}], me)
    assert not targeted_at([{"type": "GROUP", "values": ["kansai"]}], me)
    assert not targeted_at([{"type": "VEN_NAME", "values": ["kanto"]}], me)


def test_the_search_filter_takes_any_of_the_values() -> None:
    targets = [{"type": "GROUP", "values": ["a", "b"]}]
    assert has_target(targets, "GROUP", ["z", "b"]) and has_target(targets, "GROUP", [])
    assert not has_target(targets, "GROUP", ["z"]) and not has_target(targets, "VEN_NAME", ["a"])


def limit_event(
    *kw: float, units: str | None = "KW", kind: str = "IMPORT_CAPACITY_LIMIT"
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "evt-1",
        "programID": "prg-1",
        "intervalPeriod": {"start": "2026-08-03T05:00:00Z", "duration": "PT30M"},
        "intervals": [
            {"id": i, "payloads": [{"type": kind, "values": [v]}]} for i, v in enumerate(kw)
        ],
    }
    if units is not None:
        event["payloadDescriptors"] = [{"payloadType": kind, "units": units}]
    return event


def test_an_import_limit_below_the_fleet_is_a_cut_to_the_limit() -> None:
    plan = event_to_requests(limit_event(300.0), fleet_kw=500.0)
    (request,) = plan.requests
    assert request.target_kw == pytest.approx(-200.0)
    assert request.start == T0 and request.duration == timedelta(minutes=30)
    assert request.source == "openadr" and request.external_id == "evt-1"
    assert plan.problems == ()


def test_an_import_limit_above_the_fleet_asks_nothing() -> None:
    plan = event_to_requests(limit_event(800.0), fleet_kw=500.0)
    assert plan.requests == () and plan.problems == ()


def test_intervals_asking_the_same_kw_become_one_request_others_their_own() -> None:
    plan = event_to_requests(limit_event(300.0, 300.0, 400.0), fleet_kw=500.0)
    assert [(r.target_kw, r.start, r.duration) for r in plan.requests] == [
        (-200.0, T0, timedelta(hours=1)),
        (-100.0, T0 + timedelta(hours=1), timedelta(minutes=30)),
    ]


def test_units_in_mw_and_w_are_scaled_to_kw() -> None:
    assert event_to_requests(limit_event(0.3, units="MW"), fleet_kw=500.0).requests[
        0
    ].target_kw == pytest.approx(-200.0)
    assert event_to_requests(limit_event(300_000, units="W"), fleet_kw=500.0).requests[
        0
    ].target_kw == pytest.approx(-200.0)
    bad = event_to_requests(limit_event(1.0, units="KWH"), fleet_kw=500.0)
    assert bad.requests == () and "KWH" in bad.problems[0]


def test_an_export_limit_raises_demand_when_the_fleet_exports_more() -> None:
    plan = event_to_requests(limit_event(100.0, kind="EXPORT_CAPACITY_LIMIT"), fleet_kw=-250.0)
    assert plan.requests[0].target_kw == pytest.approx(150.0)


def test_a_dispatch_setpoint_is_counted_from_the_fleet_now() -> None:
    plan = event_to_requests(limit_event(350.0, kind="DISPATCH_SETPOINT"), fleet_kw=500.0)
    assert plan.requests[0].target_kw == pytest.approx(-150.0)


def test_simple_levels_use_the_configured_kw_and_level_0_asks_nothing() -> None:
    event = limit_event(0, 2, kind="SIMPLE", units=None)
    plan = event_to_requests(event, fleet_kw=0.0, simple_levels_kw={1: -50.0, 2: -100.0})
    assert [(r.target_kw, r.start) for r in plan.requests] == [(-100.0, T0 + timedelta(minutes=30))]
    unmapped = event_to_requests(limit_event(3, kind="SIMPLE", units=None), fleet_kw=0.0)
    assert unmapped.requests == () and "SIMPLE level 3" in unmapped.problems[0]


def test_an_interval_with_its_own_period_starts_there() -> None:
    event = limit_event(300.0)
    event["intervals"][0]["intervalPeriod"] = {
        "start": "2026-08-03T09:00:00+09:00",
        "duration": "PT2H",
    }
    (request,) = event_to_requests(event, fleet_kw=500.0).requests
    assert request.start == datetime(
        2026, 8, 3, 0, 0, tzinfo=UTC
    ) and request.duration == timedelta(hours=2)


def test_what_cannot_become_an_ra_event_is_said_per_interval() -> None:
    open_ended = limit_event(300.0)
    open_ended["intervalPeriod"]["duration"] = "PT0S"
    assert "open-ended" in event_to_requests(open_ended, fleet_kw=500.0).problems[0]
    no_start = limit_event(300.0)
    del no_start["intervalPeriod"]
    assert "no start" in event_to_requests(no_start, fleet_kw=500.0).problems[0]
    price = limit_event(12.0, kind="PRICE", units=None)
    plan = event_to_requests(price, fleet_kw=500.0)
    assert plan.requests == () and plan.problems == (
        "interval 0: no payload erab can act on (has PRICE)",
    )
