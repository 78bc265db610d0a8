"""Encoding and checked decoding of bus payloads (sans-IO: bytes and a topic in, a value out).

The RA's ingest runs every uplink message through :class:`UplinkDecoder` before anything
else looks at it.  A bad payload raises :class:`PayloadRejected` with one
:class:`RejectReason`; the decoder counts rejections by reason, so a monitor can see a
misbehaving gateway without the ingest loop ever stopping.  The checks, in order:

1. ``oversized``: more than ``max_bytes`` (checked before parsing anything);
2. ``bad_topic``: not ``erab/v1/gw/{gateway}/{kind}`` (or its NATS subject), or a downlink
   topic;
3. ``not_json``: not one JSON value in UTF-8;
4. ``schema``: JSON of the wrong shape (missing or unknown field, wrong type, out of range);
5. ``wrong_kind``: the body's ``type`` is not the topic's kind;
6. ``wrong_gateway``: the body's ``gateway_id`` is not the topic's gateway (the broker's
   per-gateway permissions tie the topic to the certificate, so the topic is the proof);
7. ``future_time``: a time stamp later than now + ``max_future``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TypeVar

import msgspec

from erab.bus.schema import Message, SignedCommand, UplinkMessage, kind_of, times_of
from erab.bus.topics import MessageKind, TopicError, parse

DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_MAX_FUTURE = timedelta(minutes=5)

_T = TypeVar("_T")
_encoder = msgspec.json.Encoder()
_uplink_decoder = msgspec.json.Decoder(UplinkMessage)
_command_decoder = msgspec.json.Decoder(SignedCommand)


class RejectReason(StrEnum):
    """Why a payload was refused (one per check, in the order they run)."""

    OVERSIZED = "oversized"
    BAD_TOPIC = "bad_topic"
    NOT_JSON = "not_json"
    SCHEMA = "schema"
    WRONG_KIND = "wrong_kind"
    WRONG_GATEWAY = "wrong_gateway"
    FUTURE_TIME = "future_time"


class PayloadRejected(ValueError):
    """A payload failed a check; ``reason`` says which, the message says what was wrong."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


def encode(message: Message) -> bytes:
    """The wire form of a message (compact JSON)."""
    return _encoder.encode(message)


def _parse_json(payload: bytes, decoder: msgspec.json.Decoder[_T]) -> _T:
    try:
        return decoder.decode(payload)
    except msgspec.ValidationError as exc:
        raise PayloadRejected(RejectReason.SCHEMA, str(exc)) from None
    except msgspec.DecodeError as exc:
        raise PayloadRejected(RejectReason.NOT_JSON, str(exc)) from None


@dataclass
class UplinkDecoder:
    """Checks and decodes uplink payloads, counting rejections by reason.

    ``decode(topic, payload, now)`` takes an MQTT topic or a NATS subject.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    max_future: timedelta = DEFAULT_MAX_FUTURE

    def __post_init__(self) -> None:
        self.rejected: Counter[RejectReason] = Counter()
        self.accepted = 0

    def decode(self, topic: str, payload: bytes, now: datetime) -> UplinkMessage:
        try:
            message = decode_uplink(
                topic, payload, now, max_bytes=self.max_bytes, max_future=self.max_future
            )
        except PayloadRejected as exc:
            self.rejected[exc.reason] += 1
            raise
        self.accepted += 1
        return message


def decode_uplink(
    topic: str,
    payload: bytes,
    now: datetime,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_future: timedelta = DEFAULT_MAX_FUTURE,
) -> UplinkMessage:
    """One uplink message, checked against its topic; :class:`PayloadRejected` otherwise."""
    if len(payload) > max_bytes:
        raise PayloadRejected(
            RejectReason.OVERSIZED, f"{len(payload)} bytes on {topic[:120]!r}, limit {max_bytes}"
        )
    try:
        gateway_id, kind = parse(topic)
    except TopicError as exc:
        raise PayloadRejected(RejectReason.BAD_TOPIC, str(exc)) from None
    if kind is MessageKind.COMMAND:
        raise PayloadRejected(RejectReason.BAD_TOPIC, f"{topic!r} is a downlink topic")
    message = _parse_json(payload, _uplink_decoder)
    if kind_of(message) is not kind:
        raise PayloadRejected(
            RejectReason.WRONG_KIND,
            f"body is a {kind_of(message).value!r} message on a {kind.value!r} topic",
        )
    if message.gateway_id != gateway_id:
        raise PayloadRejected(
            RejectReason.WRONG_GATEWAY,
            f"body names gateway {message.gateway_id!r} on the topic of {gateway_id!r}",
        )
    _check_times(message, now, max_future)
    return message


def decode_command(
    topic: str, payload: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> SignedCommand:
    """The gateway's side: a command from its command topic, checked against the topic.

    Only the wrapper is checked here; the envelope inside is for the gateway's verifier.
    """
    if len(payload) > max_bytes:
        raise PayloadRejected(RejectReason.OVERSIZED, f"{len(payload)} bytes, limit {max_bytes}")
    try:
        gateway_id, kind = parse(topic)
    except TopicError as exc:
        raise PayloadRejected(RejectReason.BAD_TOPIC, str(exc)) from None
    if kind is not MessageKind.COMMAND:
        raise PayloadRejected(RejectReason.BAD_TOPIC, f"{topic!r} is not a command topic")
    command = _parse_json(payload, _command_decoder)
    if command.gateway_id != gateway_id:
        raise PayloadRejected(
            RejectReason.WRONG_GATEWAY,
            f"command for {command.gateway_id!r} on the topic of {gateway_id!r}",
        )
    return command


def _check_times(message: UplinkMessage, now: datetime, max_future: timedelta) -> None:
    limit = now + max_future
    for when in times_of(message):
        if when > limit:
            raise PayloadRejected(
                RejectReason.FUTURE_TIME,
                f"time stamp {when.isoformat()} is more than {max_future} after now "
                f"({now.isoformat()}); check the gateway's clock",
            )
