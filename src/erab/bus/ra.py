"""The RA's side of the link: native NATS with JetStream (nats-py), mutual TLS.

Uplink subjects land in three durable streams, so an RA restart loses nothing:

| stream | subjects (every gateway) |
| --- | --- |
| ``ERAB_TELEMETRY`` | ``erab.v1.gw.*.telemetry``, ``.meter``, ``.state``, ``.heartbeat`` |
| ``ERAB_ACKS`` | ``erab.v1.gw.*.ack`` |
| ``ERAB_EVENTS`` | ``erab.v1.gw.*.hello``, ``.offline`` |

The RA reads a stream through a durable pull consumer; several RA worker processes that
open the same durable name share it (each message goes to one of them).  Every message is
checked by :class:`~erab.bus.codec.UplinkDecoder`: a bad one is counted and terminated (never
redelivered), a good one is handed over and acknowledged only when the caller says so, so
nothing of a good message is lost.  Commands go out on core NATS to the gateway's command
subject (nats-server delivers them to the MQTT subscriber).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import msgspec
import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from erab.bus.codec import PayloadRejected, UplinkDecoder, encode
from erab.bus.dedup import SequenceDedup
from erab.bus.schema import SignedCommand, UplinkMessage
from erab.bus.topics import MessageKind, subject, subject_filter
from erab.clock import Clock, RealClock
from erab.security import client_context

log = logging.getLogger(__name__)


class Stream(StrEnum):
    TELEMETRY = "ERAB_TELEMETRY"
    ACKS = "ERAB_ACKS"
    EVENTS = "ERAB_EVENTS"


STREAM_KINDS: dict[Stream, tuple[MessageKind, ...]] = {
    Stream.TELEMETRY: (
        MessageKind.TELEMETRY,
        MessageKind.METER,
        MessageKind.STATE,
        MessageKind.HEARTBEAT,
    ),
    Stream.ACKS: (MessageKind.ACK,),
    Stream.EVENTS: (MessageKind.HELLO, MessageKind.OFFLINE),
}


def stream_configs(replicas: int = 1, max_age_s: float = 7 * 86400) -> list[StreamConfig]:
    """The three streams: file storage, ``replicas`` copies (3 in a production cluster)."""
    return [
        StreamConfig(
            name=stream.value,
            subjects=[subject_filter(kind) for kind in kinds],
            storage=StorageType.FILE,
            num_replicas=replicas,
            max_age=max_age_s,
        )
        for stream, kinds in STREAM_KINDS.items()
    ]


@dataclass
class Delivery:
    """One good uplink message from a stream; call :meth:`ack` once it is stored."""

    subject: str
    message: UplinkMessage
    duplicate: bool  # already admitted once (at-least-once redelivery); store nothing
    _msg: Msg

    async def ack(self) -> None:
        await self._msg.ack()

    async def nak(self, delay_s: float | None = None) -> None:
        """Give it back for redelivery (to this or another worker)."""
        await self._msg.nak(delay=delay_s)


class UplinkConsumer:
    """A durable pull consumer on one stream, with checked decoding and dedup."""

    def __init__(
        self,
        subscription: JetStreamContext.PullSubscription,
        decoder: UplinkDecoder,
        dedup: SequenceDedup | None,
        clock: Clock,
    ) -> None:
        self._sub = subscription
        self.decoder = decoder
        self.dedup = dedup
        self.clock = clock

    async def fetch(self, batch: int = 100, timeout: float = 1.0) -> list[Delivery]:
        """Up to ``batch`` good messages (fewer, or none, after ``timeout`` seconds).

        Rejected payloads are counted in ``decoder.rejected`` and terminated.
        """
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout)
        except (NatsTimeout, TimeoutError):
            # nats-py ends an empty pull with its own timeout, or at times with asyncio's
            return []
        out: list[Delivery] = []
        for msg in msgs:
            try:
                message = self.decoder.decode(msg.subject, msg.data, self.clock.now())
            except PayloadRejected:
                await msg.term()
                continue
            duplicate = self.dedup is not None and not self.dedup.admit(
                message.gateway_id, message.seq
            )
            out.append(Delivery(msg.subject, message, duplicate, msg))
        return out

    async def unsubscribe(self) -> None:
        await self._sub.unsubscribe()


class LinkErrors:
    """nats-py's error callback for the RA's link: what the client reports (it reconnects by
    itself) goes to the log as one line, without nats-py's default traceback.

    Closing a TLS link races with what the server still sends (a pull request's timeout
    status, a PING): the close-notify alert crosses it, and the close raises
    ``ssl.SSLError: APPLICATION_DATA_AFTER_CLOSE_NOTIFY`` or a reset.  Nothing is lost (the
    link flushed before closing), so while ``closing`` such an error is a debug line."""

    _CLOSE_RACE = (ssl.SSLError, ConnectionResetError, BrokenPipeError)

    def __init__(self) -> None:
        self.closing = False

    async def report(self, exc: Exception) -> None:
        if self.closing and isinstance(exc, self._CLOSE_RACE):
            log.debug("the broker link closed with %s (harmless at shutdown)", exc)
        else:
            log.warning("broker link: %s: %s", type(exc).__name__, exc)


class RaLink:
    """The RA's connection to the broker.  Open with :meth:`connect`; close with :meth:`close`."""

    def __init__(self, client: Client, clock: Clock, errors: LinkErrors | None = None) -> None:
        self.client = client
        self.js = client.jetstream()
        self.clock = clock
        self.errors = errors or LinkErrors()

    @classmethod
    async def connect(
        cls,
        servers: str | Sequence[str],
        *,
        ca_bundle: Path,
        cert_file: Path,
        key_file: Path,
        clock: Clock | None = None,
        name: str = "erab-ra",
    ) -> RaLink:
        """Connect with the RA's client certificate (``erab pki`` service ``ra``).

        ``servers``: one URL or a cluster's seed list (``tls://host:4222``).
        """
        context: ssl.SSLContext = client_context(
            ca_bundle, cert_file=cert_file, key_file=key_file
        )
        urls = [servers] if isinstance(servers, str) else list(servers)
        errors = LinkErrors()
        client = await nats.connect(
            servers=urls,
            tls=context,
            name=name,
            connect_timeout=5,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            error_cb=errors.report,  # nats-py wants a coroutine function
        )
        return cls(client, clock or RealClock(), errors)

    async def ensure_streams(self, replicas: int = 1) -> None:
        """Create the streams, or bring existing ones to this configuration."""
        for config in stream_configs(replicas):
            try:
                await self.js.add_stream(config)
            except BadRequestError:
                await self.js.update_stream(config)

    async def consumer(
        self,
        stream: Stream,
        durable: str,
        *,
        decoder: UplinkDecoder | None = None,
        dedup: SequenceDedup | None = None,
        ack_wait_s: float = 30.0,
    ) -> UplinkConsumer:
        """A durable consumer; every process that names the same ``durable`` shares it."""
        filters = [subject_filter(kind) for kind in STREAM_KINDS[stream]]
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_s,
            filter_subjects=filters,
        )
        sub = await self.js.pull_subscribe(
            filters[0],
            durable=durable,
            stream=stream.value,
            config=config,
        )
        return UplinkConsumer(sub, decoder or UplinkDecoder(), dedup, self.clock)

    async def send_command(self, gateway_id: str, envelope_wire: bytes) -> None:
        """Publish a signed envelope (``EnvelopeSigner.sign`` output) to one gateway."""
        command = SignedCommand(
            gateway_id=gateway_id, sent_at=self.clock.now(), envelope=_raw(envelope_wire)
        )
        await self.client.publish(subject(gateway_id, MessageKind.COMMAND), encode(command))
        await self.client.flush()

    async def close(self) -> None:
        """Flush what was sent (acknowledgements included) and close."""
        if self.client.is_connected:
            await self.client.flush()
        self.errors.closing = True
        await self.client.close()


def _raw(wire: bytes) -> msgspec.Raw:
    # Check it is JSON now (the gateway would refuse it anyway), keep its bytes exactly.
    msgspec.json.decode(wire)
    return msgspec.Raw(wire)
