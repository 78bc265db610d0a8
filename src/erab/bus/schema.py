"""The one schema of the gateway ⇄ RA link: every payload as a msgspec Struct.

JSON on the wire, UTF-8, one object per message, its ``type`` naming the kind (the same word
as the topic's last level).  Uplink messages carry the gateway's id, its uplink sequence
number ``seq`` (one counter per gateway over all uplink kinds, from 1, kept across restarts, so the
RA can drop duplicates of at-least-once delivery) and ``sent_at``; every measurement carries
its own ``measured_at``.  Times are RFC 3339 with a zone (``Z``); power in W, energy in kWh.
Unknown fields are refused: a new field means a new version on the RA first.

docs/bus.md shows an example of each.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from erab.bus.topics import MessageKind

GatewayId = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
DeviceId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Sequence = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]  # counters start at 1
Time = Annotated[datetime, msgspec.Meta(tz=True)]
ShortText = Annotated[str, msgspec.Meta(max_length=200)]
PointName = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Values = Annotated[dict[PointName, float], msgspec.Meta(max_length=64)]

MAX_ITEMS = 10_000  # devices per inventory, samples per batch, outcomes per ack


class _Message(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type", kw_only=True
):
    """Fields every message has."""

    v: Literal[1] = 1


class _Uplink(_Message, frozen=True, kw_only=True):
    gateway_id: GatewayId
    seq: Sequence
    sent_at: Time


# --- hello / inventory -----------------------------------------------------------------------


class Device(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ECHONET Lite device object the gateway controls (its allow-list entry)."""

    device_id: DeviceId
    eoj: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{6}$")]  # class group, class, instance
    node_id: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{2,40}$")] | None = None  # EPC 0x83
    maker_code: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{6}$")] | None = None  # EPC 0x8A
    rated_power_w: Annotated[float, msgspec.Meta(ge=0)] | None = None
    name: ShortText | None = None


class Hello(_Uplink, frozen=True, kw_only=True, tag=MessageKind.HELLO.value):
    """Sent on every connect: who the gateway is and which devices it has."""

    site_id: GatewayId
    software: ShortText
    devices: Annotated[list[Device], msgspec.Meta(max_length=MAX_ITEMS)]


# --- telemetry ---------------------------------------------------------------------------------


