"""Persistence: the :class:`Store` interface, SQLite by default, PostgreSQL for production.

``open_store(settings.database_url)`` gives the configured store.  The PostgreSQL store
(:class:`erab.store.postgres.PostgresStore`) needs psycopg, the optional extra
``erab[postgres]``; it is imported only when a ``postgresql://`` URL is opened.
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
from erab.store.registry_sql import StoreConflict
from erab.store.sqlite import SqliteStore


def open_store(url: str, *, create: bool = True) -> Store:
    """Open the store at ``url``: ``sqlite:///path/to/file.sqlite``, ``sqlite:///:memory:``
    or ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``.

    A bare file path is taken as SQLite.  With ``create=False`` a store that does not exist
    yet is not created: :class:`StoreNotFound` is raised instead."""
    if url.startswith("sqlite:///"):
        return SqliteStore(url.removeprefix("sqlite:///"), create=create)
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from erab.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                f"a PostgreSQL store needs psycopg, which is not installed ({exc}): "
                "pip install 'erab[postgres]'"
            ) from None
        return PostgresStore(url, create=create)
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise StoreError(
            f"unknown store URL scheme {scheme!r}: use sqlite:///PATH or "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )
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
