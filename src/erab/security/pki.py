"""The RA's certificate authority: offline root, issuing CA, gateway enrolment, revocation.

ERAB Cyber Security Guideline, device authorization: only gateways the RA has identified
may connect, so each gateway gets an X.509 identity from the RA's CA.  The gateway makes its
own key and sends a CSR with a one-time enrolment code; the CA decides the subject (gateway
id and site come from the code, never from the CSR), spends the code and records the
certificate in the :class:`~erab.security.registry.CertificateRegistry`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from erab.clock import Clock
from erab.security._common import atomic_write
from erab.security.home import SecurityHome
from erab.security.identity import (
    GATEWAY_URI_PREFIX,
    SITE_URI_PREFIX,
    check_id,
    fingerprint_sha256,
    serial_hex,
)
from erab.security.registry import (
    CertificateKind,
    CertificateRecord,
    CertificateRegistry,
    EnrolmentCodeRecord,
)

# Certificates start a little before "now" so a peer whose clock lags slightly accepts them.
_BACKDATE = timedelta(minutes=5)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


class EnrolmentRefusal(StrEnum):
    """Why an enrolment request was refused."""

    UNKNOWN_CODE = "unknown_code"
    CODE_SPENT = "code_spent"
    CODE_EXPIRED = "code_expired"
    GATEWAY_MISMATCH = "gateway_mismatch"
    BAD_CSR = "bad_csr"


class EnrolmentRefused(ValueError):
    """An enrolment request was refused; ``reason`` says why."""

    def __init__(self, reason: EnrolmentRefusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class PkiError(ValueError):
    """A PKI operation could not be done (missing CA, unknown serial, ...)."""


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A fresh ECDSA P-256 key (the curve the CA uses and TLS peers all support)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def subject_string(cert_pem: str | bytes, *, serial_number_name: str = "serialNumber") -> str:
    """A certificate's subject in RFC 4514 form (most specific RDN last), with X.520
    serialNumber (2.5.4.5) written as ``serial_number_name``: brokers name users this way,
    nats-server calling it ``SERIALNUMBER`` and OpenSSL (Mosquitto) ``serialNumber``."""
    data = cert_pem.encode("ascii") if isinstance(cert_pem, str) else cert_pem
    cert = x509.load_pem_x509_certificate(data)
    return cert.subject.rfc4514_string({NameOID.SERIAL_NUMBER: serial_number_name})


def certificate_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_csr(key: ec.EllipticCurvePrivateKey, gateway_id: str) -> x509.CertificateSigningRequest:
    """The CSR a gateway sends with its enrolment code (its key never leaves it)."""
    check_id(gateway_id, "gateway id")
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, gateway_id)]))
        .sign(key, hashes.SHA256())
    )


def hash_enrolment_code(code: str) -> str:
    # Codes are 160-bit random, so a plain SHA-256 suffices (no guessing to slow down).
    return hashlib.sha256(code.strip().encode("utf-8")).hexdigest()


def key_strength_problem(public_key: object) -> str | None:
    """Why a public key is too weak for erab, or None if it is acceptable."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if public_key.curve.key_size < MIN_EC_BITS:
            return f"EC key on {public_key.curve.name} is below {MIN_EC_BITS} bits"
        return None
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            return f"RSA key of {public_key.key_size} bits is below {MIN_RSA_BITS}"
        return None
    return f"key type {type(public_key).__name__} is not accepted (use ECDSA P-256 or RSA)"


def load_csr(pem: bytes) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem)
    except ValueError as exc:
        raise EnrolmentRefused(
            EnrolmentRefusal.BAD_CSR, f"the CSR is not a PEM certificate request ({exc})"
        ) from exc
    if not csr.is_signature_valid:
        raise EnrolmentRefused(
            EnrolmentRefusal.BAD_CSR, "the CSR's signature does not match its public key"
        )
    problem = key_strength_problem(csr.public_key())
    if problem is not None:
        raise EnrolmentRefused(EnrolmentRefusal.BAD_CSR, f"the CSR's key is too weak: {problem}")
    return csr


@dataclass(frozen=True)
class IssuedServer:
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


