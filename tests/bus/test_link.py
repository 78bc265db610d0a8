"""The link end to end: real nats-server, real mutual TLS, a gateway over MQTT, the RA over
NATS with JetStream."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from pathlib import Path

import aiomqtt
import msgspec
import nats
import pytest

from erab.bus import (
    GatewayLink,
    MessageKind,
    RaLink,
    RejectReason,
    RunningBroker,
    Sample,
    SequenceDedup,
    SignedCommand,
    Stream,
    TelemetryBatch,
    UplinkDecoder,
    encode,
    regenerate_and_reload,
)
from erab.bus.topics import mqtt_client_id, subject, topic
from erab.clock import RealClock
from erab.security import (
    CertificateAuthority,
    EnvelopeSigner,
    EnvelopeVerifier,
    MemorySequenceCounter,
    MemoryVerifierStateStore,
    SecurityHome,
    client_context,
    load_or_create_ed25519_key,
)
from tests.bus.conftest import Deployment, connect_ra, earlier, now

pytestmark = pytest.mark.timeout(120)


def link(deployment: Deployment, broker: RunningBroker, gateway_id: str,
         seq: MemorySequenceCounter | None = None) -> GatewayLink:
    return GatewayLink(
        gateway_id, broker.host, broker.mqtt_port, deployment.gateway_tls(gateway_id),
        sequence=seq or MemorySequenceCounter(), clock=RealClock(),
    )


def telemetry(gl: GatewayLink, power_w: float = 1200.0) -> TelemetryBatch:
    return TelemetryBatch(
        gateway_id=gl.gateway_id, seq=gl.next_seq(), sent_at=now(),
        samples=[Sample(device_id="battery-1", measured_at=earlier(1),
                        values={"power_w": power_w, "soc_pct": 55.0})],
    )


async def drain(consumer_fetch: object, want: int, timeout_s: float = 10.0) -> list[object]:
    got: list[object] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(got) < want and loop.time() < deadline:
        batch = await consumer_fetch(want - len(got), 0.5)  # type: ignore[operator]
        for d in batch:
            await d.ack()
        got += batch
    return got


async def test_gateway_telemetry_reaches_a_durable_consumer_typed(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    consumer = await ra.consumer(Stream.TELEMETRY, "ingest")
    sent = []
    for gw in ("gw-a", "gw.b"):
        async with link(deployment, broker, gw) as gl:
            message = telemetry(gl)
            await gl.publish(message)
            sent.append(message)
    got = await drain(consumer.fetch, 2)
    assert sorted((d.message for d in got), key=lambda m: m.gateway_id) == sent  # type: ignore[attr-defined]
    assert {d.subject for d in got} == {  # type: ignore[attr-defined]
        "erab.v1.gw.gw-a.telemetry", "erab.v1.gw.gw//b.telemetry"}
    assert consumer.decoder.accepted == 2 and not consumer.decoder.rejected


async def broker_logged(deployment: Deployment, text: str, timeout_s: float = 3.0) -> bool:
    """Whether the broker's log says ``text`` (the reason it gives for a refusal)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if text in deployment.layout.log.read_text(errors="replace"):
            return True
        await asyncio.sleep(0.05)
    return False


async def _mqtt_refused(broker: RunningBroker, context: ssl.SSLContext, client_id: str) -> str:
    with pytest.raises((aiomqtt.MqttError, ssl.SSLError, OSError)) as info:
        async with aiomqtt.Client(broker.host, broker.mqtt_port, identifier=client_id,
                                  tls_context=context, timeout=2) as client:
            await client.publish(topic("gw-a", MessageKind.TELEMETRY), b"{}", qos=1)
    return str(info.value)


