"""The OpenADR 3 VTN's REST API (3.0.1 or 3.1.0), as a FastAPI app: :func:`build_app`;
:func:`build_server` serves 3.0.1 at its root and 3.1.0 under ``/openadr3/3.1.0``.

Served: programs, events, reports, subscriptions (webhook notifications), VENs and their
resources, each with search (the definition's filters, ``skip``/``limit`` pagination) and
create, read, replace and delete; ``POST /auth/token`` for OAuth2 client credentials.  Every
request body is checked against the shipped OpenAPI definition before anything is stored, and
every answer against the definition before it leaves (a non-conforming answer becomes a 500
problem and is logged, so a bug cannot send clients what the spec does not allow).

Errors are the definition's ``problem`` objects (RFC 7807: ``type``, ``title``, ``status``,
``detail``), the ``detail`` naming what was wrong; ``/auth/token`` answers RFC 6749 §5.2
errors (``authError``).

Mount it anywhere (``parent.mount("/openadr3", build_app(...))``): paths are relative, as
the definition's ``tokenUrl: auth/token`` is.  Webhooks are sent by :attr:`app.state.notifier`
(started on first use); whoever owns the loop calls ``await app.state.notifier.aclose()`` at
shutdown (this app's own lifespan does when it runs on its own).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from erab.openadr.v3 import schema
from erab.openadr.v3.auth import (
    READ_ALL,
    READ_TARGETS,
    READ_VEN_OBJECTS,
    WRITE_EVENTS,
    WRITE_PROGRAMS,
    WRITE_REPORTS,
    WRITE_SUBSCRIPTIONS,
    WRITE_VENS,
    AuthError,
    ClientRegistry,
    Grant,
    Role,
    TokenIssuer,
)
from erab.openadr.v3.models import (
    JsonObject,
    Kind,
    Operation,
    VenIdentity,
    has_target,
    targeted_at,
    targets_cover,
)
from erab.openadr.v3.notify import Notifier, deliveries_for
from erab.openadr.v3.store import ObjectStore, StoreConflict, Stored

log = logging.getLogger(__name__)

MAX_LIMIT = 50  # the definition's maximum for ``limit``
API_3_0 = "3.0.1"
API_3_1 = "3.1.0"
PREFIX_3_1 = "/openadr3/3.1.0"  # the base path 3.1 clients and peers use (docs/openadr3.md)
PREFIX_3_0 = "/openadr3/3.0.1"  # 3.0.1 here too, for clients set up for that convention
# 3.1.0: the discriminators of the BL and VEN forms of a VEN or resource request
BL_FORM = {Kind.VEN: "BL_VEN_REQUEST", Kind.RESOURCE: "BL_RESOURCE_REQUEST"}
VEN_FORM = {Kind.VEN: "VEN_VEN_REQUEST", Kind.RESOURCE: "VEN_RESOURCE_REQUEST"}


@dataclass(frozen=True)
class VtnLimits:
    """What the server accepts: ``max_body_bytes`` per request body, JSON nested at most
    ``max_depth`` levels (the definition's deepest object is 6), webhooks only to
    ``callback_hosts`` when given (the VTN POSTs wherever a subscription says: a deployment
    facing untrusted clients names the hosts it will call), and whether answers are checked
    against the definition too (on by default; costs a little CPU)."""

    max_body_bytes: int = 1_048_576
    max_depth: int = 32
    validate_responses: bool = True
    callback_hosts: frozenset[str] | None = None


@dataclass(frozen=True)
class Change:
    """One stored change, for ``build_app(on_change=…)`` (e.g. the AC's audit log): who made
    it (the client id), what (kind, operation), the object's id, and the API version."""

    client_id: str
    kind: Kind
    operation: Operation
    object_id: str
    api: str = "3.0.1"


@dataclass(frozen=True)
class _Collection:
    kind: Kind
    path: str
    item_path: str
    id_param: str
    write_scope: str
    filters: tuple[str, ...]
    read_scope: str = READ_ALL


COLLECTIONS: dict[Kind, _Collection] = {
    c.kind: c
    for c in (
        _Collection(
            Kind.PROGRAM,
            "/programs",
            "/programs/{programID}",
            "programID",
            WRITE_PROGRAMS,
            ("targets",),
        ),
        _Collection(
            Kind.EVENT,
            "/events",
            "/events/{eventID}",
            "eventID",
            WRITE_EVENTS,
            ("programID", "targets"),
        ),
        _Collection(
            Kind.REPORT,
            "/reports",
            "/reports/{reportID}",
            "reportID",
            WRITE_REPORTS,
            ("programID", "eventID", "clientName"),
        ),
        _Collection(
            Kind.SUBSCRIPTION,
            "/subscriptions",
            "/subscriptions/{subscriptionID}",
            "subscriptionID",
            WRITE_SUBSCRIPTIONS,
            ("programID", "clientName", "targets", "objects"),
        ),
        _Collection(
            Kind.VEN, "/vens", "/vens/{venID}", "venID", WRITE_VENS, ("venName", "targets")
        ),
        _Collection(
            Kind.RESOURCE,
            "/vens/{venID}/resources",
            "/vens/{venID}/resources/{resourceID}",
            "resourceID",
            WRITE_VENS,
            ("resourceName", "targets"),
        ),
    )
}

# OpenADR 3.1.0: resources at /resources (venID in the body and as a filter), targets as
# strings (filter ``targets``), reading split into read_targets and read_ven_objects
COLLECTIONS_3_1: dict[Kind, _Collection] = {
    c.kind: c
    for c in (
        _Collection(
            Kind.PROGRAM,
            "/programs",
            "/programs/{programID}",
            "programID",
            WRITE_PROGRAMS,
            ("targets",),
            READ_TARGETS,
        ),
        _Collection(
            Kind.EVENT,
            "/events",
            "/events/{eventID}",
            "eventID",
            WRITE_EVENTS,
            ("programID", "targets"),
            READ_TARGETS,
        ),
        _Collection(
            Kind.REPORT,
            "/reports",
            "/reports/{reportID}",
            "reportID",
            WRITE_REPORTS,
            ("programID", "eventID", "clientName"),
            READ_VEN_OBJECTS,
        ),
        _Collection(
            Kind.SUBSCRIPTION,
            "/subscriptions",
            "/subscriptions/{subscriptionID}",
            "subscriptionID",
            WRITE_SUBSCRIPTIONS,
            ("programID", "clientName", "objects"),
            READ_VEN_OBJECTS,
        ),
        _Collection(
            Kind.VEN,
            "/vens",
            "/vens/{venID}",
            "venID",
            WRITE_VENS,
            ("venName", "targets"),
            READ_VEN_OBJECTS,
        ),
        _Collection(
            Kind.RESOURCE,
            "/resources",
            "/resources/{resourceID}",
            "resourceID",
            WRITE_VENS,
            ("resourceName", "venID", "targets"),
            READ_VEN_OBJECTS,
        ),
    )
}


class Problem(Exception):
    """An error answer: HTTP ``status`` and a ``detail`` naming what was wrong."""

    def __init__(
        self, status: int, detail: str, *, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    500: "Internal Server Error",
}


def problem_body(status: int, detail: str) -> JsonObject:
    return {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }


def json_too_deep(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects deeper than ``limit`` (checked
    before parsing, so a hostile body cannot exhaust the parser's recursion)."""
    depth, in_string, skip_to = 0, False, -1
    for m in re.finditer(rb'[\[\]{}"\\]', raw):
        pos, ch = m.start(), m.group()
        if pos < skip_to:
            continue
        if in_string:
            if ch == b"\\":
                skip_to = pos + 2  # the escaped character is not syntax
            elif ch == b'"':
                in_string = False
        elif ch == b'"':
            in_string = True
        elif ch in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif ch in (b"]", b"}"):
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6: numbers are finite)")


def parse_json_body(raw: bytes, limits: VtnLimits) -> Any:
    """The JSON value of a request body; :class:`Problem` 400 saying why it is not one."""
    if not raw.strip():
        raise Problem(400, "the request body is empty; send a JSON object")
    if json_too_deep(raw, limits.max_depth):
        raise Problem(400, f"the JSON body nests deeper than {limits.max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(
            400, f"the body is not UTF-8 (byte {exc.start}); JSON must be UTF-8"
        ) from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:  # JSONDecodeError is one
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise Problem(400, "the JSON body nests too deeply") from None


def drop_nulls(value: Any) -> Any:
    """``value`` without the object members whose value is null, at every depth."""
    if isinstance(value, dict):
        return {k: drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_nulls(v) for v in value]
    return value


class _Viewer:
    """What one token may see: everything for BL; for a VEN, what targets it and what it owns."""

    def __init__(self, grant: Grant, store: ObjectStore) -> None:
        self.grant = grant
        self.store = store
        self._identity: VenIdentity | None = None

    @property
    def is_bl(self) -> bool:
        return self.grant.client.role is Role.BL

    @property
    def identity(self) -> VenIdentity:
        if self._identity is None:
            name = self.grant.client.ven_name or ""
            vens = self.store.find(Kind.VEN, name=name)
            ven = vens[0] if vens else None
            resources = self.store.find(Kind.RESOURCE, parent=ven.id) if ven else []
            self._identity = VenIdentity.of(
                name, ven.body if ven else None, [r.body for r in resources]
            )
        return self._identity

    def may_read(self, kind: Kind, body: Mapping[str, Any], owner: str | None = None) -> bool:
        if self.is_bl:
            return True
        if kind is Kind.PROGRAM:
            return self.targets_match(body.get("targets"))
        if kind is Kind.EVENT:  # its program's targets and its own
            program = self.store.get(Kind.PROGRAM, str(body.get("programID")))
            return (
                program is not None
                and self.may_read(Kind.PROGRAM, program.body)
                and self.targets_match(body.get("targets"))
            )
        return self.owns(kind, body, owner)

    def targets_match(self, targets: Any) -> bool:
        """Whether a program's or event's ``targets`` reach this VEN client (3.0.1: any)."""
        return targeted_at(targets, self.identity)

    def owns(self, kind: Kind, body: Mapping[str, Any], owner: str | None) -> bool:
        """Whether a report, subscription, VEN or resource is this VEN client's."""
        if kind in (Kind.REPORT, Kind.SUBSCRIPTION):
            return owner == self.grant.client.client_id
        if kind is Kind.VEN:
            return body.get("venName") == self.grant.client.ven_name
        ven = self.store.get(Kind.VEN, str(body.get("venID")))
        return ven is not None and self.may_read(Kind.VEN, ven.body)


class _Viewer31(_Viewer):
    """OpenADR 3.1.0: a VEN client reads the programs and events whose targets its VENs and
    their resources hold all of (read_targets), and the reports, subscriptions, VENs and
    resources whose ``clientID`` is its own (read_ven_objects)."""

    def __init__(self, grant: Grant, store: ObjectStore) -> None:
        super().__init__(grant, store)
        self._held: frozenset[str] | None = None

    @property
    def held_targets(self) -> frozenset[str]:
        if self._held is None:
            held: set[str] = set()
            for ven in self.store.find(Kind.VEN, owner=self.grant.client.client_id):
                held.update(map(str, ven.body.get("targets") or ()))
                for res in self.store.find(Kind.RESOURCE, parent=ven.id):
                    held.update(map(str, res.body.get("targets") or ()))
            self._held = frozenset(held)
        return self._held

    def targets_match(self, targets: Any) -> bool:
        return targets_cover(targets, self.held_targets)  # 3.1.0: all of them held

    def owns(self, kind: Kind, body: Mapping[str, Any], owner: str | None) -> bool:
        return body.get("clientID") == self.grant.client.client_id


def build_app(
    store: ObjectStore | Path,
    token_issuer: TokenIssuer,
    *,
    clients: ClientRegistry | None = None,
    notifier: Notifier | None = None,
    limits: VtnLimits | None = None,
    on_change: Callable[[Change], None] | None = None,
    api: str = API_3_0,
) -> FastAPI:
    """The VTN app of OpenADR ``api`` (3.0.1 or 3.1.0) over ``store`` (an
    :class:`ObjectStore` or the path of its SQLite file; each API keeps its objects apart),
    issuing and checking tokens with ``token_issuer`` for the clients in ``clients`` (by
    default the registry in the same store).  ``on_change`` is called after every stored
    change (never for a refused request)."""
    if api not in schema.SPEC_VERSIONS:
        raise ValueError(f"api {api!r}: erab serves OpenADR {', '.join(schema.SPEC_VERSIONS)}")
    v31 = api == API_3_1
    db = store if isinstance(store, ObjectStore) else ObjectStore(store, clock=token_issuer.clock)
    if db.api != api:
        db = db.for_api(api)
    if token_issuer.api != api:
        token_issuer = token_issuer.for_api(api)
    viewer_class = _Viewer31 if v31 else _Viewer
    collections = COLLECTIONS_3_1 if v31 else COLLECTIONS
    registry = clients or ClientRegistry(db)
    sender = notifier or Notifier()
    lim = limits or VtnLimits()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await sender.aclose()
        for child in app.state.mounted:  # a mounted app's own lifespan does not run
            await child.state.notifier.aclose()

    app = FastAPI(
        title="erab OpenADR 3 VTN",
        version=api,
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store, app.state.clients, app.state.notifier = db, registry, sender
    app.state.api, app.state.mounted = api, []

    def respond(
        request: Request,
        template: str,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        if lim.validate_responses:
            wanted = _response_schema(template, request.method, status, api)
            errors = schema.validate(payload, wanted, "response", version=api)
            if errors:
                log.error(
                    "answer to %s %s breaks the definition: %s", request.method, template, errors
                )
                status = 500
                payload = problem_body(
                    500,
                    "the server built an answer that breaks the OpenADR 3 "
                    "definition: " + "; ".join(errors),
                )
        return JSONResponse(payload, status_code=status, headers=dict(headers or {}))

    def problem(request: Request, exc: Problem, template: str | None = None) -> Response:
        body = problem_body(exc.status, exc.detail)
        if template is None:
            return JSONResponse(body, status_code=exc.status, headers=exc.headers)
        return respond(request, template, exc.status, body, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        detail = {
            404: f"no such path {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }.get(exc.status_code, str(exc.detail))
        return problem(request, Problem(exc.status_code, detail, headers=exc.headers))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("OpenADR 3 VTN: %s %s failed", request.method, request.url.path)
        return problem(
            request, Problem(500, f"internal error ({type(exc).__name__}); see the server log")
        )

    # --- auth -------------------------------------------------------------------------------

    def authorise(request: Request, scope: str | None) -> _Viewer:
        """The viewer of the request's bearer token, which must carry ``scope`` (any valid
        token when None)."""
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="openadr3"'}
        if kind.lower() != "bearer" or not token.strip():
            raise Problem(
                401,
                "no bearer token: send 'Authorization: Bearer <token>' from POST /auth/token",
                headers=challenge,
            )
        try:
            grant = token_issuer.verify(token.strip(), registry)
        except AuthError as exc:
            raise Problem(
                401,
                str(exc),
                headers={"WWW-Authenticate": f'Bearer realm="openadr3", error="{exc.error}"'},
            ) from None
        # 3.1.0: read_all is business logic's, and covers what VENs read by narrower scopes
        covered = v31 and scope in (READ_TARGETS, READ_VEN_OBJECTS) and READ_ALL in grant.scopes
        if scope is not None and scope not in grant.scopes and not covered:
            raise Problem(
                403,
                f"this call needs scope {scope}; the token has "
                f"{' '.join(sorted(grant.scopes)) or 'none'}",
            )
        return viewer_class(grant, db)

    async def token(request: Request) -> Response:
        def refuse(status: int, error: str, description: str) -> Response:
            body: JsonObject = {"error": error, "error_description": description}
            if v31:  # 3.1.0 answers token errors as problems; RFC 6749 §5.2 members stay
                body = {**problem_body(status, description), **body}
            return respond(request, "/auth/token", status, body, {"Cache-Control": "no-store"})

        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return refuse(
                400,
                "invalid_request",
                "send the token request as "
                f"application/x-www-form-urlencoded (RFC 6749 §4.4.2), not {ctype or 'no type'}",
            )
        try:
            raw = await _read_limited(request, 16_384)
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
        except Problem as exc:
            return refuse(400, "invalid_request", exc.detail)
        except (UnicodeDecodeError, ValueError):
            return refuse(400, "invalid_request", "the form body cannot be read (RFC 6749 §4.4.2)")
        repeated = sorted(k for k, v in form.items() if len(v) > 1)
        if repeated:  # RFC 6749 §3.2: parameters must not be repeated
            return refuse(400, "invalid_request", f"repeated parameter {', '.join(repeated)}")
        fields = {k: v[0] for k, v in form.items()}
        if fields.get("grant_type") != "client_credentials":
            return refuse(
                400,
                "unsupported_grant_type",
                f"grant_type {fields.get('grant_type')!r}: only client_credentials",
            )
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.lower().startswith("basic "):  # RFC 6749 §2.3.1
            try:
                pair = base64.b64decode(basic[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return refuse(
                    400,
                    "invalid_request",
                    "the Basic authorization header is not base64 of id:secret",
                )
            user, sep, password = pair.partition(":")
            if not sep:
                return refuse(400, "invalid_request", "the Basic authorization header lacks ':'")
            client_id, secret = unquote(user), unquote(password)
        if not client_id or not secret:
            return refuse(
                400, "invalid_request", "give client_id and client_secret (form or Basic auth)"
            )
        try:
            # scrypt takes tens of ms on purpose: off the event loop, so others go on
            client = await asyncio.to_thread(registry.authenticate, client_id, secret)
            access, grant = token_issuer.issue(client, fields.get("scope"))
        except AuthError as exc:
            return refuse(401 if exc.error == "invalid_client" else 400, exc.error, str(exc))
        body = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": token_issuer.lifetime_s,
            "scope": " ".join(sorted(grant.scopes)),
        }
        return respond(request, "/auth/token", 200, body, {"Cache-Control": "no-store"})

    app.add_api_route("/auth/token", token, methods=["POST"], include_in_schema=False)

    # --- bodies -----------------------------------------------------------------------------

    async def _read_limited(request: Request, limit: int) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise Problem(413, f"the body is {declared} bytes; this server takes at most {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise Problem(413, f"the body is over {limit} bytes, the most this server takes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_body(request: Request, template: str) -> JsonObject:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Problem(415, f"send the body as application/json, not {ctype or 'no type'}")
        # clients send optional properties as null (openadr3-client does); every nullable
        # property of the definition defaults to null, so null is taken as absent
        value = drop_nulls(parse_json_body(await _read_limited(request, lim.max_body_bytes), lim))
        wanted = schema.request_schema(template, request.method, api)
        assert wanted is not None
        errors = schema.validate(value, wanted, version=api)
        if errors:
            raise Problem(400, "the body breaks the OpenADR 3 definition: " + "; ".join(errors))
        assert isinstance(value, dict)
        return value

    # --- objects ----------------------------------------------------------------------------

    def admit(
        kind: Kind, body: JsonObject, viewer: _Viewer, path: Mapping[str, str], old: Stored | None
    ) -> tuple[str, str | None]:
        """Check a new or replacing ``body`` against the other objects and the client's role;
        the (parent, unique name) it is stored under."""
        who = viewer.grant.client
        if kind is Kind.PROGRAM:
            return "", str(body["programName"])
        if kind is Kind.EVENT:
            program = db.get(Kind.PROGRAM, str(body["programID"]))
            if program is None:
                raise Problem(409, f"programID {body['programID']!r} names no program")
            return program.id, None
        if kind is Kind.REPORT:
            event = db.get(Kind.EVENT, str(body["eventID"]))
            if event is None or not viewer.may_read(Kind.EVENT, event.body):
                raise Problem(
                    409, f"eventID {body['eventID']!r} names no event this client can see"
                )
            if event.body.get("programID") != body["programID"]:
                raise Problem(
                    400,
                    f"programID {body['programID']!r} is not the program of event "
                    f"{event.id} ({event.body.get('programID')})",
                )
            return event.id, None
        if kind is Kind.SUBSCRIPTION:
            program = db.get(Kind.PROGRAM, str(body["programID"]))
            if program is None or not viewer.may_read(Kind.PROGRAM, program.body):
                raise Problem(
                    409, f"programID {body['programID']!r} names no program this client can see"
                )
            check_callbacks(body)
            return program.id, None
        old_targets = old.body.get("targets") if old else None
        if not viewer.is_bl and (body.get("targets") or None) != (old_targets or None):
            raise Problem(
                403,
                f"a VEN may not set the targets of a {kind.value.lower()}: business "
                "logic assigns them",
            )
        if kind is Kind.VEN:
            if not viewer.is_bl and body["venName"] != who.ven_name:
                raise Problem(
                    403,
                    f"client {who.client_id} acts for venName {who.ven_name!r}, "
                    f"not {body['venName']!r}",
                )
            return "", str(body["venName"])
        ven_id = path["venID"]
        if body.get("venID") not in (None, ven_id):
            raise Problem(
                400, f"body.venID {body['venID']!r} differs from the path's venID {ven_id!r}"
            )
        body["venID"] = ven_id
        return ven_id, str(body["resourceName"])

    def check_callbacks(body: JsonObject) -> None:
        for i, entry in enumerate(body["objectOperations"]):
            url = urlsplit(str(entry["callbackUrl"]))
            if url.scheme not in ("http", "https"):
                raise Problem(
                    400, f"body.objectOperations[{i}].callbackUrl: give an http or https URL"
                )
            allowed = lim.callback_hosts
            if allowed is not None and (url.hostname or "") not in allowed:
                raise Problem(
                    400,
                    f"body.objectOperations[{i}].callbackUrl: this VTN calls only "
                    f"{', '.join(sorted(allowed)) or 'no host'}, not {url.hostname!r}",
                )

    def admit31(
        kind: Kind, body: JsonObject, viewer: _Viewer, old: Stored | None
    ) -> tuple[str, str | None, str]:
        """3.1.0: check a new or replacing ``body``; the (parent, unique name, owning
        clientID) it is stored under.  Sets the ``clientID`` of what a VEN sends."""
        who = viewer.grant.client
        if kind is Kind.PROGRAM:
            return "", str(body["programName"]), who.client_id
        if kind is Kind.EVENT:
            program = db.get(Kind.PROGRAM, str(body["programID"]))
            if program is None:
                raise Problem(409, f"programID {body['programID']!r} names no program")
            return program.id, None, who.client_id
        if kind is Kind.REPORT:
            event = db.get(Kind.EVENT, str(body["eventID"]))
            if event is None or not viewer.may_read(Kind.EVENT, event.body):
                raise Problem(
                    409, f"eventID {body['eventID']!r} names no event this client can see"
                )
            if body.get("programID") not in (None, event.body.get("programID")):
                raise Problem(
                    400,
                    f"programID {body['programID']!r} is not the program of event "
                    f"{event.id} ({event.body.get('programID')})",
                )
            body["clientID"] = old.body["clientID"] if old else who.client_id
            return event.id, None, str(body["clientID"])
        if kind is Kind.SUBSCRIPTION:
            parent = ""
            if body.get("programID") is not None:
                program = db.get(Kind.PROGRAM, str(body["programID"]))
                if program is None or not viewer.may_read(Kind.PROGRAM, program.body):
                    raise Problem(
                        409,
                        f"programID {body['programID']!r} names no program this client can see",
                    )
                parent = program.id
            check_callbacks(body)
            body["clientID"] = old.body["clientID"] if old else who.client_id
            return parent, None, str(body["clientID"])
        # VEN and resource: business logic sends the BL form (it assigns clientID and
        # targets), a VEN client the VEN form (its own clientID, targets kept as BL set them)
        form = body.pop("objectType")
        noun = kind.value.lower()
        if viewer.is_bl:
            if form != BL_FORM[kind]:
                raise Problem(
                    400,
                    f"business logic sends a {noun} as objectType {BL_FORM[kind]} with the "
                    f"clientID of the VEN client it belongs to, not {form}",
                )
        else:
            if form != VEN_FORM[kind]:
                raise Problem(
                    403,
                    f"a VEN client sends a {noun} as objectType {VEN_FORM[kind]}: clientID and "
                    "targets are business logic's to assign",
                )
            own = old.body["clientID"] if old else who.client_id
            old_targets = old.body.get("targets") if old else None
            # the VEN form has neither: one sent must be what business logic set
            sent_targets = body.get("targets", old_targets)
            if body.get("clientID", own) != own or (sent_targets or None) != (old_targets or None):
                raise Problem(
                    403,
                    f"a VEN client may not set the clientID or targets of a {noun}: business "
                    "logic assigns them",
                )
            body["clientID"] = own
            if old_targets:
                body["targets"] = old_targets
        if kind is Kind.VEN:
            return "", str(body["venName"]), str(body["clientID"])
        ven = db.get(Kind.VEN, str(body["venID"]))
        if ven is None or not viewer.may_read(Kind.VEN, ven.body):
            raise Problem(409, f"venID {body['venID']!r} names no VEN this client can see")
        if old is not None and old.parent != ven.id:
            raise Problem(400, "a resource cannot move to another VEN")
        return ven.id, str(body["resourceName"]), str(body["clientID"])

    def parent_ven(viewer: _Viewer, path: Mapping[str, str]) -> None:
        if "venID" in path:
            ven = db.get(Kind.VEN, path["venID"])
            if ven is None or not viewer.may_read(Kind.VEN, ven.body):
                raise Problem(404, f"no VEN {path['venID']!r}")

    def notify(kind: Kind, operation: Operation, obj: JsonObject, owner: str, actor: str) -> None:
        if on_change is not None:
            on_change(Change(actor, kind, operation, str(obj["id"]), api))
        subs = db.find(Kind.SUBSCRIPTION)
        if not subs:
            return
        viewers: dict[str, _Viewer | None] = {}

        def may_see(sub: Stored) -> bool:
            if sub.owner not in viewers:
                client = registry.get(sub.owner)
                viewers[sub.owner] = (
                    None
                    if client is None
                    else viewer_class(Grant(client, frozenset({READ_ALL}), 0.0), db)
                )
            viewer = viewers[sub.owner]
            return viewer is not None and viewer.may_read(kind, obj, owner)

        program = None
        if kind is Kind.REPORT and "programID" not in obj:  # 3.1.0: the event's program
            event = db.get(Kind.EVENT, str(obj.get("eventID")))
            program = None if event is None else str(event.body.get("programID"))
        for delivery in deliveries_for(
            subs, kind, operation, obj, may_see, api=api, program=program
        ):
            sender.submit(delivery)

    def admit_any(
        kind: Kind, body: JsonObject, viewer: _Viewer, path: Mapping[str, str], old: Stored | None
    ) -> tuple[str, str | None, str]:
        if v31:
            return admit31(kind, body, viewer, old)
        parent, name = admit(kind, body, viewer, path, old)
        return parent, name, old.owner if old else viewer.grant.client.client_id

    def routes(c: _Collection) -> None:
        async def search(request: Request) -> Response:
            try:
                viewer = authorise(request, c.read_scope)
                parent_ven(viewer, request.path_params)
                skip, limit, wanted = _query(request, c, api, program_of)
                parent = request.path_params.get("venID")
                found = [
                    s
                    for s in db.find(c.kind, parent=parent)
                    if viewer.may_read(c.kind, s.body, s.owner) and wanted(s.body)
                ]
                page = [s.body for s in found[skip : skip + limit]]
            except Problem as exc:
                return problem(request, exc, c.path)
            return respond(request, c.path, 200, page)

        async def create(request: Request) -> Response:
            try:
                viewer = authorise(request, c.write_scope)
                parent_ven(viewer, request.path_params)
                body = await json_body(request, c.path)
                parent, name, owner = admit_any(c.kind, body, viewer, request.path_params, None)
                stored = db.create(c.kind, body, owner=owner, parent=parent, name=name)
            except StoreConflict as exc:
                return problem(request, Problem(409, str(exc)), c.path)
            except Problem as exc:
                return problem(request, exc, c.path)
            actor = viewer.grant.client.client_id
            notify(c.kind, Operation.CREATE, stored, owner, actor)
            return respond(request, c.path, 201, stored)

        def visible(request: Request, viewer: _Viewer) -> Stored:
            path = request.path_params
            parent_ven(viewer, path)
            object_id = request.path_params[c.id_param]
            found = db.get(c.kind, object_id)
            if (
                found is None
                or not viewer.may_read(c.kind, found.body, found.owner)
                or (c.kind is Kind.RESOURCE and found.parent != path.get("venID", found.parent))
            ):
                raise Problem(404, f"no {c.kind.value.lower()} {object_id!r}")
            return found

        async def read(request: Request) -> Response:
            try:
                found = visible(request, authorise(request, c.read_scope))
            except Problem as exc:
                return problem(request, exc, c.item_path)
            return respond(request, c.item_path, 200, found.body)

        async def replace(request: Request) -> Response:
            try:
                viewer = authorise(request, c.write_scope)
                old = visible(request, viewer)
                body = await json_body(request, c.item_path)
                parent, name, owner = admit_any(c.kind, body, viewer, request.path_params, old)
                if c.kind in (Kind.EVENT, Kind.REPORT, Kind.SUBSCRIPTION) and old.parent != parent:
                    raise Problem(
                        400,
                        f"a {c.kind.value.lower()} cannot move to another "
                        f"{'event' if c.kind is Kind.REPORT else 'program'}",
                    )
                stored = db.replace(c.kind, old.id, body, name=name, owner=owner)
                if stored is None:
                    raise Problem(404, f"no {c.kind.value.lower()} {old.id!r}")
            except StoreConflict as exc:
                return problem(request, Problem(409, str(exc)), c.item_path)
            except Problem as exc:
                return problem(request, exc, c.item_path)
            notify(c.kind, Operation.UPDATE, stored, owner, viewer.grant.client.client_id)
            return respond(request, c.item_path, 200, stored)

        async def delete(request: Request) -> Response:
            try:
                viewer = authorise(request, c.write_scope)
                old = visible(request, viewer)
                child = {Kind.PROGRAM: Kind.EVENT, Kind.VEN: Kind.RESOURCE}.get(c.kind)
                if child is not None and (n := db.count(child, parent=old.id)):
                    raise Problem(
                        409,
                        f"{c.kind.value.lower()} {old.id} still has {n} "
                        f"{child.value.lower()}(s); delete them first",
                    )
                gone = db.delete(c.kind, old.id)
                if gone is None:
                    raise Problem(404, f"no {c.kind.value.lower()} {old.id!r}")
            except Problem as exc:
                return problem(request, exc, c.item_path)
            notify(c.kind, Operation.DELETE, gone, old.owner, viewer.grant.client.client_id)
            return respond(request, c.item_path, 200, gone)

        handlers: list[tuple[str, str, Callable[[Request], Awaitable[Response]]]] = [
            (c.path, "GET", search),
            (c.path, "POST", create),
            (c.item_path, "GET", read),
            (c.item_path, "PUT", replace),
            (c.item_path, "DELETE", delete),
        ]
        for path, method, handler in handlers:
            app.add_api_route(
                path,
                handler,
                methods=[method],
                include_in_schema=False,
                name=f"{method.lower()} {path}",
            )

    for collection in collections.values():
        routes(collection)

    def program_of(event_id: str) -> str | None:
        event = db.get(Kind.EVENT, event_id)
        return None if event is None else str(event.body.get("programID"))

    async def definition(request: Request) -> Response:
        return JSONResponse(schema.published(api))

    if v31:

        async def auth_server(request: Request) -> Response:
            # 3.1.0 discovery: where to fetch tokens, as an absolute URL of this API
            base = str(request.url.replace(query="", fragment="")).removesuffix("/auth/server")
            return respond(request, "/auth/server", 200, {"tokenURL": f"{base}/auth/token"})

        async def notifiers(request: Request) -> Response:
            # the definition asks read_all, which 3.1.0 gives business logic only; VENs need
            # this too to learn how they are told, so any valid token may ask
            try:
                authorise(request, None)
            except Problem as exc:
                return problem(request, exc, "/notifiers")
            return respond(request, "/notifiers", 200, {"WEBHOOK": True})

        app.add_api_route("/auth/server", auth_server, methods=["GET"], include_in_schema=False)
        app.add_api_route("/notifiers", notifiers, methods=["GET"], include_in_schema=False)

    app.add_api_route("/openapi.json", definition, methods=["GET"], include_in_schema=False)
    return app


def build_server(
    store: ObjectStore | Path,
    token_issuer: TokenIssuer,
    *,
    clients: ClientRegistry | None = None,
    limits: VtnLimits | None = None,
    on_change: Callable[[Change], None] | None = None,
) -> FastAPI:
    """Both APIs in one app: OpenADR 3.0.1 at the root (where erab served it first) and also
    under :data:`PREFIX_3_0`, and 3.1.0 under :data:`PREFIX_3_1` (``/openadr3/3.1.0``, the
    base path 3.1 clients are pointed at).
    One store (each API's objects apart: their targets mean different things), one client
    registry (a client registered once may use either), one token key (each token is bound
    to the API that issued it).  The 3.1.0 app is ``app.state.v31``."""
    root = build_app(store, token_issuer, clients=clients, limits=limits, on_change=on_change)
    v31 = build_app(
        root.state.store,
        token_issuer,
        clients=root.state.clients,
        limits=limits,
        on_change=on_change,
        api=API_3_1,
    )
    v301 = build_app(
        root.state.store,
        token_issuer,
        clients=root.state.clients,
        limits=limits,
        on_change=on_change,
    )
    for prefix, child in ((PREFIX_3_1, v31), (PREFIX_3_0, v301)):
        root.mount(prefix, child)
        root.state.mounted.append(child)
    root.state.v31 = v31
    return root


def _response_schema(template: str, method: str, status: int, api: str) -> dict[str, Any]:
    found = schema.response_schema(template, method, status, api)
    if found is not None:
        return found
    name = "authError" if template == "/auth/token" and status < 500 else "problem"
    return {"$ref": f"#/components/schemas/{name}"}


_OBJECT_ID = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")


def _equals(name: str, value: str) -> Callable[[Mapping[str, Any]], bool]:
    return lambda body: body.get(name) == value


def _report_of_program(
    program_id: str, program_of: Callable[[str], str | None]
) -> Callable[[Mapping[str, Any]], bool]:
    def check(body: Mapping[str, Any]) -> bool:
        if "programID" in body:
            return bool(body["programID"] == program_id)
        return program_of(str(body.get("eventID"))) == program_id

    return check


def _query(
    request: Request,
    c: _Collection,
    api: str = API_3_0,
    program_of: Callable[[str], str | None] | None = None,
) -> tuple[int, int, Callable[[Mapping[str, Any]], bool]]:
    """``skip``, ``limit`` and the search filter of a GET on a collection; a bad parameter is
    a 400 naming it.  ``program_of`` gives an event's program (a 3.1.0 report names only its
    event)."""
    q = request.query_params

    def integer(name: str, default: int, low: int, high: int | None) -> int:
        text = q.get(name)
        if text is None:
            return default
        if (
            not re.fullmatch(r"\d{1,9}", text)
            or int(text) < low
            or (high is not None and int(text) > high)
        ):
            bound = f"{low} to {high}" if high is not None else f"≥ {low}"
            raise Problem(400, f"query parameter {name}={text!r}: give an integer {bound}")
        return int(text)

    skip = integer("skip", 0, 0, None)
    limit = integer("limit", MAX_LIMIT, 0, MAX_LIMIT)
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    for name in ("programID", "eventID", "venID"):
        if name in c.filters and (value := q.get(name)) is not None:
            if not _OBJECT_ID.match(value):
                raise Problem(400, f"query parameter {name}={value!r} is not an objectID")
            if name == "programID" and c.kind is Kind.REPORT and program_of is not None:
                checks.append(_report_of_program(value, program_of))
            else:
                checks.append(_equals(name, value))
    for name in ("clientName", "venName", "resourceName"):
        if name in c.filters and (value := q.get(name)) is not None:
            checks.append(_equals(name, value))
    if "targets" in c.filters and api != API_3_0:
        # 3.1.0: ?targets=a&targets=b finds the objects holding every one of them
        wanted_targets = q.getlist("targets")
        if any(not t or len(t) > 128 for t in wanted_targets):
            raise Problem(400, "query parameter targets: give strings of 1 to 128 characters")
        if wanted_targets:
            checks.append(
                lambda body: set(wanted_targets) <= set(map(str, body.get("targets") or ()))
            )
    elif "targets" in c.filters:
        target_type, values = q.get("targetType"), q.getlist("targetValues")
        if values and not target_type:
            raise Problem(400, "query parameter targetValues needs a targetType")
        if target_type:
            checks.append(lambda body: has_target(body.get("targets"), target_type, values))
    if "objects" in c.filters and (objects := q.getlist("objects")):
        unknown = sorted(set(objects) - {k.value for k in Kind})
        if unknown:
            raise Problem(
                400, f"query parameter objects: {', '.join(unknown)} is not an object type"
            )
        checks.append(
            lambda body: any(
                set(objects) & set(entry.get("objects", ()))
                for entry in body.get("objectOperations", ())
            )
        )
    return skip, limit, lambda body: all(check(body) for check in checks)
