"""Demand-response events at the RA: what was asked, and its life, as one table.

    received ──plan──► planned ──dispatch──► dispatched ──start──► active ──end──► completed
        │                 │                      │                    │
        └──────cancel─────┴────────cancel────────┴───────cancel───────┴──► cancelled
    (planned ──replan──► planned, active ──redispatch──► active: the closed loop's corrections)

An event comes from an operator (``erab ra event create``, the REST API) or from the
aggregation coordinator over OpenADR.  ``target_kw`` is signed like the grid sees it: negative
reduces the fleet's demand (down-DR, 下げDR), positive raises it (up-DR, 上げDR: charge
batteries, run water heaters when PV is high).  Every transition is recorded with its time and
actor, and in the RA's audit log when one is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from erab.clock import Clock
from erab.security import AuditKind, AuditLog

SLOT = timedelta(minutes=30)  # the settlement slot of Japan's metering (route A, 30 min)
MAX_DURATION = timedelta(hours=24)
PAST_TOLERANCE = timedelta(minutes=1)  # "now" as sent is a little in the past on arrival


class EventStage(StrEnum):
    RECEIVED = "received"
    PLANNED = "planned"  # a dispatch plan exists
    DISPATCHED = "dispatched"  # commands are out to the gateways
    ACTIVE = "active"  # inside its window
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class EventTrigger(StrEnum):
    PLAN = "plan"
    REPLAN = "replan"
    DISPATCH = "dispatch"
    START = "start"
    REDISPATCH = "redispatch"
    END = "end"
    CANCEL = "cancel"


_S, _T = EventStage, EventTrigger
TRANSITIONS: dict[tuple[EventStage, EventTrigger], EventStage] = {
    (_S.RECEIVED, _T.PLAN): _S.PLANNED,
    (_S.PLANNED, _T.REPLAN): _S.PLANNED,
    (_S.PLANNED, _T.DISPATCH): _S.DISPATCHED,
    (_S.DISPATCHED, _T.START): _S.ACTIVE,
    (_S.ACTIVE, _T.REDISPATCH): _S.ACTIVE,
    (_S.ACTIVE, _T.END): _S.COMPLETED,
    (_S.RECEIVED, _T.CANCEL): _S.CANCELLED,
    (_S.PLANNED, _T.CANCEL): _S.CANCELLED,
    (_S.DISPATCHED, _T.CANCEL): _S.CANCELLED,
    (_S.ACTIVE, _T.CANCEL): _S.CANCELLED,
}
FINAL = frozenset({EventStage.COMPLETED, EventStage.CANCELLED})


class EventError(ValueError):
    """An event that cannot be accepted, or a transition the table does not have."""


@dataclass(frozen=True)
class EventRequest:
    """What was asked: ``target_kw`` (< 0 down, > 0 up) from ``start`` for ``duration``."""

    target_kw: float
    start: datetime
    duration: timedelta
    product: str = "tertiary-1"
    source: str = "operator"  # operator, api, openadr
    requested_by: str = "operator"
    external_id: str | None = None  # the coordinator's event id (OpenADR eventID)

    @property
    def end(self) -> datetime:
        return self.start + self.duration

    @property
    def direction(self) -> str:
        return "down" if self.target_kw < 0 else "up"

    def slots(self) -> list[datetime]:
        """The 30-minute slot starts the event touches (JST slot boundaries)."""
        first = self.start - timedelta(
            minutes=self.start.minute % 30, seconds=self.start.second,
            microseconds=self.start.microsecond,
        )  # fmt: skip
        out = []
        t = first
        while t < self.end:
            out.append(t)
            t += SLOT
        return out


@dataclass
class DrEvent:
    """An event and its life; ``history`` is (time, trigger, new stage, actor)."""

    event_id: str
    request: EventRequest
    received_at: datetime
    stage: EventStage = EventStage.RECEIVED
    shortfall_kw: float = 0.0  # what the plan could not cover (accepted with a warning)
    warnings: list[str] = field(default_factory=list)
    history: list[tuple[datetime, EventTrigger, EventStage, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "event_id": self.event_id, "stage": self.stage.value, "target_kw": r.target_kw,
            "direction": r.direction, "start": r.start.isoformat(), "end": r.end.isoformat(),
            "product": r.product, "source": r.source, "requested_by": r.requested_by,
            "external_id": r.external_id, "shortfall_kw": self.shortfall_kw,
            "warnings": list(self.warnings), "received_at": self.received_at.isoformat(),
            "history": [{"at": t.isoformat(), "trigger": g.value, "stage": s.value, "actor": a}
                        for t, g, s, a in self.history],
        }  # fmt: skip


def check_request(
    request: EventRequest,
    now: datetime,
    existing: Iterable[DrEvent] = (),
    *,
    flexibility_kw: float | None = None,
) -> list[str]:
    """Refuse what cannot be an event (:class:`EventError` naming the input); return the
    warnings of one that can (a target beyond the fleet's flexibility is accepted: the plan
    will state the shortfall)."""
    if request.start.tzinfo is None:
        raise EventError(f"start {request.start.isoformat()} needs a time zone (e.g. +09:00)")
    if not request.target_kw or request.target_kw != request.target_kw:
        raise EventError(f"target must be a non-zero number of kW, got {request.target_kw}")
    if request.duration <= timedelta(0):
        raise EventError(f"duration must be positive, got {request.duration}")
    if request.duration > MAX_DURATION:
        raise EventError(f"duration {request.duration} is longer than {MAX_DURATION}")
    if request.end <= now:
        raise EventError(
            f"the event window {request.start.isoformat()} – {request.end.isoformat()} is "
            f"already over (now {now.isoformat()})"
        )
    for other in existing:
        if other.stage in FINAL:
            continue
        o = other.request
        if request.start < o.end and o.start < request.end:
            raise EventError(
                f"overlaps event {other.event_id} ({o.start.isoformat()} – {o.end.isoformat()}, "
                f"{o.target_kw:+g} kW); cancel it first or choose another window"
            )
    warnings = []
    if request.start < now - PAST_TOLERANCE:
        warnings.append(f"starts in the past ({request.start.isoformat()}): acting from now")
    if flexibility_kw is not None and abs(request.target_kw) > flexibility_kw:
        warnings.append(
            f"target {abs(request.target_kw):g} kW {request.direction} is more than the fleet's "
            f"flexibility {flexibility_kw:g} kW: the plan will say the shortfall"
        )
    return warnings


class EventBook:
    """The RA's events, in memory, each moved only along :data:`TRANSITIONS`."""

    def __init__(self, clock: Clock, *, audit: AuditLog | None = None) -> None:
        self.clock = clock
        self.audit = audit
        self.events: dict[str, DrEvent] = {}
        self._next = 1

    def create(self, request: EventRequest, *, flexibility_kw: float | None = None) -> DrEvent:
        now = self.clock.now()
        warnings = check_request(request, now, self.events.values(),
                                 flexibility_kw=flexibility_kw)  # fmt: skip
        event_id = f"ev-{now:%Y%m%d}-{self._next:04d}"
        self._next += 1
        event = DrEvent(event_id, request, now, warnings=warnings)
        self.events[event_id] = event
        self._record(event, "received", request.requested_by,
                     {"target_kw": request.target_kw, "start": request.start.isoformat(),
                      "end": request.end.isoformat(), "product": request.product,
                      "source": request.source, "warnings": warnings})  # fmt: skip
        return event

    def get(self, event_id: str) -> DrEvent:
        try:
            return self.events[event_id]
        except KeyError:
            known = ", ".join(sorted(self.events)[-5:]) or "none yet"
            raise EventError(f"no event {event_id!r} (latest: {known})") from None

    def advance(self, event_id: str, trigger: EventTrigger, actor: str,
                **details: Any) -> DrEvent:  # fmt: skip
        event = self.get(event_id)
        nxt = TRANSITIONS.get((event.stage, trigger))
        if nxt is None:
            raise EventError(
                f"event {event_id} is {event.stage.value}: it cannot {trigger.value}"
            )
        event.stage = nxt
        event.history.append((self.clock.now(), trigger, nxt, actor))
        self._record(event, trigger.value, actor, details)
        return event

    def cancel(self, event_id: str, actor: str, reason: str = "") -> DrEvent:
        return self.advance(event_id, EventTrigger.CANCEL, actor, reason=reason)

    def due(self) -> list[tuple[DrEvent, EventTrigger]]:
        """Events whose window has started (dispatched → start) or ended (active → end) by
        now: what the RA's timer should advance."""
        now = self.clock.now()
        out = []
        for event in self.events.values():
            if event.stage is EventStage.DISPATCHED and event.request.start <= now:
                out.append((event, EventTrigger.START))
            elif event.stage is EventStage.ACTIVE and event.request.end <= now:
                out.append((event, EventTrigger.END))
        return out

    def _record(self, event: DrEvent, what: str, actor: str, details: dict[str, Any]) -> None:
        if self.audit is not None:
            self.audit.append(AuditKind.COMMAND, actor, f"event:{event.event_id}",
                              {"event": what, **details})  # fmt: skip
