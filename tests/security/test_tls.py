"""Mutual TLS over real sockets on 127.0.0.1: who gets in and who is refused."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from erab.clock import RealClock, SimulatedClock
from erab.security import (
    CertificateAuthority,
    CertificateStatus,
    PeerIdentity,
    PeerRejected,
    SecurityConfig,
    SecurityHome,
    TlsProfile,
    admit_gateway,
    client_context,
    profile_for,
    server_context,
)
from erab.security.pki import certificate_pem, private_key_pem
from tests.requires import missing

from .conftest import enrol


@dataclass
class Party:
    cert: Path
    key: Path


@dataclass
class Outcome:
    server_error: Exception | None
    client_error: Exception | None
    client_received: bytes
    server_peer: PeerIdentity | None
    cipher: tuple[str, str, int] | None
    admitted: PeerIdentity | None = None
    admit_error: PeerRejected | None = None


def _write(tmp: Path, name: str, cert_pem: bytes, key_pem: bytes) -> Party:
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / f"{name}.pem").write_bytes(cert_pem)
    (tmp / f"{name}.key.pem").write_bytes(key_pem)
    return Party(tmp / f"{name}.pem", tmp / f"{name}.key.pem")


@pytest.fixture
def server(ca: CertificateAuthority, tmp_path: Path) -> Party:
    issued = ca.issue_server(["localhost"], ["127.0.0.1"])
    return _write(
        tmp_path / "server",
        "server",
        certificate_pem(issued.certificate),
        private_key_pem(issued.private_key),
    )


@pytest.fixture
def gateway(ca: CertificateAuthority, tmp_path: Path) -> Party:
    cert, key_pem = enrol(ca, "gw-tls-1", "site-tls")
    return _write(tmp_path / "gw", "gw", certificate_pem(cert), key_pem)


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str = "127.0.0.1",
    registry_check: CertificateAuthority | None = None,
) -> Outcome:
    """One connection over a real loopback socket; the server answers b'ok' if it accepts."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                der = tls.getpeercert(binary_form=True)
                with contextlib.suppress(ValueError):  # a certificate that names nobody
                    result["peer"] = None if der is None else PeerIdentity.from_der(der)
                result["cipher"] = tls.cipher()
                if registry_check is not None:
                    try:
                        result["admitted"] = admit_gateway(tls, registry_check.registry)
                    except PeerRejected as exc:
                        result["admit_error"] = exc
                        return
                tls.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            result["server_error"] = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    received = b""
    client_error: Exception | None = None
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls,
        ):
            received = tls.recv(16)
    except (ssl.SSLError, OSError) as exc:
        client_error = exc
    thread.join(5)
    listener.close()
    return Outcome(
        server_error=result.get("server_error"),  # type: ignore[arg-type]
        client_error=client_error,
        client_received=received,
        server_peer=result.get("peer"),  # type: ignore[arg-type]
        cipher=result.get("cipher"),  # type: ignore[arg-type]
        admitted=result.get("admitted"),  # type: ignore[arg-type]
        admit_error=result.get("admit_error"),  # type: ignore[arg-type]
    )


def _server_ctx(home: SecurityHome, server: Party, **kw: object) -> ssl.SSLContext:
    return server_context(server.cert, server.key, home.ca_bundle, crl_file=home.crl, **kw)  # type: ignore[arg-type]


def test_enrolled_gateway_connects_and_is_identified_by_its_certificate(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> None:
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
        registry_check=ca,
    )
    assert out.client_received == b"ok"
    assert out.admitted is not None and out.admitted.gateway_id == "gw-tls-1"
    assert out.admitted.site_id == "site-tls"
    assert out.cipher is not None and out.cipher[1] == "TLSv1.3"


def test_admitting_a_gateway_records_when_it_was_seen(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> None:
    handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
        registry_check=ca,
    )
    record = ca.registry.certificates(gateway_id="gw-tls-1")[0]
    assert record.last_seen == ca.clock.now()


def test_client_without_certificate_is_refused(home: SecurityHome, server: Party) -> None:
    out = handshake(_server_ctx(home, server), client_context(home.ca_bundle))
    assert out.server_error is not None
    assert "peer did not return a certificate" in str(out.server_error)
    assert "certificate required" in str(out.client_error)
    assert out.client_received == b""


def test_client_with_certificate_of_another_ca_is_refused(
    home: SecurityHome, server: Party, tmp_path: Path, clock: SimulatedClock
) -> None:
    other = CertificateAuthority.initialise(SecurityHome(tmp_path / "other-ra"), clock)
    cert, key_pem = enrol(other, "gw-tls-1", "site-tls")
    imposter = _write(tmp_path / "imposter", "gw", certificate_pem(cert), key_pem)
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=imposter.cert, key_file=imposter.key),
    )
    assert out.server_error is not None
    assert "certificate verify failed" in str(out.server_error)
    assert "unable to get local issuer certificate" in str(out.server_error)
    assert out.client_received == b""


