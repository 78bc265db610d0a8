"""Self-assessment against the ERAB Cyber Security Guideline (the "Check" of PDCA).

:func:`assess` inspects one deployment's security home and reports, per guideline
requirement area, the control erab provides, a status and the evidence it looked at.  Each
check looks at what is stored or what the code builds, never at a setting alone: the
certificates on disk (key algorithm and size, expiry, who signed them), the CRL (age,
signature), the registry, the audit chain (verified read-only against its checkpoints and
head file), and the TLS contexts :mod:`erab.security.tls` builds from ``config.json``
(their minimum version, suites, whether they demand a client certificate and load the CRL).
A check with nothing to examine says ``n/a``, never ``pass``.  See ``docs/security.md``.
"""

from __future__ import annotations

import json
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from erab.clock import Clock
from erab.security._common import atomic_write, utc_iso
from erab.security.audit import home_has_security_state, verify_home_audit
from erab.security.home import SecurityConfig, SecurityHome
from erab.security.operators import DEFAULT_PASSWORDS, OperatorDirectory, Role
from erab.security.pki import key_strength_problem
from erab.security.registry import CertificateRegistry, CertificateStatus
from erab.security.tls import client_context, profile_for, server_context


class Status(StrEnum):
    NOT_APPLICABLE = "n/a"  # nothing to examine yet; never counts as a pass
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.NOT_APPLICABLE: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}


@dataclass(frozen=True)
class Check:
    control: str
    status: Status
    evidence: str


@dataclass(frozen=True)
class Requirement:
    requirement_id: str
    title: str
    source: str
    checks: tuple[Check, ...]

    @property
    def status(self) -> Status:
        return max(
            (c.status for c in self.checks), key=_RANK.__getitem__, default=Status.NOT_APPLICABLE
        )


@dataclass(frozen=True)
class Assessment:
    assessed_at: datetime
    home: str
    requirements: tuple[Requirement, ...]

    @property
    def status(self) -> Status:
        return max(
            (r.status for r in self.requirements),
            key=_RANK.__getitem__,
            default=Status.NOT_APPLICABLE,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "assessed_at": utc_iso(self.assessed_at),
            "home": self.home,
            "status": self.status.value,
            "requirements": [
                {
                    "id": r.requirement_id,
                    "title": r.title,
                    "source": r.source,
                    "status": r.status.value,
                    "checks": [
                        {"control": c.control, "status": c.status.value, "evidence": c.evidence}
                        for c in r.checks
                    ],
                }
                for r in self.requirements
            ],
        }


GUIDELINE = "ERAB Cyber Security Guideline ver 2.x"


def assess(
    home: SecurityHome,
    clock: Clock,
    *,
    near_expiry: timedelta | None = None,
    check_default_passwords: bool = True,
    extra: Sequence[Requirement] = (),
) -> Assessment:
    """Assess the deployment whose security state is in ``home``.

    ``near_expiry`` defaults to the config's ``renew_before_days``.  Raises ValueError for
    a home with no security state at all (a wrong path, or ``pki init`` never run): there
    is nothing to assess, and a report of mostly "n/a" would only hide that.
    ``extra`` are requirements a higher layer examined (the broker's, from erab.bus).
    """
    if not home_has_security_state(home):
        raise ValueError(
            f"nothing to assess: no security state in {home.dir} (empty or missing home); "
            f"run 'erab pki init --home {home.home}' first"
        )
    now = clock.now()
    config_problem: str | None = None
    try:
        config = home.load_config()
    except ValueError as exc:
        config, config_problem = None, str(exc)
    if near_expiry is None:
        near_expiry = timedelta(days=(config or SecurityConfig()).renew_before_days)
    links = _LinkContexts.build(home, config or SecurityConfig())
    requirements = (
        _device_authorization(home, clock, now, near_expiry),
        _encrypted_communication(home, config, config_problem, links),
        _mutual_authentication(home, clock, now, links),
        _logging(home, now, config),
        _access_control(home, clock, check_default_passwords),
        _pdca(home, now),
        *extra,
    )
    return Assessment(now, str(home.home), requirements)


