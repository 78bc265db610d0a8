"""What the security officer and the admin do at the console: revoke a gateway, add and disable
operators; and the event form under arbitrary input."""

from __future__ import annotations

import string
from typing import Any

from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.clock import RealClock
from erab.security import (
    AuditKind,
    CertificateAuthority,
    CertificateRegistry,
    Role,
    SecurityHome,
    make_csr,
    new_private_key,
)
from erab.web.app import _event_request
from erab.web.i18n import pick_language
from tests.web.conftest import PASSWORD, Console, csrf_of


def enrol(console: Console, gateway_id: str, site_id: str) -> str:
    home = SecurityHome(console.home)
    ca = CertificateAuthority.open(home, RealClock())
    key = new_private_key()
    csr = make_csr(key, gateway_id).public_bytes(serialization.Encoding.PEM)
    return format(ca.issue_gateway(csr, gateway_id, site_id, days=30).serial_number, "x")


def test_a_security_officer_revokes_a_gateway_and_it_is_recorded(console: Console) -> None:
    serial = enrol(console, "gw-home-1", "home-1")
    c = console.login("sam")
    page = c.get("/gateways").text
    assert 'action="/gateways/gw-home-1/revoke"' in page and "data-confirm" in page
    r = c.post("/gateways/gw-home-1/revoke",
               data={"csrf_token": csrf_of(page), "reason": "keyCompromise"})
    assert r.status_code == 200 and "revoked 1 certificate(s) of gw-home-1" in r.text
    [cert] = CertificateRegistry(SecurityHome(console.home).registry_db,
                                 RealClock()).certificates(gateway_id="gw-home-1")
    assert cert.serial == serial and cert.revoked and cert.revocation_reason == "keyCompromise"
    [record] = [x for x in console.desk.audit_tail(20) if x["kind"] == AuditKind.REVOCATION.value]
    assert record["actor"] == "sam" and record["subject"] == "gw-home-1"
    data = c.get("/ui/api/gateways").json()
    [row] = [g for g in data["gateways"] if g["gateway_id"] == "gw-home-1"]
    assert row["certificate_status"] == "revoked"


def test_revoking_a_gateway_without_certificates_says_why(console: Console) -> None:
    c = console.login("sam")
    r = c.post("/gateways/gw-nowhere/revoke",
               data={"csrf_token": csrf_of(c.get("/gateways").text)})
    assert "not revoked" in r.text and "gw-nowhere" in r.text


def test_an_admin_adds_and_disables_operators_under_the_password_policy(
    console: Console,
) -> None:
    c = console.login("ada")
    token = csrf_of(c.get("/operators").text)
    r = c.post("/operators", data={"csrf_token": token, "name": "newbie", "role": "operator",
                                   "password": "password"})
    assert "operator not added" in r.text and "at least 12 characters" in r.text
    assert console.desk.directory.get("newbie") is None
    r = c.post("/operators", data={"csrf_token": token, "name": "newbie", "role": "nobody",
                                   "password": PASSWORD})
    assert "operator not added" in r.text and "nobody" in r.text
    r = c.post("/operators", data={"csrf_token": token, "name": "newbie", "role": "operator",
                                   "password": PASSWORD})
    assert "operator newbie added" in r.text
    assert console.desk.directory.get("newbie").role.value == "operator"  # type: ignore[union-attr]
    # the admin chose newbie's password: newbie must choose their own first
    assert console.desk.directory.get("newbie").must_change_password  # type: ignore[union-attr]
    r = c.post("/operators/newbie/disable", data={"csrf_token": token})
    assert "operator newbie disabled" in r.text
    assert console.desk.directory.get("newbie").disabled  # type: ignore[union-attr]


