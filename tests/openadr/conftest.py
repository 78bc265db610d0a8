"""A deployment's PKI for the OpenADR tests: the VTN's server certificate and VEN client
certificates from erab's CA, TLS contexts held to TLS 1.2, and an AC store."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from erab.clock import RealClock
from erab.openadr import AcStore, fingerprint_of_file, hold_to_tls12
from erab.security import CertificateAuthority, SecurityHome, TlsProfile
from erab.security.pki import certificate_pem, private_key_pem
from erab.security.tls import client_context, server_context


@dataclass
class Pki:
    home: Path
    ca: CertificateAuthority
    vtn_cert: Path
    vtn_key: Path
    vens: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    @property
    def ca_bundle(self) -> Path:
        return SecurityHome(self.home).ca_bundle

    def ven(self, name: str) -> tuple[Path, Path]:
        """A client certificate and key for VEN ``name`` (made once)."""
        if name not in self.vens:
            issued = self.ca.issue_service_client(name)
            cert, key = self.home / f"{name}.pem", self.home / f"{name}.key.pem"
            cert.write_bytes(certificate_pem(issued.certificate))
            key.write_bytes(private_key_pem(issued.private_key))
            self.vens[name] = (cert, key)
        return self.vens[name]

    def fingerprint(self, name: str) -> str:
        return fingerprint_of_file(self.ven(name)[0])

    def server_context(self) -> ssl.SSLContext:
        return hold_to_tls12(server_context(self.vtn_cert, self.vtn_key, self.ca_bundle,
                                            profile=TlsProfile.OPENADR_TLS12))

    def client_context(self, name: str) -> ssl.SSLContext:
        cert, key = self.ven(name)
        return hold_to_tls12(client_context(self.ca_bundle, cert_file=cert, key_file=key,
                                            profile=TlsProfile.OPENADR_TLS12))


def make_pki(root: Path, ca: CertificateAuthority | None = None) -> Pki:
    """A PKI in ``root/home``, or over an existing CA (its home) when ``ca`` is given."""
    home = root / "home" if ca is None else ca.home.home
    ca = ca or CertificateAuthority.initialise(SecurityHome(home), RealClock())
    issued = ca.issue_server([], ["127.0.0.1"])
    cert, key = home / "vtn.pem", home / "vtn.key.pem"
    cert.write_bytes(certificate_pem(issued.certificate))
    key.write_bytes(private_key_pem(issued.private_key))
    return Pki(home, ca, cert, key)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path)


@pytest.fixture
def store(tmp_path: Path) -> AcStore:
    s = AcStore(tmp_path / "ac" / "ac.sqlite")
    yield s  # type: ignore[misc]
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
