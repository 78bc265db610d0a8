"""The first look at every 2.0b message, fuzzed: malformed, deeply nested, huge, wrong
namespace, entity expansion ("billion laughs" refused, never expanded), external entities."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openleadr.messaging import create_message

from erab.openadr.xmlguard import OADR_NS, Refusal, XmlLimits, XmlRefused, inspect_xml

POLL = create_message("oadrPoll", ven_id="ven-1").encode()
BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">'.encode()
               for i in range(1, 10)).replace(b"&lol0;", b"&lol;")
    + b']><oadr:oadrPayload xmlns:oadr="' + OADR_NS.encode() + b'">&lol9;</oadr:oadrPayload>'
)  # fmt: skip


def refusal(data: bytes, limits: XmlLimits | None = None) -> Refusal:
    with pytest.raises(XmlRefused) as caught:
        inspect_xml(data, limits or XmlLimits())
    return caught.value.reason


def test_openleadr_messages_pass_and_their_type_is_read() -> None:
    facts = inspect_xml(POLL)
    assert (facts.message_type, facts.signed) == ("oadrPoll", False)
    event = create_message("oadrRequestEvent", request_id="r", ven_id="v").encode()
    assert inspect_xml(event).message_type == "oadrRequestEvent"


def test_billion_laughs_is_refused_at_once_and_never_expanded() -> None:
    began = time.perf_counter()
    assert refusal(BILLION_LAUGHS) is Refusal.ENTITY
    assert time.perf_counter() - began < 1.0  # 10^9 "lol"s would take far longer


def test_external_entities_and_any_doctype_are_refused() -> None:
    xxe = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           b'<oadrPayload xmlns="' + OADR_NS.encode() + b'">&e;</oadrPayload>')  # fmt: skip
    assert refusal(xxe) is Refusal.ENTITY
    assert refusal(b'<!DOCTYPE oadrPayload SYSTEM "http://127.0.0.1/x.dtd"><oadrPayload/>') \
        is Refusal.ENTITY  # fmt: skip


def test_an_oversized_body_is_refused_before_it_is_read() -> None:
    assert refusal(POLL, XmlLimits(max_bytes=100)) is Refusal.OVERSIZED


def test_deep_nesting_is_refused() -> None:
    deep = (b'<oadrPayload xmlns="' + OADR_NS.encode() + b'">' + b"<a>" * 5000 + b"</a>" * 5000
            + b"</oadrPayload>")  # fmt: skip
    assert refusal(deep) is Refusal.TOO_DEEP


def test_too_many_elements_are_refused() -> None:
    wide = (b'<oadrPayload xmlns="' + OADR_NS.encode() + b'">' + b"<a/>" * 200
            + b"</oadrPayload>")  # fmt: skip
    assert refusal(wide, XmlLimits(max_elements=100)) is Refusal.TOO_MANY_ELEMENTS


@pytest.mark.parametrize("body", [
    POLL.replace(OADR_NS.encode(), b"http://openadr.org/oadr-2.0a/2012/07"),
    b'<oadrPayload xmlns="urn:other"/>', b"<oadrPayload/>", b"<html><body/></html>",
])  # fmt: skip
def test_a_root_outside_the_2_0b_namespace_is_refused(body: bytes) -> None:
    assert refusal(body) is Refusal.WRONG_NAMESPACE


@pytest.mark.parametrize("body", [b"", b"<", POLL[:-20], b"\xff\xfe\x00<", POLL + b"<x/>"])
def test_malformed_xml_is_refused(body: bytes) -> None:
    assert refusal(body) is Refusal.MALFORMED


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_accepted_or_refused_with_a_reason(data: bytes) -> None:
    try:
        inspect_xml(data)
    except XmlRefused as exc:
        assert exc.reason in set(Refusal) and str(exc)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(POLL) - 1), st.binary(min_size=1, max_size=40),
       st.integers(0, 40))  # fmt: skip
def test_mutated_messages_are_accepted_or_refused_with_a_reason(
    at: int, insert: bytes, cut: int
) -> None:
    data = POLL[:at] + insert + POLL[at + cut :]
    try:
        facts = inspect_xml(data)
    except XmlRefused as exc:
        assert exc.reason in set(Refusal)
    else:
        assert facts.message_type is None or isinstance(facts.message_type, str)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="<>&;!\"'=/ abcxyz[]%DOCTYPEENTITY", max_size=300))
def test_markup_soup_is_accepted_or_refused_with_a_reason(text: str) -> None:
    try:
        inspect_xml(text.encode())
    except XmlRefused as exc:
        assert exc.reason in set(Refusal)


def test_a_signed_messages_replay_protection_is_read(tmp_path: object) -> None:
    from tests.openadr.conftest import make_pki

    pki = make_pki(tmp_path)  # type: ignore[arg-type]
    cert, key = pki.ven("ven-1")
    signed = create_message("oadrPoll", ven_id="ven-1", cert=cert.read_bytes(),
                            key=key.read_bytes()).encode()  # fmt: skip
    facts = inspect_xml(signed)
    assert facts.signed and facts.nonce and len(facts.nonce) == 32
    assert facts.timestamp is not None
    at = datetime.fromisoformat(facts.timestamp.replace("Z", "+00:00"))
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=1)
