"""The operator's console: server-rendered pages over the RA, in the RA's own ASGI app.

:func:`create_console` returns a FastAPI app with the pages (Jinja2), their JSON feeds for
live updates (``/ui/api/...``, polled by the page's script every few seconds), the static
files (erab's own CSS, script and chart code: nothing is fetched from elsewhere), and, when
``api`` is given, the RA's REST API (:func:`erab.aggregator.api.create_app`) mounted beside
them, so one listener serves both.

Every page and feed checks the operator's role (:mod:`erab.web.auth`); every POST checks the
session's CSRF token.  Data comes from :mod:`erab.web.views`, which computes it from the RA:
the templates only lay it out.

Read-only feeds the REST API lacks (all behind a browser session, not an API token):
``/ui/api/fleet`` (per-site rows), ``/ui/api/fleet/series``, ``/ui/api/sites/{id}``,
``/ui/api/events``, ``/ui/api/events/{id}``, ``/ui/api/gateways``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp

from erab.aggregator.api import EventDispatcher, RaBackend
from erab.aggregator.events import EventError, EventRequest, check_request
from erab.clock import JST
from erab.web import auth
from erab.web.auth import Account, ActionRefused, LoginFailed, SecurityDesk, Session, Sessions
from erab.web.i18n import LANGUAGES, SCRIPT_LABELS, pick_language, translator
from erab.web.settlement import GuardedSettlement, SettlementSource
from erab.web.views import (
    Cache,
    FleetHistory,
    NotFound,
    event_view,
    events_view,
    fleet_series,
    fleet_view,
    gateways_view,
    site_view,
)

HERE = Path(__file__).parent
FIRST_ROWS = 100  # fleet rows in the page itself; the page's script draws the rest
GATEWAYS_PER_PAGE = 200
MAX_FORM_BYTES = 16_384
ROLES = ("viewer", "operator", "security_officer", "admin")


@dataclass
class ConsoleHooks:
    """What a deployment can add that the RA does not keep itself."""

    meter_history: Callable[[str], list[dict[str, Any]] | None] | None = None
    """Site id → its meter's 30-minute slots (``slot``, ``import_kwh``, ``export_kwh``)."""
    outbox_depth: Callable[[], Mapping[str, int]] | None = None
    """Gateway id → messages waiting in its outbox (a fleet in the same process knows)."""
    settlement: SettlementSource = field(default_factory=GuardedSettlement)


class _Unauthenticated(Exception):
    pass


class _Forbidden(Exception):
    def __init__(self, account: Account, permission: str) -> None:
        super().__init__(
            f"operator {account.name!r} (role {account.role}) may not "
            f"{permission.replace('_', ' ')}"
        )


class _BadCsrf(Exception):
    pass


class _MustChangePassword(Exception):
    """The operator logged in with a password someone else chose: the password page first."""


