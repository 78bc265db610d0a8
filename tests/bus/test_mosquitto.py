"""The gateway's MQTT side against Mosquitto 2.0 from Debian: real `mosquitto -c` as a child
process on an ephemeral loopback port, erab's PKI, its CRL and a generated ACL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import msgspec
import pytest
from cryptography import x509

from erab.bus import GatewayLink, Sample, SignedCommand, TelemetryBatch, UplinkDecoder, encode
from erab.bus.broker import BrokerError
from erab.bus.mosquitto import (
    MosquittoHome,
    MosquittoProcess,
    find_mosquitto,
    free_port,
    mosquitto_user,
    prepare_mosquitto,
)
from erab.bus.topics import MessageKind, topic
from erab.clock import RealClock
from erab.security import CertificateAuthority, MemorySequenceCounter, SecurityHome, client_context
from erab.security.identity import serial_hex
from tests.bus.conftest import Deployment, earlier, now
from tests.requires import missing

pytestmark = pytest.mark.timeout(120)


def require_mosquitto() -> None:
    try:
        find_mosquitto()
    except BrokerError as exc:
        missing(f"{exc}; the Mosquitto tests need it")


@dataclass
class Mosquitto:
    deployment: Deployment
    layout: MosquittoHome
    process: MosquittoProcess
    port: int


@pytest.fixture
def mosquitto(deployment: Deployment) -> Iterator[Mosquitto]:
    require_mosquitto()
    port = free_port()
    # Started as root, Mosquitto would drop to the 'mosquitto' user, who cannot read the
    # 0600 server key in the test's home: keep root (see the notes) rather than loosen it.
    layout = prepare_mosquitto(deployment.home, port,
                               user="root" if os.geteuid() == 0 else None)
    process = MosquittoProcess(layout, "127.0.0.1", port)
    process.start()
    try:
        yield Mosquitto(deployment, layout, process, port)
    finally:
        assert process.stop() is not None


def gateway(m: Mosquitto, gateway_id: str, tls: ssl.SSLContext | None = None) -> GatewayLink:
    return GatewayLink(gateway_id, "127.0.0.1", m.port, tls or m.deployment.gateway_tls(gateway_id),
                       sequence=MemorySequenceCounter(), clock=RealClock())


def ra_tls(m: Mosquitto) -> ssl.SSLContext:
    layout = m.deployment.layout
    return client_context(layout.security.ca_bundle, cert_file=layout.ra_cert,
                          key_file=layout.ra_key)


@pytest.fixture
async def ra(mosquitto: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    """The RA's side as a plain MQTT client with its service certificate: reads all uplinks."""
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, tls_context=ra_tls(mosquitto),
                              identifier="ra") as client:
        await client.subscribe("erab/v1/gw/+/+", qos=1)
        yield client


def telemetry(gl: GatewayLink, power_w: float, gateway_id: str | None = None) -> TelemetryBatch:
    return TelemetryBatch(
        gateway_id=gateway_id or gl.gateway_id, seq=gl.next_seq(), sent_at=now(),
        samples=[Sample(device_id="battery-1", measured_at=earlier(1),
                        values={"power_w": power_w})],
    )


async def received(client: aiomqtt.Client, want: int, timeout_s: float = 5.0
                   ) -> list[tuple[str, object]]:
    """(topic, decoded uplink) pairs, skipping the gateways' last wills and the RA's own
    commands (its subscription to ``+/+`` covers them)."""
    decoder = UplinkDecoder()
    got: list[tuple[str, object]] = []

    async def collect() -> None:
        async for message in client.messages:
            name = str(message.topic)
            if name.endswith(("/offline", "/cmd")):
                continue
            assert isinstance(message.payload, bytes)
            got.append((name, decoder.decode(name, message.payload, datetime.now(UTC))))
            if len(got) >= want:
                return

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(collect(), timeout_s)
    return got


def powers(got: list[tuple[str, object]]) -> list[tuple[str, float]]:
    return [(m.gateway_id, m.samples[0].values["power_w"]) for _, m in got]  # type: ignore[attr-defined]


async def test_gateway_telemetry_reaches_the_ra_subscriber_typed(
    mosquitto: Mosquitto, ra: aiomqtt.Client
) -> None:
    async with gateway(mosquitto, "gw-a") as gl:
        await gl.publish(telemetry(gl, 1500.0))
    got = await received(ra, 1)
    assert [t for t, _ in got] == ["erab/v1/gw/gw-a/telemetry"]
    assert powers(got) == [("gw-a", 1500.0)]


async def test_another_gateway_cannot_read_a_gateways_telemetry(
    mosquitto: Mosquitto, ra: aiomqtt.Client
) -> None:
    tls = mosquitto.deployment.gateway_tls("gw.b")
    async with aiomqtt.Client("127.0.0.1", mosquitto.port, tls_context=tls) as spy:
        await spy.subscribe("erab/v1/gw/gw-a/telemetry", qos=1)
        await spy.subscribe("erab/v1/gw/+/+", qos=1)
        async with gateway(mosquitto, "gw-a") as gl:
            await gl.publish(telemetry(gl, 10.0))
        assert powers(await received(ra, 1)) == [("gw-a", 10.0)]  # it was published
        assert await received(spy, 1, timeout_s=1.0) == []  # and the other gateway saw nothing


async def test_a_gateway_cannot_publish_under_another_gateways_prefix(
    mosquitto: Mosquitto, ra: aiomqtt.Client
) -> None:
    async with gateway(mosquitto, "gw-a") as gl:
        forged = telemetry(gl, 666.0, gateway_id="gw.b")
        await gl._client.publish(topic("gw.b", MessageKind.TELEMETRY), encode(forged), qos=1)
        await gl.publish(telemetry(gl, 20.0))  # an allowed one after it, to know when to stop
    assert powers(await received(ra, 2, timeout_s=2.0)) == [("gw-a", 20.0)]


