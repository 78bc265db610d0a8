"""PKI and device authorization: enrolment codes, subjects, renewal, revocation, registry."""

from __future__ import annotations

import sqlite3
import stat
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from erab.clock import SimulatedClock
from erab.security import (
    CertificateAuthority,
    CertificateStatus,
    EnrolmentRefusal,
    EnrolmentRefused,
    PeerIdentity,
    PkiError,
    SecurityHome,
)
from erab.security.identity import fingerprint_sha256, serial_hex

from .conftest import csr_pem, enrol


def test_root_and_issuing_ca_are_p256_and_chain(ca: CertificateAuthority) -> None:
    for cert in (ca.root_cert, ca.issuing_cert):
        key = cert.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        assert key.curve.name == "secp256r1"
    assert ca.issuing_cert.issuer == ca.root_cert.subject
    ca.issuing_cert.verify_directly_issued_by(ca.root_cert)
    constraints = ca.issuing_cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca and constraints.value.path_length == 0


def test_initialise_refuses_to_overwrite_an_existing_ca(
    ca: CertificateAuthority, home: SecurityHome, clock: SimulatedClock
) -> None:
    before = home.issuing_key.read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        CertificateAuthority.initialise(home, clock)
    assert home.issuing_key.read_bytes() == before


def test_ca_private_keys_are_written_owner_only(
    ca: CertificateAuthority, home: SecurityHome
) -> None:
    for path in (home.root_key, home.issuing_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_open_without_a_ca_says_to_run_init(home: SecurityHome, clock: SimulatedClock) -> None:
    with pytest.raises(PkiError, match="erab pki init"):
        CertificateAuthority.open(home, clock)


def test_enrolled_certificate_names_gateway_and_site(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-001", "site-tokyo-7")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "gw-001"
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        == "site-tokyo-7"
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.UniformResourceIdentifier)) == {
        "urn:erab:gateway:gw-001",
        "urn:erab:site:site-tokyo-7",
    }
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    cert.verify_directly_issued_by(ca.issuing_cert)


