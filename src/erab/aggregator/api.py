"""The RA's REST API: registry, fleet, events, commands and the audit tail, over FastAPI.

Every call presents an operator's API token (``Authorization: Bearer erab_…``, issued by
:meth:`erab.security.OperatorDirectory.issue_token`) and is checked against the operator's
role through :data:`erab.security.ROLE_PERMISSIONS` (ERAB Cyber Security Guideline, access
control: each role may do only what it needs).  A missing, unknown, revoked or expired token is
401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3); a role without the permission is 403
naming it.  Every change (an event created or cancelled) reaches the audit log with the
operator's name as actor, through the :class:`~erab.aggregator.EventBook`; a registry change
(a site, gateway or resource registered, an import) through the ``audit`` log given to
:func:`create_app`.

The endpoints are ``async``: they run on the server's event loop thread, the thread that owns
the registry's SQLite connection when the RA serves the API in its own loop.
"""

# No "from __future__ import annotations": FastAPI reads the endpoints' annotations at run
# time, and the permission aliases below are local to create_app.
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol, runtime_checkable

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from erab.aggregator.events import DrEvent, EventBook, EventError, EventRequest, check_request
from erab.aggregator.fanout import Fanout, RaCommand
from erab.aggregator.registry import (
    Registry,
    RegistryError,
    inventory_from_document,
    inventory_rows,
)
from erab.security import (
    AuditKind,
    AuditLog,
    LoginRefused,
    Operator,
    OperatorDirectory,
    Permission,
    PermissionDenied,
)
from erab.security.operators import roles_that_may

API_PREFIX = "/api/v1"
_UNPROCESSABLE = 422  # (Starlette renamed its constant; the code is what matters)
MAX_AUDIT_TAIL = 1000
# the registry's words for a record that names one it does not have (erab.aggregator.registry)
_NAMES_UNKNOWN = re.compile(r"\bunknown (customer|site|gateway|resource) '")


class RaBackend(Protocol):
    """What the API needs of the RA (``erab ra serve``'s service, or a test's stand-in)."""

    @property
    def registry(self) -> Registry: ...

    @property
    def events(self) -> EventBook: ...

    @property
    def fanout(self) -> Fanout | None: ...

    def fleet_summary(self) -> dict[str, Any]:
        """Sites and gateways online, the fleet's kW now, flexibility up and down."""
        ...

    def flexibility_kw(self, direction: str) -> float | None:
        """The fleet's flexibility in ``direction`` ("up" or "down") now, None if unknown."""
        ...

    def audit_tail(self, n: int) -> list[dict[str, Any]]:
        """The last ``n`` records of the RA's audit log, oldest first."""
        ...


@runtime_checkable
class MetricsSource(Protocol):
    """Optional: a backend that reports its figures in Prometheus text (the RA service)."""

    def metrics_text(self) -> str: ...


@runtime_checkable
class AlertSource(Protocol):
    """Optional: a backend with alerts (the RA service: from its store)."""

    def alert_rows(self, *, open_only: bool = True) -> list[dict[str, Any]]: ...


@runtime_checkable
class FlexibilitySource(Protocol):
    """Optional: a backend that forecasts flexibility per slot (the RA service)."""

    def flexibility_forecast(self, at: datetime | None = None) -> dict[str, Any]: ...


@runtime_checkable
class LiveRegistry(Protocol):
    """Optional: a backend whose live state follows its registry (the RA service): called
    after every registry change the API makes."""

    def refresh_resources(self) -> int: ...


@runtime_checkable
class EventDetailSource(Protocol):
    """Optional: a backend that adds delivery (overall and per site) to an event."""

    def event_detail(self, event_id: str) -> dict[str, Any]: ...


@runtime_checkable
class EventDispatcher(Protocol):
    """Optional: a backend that plans and dispatches the events it is given (the RA service).

    When the backend has these, the API calls them instead of the bare EventBook, so an
    event created over the API is planned and its commands sent, and a cancelled one's
    gateways are told."""

    async def create_event(self, request: EventRequest) -> DrEvent: ...

    async def cancel_event(self, event_id: str, actor: str) -> DrEvent: ...


