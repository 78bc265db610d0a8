"""The console over HTTP: logins, sessions, CSRF, roles on every page and feed, the figures it
shows, its languages, and that it serves only its own scripts and styles."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from erab.security import Permission
from erab.web import auth
from erab.web.app import _safe_next
from erab.web.i18n import LABELS, pick_language
from tests.web.conftest import PASSWORD, Console, csrf_of

WEB = Path(__file__).resolve().parents[2] / "src" / "erab" / "web"


def test_a_page_without_a_session_sends_the_browser_to_the_login(console: Console) -> None:
    r = console.client.get("/fleet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/fleet"
    assert console.client.get("/ui/api/fleet").status_code == 401


def test_a_login_sets_an_httponly_samesite_strict_cookie_and_a_new_session_id(
    console: Console,
) -> None:
    c = console.client
    page = c.get("/login")
    before = c.cookies.get(auth.SESSION_COOKIE)
    r = c.post("/login", data={"name": "vera", "password": PASSWORD,
                               "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert c.cookies.get(auth.SESSION_COOKIE) not in (None, before)  # no session fixation
    assert "vera" in c.get("/fleet").text


def test_a_wrong_password_is_refused_and_audited(console: Console) -> None:
    c = console.client
    page = c.get("/login")
    r = c.post("/login", data={"name": "vera", "password": "not the one at all",
                               "csrf_token": csrf_of(page.text)})
    assert r.status_code == 401 and "wrong operator name or password" in r.text
    outcomes = [rec["details"].get("outcome") for rec in console.desk.audit_tail(20)]
    assert "bad_password" in outcomes
    assert c.get("/fleet", follow_redirects=False).status_code == 303


def test_repeated_failures_lock_the_account_out(console: Console) -> None:
    c = console.client
    for _ in range(4):
        token = csrf_of(c.get("/login").text)
        r = c.post("/login", data={"name": "olive", "password": "wrong wrong wrong",
                                   "csrf_token": token})
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"name": "olive", "password": PASSWORD, "csrf_token": token})
    assert r.status_code == 401 and "too many failed logins" in r.text


def test_a_post_without_the_csrf_token_is_refused(console: Console) -> None:
    c = console.login("olive")
    r = c.post("/events", data={"target_kw": "-5", "start": "2026-08-03T14:00",
                                "duration_minutes": "60"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert console.backend.events.events == {}


def test_a_post_with_another_sessions_token_is_refused(console: Console) -> None:
    other = TestClient(console.client.app, base_url="http://testserver")
    console.login("olive", client=other)
    foreign = csrf_of(other.get("/events").text)
    c = console.login("olive")
    r = c.post("/events", data={"target_kw": "-5", "start": "2026-08-03T14:00",
                                "duration_minutes": "60", "csrf_token": foreign})
    assert r.status_code == 403
    assert console.backend.events.events == {}


def test_an_operator_creates_and_cancels_an_event(console: Console) -> None:
    c = console.login("olive")
    token = csrf_of(c.get("/events").text)
    r = c.post("/events", data={"target_kw": "-2.5", "start": "2026-08-03T14:00",
                                "duration_minutes": "180", "csrf_token": token},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303
    [event] = console.backend.events.events.values()
    assert r.headers["location"] == f"/events/{event.event_id}"
    assert event.request.target_kw == -2.5 and event.request.requested_by == "olive"
    assert event.request.duration == timedelta(hours=3)
    assert event.request.start.astimezone().utcoffset() is not None
    assert event.request.start.isoformat().startswith("2026-08-03T05:00")  # 14:00 JST
    page = c.get(f"/events/{event.event_id}")
    assert "created" in page.text and event.event_id in page.text
    r = c.post(f"/events/{event.event_id}/cancel",
               data={"csrf_token": csrf_of(page.text), "reason": "test"})
    assert r.status_code == 200 and event.stage.value == "cancelled"
    assert event.history[-1][3] == "olive"


def test_a_bad_event_form_says_which_field_is_wrong_and_creates_nothing(
    console: Console,
) -> None:
    c = console.login("olive")
    token = csrf_of(c.get("/events").text)
    r = c.post("/events", data={"target_kw": "lots", "start": "2026-08-03T14:00",
                                "duration_minutes": "60", "csrf_token": token})
    assert "target_kw &#39;lots&#39; is not a number" in r.text
    r = c.post("/events", data={"target_kw": "-1", "start": "tomorrow",
                                "duration_minutes": "60", "csrf_token": token})
    assert "start &#39;tomorrow&#39; is not a time" in r.text
    assert console.backend.events.events == {}


@pytest.mark.parametrize(("who", "method", "path", "status"), [
    ("vera", "GET", "/fleet", 200),
    ("vera", "GET", "/events", 200),
    ("vera", "GET", "/gateways", 200),
    ("vera", "GET", "/security", 403),
    ("vera", "GET", "/operators", 403),
    ("vera", "POST", "/events", 403),
    ("vera", "POST", "/gateways/gw-home-1/revoke", 403),
    ("olive", "GET", "/security", 403),
    ("olive", "POST", "/gateways/gw-home-1/revoke", 403),
    ("olive", "GET", "/operators", 403),
    ("sam", "GET", "/security", 200),
    ("sam", "POST", "/events", 403),
    ("sam", "GET", "/operators", 403),
    ("ada", "GET", "/operators", 200),
    ("ada", "GET", "/security", 200),
])  # fmt: skip
def test_every_role_may_do_what_its_table_says_and_no_more(
    console: Console, who: str, method: str, path: str, status: int
) -> None:
    c = console.login(who)
    token = csrf_of(c.get("/fleet").text)
    if method == "GET":
        r = c.get(path)
    else:
        r = c.post(path, data={"csrf_token": token, "target_kw": "-1",
                               "start": "2026-08-03T14:00", "duration_minutes": "60"},
                   follow_redirects=False)  # fmt: skip
    assert r.status_code == (303 if status == 200 and method == "POST" else status), r.text[:300]


def test_a_viewers_refused_event_is_a_403_naming_the_permission_and_audited(
    console: Console,
) -> None:
    c = console.login("vera")
    token = csrf_of(c.get("/events").text)
    assert 'id="create-event"' not in c.get("/events").text  # no form for a viewer
    r = c.post("/events", data={"target_kw": "-1", "start": "2026-08-03T14:00",
                                "duration_minutes": "60", "csrf_token": token})
    assert r.status_code == 403 and "may not manage dr events" in r.text
    assert console.backend.events.events == {}
    assert any(rec["details"].get("action") == "permission_denied" and rec["actor"] == "vera"
               for rec in console.desk.audit_tail(10))


def test_a_disabled_operator_loses_the_session_at_once(console: Console) -> None:
    c = console.login("olive")
    assert c.get("/fleet").status_code == 200
    console.desk.directory.disable("olive")
    assert c.get("/fleet", follow_redirects=False).status_code == 303


def test_the_fleet_feed_sums_the_ras_columns_per_site(console: Console) -> None:
    c = console.login("vera")
    data = c.get("/ui/api/fleet").json()
    rows = {r["site_id"]: r for r in data["sites"]}
    ra = console.ra
    assert set(rows) == {s.site_id for s in ra.registry.sites()}
    for site_id, row in rows.items():
        mine = [i for i, r in enumerate(ra.resources) if r.site_id == site_id]
        assert row["resources"] == len(mine) and row["online"] == len(mine)
        assert row["power_kw"] == pytest.approx(sum(float(ra.state.power_kw[i]) for i in mine),
                                                abs=0.006)
    assert data["summary"]["resources_online"] == len(ra.resources)
    assert data["summary"]["soc_pct"] == 55.0
    assert data["summary"]["power_kw"] == pytest.approx(float(ra.state.power_kw.sum()), abs=0.006)


def test_the_site_page_shows_its_devices_live_values(console: Console) -> None:
    c = console.login("vera")
    site = console.ra.resources[0].site_id
    data = c.get(f"/ui/api/sites/{site}").json()
    assert {d["resource_id"] for d in data["devices"]} == {
        r.resource_id for r in console.ra.resources if r.site_id == site}
    assert all(d["online"] for d in data["devices"])
    assert data["meter"] is None  # no meter source given: the page says not available
    assert "meter-missing" in c.get(f"/sites/{site}").text
    assert c.get("/ui/api/sites/nowhere").status_code == 404


def test_products_come_from_the_settlement_engines_table(console: Console) -> None:
    from erab.aggregator.products import load_products

    c = console.login("vera")
    page = c.get("/products").text
    assert 'id="products"' in page
    for name in load_products():
        assert f"<td>{name}</td>" in page


def test_an_event_that_cannot_be_settled_says_so(console: Console) -> None:
    c = console.login("olive")
    token = csrf_of(c.get("/events").text)
    c.post("/events", data={"target_kw": "-1", "start": "2026-08-03T14:00",
                            "duration_minutes": "60", "csrf_token": token})
    [event_id] = console.backend.events.events
    assert 'id="settlement"' not in c.get(f"/settlement?event={event_id}").text
    r = c.get(f"/settlement/{event_id}.csv")
    assert r.status_code == 404 and f"no settlement for {event_id}" in r.text


def test_the_security_officer_sees_the_assessment_and_verifies_the_audit_chain(
    console: Console,
) -> None:
    c = console.login("sam")
    page = c.get("/security?verify=1").text
    assert 'id="assessment"' in page and 'id="verification"' in page
    assert "intact" in page


def test_japanese_labels_when_the_browser_prefers_japanese(console: Console) -> None:
    c = console.login("vera")
    page = c.get("/fleet", headers={"Accept-Language": "ja,en-US;q=0.8"})
    assert page.headers["content-language"] == "ja" and LABELS["flex_down"][1] in page.text
    page = c.get("/fleet", headers={"Accept-Language": "en-GB,ja;q=0.5"})
    assert page.headers["content-language"] == "en" and "Flexibility down" in page.text


@pytest.mark.parametrize(("header", "cookie", "expected"), [
    ("ja", None, "ja"), ("ja-JP,ja;q=0.9,en;q=0.8", None, "ja"), ("en-US,en;q=0.9", None, "en"),
    ("fr,ja;q=0.3", None, "ja"), ("fr", None, "en"), (None, None, "en"), ("", None, "en"),
    ("ja;q=0.2,en;q=0.9", None, "en"), ("en", "ja", "ja"), ("ja", "xx", "ja"),
    ("ja;q=bogus,en", None, "en"),
])  # fmt: skip
def test_the_language_follows_accept_language_quality_values(
    header: str | None, cookie: str | None, expected: str
) -> None:
    assert pick_language(header, cookie) == expected


def test_the_consoles_permission_names_are_the_security_cores() -> None:
    assert set(auth.PERMISSIONS) <= {p.value for p in Permission}


@pytest.mark.parametrize(("target", "safe"), [
    ("/events/ev-1", "/events/ev-1"), ("https://evil.example/", "/fleet"),
    ("//evil.example/x", "/fleet"), ("fleet", "/fleet"), ("/\\evil", "/fleet"),
])  # fmt: skip
def test_after_a_login_only_local_paths_are_followed(target: str, safe: str) -> None:
    assert _safe_next(target) == safe


def test_every_script_and_style_is_erabs_own(console: Console) -> None:
    c = console.login("vera")
    page = c.get("/fleet")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    for src in re.findall(r'(?:src|href)="([^"]+)"', page.text):
        assert src.startswith("/"), src  # nothing from another host
    for path in [*WEB.joinpath("static").iterdir(), *WEB.joinpath("templates").iterdir()]:
        assert not re.search(r"https?://", path.read_text(encoding="utf-8").replace(
            "http://www.w3.org/2000/svg", "")), path  # fmt: skip
    for path in WEB.joinpath("templates").iterdir():  # what the CSP would block: none
        text = path.read_text(encoding="utf-8")
        assert not re.search(r'\sstyle=|\son[a-z]+=|<script>', text), path
    for name in ("erab.js", "chart.js", "erab.css"):
        assert c.get(f"/static/{name}").status_code == 200


def test_a_device_never_heard_shows_no_time_rather_than_failing(console: Console) -> None:
    console.ra.state.last_seen_s[0] = float("-inf")  # the state's value until first heard
    console.ra.state.online[0] = False
    site = console.ra.resources[0].site_id
    c = console.login("vera")
    assert c.get(f"/sites/{site}").status_code == 200
    [device] = [d for d in c.get(f"/ui/api/sites/{site}").json()["devices"]
                if d["resource_id"] == console.ra.resources[0].resource_id]
    assert device["last_seen"] is None and device["online"] is False


def test_the_ras_open_alerts_show_on_the_fleet_page(console: Console) -> None:
    c = console.login("vera")
    assert c.get("/ui/api/fleet").json()["alerts"] == []
    console.ra.store.raise_alert("gateway_silent", "gw-home-2: silent for 312 s",
                                 console.clock.now(), gateway_id="gw-home-2")  # fmt: skip
    time.sleep(1.1)  # the console computes the fleet at most once a second
    [alert] = c.get("/ui/api/fleet").json()["alerts"]
    assert alert["kind"] == "gateway_silent" and "silent for 312 s" in alert["message"]
    assert "gw-home-2: silent for 312 s" in c.get("/fleet").text
