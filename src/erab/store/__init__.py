"""Persistence: the :class:`Store` interface, SQLite by default (PostgreSQL to come).

``open_store(settings.database_url)`` gives the configured store.
"""

from __future__ import annotations

from erab.store.base import (
    AggregatorStore,
    MeterAction,
    MeterInfo,
    MeterReading,
    Store,
    StoreError,
    StoreNotFound,
)
from erab.store.migrations import MIGRATIONS, Migration
from erab.store.ra_sqlite import StoreConflict
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
from erab.store.sqlite import SqliteStore


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store at ``url``: ``sqlite:///path/to/file.sqlite`` or ``sqlite:///:memory:``.

    A bare file path is taken as SQLite.  With ``create=False`` a store that does not exist
    yet is not created: :class:`StoreNotFound` is raised instead."""
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///"), create=create)
    if url.startswith(("postgresql://", "postgres://")):
        raise StoreError(
            "a PostgreSQL store is not built yet: use sqlite:///PATH for ERAB_DATABASE_URL"
        )
    if "://" in url:
        raise StoreError(f"unknown store URL {url!r}: use sqlite:///PATH")
    return SqliteStore(url, create=create)


__all__ = [
    "MIGRATIONS",
    "AggregatorStore",
    "Alert",
    "AllowEntry",
    "BatchOutcome",
    "Contract",
    "Customer",
    "Gateway",
    "GatewayStatus",
    "MeterAction",
    "MeterInfo",
    "MeterReading",
    "Migration",
    "PendingDevice",
    "ProposedDevice",
    "Resource",
    "Site",
    "SqliteStore",
    "Store",
    "StoreConflict",
    "StoreError",
    "StoreNotFound",
    "UplinkBatch",
    "open_store",
]
