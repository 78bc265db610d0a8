"""A deployment home with erab's PKI, and the real nats-server from the wheel on loopback."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from erab.bus import BrokerHome, BrokerProcess, Ports, RaLink, RunningBroker, prepare
from erab.clock import RealClock, SimulatedClock
from erab.security import (
    CertificateAuthority,
    MemorySequenceCounter,
    SecurityHome,
    client_context,
    make_csr,
    new_private_key,
)
from erab.security.pki import certificate_pem, private_key_pem

GATEWAYS = ("gw-a", "gw.b")  # a dot in an id exercises nats-server's '.' -> '//' mapping


@dataclass(frozen=True)
class Identity:
    cert: Path
    key: Path


@dataclass
class Deployment:
    home: Path
    layout: BrokerHome
    ca: CertificateAuthority
    gateways: dict[str, Identity]

    def enrol(self, gateway_id: str, *, days: int = 30, clock: SimulatedClock | None = None
              ) -> Identity:
        ca = self.ca if clock is None else CertificateAuthority.open(self.layout.security, clock)
        key = new_private_key()
        csr = make_csr(key, gateway_id).public_bytes(serialization.Encoding.PEM)
        cert = ca.issue_gateway(csr, gateway_id, f"site-{gateway_id}", days=days)
        out = self.home / "gateways" / gateway_id
        out.mkdir(parents=True, exist_ok=True)
        identity = Identity(out / "gw.pem", out / "gw.key.pem")
        identity.cert.write_bytes(certificate_pem(cert))
        identity.key.write_bytes(private_key_pem(key))
        identity.key.chmod(0o600)
        return identity

    def gateway_tls(self, gateway_id: str) -> ssl.SSLContext:
        ident = self.gateways[gateway_id]
        return client_context(self.layout.security.ca_bundle, cert_file=ident.cert,
                              key_file=ident.key)


def make_deployment(root: Path) -> Deployment:
    home = root / "erab-home"
    ca = CertificateAuthority.initialise(SecurityHome(home), RealClock())
    deployment = Deployment(home, BrokerHome(home), ca, {})
    for gw in GATEWAYS:
        deployment.gateways[gw] = deployment.enrol(gw)
    prepare(home, ports=Ports(0, 0, 0))
    return deployment


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return make_deployment(tmp_path)


@pytest.fixture
def broker(deployment: Deployment) -> Iterator[RunningBroker]:
    process = BrokerProcess(deployment.layout)
    running = process.start()
    try:
        yield running
    finally:
        process.stop()


@pytest.fixture
async def ra(deployment: Deployment, broker: RunningBroker) -> AsyncIterator[RaLink]:
    link = await connect_ra(deployment, broker)
    try:
        yield link
    finally:
        await link.close()


async def connect_ra(deployment: Deployment, broker: RunningBroker) -> RaLink:
    layout = deployment.layout
    link = await RaLink.connect(
        broker.nats_url,
        ca_bundle=layout.security.ca_bundle,
        cert_file=layout.ra_cert,
        key_file=layout.ra_key,
    )
    await link.ensure_streams()
    return link


def now() -> datetime:
    return datetime.now(UTC)


def earlier(seconds: float) -> datetime:
    return now() - timedelta(seconds=seconds)


def counter() -> MemorySequenceCounter:
    return MemorySequenceCounter()
