"""DR events at the RA: validation with clear reasons, the lifecycle table, the audit trail."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest

from erab.aggregator.events import (
    TRANSITIONS,
    EventBook,
    EventError,
    EventRequest,
    EventStage,
    EventTrigger,
    check_request,
)
from erab.clock import JST, SimulatedClock
from erab.security import AuditLog, SqliteAuditStore

NOW = datetime(2026, 8, 3, 10, 0, tzinfo=JST)


def request(kw: float = -500.0, start_h: float = 14.0, hours: float = 3.0) -> EventRequest:
    start = NOW.replace(hour=0) + timedelta(hours=start_h)
    return EventRequest(kw, start, timedelta(hours=hours), requested_by="alice")


def book(tmp_path: Path) -> tuple[EventBook, SimulatedClock, AuditLog]:
    clock = SimulatedClock(NOW, speed=0)
    audit = AuditLog(SqliteAuditStore(tmp_path / "audit.sqlite"), clock)
    return EventBook(clock, audit=audit), clock, audit


def test_an_event_lives_received_planned_dispatched_active_completed(tmp_path: Path) -> None:
    events, clock, audit = book(tmp_path)
    ev = events.create(request())
    assert ev.stage is EventStage.RECEIVED and ev.request.direction == "down"
    events.advance(ev.event_id, EventTrigger.PLAN, "ra")
    events.advance(ev.event_id, EventTrigger.DISPATCH, "ra")
    assert events.due() == []
    clock.set(NOW.replace(hour=14))
    assert [(e.event_id, t) for e, t in events.due()] == [(ev.event_id, EventTrigger.START)]
    events.advance(ev.event_id, EventTrigger.START, "ra")
    events.advance(ev.event_id, EventTrigger.REDISPATCH, "ra")
    clock.set(NOW.replace(hour=17))
    assert [t for _, t in events.due()] == [EventTrigger.END]
    events.advance(ev.event_id, EventTrigger.END, "ra")
    assert ev.stage is EventStage.COMPLETED
    assert [s for _, _, s, _ in ev.history] == [
        EventStage.PLANNED, EventStage.DISPATCHED, EventStage.ACTIVE, EventStage.ACTIVE,
        EventStage.COMPLETED]  # fmt: skip
    records = list(audit.store.records())
    assert [r.details["event"] for r in records] == [
        "received", "plan", "dispatch", "start", "redispatch", "end"]
    assert records[0].actor == "alice" and records[0].subject == f"event:{ev.event_id}"
    assert audit.verify().intact


def test_any_other_transition_is_refused_and_names_the_stage(tmp_path: Path) -> None:
    events, _, _ = book(tmp_path)
    ev = events.create(request())
    with pytest.raises(EventError, match="is received: it cannot dispatch"):
        events.advance(ev.event_id, EventTrigger.DISPATCH, "ra")
    events.cancel(ev.event_id, "bob", "test")
    for trigger in EventTrigger:
        with pytest.raises(EventError, match="cancelled"):
            events.advance(ev.event_id, trigger, "ra")
    assert (EventStage.COMPLETED, EventTrigger.CANCEL) not in TRANSITIONS


@pytest.mark.parametrize(
    ("req", "message"),
    [
        (EventRequest(-500, datetime(2026, 8, 3, 14), timedelta(hours=1)), "time zone"),
        (request(kw=0.0), "non-zero"),
        (request(hours=0), "positive"),
        (request(hours=25), "longer than"),
        (request(start_h=1, hours=2), "already over"),
    ],
)
def test_bad_requests_are_refused_with_the_reason(req: EventRequest, message: str) -> None:
    with pytest.raises(EventError, match=message):
        check_request(req, NOW)


def test_overlapping_events_are_refused_until_the_first_is_cancelled(tmp_path: Path) -> None:
    events, _, _ = book(tmp_path)
    first = events.create(request(start_h=14, hours=3))
    with pytest.raises(EventError, match=f"overlaps event {first.event_id}"):
        events.create(request(start_h=16, hours=2))
    events.create(request(start_h=17, hours=1))  # touching is not overlapping
    events.cancel(first.event_id, "bob")
    events.create(request(start_h=15, hours=1))


def test_a_target_beyond_the_flexibility_is_accepted_with_a_warning(tmp_path: Path) -> None:
    events, _, _ = book(tmp_path)
    ev = events.create(request(kw=-900), flexibility_kw=600)
    assert ev.warnings and "more than the fleet's flexibility 600 kW" in ev.warnings[0]
    late = check_request(request(start_h=9, hours=3), NOW)
    assert late and "starts in the past" in late[0]


def test_slots_are_the_30_minute_settlement_slots_touched() -> None:
    req = EventRequest(-100, NOW.replace(hour=14, minute=10), timedelta(minutes=50))
    assert [s.strftime("%H:%M") for s in req.slots()] == ["14:00", "14:30"]
    assert request().slots()[0].strftime("%H:%M") == "14:00" and len(request().slots()) == 6


def test_unknown_event_names_the_latest(tmp_path: Path) -> None:
    events, _, _ = book(tmp_path)
    ev = events.create(request())
    with pytest.raises(EventError, match=ev.event_id):
        events.get("ev-nope")
