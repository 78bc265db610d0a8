"""The VTN's objects over the REST API: create, read, search, replace, delete, and the
refusals, each answer checked against the OpenADR 3.0.1 definition (``vtn.call``)."""

from __future__ import annotations

from typing import Any

from erab.openadr.v3.models import Kind
from erab.openadr.v3.store import ObjectStore
from tests.openadr.v3.conftest import Vtn, event_body


def make_program(vtn: Vtn, name: str = "dr-summer", **extra: Any) -> dict[str, Any]:
    r = vtn.call("POST", "/programs", "bl", json={"programName": name, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def test_the_server_sets_id_type_and_times_whatever_the_client_sent(vtn: Vtn) -> None:
    r = vtn.call(
        "POST",
        "/programs",
        "bl",
        json={
            "programName": "p",
            "id": "mine",
            "objectType": "PROGRAM",
            "createdDateTime": "2000-01-01T00:00:00Z",
        },
    )
    body = r.json()
    assert r.status_code == 201
    assert body["id"] != "mine" and body["id"].startswith("prg-")
    assert body["objectType"] == "PROGRAM"
    assert body["createdDateTime"] == body["modificationDateTime"] == "2026-08-03T04:00:00.000Z"


def test_an_event_round_trips_and_a_replace_keeps_id_and_creation_time(vtn: Vtn) -> None:
    program = make_program(vtn)
    created = vtn.call(
        "POST", "/events", "bl", json=event_body(program["id"], eventName="a")
    ).json()
    got = vtn.call("GET", f"/events/{created['id']}", "bl").json()
    assert got == created
    vtn.clock.advance(60)
    replaced = vtn.call(
        "PUT", f"/events/{created['id']}", "bl", json=event_body(program["id"], eventName="b")
    ).json()
    assert replaced["id"] == created["id"] and replaced["eventName"] == "b"
    assert replaced["createdDateTime"] == created["createdDateTime"]
    assert replaced["modificationDateTime"] == "2026-08-03T04:01:00.000Z"


def test_delete_answers_the_object_and_it_is_gone(vtn: Vtn) -> None:
    program = make_program(vtn)
    event = vtn.call("POST", "/events", "bl", json=event_body(program["id"])).json()
    gone = vtn.call("DELETE", f"/events/{event['id']}", "bl")
    assert gone.status_code == 200 and gone.json()["id"] == event["id"]
    again = vtn.call("GET", f"/events/{event['id']}", "bl")
    assert again.status_code == 404 and event["id"] in again.json()["detail"]


def test_skip_and_limit_page_through_in_creation_order(vtn: Vtn) -> None:
    names = [f"p{i:02d}" for i in range(12)]
    for name in names:
        make_program(vtn, name)
    page = vtn.call("GET", "/programs?skip=3&limit=4", "bl").json()
    assert [p["programName"] for p in page] == names[3:7]
    assert len(vtn.call("GET", "/programs", "bl").json()) == 12


def test_limit_over_50_and_negative_skip_are_refused_naming_the_parameter(vtn: Vtn) -> None:
    r = vtn.call("GET", "/programs?limit=51", "bl")
    assert r.status_code == 400 and "limit" in r.json()["detail"]
    r = vtn.call("GET", "/events?skip=-1", "bl")
    assert r.status_code == 400 and "skip" in r.json()["detail"]
    r = vtn.call("GET", "/events?programID=no%20spaces", "bl")
    assert r.status_code == 400 and "programID" in r.json()["detail"]


def test_events_are_searched_by_program_and_by_target(vtn: Vtn) -> None:
    a, b = make_program(vtn, "a"), make_program(vtn, "b")
    group = [{"type": "GROUP", "values": ["kanto"]}]
    e1 = vtn.call("POST", "/events", "bl", json=event_body(a["id"], targets=group)).json()
    e2 = vtn.call("POST", "/events", "bl", json=event_body(b["id"])).json()
    by_program = vtn.call("GET", f"/events?programID={b['id']}", "bl").json()
    assert [e["id"] for e in by_program] == [e2["id"]]
    by_target = vtn.call(
        "GET", "/events?targetType=GROUP&targetValues=tohoku&targetValues=kanto", "bl"
    ).json()
    assert [e["id"] for e in by_target] == [e1["id"]]
    r = vtn.call("GET", "/events?targetValues=kanto", "bl")
    assert r.status_code == 400 and "targetType" in r.json()["detail"]


def test_a_body_that_breaks_the_definition_is_refused_naming_each_fault(vtn: Vtn) -> None:
    program = make_program(vtn)
    body = event_body(program["id"])
    body["intervals"][0]["id"] = "zero"
    body["intervalPeriod"]["duration"] = "1 hour"
    r = vtn.call("POST", "/events", "bl", json=body)
    detail = r.json()["detail"]
    assert r.status_code == 400
    assert "body.intervals[0].id: expected integer, got string" in detail
    assert "body.intervalPeriod.duration" in detail
    assert vtn.call("GET", "/events", "bl").json() == []


def test_an_event_of_no_program_is_a_conflict(vtn: Vtn) -> None:
    r = vtn.call("POST", "/events", "bl", json=event_body("prg-nope"))
    assert r.status_code == 409 and "prg-nope" in r.json()["detail"]


def test_program_names_are_unique_and_a_clash_leaves_the_first(vtn: Vtn) -> None:
    first = make_program(vtn, "same")
    r = vtn.call("POST", "/programs", "bl", json={"programName": "same"})
    assert r.status_code == 409 and "'same'" in r.json()["detail"]
    other = make_program(vtn, "other")
    r = vtn.call("PUT", f"/programs/{other['id']}", "bl", json={"programName": "same"})
    assert r.status_code == 409
    names = [p["programName"] for p in vtn.call("GET", "/programs", "bl").json()]
    assert names == ["same", "other"]
    assert vtn.call("GET", f"/programs/{first['id']}", "bl").json() == first


def test_a_program_with_events_cannot_be_deleted(vtn: Vtn) -> None:
    program = make_program(vtn)
    vtn.call("POST", "/events", "bl", json=event_body(program["id"]))
    r = vtn.call("DELETE", f"/programs/{program['id']}", "bl")
    assert r.status_code == 409 and "1 event" in r.json()["detail"]


def test_an_event_cannot_move_to_another_program(vtn: Vtn) -> None:
    a, b = make_program(vtn, "a"), make_program(vtn, "b")
    event = vtn.call("POST", "/events", "bl", json=event_body(a["id"])).json()
    r = vtn.call("PUT", f"/events/{event['id']}", "bl", json=event_body(b["id"]))
    assert r.status_code == 400 and "another program" in r.json()["detail"]


def test_vens_and_their_resources(vtn: Vtn) -> None:
    ven = vtn.call("POST", "/vens", "bl", json={"venName": "ven-one"}).json()
    res = vtn.call("POST", f"/vens/{ven['id']}/resources", "bl", json={"resourceName": "battery-1"})
    assert res.status_code == 201 and res.json()["venID"] == ven["id"]
    dup = vtn.call("POST", f"/vens/{ven['id']}/resources", "bl", json={"resourceName": "battery-1"})
    assert dup.status_code == 409
    listed = vtn.call("GET", f"/vens/{ven['id']}/resources?resourceName=battery-1", "bl").json()
    assert [r["id"] for r in listed] == [res.json()["id"]]
    wrong = vtn.call(
        "POST",
        f"/vens/{ven['id']}/resources",
        "bl",
        json={"resourceName": "b2", "venID": "ven-elsewhere"},
    )
    assert wrong.status_code == 400 and "venID" in wrong.json()["detail"]
    busy = vtn.call("DELETE", f"/vens/{ven['id']}", "bl")
    assert busy.status_code == 409
    assert vtn.call("GET", "/vens/ven-nope/resources", "bl").status_code == 404


def test_a_report_names_the_event_and_its_program(vtn: Vtn) -> None:
    program = make_program(vtn)
    event = vtn.call("POST", "/events", "bl", json=event_body(program["id"])).json()
    report = {
        "programID": program["id"],
        "eventID": event["id"],
        "clientName": "ven-one",
        "resources": [
            {
                "resourceName": "fleet",
                "intervals": [{"id": 0, "payloads": [{"type": "USAGE", "values": [12.5]}]}],
            }
        ],
    }
    r = vtn.call("POST", "/reports", "ven1", json=report)
    assert r.status_code == 201
    assert (
        vtn.call("GET", f"/reports?eventID={event['id']}", "bl").json()[0]["id"] == r.json()["id"]
    )
    wrong = vtn.call("POST", "/reports", "ven1", json={**report, "programID": "prg-other"})
    assert wrong.status_code == 400 and "not the program" in wrong.json()["detail"]


def test_unknown_paths_and_methods_answer_problems(vtn: Vtn) -> None:
    r = vtn.client.get("/nowhere")
    assert r.status_code == 404 and r.json()["detail"] == "no such path /nowhere"
    r = vtn.client.patch("/programs")
    assert r.status_code == 405 and "PATCH" in r.json()["detail"]


def test_objects_survive_a_restart_of_the_store(vtn: Vtn, vtn_store: ObjectStore) -> None:
    program = make_program(vtn)
    reopened = ObjectStore(vtn_store.path)
    try:
        found = reopened.find(Kind.PROGRAM)
        assert [s.body for s in found] == [program]
    finally:
        reopened.close()


def test_subscriptions_are_searched_by_client_name_and_object_type(vtn: Vtn) -> None:
    program = make_program(vtn)

    def sub(name: str, objects: list[str]) -> dict[str, Any]:
        body = {
            "clientName": name,
            "programID": program["id"],
            "objectOperations": [
                {
                    "objects": objects,
                    "operations": ["CREATE"],
                    "callbackUrl": "http://127.0.0.1:9/hook",
                }
            ],
        }
        r = vtn.call("POST", "/subscriptions", "bl", json=body)
        assert r.status_code == 201
        return dict(r.json())

    a, b = sub("a", ["EVENT"]), sub("b", ["PROGRAM", "REPORT"])
    assert [s["id"] for s in vtn.call("GET", "/subscriptions?clientName=b", "bl").json()] == [
        b["id"]
    ]
    found = vtn.call("GET", "/subscriptions?objects=EVENT&objects=VEN", "bl").json()
    assert [s["id"] for s in found] == [a["id"]]
    r = vtn.call("GET", "/subscriptions?objects=THING", "bl")
    assert r.status_code == 400 and "THING" in r.json()["detail"]
    bad = vtn.call(
        "POST",
        "/subscriptions",
        "bl",
        json={
            "clientName": "c",
            "programID": program["id"],
            "objectOperations": [
                {
                    "objects": ["EVENT"],
                    "operations": ["CREATE"],
                    "callbackUrl": "file:///etc/passwd",
                }
            ],
        },
    )
    assert bad.status_code == 400 and "callbackUrl" in bad.json()["detail"]


def test_mounted_under_a_prefix_it_answers_there(vtn_store: ObjectStore) -> None:
    import os

    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from erab.openadr.v3.app import build_app
    from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer

    secret = ClientRegistry(vtn_store).register("bl", Role.BL)
    parent = FastAPI()
    parent.mount("/openadr3", build_app(vtn_store, TokenIssuer(os.urandom(32))))
    with TestClient(parent) as client:
        form = {"grant_type": "client_credentials", "client_id": "bl", "client_secret": secret}
        token = client.post("/openadr3/auth/token", data=form).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        r = client.post("/openadr3/programs", json={"programName": "p"}, headers=auth)
        assert r.status_code == 201
        assert client.get("/openadr3/programs", headers=auth).json() == [r.json()]
        missing = client.get("/openadr3/nowhere", headers=auth)
        assert missing.status_code == 404 and missing.json()["status"] == 404


def test_every_stored_change_is_reported_with_its_actor_and_refusals_are_not(
    vtn_store: ObjectStore,
) -> None:
    import os

    from fastapi.testclient import TestClient

    from erab.openadr.v3.app import Change, build_app
    from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
    from erab.openadr.v3.models import Operation

    secret = ClientRegistry(vtn_store).register("bl", Role.BL)
    seen: list[Change] = []
    app = build_app(vtn_store, TokenIssuer(os.urandom(32)), on_change=seen.append)
    with TestClient(app) as client:
        form = {"grant_type": "client_credentials", "client_id": "bl", "client_secret": secret}
        auth = {
            "Authorization": "Bearer "
            + client.post("/auth/token", data=form).json()["access_token"]
        }
        program = client.post("/programs", json={"programName": "p"}, headers=auth).json()
        assert client.post("/programs", json={"programName": "p"}, headers=auth).status_code == 409
        client.put(f"/programs/{program['id']}", json={"programName": "q"}, headers=auth)
        client.delete(f"/programs/{program['id']}", headers=auth)
    assert seen == [
        Change("bl", Kind.PROGRAM, Operation.CREATE, program["id"]),
        Change("bl", Kind.PROGRAM, Operation.UPDATE, program["id"]),
        Change("bl", Kind.PROGRAM, Operation.DELETE, program["id"]),
    ]


def test_callbacks_can_be_limited_to_known_hosts(vtn_store: ObjectStore) -> None:
    import os

    from fastapi.testclient import TestClient

    from erab.openadr.v3.app import VtnLimits, build_app
    from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer

    secret = ClientRegistry(vtn_store).register("bl", Role.BL)
    limits = VtnLimits(callback_hosts=frozenset({"hooks.example.jp"}))
    with TestClient(build_app(vtn_store, TokenIssuer(os.urandom(32)), limits=limits)) as client:
        form = {"grant_type": "client_credentials", "client_id": "bl", "client_secret": secret}
        auth = {
            "Authorization": "Bearer "
            + client.post("/auth/token", data=form).json()["access_token"]
        }
        program = client.post("/programs", json={"programName": "p"}, headers=auth).json()

        def subscribe(url: str) -> Any:
            operations = {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": url}
            body = {"clientName": "c", "programID": program["id"], "objectOperations": [operations]}
            return client.post("/subscriptions", json=body, headers=auth)

        refused = subscribe("http://169.254.169.254/latest/meta-data")
        assert refused.status_code == 400 and "169.254.169.254" in refused.json()["detail"]
        assert subscribe("https://hooks.example.jp/oadr").status_code == 201


def test_every_operation_of_the_definition_is_served_and_needs_a_token(vtn: Vtn) -> None:
    from erab.openadr.v3 import schema

    served = 0
    for template, item in schema.spec()["paths"].items():
        path = template.replace("{", "x-").replace("}", "")
        for method in ("get", "post", "put", "delete"):
            if method not in item:
                continue
            r = vtn.call(method.upper(), path, None)
            expected = 400 if template == "/auth/token" else 401
            assert r.status_code == expected, (method, template, r.json())
            served += 1
    assert served == 31  # 6 collections × 5 operations, and the token endpoint


def test_each_operation_asks_for_the_scope_the_definition_names() -> None:
    from erab.openadr.v3 import schema
    from erab.openadr.v3.app import COLLECTIONS

    for c in COLLECTIONS.values():
        for template, method, ours in (
            (c.path, "get", "read_all"),
            (c.path, "post", c.write_scope),
            (c.item_path, "get", "read_all"),
            (c.item_path, "put", c.write_scope),
            (c.item_path, "delete", c.write_scope),
        ):
            security = schema.spec()["paths"][template][method]["security"]
            oauth = next(
                s["oAuth2ClientCredentials"] for s in security if "oAuth2ClientCredentials" in s
            )
            assert oauth == [ours], (method, template)
