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

import asyncio
import contextlib
import ssl
import weakref
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any, Protocol

import aiomqtt
import paho.mqtt.client as paho

from erab.bus.codec import PayloadRejected, decode_command, encode
from erab.bus.schema import Offline, SignedCommand, UplinkMessage, kind_of
from erab.bus.topics import MessageKind, mqtt_client_id, topic
from erab.clock import Clock


class SequenceSource(Protocol):
    """Hands out the next uplink sequence number of a gateway (never reused)."""

    def next(self, gateway_id: str) -> int: ...


KEEPALIVE_CHECK_S = 5.0
# per event loop: its clients and the task that runs their keepalives
_KEEPALIVES: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, tuple[set[_LoopClient], asyncio.Task[None] | None]
] = weakref.WeakKeyDictionary()


class _LoopClient(aiomqtt.Client):
    """aiomqtt's client with two costs taken out that add up when a thousand gateways share
    one event loop (``erab gateway fleet``); what goes over the wire is the same.

    - Writing: aiomqtt registers a writer for every packet paho queues, through
      ``call_soon_threadsafe`` (a wake-up of the loop's self-pipe) and epoll; here, on the
      loop's own thread, the queued packets are written on the next turn of the loop (all
      packets queued meanwhile in one go), and a writer is registered only when the socket
      has no room.
    - Keepalive: aiomqtt runs paho's ``loop_misc`` (which sends PINGREQ when the keepalive
      is due, MQTT 3.1.1 §3.1.2.10) every second in a task per client; here one task per
      event loop does it for every client, each a quarter keepalive after its last check
      (a PINGREQ then goes out at most 1.25 keepalives after the last packet, inside the
      1.5 the broker waits).
    - Publishing a batch (:meth:`publish_many`): every PUBLISH handed to paho before the
      first PUBACK is awaited, one future per message; the batch's timeout is checked by
      that same task every ``KEEPALIVE_CHECK_S`` (no timer per batch: a thousand links
      publishing every poll would fill the loop's timer heap), so a PUBACK that never
      comes fails its batch between ``timeout_s`` and ``timeout_s + KEEPALIVE_CHECK_S``.

    They override aiomqtt internals; should those be renamed, aiomqtt's own behaviour comes
    back (:meth:`publish_many` falls back to one ``publish`` at a time), slower but the same
    on the wire.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._write_scheduled = False
        self._acks: dict[int, asyncio.Future[None]] = {}
        # the last PUBACK awaited of each batch in flight, with its loop-time deadline
        self._batches: dict[asyncio.Future[None], float] = {}
        self._misc_due = 0.0  # loop time of the next keepalive check

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:  # paho's connect, in an executor thread
            on_loop = False
        if not on_loop:
            super()._on_socket_register_write(client, userdata, sock)
            return
        if not self._write_scheduled:
            self._write_scheduled = True
            self._loop.call_soon(self._write_now, client, userdata, sock)

    def _write_now(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._write_scheduled = False
        try:
            client.loop_write()
        except Exception as exc:  # a broken connection, as aiomqtt handles it
            if not self._disconnected.done():
                self._disconnected.set_exception(exc)
            return
        if client.want_write() and sock.fileno() >= 0:  # no room: wait until there is
            super()._on_socket_register_write(client, userdata, sock)

    async def _misc_loop(self) -> None:
        loop = asyncio.get_running_loop()
        clients = _ensure_driver(loop)
        clients.add(self)
        try:
            await loop.create_future()  # until aiomqtt cancels it when the socket closes
        finally:
            clients.discard(self)
            for waiter in self._batches:  # the link is gone: no PUBACK will come
                if not waiter.done():
                    waiter.set_exception(TimeoutError())

    def _check(self, now: float) -> bool:
        """The keepalive task's turn: end the batches past their deadline and, when due,
        run paho's keepalive check; False when the connection is gone."""
        for waiter, deadline in list(self._batches.items()):
            if deadline <= now and not waiter.done():
                waiter.set_exception(TimeoutError())
        if now < self._misc_due:
            return True
        keepalive = getattr(self._client, "_keepalive", 60) or 60
        self._misc_due = now + max(KEEPALIVE_CHECK_S, keepalive / 4)
        return bool(self._client.loop_misc() == paho.MQTT_ERR_SUCCESS)

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, *args: Any) -> None:
        waiter = self._acks.pop(mid, None)
        if waiter is None:
            super()._on_publish(client, userdata, mid, *args)
        elif not waiter.done():
            waiter.set_result(None)

    async def publish_many(
        self, messages: Sequence[tuple[str, bytes]], *, timeout_s: float
    ) -> list[BaseException | None]:
        """Publish ``(topic, payload)`` QoS 1, all queued before any PUBACK is awaited; per
        message None (the broker has it) or what went wrong, in order."""
        paho_client = getattr(self, "_client", None)
        if not isinstance(paho_client, paho.Client) or not hasattr(self, "_pending_publishes"):
            results: list[BaseException | None] = []
            for name, payload in messages:  # aiomqtt's own way, one by one
                try:
                    await self.publish(name, payload, qos=1, timeout=timeout_s)
                    results.append(None)
                except aiomqtt.MqttError as exc:
                    results.append(exc)
            return results
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None] | BaseException] = []
        last: asyncio.Future[None] | None = None
        for name, payload in messages:
            info = paho_client.publish(name, payload, qos=1)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                waiters.append(aiomqtt.MqttCodeError(info.rc, "Could not publish message"))
                continue
            waiter = loop.create_future()
            if info.is_published():
                waiter.set_result(None)
            else:
                self._acks[info.mid] = waiter
                last = waiter
            waiters.append(waiter)
        if last is not None:
            # PUBACKs come in the order of the PUBLISHes (MQTT 3.1.1 §4.6): the last one
            # answers for all; the keepalive task ends the wait past the deadline
            self._batches[last] = loop.time() + timeout_s
            _ensure_driver(loop)
            try:
                with contextlib.suppress(TimeoutError):
                    await last
            finally:
                self._batches.pop(last, None)
        out: list[BaseException | None] = []
        for w in waiters:
            if isinstance(w, BaseException):
                out.append(w)
            elif w.done():
                failure = w.exception()
                if isinstance(failure, TimeoutError):  # past the deadline (_check)
                    failure = aiomqtt.MqttError("Operation timed out")
                out.append(failure)
            else:
                w.cancel()
                out.append(aiomqtt.MqttError("Operation timed out"))
        for mid in [m for m, w in self._acks.items() if w.done()]:
            del self._acks[mid]
        return out


