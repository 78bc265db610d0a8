"""The aggregator's records as the store keeps them (values only; rules live in the RA).

Registry records cross the store interface as frozen dataclasses with aware datetimes;
the bulk ingest form (:class:`UplinkBatch`) carries POSIX seconds, because it is built and
written for hundreds of thousands of readings a second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class GatewayStatus(StrEnum):
    ENROLLED = "enrolled"  # registered, never heard from
    ONLINE = "online"
    OFFLINE = "offline"  # last will, or silent past the configured time
    REVOKED = "revoked"  # its certificate was revoked: nothing it sends is stored


# A gateway's lifecycle: (state, trigger) -> next state; anything else is refused.
GATEWAY_TRANSITIONS: dict[tuple[GatewayStatus, str], GatewayStatus] = {
    (GatewayStatus.ENROLLED, "message"): GatewayStatus.ONLINE,
    (GatewayStatus.ONLINE, "message"): GatewayStatus.ONLINE,
    (GatewayStatus.OFFLINE, "message"): GatewayStatus.ONLINE,  # only a message sent later
    (GatewayStatus.ONLINE, "last_will"): GatewayStatus.OFFLINE,
    (GatewayStatus.ONLINE, "silent"): GatewayStatus.OFFLINE,
    (GatewayStatus.ENROLLED, "revoke"): GatewayStatus.REVOKED,
    (GatewayStatus.ONLINE, "revoke"): GatewayStatus.REVOKED,
    (GatewayStatus.OFFLINE, "revoke"): GatewayStatus.REVOKED,
    (GatewayStatus.REVOKED, "enrol"): GatewayStatus.ENROLLED,  # a new certificate
}


@dataclass(frozen=True)
class Customer:
    customer_id: str
    name: str


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    kind: str = "home"
    customer_id: str | None = None
    meter_id: str | None = None  # its route A smart meter, as the head-end names it


@dataclass(frozen=True)
class Gateway:
    gateway_id: str
    site_id: str
    cert_serial: str | None = None
    status: GatewayStatus = GatewayStatus.ENROLLED
    status_since: datetime | None = None
    last_seen: datetime | None = None


@dataclass(frozen=True)
class Resource:
    """One controllable device: identified on its LAN by node id (EPC 0x83) and EOJ."""

    resource_id: str
    site_id: str
    gateway_id: str
    device_class: str
    node_id: str
    eoj: str
    rated_kw: float | None = None
    rated_kwh: float | None = None
    comfort_min_c: float | None = None
    comfort_max_c: float | None = None
    soc_reserve_pct: float | None = None
    soc_max_pct: float | None = None
    availability: tuple[str, ...] = ()  # "HH:MM-HH:MM" windows, JST
    allowed: bool = True


@dataclass(frozen=True)
class Contract:
    contract_id: str
    customer_id: str
    products: tuple[str, ...]
    incentive_yen_per_kwh: float
    baseline_method: str
    incentive_cap_yen: float | None = None  # per customer per event; None: no cap


@dataclass(frozen=True)
class PendingDevice:
    """A device a gateway proposed that is not a registered resource (not allowed)."""

    gateway_id: str
    node_id: str
    eoj: str
    device_id: str
    rated_power_w: float | None
    name: str | None
    first_seen: datetime
    last_seen: datetime


@dataclass(frozen=True)
class Alert:
    alert_id: int
    raised_at: datetime
    kind: str
    message: str
    gateway_id: str | None = None
    resource_id: str | None = None
    cleared_at: datetime | None = None


@dataclass(frozen=True)
class ProposedDevice:
    """One device of a gateway's inventory (its hello), as the store needs it."""

    device_id: str
    node_id: str | None
    eoj: str
    rated_power_w: float | None = None
    name: str | None = None


@dataclass(frozen=True)
class AllowEntry:
    """One device the gateway may control: the RA's name for it, and how to find it."""

    device_id: str
    node_id: str
    eoj: str
    rated_power_w: float | None


# --- bulk ingest ----------------------------------------------------------------------------


@dataclass
class UplinkBatch:
    """Uplink messages to store in one transaction, already decoded and checked.

    ``messages`` holds ``(gateway_id, seq, kind, sent_at_s)`` of every message; the other
    lists refer to a message by its index there, so a duplicate's rows are dropped with it.
    """

    messages: list[tuple[str, int, str, int]] = field(default_factory=list)
    # (message index, device_id, measured_at_s, values, flagged point names)
    samples: list[tuple[int, str, int, Mapping[str, float], frozenset[str]]] = field(
        default_factory=list
    )
    # (message index, meter_id, measured_at_s, power_w, import_kwh, export_kwh)
    meter: list[tuple[int, str, int, float | None, float | None, float | None]] = field(
        default_factory=list
    )
    # (message index, device_id, measured_at_s, online, operating, mode, controlled)
    states: list[tuple[int, str, int, bool, bool | None, str | None, bool]] = field(
        default_factory=list
    )
    # (message index, site id the gateway claims, proposed devices)
    hellos: list[tuple[int, str, list[ProposedDevice]]] = field(default_factory=list)
    # (message index, command_seq, received_at_s, rejected,
    #  [(device_id, outcome, reason, readback, measured_at_s)])
    acks: list[
        tuple[
            int,
            int,
            int,
            str | None,
            list[tuple[str, str, str | None, Mapping[str, float], int | None]],
        ]
    ] = field(default_factory=list)
    # (message index, reason)
    offline: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class BatchOutcome:
    """What one batch write did."""

    stored: int  # messages new to the store
    duplicates: int  # messages already stored (redelivery)
    refused: dict[str, int]  # messages not stored, by reason (unknown or revoked gateway)
    readings: int  # telemetry rows written
    unknown_devices: int  # samples naming no resource of their gateway
    # rows written, for the live state: (resource_key, point name, value, measured_at_s)
    rows: list[tuple[int, str, float, int]]
    allow_lists: dict[str, list[AllowEntry]]  # per gateway that said hello