def test_client_with_expired_certificate_is_refused(
    ca: CertificateAuthority, home: SecurityHome, server: Party, tmp_path: Path
) -> None:
    # Issue a 1-day certificate as of 30 days ago: it is expired by the real clock OpenSSL uses.
    past = SimulatedClock(RealClock().now() - timedelta(days=30), speed=0)
    old_ca = CertificateAuthority.open(home, past)
    code = old_ca.create_enrolment_code("gw-old", "site-old")
    from .conftest import csr_pem

    csr, key_pem = csr_pem("gw-old")
    cert = old_ca.enrol(code, csr, days=1)
    expired = _write(tmp_path / "expired", "gw", certificate_pem(cert), key_pem)
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=expired.cert, key_file=expired.key),
    )
    assert out.server_error is not None
    assert "certificate has expired" in str(out.server_error)
    assert out.client_received == b""


def test_client_with_revoked_certificate_is_refused_by_the_crl(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> None:
    serial = ca.registry.certificates(gateway_id="gw-tls-1")[0].serial
    ca.revoke(serial, "keyCompromise")
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
    )
    assert out.server_error is not None
    assert "certificate revoked" in str(out.server_error)
    assert out.client_received == b""


def test_revocation_after_the_context_was_built_is_caught_by_the_registry(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> None:
    server_ctx = _server_ctx(home, server)  # loaded the CRL before the revocation
    ca.revoke(ca.registry.certificates(gateway_id="gw-tls-1")[0].serial, "keyCompromise")
    out = handshake(
        server_ctx,
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
        registry_check=ca,
    )
    assert out.admitted is None
    assert out.admit_error is not None and out.admit_error.status is CertificateStatus.REVOKED
    assert out.client_received == b""


def test_server_certificate_is_not_accepted_as_a_gateway(
    ca: CertificateAuthority, home: SecurityHome, server: Party
) -> None:
    # The server's own certificate lacks the clientAuth usage, so TLS refuses it outright.
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=server.cert, key_file=server.key),
        registry_check=ca,
    )
    assert out.admitted is None
    assert out.server_error is not None
    assert "certificate purpose" in str(out.server_error)
    assert out.client_received == b""


def test_renewed_and_old_certificates_both_connect_until_the_old_one_expires(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party, tmp_path: Path
) -> None:
    # Renewal without downtime: the gateway can switch to the new certificate at any time.
    old_serial = ca.registry.certificates(gateway_id="gw-tls-1")[0].serial
    renewed = _write(
        tmp_path / "renewed", "gw", certificate_pem(ca.renew(old_serial)), gateway.key.read_bytes()
    )
    server_ctx = _server_ctx(home, server)
    for party in (gateway, renewed):
        out = handshake(
            server_ctx,
            client_context(home.ca_bundle, cert_file=party.cert, key_file=party.key),
            registry_check=ca,
        )
        assert out.client_received == b"ok"
        assert out.admitted is not None and out.admitted.gateway_id == "gw-tls-1"


def test_server_missing_crl_fails_closed(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party, tmp_path: Path
) -> None:
    # A CRL from another CA leaves this CA's leaves without a CRL: the handshake must fail.
    other = CertificateAuthority.initialise(SecurityHome(tmp_path / "other"), ca.clock)
    server_ctx = server_context(server.cert, server.key, home.ca_bundle, crl_file=other.home.crl)
    out = handshake(
        server_ctx, client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key)
    )
    assert out.server_error is not None
    assert "unable to get certificate CRL" in str(out.server_error)
    assert out.client_received == b""


def test_server_with_an_expired_crl_fails_closed(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    # A CRL whose next update passed 9 days ago says nothing current about revocations.
    past = SimulatedClock(RealClock().now() - timedelta(days=10), speed=0)
    CertificateAuthority.open(home, past).write_crl(days=1)
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
    )
    assert out.server_error is not None
    assert "CRL has expired" in str(out.server_error)
    assert out.client_received == b""


def test_client_refuses_server_with_wrong_hostname(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
        server_hostname="broker.example.net",
    )
    assert out.client_error is not None
    assert "Hostname mismatch" in str(out.client_error)
    assert out.client_received == b""


