"""TLS contexts with mutual authentication for every link that leaves a site.

ERAB Cyber Security Guideline, encrypted communication and mutual authentication (since
ver 1.1, only identified systems connect): both ends present certificates of the RA's CA;
TLS 1.3 by default; TLS 1.2 only in a profile for peers whose protocol needs it (OpenADR
2.0b), and then only ECDHE key exchange with AES-GCM; the CRL is enforced in the handshake
and the registry is consulted after it (which also catches revocations newer than the CRL
a long-lived context loaded).
"""

from __future__ import annotations

import ssl
from enum import StrEnum
from pathlib import Path

from erab.security.home import SecurityConfig
from erab.security.identity import PeerIdentity
from erab.security.registry import CertificateKind, CertificateRegistry, CertificateStatus


class TlsProfile(StrEnum):
    """Which protocol versions and suites a context allows."""

    MODERN = "tls1.3"  # TLS 1.3 only: the default for erab's own links
    OPENADR_TLS12 = "tls1.2-openadr"  # TLS 1.2 (ECDHE + AES-GCM) and 1.3: OpenADR 2.0b peers
    # Opt-in, for certified OpenADR 2.0 peers that offer only the suite the OpenADR 2.0
    # profile mandates (TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256): forward secrecy kept, but
    # not AEAD, so `assess` warns when it is enabled.
    OPENADR_TLS12_CBC = "tls1.2-openadr-cbc"


# TLS 1.2 suites of the OpenADR profile: forward secrecy (ECDHE) and AEAD (AES-GCM) only.
TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
)

# The ECDHE suite the OpenADR 2.0 profile makes mandatory (static-RSA suites stay refused).
OPENADR_MANDATED_CIPHER = "ECDHE-ECDSA-AES128-SHA256"


def profile_for(config: SecurityConfig, *, openadr_peer: bool = False) -> TlsProfile:
    """The profile a deployment's ``config.json`` asks for, on erab's own links or towards an
    OpenADR 2.0b peer; so the settings ``assess`` checks are the ones the contexts use."""
    version = config.tls_min_version
    if version not in ("1.2", "1.3"):
        raise ValueError(
            f"security config: tls_min_version {version} is refused (erab never negotiates "
            "below TLS 1.2); set it to 1.3, or 1.2 for OpenADR 2.0b peers"
        )
    if openadr_peer and (version == "1.2" or config.tls12_profile_enabled):
        if config.tls12_allow_openadr_cbc:
            return TlsProfile.OPENADR_TLS12_CBC
        return TlsProfile.OPENADR_TLS12
    return TlsProfile.OPENADR_TLS12 if version == "1.2" else TlsProfile.MODERN


def _apply_profile(context: ssl.SSLContext, profile: TlsProfile) -> None:
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if profile is TlsProfile.MODERN:
        # RFC 8446: TLS 1.3 has only AEAD suites with ephemeral key exchange.
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    elif profile is TlsProfile.OPENADR_TLS12:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
    elif profile is TlsProfile.OPENADR_TLS12_CBC:
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS + ":" + OPENADR_MANDATED_CIPHER)
    else:  # pragma: no cover - enum is closed
        raise ValueError(f"unknown TLS profile {profile!r}")


def _load_trust(context: ssl.SSLContext, ca_file: Path, crl_file: Path | None) -> None:
    context.load_verify_locations(cafile=str(ca_file))
    if crl_file is not None:
        # Leaf check: the issuing CA's CRL must be present and list no presented leaf;
        # a missing or expired CRL fails the handshake (fail closed).
        context.load_verify_locations(cafile=str(crl_file))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    context.verify_flags |= ssl.VERIFY_X509_STRICT


def server_context(
    cert_file: Path,
    key_file: Path,
    ca_file: Path,
    *,
    crl_file: Path | None = None,
    profile: TlsProfile = TlsProfile.MODERN,
    require_client_certificate: bool = True,
) -> ssl.SSLContext:
    """A server context that demands a client certificate issued by ``ca_file``'s CAs."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_profile(context, profile)
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    _load_trust(context, ca_file, crl_file)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_NONE
    return context


def client_context(
    ca_file: Path,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    crl_file: Path | None = None,
    profile: TlsProfile = TlsProfile.MODERN,
) -> ssl.SSLContext:
    """A client context that checks the server's certificate and host name.

    Give ``cert_file``/``key_file`` (the gateway's own identity) for mutual authentication.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_profile(context, profile)
    _load_trust(context, ca_file, crl_file)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file is not None:
        context.load_cert_chain(
            certfile=str(cert_file), keyfile=None if key_file is None else str(key_file)
        )
    return context


class PeerRejected(Exception):
    """A peer completed the handshake but may not connect; ``status`` says why."""

    def __init__(self, status: CertificateStatus | str, message: str) -> None:
        super().__init__(message)
        self.status = status


def peer_identity(connection: ssl.SSLSocket | ssl.SSLObject) -> PeerIdentity:
    """The identity in the certificate the peer presented on this connection."""
    der = connection.getpeercert(binary_form=True)
    if der is None:
        raise PeerRejected("no_certificate", "the peer presented no certificate")
    try:
        return PeerIdentity.from_der(der)
    except ValueError as exc:  # e.g. CN and SAN name different gateways
        raise PeerRejected("bad_identity", str(exc)) from None


def admit_gateway(
    connection: ssl.SSLSocket | ssl.SSLObject, registry: CertificateRegistry
) -> PeerIdentity:
    """After the handshake: the peer's gateway identity, if the registry says it is good.

    Raises :class:`PeerRejected` for a certificate the registry does not know, a revoked,
    expired or not-yet-valid one, or one that is not a gateway certificate.
    """
    identity = peer_identity(connection)
    record = registry.by_fingerprint(identity.fingerprint_sha256)
    if record is None:
        raise PeerRejected(
            CertificateStatus.UNKNOWN,
            f"certificate {identity.serial} ({identity.subject}) is not in the registry",
        )
    status = record.status_at(registry.clock.now())
    if status is not CertificateStatus.ACTIVE:
        raise PeerRejected(
            status,
            f"certificate {identity.serial} of gateway {record.gateway_id} is {status.value}",
        )
    if record.kind is not CertificateKind.GATEWAY or identity.gateway_id is None:
        raise PeerRejected("not_gateway", f"certificate {identity.serial} is not a gateway's")
    registry.mark_seen(identity.fingerprint_sha256)
    return identity