class CertificateAuthority:
    """The issuing CA of one deployment, with its registry and CRL.

    Open an existing one with :meth:`open`; create one with :meth:`initialise`.
    """

    def __init__(
        self,
        home: SecurityHome,
        clock: Clock,
        issuing_cert: x509.Certificate,
        issuing_key: ec.EllipticCurvePrivateKey,
        root_cert: x509.Certificate,
    ) -> None:
        self.home = home
        self.clock = clock
        self.issuing_cert = issuing_cert
        self._issuing_key = issuing_key
        self.root_cert = root_cert
        self.registry = CertificateRegistry(home.registry_db, clock)

    # --- creation ------------------------------------------------------------------------

    @classmethod
    def initialise(
        cls,
        home: SecurityHome,
        clock: Clock,
        *,
        organisation: str = "erab resource aggregator",
        root_days: int = 3650,
        issuing_days: int = 1825,
        crl_days: int = 7,
    ) -> CertificateAuthority:
        """Create root and issuing CA keys and certificates, an empty CRL and registry.

        Refuses if a CA already exists there (never overwrites keys).
        """
        if home.issuing_key.exists() or home.root_cert.exists():
            raise PkiError(
                f"a CA already exists in {home.pki_dir}; use a different --home to make another"
            )
        home.ensure_dirs()
        now = clock.now()

        def name(role: str) -> x509.Name:
            return x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"{organisation} {role}"),
                ]
            )

        root_key = new_private_key()
        root_name = name("root CA")
        # RFC 5280 §4.2.1.9: the root may sign one level of CA (the issuing CA) below it;
        # the issuing CA signs end entities only.
        root_cert = _ca_certificate(root_name, root_name, root_key, root_key, now, root_days, 1)
        issuing_key = new_private_key()
        issuing_cert = _ca_certificate(
            name("issuing CA"), root_name, issuing_key, root_key, now, issuing_days, 0
        )
        atomic_write(home.root_key, private_key_pem(root_key), private=True)
        atomic_write(home.root_cert, certificate_pem(root_cert))
        atomic_write(home.issuing_key, private_key_pem(issuing_key), private=True)
        atomic_write(home.issuing_cert, certificate_pem(issuing_cert))
        atomic_write(home.ca_bundle, certificate_pem(root_cert) + certificate_pem(issuing_cert))
        ca = cls(home, clock, issuing_cert, issuing_key, root_cert)
        ca.write_crl(days=crl_days)
        return ca

    @classmethod
    def open(cls, home: SecurityHome, clock: Clock) -> CertificateAuthority:
        missing = [
            p for p in (home.issuing_key, home.issuing_cert, home.root_cert) if not p.exists()
        ]
        if missing:
            raise PkiError(
                f"no CA in {home.pki_dir} (missing {missing[0].name}); run 'erab pki init' first"
            )
        key = serialization.load_pem_private_key(home.issuing_key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{home.issuing_key} is not an EC private key")
        return cls(
            home,
            clock,
            x509.load_pem_x509_certificate(home.issuing_cert.read_bytes()),
            key,
            x509.load_pem_x509_certificate(home.root_cert.read_bytes()),
        )

    def reissue_issuing_ca(self, root_key_pem: bytes, *, days: int = 1825) -> x509.Certificate:
        """A new certificate for the issuing CA's same key and name, signed by the root key.

        Gateway and server certificates are never issued past the issuing CA's expiry, so
        this is how the CA goes on beyond it.  Key and subject are unchanged, so every
        certificate and CRL the CA signed still chains to the new certificate (RFC 5280 §4.2.1.1:
        the authority key identifier matches).  Needs the offline root key; capped at the root's
        own expiry.  Rewrites ``issuing-ca.pem`` and ``ca-bundle.pem``.
        """
        try:
            root_key = serialization.load_pem_private_key(root_key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise PkiError(f"the root key is not a readable PEM private key ({exc})") from None
        if not isinstance(root_key, ec.EllipticCurvePrivateKey) or (
            root_key.public_key() != self.root_cert.public_key()
        ):
            raise PkiError("that key is not the root CA's key (it does not match root-ca.pem)")
        if days <= 0:
            raise ValueError(f"certificate lifetime must be positive days, got {days}")
        now = self.clock.now()
        root_left = self.root_cert.not_valid_after_utc - now
        if root_left <= timedelta(days=1):
            raise PkiError(
                f"the root CA expires at {self.root_cert.not_valid_after_utc.isoformat()}; "
                "make a new CA with 'erab pki init' in another home"
            )
        days = min(days, root_left.days)
        cert = _ca_certificate(
            self.issuing_cert.subject, self.root_cert.subject, self._issuing_key, root_key,
            now, days, 0,
        )  # fmt: skip
        atomic_write(self.home.issuing_cert, certificate_pem(cert))
        atomic_write(
            self.home.ca_bundle, certificate_pem(self.root_cert) + certificate_pem(cert)
        )
        self.issuing_cert = cert
        return cert

    # --- enrolment -----------------------------------------------------------------------

    def create_enrolment_code(
        self, gateway_id: str, site_id: str, *, valid_for: timedelta = timedelta(hours=24)
    ) -> str:
        """A one-time code that lets ``gateway_id`` at ``site_id`` enrol once before expiry.

        Only the code's hash is stored; the caller must hand the code to the installer.
        """
        check_id(gateway_id, "gateway id")
        check_id(site_id, "site id")
        if valid_for <= timedelta(0):
            raise ValueError(f"enrolment code lifetime must be positive, got {valid_for}")
        code = secrets.token_urlsafe(20)
        now = self.clock.now()
        self.registry.add_enrolment_code(
            EnrolmentCodeRecord(
                code_hash=hash_enrolment_code(code),
                gateway_id=gateway_id,
                site_id=site_id,
                created_at=now,
                expires_at=now + valid_for,
                spent_at=None,
                spent_for_serial=None,
            )
        )
        return code

    def enrol(self, code: str, csr_pem: bytes, *, days: int = 365) -> x509.Certificate:
        """Redeem an enrolment code for a gateway certificate; the code is then spent."""
        csr = load_csr(csr_pem)
        now = self.clock.now()
        code_hash = hash_enrolment_code(code)
        with self.registry.transaction() as db:
            entry = self.registry.enrolment_code(db, code_hash)
            if entry is None:
                raise EnrolmentRefused(
                    EnrolmentRefusal.UNKNOWN_CODE, "enrolment code not recognised"
                )
            if entry.spent_at is not None:
                raise EnrolmentRefused(
                    EnrolmentRefusal.CODE_SPENT,
                    f"enrolment code for gateway {entry.gateway_id} was already used at "
                    f"{entry.spent_at.isoformat()}; ask for a new code",
                )
            if now >= entry.expires_at:
                raise EnrolmentRefused(
                    EnrolmentRefusal.CODE_EXPIRED,
                    f"enrolment code for gateway {entry.gateway_id} expired at "
                    f"{entry.expires_at.isoformat()}; ask for a new code",
                )
            cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if cns and cns[0].value != entry.gateway_id:
                raise EnrolmentRefused(
                    EnrolmentRefusal.GATEWAY_MISMATCH,
                    f"the CSR names gateway {cns[0].value!r} but the code was issued for "
                    f"{entry.gateway_id!r}",
                )
            cert = self._gateway_certificate(
                csr.public_key(), entry.gateway_id, entry.site_id, days
            )
            self.registry.record_issued(db, self._record(cert, entry.gateway_id, entry.site_id))
            self.registry.spend_enrolment_code(db, code_hash, now, serial_hex(cert))
            self.registry.set_gateway(db, entry.gateway_id, entry.site_id, "active", now)
        return cert

    def issue_gateway(
        self, csr_pem: bytes, gateway_id: str, site_id: str, *, days: int = 365
    ) -> x509.Certificate:
        """Issue a gateway certificate directly from a CSR (an operator's decision)."""
        check_id(gateway_id, "gateway id")
        check_id(site_id, "site id")
        csr = load_csr(csr_pem)
        cert = self._gateway_certificate(csr.public_key(), gateway_id, site_id, days)
        with self.registry.transaction() as db:
            self.registry.record_issued(db, self._record(cert, gateway_id, site_id))
            self.registry.set_gateway(db, gateway_id, site_id, "active", self.clock.now())
        return cert

    def issue_server(
        self,
        dns_names: list[str],
        ip_addresses: list[str] | None = None,
        *,
        days: int = 365,
    ) -> IssuedServer:
        """A TLS server certificate (broker, RA API, VTN) with a fresh key."""
        ips = [ipaddress.ip_address(a) for a in ip_addresses or []]
        if not dns_names and not ips:
            raise ValueError("a server certificate needs at least one --dns name or --ip address")
        key = new_private_key()
        now = self.clock.now()
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [x509.IPAddress(ip) for ip in ips]
        cert = (
            self._builder(key.public_key(), dns_names[0] if dns_names else str(ips[0]), days, now)
            .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._issuing_key, hashes.SHA256())
        )
        record = self._record(cert, None, None, kind=CertificateKind.SERVER)
        with self.registry.transaction() as db:
            self.registry.record_issued(db, record)
        return IssuedServer(cert, key)

    def issue_service_client(self, name: str, *, days: int = 365) -> IssuedServer:
        """A TLS client certificate for one of the RA's own services (e.g. its bus link).

        CN ``name`` and SAN URI ``urn:erab:service:<name>``, clientAuth only, fresh key;
        recorded with kind ``server`` (it names no gateway, so it gets no gateway rights).
        """
        check_id(name, "service name")
        key = new_private_key()
        cert = (
            self._builder(key.public_key(), name, days, self.clock.now())
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier("urn:erab:service:" + name)]
                ),
                critical=False,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._issuing_key, hashes.SHA256())
        )
        with self.registry.transaction() as db:
            self.registry.record_issued(
                db, self._record(cert, None, None, kind=CertificateKind.SERVER)
            )
        return IssuedServer(cert, key)

    def renew(
        self, serial: str, csr_pem: bytes | None = None, *, days: int = 365
    ) -> x509.Certificate:
        """A new certificate for the same gateway and site, before the old one expires.

        With a CSR the gateway moves to a new key; without, the old public key is kept.
        The old certificate stays valid until its own expiry so the switch needs no downtime.
        """
        old = self.registry.by_serial(serial)
        if old is None:
            raise PkiError(f"no certificate with serial {serial} in the registry")
        if old.kind is not CertificateKind.GATEWAY or old.gateway_id is None or old.site_id is None:
            raise PkiError(f"certificate {serial} is not a gateway certificate; issue a new one")
        if old.revoked:
            raise PkiError(f"certificate {serial} is revoked; enrol the gateway again")
        if self.clock.now() >= old.not_after:
            raise PkiError(
                f"certificate {serial} expired at {old.not_after.isoformat()}; renewal must "
                "happen before expiry, enrol the gateway again"
            )
        if csr_pem is not None:
            public_key = load_csr(csr_pem).public_key()
        else:
            public_key = x509.load_pem_x509_certificate(old.pem.encode()).public_key()
        cert = self._gateway_certificate(public_key, old.gateway_id, old.site_id, days)
        with self.registry.transaction() as db:
            self.registry.record_issued(db, self._record(cert, old.gateway_id, old.site_id))
            self.registry.mark_renewed(db, old.serial, serial_hex(cert))
        return cert

    # --- revocation ----------------------------------------------------------------------

    def revoke(
        self, serial: str, reason: str = "unspecified", *, crl_days: int = 7
    ) -> CertificateRecord:
        """Revoke one certificate and rewrite the CRL (valid ``crl_days``).

        ``reason`` is free text; an RFC 5280 §5.3.1 reason name (e.g. ``keyCompromise``,
        ``superseded``, ``cessationOfOperation``) is also written to the CRL entry.
        """
        record = self.registry.by_serial(serial)
        if record is None:
            raise PkiError(f"no certificate with serial {serial} in the registry")
        with self.registry.transaction() as db:
            if not self.registry.mark_revoked(db, record.serial, reason, self.clock.now()):
                raise PkiError(f"certificate {serial} is already revoked")
        self.write_crl(days=crl_days)
        updated = self.registry.by_serial(serial)
        assert updated is not None
        return updated

    def revoke_gateway(
        self, gateway_id: str, reason: str = "unspecified", *, crl_days: int = 7
    ) -> list[str]:
        """Revoke every certificate of a gateway, mark the gateway revoked, rewrite the CRL."""
        certs = self.registry.certificates(gateway_id=gateway_id)
        if not certs:
            raise PkiError(f"no certificates for gateway {gateway_id!r} in the registry")
        now = self.clock.now()
        revoked: list[str] = []
        with self.registry.transaction() as db:
            for cert in certs:
                if self.registry.mark_revoked(db, cert.serial, reason, now):
                    revoked.append(cert.serial)
            site = certs[0].site_id or ""
            self.registry.set_gateway(db, gateway_id, site, "revoked", now)
        self.write_crl(days=crl_days)
        return revoked

    def write_crl(self, *, days: int = 7) -> x509.CertificateRevocationList:
        """Sign a CRL of every revoked certificate, valid ``days``, and write it.

        RFC 5280 §5: v2 CRL with a CRL number and the issuer's key identifier; relying parties
        treat it as stale after ``next_update``.
        """
        now = self.clock.now()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuing_cert.subject)
            .last_update(now - _BACKDATE)
            .next_update(now + timedelta(days=days))
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._issuing_key.public_key()),
                critical=False,
            )
        )
        for rec in self.registry.revoked():
            assert rec.revoked_at is not None
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(rec.serial, 16))
                .revocation_date(rec.revoked_at)
            )
            reason_code = crl_reason(rec.revocation_reason)
            if reason_code is not None:
                # RFC 5280 §5.3.1: the reason code entry extension (omitted for unspecified).
                entry = entry.add_extension(x509.CRLReason(reason_code), critical=False)
            builder = builder.add_revoked_certificate(entry.build())
        crl = builder.sign(self._issuing_key, hashes.SHA256())
        atomic_write(self.home.crl, crl.public_bytes(serialization.Encoding.PEM))
        return crl

    # --- internals -----------------------------------------------------------------------

    def _builder(
        self,
        public_key: object,
        common_name: str,
        days: int,
        now: datetime,
        extra_name: list[x509.NameAttribute[str]] | None = None,
        serial: int | None = None,
    ) -> x509.CertificateBuilder:
        if days <= 0:
            raise ValueError(f"certificate lifetime must be positive days, got {days}")
        name = [x509.NameAttribute(NameOID.COMMON_NAME, common_name), *(extra_name or [])]
        not_after = min(now + timedelta(days=days), self.issuing_cert.not_valid_after_utc)
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name(name))
            .issuer_name(self.issuing_cert.subject)
            .public_key(public_key)  # type: ignore[arg-type]
            .serial_number(serial if serial is not None else x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._issuing_key.public_key()),
                critical=False,
            )
        )

    def _gateway_certificate(
        self, public_key: object, gateway_id: str, site_id: str, days: int
    ) -> x509.Certificate:
        # The subject's serialNumber (X.520 2.5.4.5) repeats the certificate's serial, so
        # each certificate has its own subject: the broker names its users by subject, and
        # revoking one certificate then leaves the gateway's other (renewed) one admitted.
        serial = x509.random_serial_number()
        return (
            self._builder(
                public_key,
                gateway_id,
                days,
                self.clock.now(),
                [
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site_id),
                    x509.NameAttribute(NameOID.SERIAL_NUMBER, format(serial, "x")),
                ],
                serial,
            )
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(GATEWAY_URI_PREFIX + gateway_id),
                        x509.UniformResourceIdentifier(SITE_URI_PREFIX + site_id),
                    ]
                ),
                critical=False,
            )
            # RFC 5280 §4.2.1.12: a gateway certificate is good for TLS client auth only.
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self._issuing_key, hashes.SHA256())
        )

    def _record(
        self,
        cert: x509.Certificate,
        gateway_id: str | None,
        site_id: str | None,
        kind: CertificateKind = CertificateKind.GATEWAY,
    ) -> CertificateRecord:
        return CertificateRecord(
            serial=serial_hex(cert),
            fingerprint_sha256=fingerprint_sha256(cert),
            kind=kind,
            gateway_id=gateway_id,
            site_id=site_id,
            subject=cert.subject.rfc4514_string(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            issued_at=self.clock.now(),
            revoked=False,
            revoked_at=None,
            revocation_reason=None,
            renewed_by=None,
            last_seen=None,
            pem=certificate_pem(cert).decode("ascii"),
        )


# RFC 5280 §5.3.1 reason names an operator may give as --reason (removeFromCRL is for
# delta CRLs and unspecified is written as no reason code at all).
CRL_REASONS: dict[str, x509.ReasonFlags] = {
    flag.value.lower(): flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.unspecified, x509.ReasonFlags.remove_from_crl)
}


def crl_reason(reason: str | None) -> x509.ReasonFlags | None:
    """The RFC 5280 reason code a free-text revocation reason names, if it names one."""
    if reason is None:
        return None
    return CRL_REASONS.get(reason.strip().lower())


def _ca_certificate(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signing_key: ec.EllipticCurvePrivateKey,
    now: datetime,
    days: int,
    path_length: int,
) -> x509.Certificate:
    """A CA certificate for ``key``, signed by ``signing_key`` (the same key for the root)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if signing_key is not key:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()),
            critical=False,
        )
    return builder.sign(signing_key, hashes.SHA256())


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )
