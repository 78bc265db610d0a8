"""Hostile bodies: malformed, deeply nested, huge, wrong types.  Each is refused with a reason,
nothing is stored, and the server goes on answering."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erab.openadr.v3.app import VtnLimits, build_app, json_too_deep, parse_json_body
from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.serve import start_in_thread
from erab.openadr.v3.store import ObjectStore
from tests.openadr.v3.conftest import Vtn, assert_conforms, event_body

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


def post_raw(vtn: Vtn, path: str, raw: bytes) -> httpx.Response:
    headers = {**vtn.as_("bl"), "Content-Type": "application/json"}
    r = vtn.client.post(path, content=raw, headers=headers)
    assert_conforms(r)
    return r


@FUZZ
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_refused_with_a_reason(vtn: Vtn, raw: bytes) -> None:
    r = post_raw(vtn, "/programs", raw)
    if r.status_code != 201:  # a few byte strings are a valid program; all else a 400
        assert r.status_code == 400 and r.json()["detail"]


@FUZZ
@given(value=json_values)
def test_any_json_value_that_is_no_event_is_refused_naming_what_is_wrong(
    vtn: Vtn, value: Any
) -> None:
    r = post_raw(vtn, "/events", json.dumps(value).encode())
    assert r.status_code in (400, 409)
    assert r.json()["detail"]
    assert vtn.call("GET", "/events", "bl").json() == []


@FUZZ
@given(
    field=st.sampled_from(
        ["programID", "intervals", "intervalPeriod", "priority", "targets", "eventName"]
    ),
    value=json_values,
)
def test_a_field_of_the_wrong_type_is_named_in_the_refusal(
    vtn: Vtn, field: str, value: Any
) -> None:
    body = event_body("prg-x")
    body[field] = value
    r = post_raw(vtn, "/events", json.dumps(body).encode())
    if r.status_code == 400:
        assert f"body.{field}" in r.json()["detail"] or "body:" in r.json()["detail"]
    else:  # the value happened to be allowed (or null, taken as absent): the program is missing
        assert r.status_code == 409 and "names no program" in r.json()["detail"]


@FUZZ
@given(depth=st.integers(33, 5000), opener=st.sampled_from(["[", '{"a":']))
def test_deep_nesting_is_refused_before_parsing(vtn: Vtn, depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    raw = (opener * depth + "1" + closer * depth).encode()
    r = post_raw(vtn, "/programs", raw)
    assert r.status_code == 400 and "nests deeper than 32" in r.json()["detail"]


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"programName": "[" * 100 + '\\"{' * 50})
    assert not json_too_deep(text.encode(), 3)
    assert json_too_deep(b'{"a":[[[1]]]}', 3)
    assert parse_json_body(text.encode(), VtnLimits())["programName"].startswith("[[")


def test_nan_infinity_and_non_utf8_are_refused(vtn: Vtn) -> None:
    for raw, words in (
        (b'{"programName": "p", "x": NaN}', "NaN"),
        (b'{"programName": "p", "x": -Infinity}', "Infinity"),
        (b'{"programName": "\xff\xfe"}', "UTF-8"),
    ):
        r = post_raw(vtn, "/programs", raw)
        assert r.status_code == 400 and words in r.json()["detail"], r.json()


def test_a_body_of_another_media_type_is_415(vtn: Vtn) -> None:
    r = vtn.client.post(
        "/programs",
        content=b"programName=p",
        headers={**vtn.as_("bl"), "Content-Type": "text/plain"},
    )
    assert_conforms(r)
    assert r.status_code == 415 and "application/json" in r.json()["detail"]


def test_a_huge_body_is_refused_and_the_server_stays_up(tmp_path: Path) -> None:
    store = ObjectStore(tmp_path / "vtn.sqlite")
    secret = ClientRegistry(store).register("bl", Role.BL)
    app = build_app(store, TokenIssuer(os.urandom(32)), limits=VtnLimits(max_body_bytes=64_000))
    running = start_in_thread(app)
    try:
        with httpx.Client(base_url=running.url, timeout=10) as http:
            token = http.post(
                "/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": "bl",
                    "client_secret": secret,
                },
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            huge = json.dumps({"programName": "p", "x": "a" * 5_000_000}).encode()
            r = http.post("/programs", content=huge, headers=auth)
            assert_conforms(r)
            assert r.status_code == 413 and "64000" in r.json()["detail"]

            def chunks() -> Any:  # no Content-Length: the limit holds while streaming
                for _ in range(100):
                    yield b" " * 1000

            r = http.post("/programs", content=chunks(), headers=auth)
            assert r.status_code == 413
            ok = http.post("/programs", json={"programName": "after"}, headers=auth)
            assert ok.status_code == 201
            assert [p["programName"] for p in http.get("/programs", headers=auth).json()] == [
                "after"
            ]
    finally:
        running.stop()
        store.close()


@FUZZ
@given(form=st.binary(max_size=200))
def test_any_token_request_body_gets_an_rfc_6749_error(vtn: Vtn, form: bytes) -> None:
    r = vtn.client.post(
        "/auth/token", content=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert_conforms(r)
    assert r.status_code in (400, 401) and r.json()["error"]


@FUZZ
@given(header=st.text(max_size=80))
def test_any_authorization_header_is_a_401_not_a_crash(vtn: Vtn, header: str) -> None:
    try:
        r = vtn.client.get("/programs", headers={"Authorization": header})
    except (UnicodeEncodeError, httpx.LocalProtocolError):
        return  # not sendable as an HTTP header at all
    assert_conforms(r)
    assert r.status_code == 401
