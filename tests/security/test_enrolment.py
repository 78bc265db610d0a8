"""Enrolment over HTTPS on 127.0.0.1: the gateway sends CSR + code, the RA answers."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.clock import SimulatedClock
from erab.security import (
    AuditKind,
    AuditLog,
    CertificateAuthority,
    EnrolmentFailed,
    EnrolmentServer,
    EnrolmentService,
    PeerIdentity,
    SecurityHome,
    SqliteAuditStore,
    new_private_key,
    public_key_text,
    request_enrolment,
    server_context,
)
from erab.security.pki import certificate_pem, private_key_pem


@pytest.fixture
def audit(home: SecurityHome, clock: SimulatedClock) -> AuditLog:
    return AuditLog(SqliteAuditStore(home.audit_db), clock)


def serve(
    ca: CertificateAuthority, home: SecurityHome, tmp_path: Path, service: EnrolmentService
) -> EnrolmentServer:
    """Start ``service`` over HTTPS on 127.0.0.1 with a server certificate of ``ca``."""
    issued = ca.issue_server(["localhost"], ["127.0.0.1"])
    (tmp_path / "ra.pem").write_bytes(certificate_pem(issued.certificate))
    (tmp_path / "ra.key").write_bytes(private_key_pem(issued.private_key))
    context = server_context(
        tmp_path / "ra.pem", tmp_path / "ra.key", home.ca_bundle, require_client_certificate=False
    )
    server = EnrolmentServer(service, context)
    server.start()
    return server


@pytest.fixture
def ra(
    ca: CertificateAuthority, home: SecurityHome, audit: AuditLog, tmp_path: Path
) -> Iterator[EnrolmentServer]:
    home.command_public_key.write_text(public_key_text(Ed25519PrivateKey.generate().public_key()))
    server = serve(ca, home, tmp_path, EnrolmentService(ca, audit))
    yield server
    server.close()


def test_gateway_enrols_over_https(
    ca: CertificateAuthority, home: SecurityHome, ra: EnrolmentServer
) -> None:
    code = ca.create_enrolment_code("gw-net-1", "site-net")
    key = new_private_key()
    result = request_enrolment("127.0.0.1", ra.port, home.ca_bundle, "gw-net-1", code, key)
    cert = x509.load_pem_x509_certificate(result.certificate_pem)
    identity = PeerIdentity.from_certificate(cert)
    assert (identity.gateway_id, identity.site_id) == ("gw-net-1", "site-net")
    assert cert.public_key() == key.public_key()
    assert result.ca_bundle_pem == home.ca_bundle.read_bytes()
    assert result.command_public_key == home.command_public_key.read_text()


def test_second_use_of_a_code_is_refused_with_its_reason(
    ca: CertificateAuthority, home: SecurityHome, ra: EnrolmentServer, audit: AuditLog
) -> None:
    code = ca.create_enrolment_code("gw-net-2", "site-net")
    request_enrolment("127.0.0.1", ra.port, home.ca_bundle, "gw-net-2", code, new_private_key())
    with pytest.raises(EnrolmentFailed) as err:
        request_enrolment("127.0.0.1", ra.port, home.ca_bundle, "gw-net-2", code, new_private_key())
    assert err.value.reason == "code_spent"
    outcomes = [
        r.details["outcome"] for r in audit.store.records() if r.kind is AuditKind.ENROLMENT
    ]
    assert outcomes == ["enrolled", "refused"]


def test_wrong_code_is_refused(home: SecurityHome, ra: EnrolmentServer) -> None:
    with pytest.raises(EnrolmentFailed) as err:
        request_enrolment(
            "127.0.0.1", ra.port, home.ca_bundle, "gw-net-3", "guess", new_private_key()
        )
    assert err.value.reason == "unknown_code"


def test_gateway_refuses_an_ra_it_cannot_authenticate(
    ca: CertificateAuthority, ra: EnrolmentServer, tmp_path: Path, clock: SimulatedClock
) -> None:
    other = CertificateAuthority.initialise(SecurityHome(tmp_path / "elsewhere"), clock)
    code = ca.create_enrolment_code("gw-net-4", "site-net")
    with pytest.raises(ssl.SSLCertVerificationError):
        request_enrolment(
            "127.0.0.1", ra.port, other.home.ca_bundle, "gw-net-4", code, new_private_key()
        )
    # The code never reached the RA, so it is still good.
    record = ca.registry.enrolment_codes()[0]
    assert record.spent_at is None


def _raw_post(home: SecurityHome, port: int, body: bytes, path: str = "/enrol") -> tuple[int, dict]:  # type: ignore[type-arg]
    context = ssl.create_default_context(cafile=str(home.ca_bundle))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    try:
        conn.request("POST", path, body=body)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "Expecting property name"),
        (b"[]", "expected a JSON object"),
        (b'{"gateway_id": "gw-1"}', "code, csr_pem must be given as strings"),
        (b'{"gateway_id": "gw 1", "code": "x", "csr_pem": "y"}', "invalid gateway id"),
    ],
)
def test_bad_requests_get_400_naming_the_problem(
    home: SecurityHome, ra: EnrolmentServer, body: bytes, message: str
) -> None:
    status, data = _raw_post(home, ra.port, body)
    assert status == 400
    assert data["error"] == "bad_request" and message in data["message"]


def test_oversized_request_is_refused(home: SecurityHome, ra: EnrolmentServer) -> None:
    status, data = _raw_post(home, ra.port, b"x" * 20000)
    assert status == 413 and data["error"] == "too_large"


def test_other_paths_are_not_found(home: SecurityHome, ra: EnrolmentServer) -> None:
    status, data = _raw_post(home, ra.port, b"{}", path="/admin")
    assert status == 404 and data["error"] == "not_found"


def test_service_without_io_answers_bytes(ca: CertificateAuthority) -> None:
    status, body = EnrolmentService(ca).handle(
        b'{"gateway_id": "gw-x", "code": "nope", "csr_pem": ""}'
    )
    assert status == 400
    assert json.loads(body)["error"] == "bad_csr"


class _AnswersWith(EnrolmentService):
    """An RA that answers every request with a fixed (status, body): a faulty or rogue RA."""

    def __init__(self, ca: CertificateAuthority, answer: tuple[int, bytes]) -> None:
        super().__init__(ca)
        self.answer = answer

    def handle(self, body: bytes, *, source: str = "unknown") -> tuple[int, bytes]:
        return self.answer


def test_gateway_refuses_a_certificate_for_another_key(
    ca: CertificateAuthority, home: SecurityHome, tmp_path: Path
) -> None:
    # The RA answers with a valid certificate for the right gateway, but someone else's key.
    from .conftest import enrol

    foreign, _ = enrol(ca, "gw-net-5", "site-net")
    answer = {
        "certificate_pem": certificate_pem(foreign).decode(),
        "ca_bundle_pem": home.ca_bundle.read_text(),
        "command_public_key": None,
    }
    server = serve(ca, home, tmp_path, _AnswersWith(ca, (200, json.dumps(answer).encode())))
    try:
        with pytest.raises(EnrolmentFailed) as err:
            request_enrolment(
                "127.0.0.1", server.port, home.ca_bundle, "gw-net-5", "code", new_private_key()
            )
    finally:
        server.close()
    assert err.value.reason == "bad_response"
    assert "not for this gateway's key" in str(err.value)


@pytest.mark.parametrize("body", [b"[]", b"<html>busy</html>", b'{"ca_bundle_pem": "x"}'])
def test_gateway_reports_an_unusable_answer(
    ca: CertificateAuthority, home: SecurityHome, tmp_path: Path, body: bytes
) -> None:
    server = serve(ca, home, tmp_path, _AnswersWith(ca, (200, body)))
    try:
        with pytest.raises(EnrolmentFailed) as err:
            request_enrolment(
                "127.0.0.1", server.port, home.ca_bundle, "gw-net-6", "code", new_private_key()
            )
    finally:
        server.close()
    assert err.value.reason == "bad_response"


def _raw_https(home: SecurityHome, port: int, request: bytes) -> tuple[int, dict]:  # type: ignore[type-arg]
    """Send ``request`` bytes as they are (no header added) and parse the JSON answer."""
    import socket

    context = ssl.create_default_context(cafile=str(home.ca_bundle))
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def _refusals(audit: AuditLog) -> list[tuple[str, int, str]]:
    return [
        (r.details["reason"], r.details["status"], r.details["source"])
        for r in audit.store.records()
        if r.kind is AuditKind.ENROLMENT and r.details.get("outcome") == "refused"
    ]


def test_deeply_nested_json_gets_a_400_not_silence(
    home: SecurityHome, ra: EnrolmentServer, audit: AuditLog
) -> None:
    status, data = _raw_post(home, ra.port, b"[" * 8000)
    assert status == 400 and data["error"] == "bad_request"
    assert "nested too deep" in data["message"]
    assert _refusals(audit) == [("bad_request", 400, "127.0.0.1")]


def test_every_refusal_before_the_ca_is_audited(
    home: SecurityHome, ra: EnrolmentServer, audit: AuditLog
) -> None:
    assert _raw_post(home, ra.port, b"{not json")[0] == 400
    assert _raw_post(home, ra.port, b"{}", path="/admin")[0] == 404
    no_length = b"POST /enrol HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _raw_https(home, ra.port, no_length)[0] == 411
    assert _raw_post(home, ra.port, b"x" * 20000)[0] == 413
    get = b"GET /enrol HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _raw_https(home, ra.port, get)[0] == 405
    assert [(reason, status) for reason, status, _ in _refusals(audit)] == [
        ("bad_request", 400),
        ("not_found", 404),
        ("length_required", 411),
        ("too_large", 413),
        ("method_not_allowed", 405),
    ]
    assert {r.actor for r in audit.store.records()} == {"unidentified"}


def test_bad_request_from_a_named_gateway_is_audited_under_its_name(
    ca: CertificateAuthority, audit: AuditLog
) -> None:
    status, _ = EnrolmentService(ca, audit).handle(b'{"gateway_id": "gw-7", "code": 1}')
    assert status == 400
    (record,) = list(audit.store.records())
    assert (record.actor, record.details["reason"]) == ("gw-7", "bad_request")
