"""The store interface: what erab persists, independent of the database behind it.

Every component that keeps data (the route A head-end now, the aggregator's telemetry and
settlement later) talks to a :class:`Store`.  The embedded default is SQLite
(:class:`~erab.store.sqlite.SqliteStore`); the PostgreSQL store
(:class:`~erab.store.postgres.PostgresStore`) implements the same methods with the same schema
(timestamps as POSIX seconds, readings keyed ``(meter_id, slot_end)``).

Times cross this interface as timezone-aware datetimes; a store keeps them as UTC POSIX
seconds and gives them back in JST, the metering time zone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from erab.store.records import (
    Alert,
    AllowEntry,
    BatchOutcome,
    Contract,
    Customer,
    Gateway,
    GatewayStatus,
    PendingDevice,
    ProposedDevice,
    Resource,
    Site,
    UplinkBatch,
)


class StoreError(Exception):
    """A store could not be opened or used; the message says which and why."""


class StoreNotFound(StoreError):
    """The store asked for does not exist (and was not to be created)."""


@dataclass(frozen=True)
class MeterReading:
    """Cumulative energy of one meter at the end of one 30-minute slot.

    ``import_kwh`` / ``export_kwh`` are the meter's cumulative registers (normal and reverse
    direction) at ``slot_end``; None where the meter gave no value.  ``source`` says how the
    value arrived: "collect" (scheduled route A collection), "reread" (gap filling) or
    "on-demand".
    """

    meter_id: str
    slot_end: datetime
    import_kwh: float | None
    export_kwh: float | None
    read_at: datetime
    source: str = "collect"


@dataclass(frozen=True)
class MeterInfo:
    """A meter known to the store: ``wrap_kwh`` is where its registers roll over to zero
    (10^digits × coefficient × unit), needed to difference cumulative readings."""

    meter_id: str
    wrap_kwh: float | None = None


@dataclass(frozen=True)
class MeterAction:
    """A remote action on a meter (read, disconnect, connect, configure) and its outcome."""

    meter_id: str
    action: str
    requested_at: datetime
    result: str  # "ok" or "failed"
    params: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""
    actor: str = "operator"
    action_id: int | None = None


FloatArray = npt.NDArray[np.float64]


class Store(Protocol):
    """Persistence for erab (meter readings, meters, remote actions, settings)."""

    # meters
    def register_meters(self, meters: Iterable[MeterInfo]) -> int: ...

    def meters(self) -> list[MeterInfo]: ...

    # readings
    def upsert_readings(self, readings: Iterable[MeterReading]) -> int:
        """Insert or replace by (meter_id, slot_end); a None value never overwrites a
        known one.  Idempotent: the same rows twice leave the same table."""
        ...

    def upsert_point(
        self,
        meter_ids: Sequence[str],
        slot_end: datetime,
        import_kwh: FloatArray,
        export_kwh: FloatArray,
        read_at: datetime,
        source: str = "collect",
    ) -> int:
        """Bulk form for a fleet at one slot end: arrays aligned with ``meter_ids``, NaN where
        no value came.  Meters with neither value are not stored (a gap to fill later)."""
        ...

    def readings(
        self,
        meter_ids: Sequence[str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> list[MeterReading]:
        """Readings with ``start <= slot_end <= end``, ordered by meter, then slot_end."""
        ...

    def missing(
        self, meter_ids: Sequence[str], slot_ends: Sequence[datetime]
    ) -> dict[str, list[datetime]]:
        """For each meter, the slot ends among ``slot_ends`` with no complete reading."""
        ...

    def meter_matrix(
        self,
        meter_ids: Sequence[str],
        first_day: date,
        days: int,
        *,
        register: str = "import",
    ) -> FloatArray:
        """Energy (kWh) per 30-minute slot of each meter over ``days`` metering days (JST)
        from ``first_day``: a float array ``(len(meter_ids), days, 48)``; slot ``k`` of day
        ``d`` runs from ``d 00:00 + 30 k min``.  The difference of the cumulative
        ``register`` ("import" or "export") between the slot's two ends, corrected for a
        roll-over past the meter's ``wrap_kwh``; NaN where either end has no reading (or
        the meter is unknown), never zero.  The bulk load a baseline needs."""
        ...

    def count_readings(self) -> int: ...

    def slot_end_range(self) -> tuple[datetime | None, datetime | None]:
        """The oldest and newest slot_end stored (None, None when empty)."""
        ...

    def delete_readings_before(self, cutoff: datetime) -> int:
        """Retention: drop readings whose slot_end is before ``cutoff``; return how many."""
        ...

    # actions
    def record_action(self, action: MeterAction) -> int: ...

    def actions(self, meter_id: str | None = None) -> list[MeterAction]: ...

    # small settings (e.g. how an emulated fleet was built)
    def get_setting(self, key: str) -> str | None: ...

    def set_setting(self, key: str, value: str) -> None: ...

    def close(self) -> None: ...


class AggregatorStore(Protocol):
    """The RA's registry and ingest tables (migrations 2 and 3), as the aggregator uses
    them.  :class:`~erab.store.sqlite.SqliteStore` and
    :class:`~erab.store.postgres.PostgresStore` implement it over the same schema."""

    def add_customer(self, customer: Customer, at: datetime) -> None: ...

    def customers(self) -> list[Customer]: ...

    def add_site(self, site: Site, at: datetime) -> None: ...

    def update_site(self, site: Site) -> None: ...

    def sites(self) -> list[Site]: ...

    def site(self, site_id: str) -> Site | None: ...

    def add_contract(self, contract: Contract, at: datetime) -> None: ...

    def contracts(self) -> list[Contract]: ...

    def add_gateway(self, gateway: Gateway, at: datetime) -> None: ...

    def gateways(self, site_id: str | None = None) -> list[Gateway]: ...

    def gateway(self, gateway_id: str) -> Gateway | None: ...

    def set_gateway(
        self, gateway_id: str, *, status: GatewayStatus, cert_serial: str | None, at: datetime
    ) -> None: ...

    def mark_silent_gateways(self, seen_before: datetime, at: datetime) -> list[str]: ...

    def add_resource(self, resource: Resource, at: datetime) -> None: ...

    def update_resource(self, resource: Resource) -> None: ...

    def resources(
        self, *, site_id: str | None = None, gateway_id: str | None = None
    ) -> list[Resource]: ...

    def resource(self, resource_id: str) -> Resource | None: ...

    def resource_keys(self) -> dict[str, int]: ...

    def pending_devices(self, gateway_id: str | None = None) -> list[PendingDevice]: ...

    def propose_inventory(
        self, gateway_id: str, devices: Sequence[ProposedDevice], at: datetime
    ) -> list[AllowEntry]: ...

    def allow_list(self, gateway_id: str) -> list[AllowEntry]: ...

    def raise_alert(
        self,
        kind: str,
        message: str,
        at: datetime,
        *,
        gateway_id: str | None = None,
        resource_id: str | None = None,
    ) -> None: ...

    def alerts(self, *, open_only: bool = False) -> list[Alert]: ...

    def clear_alert(self, alert_id: int, at: datetime) -> bool:
        """Mark an open alert cleared at ``at``; False if it was not open."""
        ...

    def write_uplink_batch(self, batch: UplinkBatch, at: datetime) -> BatchOutcome:
        """Store one batch in one transaction, dropping every (gateway, seq) already held."""
        ...

    def close(self) -> None: ...
