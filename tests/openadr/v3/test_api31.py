"""The OpenADR 3.1.0 API, served beside 3.0.1 (``build_server``: 3.1.0 under /openadr3/3.1.0):
the corrected definition, BL and VEN request forms, clientID, string targets matched with AND,
the split read scopes, discovery, notifications, and tokens and objects kept per API.  Every
answer is checked against the 3.1.0 definition (as erab corrects it)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erab.clock import SimulatedClock
from erab.openadr.v3 import PREFIX_3_1, schema
from erab.openadr.v3.app import Change, build_server
from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.models import Kind, Operation, targets_cover
from erab.openadr.v3.notify import deliveries_for
from erab.openadr.v3.store import ObjectStore, Stored

V31 = "3.1.0"
PATHS_3_1 = {
    "/auth/server": ("get",),
    "/auth/token": ("post",),
    "/notifiers": ("get",),
    "/programs": ("get", "post"),
    "/programs/{programID}": ("get", "put", "delete"),
    "/events": ("get", "post"),
    "/events/{eventID}": ("get", "put", "delete"),
    "/reports": ("get", "post"),
    "/reports/{reportID}": ("get", "put", "delete"),
    "/subscriptions": ("get", "post"),
    "/subscriptions/{subscriptionID}": ("get", "put", "delete"),
    "/vens": ("get", "post"),
    "/vens/{venID}": ("get", "put", "delete"),
    "/resources": ("get", "post"),
    "/resources/{resourceID}": ("get", "put", "delete"),
}


def template_of(path: str) -> str:
    import re

    rest = path.removeprefix(PREFIX_3_1)
    for template in PATHS_3_1:
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), rest):
            return template
    raise AssertionError(f"{path} is no 3.1.0 path erab serves")


def assert_conforms_31(r: httpx.Response) -> None:
    """The answer is what the 3.1.0 definition allows for its path, method and status."""
    template = template_of(r.request.url.path)
    wanted = schema.response_schema(template, r.request.method, r.status_code, V31)
    if wanted is None:
        wanted = {"$ref": "#/components/schemas/problem"}
    errors = schema.validate(r.json(), wanted, "response", version=V31)
    assert errors == [], f"{r.request.method} {r.request.url.path}: {errors}"
    if r.status_code >= 400:
        assert r.json()["status"] == r.status_code and r.json()["detail"]


@dataclass
class Vtn31:
    client: TestClient
    store: ObjectStore
    secrets: dict[str, str]
    changes: list[Change]
    tokens: dict[str, str] = field(default_factory=dict)

    def token(self, who: str, prefix: str = PREFIX_3_1) -> str:
        form = {"grant_type": "client_credentials", "client_id": who}
        form["client_secret"] = self.secrets[who]
        r = self.client.post(f"{prefix}/auth/token", data=form)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def call(self, method: str, path: str, who: str | None, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            if who not in self.tokens:
                self.tokens[who] = self.token(who)
            headers["Authorization"] = f"Bearer {self.tokens[who]}"
        r = self.client.request(method, PREFIX_3_1 + path, headers=headers, **kwargs)
        assert_conforms_31(r)
        return r


@pytest.fixture
def vtn31(tmp_path: Path) -> Iterator[Vtn31]:
    clock = SimulatedClock(datetime(2026, 8, 3, 4, 0, tzinfo=UTC), speed=0.0)
    store = ObjectStore(tmp_path / "vtn.sqlite", clock=clock)
    registry = ClientRegistry(store)
    secrets = {
        "bl": registry.register("bl", Role.BL),
        "ven1": registry.register("ven1", Role.VEN, ven_name="ven-one"),
        "ven2": registry.register("ven2", Role.VEN, ven_name="ven-two"),
    }
    changes: list[Change] = []
    app = build_server(store, TokenIssuer(os.urandom(32), clock=clock), on_change=changes.append)
    with TestClient(app) as client:
        yield Vtn31(client, store, secrets, changes)
    store.close()


def bl_ven(name: str, client_id: str, targets: list[str] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"objectType": "BL_VEN_REQUEST", "venName": name, "clientID": client_id}
    if targets is not None:
        body["targets"] = targets
    return body


def event31(program_id: str, targets: list[str] | None = None, kw: float = 100.0) -> dict[str, Any]:
    body: dict[str, Any] = {
        "programID": program_id,
        "intervalPeriod": {"start": "2026-08-03T05:00:00Z", "duration": "PT1H"},
        "payloadDescriptors": [
            {"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT"}
        ],
        "intervals": [{"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [kw]}]}],
    }
    if targets is not None:
        body["targets"] = targets
    return body


def setup(vtn: Vtn31) -> dict[str, str]:
    """A program, ven-one (client ven1) holding targets kanto and ra-1, and a resource of it
    holding tokyo."""
    program = vtn.call("POST", "/programs", "bl", json={"programName": "dr"}).json()
    ven = vtn.call("POST", "/vens", "bl", json=bl_ven("ven-one", "ven1", ["kanto", "ra-1"]))
    assert ven.status_code == 201, ven.text
    res = vtn.call(
        "POST",
        "/resources",
        "bl",
        json={
            "objectType": "BL_RESOURCE_REQUEST",
            "resourceName": "battery-1",
            "venID": ven.json()["id"],
            "clientID": "ven1",
            "targets": ["tokyo"],
        },
    )
    assert res.status_code == 201, res.text
    return {"program": program["id"], "ven": ven.json()["id"], "resource": res.json()["id"]}


# --- the definition as shipped, and its one correction ---


def test_the_3_1_0_definition_ships_verbatim_beside_3_0_1() -> None:
    data = Path(schema.__file__).with_name("data")
    shipped = (data / "openadr3-3.1.0.yaml").read_text()
    assert "/auth/server:" in shipped and "read_ven_objects" in shipped
    assert schema.published(V31)["paths"].keys() >= {"/resources", "/notifiers", "/auth/server"}
    assert "/resources" not in schema.published("3.0.1")["paths"]


VEN_ANSWER = {
    "id": "ven-1",
    "createdDateTime": "2026-08-03T05:00:00Z",
    "modificationDateTime": "2026-08-03T05:00:00Z",
    "venName": "ven-one",
    "clientID": "ven1",
}
RESOURCE_ANSWER = {
    **{k: v for k, v in VEN_ANSWER.items() if k != "venName"},
    "id": "res-1",
    "resourceName": "battery-1",
    "venID": "ven-1",
}


@pytest.mark.parametrize(
    ("name", "answer", "kind", "form"),
    [
        ("ven", VEN_ANSWER, "VEN", "BL_VEN_REQUEST"),
        ("resource", RESOURCE_ANSWER, "RESOURCE", "BL_RESOURCE_REQUEST"),
    ],
)
def test_the_published_ven_and_resource_answers_cannot_be_met_and_the_correction_is_minimal(
    name: str, answer: dict[str, Any], kind: str, form: str
) -> None:
    published = schema.published(V31)
    as_published = published["components"]["schemas"][name]
    for object_type in (kind, form):  # neither objectType meets both parts of the allOf
        errors = schema.validate_in({**answer, "objectType": object_type}, as_published, published)
        assert errors and all("objectType" in e for e in errors)
    corrected = schema.component(name, V31)
    assert schema.validate({**answer, "objectType": kind}, corrected, version=V31) == []
    # everything else of the BL form is still required of an answer
    for missing in ("clientID", "id"):
        broken = {k: v for k, v in answer.items() if k != missing} | {"objectType": kind}
        assert any(missing in e for e in schema.validate(broken, corrected, version=V31))
    assert schema.validate({**answer, "objectType": form}, corrected, version=V31)


# --- discovery, tokens, scopes ---


def test_auth_server_names_the_token_url_of_this_api(vtn31: Vtn31) -> None:
    r = vtn31.call("GET", "/auth/server", None)
    assert r.json() == {"tokenURL": f"http://testserver{PREFIX_3_1}/auth/token"}


def test_roles_get_the_3_1_scopes(vtn31: Vtn31) -> None:
    form = {"grant_type": "client_credentials", "client_id": "ven1"}
    form["client_secret"] = vtn31.secrets["ven1"]
    r = vtn31.call("POST", "/auth/token", None, data=form)
    assert r.json()["scope"].split() == sorted(
        ["read_targets", "read_ven_objects", "write_reports", "write_subscriptions", "write_vens"]
    )
    wrong = vtn31.call("POST", "/auth/token", None, data={**form, "client_secret": "nope"})
    # 3.1.0 answers a problem; the RFC 6749 members are there for OAuth libraries
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    too_much = vtn31.call("POST", "/auth/token", None, data={**form, "scope": "read_all"})
    assert too_much.status_code == 400 and too_much.json()["error"] == "invalid_scope"


def test_a_token_works_only_on_the_api_that_issued_it(vtn31: Vtn31) -> None:
    old = vtn31.token("bl", prefix="")
    new = vtn31.token("bl")
    r = vtn31.call("GET", "/programs", None, headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401 and "issued for OpenADR 3.0.1, not 3.1.0" in r.json()["detail"]
    back = vtn31.client.get("/programs", headers={"Authorization": f"Bearer {new}"})
    assert back.status_code == 401 and "3.1.0, not 3.0.1" in back.json()["detail"]


def test_a_ven_token_cannot_write_programs(vtn31: Vtn31) -> None:
    r = vtn31.call("POST", "/programs", "ven1", json={"programName": "mine"})
    assert r.status_code == 403 and "write_programs" in r.json()["detail"]


def test_notifiers_name_webhooks_for_any_client_and_mqtt_topics_are_not_served(
    vtn31: Vtn31,
) -> None:
    assert vtn31.call("GET", "/notifiers", "ven1").json() == {"WEBHOOK": True}
    assert vtn31.call("GET", "/notifiers", None).status_code == 401
    topics = vtn31.client.get(f"{PREFIX_3_1}/notifiers/mqtt/topics/programs")
    assert topics.status_code == 404 and "no such path" in topics.json()["detail"]


# --- VEN and resource forms, clientID ---


def test_business_logic_sends_the_bl_form_with_a_client_id(vtn31: Vtn31) -> None:
    r = vtn31.call("POST", "/vens", "bl", json={"objectType": "VEN_VEN_REQUEST", "venName": "v"})
    assert r.status_code == 400 and "BL_VEN_REQUEST" in r.json()["detail"]
    missing = vtn31.call(
        "POST", "/vens", "bl", json={"objectType": "BL_VEN_REQUEST", "venName": "v"}
    )
    assert missing.status_code == 400 and "clientID" in missing.json()["detail"]
    ok = vtn31.call("POST", "/vens", "bl", json=bl_ven("v", "ven2", ["g"]))
    assert ok.status_code == 201
    assert ok.json()["objectType"] == "VEN" and ok.json()["clientID"] == "ven2"


def test_a_ven_client_registers_itself_with_the_ven_form_and_owns_it(vtn31: Vtn31) -> None:
    r = vtn31.call("POST", "/vens", "ven2", json={"objectType": "VEN_VEN_REQUEST", "venName": "me"})
    assert r.status_code == 201 and r.json()["clientID"] == "ven2" and "targets" not in r.json()
    assert [v["id"] for v in vtn31.call("GET", "/vens", "ven2").json()] == [r.json()["id"]]
    assert vtn31.call("GET", "/vens", "ven1").json() == []
    assert vtn31.call("GET", f"/vens/{r.json()['id']}", "ven1").status_code == 404
    bl_form = vtn31.call("POST", "/vens", "ven2", json=bl_ven("other", "ven2"))
    assert bl_form.status_code == 403 and "VEN_VEN_REQUEST" in bl_form.json()["detail"]


def test_a_ven_client_cannot_give_itself_targets_or_another_client_id(vtn31: Vtn31) -> None:
    ids = setup(vtn31)
    put = {"objectType": "VEN_VEN_REQUEST", "venName": "ven-one"}
    grab = vtn31.call("PUT", f"/vens/{ids['ven']}", "ven1", json={**put, "targets": ["all"]})
    assert grab.status_code == 403 and "business logic" in grab.json()["detail"]
    steal = vtn31.call("PUT", f"/vens/{ids['ven']}", "ven1", json={**put, "clientID": "ven2"})
    assert steal.status_code == 403
    # a plain update keeps what business logic assigned
    same = vtn31.call(
        "PUT",
        f"/vens/{ids['ven']}",
        "ven1",
        json={**put, "attributes": [{"type": "LOCATION", "values": ["tokyo"]}]},
    )
    assert same.status_code == 200
    assert same.json()["targets"] == ["kanto", "ra-1"] and same.json()["clientID"] == "ven1"


def test_resources_live_at_resources_with_their_ven_id(vtn31: Vtn31) -> None:
    ids = setup(vtn31)
    mine = vtn31.call(
        "POST",
        "/resources",
        "ven1",
        json={"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "pv-1", "venID": ids["ven"]},
    )
    assert mine.status_code == 201 and mine.json()["clientID"] == "ven1"
    dup = vtn31.call(
        "POST",
        "/resources",
        "ven1",
        json={"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "pv-1", "venID": ids["ven"]},
    )
    assert dup.status_code == 409
    foreign = vtn31.call(
        "POST",
        "/resources",
        "ven2",
        json={"objectType": "VEN_RESOURCE_REQUEST", "resourceName": "x", "venID": ids["ven"]},
    )
    assert foreign.status_code == 409 and "names no VEN" in foreign.json()["detail"]
    listed = vtn31.call("GET", f"/resources?venID={ids['ven']}&resourceName=pv-1", "ven1")
    assert [r["id"] for r in listed.json()] == [mine.json()["id"]]
    assert vtn31.call("GET", "/resources", "ven2").json() == []
    busy = vtn31.call("DELETE", f"/vens/{ids['ven']}", "bl")
    assert busy.status_code == 409 and "2 resource" in busy.json()["detail"]


# --- targets: strings, matched with AND ---


def test_targets_cover_is_and() -> None:
    assert targets_cover(None, set()) and targets_cover([], {"a"})
    assert targets_cover(["a", "b"], {"a", "b", "c"})
    assert not targets_cover(["a", "z"], {"a", "b"})


def test_a_ven_reads_the_events_whose_targets_it_holds_all_of(vtn31: Vtn31) -> None:
    ids = setup(vtn31)
    made = {
        name: vtn31.call("POST", "/events", "bl", json=event31(ids["program"], targets)).json()[
            "id"
        ]
        for name, targets in {
            "everyone": None,
            "kanto": ["kanto"],
            "kanto+tokyo": ["kanto", "tokyo"],  # tokyo is held by its resource
            "kanto+kyushu": ["kanto", "kyushu"],
            "kyushu": ["kyushu"],
        }.items()
    }
    seen = {e["id"] for e in vtn31.call("GET", "/events", "ven1").json()}
    assert seen == {made["everyone"], made["kanto"], made["kanto+tokyo"]}
    assert vtn31.call("GET", f"/events/{made['kyushu']}", "ven1").status_code == 404
    # ven2 has no VEN object yet: it holds no targets
    assert [e["id"] for e in vtn31.call("GET", "/events", "ven2").json()] == [made["everyone"]]
    # a search by targets finds the objects holding all of them
    found = vtn31.call("GET", "/events?targets=kanto&targets=kyushu", "bl").json()
    assert [e["id"] for e in found] == [made["kanto+kyushu"]]
    bad = vtn31.call("GET", "/events?targets=", "bl")
    assert bad.status_code == 400 and "targets" in bad.json()["detail"]


def test_a_program_a_ven_cannot_see_hides_its_events(vtn31: Vtn31) -> None:
    ids = setup(vtn31)
    hidden = vtn31.call("POST", "/programs", "bl", json={"programName": "k", "targets": ["kyushu"]})
    vtn31.call("POST", "/events", "bl", json=event31(hidden.json()["id"]))
    assert [p["id"] for p in vtn31.call("GET", "/programs", "ven1").json()] == [ids["program"]]
    assert vtn31.call("GET", "/events", "ven1").json() == []


# --- reports and subscriptions ---


def test_reports_carry_the_reporting_clients_id_and_are_found_by_program(vtn31: Vtn31) -> None:
    ids = setup(vtn31)
    event = vtn31.call("POST", "/events", "bl", json=event31(ids["program"], ["kanto"])).json()
    body = {"eventID": event["id"], "clientName": "ven-one", "resources": []}
    r = vtn31.call("POST", "/reports", "ven1", json=body)
    assert r.status_code == 201 and r.json()["clientID"] == "ven1"
    assert "programID" not in r.json()  # 3.1.0 reports name only their event
    assert [x["id"] for x in vtn31.call("GET", f"/reports?programID={ids['program']}", "bl").json()]
    assert vtn31.call("GET", "/reports?programID=prg-other", "bl").json() == []
    assert vtn31.call("GET", "/reports", "ven2").json() == []
    forged = vtn31.call("POST", "/reports", "ven1", json={**body, "clientID": "ven2"})
    assert forged.status_code == 201 and forged.json()["clientID"] == "ven1"
    blind = vtn31.call("POST", "/reports", "ven2", json=body)
    assert blind.status_code == 409 and "no event this client can see" in blind.json()["detail"]


def test_a_subscription_needs_no_program_and_is_its_clients(vtn31: Vtn31) -> None:
    body = {
        "clientName": "ven-two",
        "objectOperations": [
            {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": "https://x.test/cb"}
        ],
    }
    r = vtn31.call("POST", "/subscriptions", "ven2", json=body)
    assert r.status_code == 201 and r.json()["clientID"] == "ven2"
    assert vtn31.call("GET", "/subscriptions", "ven1").json() == []
    gopher = {
        **body,
        "objectOperations": [{**body["objectOperations"][0], "callbackUrl": "gopher://x"}],
    }
    refused = vtn31.call("POST", "/subscriptions", "ven2", json=gopher)
    assert refused.status_code == 400 and "http or https" in refused.json()["detail"]


def stored(kind: Kind, body: dict[str, Any], owner: str) -> Stored:
    return Stored(kind, str(body["id"]), "", owner, body)


def test_3_1_notifications_name_the_operation_and_match_targets_with_and() -> None:
    op = {"objects": ["EVENT"], "operations": ["UPDATE"], "callbackUrl": "http://127.0.0.1:1/cb"}
    subs = [
        stored(Kind.SUBSCRIPTION, {"id": "sub-all", "objectOperations": [op]}, "a"),
        stored(
            Kind.SUBSCRIPTION, {"id": "sub-k", "objectOperations": [op], "targets": ["kanto"]}, "b"
        ),
        stored(
            Kind.SUBSCRIPTION,
            {"id": "sub-kq", "objectOperations": [op], "targets": ["kanto", "kyushu"]},
            "c",
        ),
    ]
    event = {"id": "evt-1", "programID": "prg-1", "targets": ["kanto", "tokyo"], "intervals": []}
    out = deliveries_for(subs, Kind.EVENT, Operation.UPDATE, event, lambda s: True, api=V31)
    assert [d.subscription_id for d in out] == ["sub-all", "sub-k"]
    note = json.loads(out[0].body)
    assert note["operation"] == "UPDATE" and note["targets"] == ["kanto", "tokyo"]
    when = "2026-08-03T05:00:00Z"
    served = note["object"] | {
        "objectType": "EVENT",
        "createdDateTime": when,
        "modificationDateTime": when,
    }
    assert schema.validate(served, schema.component("event", V31), version=V31) == []
    # 3.0.1 kept: the HTTP method
    old = deliveries_for(subs[:1], Kind.EVENT, Operation.UPDATE, event, lambda s: True)
    assert json.loads(old[0].body)["operation"] == "PUT"


def test_a_report_notifies_the_subscriptions_of_its_events_program(vtn31: Vtn31) -> None:
    ids = setup(vtn31)
    event = vtn31.call("POST", "/events", "bl", json=event31(ids["program"], ["kanto"])).json()
    op = {"objects": ["REPORT"], "operations": ["CREATE"], "callbackUrl": "http://127.0.0.1:9/cb"}
    for program in (ids["program"], None):
        body: dict[str, Any] = {"clientName": "bl", "objectOperations": [op]}
        if program:
            body["programID"] = program
        assert vtn31.call("POST", "/subscriptions", "bl", json=body).status_code == 201
    other = vtn31.call("POST", "/programs", "bl", json={"programName": "other"}).json()
    vtn31.call(
        "POST",
        "/subscriptions",
        "bl",
        json={"clientName": "bl", "programID": other["id"], "objectOperations": [op]},
    )
    notifier = vtn31.client.app.state.v31.state.notifier  # type: ignore[attr-defined]
    before = notifier.stats.submitted
    report = {"eventID": event["id"], "clientName": "ven-one", "resources": []}
    assert vtn31.call("POST", "/reports", "ven1", json=report).status_code == 201
    assert notifier.stats.submitted - before == 2  # its program's and the unnarrowed one


# --- one store, two APIs ---


def test_each_api_keeps_its_objects_and_names_apart(vtn31: Vtn31) -> None:
    old = vtn31.client.post(
        "/programs",
        json={"programName": "dr"},
        headers={"Authorization": f"Bearer {vtn31.token('bl', prefix='')}"},
    )
    assert old.status_code == 201
    new = vtn31.call("POST", "/programs", "bl", json={"programName": "dr"})
    assert new.status_code == 201  # the same name in the other API is no clash
    assert [p["id"] for p in vtn31.call("GET", "/programs", "bl").json()] == [new.json()["id"]]
    assert vtn31.call("GET", f"/programs/{old.json()['id']}", "bl").status_code == 404
    assert [(c.kind, c.api) for c in vtn31.changes] == [
        (Kind.PROGRAM, "3.0.1"),
        (Kind.PROGRAM, "3.1.0"),
    ]


def test_a_version_1_file_is_migrated_and_its_objects_stay_3_0_1(tmp_path: Path) -> None:
    import sqlite3

    from erab.openadr.v3.store import MIGRATIONS

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE oadr3_schema (version INTEGER, applied TEXT)")
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO oadr3_schema VALUES (1, '2026-01-01')")
    db.execute(
        "INSERT INTO oadr3_objects VALUES ('PROGRAM', 'prg-1', 1, '', 'dr', 'bl', ?)",
        (json.dumps({"id": "prg-1", "programName": "dr"}),),
    )
    db.commit()
    db.close()
    store = ObjectStore(path)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert [p.id for p in store.find(Kind.PROGRAM)] == ["prg-1"]
        assert store.for_api(V31).find(Kind.PROGRAM) == []
    finally:
        store.close()


# --- every 3.1.0 path answered as the definition says ---


def test_every_3_1_path_of_the_definition_is_served_or_said_not_to_be(vtn31: Vtn31) -> None:
    """The definition's paths: the object, auth and notifier paths answer as it says; the MQTT
    topic paths answer 404 (erab offers webhooks only, as /notifiers says)."""
    defined = schema.published(V31)["paths"]
    served = {p for p in defined if not p.startswith("/notifiers/mqtt")}
    assert served == set(PATHS_3_1)
    for path, methods in PATHS_3_1.items():
        assert set(methods) <= set(defined[path]), path
    ids = setup(vtn31)
    event = vtn31.call("POST", "/events", "bl", json=event31(ids["program"])).json()
    report = vtn31.call(
        "POST",
        "/reports",
        "ven1",
        json={"eventID": event["id"], "clientName": "ven-one", "resources": []},
    ).json()
    sub = vtn31.call(
        "POST",
        "/subscriptions",
        "bl",
        json={
            "clientName": "bl",
            "objectOperations": [
                {
                    "objects": ["PROGRAM"],
                    "operations": ["DELETE"],
                    "callbackUrl": "http://127.0.0.1:9/c",
                }
            ],
        },
    ).json()
    bodies = {
        "programID": ("/programs", ids["program"], {"programName": "dr2"}),
        "eventID": ("/events", event["id"], event31(ids["program"], kw=90)),
        "reportID": (
            "/reports",
            report["id"],
            {"eventID": event["id"], "clientName": "x", "resources": []},
        ),
        "subscriptionID": (
            "/subscriptions",
            sub["id"],
            {"clientName": "bl2", "objectOperations": sub["objectOperations"]},
        ),
        "venID": ("/vens", ids["ven"], bl_ven("ven-one", "ven1", ["kanto"])),
        "resourceID": (
            "/resources",
            ids["resource"],
            {
                "objectType": "BL_RESOURCE_REQUEST",
                "resourceName": "battery-1",
                "venID": ids["ven"],
                "clientID": "ven1",
            },
        ),
    }
    for collection, object_id, body in bodies.values():
        writer = "ven1" if collection == "/reports" else "bl"
        assert vtn31.call("GET", collection, "bl").status_code == 200
        assert vtn31.call("GET", f"{collection}/{object_id}", "bl").status_code == 200
        assert vtn31.call("PUT", f"{collection}/{object_id}", writer, json=body).status_code == 200
        assert vtn31.call("GET", f"{collection}/nope", "bl").status_code == 404
    order = ("reportID", "subscriptionID", "resourceID", "venID", "eventID", "programID")
    for collection, object_id, _ in (bodies[name] for name in order):
        writer = "ven1" if collection == "/reports" else "bl"
        assert vtn31.call("DELETE", f"{collection}/{object_id}", writer).status_code == 200


FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=15,
)


@FUZZ
@given(
    path=st.sampled_from(["/vens", "/resources", "/events", "/reports", "/subscriptions"]),
    value=json_values,
    form=st.sampled_from([None, "BL_VEN_REQUEST", "VEN_VEN_REQUEST", "BL_RESOURCE_REQUEST"]),
)
def test_any_json_body_is_answered_as_the_definition_says_and_never_crashes(
    vtn31: Vtn31, path: str, value: Any, form: str | None
) -> None:
    if form is not None and isinstance(value, dict):
        value = {**value, "objectType": form}
    for who in ("bl", "ven1"):
        r = vtn31.call(
            "POST",
            path,
            who,
            content=json.dumps(value).encode(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code in (201, 400, 403, 409), r.text


def test_3_0_1_is_also_served_under_openadr3_3_0_1_with_the_same_objects(vtn31: Vtn31) -> None:
    auth = {"Authorization": f"Bearer {vtn31.token('bl', prefix='')}"}
    made = vtn31.client.post("/programs", json={"programName": "dr"}, headers=auth).json()
    listed = vtn31.client.get("/openadr3/3.0.1/programs", headers=auth)
    assert [p["id"] for p in listed.json()] == [made["id"]]
    other = vtn31.token("bl", prefix="/openadr3/3.0.1")  # a token from there works at the root
    mine = vtn31.client.get("/programs", headers={"Authorization": f"Bearer {other}"})
    assert mine.status_code == 200


TARGET_NAMES = st.sampled_from(["kanto", "kyushu", "tokyo", "ra-1", "ra-2"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ven_targets=st.lists(TARGET_NAMES, max_size=3, unique=True),
    resource_targets=st.lists(TARGET_NAMES, max_size=2, unique=True),
    events=st.lists(st.none() | st.lists(TARGET_NAMES, max_size=3, unique=True), max_size=5),
)
def test_a_ven_reads_exactly_the_events_whose_targets_it_holds(
    tmp_path_factory: pytest.TempPathFactory,
    ven_targets: list[str],
    resource_targets: list[str],
    events: list[list[str] | None],
) -> None:
    """Against a model of the rule: an event is read by a VEN client when every one of its
    targets is held by the client's VENs or their resources (none: by everyone)."""
    store = ObjectStore(tmp_path_factory.mktemp("prop") / "vtn.sqlite")
    registry = ClientRegistry(store)
    secrets = {"bl": registry.register("bl", Role.BL)}
    secrets["v"] = registry.register("v", Role.VEN, ven_name="v")
    with TestClient(build_server(store, TokenIssuer(os.urandom(32)))) as client:
        vtn = Vtn31(client, store, secrets, [])
        program = vtn.call("POST", "/programs", "bl", json={"programName": "p"}).json()
        ven = vtn.call("POST", "/vens", "bl", json=bl_ven("v", "v", ven_targets or None)).json()
        res = {"objectType": "BL_RESOURCE_REQUEST", "resourceName": "r", "venID": ven["id"]}
        res |= {"clientID": "v", "targets": resource_targets or None}
        assert vtn.call("POST", "/resources", "bl", json=res).status_code == 201
        held = set(ven_targets) | set(resource_targets)
        expected = []
        for targets in events:
            made = vtn.call("POST", "/events", "bl", json=event31(program["id"], targets)).json()
            if not targets or set(targets) <= held:
                expected.append(made["id"])
        seen = [e["id"] for e in vtn.call("GET", "/events", "v").json()]
        assert seen == expected
    store.close()
