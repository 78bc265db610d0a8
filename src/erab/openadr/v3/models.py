"""OpenADR 3 objects as erab reads them: kinds, targeting, durations, and what an event asks
of the RA.  Pure functions; the objects themselves stay the JSON the spec defines (validated
by :mod:`.schema`), so nothing a client sent is lost on the way through the store.

Targeting (OpenADR 3.0.1 definition, ``targets``: a list of valuesMaps): an object without
targets is for every VEN; otherwise it is for a VEN when any of its entries names it: a
``VEN_NAME`` entry with the VEN's name, a ``RESOURCE_NAME`` entry with one of its resources, or
an entry of any other type (``GROUP``, ``POSTAL_CODE``, …) sharing a value with the entries of
that type in the VEN's own or its resources' targets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from erab.aggregator import EventRequest
from erab.openadr.v3.schema import parse_datetime

JsonObject = dict[str, Any]


class Kind(StrEnum):
    """The object types of the API (schema ``objectTypes``)."""

    PROGRAM = "PROGRAM"
    EVENT = "EVENT"
    REPORT = "REPORT"
    SUBSCRIPTION = "SUBSCRIPTION"
    VEN = "VEN"
    RESOURCE = "RESOURCE"


class Operation(StrEnum):
    """A subscription's ``operations`` and the notification's ``operation`` for each
    (the 3.0.1 definition names the first as READ/CREATE/UPDATE/DELETE and the second as the
    HTTP method)."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"

    @property
    def http_method(self) -> str:
        return {"CREATE": "POST", "UPDATE": "PUT", "DELETE": "DELETE"}[self.value]


@dataclass(frozen=True)
class VenIdentity:
    """What targeting can name of one VEN: its name, its resources' names, and the values of
    every other target type in its own and its resources' targets."""

    ven_name: str
    resource_names: frozenset[str] = frozenset()
    target_values: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def of(
        cls, ven_name: str, ven: JsonObject | None, resources: Iterable[JsonObject]
    ) -> VenIdentity:
        """The identity of ``ven_name`` from its VEN object (None when not yet registered)
        and its resources."""
        values: dict[str, set[str]] = {}
        names: set[str] = set()
        for obj in [ven or {}, *resources]:
            if "resourceName" in obj:
                names.add(str(obj["resourceName"]))
            for entry in obj.get("targets") or ():
                values.setdefault(str(entry["type"]), set()).update(map(str, entry["values"]))
        frozen = {k: frozenset(v) for k, v in values.items()}
        return cls(ven_name, frozenset(names), frozen)


def targeted_at(targets: Sequence[JsonObject] | None, who: VenIdentity) -> bool:
    """Whether an object with ``targets`` is for the VEN ``who`` (rule in the module text)."""
    if not targets:
        return True
    for entry in targets:
        kind, values = str(entry.get("type")), {str(v) for v in entry.get("values", ())}
        if kind == "VEN_NAME" and who.ven_name in values:
            return True
        if kind == "RESOURCE_NAME" and values & who.resource_names:
            return True
        if values & who.target_values.get(kind, frozenset()):
            return True
    return False


def has_target(
    targets: Sequence[JsonObject] | None, target_type: str, values: Sequence[str]
) -> bool:
    """The search filter ``targetType`` + ``targetValues``: an entry of that type holding any
    of the values (the values are alternatives; none given: any entry of that type)."""
    wanted = set(values)
    for entry in targets or ():
        if entry.get("type") != target_type:
            continue
        if not wanted or wanted & {str(v) for v in entry.get("values", ())}:
            return True
    return False


def targets_cover(targets: Sequence[Any] | None, held: Iterable[str]) -> bool:
    """OpenADR 3.1.0 targeting: targets are plain strings matched with AND, so an object is
    for a VEN when every one of its ``targets`` is among the targets ``held`` (those business
    logic assigned to the VEN and its resources); an object without targets is for every VEN.
    The same rule narrows a search (``?targets=a&targets=b``: objects holding both)."""
    return not targets or set(map(str, targets)) <= set(held)


