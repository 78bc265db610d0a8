"""erab.bus: the gateway ⇄ RA link.

- Topics (:mod:`erab.bus.topics`): ``erab/v1/gw/{gateway}/{kind}``, and their NATS subjects.
- Payloads (:mod:`erab.bus.schema`, the one schema): :class:`Hello`, :class:`TelemetryBatch`,
  :class:`MeterReading`, :class:`State`, :class:`Heartbeat`, :class:`Offline` (last will),
  :class:`SignedCommand`, :class:`Acknowledgement`; :func:`encode`, :class:`UplinkDecoder`
  (checks, counts rejections by :class:`RejectReason`), :class:`SequenceDedup`.
- The gateway's MQTT client: :class:`GatewayLink`.  The RA's NATS/JetStream side:
  :class:`RaLink`.
- The embedded broker (nats-server): :func:`prepare`, :class:`BrokerProcess`,
  :func:`regenerate_and_reload`, :func:`status`.  Mosquitto instead, facing the gateways
  (:mod:`erab.bus.mosquitto`): :func:`prepare_mosquitto`, :class:`MosquittoProcess`.

docs/bus.md describes all of it.
"""

from erab.bus.broker import (
    BrokerError,
    BrokerHome,
    BrokerProcess,
    BrokerStatus,
    Ports,
    RunningBroker,
    prepare,
    regenerate_and_reload,
    status,
)
from erab.bus.codec import (
    PayloadRejected,
    RejectReason,
    UplinkDecoder,
    decode_command,
    decode_uplink,
    encode,
)
from erab.bus.dedup import SequenceDedup
from erab.bus.gateway_link import GatewayLink
from erab.bus.mosquitto import MosquittoProcess, prepare_mosquitto
from erab.bus.ra import Delivery, RaLink, Stream, UplinkConsumer
from erab.bus.schema import (
    Acknowledgement,
    Device,
    DeviceOutcome,
    DeviceState,
    Heartbeat,
    Hello,
    MeterReading,
    Offline,
    Sample,
    SignedCommand,
    State,
    TelemetryBatch,
    UplinkMessage,
)
from erab.bus.topics import MessageKind, TopicError

__all__ = [
    "Acknowledgement",
    "BrokerError",
    "BrokerHome",
    "BrokerProcess",
    "BrokerStatus",
    "Delivery",
    "Device",
    "DeviceOutcome",
    "DeviceState",
    "GatewayLink",
    "Heartbeat",
    "Hello",
    "MessageKind",
    "MeterReading",
    "MosquittoProcess",
    "Offline",
    "PayloadRejected",
    "Ports",
    "RaLink",
    "RejectReason",
    "RunningBroker",
    "Sample",
    "SequenceDedup",
    "SignedCommand",
    "State",
    "Stream",
    "TelemetryBatch",
    "TopicError",
    "UplinkConsumer",
    "UplinkDecoder",
    "UplinkMessage",
    "decode_command",
    "decode_uplink",
    "encode",
    "prepare",
    "prepare_mosquitto",
    "regenerate_and_reload",
    "status",
]