async def test_a_client_without_a_certificate_is_refused(
    deployment: Deployment, broker: RunningBroker
) -> None:
    bare = client_context(deployment.layout.security.ca_bundle)
    await _mqtt_refused(broker, bare, "erab-nocert")
    assert await broker_logged(deployment, "tls: client didn't provide a certificate")
    with pytest.raises(Exception):  # noqa: B017 - nats-py raises several kinds here
        await nats.connect(broker.nats_url, tls=bare, connect_timeout=3,
                           allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_certificate_of_another_ca_is_refused(
    deployment: Deployment, broker: RunningBroker, tmp_path: Path
) -> None:
    other_home = SecurityHome(tmp_path / "other")
    other = Deployment(other_home.home, deployment.layout, CertificateAuthority.initialise(
        other_home, RealClock()), {})
    stranger = other.enrol("gw-a")  # same gateway id, wrong CA
    context = client_context(deployment.layout.security.ca_bundle, cert_file=stranger.cert,
                             key_file=stranger.key)
    await _mqtt_refused(broker, context, "erab-stranger")
    assert await broker_logged(deployment, "x509: certificate signed by unknown authority")


async def test_an_expired_certificate_is_refused(
    deployment: Deployment, broker: RunningBroker
) -> None:
    from erab.clock import SimulatedClock

    long_ago = SimulatedClock(earlier(10 * 86400), speed=0)
    old = deployment.enrol("gw-old", days=1, clock=long_ago)
    context = client_context(deployment.layout.security.ca_bundle, cert_file=old.cert,
                             key_file=old.key)
    await _mqtt_refused(broker, context, "erab-gw-old")
    assert await broker_logged(deployment, "x509: certificate has expired")


async def test_a_gateway_certificate_cannot_use_the_ra_listener(
    deployment: Deployment, broker: RunningBroker
) -> None:
    with pytest.raises(Exception):  # noqa: B017
        await nats.connect(broker.nats_url, tls=deployment.gateway_tls("gw-a"),
                           connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0)


async def test_a_gateway_cannot_publish_under_another_gateways_prefix(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    consumer = await ra.consumer(Stream.TELEMETRY, "ingest")
    async with link(deployment, broker, "gw-a") as gl:
        forged = TelemetryBatch(gateway_id="gw.b", seq=1, sent_at=now(), samples=[
            Sample(device_id="x", measured_at=now(), values={"power_w": 9e6})])
        # The broker drops it but still PUBACKs (nats-server logs a Publish Violation).
        await gl._client.publish(topic("gw.b", MessageKind.TELEMETRY), encode(forged), qos=1)
        own = telemetry(gl)
        await gl.publish(own)  # published after the forged one: its arrival bounds the wait
    got = await drain(consumer.fetch, 2, timeout_s=3)
    assert [d.message for d in got] == [own]  # type: ignore[attr-defined]
    assert await broker_logged(
        deployment, 'Publish Violation - Subject "erab.v1.gw.gw//b.telemetry"')


async def test_a_gateway_cannot_subscribe_to_another_gateways_commands(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    async with aiomqtt.Client(broker.host, broker.mqtt_port, identifier="erab-snoop",
                              tls_context=deployment.gateway_tls("gw-a")) as snoop, \
            link(deployment, broker, "gw.b") as victim:
        granted = await snoop.subscribe(topic("gw.b", MessageKind.COMMAND), qos=1)
        await ra.send_command("gw.b", b'{"envelope":{},"signature":""}')
        async with asyncio.timeout(5):
            async for command in victim.commands():
                assert command.gateway_id == "gw.b"
                break
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                async for _ in snoop.messages:
                    pass
    # MQTT 3.1.1 §3.9.3: return code 0x80 is a refused subscription.
    assert isinstance(granted, list) and granted[0].value == 0x80
    assert await broker_logged(
        deployment, 'Subscription Violation - Subject "erab.v1.gw.gw//b.cmd"')


async def test_a_signed_command_reaches_only_its_gateway(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    clock = RealClock()
    key = load_or_create_ed25519_key(deployment.layout.security.command_key)
    signer = EnvelopeSigner(key, clock, MemorySequenceCounter())
    wire = signer.sign("gw-a", {"type": "set_power", "device_id": "battery-1", "power_w": -2000})
    async with link(deployment, broker, "gw-a") as a, link(deployment, broker, "gw.b") as b:
        await ra.send_command("gw-a", wire)
        async with asyncio.timeout(5):
            command = await anext(aiter(a.commands()))
        assert isinstance(command, SignedCommand)
        verifier = EnvelopeVerifier("gw-a", clock, MemoryVerifierStateStore(),
                                    trusted_key=key.public_key())
        envelope = verifier.verify(bytes(command.envelope))
        assert envelope.body["power_w"] == -2000
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1):
                async for _ in b.commands():
                    pass


async def test_messages_published_while_the_ra_is_down_are_delivered_when_it_returns(
    deployment: Deployment, broker: RunningBroker
) -> None:
    first = await connect_ra(deployment, broker)
    await first.consumer(Stream.TELEMETRY, "ingest")
    await first.close()
    seq = MemorySequenceCounter()
    async with link(deployment, broker, "gw-a", seq) as gl:
        sent = [telemetry(gl, float(i)) for i in range(20)]
        for message in sent:
            await gl.publish(message)
    again = await connect_ra(deployment, broker)
    try:
        consumer = await again.consumer(Stream.TELEMETRY, "ingest")
        got = await drain(consumer.fetch, 20)
    finally:
        await again.close()
    assert [d.message for d in got] == sent  # type: ignore[attr-defined]


async def test_two_workers_share_one_durable_consumer(
    deployment: Deployment, broker: RunningBroker
) -> None:
    workers = [await connect_ra(deployment, broker) for _ in range(2)]
    try:
        consumers = [await w.consumer(Stream.TELEMETRY, "ingest") for w in workers]
        total = 200
        async with link(deployment, broker, "gw-a") as gl:
            for i in range(total):
                await gl.publish(telemetry(gl, float(i)))
        seen: list[list[int]] = [[], []]

        async def work(i: int) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 15
            while sum(map(len, seen)) < total and loop.time() < deadline:
                for d in await consumers[i].fetch(10, 0.3):
                    seen[i].append(d.message.seq)
                    await d.ack()
                    await asyncio.sleep(0)  # let the other worker pull too

        await asyncio.gather(work(0), work(1))
    finally:
        for w in workers:
            await w.close()
    everything = seen[0] + seen[1]
    assert sorted(everything) == list(range(2, total + 2))  # seq 1 is the last will's
    assert len(set(everything)) == total  # none twice
    assert seen[0] and seen[1]  # both worked


async def test_bad_payloads_are_rejected_by_reason_and_good_ones_still_arrive(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    decoder = UplinkDecoder(max_bytes=64 * 1024)
    consumer = await ra.consumer(Stream.TELEMETRY, "ingest", decoder=decoder,
                                 dedup=SequenceDedup())
    t = topic("gw-a", MessageKind.TELEMETRY)
    async with link(deployment, broker, "gw-a") as gl:
        good = telemetry(gl)
        body = msgspec.json.decode(encode(good))
        bad = [
            b"\xff not json",
            b'{"type": "telemetry", "v": 1}',
            msgspec.json.encode({**body, "gateway_id": "gw.b"}),
            msgspec.json.encode({**body, "sent_at": "2099-01-01T00:00:00Z"}),
            b" " * (65 * 1024),
        ]
        for payload in bad:
            await gl._client.publish(t, payload, qos=1)
        await gl.publish(good)
        await gl._client.publish(t, encode(good), qos=1)  # a redelivered copy
    got = await drain(consumer.fetch, 2)
    assert [d.message for d in got] == [good, good]  # type: ignore[attr-defined]
    assert [d.duplicate for d in got] == [False, True]  # type: ignore[attr-defined]
    assert decoder.rejected == {
        RejectReason.NOT_JSON: 1, RejectReason.SCHEMA: 1, RejectReason.WRONG_GATEWAY: 1,
        RejectReason.FUTURE_TIME: 1, RejectReason.OVERSIZED: 1,
    }


async def test_revoking_a_gateway_cuts_its_open_connection_and_refuses_it_after(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    consumer = await ra.consumer(Stream.TELEMETRY, "ingest")
    async with link(deployment, broker, "gw-a") as gl:
        await gl.publish(telemetry(gl))
        deployment.ca.revoke_gateway("gw-a", "keyCompromise")
        result = regenerate_and_reload(deployment.home)
        assert result.reloaded and "gw-a" not in result.gateways and "gw.b" in result.gateways
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(aiomqtt.MqttError):
            for _ in range(40):
                await gl.publish(telemetry(gl), timeout_s=2)
                await asyncio.sleep(0.1)
        assert loop.time() - started < 5
    with pytest.raises(aiomqtt.MqttError):
        async with link(deployment, broker, "gw-a") as again:
            await again.publish(telemetry(again))
    async with link(deployment, broker, "gw.b") as other:  # the others are untouched
        await other.publish(telemetry(other))
    got = await drain(consumer.fetch, 2)
    assert [d.message.gateway_id for d in got] == ["gw-a", "gw.b"]  # type: ignore[attr-defined]


async def test_the_last_will_reports_a_broken_link(
    deployment: Deployment, broker: RunningBroker, ra: RaLink
) -> None:
    events = await ra.consumer(Stream.EVENTS, "events")
    gl = link(deployment, broker, "gw-a")
    await gl.__aenter__()
    sock = gl._client._client.socket()
    assert sock is not None
    sock.close()  # the link breaks without a DISCONNECT
    got = await drain(events.fetch, 1)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(gl.__aexit__(None, None, None), 1)
    assert len(got) == 1
    offline = got[0].message  # type: ignore[attr-defined]
    assert offline.gateway_id == "gw-a" and offline.seq == 1 and offline.reason == "connection_lost"


def test_client_ids_are_distinct_for_ids_that_escape_alike() -> None:
    ids = ["gw.b", "gw_b", "gw_db", "gw__b"]
    assert len({mqtt_client_id(i) for i in ids}) == len(ids)
    assert all("." not in mqtt_client_id(i) for i in ids)


def test_subjects_follow_nats_mqtt_mapping() -> None:
    assert subject("gw.b", MessageKind.ACK) == "erab.v1.gw.gw//b.ack"



async def test_pki_revoke_on_the_command_line_cuts_the_gateway_off_at_the_broker(
    deployment: Deployment, broker: RunningBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.cli import main

    async with link(deployment, broker, "gw-a") as gl:
        await gl.publish(telemetry(gl))
        code = await asyncio.to_thread(
            main, ["pki", "revoke", "--home", str(deployment.home), "--gateway", "gw-a",
                   "--reason", "keyCompromise"]
        )
        assert code == 0
        assert "broker: reloaded" in capsys.readouterr().out
        with pytest.raises(aiomqtt.MqttError):
            for _ in range(40):
                await gl.publish(telemetry(gl), timeout_s=2)
                await asyncio.sleep(0.1)
    with pytest.raises(aiomqtt.MqttError):
        async with link(deployment, broker, "gw-a") as again:
            await again.publish(telemetry(again))


class _SwallowingProxy:
    """A TCP relay on loopback between a gateway and the broker that, once ``swallow`` is
    set, stops passing the broker's bytes on (the PUBACKs among them) and keeps the
    connection open: a broker that has gone silent without closing."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.swallow = False
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, down: bool) -> None:
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if not (down and self.swallow):
                        dst.write(data)
                        await dst.drain()

        for task in (asyncio.create_task(pipe(reader, up_writer, False)),
                     asyncio.create_task(pipe(up_reader, writer, True))):  # fmt: skip
            self.tasks.add(task)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()


async def test_a_batch_whose_pubacks_never_come_fails_after_its_timeout(
    deployment: Deployment, broker: RunningBroker
) -> None:
    # the batch's deadline is checked by the links' keepalive task, not a timer per batch
    from erab.bus.gateway_link import KEEPALIVE_CHECK_S

    proxy = _SwallowingProxy(broker.host, broker.mqtt_port)
    port = await proxy.start()
    try:
        gl = GatewayLink("gw-a", "127.0.0.1", port, deployment.gateway_tls("gw-a"),
                         sequence=MemorySequenceCounter(), clock=RealClock())  # fmt: skip
        async with gl:
            first = encode(telemetry(gl))
            assert await gl.publish_many_encoded([("telemetry", first)], timeout_s=5) == [None]
            proxy.swallow = True
            batch = [("telemetry", encode(telemetry(gl))) for _ in range(3)]
            loop = asyncio.get_running_loop()
            started = loop.time()
            results = await gl.publish_many_encoded(batch, timeout_s=1.0)
            waited = loop.time() - started
        assert [str(r) for r in results] == ["Operation timed out"] * 3
        assert all(isinstance(r, aiomqtt.MqttError) for r in results)
        assert 1.0 <= waited <= 1.0 + KEEPALIVE_CHECK_S + 1.0
    finally:
        await proxy.close()
