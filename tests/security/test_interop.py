"""Interoperability with independent implementations.

- cryptography's X.509 path validator (a Rust RFC 5280 implementation, separate from OpenSSL)
  accepts our gateway and server certificates under its client and server policies;
- the ``openssl`` command-line tool verifies our chains and CRL and connects, as a TLS client
  with a gateway certificate, to a server built with :func:`server_context`.
"""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from erab.security import (
    CertificateAuthority,
    SecurityHome,
    admit_gateway,
    server_context,
)
from erab.security.identity import serial_hex
from erab.security.pki import certificate_pem, private_key_pem
from tests.requires import skip_unless

from .conftest import enrol

OPENSSL = shutil.which("openssl")
needs_openssl = skip_unless(OPENSSL is not None, "openssl command not installed")
needs_client_verifier = pytest.mark.skipif(
    not hasattr(PolicyBuilder, "build_client_verifier"),
    reason="this cryptography has no client certificate verifier",
)


def _builder(ca: CertificateAuthority) -> PolicyBuilder:
    return PolicyBuilder().store(Store([ca.root_cert])).time(ca.clock.now())


@needs_client_verifier
def test_gateway_certificate_passes_an_independent_client_policy(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-1", "site-1")
    result = _builder(ca).build_client_verifier().verify(cert, [ca.issuing_cert])
    assert result.subjects is not None
    assert {s.value for s in result.subjects} == {"urn:erab:gateway:gw-1", "urn:erab:site:site-1"}
    assert [c.subject for c in result.chain][-1] == ca.root_cert.subject


def test_server_certificate_passes_an_independent_server_policy(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(["localhost"], ["127.0.0.1"])
    for name in (x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))):
        chain = (
            _builder(ca).build_server_verifier(name).verify(issued.certificate, [ca.issuing_cert])
        )
        assert chain[0] == issued.certificate


def test_independent_validator_refuses_server_certificate_for_another_name(
    ca: CertificateAuthority,
) -> None:
    issued = ca.issue_server(["localhost"])
    verifier = _builder(ca).build_server_verifier(x509.DNSName("broker.example.net"))
    with pytest.raises(VerificationError):
        verifier.verify(issued.certificate, [ca.issuing_cert])


def _openssl_verify(home: SecurityHome, cert_path: Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [
            OPENSSL,
            "verify",
            "-CAfile",
            str(home.root_cert),
            "-untrusted",
            str(home.issuing_cert),
            "-crl_check",
            "-CRLfile",
            str(home.crl),
            str(cert_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@needs_openssl
def test_openssl_verifies_chain_and_crl_then_sees_revocation(
    ca: CertificateAuthority, home: SecurityHome, tmp_path: Path
) -> None:
    cert, _ = enrol(ca, "gw-2", "site-2")
    path = tmp_path / "gw.pem"
    path.write_bytes(certificate_pem(cert))
    ok = _openssl_verify(home, path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    ca.revoke(serial_hex(cert), "keyCompromise")
    revoked = _openssl_verify(home, path)
    assert revoked.returncode != 0
    assert "certificate revoked" in revoked.stdout + revoked.stderr


@needs_openssl
def test_openssl_client_with_gateway_certificate_is_admitted(
    ca: CertificateAuthority, home: SecurityHome, tmp_path: Path
) -> None:
    issued = ca.issue_server(["localhost"], ["127.0.0.1"])
    (tmp_path / "srv.pem").write_bytes(certificate_pem(issued.certificate))
    (tmp_path / "srv.key").write_bytes(private_key_pem(issued.private_key))
    cert, key_pem = enrol(ca, "gw-3", "site-3")
    (tmp_path / "gw.pem").write_bytes(certificate_pem(cert))
    (tmp_path / "gw.key").write_bytes(key_pem)
    context = server_context(
        tmp_path / "srv.pem", tmp_path / "srv.key", home.ca_bundle, crl_file=home.crl
    )
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    admitted: list[str | None] = []

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(10)
        with context.wrap_socket(conn, server_side=True) as tls:
            admitted.append(admit_gateway(tls, ca.registry).gateway_id)
            tls.sendall(b"welcome-from-ra\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert OPENSSL is not None
    client = subprocess.run(
        [
            OPENSSL,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-servername",
            "localhost",
            "-CAfile",
            str(home.ca_bundle),
            "-cert",
            str(tmp_path / "gw.pem"),
            "-key",
            str(tmp_path / "gw.key"),
            "-verify_return_error",
            "-tls1_3",
            "-ign_eof",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    thread.join(10)
    listener.close()
    assert admitted == ["gw-3"]
    assert "welcome-from-ra" in client.stdout
    assert "Verify return code: 0 (ok)" in client.stdout