_PAGES = (  # (path, label key, permission)
    ("/fleet", "fleet", auth.VIEW_TELEMETRY),
    ("/events", "events", auth.VIEW_EVENTS),
    ("/gateways", "gateways", auth.VIEW_TELEMETRY),
    ("/products", "products", auth.VIEW_EVENTS),
    ("/settlement", "settlement", auth.VIEW_EVENTS),
    ("/security", "security", auth.VIEW_AUDIT_LOG),
    ("/operators", "operators", auth.MANAGE_OPERATORS),
)


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _cell(value: Any) -> str:
    """Any value of another module's table, for a person: numbers rounded, lists joined."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value) or "—"
    return str(value)


def _local(value: Any) -> str:
    """An ISO time as JST wall time (the market's zone), for people."""
    if not value:
        return "—"
    when = datetime.fromisoformat(str(value))
    return when.astimezone(JST).strftime("%Y-%m-%d %H:%M:%S")



def create_console(
    ra: RaBackend,
    desk: SecurityDesk,
    *,
    api: ASGIApp | None = None,
    hooks: ConsoleHooks | None = None,
    secure_cookies: bool = False,
    sample_every_s: float = 2.0,
    history: FleetHistory | None = None,
    cache_ttl_s: float = 1.0,
) -> FastAPI:
    """The console over ``ra``; logins and security actions through ``desk``.

    ``api`` (the RA's REST API app) is mounted under the same server; ``secure_cookies`` adds
    ``Secure`` to the session cookie (set it when serving over TLS).  The fleet is sampled every
    ``sample_every_s`` real seconds while the app runs (its lifespan) for the charts; the
    fleet's figures are computed at most once per ``cache_ttl_s`` real seconds."""
    hooks = hooks or ConsoleHooks()
    sessions = Sessions()
    fleet_history = history if history is not None else FleetHistory()
    cache = Cache(ttl_s=cache_ttl_s)  # one fleet computation a second, however many poll

    def fleet_now() -> dict[str, Any]:
        value: dict[str, Any] = cache.get("fleet", lambda: fleet_view(ra))
        return value
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["num"] = _fmt
    templates.env.filters["local"] = _local
    templates.env.filters["cell"] = _cell

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(sample_forever(ra, fleet_history, sample_every_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    app = FastAPI(title="erab operator console", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)  # fmt: skip
    app.state.sessions = sessions
    app.state.history = fleet_history
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    # -- who is asking ----------------------------------------------------------------------
    def source_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def session_of(request: Request) -> Session | None:
        return sessions.get(request.cookies.get(auth.SESSION_COOKIE))

    def account_of(session: Session | None) -> Account | None:
        return None if session is None or session.operator is None else desk.account(
            session.operator)

    def require(request: Request, permission: str) -> tuple[Session, Account]:
        session = session_of(request)
        if session is None or session.operator is None:
            raise _Unauthenticated()
        account = desk.account(session.operator)
        if account is None:  # disabled or removed since the login
            sessions.drop(session.session_id)
            raise _Unauthenticated()
        if account.must_change_password:
            raise _MustChangePassword()
        if not account.may(permission):
            desk.refused(account, permission, source_of(request))
            raise _Forbidden(account, permission)
        return session, account

    async def form_of(request: Request, session: Session | None) -> dict[str, str]:
        """The POSTed form, once its CSRF token matched the session's."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            raise _BadCsrf()
        fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                                keep_blank_values=True).items()}  # fmt: skip
        presented = fields.get(auth.CSRF_FIELD) or request.headers.get(auth.CSRF_HEADER)
        if not auth.csrf_ok(session, presented):
            raise _BadCsrf()
        return fields

    def language(request: Request) -> str:
        return pick_language(request.headers.get("accept-language"), request.cookies.get("lang"))

    def wants_json(request: Request) -> bool:
        return request.url.path.startswith("/ui/api/")

    def render(request: Request, name: str, context: dict[str, Any], *,
               session: Session | None = None, account: Account | None = None,
               status_code: int = 200) -> HTMLResponse:  # fmt: skip
        lang = language(request)
        flash = []
        if session is not None:
            flash, session.flash = session.flash, []
        nav = [(path, key) for path, key, perm in _PAGES
               if account is not None and not account.must_change_password
               and account.may(perm)]  # fmt: skip
        response = templates.TemplateResponse(request, name, {
            "t": translator(lang), "lang": lang, "other_lang": "ja" if lang == "en" else "en",
            "labels_json": json.dumps({k: translator(lang)(k) for k in SCRIPT_LABELS},
                                      ensure_ascii=False),
            "account": account, "csrf": None if session is None else session.csrf_token,
            "nav": nav, "flash": flash, "path": request.url.path,
            "may": (lambda p: account is not None and account.may(p)), "perm": auth,
            **context,
        }, status_code=status_code)  # fmt: skip
        response.headers["Content-Language"] = lang
        return response

    # -- refusals -----------------------------------------------------------------------------
    @app.exception_handler(_Unauthenticated)
    async def _login_first(request: Request, exc: _Unauthenticated) -> Response:
        if wants_json(request) or request.method != "GET":
            return JSONResponse({"detail": "log in first"}, status_code=401)
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(_MustChangePassword)
    async def _change_first(request: Request, exc: _MustChangePassword) -> Response:
        if wants_json(request) or request.method != "GET":
            return JSONResponse({"detail": "change your password first (/password)"},
                                status_code=403)  # fmt: skip
        return RedirectResponse(f"/password?next={quote(request.url.path)}", status_code=303)

    @app.exception_handler(_Forbidden)
    async def _forbidden(request: Request, exc: _Forbidden) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=403)
        session = session_of(request)
        account = account_of(session)
        return render(request, "error.html", {"title_key": "forbidden", "message": str(exc)},
                      session=session, account=account, status_code=403)  # fmt: skip

    @app.exception_handler(_BadCsrf)
    async def _bad_csrf(request: Request, exc: _BadCsrf) -> Response:
        return PlainTextResponse(
            "refused: the form's CSRF token is missing or does not match this session; reload "
            "the page and try again", status_code=403)  # fmt: skip

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": str(exc)}, status_code=404)
        session = session_of(request)
        account = account_of(session)
        return render(request, "error.html", {"title_key": "not_found", "message": str(exc)},
                      session=session, account=account, status_code=404)  # fmt: skip

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        if not request.url.path.startswith("/api/") and request.url.path != "/metrics":
            # only erab's own scripts and styles; no framing (clickjacking)
            response.headers.setdefault("Content-Security-Policy",
                                        "default-src 'self'; img-src 'self' data:; "
                                        "frame-ancestors 'none'; form-action 'self'")  # fmt: skip
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    def set_session_cookie(response: Response, session: Session) -> None:
        response.set_cookie(auth.SESSION_COOKIE, session.session_id, httponly=True,
                            samesite="strict", secure=secure_cookies, path="/")  # fmt: skip

    # -- login --------------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str = "/fleet") -> Response:
        session = session_of(request) or sessions.new()
        response = render(request, "login.html", {"next": _safe_next(next), "error": None},
                          session=session)  # fmt: skip
        set_session_cookie(response, session)
        return response

    @app.post("/login")
    async def login(request: Request) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        assert session is not None  # form_of refused a missing session
        name, password = form.get("name", "").strip(), form.get("password", "")
        try:
            account = await asyncio.to_thread(desk.login, name, password, source=source_of(request))
        except LoginFailed as exc:
            response = render(request, "login.html",
                              {"next": _safe_next(form.get("next", "/fleet")), "error": str(exc)},
                              session=session, status_code=401)  # fmt: skip
            return response
        # a new session id at login (no session fixation), the old one dropped
        sessions.drop(session.session_id)
        fresh = sessions.new(account.name)
        target = _safe_next(form.get("next", "/fleet"))
        if account.must_change_password:
            target = f"/password?next={quote(target)}"
        redirect = RedirectResponse(target, status_code=303)
        set_session_cookie(redirect, fresh)
        return redirect

    # -- the operator's own password ----------------------------------------------------------
    def logged_in(request: Request) -> tuple[Session, Account]:
        session = session_of(request)
        account = account_of(session)
        if session is None or account is None:
            raise _Unauthenticated()
        return session, account

    @app.get("/password", response_class=HTMLResponse)
    async def password_page(request: Request, next: str = "/fleet") -> Response:
        session, account = logged_in(request)
        return render(request, "password.html", {"next": _safe_next(next), "error": None},
                      session=session, account=account)  # fmt: skip

    @app.post("/password")
    async def change_password(request: Request) -> Response:
        session = session_of(request)
        form = await form_of(request, session)
        session, account = logged_in(request)
        target = _safe_next(form.get("next", "/fleet"))
        new = form.get("new_password", "")
        error = None
        if new != form.get("new_password_again", ""):
            error = translator(language(request))("passwords_differ")
        else:
            try:
                await asyncio.to_thread(desk.change_password, account.name,
                                        form.get("current_password", ""), new,
                                        source=source_of(request))  # fmt: skip
            except (LoginFailed, ActionRefused) as exc:
                error = str(exc)
        if error is not None:
            return render(request, "password.html", {"next": target, "error": error},
                          session=session, account=account, status_code=400)  # fmt: skip
        # a new session id once the password changed (an old cookie is no longer enough)
        sessions.drop(session.session_id)
        fresh = sessions.new(account.name)
        fresh.flash.append(("ok", translator(language(request))("password_changed")))
        redirect = RedirectResponse(target, status_code=303)
        set_session_cookie(redirect, fresh)
        return redirect

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        session = session_of(request)
        await form_of(request, session)
        if session is not None:
            sessions.drop(session.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(auth.SESSION_COOKIE, path="/")
        return response

    @app.get("/lang/{code}")
    async def choose_language(code: str, request: Request) -> Response:
        back = _safe_next(request.headers.get("referer", "/fleet"), same_host=request.url.netloc)
        response = RedirectResponse(back, status_code=303)
        if code in LANGUAGES:
            response.set_cookie("lang", code, samesite="strict", httponly=True, path="/")
        return response

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/fleet", status_code=303)

    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        """For load balancers and the benchmark's baseline: no login, no data."""
        return "ok"

    # -- fleet and sites ------------------------------------------------------------------------
    @app.get("/fleet", response_class=HTMLResponse)
    async def fleet_page(request: Request) -> Response:
        session, account = require(request, auth.VIEW_TELEMETRY)
        return render(request, "fleet.html", {"fleet": fleet_now(), "first_rows": FIRST_ROWS},
                      session=session, account=account)  # fmt: skip

    @app.get("/ui/api/fleet")
    async def fleet_json(request: Request) -> Response:
        require(request, auth.VIEW_TELEMETRY)
        return _json(fleet_now())

    @app.get("/ui/api/fleet/series")
    async def fleet_series_json(request: Request, since: float | None = None) -> dict[str, Any]:
        require(request, auth.VIEW_TELEMETRY)
        return fleet_series(fleet_history, since)

    @app.get("/sites/{site_id}", response_class=HTMLResponse)
    async def site_page(site_id: str, request: Request) -> Response:
        session, account = require(request, auth.VIEW_TELEMETRY)
        view = site_view(ra, site_id, meter_history=hooks.meter_history)
        return render(request, "site.html", {"view": view, "chart": json.dumps(
            view["power_series"])}, session=session, account=account)  # fmt: skip

    @app.get("/ui/api/sites/{site_id}")
    async def site_json(site_id: str, request: Request) -> dict[str, Any]:
        require(request, auth.VIEW_TELEMETRY)
        return site_view(ra, site_id, meter_history=hooks.meter_history)

    # -- events -----------------------------------------------------------------------------------
    @app.get("/events", response_class=HTMLResponse)
    async def events_page(request: Request) -> Response:
        session, account = require(request, auth.VIEW_EVENTS)
        now = ra.events.clock.now()
        default_start = (now + timedelta(minutes=10)).astimezone(JST).strftime("%Y-%m-%dT%H:%M")
        return render(request, "events.html", {"view": events_view(ra),
                      "default_start": default_start}, session=session, account=account)

    @app.get("/ui/api/events")
    async def events_json(request: Request) -> dict[str, Any]:
        require(request, auth.VIEW_EVENTS)
        return events_view(ra)

    baselines = Cache(ttl_s=30.0)  # a settlement reads days of meter data: not every poll

    def baseline_of(event_id: str) -> Mapping[float, float] | None:
        value: Mapping[float, float] | None = baselines.get(
            event_id, lambda: hooks.settlement.baseline(ra, event_id))
        return value

    @app.get("/events/{event_id}", response_class=HTMLResponse)
    async def event_page(event_id: str, request: Request) -> Response:
        session, account = require(request, auth.VIEW_EVENTS)
        view = event_view(ra, event_id, fleet_history, baseline=baseline_of)
        return render(request, "event.html", {"view": view}, session=session, account=account)

    @app.get("/ui/api/events/{event_id}")
    async def event_json(event_id: str, request: Request) -> dict[str, Any]:
        require(request, auth.VIEW_EVENTS)
        return event_view(ra, event_id, fleet_history, baseline=baseline_of)

    @app.post("/events")
    async def create_event(request: Request) -> Response:
        session, account = require(request, auth.MANAGE_DR_EVENTS)
        form = await form_of(request, session)
        try:
            request_ = _event_request(form, account.name)
            check_request(request_, ra.events.clock.now())
            if isinstance(ra, EventDispatcher):
                event = await ra.create_event(request_)
            else:
                event = ra.events.create(request_, flexibility_kw=ra.flexibility_kw(
                    request_.direction))  # fmt: skip
        except (EventError, ValueError, RuntimeError) as exc:
            session.flash.append(("error", f"event refused: {exc}"))
            return RedirectResponse("/events", status_code=303)
        session.flash.append(("ok", f"event {event.event_id} created"
                              + "".join(f"; {w}" for w in event.warnings)))  # fmt: skip
        return RedirectResponse(f"/events/{event.event_id}", status_code=303)

    @app.post("/events/{event_id}/cancel")
    async def cancel_event(event_id: str, request: Request) -> Response:
        session, account = require(request, auth.MANAGE_DR_EVENTS)
        form = await form_of(request, session)
        try:
            ra.events.get(event_id)
        except EventError as exc:
            raise NotFound(str(exc)) from None
        try:
            if isinstance(ra, EventDispatcher):
                await ra.cancel_event(event_id, account.name)
            else:
                ra.events.cancel(event_id, account.name, form.get("reason", ""))
        except EventError as exc:
            session.flash.append(("error", f"not cancelled: {exc}"))
        else:
            session.flash.append(("ok", f"event {event_id} cancelled"))
        return RedirectResponse(f"/events/{event_id}", status_code=303)

    # -- gateways ---------------------------------------------------------------------------------
    def gateways_data() -> dict[str, Any]:
        depth = None if hooks.outbox_depth is None else hooks.outbox_depth()
        return gateways_view(ra, desk.certificates(), depth)

    @app.get("/gateways", response_class=HTMLResponse)
    async def gateways_page(request: Request, page: int = 1) -> Response:
        session, account = require(request, auth.VIEW_TELEMETRY)
        view = gateways_data()
        rows = view["gateways"]
        pages = max(1, -(-len(rows) // GATEWAYS_PER_PAGE))
        page = min(max(1, page), pages)
        shown = rows[(page - 1) * GATEWAYS_PER_PAGE: page * GATEWAYS_PER_PAGE]
        return render(request, "gateways.html", {"view": view, "rows": shown, "page": page,
                      "pages": pages}, session=session, account=account)  # fmt: skip

    @app.get("/ui/api/gateways")
    async def gateways_json(request: Request) -> Response:
        require(request, auth.VIEW_TELEMETRY)
        return _json(gateways_data())

    @app.post("/gateways/{gateway_id}/revoke")
    async def revoke(gateway_id: str, request: Request) -> Response:
        session, account = require(request, auth.REVOKE_CERTIFICATES)
        form = await form_of(request, session)
        try:
            serials = await asyncio.to_thread(desk.revoke_gateway, gateway_id,
                                              form.get("reason") or "unspecified",
                                              actor=account.name)  # fmt: skip
        except ActionRefused as exc:
            session.flash.append(("error", f"not revoked: {exc}"))
        else:
            session.flash.append(("ok", f"revoked {len(serials)} certificate(s) of {gateway_id}"))
        return RedirectResponse("/gateways", status_code=303)

    # -- security ---------------------------------------------------------------------------------
    @app.get("/security", response_class=HTMLResponse)
    async def security_page(request: Request, verify: int = 0) -> Response:
        session, account = require(request, auth.VIEW_AUDIT_LOG)
        assessment = None
        if account.may(auth.RUN_ASSESSMENT):
            assessment = await asyncio.to_thread(desk.assess)
        verification = await asyncio.to_thread(desk.verify_audit) if verify else None
        return render(request, "security.html", {
            "assessment": assessment, "verification": verification,
            "audit": list(reversed(desk.audit_tail(50)))}, session=session, account=account)

    # -- products and settlement (issue 12's modules when present) -------------------------------
    @app.get("/products", response_class=HTMLResponse)
    async def products_page(request: Request) -> Response:
        session, account = require(request, auth.VIEW_EVENTS)
        products = hooks.settlement.products()
        return render(request, "products.html", {"products": products,
                      "missing": hooks.settlement.missing}, session=session, account=account)

    @app.get("/settlement", response_class=HTMLResponse)
    async def settlement_page(request: Request, event: str | None = None) -> Response:
        session, account = require(request, auth.VIEW_EVENTS)
        events = events_view(ra)["events"]
        chosen = event or next((e["event_id"] for e in events), None)
        result = None
        if chosen is not None and hooks.settlement.missing is None:
            result = hooks.settlement.settlement(ra, chosen)
        return render(request, "settlement.html", {
            "events": events, "chosen": chosen, "result": result,
            "missing": hooks.settlement.missing}, session=session, account=account)

    @app.get("/settlement/{event_id}.csv")
    async def settlement_csv(event_id: str, request: Request) -> Response:
        require(request, auth.VIEW_EVENTS)
        try:
            text = hooks.settlement.csv(ra, event_id)
        except ValueError as exc:
            raise NotFound(f"no settlement for {event_id}: {exc}") from None
        if text is None:
            why = hooks.settlement.missing or "not settled"
            raise NotFound(f"no settlement for {event_id}: {why}")
        return PlainTextResponse(text, media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="{event_id}-settlement.csv"'})

    # -- operators (admin) ------------------------------------------------------------------------
    @app.get("/operators", response_class=HTMLResponse)
    async def operators_page(request: Request) -> Response:
        session, account = require(request, auth.MANAGE_OPERATORS)
        return render(request, "operators.html", {"operators": desk.operators(), "roles": ROLES},
                      session=session, account=account)  # fmt: skip

    @app.post("/operators")
    async def add_operator(request: Request) -> Response:
        session, account = require(request, auth.MANAGE_OPERATORS)
        form = await form_of(request, session)
        name = form.get("name", "").strip()
        try:
            await asyncio.to_thread(desk.add_operator, name, form.get("role", ""),
                                    form.get("password", ""), actor=account.name)  # fmt: skip
        except ActionRefused as exc:
            session.flash.append(("error", f"operator not added: {exc}"))
        else:
            session.flash.append(("ok", f"operator {name} added"))
        return RedirectResponse("/operators", status_code=303)

    @app.post("/operators/{name}/disable")
    async def disable_operator(name: str, request: Request) -> Response:
        session, account = require(request, auth.MANAGE_OPERATORS)
        await form_of(request, session)
        try:
            desk.disable_operator(name, actor=account.name)
        except ActionRefused as exc:
            session.flash.append(("error", str(exc)))
        else:
            sessions.drop_operator(name)
            session.flash.append(("ok", f"operator {name} disabled"))
        return RedirectResponse("/operators", status_code=303)

    if api is not None:
        app.mount("/", api)  # the RA's REST API (/api/v1/..., /metrics, /docs): last, so the
        # console's own paths match first
    return app


def _json(data: Any) -> Response:
    """A feed's answer, encoded once (the views give plain JSON types)."""
    return Response(json.dumps(data, separators=(",", ":"), allow_nan=False),
                    media_type="application/json")


def _safe_next(target: str, *, same_host: str | None = None) -> str:
    """A local path to go to after a login (never another site: no open redirect)."""
    if same_host is not None and "://" in target:
        scheme_rest = target.split("://", 1)[1]
        host, _, path = scheme_rest.partition("/")
        target = "/" + path if host == same_host else "/fleet"
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/fleet"
    return target


def _event_request(form: Mapping[str, str], operator: str) -> EventRequest:
    """The event a create form asks for; ValueError naming the field that is wrong."""
    try:
        target_kw = float(form.get("target_kw", ""))
    except ValueError:
        raise ValueError(f"target_kw {form.get('target_kw')!r} is not a number of kW") from None
    if not math.isfinite(target_kw) or target_kw == 0:
        raise ValueError(
            f"target_kw must be a non-zero number of kW, got {form.get('target_kw')!r}")
    try:
        minutes = float(form.get("duration_minutes", ""))
    except ValueError:
        raise ValueError(
            f"duration_minutes {form.get('duration_minutes')!r} is not a number") from None
    if not 0 < minutes <= 24 * 60:
        raise ValueError(f"duration_minutes must be in (0, 1440], got {minutes:g}")
    text = form.get("start", "").strip()
    try:
        start = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"start {text!r} is not a time (e.g. 2026-08-03T14:00)") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=JST)  # the form's datetime-local: wall time in Japan
    product = form.get("product", "").strip() or "tertiary-1"
    return EventRequest(target_kw, start.astimezone(UTC), timedelta(minutes=minutes),
                        product=product, source="console", requested_by=operator)  # fmt: skip


async def sample_forever(ra: RaBackend, history: FleetHistory, every_s: float) -> None:
    """Sample the fleet's power into ``history`` every ``every_s`` real seconds."""
    while True:
        history.sample(ra)
        await asyncio.sleep(every_s)
