"""Revoking one certificate at the broker: per certificate, not per gateway.

A renewed gateway holds two valid certificates; `erab pki revoke --serial` of the old one must
cut the old one's open connection and refuse it afterwards, while the new one keeps working.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from erab.bus import GatewayLink, RaLink, RunningBroker, Sample, Stream, TelemetryBatch
from erab.bus.broker import admitted, certificate_user, render_accounts
from erab.clock import RealClock
from erab.security import (
    CertificateRegistry,
    MemorySequenceCounter,
    client_context,
    make_csr,
    new_private_key,
)
from erab.security.identity import serial_hex
from erab.security.pki import certificate_pem, private_key_pem
from tests.bus.conftest import Deployment, Identity, earlier, now

pytestmark = pytest.mark.timeout(120)


def renew(deployment: Deployment, gateway_id: str) -> Identity:
    """Renew the gateway's certificate onto a new key; the old one stays valid."""
    old = x509.load_pem_x509_certificate(deployment.gateways[gateway_id].cert.read_bytes())
    key = new_private_key()
    csr = make_csr(key, gateway_id).public_bytes(serialization.Encoding.PEM)
    cert = deployment.ca.renew(serial_hex(old), csr)
    out = deployment.home / "gateways" / f"{gateway_id}-renewed"
    out.mkdir(parents=True)
    identity = Identity(out / "gw.pem", out / "gw.key.pem")
    identity.cert.write_bytes(certificate_pem(cert))
    identity.key.write_bytes(private_key_pem(key))
    identity.key.chmod(0o600)
    return identity


def serial_of(identity: Identity) -> str:
    return serial_hex(x509.load_pem_x509_certificate(identity.cert.read_bytes()))


def link(deployment: Deployment, broker: RunningBroker, gateway_id: str,
         identity: Identity) -> GatewayLink:
    tls = client_context(deployment.layout.security.ca_bundle, cert_file=identity.cert,
                         key_file=identity.key)
    return GatewayLink(gateway_id, broker.host, broker.mqtt_port, tls,
                       sequence=MemorySequenceCounter(), clock=RealClock())


def telemetry(gl: GatewayLink, power_w: float) -> TelemetryBatch:
    return TelemetryBatch(
        gateway_id=gl.gateway_id, seq=gl.next_seq(), sent_at=now(),
        samples=[Sample(device_id="battery-1", measured_at=earlier(1),
                        values={"power_w": power_w})],
    )


def test_each_certificate_is_its_own_user_named_by_its_subject(deployment: Deployment) -> None:
    new = renew(deployment, "gw-a")
    registry = CertificateRegistry(deployment.layout.security.registry_db, RealClock())
    gateways, _ = admitted(registry, RealClock().now())
    names = [g.user for g in gateways if g.gateway_id == "gw-a"]
    old_user = certificate_user(deployment.gateways["gw-a"].cert.read_bytes())
    new_user = certificate_user(new.cert.read_bytes())
    assert names == [old_user, new_user]
    assert names[1] == f"SERIALNUMBER={serial_of(new)},OU=site-gw-a,CN=gw-a"
    deployment.ca.revoke(serial_of(deployment.gateways["gw-a"]), "superseded")
    gateways, services = admitted(registry, RealClock().now())
    text = render_accounts(gateways, services)
    assert old_user not in text and new_user in text
    assert "urn:erab:gateway:" not in text  # a SAN URI would admit every certificate alike