class EventBody(BaseModel):
    """A demand-response event to create."""

    model_config = ConfigDict(extra="forbid")

    target_kw: float = Field(
        allow_inf_nan=False,
        description="kW the fleet should change by: negative reduces demand (down-DR), "
        "positive raises it (up-DR)",
    )
    start: str = Field(
        description="RFC 3339 time with a zone, e.g. 2026-08-03T14:00:00+09:00",
        min_length=1,
        max_length=64,
    )
    duration_minutes: float = Field(allow_inf_nan=False, description="length of the window")
    product: str = Field("tertiary-1", min_length=1, max_length=64)


class MeterBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    meter_id: str = Field(min_length=1, max_length=128,
                          description="the meter's id as the route A head-end names it")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=500)


_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="erab operator API token",
    description="An operator's API token ('erab operator token issue').",
)


def _unauthorised(message: str, *, invalid: bool) -> HTTPException:
    # RFC 6750 §3: a request without credentials gets a bare challenge; a bad token gets
    # error="invalid_token".
    challenge = 'Bearer realm="erab"' + (', error="invalid_token"' if invalid else "")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=message, headers={"WWW-Authenticate": challenge}
    )


def _command_row(c: RaCommand) -> dict[str, Any]:
    return {
        "gateway": c.gateway_id,
        "sequence": c.sequence,
        "stage": c.stage.value,
        "reason": c.reason,
        "event": c.event_id,
        "type": c.body.get("type"),
        "device_id": c.body.get("device_id"),
        "attempts": c.attempts,
        "expires_at": c.expires_at.isoformat(),
        "last_sent_at": None if c.last_sent_at is None else c.last_sent_at.isoformat(),
        "acknowledged_at": None if c.acknowledged_at is None else c.acknowledged_at.isoformat(),
        "outcomes": c.outcomes,
    }


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if e.get("type") == "json_invalid":
            why = (e.get("ctx") or {}).get("error", "")
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            parts.append(f"the body is not valid JSON{at}" + (f": {why}" if why else ""))
            continue
        where = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)
        parts.append(f"{where or 'body'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def create_app(
    ra: RaBackend, operators: OperatorDirectory, *, audit: AuditLog | None = None
) -> FastAPI:
    """The API of ``ra``, its callers authenticated by ``operators``.

    ``audit``, when given, records the calls refused before any token was presented (no
    ``Authorization: Bearer`` header); the directory records every token's outcome and every
    permission refused, and the event book every change, with the operator as actor.
    """
    app = FastAPI(
        title="erab resource aggregator",
        version="1",
        description="The RA's registry, fleet, demand-response events, commands and audit "
        "tail. Every call needs an operator API token (Authorization: Bearer).",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse(
            status_code=_UNPROCESSABLE,
            content={
                "detail": _validation_message(list(exc.errors())),
                "errors": jsonable_encoder(errors),
            },
        )

    def require(permission: Permission) -> Callable[..., Awaitable[Operator]]:
        async def operator_of(
            request: Request,
            credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        ) -> Operator:
            source = request.client.host if request.client else "unknown"
            if credentials is None:
                if audit is not None:
                    audit.append(
                        AuditKind.LOGIN, "?", "api",
                        {"outcome": "no_credentials", "method": request.method,
                         "path": request.url.path, "source": source},
                    )  # fmt: skip
                raise _unauthorised(
                    "this call needs an operator API token: send 'Authorization: Bearer <token>'",
                    invalid=False,
                )
            try:
                operator = operators.authenticate_token(credentials.credentials, source=source)
            except LoginRefused as exc:
                raise _unauthorised(str(exc), invalid=True) from None
            try:
                operators.authorize(operator, permission)
            except PermissionDenied as exc:
                roles = ", ".join(r.value for r in roles_that_may(permission))
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    detail=f"{exc}: this call needs permission {permission.value} (roles: {roles})",
                ) from None
            return operator

        return operator_of

    Viewer = Annotated[Operator, Depends(require(Permission.VIEW_TELEMETRY))]
    EventViewer = Annotated[Operator, Depends(require(Permission.VIEW_EVENTS))]
    EventManager = Annotated[Operator, Depends(require(Permission.MANAGE_DR_EVENTS))]
    Auditor = Annotated[Operator, Depends(require(Permission.VIEW_AUDIT_LOG))]
    Registrar = Annotated[Operator, Depends(require(Permission.ENROL_GATEWAYS))]

    def not_found(exc: Exception) -> HTTPException:
        return HTTPException(status.HTTP_404_NOT_FOUND, detail=str(exc))

    # -- registry ---------------------------------------------------------------------------
    @app.get(f"{API_PREFIX}/sites", tags=["registry"])
    async def list_sites(_: Viewer) -> list[dict[str, Any]]:
        """Every registered site."""
        return inventory_rows(ra.registry.sites())

    @app.get(f"{API_PREFIX}/sites/{{site_id}}", tags=["registry"])
    async def show_site(site_id: str, _: Viewer) -> dict[str, Any]:
        """One site with its gateways and resources."""
        try:
            site = ra.registry.site(site_id)
        except RegistryError as exc:
            raise not_found(exc) from None
        return {
            **inventory_rows([site])[0],
            "gateways": inventory_rows(ra.registry.gateways(site_id)),
            "resources": inventory_rows(ra.registry.resources(site_id=site_id)),
        }

    @app.get(f"{API_PREFIX}/gateways", tags=["registry"])
    async def list_gateways(_: Viewer, site: str | None = None) -> list[dict[str, Any]]:
        """Every gateway (of one site with ``?site=``), with its status and last contact."""
        try:
            if site is not None:
                ra.registry.site(site)
        except RegistryError as exc:
            raise not_found(exc) from None
        return inventory_rows(ra.registry.gateways(site))

    @app.get(f"{API_PREFIX}/resources", tags=["registry"])
    async def list_resources(
        _: Viewer, site: str | None = None, gateway: str | None = None
    ) -> list[dict[str, Any]]:
        """Every resource (of one site or gateway with ``?site=`` or ``?gateway=``)."""
        try:
            if site is not None:
                ra.registry.site(site)
            if gateway is not None:
                ra.registry.gateway(gateway)
        except RegistryError as exc:
            raise not_found(exc) from None
        return inventory_rows(ra.registry.resources(site_id=site, gateway_id=gateway))

    @app.get(f"{API_PREFIX}/gateways/{{gateway_id}}", tags=["registry"])
    async def show_gateway(gateway_id: str, _: Viewer) -> dict[str, Any]:
        """One gateway with its allow-list and the devices it proposed that wait."""
        try:
            gw = ra.registry.gateway(gateway_id)
        except RegistryError as exc:
            raise not_found(exc) from None
        return {**inventory_rows([gw])[0],
                "allow_list": inventory_rows(ra.registry.allow_list(gateway_id)),
                "pending": inventory_rows(ra.registry.pending(gateway_id))}  # fmt: skip

    @app.get(f"{API_PREFIX}/resources/{{resource_id}}", tags=["registry"])
    async def show_resource(resource_id: str, _: Viewer) -> dict[str, Any]:
        """One resource."""
        try:
            return inventory_rows([ra.registry.resource(resource_id)])[0]
        except RegistryError as exc:
            raise not_found(exc) from None

    # Registering what a gateway may control is device authorization (ERAB guideline): the
    # permission that enrols gateways (security officers, admins), each change audited with
    # the operator's name.
    def registered(operator: Operator, kind: str, record_id: str, details: dict[str, Any]
                   ) -> None:  # fmt: skip
        if audit is not None:
            audit.append(AuditKind.ENROLMENT, operator.name, f"{kind}:{record_id}",
                         {"action": "registry", "source": "api", **details})  # fmt: skip

    def one_record(kind: str, body: dict[str, Any]) -> Any:
        try:
            inventory = inventory_from_document({kind: [body]}, "the request")
        except RegistryError as exc:
            raise HTTPException(_UNPROCESSABLE, detail=str(exc)) from None
        return getattr(inventory, f"{kind}s")[0]

    def refused(exc: RegistryError) -> HTTPException:
        # an unknown site or gateway named by the record: 404 says which; a record already
        # registered: 409; anything else (a bad value) is 422
        text = str(exc)
        code = (status.HTTP_404_NOT_FOUND if _NAMES_UNKNOWN.search(text)
                else status.HTTP_409_CONFLICT if "already exists" in text
                else _UNPROCESSABLE)  # fmt: skip
        return HTTPException(code, detail=str(exc))

    @app.post(f"{API_PREFIX}/sites", tags=["registry"], status_code=status.HTTP_201_CREATED)
    async def add_site(body: dict[str, Any], operator: Registrar) -> dict[str, Any]:
        """Register a site (fields as in an import file: site_id, name, kind, customer_id,
        meter_id)."""
        site = one_record("site", body)
        try:
            added = ra.registry.add_site(site)
        except RegistryError as exc:
            raise refused(exc) from None
        registered(operator, "site", added.site_id, {"added": inventory_rows([added])[0]})
        return inventory_rows([added])[0]

    @app.put(f"{API_PREFIX}/sites/{{site_id}}/meter", tags=["registry"])
    async def set_site_meter(site_id: str, body: MeterBody, operator: Registrar
                             ) -> dict[str, Any]:  # fmt: skip
        """Set the route A meter that measures a site (settlement reads it)."""
        try:
            site = ra.registry.update_site(site_id, meter_id=body.meter_id)
        except RegistryError as exc:
            raise refused(exc) from None
        registered(operator, "site", site_id, {"meter_id": body.meter_id})
        return inventory_rows([site])[0]

    @app.post(f"{API_PREFIX}/gateways", tags=["registry"], status_code=status.HTTP_201_CREATED)
    async def add_gateway(body: dict[str, Any], operator: Registrar) -> dict[str, Any]:
        """Register a gateway at a site (gateway_id, site_id, cert_serial)."""
        gateway = one_record("gateway", body)
        try:
            added = ra.registry.add_gateway(gateway)
        except RegistryError as exc:
            raise refused(exc) from None
        registered(operator, "gateway", added.gateway_id, {"site_id": added.site_id})
        return inventory_rows([added])[0]

    @app.post(f"{API_PREFIX}/resources", tags=["registry"], status_code=status.HTTP_201_CREATED)
    async def add_resource(body: dict[str, Any], operator: Registrar) -> dict[str, Any]:
        """Register a resource of a gateway (fields as in an import file)."""
        resource = one_record("resource", body)
        try:
            added = ra.registry.add_resource(resource)
        except RegistryError as exc:
            raise refused(exc) from None
        registered(operator, "resource", added.resource_id,
                   {"gateway_id": added.gateway_id, "allowed": added.allowed})  # fmt: skip
        if isinstance(ra, LiveRegistry):
            ra.refresh_resources()  # its telemetry counts, and it plans, from now on
        return inventory_rows([added])[0]

    @app.post(f"{API_PREFIX}/import", tags=["registry"])
    async def import_records(body: dict[str, Any], operator: Registrar) -> dict[str, Any]:
        """Register many records at once: ``{"site": [...], "gateway": [...], "resource":
        [...], "customer": [...], "contract": [...]}`` (an import file's tables); those
        already registered are left as they are."""
        try:
            inventory = inventory_from_document(body, "the request")
        except RegistryError as exc:
            raise HTTPException(_UNPROCESSABLE, detail=str(exc)) from None
        try:
            report = ra.registry.import_inventory(inventory)
        except RegistryError as exc:
            raise refused(exc) from None
        registered(operator, "import", "records",
                   {"added": report.added, "unchanged": report.unchanged})  # fmt: skip
        if isinstance(ra, LiveRegistry) and report.added.get("resources"):
            ra.refresh_resources()
        return {"added": report.added, "unchanged": report.unchanged,
                "summary": report.describe()}  # fmt: skip

    # -- fleet ------------------------------------------------------------------------------
    @app.get(f"{API_PREFIX}/fleet", tags=["fleet"])
    async def fleet(_: Viewer) -> dict[str, Any]:
        """Resources and gateways online, the fleet's kW now, its flexibility up and down."""
        summary: dict[str, Any] = jsonable_encoder(ra.fleet_summary())
        return summary

    @app.get(f"{API_PREFIX}/flexibility", tags=["fleet"])
    async def flexibility(_: Viewer, at: str | None = None) -> dict[str, Any]:
        """The fleet's and each resource kind's flexibility (kW down and up, each held an
        hour) in 30-minute slots for the 24 hours from ``at`` (RFC 3339; default now)."""
        if not isinstance(ra, FlexibilitySource):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this RA forecasts nothing")
        when = None
        if at is not None:
            try:
                when = datetime.fromisoformat(at)
            except ValueError:
                when = None
            if when is None or when.tzinfo is None:
                raise HTTPException(
                    _UNPROCESSABLE,
                    detail=f"at {at!r} is not an RFC 3339 time with a zone "
                    "(e.g. 2026-08-03T14:00:00+09:00)",
                )
        forecast: dict[str, Any] = jsonable_encoder(ra.flexibility_forecast(when))
        return forecast

    @app.get(f"{API_PREFIX}/alerts", tags=["fleet"])
    async def alerts(_: Viewer, cleared: bool = False) -> list[dict[str, Any]]:
        """Open alerts, newest first (``?cleared=true``: cleared ones too): gateways silent or
        offline, events under-delivering, certificates near expiry, readings refused."""
        if not isinstance(ra, AlertSource):
            return []
        return ra.alert_rows(open_only=not cleared)

    @app.get("/metrics", tags=["fleet"], response_class=PlainTextResponse)
    async def metrics(_: Viewer) -> str:
        """Prometheus text format (version 0.0.4): ingest, gateways, commands, events."""
        if not isinstance(ra, MetricsSource):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="this RA reports no metrics")
        return ra.metrics_text()

    # -- events -----------------------------------------------------------------------------
    def find_event(event_id: str) -> DrEvent:
        try:
            return ra.events.get(event_id)
        except EventError as exc:
            raise not_found(exc) from None

    @app.get(f"{API_PREFIX}/events", tags=["events"])
    async def list_events(_: EventViewer) -> list[dict[str, Any]]:
        """Every event the RA knows, oldest first."""
        book = ra.events.events
        return [book[k].as_dict() for k in sorted(book, key=lambda k: book[k].received_at)]

    @app.get(f"{API_PREFIX}/events/{{event_id}}", tags=["events"])
    async def show_event(event_id: str, _: EventViewer) -> dict[str, Any]:
        """One event with its history (time, trigger, stage, actor); from an RA that
        dispatches, also its commands by stage, the closed loop's last check (``delivery``)
        and ``sites``: per site its pre-event baseline, power now, delivered and commanded
        kW."""
        event = find_event(event_id)
        if isinstance(ra, EventDetailSource):
            detail: dict[str, Any] = jsonable_encoder(ra.event_detail(event_id))
            return detail
        return event.as_dict()

    @app.post(f"{API_PREFIX}/events", tags=["events"], status_code=status.HTTP_201_CREATED)
    async def create_event(body: EventBody, operator: EventManager) -> dict[str, Any]:
        """Create an event: 422 for input that cannot be an event, 409 when it overlaps one
        not yet over; a target beyond the fleet's flexibility is accepted, with a warning."""
        try:
            start = datetime.fromisoformat(body.start)
        except ValueError:
            raise HTTPException(
                _UNPROCESSABLE,
                detail=f"start {body.start!r} is not an RFC 3339 time "
                "(e.g. 2026-08-03T14:00:00+09:00)",
            ) from None
        try:
            duration = timedelta(minutes=body.duration_minutes)
        except OverflowError:
            raise HTTPException(
                _UNPROCESSABLE,
                detail=f"duration_minutes {body.duration_minutes:g} is far too long",
            ) from None
        request = EventRequest(body.target_kw, start, duration, product=body.product,
                               source="api", requested_by=operator.name)  # fmt: skip
        try:
            check_request(request, ra.events.clock.now())  # the request alone, no overlaps
        except EventError as exc:
            raise HTTPException(_UNPROCESSABLE, detail=str(exc)) from None
        try:
            if isinstance(ra, EventDispatcher):
                event = await ra.create_event(request)
            else:
                flex = ra.flexibility_kw(request.direction)
                event = ra.events.create(request, flexibility_kw=flex)
        except EventError as exc:  # what is left is the book's: an overlap
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
        except RuntimeError as exc:  # the RA cannot act now (e.g. not connected to the broker)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=str(exc)) from None
        return event.as_dict()

    @app.post(f"{API_PREFIX}/events/{{event_id}}/cancel", tags=["events"])
    async def cancel_event(
        event_id: str, operator: EventManager, body: CancelBody | None = None
    ) -> dict[str, Any]:
        """Cancel an event not yet over; 409 if it is completed or cancelled already."""
        find_event(event_id)
        reason = "" if body is None else body.reason
        try:
            if isinstance(ra, EventDispatcher):
                event = await ra.cancel_event(event_id, operator.name)
            else:
                event = ra.events.cancel(event_id, operator.name, reason)
        except EventError as exc:
            raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from None
        return event.as_dict()

    # -- commands ---------------------------------------------------------------------------
    @app.get(f"{API_PREFIX}/commands", tags=["commands"])
    async def list_commands(_: EventViewer, event: str | None = None) -> list[dict[str, Any]]:
        """The signed commands sent to gateways (of one event with ``?event=``) and what
        became of each: acknowledged, refused (with the reason) or expired."""
        if event is not None:
            find_event(event)
        if ra.fanout is None:
            return []
        commands = sorted(ra.fanout.commands.values(),
                          key=lambda c: (c.expires_at, c.gateway_id, c.sequence))  # fmt: skip
        return [_command_row(c) for c in commands if event is None or c.event_id == event]

    # -- audit ------------------------------------------------------------------------------
    @app.get(f"{API_PREFIX}/audit", tags=["audit"])
    async def audit_tail(
        _: Auditor, n: Annotated[int, Query(ge=1, le=MAX_AUDIT_TAIL)] = 50
    ) -> list[dict[str, Any]]:
        """The last ``n`` records of the RA's audit log (hash chain fields included)."""
        records: list[dict[str, Any]] = jsonable_encoder(ra.audit_tail(n))
        return records

    return app


