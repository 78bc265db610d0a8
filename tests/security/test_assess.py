"""Guideline self-assessment: a sound deployment passes; each weakness is flagged."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import ssl
from datetime import timedelta
from pathlib import Path

import argon2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.clock import SimulatedClock
from erab.security import (
    AuditKind,
    AuditLog,
    CertificateAuthority,
    OperatorDirectory,
    Role,
    SecurityConfig,
    SecurityHome,
    Status,
    assess,
    save_assessment,
)
from erab.security.identity import fingerprint_sha256, serial_hex
from erab.security.keys import write_ed25519_key
from erab.security.pki import certificate_pem, private_key_pem
from erab.security.tls import admit_gateway, client_context, server_context

from .conftest import FAST_ARGON2, enrol


@pytest.fixture
def deployment(home: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock) -> SecurityHome:
    """A deployment that does everything right (root key moved offline, one prior report)."""
    home.save_config(SecurityConfig())
    home.root_key.unlink()
    enrol(ca, "gw-1", "site-1")
    directory = OperatorDirectory(home.operators_db, clock, argon2_parameters=FAST_ARGON2)
    directory.add("root-admin", Role.ADMIN, "a long unguessable passphrase")
    write_ed25519_key(home.audit_key, Ed25519PrivateKey.generate())
    log = AuditLog.for_home(home, clock)  # checkpoints itself and keeps audit-head.json
    log.append(AuditKind.SECURITY_EVENT, "cli", "ca", {"action": "ca_initialised"})
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


def test_empty_or_missing_home_is_refused_with_advice(
    home: SecurityHome, clock: SimulatedClock
) -> None:
    with pytest.raises(ValueError, match=r"no security state .*run 'erab pki init"):
        assess(home, clock)
    assert not home.home.exists()  # assessing created nothing
    home.dir.mkdir(parents=True)
    with pytest.raises(ValueError, match="empty or missing home"):
        assess(home, clock)


def test_home_with_a_ca_but_no_audit_log_fails(
    home: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    result = assess(home, clock)
    assert result.status is Status.FAIL
    logging = next(r for r in result.requirements if r.requirement_id == "logging")
    assert logging.status is Status.FAIL and "no audit log" in logging.checks[0].evidence
    assert not home.audit_db.exists()


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
    assert check(deployment, clock, "logging", "hash-chained") is Status.FAIL


def test_records_left_uncovered_past_the_interval_warn(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    clock.advance(60)
    AuditLog.for_home(deployment, clock).append(AuditKind.LOGIN, "chief", "password")
    assert check(deployment, clock, "logging", "head is checkpointed") is Status.PASS  # fresh
    clock.advance(timedelta(minutes=11).total_seconds())
    assert check(deployment, clock, "logging", "head is checkpointed") is Status.WARN


def test_an_old_checkpoint_with_nothing_after_it_still_passes(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    clock.advance(timedelta(days=3).total_seconds())
    assert check(deployment, clock, "logging", "head is checkpointed") is Status.PASS


def test_checkpoints_that_cannot_be_checked_warn(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.audit_key.unlink()  # without it, a forged checkpoint would go unnoticed
    result = assess(deployment, clock)
    logging = next(r for r in result.requirements if r.requirement_id == "logging")
    found = next(c for c in logging.checks if "head is checkpointed" in c.control)
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


# --- each check looks at what is stored or built: passes, fails, or has nothing to examine


def evidence(home: SecurityHome, clock: SimulatedClock, requirement: str, control: str) -> str:
    req = next(r for r in assess(home, clock).requirements if r.requirement_id == requirement)
    return next(c for c in req.checks if control in c.control).evidence


def test_tls_version_is_read_from_the_contexts_the_code_builds(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    assert check(deployment, clock, "encrypted-communication", "TLS 1.2 or later") is Status.PASS
    assert "gateway link (server): from TLSv1_3" in evidence(
        deployment, clock, "encrypted-communication", "TLS 1.2 or later"
    )


def test_tls_checks_fail_when_no_context_can_be_built(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.ca_bundle.unlink()  # no link could start without its trust anchors
    for control in ("TLS 1.2 or later", "AEAD"):
        assert check(deployment, clock, "encrypted-communication", control) is Status.FAIL
    assert "cannot build" in evidence(deployment, clock, "mutual-authentication", "client cert")


def test_tls12_suites_not_applicable_when_only_tls13_is_built(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    assert check(deployment, clock, "encrypted-communication", "AEAD") is Status.NOT_APPLICABLE


def test_tls12_suites_pass_when_the_openadr_context_offers_only_ecdhe_gcm(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.save_config(SecurityConfig(tls12_profile_enabled=True))
    assert check(deployment, clock, "encrypted-communication", "AEAD") is Status.PASS
    assert "OpenADR link (server)" in evidence(deployment, clock, "encrypted-communication", "AEAD")


def test_client_certificates_pass_when_the_built_server_context_requires_them(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    assert check(deployment, clock, "mutual-authentication", "client certificates") is (Status.PASS)
    assert "CERT_REQUIRED" in evidence(deployment, clock, "mutual-authentication", "client cert")


def test_handshake_revocation_check_passes_then_fails_without_crl_check(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    assert check(deployment, clock, "mutual-authentication", "in the handshake") is Status.PASS
    deployment.save_config(SecurityConfig(crl_check=False))
    assert check(deployment, clock, "mutual-authentication", "in the handshake") is Status.FAIL


def test_ca_not_signed_by_the_root_fails(
    deployment: SecurityHome, clock: SimulatedClock, tmp_path: Path
) -> None:
    assert check(deployment, clock, "device-authorization", "chain to the root") is Status.PASS
    other = SecurityHome(tmp_path / "other")
    CertificateAuthority.initialise(other, clock)
    deployment.root_cert.write_bytes(other.root_cert.read_bytes())
    assert check(deployment, clock, "device-authorization", "chain to the root") is Status.FAIL


def test_expired_issuing_ca_fails(deployment: SecurityHome, clock: SimulatedClock) -> None:
    clock.advance(timedelta(days=5 * 366).total_seconds())
    assert check(deployment, clock, "device-authorization", "chain to the root") is Status.FAIL


def test_certificate_checks_have_nothing_to_examine_before_the_first_enrolment(
    home: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    for control in ("strong keys", "renewed before expiry", "hold a valid certificate"):
        assert check(home, clock, "device-authorization", control) is Status.NOT_APPLICABLE
    assert check(home, clock, "mutual-authentication", "on the CRL") is Status.NOT_APPLICABLE


def test_revoked_certificate_listed_on_the_crl_passes(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    enrol(ca, "gw-4", "site-4")
    ca.revoke_gateway("gw-4", "stolen")  # rewrites the CRL
    assert check(deployment, clock, "mutual-authentication", "on the CRL") is Status.PASS


def test_no_connection_records_is_not_applicable(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    assert check(deployment, clock, "mutual-authentication", "no longer connected") is (
        Status.NOT_APPLICABLE
    )
    assert evidence(deployment, clock, "mutual-authentication", "no longer connected") == (
        "no connection records yet (the gateway link records them)"
    )


def _admit_over_tls(home: SecurityHome, ca: CertificateAuthority, tmp_path: Path) -> None:
    """A real TLS 1.3 handshake (in memory) from an enrolled gateway, admitted by registry."""
    served = ca.issue_server(["localhost"])
    cert, key_pem = enrol(ca, "gw-5", "site-5")
    files = {
        "server.pem": certificate_pem(served.certificate),
        "server.key": private_key_pem(served.private_key),
        "gw.pem": certificate_pem(cert),
        "gw.key": key_pem,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    ca.write_crl()
    server_ctx = server_context(
        tmp_path / "server.pem", tmp_path / "server.key", home.ca_bundle, crl_file=home.crl
    )
    client_ctx = client_context(
        home.ca_bundle, cert_file=tmp_path / "gw.pem", key_file=tmp_path / "gw.key"
    )
    bios = [ssl.MemoryBIO() for _ in range(4)]
    server = server_ctx.wrap_bio(bios[0], bios[1], server_side=True)
    client = client_ctx.wrap_bio(bios[2], bios[3], server_hostname="localhost")
    for _ in range(10):
        for end in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        bios[0].write(bios[3].read())
        bios[2].write(bios[1].read())
    admit_gateway(server, ca.registry)


def test_gateway_admitted_before_revocation_passes_and_seen_after_fails(
    deployment: SecurityHome, ca: CertificateAuthority, clock: SimulatedClock, tmp_path: Path
) -> None:
    _admit_over_tls(deployment, ca, tmp_path)
    assert check(deployment, clock, "mutual-authentication", "no longer connected") is Status.PASS
    ca.revoke_gateway("gw-5", "stolen")
    clock.advance(60)
    seen = ca.registry.certificates(gateway_id="gw-5")[0]
    ca.registry.mark_seen(seen.fingerprint_sha256)  # admitted by something that skipped checks
    assert check(deployment, clock, "mutual-authentication", "no longer connected") is Status.FAIL


def test_api_tokens_not_applicable_until_one_is_issued_then_pass(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    assert check(deployment, clock, "access-control", "tokens expire") is Status.NOT_APPLICABLE
    directory = OperatorDirectory(deployment.operators_db, clock, argon2_parameters=FAST_ARGON2)
    directory.issue_token("root-admin", "ci", valid_for=timedelta(days=30))
    assert check(deployment, clock, "access-control", "tokens expire") is Status.PASS


@pytest.mark.parametrize(
    "attack",
    [
        "DROP TABLE audit_records; DROP TABLE audit_checkpoints;",
        "DROP TRIGGER audit_checkpoints_no_delete; DELETE FROM audit_checkpoints;"
        " DROP TRIGGER audit_records_no_delete; DELETE FROM audit_records;",
    ],
    ids=["tables-dropped", "emptied"],
)
def test_wiped_audit_log_fails_the_assessment(
    deployment: SecurityHome, clock: SimulatedClock, attack: str
) -> None:
    with sqlite3.connect(deployment.audit_db) as db:
        db.executescript(attack)
    assert check(deployment, clock, "logging", "hash-chained") is Status.FAIL
    assert assess(deployment, clock).status is Status.FAIL


def test_deleted_head_file_fails_the_assessment(
    deployment: SecurityHome, clock: SimulatedClock
) -> None:
    deployment.audit_head.unlink()
    assert check(deployment, clock, "logging", "hash-chained") is Status.FAIL
    assert "no head file" in evidence(deployment, clock, "logging", "hash-chained")