class Sample(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Values of one device at one time, named with their unit (``power_w``, ``soc_pct``)."""

    device_id: DeviceId
    measured_at: Time
    values: Values


class TelemetryBatch(_Uplink, frozen=True, kw_only=True, tag=MessageKind.TELEMETRY.value):
    samples: Annotated[list[Sample], msgspec.Meta(min_length=1, max_length=MAX_ITEMS)]


# --- smart meter (route B) --------------------------------------------------------------------


class MeterReading(_Uplink, frozen=True, kw_only=True, tag=MessageKind.METER.value):
    """A reading of the site's smart meter (0x0288), by route B or on the LAN.

    Energies are in kWh: the meter's counts times its coefficient (EPC 0xD3) and unit
    (EPC 0xE1).  The 30-minute fixed-time readings (``fixed_*``) are sent when the meter has
    a new one, else left out.
    """

    meter_id: DeviceId
    measured_at: Time
    power_w: float | None = None  # instantaneous, import positive (EPC 0xE7)
    import_kwh: Annotated[float, msgspec.Meta(ge=0)] | None = None  # cumulative (EPC 0xE0)
    export_kwh: Annotated[float, msgspec.Meta(ge=0)] | None = None  # cumulative (EPC 0xE3)
    fixed_at: Time | None = None  # the 30-minute point of the fixed-time readings
    fixed_import_kwh: Annotated[float, msgspec.Meta(ge=0)] | None = None  # at it (EPC 0xEA)
    fixed_export_kwh: Annotated[float, msgspec.Meta(ge=0)] | None = None  # at it (EPC 0xEB)


# --- state -------------------------------------------------------------------------------------


class DeviceState(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    device_id: DeviceId
    measured_at: Time
    online: bool  # answers on the LAN
    operating: bool | None = None  # EPC 0x80
    mode: ShortText | None = None  # e.g. "charging", "cooling"
    controlled: bool = False  # an RA command is in force


class State(_Uplink, frozen=True, kw_only=True, tag=MessageKind.STATE.value):
    devices: Annotated[list[DeviceState], msgspec.Meta(max_length=MAX_ITEMS)]


# --- heartbeat and last will ---------------------------------------------------------------------


class Heartbeat(_Uplink, frozen=True, kw_only=True, tag=MessageKind.HEARTBEAT.value):
    uptime_s: Annotated[float, msgspec.Meta(ge=0)]
    backlog: Annotated[int, msgspec.Meta(ge=0)] = 0  # uplink messages stored, not yet sent
    dropped_total: Annotated[int, msgspec.Meta(ge=0)] = 0  # outbox drops past its bound, ever
    last_command_seq: Sequence | None = None  # last envelope sequence accepted


class Offline(_Uplink, frozen=True, kw_only=True, tag=MessageKind.OFFLINE.value):
    """The MQTT last will: set at connect, published by the broker if the link breaks.

    Its ``seq`` is reserved when the gateway connects; ``sent_at`` is the connect time.
    """

    connected_at: Time
    reason: Literal["connection_lost", "shutdown"] = "connection_lost"


# --- commands and acknowledgements ----------------------------------------------------------------


class SignedCommand(_Message, frozen=True, kw_only=True, tag=MessageKind.COMMAND.value):
    """A command from the RA: the signed envelope, byte for byte as the signer made it.

    The gateway verifies ``envelope`` with :class:`erab.security.EnvelopeVerifier`; the
    bus only carries it (the signature, not the broker, proves where it came from).
    """

    gateway_id: GatewayId
    sent_at: Time
    envelope: msgspec.Raw


Outcome = Literal["applied", "clipped", "refused", "not_answering"]


class DeviceOutcome(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What one device did with a command, and what the gateway read back afterwards."""

    device_id: DeviceId
    outcome: Outcome
    reason: ShortText | None = None  # why refused or clipped (e.g. "above rated power")
    readback: Values = msgspec.field(default_factory=dict)
    measured_at: Time | None = None  # when read back


class Acknowledgement(_Uplink, frozen=True, kw_only=True, tag=MessageKind.ACK.value):
    """The gateway's answer to one command (by the envelope's sequence number).

    ``rejected`` is set (an :class:`erab.security.RejectReason` value such as
    ``bad_signature`` or ``expired``) when the envelope itself was refused; then no device
    was touched and ``outcomes`` is empty.
    """

    command_seq: Sequence
    received_at: Time
    rejected: ShortText | None = None
    outcomes: Annotated[list[DeviceOutcome], msgspec.Meta(max_length=MAX_ITEMS)] = msgspec.field(
        default_factory=list
    )


UplinkMessage = (
    Hello | TelemetryBatch | MeterReading | State | Heartbeat | Offline | Acknowledgement
)
Message = UplinkMessage | SignedCommand

KIND_OF: dict[type[_Message], MessageKind] = {
    Hello: MessageKind.HELLO,
    TelemetryBatch: MessageKind.TELEMETRY,
    MeterReading: MessageKind.METER,
    State: MessageKind.STATE,
    Heartbeat: MessageKind.HEARTBEAT,
    Offline: MessageKind.OFFLINE,
    Acknowledgement: MessageKind.ACK,
    SignedCommand: MessageKind.COMMAND,
}


def kind_of(message: Message) -> MessageKind:
    return KIND_OF[type(message)]


def times_of(message: Message) -> list[datetime]:
    """Every time stamp a message carries (for the future-time check)."""
    found = [message.sent_at]
    if isinstance(message, TelemetryBatch):
        found += [s.measured_at for s in message.samples]
    elif isinstance(message, MeterReading):
        found.append(message.measured_at)
        if message.fixed_at is not None:
            found.append(message.fixed_at)
    elif isinstance(message, State):
        found += [d.measured_at for d in message.devices]
    elif isinstance(message, Offline):
        found.append(message.connected_at)
    elif isinstance(message, Acknowledgement):
        found.append(message.received_at)
        found += [o.measured_at for o in message.outcomes if o.measured_at is not None]
    return found