async def test_revoking_the_old_certificate_by_serial_cuts_it_and_the_new_one_connects(
    deployment: Deployment, broker: RunningBroker, ra: RaLink,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from erab.cli import main

    consumer = await ra.consumer(Stream.TELEMETRY, "ingest")
    old = deployment.gateways["gw-a"]
    new = renew(deployment, "gw-a")
    loop = asyncio.get_running_loop()
    async with link(deployment, broker, "gw-a", old) as gl:
        await gl.publish(telemetry(gl, 1.0))  # the old certificate works after the renewal
        code = await asyncio.to_thread(
            main, ["pki", "revoke", "--home", str(deployment.home), "--serial", serial_of(old),
                   "--reason", "superseded"])
        assert code == 0 and "broker: reloaded" in capsys.readouterr().out
        started = loop.time()
        with pytest.raises(aiomqtt.MqttError):
            for _ in range(40):
                await gl.publish(telemetry(gl, 2.0), timeout_s=2)
                await asyncio.sleep(0.1)
        cut_after_s = loop.time() - started
    print(f"old certificate cut {cut_after_s:.3f} s after the revoke returned")
    assert cut_after_s < 5
    with pytest.raises(aiomqtt.MqttError):
        async with link(deployment, broker, "gw-a", old) as again:
            await again.publish(telemetry(again, 3.0))
    async with link(deployment, broker, "gw-a", new) as renewed:
        await renewed.publish(telemetry(renewed, 4.0))
    async with link(deployment, broker, "gw.b", deployment.gateways["gw.b"]) as other:
        await other.publish(telemetry(other, 5.0))
    got = []
    deadline = loop.time() + 10
    while len(got) < 3 and loop.time() < deadline:
        for d in await consumer.fetch(3 - len(got), 0.5):
            await d.ack()
            got.append(d)
    powers = [(d.message.gateway_id, d.message.samples[0].values["power_w"])  # type: ignore[union-attr]
              for d in got]
    assert powers == [("gw-a", 1.0), ("gw-a", 4.0), ("gw.b", 5.0)]


async def test_a_revoked_new_certificate_is_refused_while_the_old_one_still_works(
    deployment: Deployment, broker: RunningBroker, tmp_path: Path,
) -> None:
    from erab.bus import regenerate_and_reload

    old = deployment.gateways["gw-a"]
    new = renew(deployment, "gw-a")
    deployment.ca.revoke(serial_of(new), "keyCompromise")
    assert regenerate_and_reload(deployment.home).reloaded
    with pytest.raises(aiomqtt.MqttError):
        async with link(deployment, broker, "gw-a", new) as gl:
            await gl.publish(telemetry(gl, 1.0))
    async with link(deployment, broker, "gw-a", old) as gl:
        await gl.publish(telemetry(gl, 2.0))


def issue_legacy(deployment: Deployment, gateway_id: str) -> Identity:
    """A gateway certificate as erab issued them before the subject carried the serial
    (``OU=<site>,CN=<id>``), signed by the same CA and recorded in the registry."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca = deployment.ca
    key = new_private_key()
    site = f"site-{gateway_id}"
    cert = (
        ca._builder(key.public_key(), gateway_id, 30, RealClock().now(),
                    [x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, site)])
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:erab:gateway:{gateway_id}")]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca._issuing_key, hashes.SHA256())
    )
    with ca.registry.transaction() as db:
        ca.registry.record_issued(db, ca._record(cert, gateway_id, site))
    out = deployment.home / "gateways" / f"{gateway_id}-legacy"
    out.mkdir(parents=True)
    identity = Identity(out / "gw.pem", out / "gw.key.pem")
    identity.cert.write_bytes(certificate_pem(cert))
    identity.key.write_bytes(private_key_pem(key))
    identity.key.chmod(0o600)
    return identity


async def test_a_certificate_issued_before_the_serial_in_the_subject_still_connects(
    deployment: Deployment, broker: RunningBroker, ra: RaLink,
) -> None:
    from erab.bus import regenerate_and_reload

    consumer = await ra.consumer(Stream.TELEMETRY, "ingest")
    legacy = issue_legacy(deployment, "gw-a")
    assert regenerate_and_reload(deployment.home).reloaded
    assert "OU=site-gw-a,CN=gw-a" in deployment.layout.accounts.read_text()
    async with link(deployment, broker, "gw-a", legacy) as gl:
        await gl.publish(telemetry(gl, 7.0))
    got = await consumer.fetch(1, 5)
    assert [d.message.samples[0].values["power_w"] for d in got] == [7.0]  # type: ignore[union-attr]
    deployment.ca.revoke(serial_of(legacy), "superseded")
    assert regenerate_and_reload(deployment.home).reloaded
    with pytest.raises(aiomqtt.MqttError):
        async with link(deployment, broker, "gw-a", legacy) as gl:
            await gl.publish(telemetry(gl, 8.0))
