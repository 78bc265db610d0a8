"""Guideline self-assessment: a sound deployment passes; each weakness is flagged."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import argon2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.clock import SimulatedClock
from erab.security import (
    AuditLog,
    CertificateAuthority,
    OperatorDirectory,
    Role,
    SecurityConfig,
    SecurityHome,
    SqliteAuditStore,
    Status,
    assess,
    save_assessment,
)
from erab.security.identity import fingerprint_sha256, serial_hex
from erab.security.keys import write_ed25519_key

from .conftest import FAST_ARGON2, enrol


@pytest.fixture
def deployment(home: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock) -> SecurityHome:
    """A deployment that does everything right (root key moved offline, one prior report)."""
    home.save_config(SecurityConfig())
    home.root_key.unlink()
    enrol(ca, "gw-1", "site-1")
    directory = OperatorDirectory(home.operators_db, clock, argon2_parameters=FAST_ARGON2)
    directory.add("root-admin", Role.ADMIN, "a long unguessable passphrase")
    key = Ed25519PrivateKey.generate()
    write_ed25519_key(home.audit_key, key)
    log = AuditLog(SqliteAuditStore(home.audit_db), clock)
    log.append("security_event", "cli", "ca", {"action": "ca_initialised"})  # type: ignore[arg-type]
    log.checkpoint(key)
    save_assessment(home, assess(home, clock))
    return home


def check(home: SecurityHome, clock: SimulatedClock, requirement: str, control: str) -> Status:
    result = assess(home, clock)
    req = next(r for r in result.requirements if r.requirement_id == requirement)
    found = next(c for c in req.checks if control in c.control)
    return found.status


def test_sound_deployment_passes_every_requirement(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    result = assess(deployment, clock)
    assert {r.requirement_id: r.status for r in result.requirements} == {
        "device-authorization": Status.PASS,
        "encrypted-communication": Status.PASS,
        "mutual-authentication": Status.PASS,
        "logging": Status.PASS,
        "access-control": Status.PASS,
        "pdca": Status.PASS,
    }


def test_every_requirement_names_its_guideline_source(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    for req in assess(deployment, clock).requirements:
        assert req.source.startswith("ERAB Cyber Security Guideline")
        assert all(c.evidence for c in req.checks)


def test_json_form_carries_control_status_and_evidence(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    data = json.loads(json.dumps(assess(deployment, clock).to_dict()))
    assert data["status"] == "pass"
    first = data["requirements"][0]["checks"][0]
    assert set(first) == {"control", "status", "evidence"}


def test_empty_home_fails_with_advice(home: SecurityHome, clock: SimulatedClock) -> None:
    result = assess(home, clock)
    assert result.status is Status.FAIL
    device = result.requirements[0]
    assert "erab pki init" in device.checks[0].evidence


@pytest.mark.parametrize(("version", "expected"), [("1.0", Status.FAIL), ("1.1", Status.FAIL)])
def test_tls_below_1_2_fails(
    deployment: SecurityHome, clock: SimulatedClock, version: str, expected: Status
) -> None:
    deployment.save_config(SecurityConfig(tls_min_version=version))
    assert check(deployment, clock, "encrypted-communication", "TLS 1.2") is expected


def test_tls12_outside_the_restricted_profile_warns(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.save_config(SecurityConfig(tls_min_version="1.2"))
    assert check(deployment, clock, "encrypted-communication", "TLS 1.2") is Status.WARN


def test_unreadable_config_fails_naming_the_file(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.config_file.write_text("{not json")
    result = assess(deployment, clock)
    enc = next(r for r in result.requirements if r.requirement_id == "encrypted-communication")
    assert enc.status is Status.FAIL
    assert "config.json" in enc.checks[0].evidence


def test_disabled_client_certificates_fail(deployment: SecurityHome, clock: SimulatedClock) -> None:
    deployment.save_config(SecurityConfig(require_client_certificate=False))
    assert check(deployment, clock, "mutual-authentication", "client certificates") is Status.FAIL


def test_certificate_near_expiry_warns(deployment: SecurityHome, clock: SimulatedClock) -> None:
    clock.advance(timedelta(days=350).total_seconds())
    assert check(deployment, clock, "device-authorization", "renewed before expiry") is Status.WARN


def test_renewed_certificate_near_expiry_does_not_warn(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    clock.advance(timedelta(days=350).total_seconds())
    ca.renew(ca.registry.certificates(gateway_id="gw-1")[0].serial)
    assert check(deployment, clock, "device-authorization", "renewed before expiry") is Status.PASS


def test_active_gateway_whose_only_certificate_is_revoked_fails(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    ca.revoke(ca.registry.certificates(gateway_id="gw-1")[0].serial, "keyCompromise")
    assert check(deployment, clock, "device-authorization", "hold a valid certificate") is (
        Status.FAIL
    )


def test_revoked_gateway_seen_after_revocation_fails(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    cert, _ = enrol(ca, "gw-2", "site-2")
    ca.revoke_gateway("gw-2", "stolen")
    clock.advance(60)
    ca.registry.mark_seen(fingerprint_sha256(cert))
    assert check(deployment, clock, "mutual-authentication", "no longer connected") is Status.FAIL


def test_revoked_certificate_missing_from_crl_fails(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    crl_before = deployment.crl.read_bytes()
    cert, _ = enrol(ca, "gw-3", "site-3")
    ca.revoke_gateway("gw-3", "stolen")
    deployment.crl.write_bytes(crl_before)  # a stale CRL was published
    assert check(deployment, clock, "mutual-authentication", "on the CRL") is Status.FAIL
    assert serial_hex(cert) in str(assess(deployment, clock).to_dict())


def test_expired_crl_fails(deployment: SecurityHome, clock: SimulatedClock) -> None:
    clock.advance(timedelta(days=8).total_seconds())
    assert check(deployment, clock, "mutual-authentication", "current CRL") is Status.FAIL


def test_root_key_left_online_warns(deployment: SecurityHome, clock: SimulatedClock) -> None:
    deployment.root_key.parent.mkdir(parents=True, exist_ok=True)
    deployment.root_key.write_bytes(b"pretend key")
    assert check(deployment, clock, "device-authorization", "offline") is Status.WARN


def test_broken_audit_chain_fails(deployment: SecurityHome, clock: SimulatedClock) -> None:
    with sqlite3.connect(deployment.audit_db) as db:
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("UPDATE audit_records SET actor='mallory'")
    assert check(deployment, clock, "logging", "chain is intact") is Status.FAIL


def test_stale_checkpoint_warns(deployment: SecurityHome, clock: SimulatedClock) -> None:
    clock.advance(timedelta(hours=25).total_seconds())
    assert check(deployment, clock, "logging", "checkpointed") is Status.WARN


def test_checkpoints_that_cannot_be_checked_warn(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.audit_key.unlink()  # without it, a forged checkpoint would go unnoticed
    result = assess(deployment, clock)
    logging = next(r for r in result.requirements if r.requirement_id == "logging")
    found = next(c for c in logging.checks if "checkpointed" in c.control)
    assert found.status is Status.WARN and "signatures not checked" in found.evidence


def test_missing_operators_fail(
    home: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    result = assess(home, clock)
    access = next(r for r in result.requirements if r.requirement_id == "access-control")
    assert access.status is Status.FAIL
    assert "missing credentials" in access.checks[0].evidence


def test_default_password_fails(deployment: SecurityHome, clock: SimulatedClock) -> None:
    # Written behind the policy's back, as a careless migration might.
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("admin")
    with sqlite3.connect(deployment.operators_db) as db:
        db.execute(
            "INSERT INTO operators (name, role, password_hash, created_at)"
            " VALUES ('admin', 'admin', ?, '2026-01-01T00:00:00.000000Z')",
            (weak,),
        )
    assert check(deployment, clock, "access-control", "default password") is Status.FAIL


def test_token_without_expiry_warns(deployment: SecurityHome, clock: SimulatedClock) -> None:
    directory = OperatorDirectory(deployment.operators_db, clock, argon2_parameters=FAST_ARGON2)
    directory.issue_token("root-admin", "forever", valid_for=None)
    assert check(deployment, clock, "access-control", "tokens expire") is Status.WARN


def test_first_assessment_warns_and_later_ones_pass(
    home: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    first = assess(home, clock)
    assert first.requirements[-1].status is Status.WARN
    save_assessment(home, first)
    assert assess(home, clock).requirements[-1].status is Status.PASS


def test_overdue_assessment_warns(deployment: SecurityHome, clock: SimulatedClock) -> None:
    clock.advance(timedelta(days=91).total_seconds())
    assert check(deployment, clock, "pdca", "assessed regularly") is Status.WARN


def test_active_certificate_with_a_short_key_fails(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    # A certificate from before the key policy (or imported): RSA-1024 slipped through.
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert = ca._gateway_certificate(weak.public_key(), "gw-legacy", "site-old", 365)
    with ca.registry.transaction() as db:
        ca.registry.record_issued(db, ca._record(cert, "gw-legacy", "site-old"))
    assert check(deployment, clock, "device-authorization", "strong keys") is Status.FAIL
    assert "1024" in str(assess(deployment, clock).to_dict())


def test_openadr_cbc_suite_allowed_warns(deployment: SecurityHome, clock: SimulatedClock) -> None:
    deployment.save_config(
        SecurityConfig(
            tls_min_version="1.2", tls12_profile_enabled=True, tls12_allow_openadr_cbc=True
        )
    )
    assert check(deployment, clock, "encrypted-communication", "AEAD") is Status.WARN