def api_certificate(home: Path, hosts: Sequence[str] = ()) -> tuple[Path, Path]:
    """The RA API's TLS server certificate and key under ``home/ra/`` (``api.pem``,
    ``api.key.pem``), issued once by the deployment's CA for localhost, 127.0.0.1, ::1 and
    ``hosts`` (names or addresses); issued again if a host is missing from it."""
    import ipaddress

    from cryptography import x509

    from erab.clock import RealClock
    from erab.security import CertificateAuthority, SecurityHome
    from erab.security.pki import certificate_pem, private_key_pem

    cert_file, key_file = Path(home) / "ra" / "api.pem", Path(home) / "ra" / "api.key.pem"
    names, ips = ["localhost"], ["127.0.0.1", "::1"]
    for host in hosts:
        try:
            ips.append(str(ipaddress.ip_address(host)))
        except ValueError:
            names.append(host)
    names, ips = list(dict.fromkeys(names)), list(dict.fromkeys(ips))
    if cert_file.is_file() and key_file.is_file():
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        have = {str(v) for v in alt.get_values_for_type(x509.DNSName)} | {
            str(v) for v in alt.get_values_for_type(x509.IPAddress)}
        if set(names) | set(ips) <= have:
            return cert_file, key_file
    security = SecurityHome(Path(home))
    if not security.issuing_key.is_file():
        raise FileNotFoundError(f"no CA in {security.pki_dir}; run 'erab pki init --home {home}'")
    issued = CertificateAuthority.open(security, RealClock()).issue_server(names, ips)
    cert_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.touch(0o600)
    key_file.chmod(0o600)  # before the key is in it, whatever the umask
    key_file.write_bytes(private_key_pem(issued.private_key))
    cert_file.write_bytes(certificate_pem(issued.certificate))
    return cert_file, key_file
