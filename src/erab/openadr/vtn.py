"""The aggregation coordinator's OpenADR 2.0b VTN (``erab ac serve``), on openleadr.

:func:`build_vtn` makes the server (openleadr's aiohttp application with erab's guard in front
of it); :func:`run_vtn` runs it until a stop event, so another application (the OpenADR 3 VTN)
can run beside it in the same asyncio loop.  What erab adds to openleadr:

- every request passes :func:`guard` first: the TLS client certificate's SHA-256 fingerprint
  must be in the VEN registry (:class:`~erab.openadr.acstore.AcStore`), the body must pass
  :func:`~erab.openadr.xmlguard.inspect_xml` (size, DTD/entities, depth, namespace), a signed
  body must verify with that same certificate and carry a fresh ReplayProtect nonce, and an
  unsigned one is refused when signatures are required.  Each refusal is logged with its reason
  and sent to the audit hook; openleadr never sees the message.
- registration by fingerprint: a VEN gets the ven_id the registry gave its certificate;
- events come from the store (written by ``erab ac event create`` or an award file) and go to
  openleadr's per-VEN queue; cancellations follow; each VEN's optIn/optOut and the reason it
  gave (the event response's description) and its reports go back into the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from erab.openadr.acstore import AcEvent, AcStore, AcStoreError
from erab.openadr.security import (
    AuditHook,
    ReplayGuard,
    fingerprint_of_der,
    short_fingerprint,
    verify_signature,
)
from erab.openadr.xmlguard import Refusal, XmlLimits, XmlRefused, inspect_xml

log = logging.getLogger("erab.openadr.vtn")
AUDIT_EVERY_S = 10.0  # one audit record per (peer, reason) in this long
REPORTS_KEPT = timedelta(days=35)  # report values older than this are deleted
_peer: contextvars.ContextVar[str | None] = contextvars.ContextVar("erab_openadr_peer",
                                                                  default=None)  # fmt: skip


@dataclass(frozen=True)
class VtnConfig:
    """How the VTN serves: where, how often VENs poll and report, what it requires."""

    vtn_id: str = "ERAB-AC"  # openleadr's VEN flags an all-lower-case vtnID as invalid
    host: str = "127.0.0.1"
    port: int = 8443
    poll_interval_s: float = 10.0
    report_interval_s: float = 10.0
    require_signatures: bool = False
    sign_cert: str | None = None  # sign outgoing messages with this certificate and key
    sign_key: str | None = None
    replay_window_s: float = 300.0
    market_context: str = "oadr://erab/ac"
    limits: XmlLimits = field(default_factory=XmlLimits)
    path_prefix: str = "/OpenADR2/Simple/2.0b"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}{self.path_prefix}"


class AcVtn:
    """The VTN of one AC store; build with :func:`build_vtn`, run with :func:`run_vtn`."""

    def __init__(self, store: AcStore, config: VtnConfig, ssl_context: ssl.SSLContext,
                 audit: AuditHook | None = None) -> None:  # fmt: skip
        from openleadr import OpenADRServer

        self.store, self.config, self.audit_hook = store, config, audit
        self.replay = ReplayGuard(timedelta(seconds=config.replay_window_s))
        self.refusals: dict[str, int] = {}
        self.queued: set[str] = set()  # events handed to openleadr in this run
        self.cancelled: set[str] = set()
        self.delivered: set[str] = set()
        self.last_seen: dict[str, float] = {}
        self._audited: dict[tuple[str | None, str], tuple[float, int]] = {}
        server = OpenADRServer(
            vtn_id=config.vtn_id, cert=config.sign_cert, key=config.sign_key,
            http_host=config.host, http_port=config.port, show_fingerprint=False,
            requested_poll_freq=timedelta(seconds=config.poll_interval_s),
            http_path_prefix=config.path_prefix, ven_lookup=self._ven_lookup,
            verify_message_signatures=False,  # guard() verifies, with erab's replay window
        )  # fmt: skip
        server.ssl_context = ssl_context
        server.add_handler("on_create_party_registration", self._on_register)
        server.add_handler("on_cancel_party_registration", self._on_unregister)
        server.add_handler("on_register_report", self._on_register_report)
        events = server.services["event_service"]
        original = events.handlers["oadrCreatedEvent"]
        events.handlers["oadrCreatedEvent"] = partial(self._on_created_event, original)
        # openleadr's EiOpt service is a stub and not routed: route it to erab's handlers
        from openleadr.service import OptService

        opts = OptService(config.vtn_id)
        opts.handlers["oadrCreateOpt"] = self._on_create_opt
        opts.handlers["oadrCancelOpt"] = self._on_cancel_opt
        server.app.router.add_post(f"{server.http_path_prefix}/EiOpt", opts.handler)
        server.app.middlewares.append(self.guard)
        self.server = server

    # -- the guard in front of openleadr ----------------------------------------------------
    def _refuse(self, status: int, reason: str, message: str, peer: str | None) -> Any:
        from aiohttp import web

        self.refusals[reason] = self.refusals.get(reason, 0) + 1
        # a peer repeating the same refused message is recorded once per AUDIT_EVERY_S, with
        # the count since: a flood must not flood the audit log (or the disk) with it
        now = time.monotonic()
        last, quiet = self._audited.get((peer, reason), (-1e9, 0))
        if now - last < AUDIT_EVERY_S:
            self._audited[(peer, reason)] = (last, quiet + 1)
        else:
            self._audited[(peer, reason)] = (now, 0)
            log.warning("refused a message from %s: %s (%s)",
                        short_fingerprint(peer) if peer else "?", reason, message)  # fmt: skip
            if self.audit_hook is not None:
                self.audit_hook("openadr_refused", f"ven:{peer or 'unknown'}",
                                {"reason": reason, "message": message[:300],
                                 "also_refused_since_last_record": quiet})  # fmt: skip
        return web.Response(status=status, text=f"refused: {reason}: {message}\n")

    @property
    def guard(self) -> Callable[..., Awaitable[Any]]:
        from aiohttp import web

        @web.middleware
        async def guard(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[Any]]) -> Any:  # fmt: skip
            ssl_object = request.transport.get_extra_info("ssl_object") if request.transport \
                else None  # fmt: skip
            der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
            if der is None:
                return self._refuse(403, Refusal.UNKNOWN_VEN, "no client certificate", None)
            peer = fingerprint_of_der(der)
            ven = self.store.ven_by_fingerprint(peer)
            if ven is None:
                return self._refuse(403, Refusal.UNKNOWN_VEN,
                                    f"certificate {short_fingerprint(peer)} is not in the VEN "
                                    "registry ('erab ac ven add')", peer)  # fmt: skip
            limit = self.config.limits.max_bytes
            if request.content_length is not None and request.content_length > limit:
                return self._refuse(413, Refusal.OVERSIZED, f"{request.content_length} bytes "
                                    f"is over the limit of {limit}", peer)  # fmt: skip
            chunks: list[bytes] = []
            size = 0
            try:
                while size <= limit:  # never hold more than the limit and one chunk
                    chunk = await request.content.readany()
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:
                return self._refuse(400, Refusal.MALFORMED, f"body unreadable: {exc}", peer)
            body = b"".join(chunks)
            try:
                facts = inspect_xml(body, self.config.limits)
                if facts.signed:
                    verify_signature(body, peer)
                    self.replay.check(facts.nonce, facts.timestamp)
                elif self.config.require_signatures:
                    raise XmlRefused(Refusal.UNSIGNED, f"{facts.message_type or 'a message'} "
                                     "without an XML signature; this VTN requires them")
            except XmlRefused as exc:
                return self._refuse(400 if exc.reason != Refusal.OVERSIZED else 413,
                                    exc.reason, str(exc), peer)  # fmt: skip
            now = time.monotonic()
            if now - self.last_seen.get(ven.ven_id, -1e9) >= 60.0:  # "last seen", once a minute
                self.last_seen[ven.ven_id] = now
                self.store.seen(ven.ven_id)
            # openleadr reads the body again: hand it the bytes already read
            request._read_bytes = body
            token = _peer.set(peer)
            try:
                return await handler(request)
            finally:
                _peer.reset(token)

        return guard

    # -- openleadr handlers -----------------------------------------------------------------
    def _ven_lookup(self, ven_id: str) -> dict[str, Any] | None:
        try:
            ven = self.store.ven(ven_id)
        except AcStoreError:
            return None
        return {"ven_id": ven.ven_id, "ven_name": ven.ven_name,
                "fingerprint": short_fingerprint(ven.fingerprint),
                "registration_id": ven.registration_id}  # fmt: skip

    def _on_register(self, payload: dict[str, Any]) -> tuple[str, str] | bool:
        peer = _peer.get()
        ven = self.store.ven_by_fingerprint(peer) if peer else None
        if ven is None:  # guard() let nobody else through; kept for safety
            return False
        claimed = payload.get("ven_id")
        if claimed and claimed != ven.ven_id:
            if self.audit_hook is not None:
                self.audit_hook("openadr_refused", f"ven:{ven.ven_id}",
                                {"reason": "ven_id_mismatch", "claimed": str(claimed)[:64]})
            return False
        registration_id = self.store.registered(ven.ven_id, payload.get("ven_name"))
        if self.audit_hook is not None:
            self.audit_hook("openadr_registered", f"ven:{ven.ven_id}",
                            {"fingerprint": ven.fingerprint, "ven_name": payload.get("ven_name"),
                             "registration_id": registration_id})  # fmt: skip
        log.info("VEN %s registered (%s)", ven.ven_id, registration_id)
        return ven.ven_id, registration_id

    def _on_unregister(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        ven_id = str(payload.get("ven_id") or "")
        with contextlib.suppress(AcStoreError):
            self.store.unregistered(ven_id)
        return "oadrCanceledPartyRegistration", {
            "registration_id": payload.get("registration_id"), "ven_id": ven_id}

    def _on_register_report(self, report: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        """Ask for every point of a VEN's TELEMETRY_USAGE report at the configured interval."""
        peer = _peer.get()
        ven = self.store.ven_by_fingerprint(peer) if peer else None
        if ven is None or report.get("report_name") != "METADATA_TELEMETRY_USAGE":
            return None
        every = timedelta(seconds=self.config.report_interval_s)
        out: list[tuple[Any, ...]] = []
        for description in report.get("report_descriptions") or []:
            r_id = description.get("r_id")
            rate = description.get("sampling_rate") or {}
            low, high = rate.get("min_period"), rate.get("max_period")
            # the VEN refuses a granularity outside what it offered: clamp into its range
            granularity = max(every, low) if isinstance(low, timedelta) else every
            granularity = min(granularity, high) if isinstance(high, timedelta) else granularity
            out.append((r_id, partial(self._on_report_values, ven.ven_id, str(r_id)),
                        granularity, granularity))  # fmt: skip
        return out or None

    def _on_report_values(self, ven_id: str, r_id: str, values: list[tuple[Any, Any]]) -> None:
        good = [(at, float(v)) for at, v in values
                if isinstance(at, datetime) and isinstance(v, int | float)]  # fmt: skip
        if good:
            self.store.add_reports(ven_id, r_id, good)

    async def _on_created_event(self, original: Callable[[dict[str, Any]], Awaitable[Any]],
                                payload: dict[str, Any]) -> Any:  # fmt: skip
        for response in payload.get("event_responses") or []:
            event_id = str(response.get("event_id"))
            opt = str(response.get("opt_type"))
            detail = response.get("response_description")
            try:
                event = self.store.event(event_id)
            except AcStoreError:
                continue
            if event.state == "cancelling":  # the VEN confirms the cancellation
                if int(response.get("modification_number") or 0) >= event.modification:
                    self.store.advance(event_id, "confirm")
            elif event.state == "queued":
                if int(response.get("modification_number") or 0) < event.modification:
                    continue  # an answer to a version the AC has since modified
                why = None if detail in (None, "OK") else str(detail)
                if (event.opt, event.opt_detail) == (opt, why or event.opt_detail):
                    continue  # openleadr's VEN answers for every event in the list again
                self.store.responded(event_id, opt, why)
            if self.audit_hook is not None:
                self.audit_hook("openadr_opt", f"event:{event_id}",
                                {"ven": event.ven_id, "opt": opt, "detail": detail})
        return await original(payload)

    def _on_create_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """EiOpt (2.0b §8.5): an opt for one of the VEN's events is recorded as its answer,
        with the opt reason; an availability schedule without an event is only audited."""
        peer = _peer.get()
        ven = self.store.ven_by_fingerprint(peer) if peer else None
        event_id, opt = payload.get("event_id"), str(payload.get("opt_type"))
        reason = str(payload.get("opt_reason") or "")
        if ven is not None and event_id:
            with contextlib.suppress(AcStoreError):
                if self.store.event(str(event_id)).ven_id == ven.ven_id:
                    self.store.responded(str(event_id), opt, f"EiOpt {opt}: {reason}")
        if self.audit_hook is not None and ven is not None:
            self.audit_hook("openadr_opt", f"event:{event_id or '-'}",
                            {"ven": ven.ven_id, "opt": opt, "reason": reason,
                             "opt_id": payload.get("opt_id"), "via": "EiOpt"})  # fmt: skip
        return "oadrCreatedOpt", {"opt_id": payload.get("opt_id")}

    def _on_cancel_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return "oadrCanceledOpt", {"opt_id": payload.get("opt_id")}

    # -- events from the store --------------------------------------------------------------
    def _openadr_event(self, event: AcEvent) -> Any:
        from openleadr import objects

        if event.signal == "SIMPLE":
            name, kind, value, measurement = "SIMPLE", "level", float(event.level or 0), None
        else:
            name, kind, value = "LOAD_DISPATCH", "delta", float(event.target_kw)
            measurement = objects.Measurement(
                name="powerReal", description="RealPower", unit="W", scale="k",
                power_attributes=objects.PowerAttributes(hertz=50, voltage=100, ac=True))
        start = event.start.astimezone(UTC)
        return objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event.event_id, modification_number=event.modification,
                market_context=self.config.market_context, event_status="far",
                created_date_time=datetime.now(UTC)),
            active_period=objects.ActivePeriod(
                dtstart=start, duration=event.duration,
                tolerance={"startafter": timedelta(seconds=event.randomise_s)}
                if event.randomise_s else None,
                ramp_up_period=timedelta(seconds=event.ramp_up_s) if event.ramp_up_s else None),
            event_signals=[objects.EventSignal(
                intervals=[objects.Interval(dtstart=start, duration=event.duration,
                                            signal_payload=value, uid=0)],
                signal_name=name, signal_type=kind, signal_id=f"{event.event_id}-0",
                measurement=measurement)],
            targets=[{"ven_id": event.ven_id}], response_required="always",
        )  # fmt: skip

    def _queue(self, event: AcEvent) -> None:
        self.server.add_raw_event(event.ven_id, self._openadr_event(event),
                                  callback=_opt_recorded,
                                  delivery_callback=partial(self._distributed,
                                                            event.event_id))  # fmt: skip
        self.queued.add(event.event_id)

    def _distributed(self, event_id: str) -> None:
        # openleadr calls this each time it sends the VEN's event list: record the first
        if event_id not in self.delivered:
            self.delivered.add(event_id)
            self.store.distributed(event_id)

    def _resend(self, event: AcEvent) -> None:
        """A modified event replaces its earlier version in openleadr's queue (same eventID,
        the new modificationNumber); the VEN gets it at its next poll and answers again."""
        queue = self.server.events.get(event.ven_id) or []
        self.server.events[event.ven_id] = [
            e for e in queue if e.event_descriptor.event_id != event.event_id]
        self.server.event_callbacks.pop(event.event_id, None)
        self._queue(event)
        self.store.advance(event.event_id, "resend")
        log.info("event %s modified (modification %d): sent again to %s", event.event_id,
                 event.modification, event.ven_id)  # fmt: skip

    def _drop_ended(self, event: AcEvent) -> None:
        """An event past its end leaves openleadr's queue (its VTN never completes events, and
        re-sends the whole list after any change)."""
        queue = self.server.events.get(event.ven_id) or []
        self.server.events[event.ven_id] = [
            e for e in queue if e.event_descriptor.event_id != event.event_id]
        self.store.advance(event.event_id, "end")

    def sync(self) -> None:
        """Hand new and modified events to openleadr's queues, and cancellations (every
        ``sync_every_s``)."""
        for event in self.store.events(live=True):
            if event.state == "modifying":
                self._resend(event)
            elif event.state == "new":
                self._queue(event)
                self.store.advance(event.event_id, "queue")
            elif event.state in ("queued", "cancelling") and event.event_id not in self.queued:
                if event.end > datetime.now(UTC):  # from before a restart: re-queue
                    self._queue(event)
                self.queued.add(event.event_id)
            if event.state == "queued" and event.end <= datetime.now(UTC):
                self._drop_ended(event)
            if event.state == "cancelling" and event.event_id not in self.cancelled:
                self.server.cancel_event(event.ven_id, event.event_id)
                self.cancelled.add(event.event_id)


