"""Small helpers shared by the security modules (not public)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that gets signed or hashed.

    Keys sorted, no insignificant whitespace, UTF-8, NaN/Infinity refused: the same value
    always gives the same bytes, so a signature or hash over them is reproducible.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def utc_iso(when: datetime) -> str:
    """RFC 3339 UTC text with microseconds (e.g. ``2026-08-01T00:00:00.000000Z``)."""
    if when.tzinfo is None:
        raise ValueError(f"need an aware datetime, got naive {when!r}")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_iso(text: str) -> datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"expected RFC 3339 UTC time ending in Z, got {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def atomic_write(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never half.

    ``private`` files (keys, secrets) are created with mode 0600.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if private:
            os.fchmod(fd, 0o600)
        else:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


@contextmanager
def sqlite_connection(path: Path, *, wal: bool = False) -> Iterator[sqlite3.Connection]:
    """A short-lived autocommit connection that waits up to 10 s for another writer's lock."""
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        yield db
    finally:
        db.close()
