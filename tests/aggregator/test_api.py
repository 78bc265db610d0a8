"""The RA's REST API: each role allowed and refused, bad input refused with a reason, changes
audited with the operator's name, and one call over real TCP to a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from erab.aggregator import DrEvent, EventBook, EventRequest, EventTrigger, Fanout, Registry
from erab.aggregator.api import create_app
from erab.clock import JST, SimulatedClock
from erab.security import (
    AuditKind,
    AuditLog,
    EnvelopeSigner,
    MemorySequenceCounter,
    OperatorDirectory,
    Role,
    SqliteAuditStore,
)
from erab.security.operators import Argon2Parameters
from erab.store import Gateway, Resource, Site, SqliteStore

FAST_ARGON2 = Argon2Parameters(time_cost=1, memory_cost_kib=1024, parallelism=1)
PASSWORD = "correct horse battery"
NOW = datetime(2026, 8, 3, 10, 0, tzinfo=JST)
FLEX_KW = 420.0
NAMES = {
    Role.VIEWER: "vera",
    Role.OPERATOR: "otto",
    Role.SECURITY_OFFICER: "sofia",
    Role.ADMIN: "ada",
}


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send_command(self, gateway_id: str, envelope_wire: bytes) -> None:
        self.sent.append((gateway_id, envelope_wire))


class Backend:
    """The RA as the API sees it; the registry is opened per thread (a SQLite connection
    belongs to the thread that opened it, and the test client serves from its own)."""

    def __init__(self, store_path: Path, clock: SimulatedClock, audit: AuditLog) -> None:
        self.store_path = store_path
        self.clock = clock
        self.audit = audit
        self.events = EventBook(clock, audit=audit)
        self.fanout: Fanout | None = None
        self._local = threading.local()

    @property
    def registry(self) -> Registry:
        if not hasattr(self._local, "registry"):
            self._local.registry = Registry(SqliteStore(self.store_path), self.clock)
        registry: Registry = self._local.registry
        return registry

    def fleet_summary(self) -> dict[str, Any]:
        return {"resources": 1, "online": 1, "gateways": 2, "power_kw": 1.5,
                "flexibility_down_kw": FLEX_KW, "flexibility_up_kw": 3.0}  # fmt: skip

    def flexibility_kw(self, direction: str) -> float | None:
        return FLEX_KW if direction == "down" else 3.0

    def audit_tail(self, n: int) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.audit.store.tail(n)]


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(NOW, speed=0)


@pytest.fixture
def audit(tmp_path: Path, clock: SimulatedClock) -> AuditLog:
    return AuditLog(SqliteAuditStore(tmp_path / "audit.sqlite"), clock)


@pytest.fixture
def operators(tmp_path: Path, clock: SimulatedClock, audit: AuditLog) -> OperatorDirectory:
    d = OperatorDirectory(tmp_path / "operators.sqlite", clock, audit,
                          argon2_parameters=FAST_ARGON2)  # fmt: skip
    for role, name in NAMES.items():
        d.add(name, role, PASSWORD)
    return d


@pytest.fixture
def tokens(operators: OperatorDirectory) -> dict[Role, str]:
    return {role: operators.issue_token(name, "test") for role, name in NAMES.items()}


@pytest.fixture
def backend(tmp_path: Path, clock: SimulatedClock, audit: AuditLog) -> Backend:
    path = tmp_path / "ra.sqlite"
    registry = Registry(SqliteStore(path), clock)
    registry.add_site(Site("home-1", "Home 1"))
    registry.add_site(Site("store-1", "Store 1", kind="store"))
    registry.add_gateway(Gateway("gw-1", "home-1"))
    registry.add_gateway(Gateway("gw-2", "store-1"))
    registry.add_resource(Resource("home-1.battery-1", "home-1", "gw-1", "",
                                   "fe00000000000000000000000001", "027d01",
                                   rated_kw=3.0, rated_kwh=9.8))  # fmt: skip
    return Backend(path, clock, audit)


@pytest.fixture
def app(backend: Backend, operators: OperatorDirectory, audit: AuditLog) -> FastAPI:
    return create_app(backend, operators, audit=audit)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event_body(start: str = "2026-08-03T14:00:00+09:00", **changes: Any) -> dict[str, Any]:
    return {"target_kw": -300.0, "start": start, "duration_minutes": 60, **changes}


def booked(backend: Backend, start_h: int = 16) -> str:
    request = EventRequest(-100.0, NOW.replace(hour=start_h), timedelta(hours=1))
    return backend.events.create(request).event_id


# -- who may do what ---------------------------------------------------------------------------

READS = ["/api/v1/sites", "/api/v1/sites/home-1", "/api/v1/gateways", "/api/v1/resources",
         "/api/v1/fleet", "/api/v1/events", "/api/v1/commands"]  # fmt: skip


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("path", READS)
def test_every_role_may_read_the_registry_fleet_events_and_commands(
    client: TestClient, tokens: dict[Role, str], role: Role, path: str
) -> None:
    response = client.get(path, headers=auth(tokens[role]))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("role", "expected"),
    [(Role.VIEWER, 403), (Role.OPERATOR, 201), (Role.SECURITY_OFFICER, 403), (Role.ADMIN, 201)],
)
def test_only_operators_and_admins_create_events(
    client: TestClient, tokens: dict[Role, str], backend: Backend, role: Role, expected: int
) -> None:
    response = client.post("/api/v1/events", json=event_body(), headers=auth(tokens[role]))
    assert response.status_code == expected, response.text
    assert len(backend.events.events) == (1 if expected == 201 else 0)
    if expected == 403:
        assert "manage_dr_events" in response.json()["detail"]


@pytest.mark.parametrize(
    ("role", "expected"),
    [(Role.VIEWER, 403), (Role.OPERATOR, 200), (Role.SECURITY_OFFICER, 403), (Role.ADMIN, 200)],
)
def test_only_operators_and_admins_cancel_events(
    client: TestClient, tokens: dict[Role, str], backend: Backend, role: Role, expected: int
) -> None:
    event_id = booked(backend)
    response = client.post(f"/api/v1/events/{event_id}/cancel", headers=auth(tokens[role]))
    assert response.status_code == expected, response.text
    stage = backend.events.get(event_id).stage.value
    assert stage == ("cancelled" if expected == 200 else "received")


@pytest.mark.parametrize(
    ("role", "expected"),
    [(Role.VIEWER, 403), (Role.OPERATOR, 403), (Role.SECURITY_OFFICER, 200), (Role.ADMIN, 200)],
)
def test_only_security_officers_and_admins_read_the_audit_tail(
    client: TestClient, tokens: dict[Role, str], role: Role, expected: int
) -> None:
    response = client.get("/api/v1/audit?n=5", headers=auth(tokens[role]))
    assert response.status_code == expected, response.text
    if expected == 200:
        records = response.json()
        assert len(records) == 5
        assert {"position", "kind", "actor", "record_hash"} <= set(records[-1])
    else:
        assert "view_audit_log" in response.json()["detail"]


def test_a_refused_permission_is_audited(
    client: TestClient, tokens: dict[Role, str], audit: AuditLog
) -> None:
    client.get("/api/v1/audit", headers=auth(tokens[Role.VIEWER]))
    last = audit.store.tail(1)[0]
    assert (last.actor, last.subject, last.details["action"]) == (
        "vera", "view_audit_log", "permission_denied")  # fmt: skip


@pytest.mark.parametrize("path", [*READS, "/api/v1/audit"])
def test_a_call_without_a_token_is_401_with_a_bearer_challenge(
    client: TestClient, audit: AuditLog, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in response.json()["detail"]
    assert audit.store.tail(1)[0].details["outcome"] == "no_credentials"


def test_a_create_without_a_token_is_401_and_creates_nothing(
    client: TestClient, backend: Backend
) -> None:
    response = client.post("/api/v1/events", json=event_body())
    assert response.status_code == 401
    assert backend.events.events == {}


@pytest.mark.parametrize(
    "header", ["Bearer erab_0123456789ab_notthesecret", "Bearer nonsense", "Basic dmVyYTpwdw=="]
)
def test_a_bad_token_is_401(client: TestClient, header: str) -> None:
    response = client.get("/api/v1/sites", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_an_expired_token_is_401_naming_the_expiry(
    client: TestClient, tokens: dict[Role, str], clock: SimulatedClock
) -> None:
    clock.advance(timedelta(days=91).total_seconds())
    response = client.get("/api/v1/sites", headers=auth(tokens[Role.ADMIN]))
    assert response.status_code == 401
    assert "invalid_token" in response.headers["WWW-Authenticate"]
    assert "expired" in response.json()["detail"]


def test_a_revoked_token_is_401(
    client: TestClient, operators: OperatorDirectory, tokens: dict[Role, str]
) -> None:
    operators.revoke_token(tokens[Role.OPERATOR].split("_")[1])
    response = client.get("/api/v1/sites", headers=auth(tokens[Role.OPERATOR]))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


# -- what the endpoints answer -----------------------------------------------------------------


def test_sites_gateways_and_resources_come_from_the_registry(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    h = auth(tokens[Role.VIEWER])
    assert [s["site_id"] for s in client.get("/api/v1/sites", headers=h).json()] == [
        "home-1", "store-1"]  # fmt: skip
    site = client.get("/api/v1/sites/home-1", headers=h).json()
    assert [g["gateway_id"] for g in site["gateways"]] == ["gw-1"]
    assert [r["resource_id"] for r in site["resources"]] == ["home-1.battery-1"]
    gateways = client.get("/api/v1/gateways?site=store-1", headers=h).json()
    assert [(g["gateway_id"], g["status"]) for g in gateways] == [("gw-2", "enrolled")]
    resources = client.get("/api/v1/resources?gateway=gw-1", headers=h).json()
    assert resources[0]["eoj"] == "027d01" and resources[0]["rated_kw"] == 3.0
    assert client.get("/api/v1/resources?gateway=gw-2", headers=h).json() == []


@pytest.mark.parametrize(
    ("path", "named"),
    [("/api/v1/sites/home-9", "home-9"), ("/api/v1/gateways?site=home-9", "home-9"),
     ("/api/v1/resources?gateway=gw-9", "gw-9"), ("/api/v1/events/ev-1", "ev-1"),
     ("/api/v1/commands?event=ev-1", "ev-1")],
)  # fmt: skip
def test_an_unknown_id_is_404_naming_it(
    client: TestClient, tokens: dict[Role, str], path: str, named: str
) -> None:
    response = client.get(path, headers=auth(tokens[Role.VIEWER]))
    assert response.status_code == 404
    assert repr(named) in response.json()["detail"]


def test_fleet_is_the_backends_summary(client: TestClient, tokens: dict[Role, str]) -> None:
    fleet = client.get("/api/v1/fleet", headers=auth(tokens[Role.VIEWER])).json()
    assert fleet["flexibility_down_kw"] == FLEX_KW and fleet["gateways"] == 2


def test_a_created_event_is_audited_with_the_operators_name_and_listed(
    client: TestClient, tokens: dict[Role, str], audit: AuditLog
) -> None:
    response = client.post("/api/v1/events", json=event_body(product="primary"),
                           headers=auth(tokens[Role.OPERATOR]))  # fmt: skip
    assert response.status_code == 201
    event = response.json()
    assert (event["stage"], event["requested_by"], event["source"]) == ("received", "otto", "api")
    assert (event["start"], event["end"]) == ("2026-08-03T14:00:00+09:00",
                                              "2026-08-03T15:00:00+09:00")  # fmt: skip
    assert event["product"] == "primary" and event["warnings"] == []
    record = [r for r in audit.store.records() if r.kind is AuditKind.COMMAND][-1]
    assert (record.actor, record.subject) == ("otto", f"event:{event['event_id']}")
    listed = client.get("/api/v1/events", headers=auth(tokens[Role.VIEWER])).json()
    assert [e["event_id"] for e in listed] == [event["event_id"]]
    shown = client.get(f"/api/v1/events/{event['event_id']}", headers=auth(tokens[Role.VIEWER]))
    assert shown.json()["target_kw"] == -300.0


def test_a_target_beyond_the_fleets_flexibility_is_accepted_with_a_warning(
    client: TestClient, tokens: dict[Role, str]
) -> None:
    response = client.post("/api/v1/events", json=event_body(target_kw=-500.0),
                           headers=auth(tokens[Role.OPERATOR]))  # fmt: skip
    assert response.status_code == 201
    assert "more than the fleet's flexibility 420 kW" in response.json()["warnings"][0]


def test_a_cancel_is_audited_with_the_operators_name_and_twice_is_409(
    client: TestClient, tokens: dict[Role, str], backend: Backend, audit: AuditLog
) -> None:
    event_id = booked(backend)
    h = auth(tokens[Role.ADMIN])
    response = client.post(f"/api/v1/events/{event_id}/cancel", json={"reason": "test"}, headers=h)
    assert response.json()["history"][-1]["actor"] == "ada"
    record = [r for r in audit.store.records() if r.kind is AuditKind.COMMAND][-1]
    assert (record.actor, record.details["event"], record.details["reason"]) == (
        "ada", "cancel", "test")  # fmt: skip
    again = client.post(f"/api/v1/events/{event_id}/cancel", headers=h)
    assert again.status_code == 409
    assert "is cancelled: it cannot cancel" in again.json()["detail"]


def test_cancelling_an_unknown_event_is_404(client: TestClient, tokens: dict[Role, str]) -> None:
    response = client.post("/api/v1/events/ev-9/cancel", headers=auth(tokens[Role.OPERATOR]))
    assert response.status_code == 404 and "'ev-9'" in response.json()["detail"]


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (event_body(start="2026-08-03T14:00:00"), "needs a time zone"),
        (event_body(start="at two"), "is not an RFC 3339 time"),
        (event_body(target_kw=0), "non-zero number of kW"),
        (event_body(duration_minutes=0), "duration must be positive"),
        (event_body(duration_minutes=60 * 25), "longer than 1 day"),
        (event_body(duration_minutes=1e300), "far too long"),
        (event_body(start="2026-08-03T08:00:00+09:00"), "already over"),
        ({"start": "2026-08-03T14:00:00+09:00", "duration_minutes": 60}, "target_kw: Field"),
        ({**event_body(), "target": -3}, "target: Extra inputs are not permitted"),
        (event_body(target_kw="lots"), "target_kw: Input should be a valid number"),
    ],
)  # fmt: skip
def test_bad_event_input_is_422_saying_what_was_wrong(
    client: TestClient, tokens: dict[Role, str], backend: Backend, body: Any, says: str
) -> None:
    response = client.post("/api/v1/events", json=body, headers=auth(tokens[Role.OPERATOR]))
    assert response.status_code == 422, response.text
    assert says in response.json()["detail"]
    assert backend.events.events == {}


def test_malformed_json_is_422_with_a_message(client: TestClient, tokens: dict[Role, str]) -> None:
    response = client.post(
        "/api/v1/events", content=b'{"target_kw": -300,',
        headers={**auth(tokens[Role.OPERATOR]), "Content-Type": "application/json"},
    )  # fmt: skip
    assert response.status_code == 422
    assert response.json()["detail"].startswith("the body is not valid JSON at character")


def test_an_overlapping_event_is_409_naming_the_other(
    client: TestClient, tokens: dict[Role, str], backend: Backend
) -> None:
    first = booked(backend, start_h=14)
    response = client.post("/api/v1/events", json=event_body(start="2026-08-03T14:30:00+09:00"),
                           headers=auth(tokens[Role.OPERATOR]))  # fmt: skip
    assert response.status_code == 409
    assert f"overlaps event {first}" in response.json()["detail"]
    assert list(backend.events.events) == [first]


@pytest.mark.parametrize("n", ["0", "1001", "many"])
def test_an_audit_tail_size_out_of_range_is_422(
    client: TestClient, tokens: dict[Role, str], n: str
) -> None:
    response = client.get(f"/api/v1/audit?n={n}", headers=auth(tokens[Role.SECURITY_OFFICER]))
    assert response.status_code == 422 and response.json()["detail"].startswith("n: ")


# -- commands ----------------------------------------------------------------------------------


def test_commands_are_the_fanouts_with_their_stage_and_event(
    client: TestClient, tokens: dict[Role, str], backend: Backend, clock: SimulatedClock
) -> None:
    event_id = booked(backend)
    signer = EnvelopeSigner(Ed25519PrivateKey.generate(), clock, MemorySequenceCounter())
    backend.fanout = Fanout(Publisher(), signer, clock)
    body = {"type": "battery_power", "device_id": "home-1.battery-1", "power_w": -2000}
    asyncio.run(backend.fanout.send_many([("gw-1", body)], event_id=event_id))
    h = auth(tokens[Role.VIEWER])
    [command] = client.get(f"/api/v1/commands?event={event_id}", headers=h).json()
    assert (command["gateway"], command["stage"], command["event"], command["reason"]) == (
        "gw-1", "sent", event_id, None)  # fmt: skip
    assert command["sequence"] >= 1 and command["device_id"] == "home-1.battery-1"
    assert client.get("/api/v1/commands", headers=h).json() == [command]


def test_the_openapi_document_lists_every_endpoint(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/sites", "/api/v1/events", "/api/v1/events/{event_id}/cancel",
            "/api/v1/commands", "/api/v1/audit"} <= set(paths)  # fmt: skip


# -- a real server -----------------------------------------------------------------------------


def test_a_real_uvicorn_server_answers_an_authenticated_call_over_tcp(
    app: FastAPI, tokens: dict[Role, str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 10
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.started
            response = httpx.get(f"http://127.0.0.1:{port}/api/v1/sites/store-1",
                                 headers=auth(tokens[Role.VIEWER]), timeout=5)  # fmt: skip
            refused = httpx.get(f"http://127.0.0.1:{port}/api/v1/sites", timeout=5)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    assert response.status_code == 200 and response.json()["kind"] == "store"
    assert [g["gateway_id"] for g in response.json()["gateways"]] == ["gw-2"]
    assert refused.status_code == 401
    assert not thread.is_alive()


# -- a backend that plans and dispatches (the RA service) --------------------------------------


class DispatchingBackend(Backend):
    """Plans what it is given, as the RA service does; refuses while 'not connected'."""

    def __init__(self, store_path: Path, clock: SimulatedClock, audit: AuditLog) -> None:
        super().__init__(store_path, clock, audit)
        self.connected = True
        self.cancelled_by: list[str] = []

    async def create_event(self, request: EventRequest) -> DrEvent:
        if not self.connected:
            raise RuntimeError("the RA is not connected to the broker yet")
        event = self.events.create(request, flexibility_kw=FLEX_KW)
        return self.events.advance(event.event_id, EventTrigger.PLAN, "ra")

    async def cancel_event(self, event_id: str, actor: str) -> DrEvent:
        self.cancelled_by.append(actor)
        return self.events.cancel(event_id, actor)


@pytest.fixture
def dispatching(
    backend: Backend, operators: OperatorDirectory, audit: AuditLog, clock: SimulatedClock
) -> Iterator[tuple[DispatchingBackend, TestClient]]:
    ra = DispatchingBackend(backend.store_path, clock, audit)
    with TestClient(create_app(ra, operators, audit=audit)) as c:
        yield ra, c


def test_a_backend_that_dispatches_plans_the_events_created_and_cancelled_over_the_api(
    dispatching: tuple[DispatchingBackend, TestClient], tokens: dict[Role, str]
) -> None:
    ra, client = dispatching
    h = auth(tokens[Role.OPERATOR])
    created = client.post("/api/v1/events", json=event_body(), headers=h)
    assert created.status_code == 201 and created.json()["stage"] == "planned"
    event_id = created.json()["event_id"]
    overlap = client.post("/api/v1/events", json=event_body(), headers=h)
    assert overlap.status_code == 409 and event_id in overlap.json()["detail"]
    cancelled = client.post(f"/api/v1/events/{event_id}/cancel", headers=h)
    assert cancelled.json()["stage"] == "cancelled" and ra.cancelled_by == ["otto"]


def test_a_backend_that_cannot_act_now_is_503_saying_why(
    dispatching: tuple[DispatchingBackend, TestClient], tokens: dict[Role, str]
) -> None:
    ra, client = dispatching
    ra.connected = False
    response = client.post("/api/v1/events", json=event_body(), headers=auth(tokens[Role.ADMIN]))
    assert response.status_code == 503
    assert response.json()["detail"] == "the RA is not connected to the broker yet"
    assert ra.events.events == {}