def test_peer_identity_is_read_from_the_certificate(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-002", "site-2")
    identity = PeerIdentity.from_certificate(cert)
    assert identity.gateway_id == "gw-002"
    assert identity.site_id == "site-2"
    assert identity.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()


def test_enrolment_keeps_the_gateways_own_key(ca: CertificateAuthority) -> None:
    code = ca.create_enrolment_code("gw-003", "site-3")
    csr, key_pem = csr_pem("gw-003")
    cert = ca.enrol(code, csr)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()


def test_site_comes_from_the_code_not_the_csr(ca: CertificateAuthority) -> None:
    code = ca.create_enrolment_code("gw-004", "site-granted")
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, "gw-004"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "site-claimed"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    cert = ca.enrol(code, csr.public_bytes(serialization.Encoding.PEM))
    assert PeerIdentity.from_certificate(cert).site_id == "site-granted"


def test_enrolment_code_is_spent_on_use(ca: CertificateAuthority) -> None:
    code = ca.create_enrolment_code("gw-005", "site-5")
    ca.enrol(code, csr_pem("gw-005")[0])
    with pytest.raises(EnrolmentRefused) as err:
        ca.enrol(code, csr_pem("gw-005")[0])
    assert err.value.reason is EnrolmentRefusal.CODE_SPENT
    assert len(ca.registry.certificates(gateway_id="gw-005")) == 1


def test_a_code_redeemed_concurrently_is_spent_exactly_once(
    ca: CertificateAuthority, home: SecurityHome
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    code = ca.create_enrolment_code("gw-race", "site-race")
    csrs = [csr_pem("gw-race")[0] for _ in range(6)]
    # Each attempt opens the CA afresh, as separate processes or server threads would.
    rivals = [CertificateAuthority.open(home, ca.clock) for _ in csrs]

    def attempt(i: int) -> str:
        try:
            rivals[i].enrol(code, csrs[i])
            return "enrolled"
        except EnrolmentRefused as exc:
            return exc.reason.value

    with ThreadPoolExecutor(len(csrs)) as pool:
        outcomes = sorted(pool.map(attempt, range(len(csrs))))
    assert outcomes == ["code_spent"] * 5 + ["enrolled"]
    assert len(ca.registry.certificates(gateway_id="gw-race")) == 1


def test_expired_enrolment_code_is_refused(ca: CertificateAuthority, clock: SimulatedClock) -> None:
    code = ca.create_enrolment_code("gw-006", "site-6", valid_for=timedelta(hours=1))
    clock.advance(3601)
    with pytest.raises(EnrolmentRefused) as err:
        ca.enrol(code, csr_pem("gw-006")[0])
    assert err.value.reason is EnrolmentRefusal.CODE_EXPIRED


def test_unknown_enrolment_code_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(EnrolmentRefused) as err:
        ca.enrol("not-a-real-code", csr_pem("gw-007")[0])
    assert err.value.reason is EnrolmentRefusal.UNKNOWN_CODE


def test_code_for_one_gateway_cannot_enrol_another(ca: CertificateAuthority) -> None:
    code = ca.create_enrolment_code("gw-008", "site-8")
    with pytest.raises(EnrolmentRefused) as err:
        ca.enrol(code, csr_pem("gw-evil")[0])
    assert err.value.reason is EnrolmentRefusal.GATEWAY_MISMATCH
    # A refused attempt does not spend the code.
    assert ca.enrol(code, csr_pem("gw-008")[0]) is not None


def test_csr_with_a_weak_key_is_refused(ca: CertificateAuthority) -> None:
    code = ca.create_enrolment_code("gw-009", "site-9")
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gw-009")]))
        .sign(weak, hashes.SHA256())
    )
    with pytest.raises(EnrolmentRefused) as err:
        ca.enrol(code, csr.public_bytes(serialization.Encoding.PEM))
    assert err.value.reason is EnrolmentRefusal.BAD_CSR
    assert "1024" in str(err.value)


def test_garbage_csr_is_refused_with_a_reason(ca: CertificateAuthority) -> None:
    code = ca.create_enrolment_code("gw-010", "site-10")
    with pytest.raises(EnrolmentRefused) as err:
        ca.enrol(
            code, b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
    assert err.value.reason is EnrolmentRefusal.BAD_CSR


def test_only_a_hash_of_the_code_is_stored(ca: CertificateAuthority, home: SecurityHome) -> None:
    code = ca.create_enrolment_code("gw-011", "site-11")
    with sqlite3.connect(home.registry_db) as db:
        stored = [row[0] for row in db.execute("SELECT code_hash FROM enrolment_codes")]
    assert stored and code not in stored
    assert code.encode() not in home.registry_db.read_bytes()


def test_invalid_gateway_id_is_refused_with_what_is_allowed(ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        ca.create_enrolment_code("gw 1; DROP", "site-1")


def test_registry_tracks_expiry_by_the_clock(
    ca: CertificateAuthority, clock: SimulatedClock
) -> None:
    cert, _ = enrol(ca, "gw-012", "site-12")
    fp = fingerprint_sha256(cert)
    assert ca.registry.status_of(fp) is CertificateStatus.ACTIVE
    clock.advance(timedelta(days=366).total_seconds())
    assert ca.registry.status_of(fp) is CertificateStatus.EXPIRED


def test_registry_does_not_know_foreign_certificates(ca: CertificateAuthority) -> None:
    assert ca.registry.status_of("00" * 32) is CertificateStatus.UNKNOWN


def test_renewal_keeps_identity_and_leaves_old_cert_valid(ca: CertificateAuthority) -> None:
    old, _ = enrol(ca, "gw-013", "site-13")
    new_csr, _ = csr_pem("gw-013")
    new = ca.renew(serial_hex(old), new_csr)
    assert new.serial_number != old.serial_number
    assert new.public_key() != old.public_key()
    assert PeerIdentity.from_certificate(new).gateway_id == "gw-013"
    assert PeerIdentity.from_certificate(new).site_id == "site-13"
    record = ca.registry.by_serial(serial_hex(old))
    assert record is not None and record.renewed_by == serial_hex(new)
    assert ca.registry.status_of(fingerprint_sha256(old)) is CertificateStatus.ACTIVE


def test_renewal_without_csr_keeps_the_key(ca: CertificateAuthority) -> None:
    old, _ = enrol(ca, "gw-014", "site-14")
    new = ca.renew(serial_hex(old))
    assert new.public_key() == old.public_key()


def test_renewal_after_expiry_is_refused(ca: CertificateAuthority, clock: SimulatedClock) -> None:
    old, _ = enrol(ca, "gw-015", "site-15")
    clock.advance(timedelta(days=400).total_seconds())
    with pytest.raises(PkiError, match="expired"):
        ca.renew(serial_hex(old))


def test_renewal_of_a_revoked_certificate_is_refused(ca: CertificateAuthority) -> None:
    old, _ = enrol(ca, "gw-016", "site-16")
    ca.revoke(serial_hex(old), "keyCompromise")
    with pytest.raises(PkiError, match="revoked"):
        ca.renew(serial_hex(old))


def test_revocation_puts_the_serial_on_a_signed_crl(
    ca: CertificateAuthority, home: SecurityHome
) -> None:
    cert, _ = enrol(ca, "gw-017", "site-17")
    ca.revoke(serial_hex(cert), "keyCompromise")
    crl = x509.load_pem_x509_crl(home.crl.read_bytes())
    assert crl.is_signature_valid(ca.issuing_cert.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
    assert ca.registry.status_of(fingerprint_sha256(cert)) is CertificateStatus.REVOKED


def test_rfc5280_reason_is_written_on_the_crl_entry(
    ca: CertificateAuthority, home: SecurityHome
) -> None:
    compromised, _ = enrol(ca, "gw-021", "site-21")
    retired, _ = enrol(ca, "gw-022", "site-22")
    ca.revoke(serial_hex(compromised), "keyCompromise")
    ca.revoke(serial_hex(retired), "moved to another aggregator")  # free text: no code
    crl = x509.load_pem_x509_crl(home.crl.read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(compromised.serial_number)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason is x509.ReasonFlags.key_compromise
    other = crl.get_revoked_certificate_by_serial_number(retired.serial_number)
    assert other is not None and len(other.extensions) == 0
    assert ca.registry.by_serial(serial_hex(retired)).revocation_reason == (  # type: ignore[union-attr]
        "moved to another aggregator"
    )


def test_crl_after_revocation_is_valid_for_the_days_asked(
    ca: CertificateAuthority, home: SecurityHome
) -> None:
    cert, _ = enrol(ca, "gw-023", "site-23")
    ca.revoke(serial_hex(cert), crl_days=2)
    crl = x509.load_pem_x509_crl(home.crl.read_bytes())
    expected = (ca.clock.now() + timedelta(days=2)).replace(microsecond=0)  # X.509 time: whole s
    assert crl.next_update_utc == expected


def test_revoking_twice_is_reported(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-018", "site-18")
    ca.revoke(serial_hex(cert))
    with pytest.raises(PkiError, match="already revoked"):
        ca.revoke(serial_hex(cert))


def test_revoking_a_gateway_revokes_all_its_certificates(ca: CertificateAuthority) -> None:
    first, _ = enrol(ca, "gw-019", "site-19")
    second = ca.renew(serial_hex(first))
    revoked = ca.revoke_gateway("gw-019", "decommissioned")
    assert set(revoked) == {serial_hex(first), serial_hex(second)}
    gateway = ca.registry.gateway("gw-019")
    assert gateway is not None and gateway.status == "revoked"


def test_unknown_serial_is_reported(ca: CertificateAuthority) -> None:
    with pytest.raises(PkiError, match="no certificate with serial abc"):
        ca.revoke("abc")


def test_server_certificate_names_its_hosts(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(["localhost"], ["127.0.0.1"])
    san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_serial_may_be_given_with_colons_and_leading_zeros(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-020", "site-20")
    hex_serial = serial_hex(cert)
    padded = "00" + hex_serial.upper()
    with_colons = ":".join(padded[i : i + 2] for i in range(0, len(padded), 2))
    record = ca.registry.by_serial(with_colons)
    assert record is not None and record.serial == hex_serial


def test_ca_folders_are_private_whatever_the_umask(
    tmp_path: object, clock: SimulatedClock
) -> None:
    import os
    from pathlib import Path

    home = SecurityHome(Path(str(tmp_path)) / "h")
    old = os.umask(0)
    try:
        CertificateAuthority.initialise(home, clock)
    finally:
        os.umask(old)
    for folder in (home.home, home.dir, home.pki_dir, home.root_key.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(home.issuing_key.stat().st_mode) == 0o600


def test_existing_security_folder_loses_group_and_other_write(
    tmp_path: object, clock: SimulatedClock
) -> None:
    import os
    from pathlib import Path

    home = SecurityHome(Path(str(tmp_path)) / "h")
    home.dir.mkdir(parents=True)
    os.chmod(home.dir, 0o777)
    CertificateAuthority.initialise(home, clock)
    assert stat.S_IMODE(home.dir.stat().st_mode) == 0o700
