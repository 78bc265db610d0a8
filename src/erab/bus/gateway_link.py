"""The gateway's side of the link: MQTT 3.1.1 over mutual TLS (aiomqtt, on paho-mqtt).

Standard MQTT only, so any broker with client-certificate authentication and per-user topic
ACLs serves it (nats-server by default, Mosquitto as documented).  On connect the link sets
its last will (an :class:`~erab.bus.schema.Offline` message with a sequence number reserved
then) and subscribes, QoS 1, to its own command topic; uplink messages go out QoS 1.

The caller numbers its messages with :meth:`GatewayLink.next_seq` (a counter that survives
restarts, e.g. :class:`erab.security.FileSequenceCounter`) and builds them from
:mod:`erab.bus.schema`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Protocol

import aiomqtt

from erab.bus.codec import PayloadRejected, decode_command, encode
from erab.bus.schema import Offline, SignedCommand, UplinkMessage, kind_of
from erab.bus.topics import MessageKind, mqtt_client_id, topic
from erab.clock import Clock


class SequenceSource(Protocol):
    """Hands out the next uplink sequence number of a gateway (never reused)."""

    def next(self, gateway_id: str) -> int: ...


class GatewayLink:
    """One gateway's MQTT session with the broker; use as ``async with``."""

    def __init__(
        self,
        gateway_id: str,
        host: str,
        port: int,
        tls_context: ssl.SSLContext,
        *,
        sequence: SequenceSource,
        clock: Clock,
        keepalive_s: int = 30,
        clean_session: bool = False,
    ) -> None:
        self.gateway_id = gateway_id
        self.sequence = sequence
        self.clock = clock
        self.command_topic = topic(gateway_id, MessageKind.COMMAND)
        self.rejected: list[PayloadRejected] = []
        connected_at = clock.now()
        will = Offline(
            gateway_id=gateway_id,
            seq=self.next_seq(),
            sent_at=connected_at,
            connected_at=connected_at,
        )
        self._client = aiomqtt.Client(
            host,
            port,
            identifier=mqtt_client_id(gateway_id),
            tls_context=tls_context,
            keepalive=keepalive_s,
            clean_session=clean_session,
            protocol=aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(
                topic(gateway_id, MessageKind.OFFLINE), encode(will), qos=1, retain=False
            ),
        )

    def next_seq(self) -> int:
        return self.sequence.next(self.gateway_id)

    async def __aenter__(self) -> GatewayLink:
        await self._client.__aenter__()
        await self._client.subscribe(self.command_topic, qos=1)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)

    async def publish(self, message: UplinkMessage, *, timeout_s: float = 10.0) -> None:
        """Publish QoS 1 under this gateway's prefix (returns once the broker has it)."""
        if message.gateway_id != self.gateway_id:
            raise ValueError(
                f"message names gateway {message.gateway_id!r}, this link is {self.gateway_id!r}"
            )
        await self._client.publish(
            topic(self.gateway_id, kind_of(message)), encode(message), qos=1, timeout=timeout_s
        )

    async def commands(self) -> AsyncIterator[SignedCommand]:
        """Commands as they arrive; a malformed one is kept in ``rejected`` and skipped."""
        async for received in self._client.messages:
            payload = received.payload
            if not isinstance(payload, bytes | bytearray):
                continue
            try:
                yield decode_command(str(received.topic), bytes(payload))
            except PayloadRejected as exc:
                self.rejected.append(exc)
