"""Self-assessment against the ERAB Cyber Security Guideline (the "Check" of PDCA).

:func:`assess` inspects one deployment's security home — config, CA, registry, CRL, audit
log, operators — and reports, per guideline requirement area, the control erab provides,
a status (pass / warn / fail) and the evidence it looked at.  See ``docs/security.md`` for
each requirement and where it comes from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509

from erab.clock import Clock
from erab.security._common import atomic_write, utc_iso
from erab.security.audit import AuditLog, SqliteAuditStore
from erab.security.home import SecurityConfig, SecurityHome
from erab.security.keys import load_ed25519_key
from erab.security.operators import DEFAULT_PASSWORDS, OperatorDirectory, Role
from erab.security.pki import key_strength_problem
from erab.security.registry import CertificateRegistry, CertificateStatus


class Status(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


_RANK = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


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
        return max((c.status for c in self.checks), key=_RANK.__getitem__, default=Status.PASS)


@dataclass(frozen=True)
class Assessment:
    assessed_at: datetime
    home: str
    requirements: tuple[Requirement, ...]

    @property
    def status(self) -> Status:
        return max(
            (r.status for r in self.requirements), key=_RANK.__getitem__, default=Status.PASS
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
) -> Assessment:
    """Assess the deployment whose security state is in ``home``.

    ``near_expiry`` defaults to the config's ``renew_before_days``.
    """
    now = clock.now()
    config_problem: str | None = None
    try:
        config = home.load_config()
    except ValueError as exc:
        config, config_problem = None, str(exc)
    if near_expiry is None:
        near_expiry = timedelta(days=(config or SecurityConfig()).renew_before_days)
    requirements = (
        _device_authorization(home, clock, now, near_expiry),
        _encrypted_communication(home, config, config_problem),
        _mutual_authentication(home, clock, now, config),
        _logging(home, clock, now, config),
        _access_control(home, clock, check_default_passwords),
        _pdca(home, now),
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
    remaining = issuing.not_valid_after_utc - now
    ca_status = (
        Status.FAIL
        if remaining <= timedelta(0)
        else Status.WARN
        if remaining < timedelta(days=90)
        else Status.PASS
    )
    checks.append(
        Check(
            "issuing CA certificate is valid",
            ca_status,
            f"issuing CA valid until {utc_iso(issuing.not_valid_after_utc)}",
        )
    )
    checks.append(
        Check(
            "root CA key is kept offline",
            Status.WARN if home.root_key.exists() else Status.PASS,
            f"root key still at {home.root_key}; move it to offline storage"
            if home.root_key.exists()
            else "no root key on this machine",
        )
    )
    registry = CertificateRegistry(home.registry_db, clock)
    certs = registry.certificates()
    weak_leaves = []
    for rec in certs:
        problem = key_strength_problem(
            x509.load_pem_x509_certificate(rec.pem.encode()).public_key()
        )
        if problem is not None and rec.status_at(now) is CertificateStatus.ACTIVE:
            weak_leaves.append(f"{rec.serial} ({rec.subject}): {problem}")
    checks.append(
        Check(
            "issued certificates use strong keys",
            Status.FAIL if weak_leaves else Status.PASS,
            "; ".join(weak_leaves) if weak_leaves else f"{len(certs)} certificate(s) checked",
        )
    )
    expiring = [
        f"{rec.serial} ({rec.gateway_id or rec.subject}) expires {utc_iso(rec.not_after)}"
        for rec in certs
        if rec.status_at(now) is CertificateStatus.ACTIVE
        and rec.renewed_by is None
        and rec.not_after - now < near_expiry
    ]
    checks.append(
        Check(
            f"certificates are renewed before expiry (warn within {near_expiry.days} days)",
            Status.WARN if expiring else Status.PASS,
            "; ".join(expiring) if expiring else "no active certificate near expiry",
        )
    )
    stale: list[str] = []
    for gw in registry.gateways():
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
            Status.FAIL if stale else Status.PASS,
            "active without a valid certificate: " + "; ".join(stale)
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
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    return type(key).__name__


def _encrypted_communication(
    home: SecurityHome, config: SecurityConfig | None, problem: str | None
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
        config = SecurityConfig()
    version = config.tls_min_version
    if version in ("1.0", "1.1"):
        status, evidence = Status.FAIL, f"tls_min_version {version} allows broken protocols"
    elif version == "1.2":
        status = Status.PASS if config.tls12_profile_enabled else Status.WARN
        evidence = (
            "TLS 1.2 allowed only in the OpenADR profile (ECDHE + AES-GCM suites)"
            if config.tls12_profile_enabled
            else "tls_min_version 1.2 without the restricted profile; prefer 1.3"
        )
    else:
        status, evidence = Status.PASS, "TLS 1.3 only"
    checks.append(Check("links use TLS 1.2 or later (1.3 by default)", status, evidence))
    checks.append(
        Check(
            "TLS 1.2 suites are AEAD (AES-GCM) with forward secrecy (ECDHE)",
            Status.WARN if config.tls12_allow_openadr_cbc else Status.PASS,
            "ECDHE-ECDSA-AES128-SHA256 (CBC) allowed for OpenADR 2.0 conformance; disable "
            "tls12_allow_openadr_cbc once peers offer AES-GCM"
            if config.tls12_allow_openadr_cbc
            else "only ECDHE + AES-GCM suites in TLS 1.2",
        )
    )
    return Requirement(
        "encrypted-communication",
        "Encrypted communication",
        f"{GUIDELINE}: encryption of communication",
        tuple(checks),
    )


def _mutual_authentication(
    home: SecurityHome, clock: Clock, now: datetime, config: SecurityConfig | None
) -> Requirement:
    config = config or SecurityConfig()
    checks = [
        Check(
            "servers demand client certificates (mutual TLS)",
            Status.PASS if config.require_client_certificate else Status.FAIL,
            f"require_client_certificate = {config.require_client_certificate}",
        ),
        Check(
            "revocation is checked in the handshake",
            Status.PASS if config.crl_check else Status.FAIL,
            f"crl_check = {config.crl_check}",
        ),
    ]
    issuing = _load_cert(home.issuing_cert)
    registry = CertificateRegistry(home.registry_db, clock) if home.registry_db.exists() else None
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
            unlisted = [r.serial for r in registry.revoked() if r.serial not in listed]
            checks.append(
                Check(
                    "every revoked certificate is on the CRL",
                    Status.FAIL if unlisted else Status.PASS,
                    "missing from CRL: " + ", ".join(unlisted)
                    if unlisted
                    else f"{len(registry.revoked())} revoked, all listed",
                )
            )
    if registry is not None:
        connected = [
            f"{r.serial} ({r.gateway_id}) seen {utc_iso(r.last_seen)} after revocation "
            f"at {utc_iso(r.revoked_at)}"
            for r in registry.revoked()
            if r.last_seen is not None and r.revoked_at is not None and r.last_seen > r.revoked_at
        ]
        checks.append(
            Check(
                "revoked gateways are no longer connected",
                Status.FAIL if connected else Status.PASS,
                "; ".join(connected)
                if connected
                else "no revoked certificate seen since revocation",
            )
        )
    return Requirement(
        "mutual-authentication",
        "Mutual authentication; only identified systems connect",
        f"{GUIDELINE}: mutual authentication between devices and systems (added in ver 1.1)",
        tuple(checks),
    )


def _logging(
    home: SecurityHome, clock: Clock, now: datetime, config: SecurityConfig | None
) -> Requirement:
    config = config or SecurityConfig()
    source = f"{GUIDELINE}: logging and monitoring"
    if not home.audit_db.exists():
        return Requirement(
            "logging",
            "Audit logging",
            source,
            (
                Check(
                    "security events are logged in a hash-chained audit log",
                    Status.FAIL,
                    f"no audit log at {home.audit_db}",
                ),
            ),
        )
    store = SqliteAuditStore(home.audit_db)
    try:
        log = AuditLog(store, clock)
        keys = [load_ed25519_key(home.audit_key).public_key()] if home.audit_key.exists() else None
        result = log.verify(keys)
        checkpoints = store.checkpoints()
    finally:
        store.close()
    checks = [
        Check(
            "the audit chain is intact",
            Status.PASS if result.intact else Status.FAIL,
            f"{result.records_checked} record(s), head {result.head_hash[:16]}"
            if result.intact
            else f"{len(result.findings)} problem(s): "
            + "; ".join(str(f) for f in result.findings[:5]),
        )
    ]
    if not checkpoints:
        checks.append(
            Check(
                "the chain head is checkpointed and signed",
                Status.WARN,
                "no checkpoint yet; run 'erab audit checkpoint' regularly",
            )
        )
    else:
        latest = checkpoints[-1]
        age = now - latest.created_at
        limit = timedelta(hours=config.checkpoint_max_age_hours)
        unverifiable = keys is None
        checks.append(
            Check(
                "the chain head is checkpointed and signed",
                Status.WARN if age > limit or unverifiable else Status.PASS,
                f"latest checkpoint at record {latest.position}, {utc_iso(latest.created_at)}"
                + (f" (older than {config.checkpoint_max_age_hours} h)" if age > limit else "")
                + (
                    f"; signatures not checked: no checkpoint key at {home.audit_key}"
                    if unverifiable
                    else ""
                ),
            )
        )
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
    forever = [
        t.token_id for t in directory.tokens() if t.revoked_at is None and t.expires_at is None
    ]
    checks.append(
        Check(
            "API tokens expire",
            Status.WARN if forever else Status.PASS,
            f"tokens without expiry: {', '.join(forever)}" if forever else "all tokens expire",
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