def test_a_one_time_password_opens_only_the_password_page_until_it_is_changed(
    console: Console,
) -> None:
    console.desk.directory.add("tess", Role.OPERATOR, "one time only 4 you",
                               must_change_password=True)  # fmt: skip
    c = console.client
    r = c.post("/login", data={"name": "tess", "password": "one time only 4 you",
                               "csrf_token": csrf_of(c.get("/login").text), "next": "/events"},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/password?next=/events"
    r = c.get("/fleet", follow_redirects=False)  # every other page sends it back
    assert r.status_code == 303 and r.headers["location"].startswith("/password")
    assert c.get("/ui/api/fleet").status_code == 403
    page = c.get("/password")
    assert 'id="must-change"' in page.text and 'href="/fleet"' not in page.text  # no nav yet
    token = csrf_of(page.text)

    def change(current: str, new: str, again: str) -> Any:
        return c.post("/password", data={"csrf_token": token, "current_password": current,
                                         "new_password": new, "new_password_again": again,
                                         "next": "/events"}, follow_redirects=False)  # fmt: skip

    r = change("one time only 4 you", "quiet harbour lantern 9", "quiet harbour lantern 8")
    assert r.status_code == 400 and "differ" in r.text
    r = change("not it at all, sorry", "quiet harbour lantern 9", "quiet harbour lantern 9")
    assert r.status_code == 400 and "wrong operator name or password" in r.text
    r = change("one time only 4 you", "password", "password")
    assert r.status_code == 400 and "at least 12 characters" in r.text
    assert console.desk.directory.get("tess").must_change_password  # type: ignore[union-attr]
    r = change("one time only 4 you", "quiet harbour lantern 9", "quiet harbour lantern 9")
    assert r.status_code == 303 and r.headers["location"] == "/events"
    assert "Password changed." in c.get("/events").text
    assert c.get("/ui/api/fleet").status_code == 200
    assert not console.desk.directory.get("tess").must_change_password  # type: ignore[union-attr]
    actions = [rec["details"].get("action") for rec in console.desk.audit_tail(10)]
    assert "password_changed" in actions


_text = st.text(alphabet=string.printable + "日本−∞", max_size=40)


@settings(max_examples=300, deadline=None)
@given(target=_text, start=_text, minutes=_text, product=_text)
def test_the_event_form_gives_an_event_or_a_clear_refusal(
    target: str, start: str, minutes: str, product: str
) -> None:
    form = {"target_kw": target, "start": start, "duration_minutes": minutes,
            "product": product}
    try:
        request = _event_request(form, "olive")
    except ValueError as exc:
        assert any(name in str(exc) for name in ("target_kw", "duration_minutes", "start"))
        return
    assert request.target_kw != 0 and request.start.tzinfo is not None
    assert 0 < request.duration.total_seconds() <= 86_400


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=5)))
def test_any_accept_language_header_gives_one_of_our_languages(header: str,
                                                                cookie: str | None) -> None:
    assert pick_language(header, cookie) in ("en", "ja")


class OneSettlement:
    """A settlement source with one settled event (the engine's dashboard shape)."""

    missing = None

    def products(self) -> list[dict[str, object]]:
        return [{"name": "tertiary-1", "response_s": 900.0, "assessment": "slot-kwh"}]

    def settlement(self, ra: object, event_id: str) -> dict[str, object] | None:
        if event_id != "ev-1":
            return None
        return {"rows": [{"customer_id": "home-1", "delivered_kwh": 1.2345678,
                          "flags": ["no_adjustment", "estimated"], "cap_yen": float("nan")}],
                "totals": {"delivered_kwh": 1.2345678, "checks_passed": False},
                "baseline_kw": {}}  # fmt: skip

    def csv(self, ra: object, event_id: str) -> str | None:
        return "event_id,customer_id,delivered_kwh\nev-1,home-1,1.2346\n"

    def baseline(self, ra: object, event_id: str) -> None:
        return None


def test_a_settlement_shows_per_customer_rows_and_downloads_as_csv(console: Console) -> None:
    from fastapi.testclient import TestClient

    from erab.web import ConsoleHooks, create_console

    app = create_console(console.backend, console.desk,
                         hooks=ConsoleHooks(settlement=OneSettlement()))  # fmt: skip
    c = console.login("vera", client=TestClient(app, base_url="http://testserver"))
    page = c.get("/settlement?event=ev-1").text
    assert 'id="settlement"' in page
    assert "<td>1.235</td>" in page and "<td>no_adjustment, estimated</td>" in page
    assert "<td>—</td>" in page and "checks_passed</strong> no" in page
    r = c.get("/settlement/ev-1.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="ev-1-settlement.csv"' in r.headers["content-disposition"]
    assert r.text.splitlines()[1] == "ev-1,home-1,1.2346"
    assert "<td>900</td>" in c.get("/products").text
