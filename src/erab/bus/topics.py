"""Versioned topics of the gateway ⇄ RA link, and their NATS subjects.

Every gateway owns one prefix, ``erab/v1/gw/{gateway}/``: it publishes its uplink kinds
under it and subscribes to exactly one command topic.  Gateways speak MQTT (``/``-separated
topics); the RA speaks native NATS (``.``-separated subjects).  nats-server converts between
the two: ``/`` becomes ``.`` and a ``.`` inside a level becomes ``//`` (a gateway id may
contain dots).  Pure functions, no I/O.
"""

from __future__ import annotations

import re
from enum import StrEnum

VERSION = "v1"
MQTT_PREFIX = f"erab/{VERSION}/gw"
SUBJECT_PREFIX = f"erab.{VERSION}.gw"

# The same rule as erab.security.identity.check_id (ids are also certificate names).
_GATEWAY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class TopicError(ValueError):
    """A topic or subject that is not one of the link's topics."""


class MessageKind(StrEnum):
    """The last topic level: what a message is."""

    HELLO = "hello"  # inventory, on every connect
    TELEMETRY = "telemetry"  # a batch of device samples
    METER = "meter"  # a smart-meter reading (route B)
    STATE = "state"  # device states (online, operating, controlled)
    HEARTBEAT = "heartbeat"  # liveness and uplink backlog
    OFFLINE = "offline"  # the MQTT last will
    ACK = "ack"  # outcome of one command
    COMMAND = "cmd"  # the only downlink kind: a signed command


UPLINK_KINDS: tuple[MessageKind, ...] = tuple(
    k for k in MessageKind if k is not MessageKind.COMMAND
)


def check_gateway_id(gateway_id: str) -> str:
    if not isinstance(gateway_id, str) or not _GATEWAY_ID.match(gateway_id):
        raise TopicError(
            f"invalid gateway id {gateway_id!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return gateway_id


def topic(gateway_id: str, kind: MessageKind) -> str:
    """The MQTT topic, e.g. ``erab/v1/gw/gw-0001/telemetry``."""
    return f"{MQTT_PREFIX}/{check_gateway_id(gateway_id)}/{kind.value}"


def subject_token(gateway_id: str) -> str:
    """The gateway id as one NATS subject token (nats-server's MQTT rule: ``.`` → ``//``)."""
    return check_gateway_id(gateway_id).replace(".", "//")


def subject(gateway_id: str, kind: MessageKind) -> str:
    """The NATS subject of a topic, e.g. ``erab.v1.gw.gw-0001.telemetry``."""
    return f"{SUBJECT_PREFIX}.{subject_token(gateway_id)}.{kind.value}"


def subject_filter(kind: MessageKind) -> str:
    """A subject matching ``kind`` from every gateway (for streams and consumers)."""
    return f"{SUBJECT_PREFIX}.*.{kind.value}"


def parse(name: str) -> tuple[str, MessageKind]:
    """(gateway id, kind) of an MQTT topic or a NATS subject; :class:`TopicError` otherwise."""
    if not isinstance(name, str):
        raise TopicError(f"topic must be text, got {type(name).__name__}")
    if name.startswith(MQTT_PREFIX + "/"):
        parts = name[len(MQTT_PREFIX) + 1 :].split("/")
        gateway_id = parts[0]
    elif name.startswith(SUBJECT_PREFIX + "."):
        parts = name[len(SUBJECT_PREFIX) + 1 :].split(".")
        gateway_id = parts[0].replace("//", ".")
    else:
        raise TopicError(f"topic {name[:120]!r} is not under {MQTT_PREFIX}/ or {SUBJECT_PREFIX}.")
    if len(parts) != 2:
        raise TopicError(f"topic {name[:120]!r} must be <prefix>/<gateway>/<kind>")
    try:
        kind = MessageKind(parts[1])
    except ValueError:
        raise TopicError(
            f"topic {name[:120]!r}: unknown kind {parts[1][:40]!r}; known: "
            + ", ".join(k.value for k in MessageKind)
        ) from None
    return check_gateway_id(gateway_id), kind


def mqtt_client_id(gateway_id: str) -> str:
    """An MQTT client id for a gateway (nats-server refuses ``.`` in client ids).

    Escaping is one-to-one (``_`` → ``__``, ``.`` → ``_d``), so two gateways never share one.
    """
    return "erab-" + check_gateway_id(gateway_id).replace("_", "__").replace(".", "_d")