def test_client_refuses_server_of_another_ca(
    home: SecurityHome, gateway: Party, tmp_path: Path, clock: SimulatedClock
) -> None:
    other = CertificateAuthority.initialise(SecurityHome(tmp_path / "rogue"), clock)
    issued = other.issue_server(["localhost"], ["127.0.0.1"])
    rogue = _write(
        tmp_path / "rogue-srv",
        "srv",
        certificate_pem(issued.certificate),
        private_key_pem(issued.private_key),
    )
    out = handshake(
        server_context(
            rogue.cert, rogue.key, other.home.ca_bundle, require_client_certificate=False
        ),
        client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
    )
    assert out.client_error is not None
    assert "certificate verify failed" in str(out.client_error)


def _tls12_client(home: SecurityHome, gateway: Party, ciphers: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(ciphers)
    ctx.load_verify_locations(str(home.ca_bundle))
    ctx.load_cert_chain(str(gateway.cert), str(gateway.key))
    return ctx


def test_default_profile_refuses_tls12(home: SecurityHome, server: Party, gateway: Party) -> None:
    out = handshake(
        _server_ctx(home, server), _tls12_client(home, gateway, "ECDHE-ECDSA-AES128-GCM-SHA256")
    )
    assert out.server_error is not None
    assert "unsupported protocol" in str(out.server_error)
    assert out.client_error is not None
    assert out.client_received == b""


def test_openadr_profile_accepts_tls12_with_ecdhe_aes_gcm(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    out = handshake(
        _server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12),
        _tls12_client(home, gateway, "ECDHE-ECDSA-AES128-GCM-SHA256"),
    )
    assert out.client_received == b"ok"
    assert out.cipher == ("ECDHE-ECDSA-AES128-GCM-SHA256", "TLSv1.2", 128)


@pytest.mark.parametrize("cipher", ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_openadr_profile_refuses_suites_other_than_ecdhe_aes_gcm(
    home: SecurityHome, server: Party, gateway: Party, cipher: str
) -> None:
    out = handshake(
        _server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12),
        _tls12_client(home, gateway, cipher),
    )
    assert out.server_error is not None
    assert "no shared cipher" in str(out.server_error)
    assert out.client_received == b""


def test_tls11_client_is_refused_even_by_the_tls12_profile(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        missing("this OpenSSL cannot even offer TLS 1.1")
    out = handshake(_server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12), ctx)
    assert out.client_received == b""
    if out.server_error is not None:  # the client offered TLS 1.1 and the server refused it
        assert "unsupported protocol" in str(out.server_error)
    else:  # this OpenSSL would not even send a TLS 1.1 hello
        assert out.client_error is not None


async def _asyncio_exchange(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> bytes:
    """An asyncio server that admits gateways by registry and answers with their id."""

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            identity = admit_gateway(writer.get_extra_info("ssl_object"), ca.registry)
            writer.write(f"hello {identity.gateway_id}".encode())
            await writer.drain()
        except PeerRejected as exc:
            writer.write(f"refused {exc.status}".encode())
        finally:
            writer.close()

    srv = await asyncio.start_server(on_connect, "127.0.0.1", 0, ssl=_server_ctx(home, server))
    port = srv.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1",
            port,
            ssl=client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key),
            server_hostname="127.0.0.1",
        )
        data = await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        return data
    finally:
        srv.close()
        await srv.wait_closed()