def save_assessment(home: SecurityHome, assessment: Assessment) -> Path:
    """Keep the report under ``security/assessments`` (the record PDCA reviews)."""
    stamp = assessment.assessed_at.strftime("%Y%m%dT%H%M%S%fZ")
    path = home.assessments_dir / f"assessment-{stamp}.json"
    atomic_write(path, json.dumps(assessment.to_dict(), indent=2).encode("utf-8"))
    return path


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _registry(home: SecurityHome, clock: Clock) -> CertificateRegistry | None:
    # Opened only when it exists: assessing must not create an empty registry.
    return CertificateRegistry(home.registry_db, clock) if home.registry_db.exists() else None


def _ca_validity(root: x509.Certificate, issuing: x509.Certificate, now: datetime) -> Check:
    problems: list[str] = []
    status = Status.PASS
    try:
        issuing.verify_directly_issued_by(root)
    except (ValueError, TypeError, InvalidSignature) as exc:
        problems.append(f"the issuing CA is not signed by the root CA ({exc or 'bad signature'})")
        status = Status.FAIL
    for name, cert in (("root CA", root), ("issuing CA", issuing)):
        remaining = cert.not_valid_after_utc - now
        if cert.not_valid_before_utc > now or remaining <= timedelta(0):
            problems.append(
                f"{name} not valid now ({utc_iso(cert.not_valid_before_utc)} to "
                f"{utc_iso(cert.not_valid_after_utc)})"
            )
            status = Status.FAIL
        elif remaining < timedelta(days=90):
            problems.append(f"{name} expires {utc_iso(cert.not_valid_after_utc)}")
            if status is Status.PASS:
                status = Status.WARN
    return Check(
        "CA certificates are valid and chain to the root",
        status,
        "; ".join(problems)
        if problems
        else f"issuing CA signed by the root, valid until {utc_iso(issuing.not_valid_after_utc)}; "
        f"root valid until {utc_iso(root.not_valid_after_utc)}",
    )


def _device_authorization(
    home: SecurityHome, clock: Clock, now: datetime, near_expiry: timedelta
) -> Requirement:
    checks: list[Check] = []
    issuing = _load_cert(home.issuing_cert)
    root = _load_cert(home.root_cert)
    if issuing is None or root is None:
        checks.append(
            Check(
                "RA certificate authority issues gateway identities",
                Status.FAIL,
                f"no CA in {home.pki_dir}; run 'erab pki init'",
            )
        )
        return Requirement(
            "device-authorization",
            "Device authorization",
            f"{GUIDELINE}: device authorization",
            tuple(checks),
        )
    weak = [
        f"{name}: {problem}"
        for name, cert in (("root CA", root), ("issuing CA", issuing))
        if (problem := key_strength_problem(cert.public_key())) is not None
    ]
    checks.append(
        Check(
            "CA keys are strong (ECDSA >= 256 bits or RSA >= 2048 bits)",
            Status.FAIL if weak else Status.PASS,
            "; ".join(weak)
            if weak
            else "root and issuing CA keys: " + ", ".join(_key_text(c) for c in (root, issuing)),
        )
    )
    checks.append(_ca_validity(root, issuing, now))
    checks.append(
        Check(
            "root CA key is kept offline",
            Status.WARN if home.root_key.exists() else Status.PASS,
            f"root key still at {home.root_key}; move it to offline storage"
            if home.root_key.exists()
            else "no root key on this machine",
        )
    )
    registry = _registry(home, clock)
    if registry is None:
        checks.append(
            Check(
                "the registry of issued certificates exists",
                Status.FAIL,
                f"no registry at {home.registry_db}; 'erab pki init' creates it",
            )
        )
        return Requirement(
            "device-authorization",
            "Device authorization",
            f"{GUIDELINE}: device authorization",
            tuple(checks),
        )
    certs = registry.certificates()
    active = [rec for rec in certs if rec.status_at(now) is CertificateStatus.ACTIVE]
    weak_leaves = []
    for rec in active:
        problem = key_strength_problem(
            x509.load_pem_x509_certificate(rec.pem.encode()).public_key()
        )
        if problem is not None:
            weak_leaves.append(f"{rec.serial} ({rec.subject}): {problem}")
    checks.append(
        Check(
            "issued certificates use strong keys",
            Status.NOT_APPLICABLE if not active else Status.FAIL if weak_leaves else Status.PASS,
            "no active certificate issued yet"
            if not active
            else "; ".join(weak_leaves)
            if weak_leaves
            else f"{len(active)} active certificate(s) checked",
        )
    )
    expiring = [
        f"{rec.serial} ({rec.gateway_id or rec.subject}) expires {utc_iso(rec.not_after)}"
        for rec in active
        if rec.renewed_by is None and rec.not_after - now < near_expiry
    ]
    checks.append(
        Check(
            f"certificates are renewed before expiry (warn within {near_expiry.days} days)",
            Status.NOT_APPLICABLE if not active else Status.WARN if expiring else Status.PASS,
            "no active certificate issued yet"
            if not active
            else "; ".join(expiring)
            if expiring
            else f"none of {len(active)} active certificate(s) near expiry",
        )
    )
    stale: list[str] = []
    gateways = registry.gateways()
    for gw in gateways:
        if gw.status != "active":
            continue
        good = [
            c
            for c in registry.certificates(gateway_id=gw.gateway_id)
            if c.status_at(now) is CertificateStatus.ACTIVE
        ]
        if not good:
            states = sorted(
                {c.status_at(now).value for c in registry.certificates(gateway_id=gw.gateway_id)}
            )
            stale.append(f"{gw.gateway_id} (certificates: {', '.join(states) or 'none'})")
    checks.append(
        Check(
            "gateways listed as active hold a valid certificate",
            Status.NOT_APPLICABLE if not gateways else Status.FAIL if stale else Status.PASS,
            "no gateway enrolled yet"
            if not gateways
            else "active without a valid certificate: " + "; ".join(stale)
            if stale
            else _gateway_counts(registry),
        )
    )
    return Requirement(
        "device-authorization",
        "Device authorization",
        f"{GUIDELINE}: device authorization",
        tuple(checks),
    )


