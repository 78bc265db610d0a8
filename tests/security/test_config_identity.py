"""Security settings validation and identity claims checked against the certificate."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.clock import RealClock, SimulatedClock
from erab.security import (
    CertificateAuthority,
    IdentityMismatch,
    PeerIdentity,
    SecurityConfig,
    SecurityHome,
)
from erab.security.home import TLS_VERSIONS
from erab.security.pki import EnrolmentRefusal, EnrolmentRefused

from .conftest import enrol


def test_default_config_round_trips() -> None:
    config = SecurityConfig()
    assert SecurityConfig.from_json(config.to_json()) == config


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"tls_min_version": "1.4"}', "tls_min_version '1.4' is not one of"),
        ('{"require_client_certificate": "no"}', "require_client_certificate must be a bool"),
        ('{"crl_days": 0}', "crl_days must be positive"),
        ('{"crl_days": true}', "crl_days must be a int"),
        ("[1, 2]", "expected a JSON object"),
        ("{oops", "not valid JSON"),
    ],
)
def test_bad_config_is_refused_naming_the_setting(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        SecurityConfig.from_json(text, "config.json")


def test_unknown_config_keys_are_kept() -> None:
    config = SecurityConfig.from_json('{"site_note": "pilot"}')
    assert json.loads(config.to_json())["site_note"] == "pilot"


@settings(deadline=None)  # timing varies on a shared CI machine
@given(st.text(max_size=200))
def test_any_config_text_gives_a_config_or_a_clear_error(text: str) -> None:
    try:
        config = SecurityConfig.from_json(text, "config.json")
    except ValueError as exc:
        assert str(exc).startswith("config.json") or "security config" in str(exc)
    else:
        assert config.tls_min_version in TLS_VERSIONS


def test_claim_matching_the_certificate_is_accepted(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-claim", "site-1")
    assert PeerIdentity.from_certificate(cert).require_gateway("gw-claim") == "gw-claim"


def test_claim_of_another_gateway_is_refused(ca: CertificateAuthority) -> None:
    cert, _ = enrol(ca, "gw-claim", "site-1")
    with pytest.raises(IdentityMismatch, match="claims gateway 'gw-other'"):
        PeerIdentity.from_certificate(cert).require_gateway("gw-other")


def test_server_certificate_identifies_no_gateway(ca: CertificateAuthority) -> None:
    issued = ca.issue_server(["localhost"])
    with pytest.raises(IdentityMismatch, match="identifies no gateway"):
        PeerIdentity.from_certificate(issued.certificate).require_gateway("localhost")


@pytest.fixture(scope="module")
def module_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    home = SecurityHome(tmp_path_factory.mktemp("fuzz-ca"))
    return CertificateAuthority.initialise(home, SimulatedClock(RealClock().now(), speed=0))


@settings(deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_csr_bytes_are_refused_as_bad_csr(
    module_ca: CertificateAuthority, data: bytes
) -> None:
    code = module_ca.create_enrolment_code("gw-fuzz", "site-fuzz")
    with pytest.raises(EnrolmentRefused) as err:
        module_ca.enrol(code, data)
    assert err.value.reason is EnrolmentRefusal.BAD_CSR