async def test_the_ra_sends_a_command_only_its_gateway_receives(
    mosquitto: Mosquitto, ra: aiomqtt.Client
) -> None:
    envelope = msgspec.Raw(b'{"envelope": {}}')
    command = SignedCommand(gateway_id="gw-a", sent_at=now(), envelope=envelope)
    async with gateway(mosquitto, "gw-a") as a, gateway(mosquitto, "gw.b") as b:
        await ra.publish(topic("gw-a", MessageKind.COMMAND), encode(command), qos=1)
        got = await asyncio.wait_for(anext(aiter(a.commands())), 5)
        assert got.gateway_id == "gw-a" and bytes(got.envelope) == b'{"envelope": {}}'
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(b.commands())), 1)


async def test_a_client_without_a_certificate_is_refused(mosquitto: Mosquitto) -> None:
    tls = client_context(mosquitto.deployment.layout.security.ca_bundle)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, tls_context=tls,
                                  timeout=3) as client:
            await client.publish("erab/v1/gw/gw-a/telemetry", b"{}", qos=1)


async def test_a_certificate_of_another_ca_is_refused(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    from erab.security import make_csr, new_private_key
    from erab.security.pki import certificate_pem, private_key_pem

    other = CertificateAuthority.initialise(SecurityHome(tmp_path / "other"), RealClock())
    key = new_private_key()
    cert = other.issue_gateway(make_csr(key, "gw-a").public_bytes(serialization.Encoding.PEM),
                               "gw-a", "site-gw-a")
    (tmp_path / "c.pem").write_bytes(certificate_pem(cert))
    (tmp_path / "k.pem").write_bytes(private_key_pem(key))
    tls = client_context(mosquitto.deployment.layout.security.ca_bundle,
                         cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem")
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, tls_context=tls,
                                  timeout=3) as client:
            await client.publish(topic("gw-a", MessageKind.TELEMETRY), b"{}", qos=1)
    assert "certificate verify failed" in mosquitto.layout.log.read_text()


def test_the_acl_names_each_certificate_by_its_subject(mosquitto: Mosquitto) -> None:
    pem = mosquitto.deployment.gateways["gw-a"].cert.read_bytes()
    name = f"serialNumber={serial_hex(x509.load_pem_x509_certificate(pem))},OU=site-gw-a,CN=gw-a"
    acl = mosquitto.layout.acl.read_text()
    assert f"user {name}\n" in acl and mosquitto_user(pem) == name
    assert "topic read erab/v1/gw/gw-a/cmd" in acl and "topic write erab/v1/gw/gw-a/cmd" not in acl
    rules = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert not any(r.startswith("pattern") or "#" in r for r in rules)  # no catch-alls


async def test_a_revoked_certificate_is_refused_after_a_reload(
    mosquitto: Mosquitto, ra: aiomqtt.Client
) -> None:
    deployment = mosquitto.deployment
    cert = x509.load_pem_x509_certificate(deployment.gateways["gw-a"].cert.read_bytes())
    async with gateway(mosquitto, "gw-a") as gl:
        await gl.publish(telemetry(gl, 1.0))
        deployment.ca.revoke(serial_hex(cert), "keyCompromise")  # rewrites the CRL
        users = mosquitto.process.reload()
        assert [u.gateway_id for u in users] == ["gw.b"]
        await asyncio.sleep(0.5)  # SIGHUP is handled between two turns of Mosquitto's loop
        # Mosquitto keeps the open connection, but its user is gone from the ACL: what it
        # publishes is dropped (after a PUBACK) and commands no longer reach it.
        await gl.publish(telemetry(gl, 2.0), timeout_s=2)
        command = SignedCommand(gateway_id="gw-a", sent_at=now(),
                                envelope=msgspec.Raw(b'{"envelope": {}}'))
        await ra.publish(topic("gw-a", MessageKind.COMMAND), encode(command), qos=1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(aiter(gl.commands())), 1)
    with pytest.raises(aiomqtt.MqttError):  # a new connection fails the CRL check
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, timeout=3,
                                  tls_context=deployment.gateway_tls("gw-a")) as again:
            await again.publish(topic("gw-a", MessageKind.TELEMETRY), b"{}", qos=1)
    async with gateway(mosquitto, "gw.b") as other:
        await other.publish(telemetry(other, 4.0))
    assert powers(await received(ra, 3, timeout_s=2.0)) == [("gw-a", 1.0), ("gw.b", 4.0)]
    log = mosquitto.layout.log.read_text()
    assert "Reloading config." in log and "certificate verify failed" in log


def run_missing(ci: str | None) -> subprocess.CompletedProcess[str]:
    """One Mosquitto test in a child pytest with the binary made unfindable."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["ERAB_MOSQUITTO"] = "/nonexistent/mosquitto"
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         f"{__file__}::test_gateway_telemetry_reaches_the_ra_subscriber_typed"],
        capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parents[2],
    )


def test_a_missing_mosquitto_fails_the_tests_under_ci_and_skips_them_outside() -> None:
    under_ci = run_missing("true")
    assert under_ci.returncode == 1, under_ci.stdout
    assert "1 error" in under_ci.stdout and "CI is set" in under_ci.stdout
    outside = run_missing(None)
    assert outside.returncode == 0, outside.stdout
    assert "1 skipped" in outside.stdout and "mosquitto not found" in outside.stdout