def _key_text(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


@dataclass(frozen=True)
class _LinkContexts:
    """The TLS contexts erab.security.tls builds from this home and its config, as a link
    would build them (CA bundle as trust anchors, the CRL when ``crl_check`` is on): what
    the encryption and mutual-authentication checks examine.  ``problem`` says why they
    could not be built (then no link could start either)."""

    contexts: dict[str, ssl.SSLContext]
    problem: str | None

    @classmethod
    def build(cls, home: SecurityHome, config: SecurityConfig) -> _LinkContexts:
        crl = home.crl if config.crl_check else None
        try:
            gateway_profile = profile_for(config)
            openadr_profile = profile_for(config, openadr_peer=True)
            # A throwaway identity outside the home: a server context needs one to load,
            # and assessing must neither issue a certificate nor read a server's key.
            with tempfile.TemporaryDirectory(prefix="erab-assess-") as tmp:
                cert_file, key_file = _throwaway_identity(Path(tmp))
                contexts = {
                    "gateway link (server)": server_context(
                        cert_file,
                        key_file,
                        home.ca_bundle,
                        crl_file=crl,
                        profile=gateway_profile,
                        require_client_certificate=config.require_client_certificate,
                    ),
                    "gateway link (client)": client_context(
                        home.ca_bundle, crl_file=crl, profile=gateway_profile
                    ),
                    "OpenADR link (server)": server_context(
                        cert_file,
                        key_file,
                        home.ca_bundle,
                        crl_file=crl,
                        profile=openadr_profile,
                        require_client_certificate=config.require_client_certificate,
                    ),
                }
        except (ValueError, OSError, ssl.SSLError) as exc:
            return cls({}, f"cannot build the links' TLS contexts: {exc}")
        return cls(contexts, None)

    def failed(self, control: str) -> Check:
        return Check(control, Status.FAIL, str(self.problem))


def _throwaway_identity(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erab assess")])
    start = datetime.now().astimezone()  # only for OpenSSL's loader; never checked
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - timedelta(minutes=1))
        .not_valid_after(start + timedelta(minutes=10))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _accepts_tls12(context: ssl.SSLContext) -> bool:
    return context.minimum_version is not ssl.TLSVersion.TLSv1_3


def _encrypted_communication(
    home: SecurityHome, config: SecurityConfig | None, problem: str | None, links: _LinkContexts
) -> Requirement:
    checks: list[Check] = []
    if config is None:
        checks.append(
            Check(
                "security settings are written down",
                Status.FAIL if problem else Status.WARN,
                problem or f"no {home.config_file}; defaults (TLS 1.3, mutual TLS) apply",
            )
        )
    tls_control = "links use TLS 1.2 or later (1.3 by default)"
    aead_control = "TLS 1.2 suites are AEAD (AES-GCM) with forward secrecy (ECDHE)"
    if links.problem is not None:
        checks += [links.failed(tls_control), links.failed(aead_control)]
        return _encryption_requirement(checks)
    # Guideline, encryption of communication: nothing below TLS 1.2; TLS 1.2 only where a
    # peer protocol needs it (OpenADR 2.0b), so on erab's own gateway links it warns.
    below, tls12_own, versions = [], [], []
    for name, context in links.contexts.items():
        version = context.minimum_version
        if version in (
            ssl.TLSVersion.MINIMUM_SUPPORTED,
            ssl.TLSVersion.TLSv1,
            ssl.TLSVersion.TLSv1_1,
        ):
            below.append(f"{name} accepts {version.name}")
        elif version is ssl.TLSVersion.TLSv1_2 and name.startswith("gateway"):
            tls12_own.append(name)
        versions.append(f"{name}: from {version.name}")
    checks.append(
        Check(
            tls_control,
            Status.FAIL if below else Status.WARN if tls12_own else Status.PASS,
            "; ".join(below)
            if below
            else f"{', '.join(tls12_own)} accept TLS 1.2 (tls_min_version 1.2); prefer 1.3 on "
            "erab's own links"
            if tls12_own
            else "built contexts: " + "; ".join(versions),
        )
    )
    tls12 = {n: c for n, c in links.contexts.items() if _accepts_tls12(c)}
    if not tls12:
        checks.append(
            Check(aead_control, Status.NOT_APPLICABLE, "no link accepts TLS 1.2 (TLS 1.3 only)")
        )
        return _encryption_requirement(checks)
    no_pfs, not_aead = set(), set()
    for context in tls12.values():
        for suite in context.get_ciphers():
            if suite["protocol"] != "TLSv1.2":
                continue
            if suite["kea"] != "kx-ecdhe":
                no_pfs.add(suite["name"])
            elif not suite["aead"]:
                not_aead.add(suite["name"])
    checks.append(
        Check(
            aead_control,
            Status.FAIL if no_pfs else Status.WARN if not_aead else Status.PASS,
            f"suites without forward secrecy offered: {', '.join(sorted(no_pfs))}"
            if no_pfs
            else f"{', '.join(sorted(not_aead))} (CBC) offered for OpenADR 2.0 conformance; "
            "disable tls12_allow_openadr_cbc once peers offer AES-GCM"
            if not_aead
            else f"{', '.join(tls12)}: only ECDHE + AES-GCM suites in TLS 1.2",
        )
    )
    return _encryption_requirement(checks)


def _encryption_requirement(checks: list[Check]) -> Requirement:
    return Requirement(
        "encrypted-communication",
        "Encrypted communication",
        f"{GUIDELINE}: encryption of communication",
        tuple(checks),
    )


def _mutual_authentication(
    home: SecurityHome, clock: Clock, now: datetime, links: _LinkContexts
) -> Requirement:
    checks: list[Check] = []
    mtls_control = "servers demand client certificates (mutual TLS)"
    crl_control = "revocation is checked in the handshake"
    if links.problem is not None:
        checks += [links.failed(mtls_control), links.failed(crl_control)]
    else:
        servers = {n: c for n, c in links.contexts.items() if "(server)" in n}
        lax = [n for n, c in servers.items() if c.verify_mode is not ssl.CERT_REQUIRED]
        checks.append(
            Check(
                mtls_control,
                Status.FAIL if lax else Status.PASS,
                f"{', '.join(lax)} built without CERT_REQUIRED (require_client_certificate is off)"
                if lax
                else f"{', '.join(servers)}: verify_mode CERT_REQUIRED",
            )
        )
        unchecked = [
            n
            for n, c in links.contexts.items()
            if not c.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF or not c.cert_store_stats()["crl"]
        ]
        checks.append(
            Check(
                crl_control,
                Status.FAIL if unchecked else Status.PASS,
                f"{', '.join(unchecked)} built without a CRL check (crl_check is off)"
                if unchecked
                else f"every link context loads {home.crl.name} and checks the leaf against it",
            )
        )
    issuing = _load_cert(home.issuing_cert)
    registry = _registry(home, clock)
    crl = None
    try:
        crl = x509.load_pem_x509_crl(home.crl.read_bytes())
    except (OSError, ValueError):
        crl = None
    if crl is None or issuing is None:
        checks.append(Check("a current CRL is published", Status.FAIL, f"no readable {home.crl}"))
    else:
        signed = crl.is_signature_valid(issuing.public_key())  # type: ignore[arg-type]
        next_update = crl.next_update_utc
        if not signed:
            checks.append(
                Check("a current CRL is published", Status.FAIL, "CRL not signed by the issuing CA")
            )
        elif next_update is None or next_update <= now:
            checks.append(
                Check(
                    "a current CRL is published",
                    Status.FAIL,
                    f"CRL expired at {next_update and utc_iso(next_update)}; run 'erab pki crl'",
                )
            )
        else:
            soon = next_update - now < timedelta(days=1)
            checks.append(
                Check(
                    "a current CRL is published",
                    Status.WARN if soon else Status.PASS,
                    f"CRL valid until {utc_iso(next_update)}, "
                    f"{len(list(crl))} revoked certificate(s)",
                )
            )
        if registry is not None:
            listed = {format(r.serial_number, "x") for r in crl}
            revoked = registry.revoked()
            unlisted = [r.serial for r in revoked if r.serial not in listed]
            checks.append(
                Check(
                    "every revoked certificate is on the CRL",
                    Status.NOT_APPLICABLE
                    if not revoked
                    else Status.FAIL
                    if unlisted
                    else Status.PASS,
                    "no certificate revoked yet"
                    if not revoked
                    else "missing from CRL: " + ", ".join(unlisted)
                    if unlisted
                    else f"{len(revoked)} revoked, all listed",
                )
            )
    if registry is not None:
        checks.append(_revoked_not_connected(registry))
    return Requirement(
        "mutual-authentication",
        "Mutual authentication; only identified systems connect",
        f"{GUIDELINE}: mutual authentication between devices and systems (added in ver 1.1)",
        tuple(checks),
    )


def _revoked_not_connected(registry: CertificateRegistry) -> Check:
    # The registry's last_seen is written by admit_gateway (erab.security.tls) after each
    # handshake; until the gateway link calls it, there is nothing to examine.
    control = "revoked gateways are no longer connected"
    certs = registry.certificates()
    seen = [c for c in certs if c.last_seen is not None]
    if not seen:
        return Check(
            control,
            Status.NOT_APPLICABLE,
            "no connection records yet (the gateway link records them)",
        )
    connected = [
        f"{r.serial} ({r.gateway_id}) seen {utc_iso(r.last_seen)} after revocation "
        f"at {utc_iso(r.revoked_at)}"
        for r in seen
        if r.revoked
        and r.revoked_at is not None
        and r.last_seen is not None
        and r.last_seen > r.revoked_at
    ]
    return Check(
        control,
        Status.FAIL if connected else Status.PASS,
        "; ".join(connected)
        if connected
        else f"{len(seen)} certificate(s) seen connecting; none after its revocation",
    )


def _logging(home: SecurityHome, now: datetime, config: SecurityConfig | None) -> Requirement:
    config = config or SecurityConfig()
    source = f"{GUIDELINE}: logging and monitoring"
    chain_control = "security events are logged in a hash-chained, checkpointed audit log"
    try:
        result = verify_home_audit(home)  # read-only: never writes to the evidence
    except (ValueError, OSError) as exc:
        return Requirement(
            "logging",
            "Audit logging",
            source,
            (Check(chain_control, Status.FAIL, f"cannot verify the audit log: {exc}"),),
        )
    checks = [
        Check(
            chain_control,
            Status.PASS if result.intact else Status.FAIL,
            f"{result.records_checked} record(s), {result.checkpoints_checked} chained "
            f"checkpoint(s), head file at checkpoint "
            f"{result.head_checked and result.head_checked.checkpoint.sequence}"
            if result.intact
            else f"{len(result.findings)} problem(s): "
            + "; ".join(str(f) for f in result.findings[:5]),
        )
    ]
    latest = result.latest_checkpoint
    every = timedelta(minutes=config.checkpoint_every_minutes)
    behind = result.records_after_checkpoint
    if latest is None:
        head_status, evidence = Status.FAIL, "no checkpoint"
    elif behind and result.last_recorded_at is not None and now - result.last_recorded_at > every:
        head_status = Status.WARN
        evidence = (
            f"{behind} record(s) after checkpoint {latest.sequence} are not covered yet and "
            f"the newest is older than {config.checkpoint_every_minutes} min; run "
            "'erab audit checkpoint' (e.g. from cron) where no long-running process does"
        )
    else:
        head_status = Status.PASS
        evidence = (
            f"latest checkpoint {latest.sequence} at record {latest.position}, "
            f"{utc_iso(latest.created_at)}; {behind} record(s) after it"
        )
    if not result.signatures_checked:
        head_status = Status.FAIL if head_status is Status.FAIL else Status.WARN
        evidence += f"; signatures not checked: no checkpoint key at {home.audit_key}"
    checks.append(Check("the chain head is checkpointed and signed", head_status, evidence))
    return Requirement("logging", "Audit logging", source, tuple(checks))


def _gateway_counts(registry: CertificateRegistry) -> str:
    gateways = registry.gateways()
    active = sum(1 for gw in gateways if gw.status == "active")
    return (
        f"{len(gateways)} gateway(s) in the registry: {active} active, "
        f"{len(gateways) - active} revoked"
    )


_ADD_ADMIN = "add one with 'erab security operator-add NAME --role admin --password-file FILE'"


def _access_control(home: SecurityHome, clock: Clock, check_default_passwords: bool) -> Requirement:
    source = f"{GUIDELINE}: access control and authentication of operators"
    if not home.operators_db.exists():
        return Requirement(
            "access-control",
            "Operator access control",
            source,
            (
                Check(
                    "operators sign in with their own credentials",
                    Status.FAIL,
                    f"no operators defined (missing credentials); {_ADD_ADMIN}",
                ),
            ),
        )
    directory = OperatorDirectory(home.operators_db, clock)
    operators = [o for o in directory.operators() if not o.disabled]
    admins = [o.name for o in operators if o.role is Role.ADMIN]
    checks = [
        Check(
            "at least one enabled admin operator exists",
            Status.PASS if admins else Status.FAIL,
            f"admins: {', '.join(admins)}"
            if admins
            else f"no enabled admin (missing credentials); {_ADD_ADMIN}",
        )
    ]
    if check_default_passwords:
        weak = [o.name for o in operators if directory.uses_default_password(o.name)]
        checks.append(
            Check(
                "no operator uses a default password",
                Status.FAIL if weak else Status.PASS,
                f"default password: {', '.join(weak)}; disable them with "
                "'erab security operator-disable NAME'"
                if weak
                else f"{len(operators)} operator(s) checked against "
                f"{len(DEFAULT_PASSWORDS)} defaults",
            )
        )
    live = [t for t in directory.tokens() if t.revoked_at is None]
    forever = [t.token_id for t in live if t.expires_at is None]
    checks.append(
        Check(
            "API tokens expire",
            Status.NOT_APPLICABLE if not live else Status.WARN if forever else Status.PASS,
            "no API token issued"
            if not live
            else f"tokens without expiry: {', '.join(forever)}"
            if forever
            else f"all {len(live)} token(s) expire",
        )
    )
    return Requirement("access-control", "Operator access control", source, tuple(checks))


def _pdca(home: SecurityHome, now: datetime) -> Requirement:
    previous = sorted(home.assessments_dir.glob("assessment-*.json"))
    source = f"{GUIDELINE}: continuous improvement (PDCA)"
    if not previous:
        check = Check(
            "the deployment is assessed regularly and the results kept",
            Status.WARN,
            f"first assessment; reports are kept in {home.assessments_dir}",
        )
    else:
        try:
            last = json.loads(previous[-1].read_text(encoding="utf-8"))
            when = datetime.fromisoformat(last["assessed_at"].replace("Z", "+00:00"))
            summary = f"previous assessment {last['assessed_at']} ({last['status']})"
        except (OSError, ValueError, KeyError) as exc:
            return Requirement(
                "pdca",
                "Continuous improvement (PDCA)",
                source,
                (
                    Check(
                        "the deployment is assessed regularly and the results kept",
                        Status.WARN,
                        f"previous report {previous[-1].name} unreadable: {exc}",
                    ),
                ),
            )
        overdue = now - when > timedelta(days=90)
        check = Check(
            "the deployment is assessed regularly and the results kept",
            Status.WARN if overdue else Status.PASS,
            f"{summary}; {len(previous)} report(s) kept"
            + ("; more than 90 days ago" if overdue else ""),
        )
    return Requirement("pdca", "Continuous improvement (PDCA)", source, (check,))
