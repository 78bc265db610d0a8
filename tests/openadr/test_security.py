"""The 2.0b security profile's checks (§10): fingerprints, XML signatures bound to the TLS
certificate, replay protection, TLS held to 1.2."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from openleadr.messaging import create_message
from openleadr.utils import certificate_fingerprint

from erab.openadr.security import (
    ReplayGuard,
    fingerprint_of_file,
    normalise_fingerprint,
    short_fingerprint,
    verify_signature,
)
from erab.openadr.xmlguard import Refusal, XmlRefused
from erab.security.identity import fingerprint_sha256
from tests.openadr.conftest import Pki


def test_the_short_fingerprint_is_the_one_openleadr_and_the_profile_show(pki: Pki) -> None:
    cert, _ = pki.ven("ven-1")
    full = fingerprint_of_file(cert)
    assert short_fingerprint(full) == certificate_fingerprint(cert.read_text())
    from cryptography import x509

    assert full == fingerprint_sha256(x509.load_pem_x509_certificate(cert.read_bytes()))


def test_a_fingerprint_is_normalised_or_refused_saying_what_it_should_be() -> None:
    assert normalise_fingerprint("AB:" * 31 + "AB") == "ab" * 32
    with pytest.raises(ValueError, match="64 hex digits"):
        normalise_fingerprint("AB:CD")


def test_a_missing_certificate_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read certificate"):
        fingerprint_of_file(tmp_path / "nope.pem")


def signed_poll(pki: Pki, name: str) -> bytes:
    cert, key = pki.ven(name)
    return create_message("oadrPoll", ven_id=name, cert=cert.read_bytes(),
                          key=key.read_bytes()).encode()  # fmt: skip


def test_a_signature_made_with_the_connections_certificate_verifies(pki: Pki) -> None:
    verify_signature(signed_poll(pki, "ven-1"), pki.fingerprint("ven-1"))


def test_a_signature_by_another_certificate_than_the_connections_is_refused(pki: Pki) -> None:
    with pytest.raises(XmlRefused, match="not the connection's") as caught:
        verify_signature(signed_poll(pki, "ven-1"), pki.fingerprint("ven-2"))
    assert caught.value.reason is Refusal.BAD_SIGNATURE


def test_a_tampered_signed_message_is_refused(pki: Pki) -> None:
    body = signed_poll(pki, "ven-1").replace(b">ven-1<", b">ven-9<", 1)
    with pytest.raises(XmlRefused, match="does not verify") as caught:
        verify_signature(body, pki.fingerprint("ven-1"))
    assert caught.value.reason is Refusal.BAD_SIGNATURE


class Clock:
    def __init__(self) -> None:
        self.at = datetime(2026, 8, 3, 5, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.at


def test_a_nonce_is_accepted_once_inside_the_window() -> None:
    clock = Clock()
    guard = ReplayGuard(timedelta(minutes=5), now=clock)
    stamp = clock.at.isoformat().replace("+00:00", "Z")
    guard.check("n1", stamp)
    with pytest.raises(XmlRefused) as caught:
        guard.check("n1", stamp)
    assert caught.value.reason is Refusal.REPLAYED
    guard.check("n2", stamp)


def test_a_message_signed_too_long_ago_or_in_the_future_is_stale() -> None:
    clock = Clock()
    guard = ReplayGuard(timedelta(minutes=5), skew=timedelta(seconds=30), now=clock)
    for offset in (timedelta(minutes=-6), timedelta(minutes=2)):
        with pytest.raises(XmlRefused) as caught:
            guard.check("n", (clock.at + offset).isoformat())
        assert caught.value.reason is Refusal.STALE


def test_old_nonces_are_forgotten_after_the_window() -> None:
    clock = Clock()
    guard = ReplayGuard(timedelta(minutes=5), now=clock)
    guard.check("n1", clock.at.isoformat())
    clock.at += timedelta(minutes=10)
    guard.check("n2", clock.at.isoformat())
    assert list(guard._seen) == ["n2"]  # memory stays bounded by the window


def test_a_signature_without_replay_protection_is_refused() -> None:
    with pytest.raises(XmlRefused) as caught:
        ReplayGuard().check(None, None)
    assert caught.value.reason is Refusal.UNSIGNED


def test_the_contexts_speak_tls_1_2_only(pki: Pki) -> None:
    server, client = pki.server_context(), pki.client_context("ven-1")
    for context in (server, client):
        assert context.minimum_version is ssl.TLSVersion.TLSv1_2
        assert context.maximum_version is ssl.TLSVersion.TLSv1_2
    assert server.verify_mode is ssl.CERT_REQUIRED
