"""OAuth2 client credentials at /auth/token, scopes by role, and what a VEN may see."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest

from erab.openadr.v3.auth import AuthError, ClientRegistry, Role, TokenIssuer
from tests.openadr.v3.conftest import Vtn, assert_conforms, event_body


def token_request(vtn: Vtn, data: dict[str, str], **kwargs: Any) -> Any:
    r = vtn.client.post("/auth/token", data=data, **kwargs)
    assert_conforms(r)
    return r


def test_a_token_from_the_form_carries_the_roles_scopes(vtn: Vtn) -> None:
    r = token_request(
        vtn,
        {
            "grant_type": "client_credentials",
            "client_id": "ven1",
            "client_secret": vtn.secrets["ven1"],
        },
    )
    body = r.json()
    assert r.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["scope"] == "read_all write_reports write_subscriptions write_vens"
    assert r.headers["cache-control"] == "no-store"


def test_basic_authentication_of_the_client_works_too(vtn: Vtn) -> None:
    pair = base64.b64encode(f"bl:{vtn.secrets['bl']}".encode()).decode()
    r = token_request(
        vtn, {"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {pair}"}
    )
    assert r.status_code == 200 and "write_events" in r.json()["scope"]


def test_a_wrong_secret_and_an_unknown_client_get_the_same_invalid_client(vtn: Vtn) -> None:
    wrong = token_request(
        vtn, {"grant_type": "client_credentials", "client_id": "bl", "client_secret": "guess"}
    )
    unknown = token_request(
        vtn, {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "guess"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"] == "invalid_client"


def test_other_grant_types_and_json_bodies_are_refused_with_the_rfc_error(vtn: Vtn) -> None:
    r = token_request(vtn, {"grant_type": "password", "client_id": "bl", "client_secret": "x"})
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"
    r = vtn.client.post("/auth/token", json={"grant_type": "client_credentials"})
    assert_conforms(r)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert "x-www-form-urlencoded" in r.json()["error_description"]


def test_a_ven_asking_for_a_bl_scope_gets_invalid_scope(vtn: Vtn) -> None:
    r = token_request(
        vtn,
        {
            "grant_type": "client_credentials",
            "client_id": "ven1",
            "client_secret": vtn.secrets["ven1"],
            "scope": "write_events",
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    assert "write_events" in r.json()["error_description"]


def test_a_narrower_token_is_refused_the_scopes_it_did_not_ask_for(vtn: Vtn) -> None:
    token = vtn.token("bl", scope="read_all")
    r = vtn.call(
        "POST",
        "/programs",
        None,
        json={"programName": "p"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 403 and "needs scope write_programs" in r.json()["detail"]


def test_a_ven_may_not_create_events(vtn: Vtn) -> None:
    r = vtn.call("POST", "/programs", "ven1", json={"programName": "p"})
    assert r.status_code == 403 and "write_programs" in r.json()["detail"]


def test_missing_forged_expired_and_revoked_tokens_are_401_with_a_challenge(vtn: Vtn) -> None:
    r = vtn.call("GET", "/programs", None)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    good = vtn.token("ven1")
    head, claims, sig = good.split(".")
    forged = f"{head}.{claims[:-2]}AA.{sig}"
    r = vtn.call("GET", "/programs", None, headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "signature" in r.json()["detail"]
    vtn.clock.advance(3601)
    r = vtn.call("GET", "/programs", None, headers={"Authorization": f"Bearer {good}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    fresh = vtn.token("ven1")
    vtn.registry.remove("ven1")
    r = vtn.call("GET", "/programs", None, headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 401 and "no longer registered" in r.json()["detail"]


def test_a_token_of_another_key_is_refused(vtn: Vtn) -> None:
    other = TokenIssuer(os.urandom(32))
    from erab.openadr.v3.auth import Client

    token, _ = other.issue(Client("bl", Role.BL))
    with pytest.raises(AuthError, match="signature"):
        vtn.issuer.verify(token, vtn.registry)


def test_a_ven_client_needs_its_ven_name(vtn: Vtn) -> None:
    with pytest.raises(ValueError, match="venName"):
        ClientRegistry(vtn.store).register("v", Role.VEN)


# --- what a VEN sees --------------------------------------------------------------------------


def setup_targets(vtn: Vtn) -> dict[str, str]:
    """ven-one is in group kanto with resource bat-1; a program for all, events for each."""
    ven = vtn.call(
        "POST",
        "/vens",
        "bl",
        json={"venName": "ven-one", "targets": [{"type": "GROUP", "values": ["kanto"]}]},
    ).json()
    vtn.call("POST", f"/vens/{ven['id']}/resources", "bl", json={"resourceName": "bat-1"})
    program = vtn.call("POST", "/programs", "bl", json={"programName": "all"}).json()
    ids = {"ven": ven["id"], "program": program["id"]}
    for key, targets in {
        "by_name": [{"type": "VEN_NAME", "values": ["ven-one"]}],
        "by_group": [{"type": "GROUP", "values": ["kanto"]}],
        "by_resource": [{"type": "RESOURCE_NAME", "values": ["bat-1"]}],
        "for_two": [{"type": "VEN_NAME", "values": ["ven-two"]}],
        "for_all": None,
    }.items():
        body = event_body(program["id"], targets=targets) if targets else event_body(program["id"])
        ids[key] = vtn.call("POST", "/events", "bl", json=body).json()["id"]
    return ids


def test_a_ven_sees_the_events_that_target_it_and_no_others(vtn: Vtn) -> None:
    ids = setup_targets(vtn)
    seen_one = {e["id"] for e in vtn.call("GET", "/events", "ven1").json()}
    seen_two = {e["id"] for e in vtn.call("GET", "/events", "ven2").json()}
    assert seen_one == {ids["by_name"], ids["by_group"], ids["by_resource"], ids["for_all"]}
    assert seen_two == {ids["for_two"], ids["for_all"]}
    assert len(vtn.call("GET", "/events", "bl").json()) == 5
    r = vtn.call("GET", f"/events/{ids['for_two']}", "ven1")
    assert r.status_code == 404


def test_a_ven_sees_no_event_of_a_program_not_for_it(vtn: Vtn) -> None:
    program = vtn.call(
        "POST",
        "/programs",
        "bl",
        json={"programName": "two-only", "targets": [{"type": "VEN_NAME", "values": ["ven-two"]}]},
    ).json()
    vtn.call("POST", "/events", "bl", json=event_body(program["id"]))
    assert vtn.call("GET", "/programs", "ven1").json() == []
    assert vtn.call("GET", "/events", "ven1").json() == []
    assert len(vtn.call("GET", "/events", "ven2").json()) == 1


def test_a_ven_reads_and_changes_only_its_own_ven_and_reports(vtn: Vtn) -> None:
    ids = setup_targets(vtn)
    assert [v["venName"] for v in vtn.call("GET", "/vens", "ven2").json()] == []
    r = vtn.call("POST", "/vens", "ven2", json={"venName": "ven-one-too"})
    assert r.status_code == 403 and "ven-two" in r.json()["detail"]
    mine = vtn.call("POST", "/vens", "ven2", json={"venName": "ven-two"})
    assert mine.status_code == 201
    report = {
        "programID": ids["program"],
        "eventID": ids["by_name"],
        "clientName": "ven-one",
        "resources": [{"resourceName": "bat-1", "intervals": []}],
    }
    created = vtn.call("POST", "/reports", "ven1", json=report).json()
    assert vtn.call("GET", f"/reports/{created['id']}", "ven2").status_code == 404
    assert vtn.call("DELETE", f"/reports/{created['id']}", "ven2").status_code == 404
    assert vtn.call("GET", "/reports", "ven2").json() == []
    assert vtn.call("GET", "/reports", "bl").json()[0]["id"] == created["id"]


def test_a_ven_cannot_report_on_an_event_not_for_it(vtn: Vtn) -> None:
    ids = setup_targets(vtn)
    report = {
        "programID": ids["program"],
        "eventID": ids["for_two"],
        "clientName": "ven-one",
        "resources": [{"resourceName": "bat-1", "intervals": []}],
    }
    r = vtn.call("POST", "/reports", "ven1", json=report)
    assert r.status_code == 409 and ids["for_two"] in r.json()["detail"]


def test_a_ven_may_not_put_itself_in_a_group(vtn: Vtn) -> None:
    ids = setup_targets(vtn)
    r = vtn.call(
        "PUT",
        f"/vens/{ids['ven']}",
        "ven1",
        json={"venName": "ven-one", "targets": [{"type": "GROUP", "values": ["everywhere"]}]},
    )
    assert r.status_code == 403 and "business logic" in r.json()["detail"]
    same = vtn.call(
        "PUT",
        f"/vens/{ids['ven']}",
        "ven1",
        json={
            "venName": "ven-one",
            "targets": [{"type": "GROUP", "values": ["kanto"]}],
            "attributes": [{"type": "LOCATION", "values": ["tokyo"]}],
        },
    )
    assert same.status_code == 200 and same.json()["attributes"][0]["values"] == ["tokyo"]