def _ensure_driver(loop: asyncio.AbstractEventLoop) -> set[_LoopClient]:
    """The clients of ``loop``, with the task that drives them running."""
    clients, driver = _KEEPALIVES.get(loop, (set(), None))
    if driver is None or driver.done():
        driver = loop.create_task(_drive_keepalives(clients), name="mqtt keepalives")
        _KEEPALIVES[loop] = (clients, driver)
    return clients


async def _drive_keepalives(clients: set[_LoopClient]) -> None:
    """Every ``KEEPALIVE_CHECK_S`` while clients are left: each client's batch deadlines,
    and paho's ``loop_misc`` for those whose keepalive check is due."""
    loop = asyncio.get_running_loop()
    while clients:
        await asyncio.sleep(KEEPALIVE_CHECK_S)
        now = loop.time()
        for client in list(clients):
            if not client._check(now):
                clients.discard(client)


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
        self._client = _LoopClient(
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
        self._topics = {k.value: topic(gateway_id, k) for k in MessageKind}

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

    async def publish_encoded(self, kind: str, payload: bytes, *, timeout_s: float = 10.0) -> None:
        """Publish a message already encoded (``kind`` its :class:`MessageKind` value), e.g.
        as the outbox stored it after checking it was this gateway's; QoS 1."""
        try:
            name = self._topics[kind]
        except KeyError:
            raise ValueError(f"{kind!r} is not a message kind") from None
        await self._client.publish(name, payload, qos=1, timeout=timeout_s)

    async def publish_many_encoded(
        self, messages: Sequence[tuple[str, bytes]], *, timeout_s: float = 10.0
    ) -> list[BaseException | None]:
        """:meth:`publish_encoded` for several ``(kind, payload)``, all handed to the broker
        before the first PUBACK is awaited (one connection keeps them in order, MQTT 3.1.1
        §4.6); per message None (published) or the error, in order."""
        try:
            named = [(self._topics[kind], payload) for kind, payload in messages]
        except KeyError as exc:
            raise ValueError(f"{exc.args[0]!r} is not a message kind") from None
        return await self._client.publish_many(named, timeout_s=timeout_s)

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
