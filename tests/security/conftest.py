"""Shared fixtures: a frozen simulated clock and a fresh CA in a temporary home."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from erab.clock import RealClock, SimulatedClock
from erab.security import CertificateAuthority, SecurityHome, make_csr, new_private_key
from erab.security.operators import Argon2Parameters

# Cheap Argon2id for tests: the algorithm and encoding are the same, only the cost differs.
FAST_ARGON2 = Argon2Parameters(time_cost=1, memory_cost_kib=1024, parallelism=1)


@pytest.fixture
def clock() -> SimulatedClock:
    """Frozen at the real current time, so certificates also pass OpenSSL's own checks."""
    return SimulatedClock(RealClock().now(), speed=0)


@pytest.fixture
def fixed_clock() -> SimulatedClock:
    return SimulatedClock(datetime(2026, 8, 1, 0, 0, tzinfo=UTC), speed=0)


@pytest.fixture
def home(tmp_path: Path) -> SecurityHome:
    return SecurityHome(tmp_path / "erab-home")


@pytest.fixture
def ca(home: SecurityHome, clock: SimulatedClock) -> CertificateAuthority:
    return CertificateAuthority.initialise(home, clock)


def csr_pem(gateway_id: str) -> tuple[bytes, bytes]:
    """(CSR PEM, private key PEM) for a gateway that made its own key."""
    key = new_private_key()
    csr = make_csr(key, gateway_id)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return csr.public_bytes(serialization.Encoding.PEM), key_pem


def enrol(
    ca: CertificateAuthority, gateway_id: str, site_id: str
) -> tuple[x509.Certificate, bytes]:
    code = ca.create_enrolment_code(gateway_id, site_id)
    csr, key_pem = csr_pem(gateway_id)
    return ca.enrol(code, csr), key_pem