async def test_asyncio_server_identifies_gateway_from_its_certificate(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> None:
    assert await _asyncio_exchange(ca, home, server, gateway) == b"hello gw-tls-1"


async def test_asyncio_server_refuses_gateway_revoked_after_startup(
    ca: CertificateAuthority, home: SecurityHome, server: Party, gateway: Party
) -> None:
    # Revoked in the registry only: the CRL on disk (loaded by the server) does not list it.
    with ca.registry.transaction() as db:
        serial = ca.registry.certificates(gateway_id="gw-tls-1")[0].serial
        ca.registry.mark_revoked(db, serial, "keyCompromise", ca.clock.now())
    assert await _asyncio_exchange(ca, home, server, gateway) == b"refused revoked"


def test_openadr_client_profile_talks_tls12_to_a_tls12_only_peer(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    peer = _server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12)
    peer.maximum_version = ssl.TLSVersion.TLSv1_2  # an OpenADR 2.0b peer without TLS 1.3
    out = handshake(
        peer,
        client_context(
            home.ca_bundle,
            cert_file=gateway.cert,
            key_file=gateway.key,
            profile=TlsProfile.OPENADR_TLS12,
        ),
    )
    assert out.client_received == b"ok"
    assert out.cipher is not None and out.cipher[1] == "TLSv1.2" and "GCM" in out.cipher[0]


def test_default_client_profile_will_not_fall_back_to_tls12(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    peer = _server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12)
    peer.maximum_version = ssl.TLSVersion.TLSv1_2
    out = handshake(
        peer, client_context(home.ca_bundle, cert_file=gateway.cert, key_file=gateway.key)
    )
    assert out.client_error is not None
    assert out.client_received == b""


def test_opt_in_openadr_cbc_profile_accepts_the_suite_openadr_mandates(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    out = handshake(
        _server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12_CBC),
        _tls12_client(home, gateway, "ECDHE-ECDSA-AES128-SHA256"),
    )
    assert out.client_received == b"ok"
    assert out.cipher is not None and out.cipher[0] == "ECDHE-ECDSA-AES128-SHA256"


def test_opt_in_openadr_cbc_profile_still_prefers_gcm(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    out = handshake(
        _server_ctx(home, server, profile=TlsProfile.OPENADR_TLS12_CBC),
        _tls12_client(home, gateway, "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256"),
    )
    assert out.cipher is not None and "GCM" in out.cipher[0]


@pytest.mark.parametrize(
    ("settings", "openadr_peer", "profile"),
    [
        ({}, False, TlsProfile.MODERN),
        ({}, True, TlsProfile.MODERN),
        ({"tls12_profile_enabled": True}, False, TlsProfile.MODERN),
        ({"tls12_profile_enabled": True}, True, TlsProfile.OPENADR_TLS12),
        (
            {"tls12_profile_enabled": True, "tls12_allow_openadr_cbc": True},
            True,
            TlsProfile.OPENADR_TLS12_CBC,
        ),
        ({"tls_min_version": "1.2"}, False, TlsProfile.OPENADR_TLS12),
    ],
)
def test_config_chooses_the_profile(
    settings: dict[str, object], openadr_peer: bool, profile: TlsProfile
) -> None:
    config = SecurityConfig(**settings)  # type: ignore[arg-type]
    assert profile_for(config, openadr_peer=openadr_peer) is profile


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_config_below_tls12_is_refused_naming_the_setting(version: str) -> None:
    with pytest.raises(ValueError, match=f"tls_min_version {version} is refused"):
        profile_for(SecurityConfig(tls_min_version=version), openadr_peer=True)


def test_server_built_from_a_tls13_config_refuses_tls12(
    home: SecurityHome, server: Party, gateway: Party
) -> None:
    profile = profile_for(SecurityConfig(tls12_profile_enabled=True))  # own links: 1.3
    out = handshake(
        _server_ctx(home, server, profile=profile),
        _tls12_client(home, gateway, "ECDHE-ECDSA-AES128-GCM-SHA256"),
    )
    assert out.server_error is not None and "unsupported protocol" in str(out.server_error)


def _signed_behind_the_registrys_back(
    ca: CertificateAuthority, tmp_path: Path, common_name: str, san_gateway: str
) -> Party:
    """A gateway certificate signed with the issuing key but never recorded in the registry."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from erab.security import new_private_key

    key = new_private_key()
    now = ca.clock.now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.issuing_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"urn:erab:gateway:{san_gateway}")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.issuing_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca._issuing_key, hashes.SHA256())
    )
    return _write(tmp_path / "odd", "gw", certificate_pem(cert), private_key_pem(key))


def test_certificate_the_registry_never_issued_is_refused_as_unknown(
    ca: CertificateAuthority, home: SecurityHome, server: Party, tmp_path: Path
) -> None:
    # It chains to the CA (so TLS accepts it), but the registry has no record of it.
    odd = _signed_behind_the_registrys_back(ca, tmp_path, "gw-ghost", "gw-ghost")
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=odd.cert, key_file=odd.key),
        registry_check=ca,
    )
    assert out.admitted is None and out.admit_error is not None
    assert out.admit_error.status is CertificateStatus.UNKNOWN
    assert "is not in the registry" in str(out.admit_error)
    assert out.client_received == b""


def test_certificate_naming_two_gateways_is_refused_as_bad_identity(
    ca: CertificateAuthority, home: SecurityHome, server: Party, tmp_path: Path
) -> None:
    # Mis-issued (CN and SAN disagree) yet signed by the issuing CA: it chains, but names nobody.
    odd = _signed_behind_the_registrys_back(ca, tmp_path, "gw-a", "gw-b")
    out = handshake(
        _server_ctx(home, server),
        client_context(home.ca_bundle, cert_file=odd.cert, key_file=odd.key),
        registry_check=ca,
    )
    assert out.admitted is None and out.admit_error is not None
    assert out.admit_error.status == "bad_identity"
    assert "gw-b" in str(out.admit_error) and "gw-a" in str(out.admit_error)
    assert out.client_received == b""
