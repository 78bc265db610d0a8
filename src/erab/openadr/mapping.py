"""What the VEN makes of an OpenADR 2.0b EiEvent, and whether it takes part: pure functions.

An EiEvent (as openleadr parses it: a dict of ``event_descriptor``, ``active_period``,
``event_signals``) becomes one or more RA :class:`~erab.aggregator.EventRequest` s, one per run
of intervals that ask for the same kW; the fleet's flexibility over each window decides optIn or
optOut, and an optOut always says why.  No I/O here: the openleadr shell is :mod:`.ven`.

Signals (OpenADR 2.0b profile specification, §8.1 "Event signals"):

- ``SIMPLE`` / ``level``: levels 0-3; the VEN's configuration gives each level its kW
  (:class:`SignalMapping`); level 0 is "normal operation", nothing to do.
- ``LOAD_DISPATCH`` / ``delta``: change the fleet's demand by this many kW (negative reduces,
  as the grid sees it, the sign erab's events use); ``setpoint``: bring the fleet's demand to
  this many kW (the change is counted from the fleet's power when the event arrives).
- ``LOAD_CONTROL`` / ``x-loadControlSetpoint``: as a ``LOAD_DISPATCH`` setpoint, in kW;
  ``x-loadControlCapacity``: a fraction of the present demand to keep (0.8 = shed 20 %).

A signal's ``itemBase`` may say W, kW or MW (``powerReal`` with an SI scale); kW is assumed when
it says nothing.  The active period's ``tolerance/tolerate/startafter`` is the randomisation
window (each VEN starts at a random offset inside it, §8.3, so that thousands of sites do not
switch at once); ``x-eiRampUp`` is the time before the start during which the VEN may already
ramp, so the RA's event begins that much earlier and reaches its target at the start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from erab.aggregator import EventRequest

SUPPORTED = {
    ("SIMPLE", "level"), ("simple", "level"),
    ("LOAD_DISPATCH", "delta"), ("LOAD_DISPATCH", "setpoint"),
    ("LOAD_CONTROL", "x-loadControlSetpoint"), ("LOAD_CONTROL", "x-loadControlCapacity"),
}  # fmt: skip
_SCALE = {"none": 1.0, "": 1.0, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
FINAL_STATUSES = frozenset({"cancelled", "completed"})
OPT_IN, OPT_OUT = "optIn", "optOut"


class MappingError(ValueError):
    """A configuration of the signal mapping that cannot be used; the message says which."""


@dataclass(frozen=True)
class SignalMapping:
    """How the VEN turns signals into kW: ``simple_levels_kw`` maps SIMPLE levels 1-3 to a
    target kW (negative reduces the fleet's demand)."""

    simple_levels_kw: Mapping[int, float] = field(default_factory=dict)

    @classmethod
    def parse_levels(cls, text: str) -> SignalMapping:
        """``"1=-50,2=-100,3=-200"``: SIMPLE level → kW."""
        levels: dict[int, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            level, sep, kw = part.partition("=")
            try:
                lv, value = int(level), float(kw)
            except ValueError:
                lv, value = -1, math.nan
            if not sep or lv not in (1, 2, 3) or not math.isfinite(value):
                raise MappingError(
                    f"SIMPLE level mapping {part!r}: give LEVEL=KW with LEVEL 1, 2 or 3 and a "
                    "number of kW, e.g. 1=-50,2=-100,3=-200"
                )
            levels[lv] = value
        return cls(levels)


@dataclass(frozen=True)
class VenEvent:
    """What one EiEvent asks of this RA: ``requests`` (empty when nothing is to be done),
    or ``problems`` saying why it cannot be carried out."""

    event_id: str
    modification_number: int
    status: str
    requests: tuple[EventRequest, ...] = ()
    problems: tuple[str, ...] = ()
    start_offset_s: float = 0.0  # the randomised delay chosen inside "startafter"
    ramp_up_s: float = 0.0

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class OptDecision:
    """optIn or optOut, the EiOpt reason (``participating``/``notParticipating``), and the
    human-readable why (sent as the event response's description)."""

    opt: str
    reason: str
    detail: str


def _kw_factor(measurement: Mapping[str, Any] | None) -> float:
    """kW per payload unit from a signal's itemBase (W, kW, MW ...); kW when absent."""
    if not measurement:
        return 1.0
    unit = str(measurement.get("unit") or "W")
    scale = _SCALE.get(str(measurement.get("scale") or "none"))
    if unit != "W" or scale is None:
        raise ValueError(f"unit {measurement.get('scale') or ''}{unit} is not a power in W/kW/MW")
    return scale / 1e3


def _seconds(value: Any) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else 0.0


def product_of_market_context(context: object, default: str) -> str:
    """The balancing-market product an event's market context names by its last path segment
    (``oadr://erab/ac/tertiary-1`` → tertiary-1, as erab's AC sends it), else ``default``:
    the product decides how the event is verified and settled (erab.aggregator.products)."""
    if not isinstance(context, str) or not context:
        return default
    last = context.rstrip("/").rsplit("/", 1)[-1]
    return last if last in _product_names() else default


def _product_names() -> frozenset[str]:
    global _PRODUCTS
    if _PRODUCTS is None:
        from erab.aggregator.products import ProductError, load_products

        try:
            _PRODUCTS = frozenset(load_products())
        except ProductError:  # a broken products file leaves every event "openadr"
            _PRODUCTS = frozenset()
    return _PRODUCTS


_PRODUCTS: frozenset[str] | None = None


def event_to_requests(
    event: Mapping[str, Any],
    mapping: SignalMapping,
    *,
    fleet_kw: float,
    start_fraction: float = 0.0,
    product: str = "openadr",
    ven_id: str = "ven",
) -> VenEvent:
    """The RA event requests one EiEvent asks for.

    ``fleet_kw`` is the fleet's power now (for setpoints and capacities); ``start_fraction`` in
    [0, 1) picks the randomised start inside the event's ``startafter`` tolerance (the shell
    draws it at random).  Never raises on a bad event: its problems are in the result.
    """
    try:
        return _map_event(event, mapping, fleet_kw, start_fraction, product, ven_id)
    except (AttributeError, TypeError, KeyError, ValueError, OverflowError) as exc:
        # a shape openleadr let through but the 2.0b schema would not have: refuse it whole
        descriptor = event.get("event_descriptor") if isinstance(event, Mapping) else None
        event_id = descriptor.get("event_id") if isinstance(descriptor, Mapping) else None
        return VenEvent(str(event_id or "?"), 0, "far", (),
                        (f"malformed event ({type(exc).__name__}: {str(exc)[:120]})",))


def _map_event(event: Mapping[str, Any], mapping: SignalMapping, fleet_kw: float,
               start_fraction: float, product: str, ven_id: str) -> VenEvent:  # fmt: skip
    descriptor = event.get("event_descriptor") or {}
    event_id = str(descriptor.get("event_id") or "?")
    try:
        modification = int(descriptor.get("modification_number") or 0)
    except (TypeError, ValueError):
        modification = 0
    status = str(descriptor.get("event_status") or "far")
    product = product_of_market_context(descriptor.get("market_context"), product)
    base = VenEvent(event_id, modification, status)
    if base.final:
        return base
    period = event.get("active_period") or {}
    start = period.get("dtstart")
    if not isinstance(start, datetime) or start.tzinfo is None:
        return _refuse(base, "the event has no active period start (dtstart with a zone)")
    tolerance = (period.get("tolerance") or {}).get("tolerate") or {}
    window_s = _seconds(tolerance.get("startafter"))
    offset_s = window_s * min(max(start_fraction, 0.0), 0.999999)
    ramp_s = _seconds(period.get("ramp_up") or period.get("ramp_up_period"))
    signals = event.get("event_signals") or []
    if isinstance(signals, Mapping):  # openleadr nests them once when there is one
        signals = signals.get("event_signals") or []
    # one control signal drives the RA; price and bid signals are for information
    control = [s for s in signals if (s.get("signal_name"), s.get("signal_type")) in SUPPORTED]
    if not control:
        seen = ", ".join(f"{s.get('signal_name')}/{s.get('signal_type')}" for s in signals)
        return _refuse(base, f"no signal this VEN carries out (got {seen or 'none'}; supported: "
                             "SIMPLE/level, LOAD_DISPATCH/delta|setpoint, LOAD_CONTROL/"
                             "x-loadControlSetpoint|x-loadControlCapacity)")  # fmt: skip
    signal = control[0]
    name, kind = str(signal["signal_name"]).upper(), str(signal["signal_type"])
    try:
        factor = _kw_factor(signal.get("measurement"))
    except ValueError as exc:
        return _refuse(base, f"signal {name}/{kind}: {exc}")
    # intervals: each has a duration; a dtstart of its own, or it follows the previous one
    pieces: list[tuple[datetime, timedelta, float]] = []
    at = start
    for interval in signal.get("intervals") or []:
        duration = interval.get("duration")
        if not isinstance(duration, timedelta) or duration <= timedelta(0):
            return _refuse(base, f"signal {name}: an interval has no positive duration")
        own = interval.get("dtstart")
        at = own if isinstance(own, datetime) and own.tzinfo is not None else at
        try:
            value = float(interval.get("signal_payload"))
        except (TypeError, ValueError):
            return _refuse(base, f"signal {name}: payload {interval.get('signal_payload')!r} "
                                 "is not a number")  # fmt: skip
        if not math.isfinite(value):
            return _refuse(base, f"signal {name}: payload {value} is not finite")
        target = _target_kw(name, kind, value, factor, mapping, fleet_kw)
        if isinstance(target, str):
            return _refuse(base, target)
        pieces.append((at, duration, target))
        at = at + duration
    if not pieces:
        return _refuse(base, f"signal {name} has no intervals")
    # merge consecutive intervals that ask the same kW; drop the ones asking nothing
    runs: list[list[Any]] = []
    for begin, duration, kw in pieces:
        if runs and runs[-1][2] == kw and runs[-1][0] + runs[-1][1] == begin:
            runs[-1][1] += duration
        else:
            runs.append([begin, duration, kw])
    shift = timedelta(seconds=offset_s - ramp_s)
    requests = tuple(
        EventRequest(round(kw, 3), begin + shift, duration, product=product, source="openadr",
                     requested_by=f"openadr:{ven_id}", external_id=event_id)
        for begin, duration, kw in runs if abs(kw) >= 1e-3
    )  # fmt: skip
    return VenEvent(event_id, modification, status, requests, (), offset_s, ramp_s)


def _target_kw(name: str, kind: str, value: float, factor: float, mapping: SignalMapping,
               fleet_kw: float) -> float | str:  # fmt: skip
    """The change in kW one interval asks for, or why it cannot be carried out."""
    if name == "SIMPLE":
        level = int(value)
        if level != value or not 0 <= level <= 3:
            return f"SIMPLE level {value:g} is not one of 0-3"
        if level == 0:
            return 0.0
        if level not in mapping.simple_levels_kw:
            return (f"SIMPLE level {level} has no kW in this VEN's configuration "
                    "(--simple-levels, e.g. 1=-50,2=-100,3=-200)")  # fmt: skip
        return float(mapping.simple_levels_kw[level])
    if kind == "delta":
        return value * factor
    if kind in ("setpoint", "x-loadControlSetpoint"):
        return value * factor - fleet_kw
    # x-loadControlCapacity: the share of today's demand to keep
    if not 0.0 <= value <= 1.0:
        return f"LOAD_CONTROL capacity {value:g} is not a fraction between 0 and 1"
    return (value - 1.0) * fleet_kw


def _refuse(base: VenEvent, problem: str) -> VenEvent:
    return VenEvent(base.event_id, base.modification_number, base.status, (), (problem,))


def decide_opt(event: VenEvent, available_kw: Sequence[float], *,
               min_share: float = 1.0) -> OptDecision:  # fmt: skip
    """optIn when the fleet can give at least ``min_share`` of every request's kW in its
    direction (``available_kw[i]`` is the flexibility over request i's window); otherwise optOut
    naming the window that falls short.  An event with problems is refused with them."""
    if event.problems:
        return OptDecision(OPT_OUT, "notParticipating", "; ".join(event.problems))
    if len(available_kw) != len(event.requests):
        raise ValueError(f"{len(available_kw)} flexibility figures for "
                         f"{len(event.requests)} requests")  # fmt: skip
    for request, available in zip(event.requests, available_kw, strict=True):
        need = abs(request.target_kw) * min_share
        if not available >= need:  # NaN (no telemetry yet) counts as nothing available
            have = 0.0 if available != available else available
            return OptDecision(OPT_OUT, "notParticipating", (
                f"the fleet can give {have:.1f} kW {request.direction} from "
                f"{request.start.isoformat()} for {request.duration}, less than "
                f"{need:.1f} kW ({min_share:.0%} of {abs(request.target_kw):g} kW asked)"))
    if not event.requests:
        return OptDecision(OPT_IN, "participating", "nothing to do (level 0 or 0 kW)")
    total = ", ".join(f"{r.target_kw:+g} kW" for r in event.requests)
    return OptDecision(OPT_IN, "participating", f"carrying out {total}")