def build_vtn(store: AcStore, config: VtnConfig, ssl_context: ssl.SSLContext,
              audit: AuditHook | None = None) -> AcVtn:  # fmt: skip
    """The 2.0b VTN over ``store``, served with ``ssl_context`` (client certificates required:
    build it with erab.security's server context and :func:`~.security.hold_to_tls12`)."""
    if ssl_context.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("the VTN's TLS context must require client certificates (2.0b §10)")
    return AcVtn(store, config, ssl_context, audit)


async def run_vtn(vtn: AcVtn, stop: asyncio.Event, *, ready: asyncio.Event | None = None,
                  sync_every_s: float = 0.5) -> None:  # fmt: skip
    """Serve until ``stop`` is set: the HTTPS endpoint and the store's events.  VENs
    registered with an earlier run are asked to register again (their report requests were
    that run's)."""
    from aiohttp import web

    vtn.store.forget_registrations()
    # what openleadr's run() does, without the banner it prints to stdout
    server = vtn.server
    server.app_runner = web.AppRunner(server.app)
    await server.app_runner.setup()
    try:
        await web.TCPSite(server.app_runner, host=server.http_host, port=server.http_port,
                          ssl_context=server.ssl_context).start()  # fmt: skip
    except OSError as exc:
        await server.app_runner.cleanup()
        raise OSError(f"cannot listen on {server.http_host}:{server.http_port}: "
                      f"{exc.strerror or exc}") from None
    try:
        if ready is not None:
            ready.set()
        pruned_at = -1e9
        while not stop.is_set():
            try:
                vtn.sync()
                if time.monotonic() - pruned_at > 600:  # settlement needs a month, not more
                    pruned_at = time.monotonic()
                    vtn.store.prune_reports(datetime.now(UTC) - REPORTS_KEPT)
            except AcStoreError as exc:
                log.warning("AC store: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), sync_every_s)
    finally:
        await vtn.server.stop()


def _opt_recorded(ven_id: str, event_id: str, opt_type: str) -> None:
    """openleadr's opt callback; the store already has the answer (``_on_created_event``)."""

