"""The RA's OpenADR 2.0b VEN (``erab ra serve --vtn URL``), on openleadr's client.

openleadr registers, polls at the interval the VTN asks for, and schedules the reports the VTN
requests; this shell gives it erab's decisions:

- each EiEvent becomes RA events (:func:`~erab.openadr.mapping.event_to_requests`), opted in or
  out from the fleet's flexibility (:func:`~erab.openadr.mapping.decide_opt`); an optOut names
  why in the event response's ``responseDescription`` (openleadr always sends "OK" there);
- a modification cancels the RA events of the previous version and carries out the new one; a
  cancellation cancels them;
- TELEMETRY_USAGE reports carry the fleet's kW (``fleet_kw``) and its availability, up and down
  (``up_kw``, ``down_kw``: report types upRegulationCapacityAvailable and
  downRegulationCapacityAvailable), at the granularity the VTN asked for;
- TLS comes from erab's PKI (a context held to TLS 1.2), and every response from the VTN passes
  :func:`~erab.openadr.xmlguard.inspect_xml` before openleadr parses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from erab.aggregator import EventError, EventRequest
from erab.openadr.mapping import OPT_IN, OPT_OUT, OptDecision, SignalMapping, decide_opt
from erab.openadr.mapping import event_to_requests as map_event
from erab.openadr.security import AuditHook
from erab.openadr.xmlguard import Refusal, XmlLimits, XmlRefused, inspect_xml

if TYPE_CHECKING:
    from erab.aggregator.service import RaService

log = logging.getLogger("erab.openadr.ven")


class _DropCancelledJobs(logging.Filter):
    """openleadr's polls run as apscheduler jobs; stopping the VEN cancels the one in flight,
    and apscheduler would log that cancellation as a failed job with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, asyncio.CancelledError)


_SCHEDULER_LOG = logging.getLogger("apscheduler.executors.default")
if not any(isinstance(f, _DropCancelledJobs) for f in _SCHEDULER_LOG.filters):
    _SCHEDULER_LOG.addFilter(_DropCancelledJobs())
R_IDS = ("fleet_kw", "up_kw", "down_kw")


class VenBackend(Protocol):
    """What the VEN needs from the RA."""

    def fleet_kw(self) -> float: ...

    def flexibility_kw(self, direction: str, start: datetime | None,
                       duration: timedelta) -> float: ...  # fmt: skip

    async def create_event(self, request: EventRequest) -> str: ...

    async def cancel_event(self, event_id: str) -> None: ...


class RaBackend:
    """:class:`VenBackend` over a running :class:`~erab.aggregator.service.RaService`."""

    def __init__(self, ra: RaService) -> None:
        self.ra = ra

    def fleet_kw(self) -> float:
        return self.ra.fleet_kw()

    def flexibility_kw(self, direction: str, start: datetime | None,
                       duration: timedelta) -> float:  # fmt: skip
        return self.ra.flexibility_kw(direction, start, duration)

    async def create_event(self, request: EventRequest) -> str:
        if self.ra.fanout is None:
            raise EventError("the RA is not connected to its broker yet")
        return (await self.ra.create_event(request)).event_id

    async def cancel_event(self, event_id: str) -> None:
        await self.ra.cancel_event(event_id, "openadr")


@dataclass(frozen=True)
class VenConfig:
    """Where the VTN is and who this VEN is."""

    vtn_url: str
    ven_name: str
    cert: str | None = None  # the VEN's certificate and key (TLS client and XML signatures)
    key: str | None = None
    ca_file: str | None = None  # the VTN's CA
    ssl_context: ssl.SSLContext | None = None  # erab's context; else openleadr builds one
    vtn_fingerprint: str | None = None  # check the VTN's XML signatures against this
    sign: bool = True  # sign messages when a certificate and key are given
    mapping: SignalMapping = field(default_factory=SignalMapping)
    min_share: float = 1.0  # opt in when the fleet can give this share of what is asked
    retry_s: float = 5.0  # wait between registration attempts
    limits: XmlLimits = field(default_factory=XmlLimits)


@dataclass
class Tracked:
    """One VTN event as this VEN carries it out."""

    event_id: str
    modification: int
    decision: OptDecision
    ra_event_ids: list[str] = field(default_factory=list)
    ends_at: datetime | None = None  # its last request's end: forgotten a day after


