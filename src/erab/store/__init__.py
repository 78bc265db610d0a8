"""Persistence: the :class:`Store` interface, SQLite by default (PostgreSQL to come).

``open_store(settings.database_url)`` gives the configured store.
"""

from __future__ import annotations

from erab.store.base import (
    MeterAction,
    MeterInfo,
    MeterReading,
    Store,
    StoreError,
    StoreNotFound,
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
    "MeterAction",
    "MeterInfo",
    "MeterReading",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreNotFound",
    "open_store",
]