_DURATION = re.compile(
    r"(?P<sign>-?)P(?=\d|T\d)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<days>\d+)(?P<dw>[DW]))?"
    r"(?:T(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)


class DurationError(ValueError):
    """An ISO 8601 duration erab cannot turn into a fixed length; the message says why."""


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration (schema ``duration``) as a timedelta.  Years and months have no
    fixed length, so they are refused rather than guessed."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise DurationError(f"{text!r} is not an ISO 8601 duration such as PT1H or P1DT30M")
    if m["years"] or m["months"]:
        raise DurationError(f"{text!r}: years and months have no fixed length; give days or hours")
    days = int(m["days"] or 0) * (7 if m["dw"] == "W" else 1)
    length = timedelta(
        days=days,
        hours=int(m["hours"] or 0),
        minutes=int(m["minutes"] or 0),
        seconds=float(m["seconds"] or 0),
    )
    return -length if m["sign"] else length


# --- an OpenADR 3 event as RA event requests -------------------------------------------------

LIMIT_TYPES = ("IMPORT_CAPACITY_LIMIT", "EXPORT_CAPACITY_LIMIT", "DISPATCH_SETPOINT")
_UNIT_KW = {"KW": 1.0, "W": 1e-3, "MW": 1e3, "KWH": math.nan}


@dataclass(frozen=True)
class RaEventPlan:
    """What one OpenADR 3 event asks of the RA: ``requests`` (one per run of intervals asking
    the same kW; empty when nothing is to be done), and ``problems`` saying what could not be
    used, each naming the interval and the reason."""

    event_id: str
    requests: tuple[EventRequest, ...]
    problems: tuple[str, ...] = ()


def event_to_requests(
    event: Mapping[str, Any],
    *,
    fleet_kw: float,
    simple_levels_kw: Mapping[int, float] | None = None,
    product: str = "tertiary-1",
    min_change_kw: float = 0.001,
) -> RaEventPlan:
    """Turn an OpenADR 3 ``event`` (its JSON) into RA :class:`EventRequest` s.

    Payloads understood (OpenADR 3 definition, event payload types):

    - ``IMPORT_CAPACITY_LIMIT``: the fleet may import at most this many kW; the request is the
      cut from ``fleet_kw`` (the fleet's demand now) to the limit, nothing when already below.
    - ``EXPORT_CAPACITY_LIMIT``: the fleet may export at most this many kW (a rise of demand
      when it exports more).
    - ``DISPATCH_SETPOINT``: bring the fleet's demand to this many kW.
    - ``SIMPLE``: levels 0-3, each level's kW from ``simple_levels_kw`` (level 0: nothing).

    Units come from the event's ``payloadDescriptors`` (``KW``, ``W``, ``MW``; kW when none
    is given).  An interval's start is its own ``intervalPeriod.start``, else the end of the
    previous interval, else the event's ``intervalPeriod.start``; its duration likewise.
    A duration of ``PT0S`` (open-ended in the definition) cannot become an RA event and is
    reported as a problem.
    """
    event_id = str(event.get("id", ""))
    problems: list[str] = []
    units = {
        str(d.get("payloadType")): str(d.get("units") or "KW").upper()
        for d in event.get("payloadDescriptors") or ()
    }
    default = event.get("intervalPeriod") or {}
    cursor = parse_datetime(str(default["start"])) if "start" in default else None
    runs: list[tuple[float, datetime, timedelta]] = []
    for interval in event.get("intervals") or ():
        where = f"interval {interval.get('id')}"
        # an interval without its own period follows the previous one (User Guide: intervals
        # are consecutive, each of the event's intervalPeriod.duration)
        period = interval.get("intervalPeriod") or {}
        try:
            start = parse_datetime(str(period["start"])) if "start" in period else cursor
            duration = parse_duration(
                str(period.get("duration") or default.get("duration", "PT0S"))
            )
        except DurationError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if start is None:
            problems.append(f"{where}: no start (neither the interval nor the event gives one)")
            continue
        cursor = start + duration
        if duration <= timedelta(0):
            problems.append(f"{where}: duration {duration} is open-ended; give a positive one")
            continue
        change = _interval_change_kw(
            interval, units, fleet_kw, simple_levels_kw or {}, problems, where
        )
        if change is None or abs(change) < min_change_kw:
            continue
        if runs and runs[-1][0] == change and runs[-1][1] + runs[-1][2] == start:
            runs[-1] = (change, runs[-1][1], runs[-1][2] + duration)
        else:
            runs.append((change, start, duration))
    requests = tuple(
        EventRequest(
            target_kw=kw,
            start=start,
            duration=duration,
            product=product,
            source="openadr",
            requested_by=str(event.get("programID", "openadr3")),
            external_id=event_id or None,
        )
        for kw, start, duration in runs
    )
    return RaEventPlan(event_id, requests, tuple(problems))


def _interval_change_kw(
    interval: Mapping[str, Any],
    units: Mapping[str, str],
    fleet_kw: float,
    levels: Mapping[int, float],
    problems: list[str],
    where: str,
) -> float | None:
    for payload in interval.get("payloads") or ():
        kind = str(payload.get("type"))
        values = payload.get("values") or []
        if not values or isinstance(values[0], bool) or not isinstance(values[0], (int, float)):
            continue
        value = float(values[0])
        if kind == "SIMPLE":
            level = int(value)
            if level == 0:
                return 0.0
            if level not in levels:
                problems.append(f"{where}: SIMPLE level {level} has no kW configured")
                return None
            return float(levels[level])
        if kind in LIMIT_TYPES:
            scale = _UNIT_KW.get(units.get(kind, "KW"), math.nan)
            if math.isnan(scale):
                problems.append(f"{where}: {kind} in {units.get(kind)!r}: give KW, W or MW")
                return None
            kw = value * scale
            if kind == "IMPORT_CAPACITY_LIMIT":
                return min(0.0, kw - fleet_kw)
            if kind == "EXPORT_CAPACITY_LIMIT":
                return max(0.0, -kw - fleet_kw)
            return kw - fleet_kw
    kinds = ", ".join(str(p.get("type")) for p in interval.get("payloads") or ()) or "none"
    problems.append(f"{where}: no payload erab can act on (has {kinds})")
    return None