class ErabVen:
    """An openleadr client driving ``backend``; :meth:`run` until a stop event."""

    def __init__(self, config: VenConfig, backend: VenBackend, *, audit: AuditHook | None = None,
                 draw: Callable[[], float] = random.random) -> None:  # fmt: skip
        from openleadr import OpenADRClient, objects

        self.config, self.backend, self.audit_hook, self.draw = config, backend, audit, draw
        self.tracked: dict[str, Tracked] = {}
        self._handling = 0  # events being carried out now (run() lets them finish on stop)
        self.refusals: dict[str, int] = {}
        self.client = OpenADRClient(
            ven_name=config.ven_name, vtn_url=config.vtn_url, cert=config.cert, key=config.key,
            ca_file=config.ca_file, vtn_fingerprint=config.vtn_fingerprint,
            show_fingerprint=False, disable_signature=not config.sign,
        )  # fmt: skip
        self.client.add_handler("on_event", self.on_event)
        self.client.add_handler("on_update_event", self.on_event)
        rate = objects.SamplingRate(min_period=timedelta(seconds=1),
                                    max_period=timedelta(hours=1), on_change=False)  # fmt: skip
        for r_id, report_type, read in (
            ("fleet_kw", "usage", backend.fleet_kw),
            ("up_kw", "upRegulationCapacityAvailable", lambda: self._available("up")),
            ("down_kw", "downRegulationCapacityAvailable", lambda: self._available("down")),
        ):
            self.client.add_report(
                callback=partial_value(read), resource_id="fleet", measurement="REAL_POWER",
                unit="W", scale="k", r_id=r_id, report_specifier_id="erab-fleet",
                report_type=report_type, sampling_rate=rate,
                report_duration=timedelta(hours=1), power_hertz=50, power_voltage=100,
            )  # fmt: skip
        create = self.client._create_message

        def with_reasons(message_type: str, **payload: Any) -> Any:
            # 2.0b eiResponse/responseDescription: say why, where openleadr says "OK"
            if message_type == "oadrCreatedEvent":
                for response in payload.get("event_responses") or []:
                    tracked = self.tracked.get(str(response.get("event_id")))
                    if tracked is not None:
                        response["response_description"] = tracked.decision.detail[:480]
            return create(message_type, **payload)

        self.client._create_message = with_reasons

    def _available(self, direction: str) -> float:
        return round(self.backend.flexibility_kw(direction, None, timedelta(hours=1)), 3)

    # -- events -----------------------------------------------------------------------------
    async def on_event(self, event: dict[str, Any]) -> str:
        """openleadr's on_event and on_update_event: carry the event out, return the opt."""
        self._handling += 1
        try:
            return await self._on_event(event)
        finally:
            self._handling -= 1

    async def _on_event(self, event: dict[str, Any]) -> str:
        descriptor = event.get("event_descriptor") or {}
        event_id = str(descriptor.get("event_id"))
        self._forget_old()
        previous = self.tracked.get(event_id)
        if previous is not None:  # a modification or a cancellation: undo the old version
            await self._cancel_ra_events(previous)
        mapped = map_event(event, self.config.mapping, fleet_kw=self.backend.fleet_kw(),
                           start_fraction=self.draw(),
                           ven_id=self.client.ven_id or self.config.ven_name)  # fmt: skip
        if mapped.final:
            decision = OptDecision(OPT_IN, "participating", f"event {mapped.status}: "
                                   "every site returns to normal")  # fmt: skip
            self.tracked[event_id] = Tracked(event_id, mapped.modification_number, decision,
                                             ends_at=datetime.now(UTC))
            self._record(event_id, mapped.modification_number, decision, [])
            return OPT_IN
        available = [self.backend.flexibility_kw(r.direction, r.start, r.duration)
                     for r in mapped.requests]  # fmt: skip
        decision = decide_opt(mapped, available, min_share=self.config.min_share)
        tracked = Tracked(event_id, mapped.modification_number, decision,
                          ends_at=max((r.end for r in mapped.requests),
                                      default=datetime.now(UTC)))
        if decision.opt == OPT_IN:
            try:
                for request in mapped.requests:
                    tracked.ra_event_ids.append(await self.backend.create_event(request))
            except (EventError, RuntimeError) as exc:
                await self._cancel_ra_events(tracked)
                tracked.decision = OptDecision(OPT_OUT, "notParticipating",
                                               f"the RA refused the event: {exc}")  # fmt: skip
        self.tracked[event_id] = tracked
        self._record(event_id, mapped.modification_number, tracked.decision,
                     tracked.ra_event_ids)  # fmt: skip
        return tracked.decision.opt

    def _forget_old(self) -> None:
        """Events over for a day leave memory (a long-running VEN sees thousands)."""
        horizon = datetime.now(UTC) - timedelta(days=1)
        for event_id in [k for k, t in self.tracked.items()
                         if t.ends_at is not None and t.ends_at < horizon]:  # fmt: skip
            del self.tracked[event_id]

    async def _cancel_ra_events(self, tracked: Tracked) -> None:
        for ra_id in tracked.ra_event_ids:
            with contextlib.suppress(EventError):  # already over or cancelled at the RA
                await self.backend.cancel_event(ra_id)
        tracked.ra_event_ids = []

    def _record(self, event_id: str, modification: int, decision: OptDecision,
                ra_ids: list[str]) -> None:  # fmt: skip
        log.info("VTN event %s (modification %d): %s, %s", event_id, modification,
                 decision.opt, decision.detail)  # fmt: skip
        if self.audit_hook is not None:
            self.audit_hook("openadr_event", f"vtn-event:{event_id}",
                            {"modification": modification, "opt": decision.opt,
                             "reason": decision.reason, "detail": decision.detail,
                             "ra_events": ra_ids})  # fmt: skip

    # -- running ----------------------------------------------------------------------------
    def _session(self) -> Any:
        """An aiohttp session with erab's TLS context whose responses pass the XML guard."""
        import aiohttp

        limits, ven = self.config.limits, self

        class GuardedResponse(aiohttp.ClientResponse):
            async def read(self) -> bytes:
                if self.content_length is not None and self.content_length > limits.max_bytes:
                    ven._refused(XmlRefused(Refusal.OVERSIZED, f"{self.content_length} bytes "
                                            f"is over the limit of {limits.max_bytes}"))
                body = await super().read()
                if body:
                    try:
                        inspect_xml(body, limits)
                    except XmlRefused as exc:
                        ven._refused(exc)
                return body

        connector = aiohttp.TCPConnector(ssl=self.config.ssl_context) \
            if self.config.ssl_context is not None else None  # fmt: skip
        return aiohttp.ClientSession(
            connector=connector, headers={"content-type": "application/xml"},
            timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=10),
            response_class=GuardedResponse,
        )  # fmt: skip

    def _refused(self, exc: XmlRefused) -> None:
        self.refusals[str(exc.reason)] = self.refusals.get(str(exc.reason), 0) + 1
        log.warning("refused a message from the VTN: %s (%s)", exc.reason, exc)
        if self.audit_hook is not None:
            self.audit_hook("openadr_refused", f"vtn:{self.config.vtn_url}",
                            {"reason": str(exc.reason), "message": str(exc)[:300]})
        raise exc

    @property
    def registered(self) -> bool:
        return self.client.registration_id is not None

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Register (retrying every ``retry_s``), then poll and report until ``stop``."""
        client = self.client
        try:
            while not stop.is_set():
                if client.client_session is None or client.client_session.closed:
                    client.client_session = self._session()
                await client.run()
                if self.registered:
                    break
                log.warning("the VTN at %s did not register this VEN; retrying in %g s",
                            self.config.vtn_url, self.config.retry_s)  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.retry_s)
            if ready is not None and self.registered:
                ready.set()
            await stop.wait()
        finally:
            # an event half carried out would be cancelled inside openleadr's scheduler (a
            # traceback in its log, RA events made without their opt recorded): let it finish
            deadline = time.monotonic() + 5.0
            with contextlib.suppress(asyncio.CancelledError):
                while self._handling and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            if client.scheduler.running:
                client.scheduler.shutdown(wait=False)
            if client.report_queue_task is not None:
                client.report_queue_task.cancel()
            if client.client_session is not None and not client.client_session.closed:
                await client.client_session.close()


def partial_value(read: Callable[[], float]) -> Callable[[], float]:
    """A report callback openleadr can call with no arguments (one value, now)."""

    def value() -> float:
        return round(float(read()), 3)

    return value
