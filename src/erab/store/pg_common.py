"""What the PostgreSQL store's modules share: URLs, error messages, binary COPY, times."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast
from urllib.parse import unquote, urlsplit

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import errors as pg_errors

from erab.clock import JST
from erab.store.base import StoreError, StoreNotFound
from erab.store.registry_sql import StoreConflict

CONNECT_TIMEOUT_S = 10

_F = TypeVar("_F", bound=Callable[..., Any])


class _Named(Protocol):
    where: str
    _lock: threading.RLock


def ts(when: datetime) -> int:
    if when.tzinfo is None:
        raise ValueError(f"store times must be timezone-aware, got naive {when!r}")
    return round(when.timestamp())


def dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, JST)


# --- URLs and errors --------------------------------------------------------------------------


def describe_url(url: str) -> str:
    """``user@host:port/database`` of a store URL: what messages name (never the password)."""
    parts = urlsplit(url)
    user = unquote(parts.username) + "@" if parts.username else ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ":?"
    return f"{user}{parts.hostname or 'localhost'}{port}{parts.path}"


def check_url(url: str) -> None:
    """Refuse a URL that cannot name a PostgreSQL store, saying what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"not a PostgreSQL URL: {describe_url(url)!r} (use postgresql://…)")
    try:
        parts.port  # noqa: B018  # raises for a port that is not a number
    except ValueError:
        raise StoreError(
            f"PostgreSQL URL {describe_url(url)}: the port is not a number 0-65535"
        ) from None
    if not parts.path.strip("/"):
        raise StoreError(
            f"PostgreSQL URL {describe_url(url)} names no database: use "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        )


def explain(where: str, exc: psycopg.Error) -> StoreError:
    """One line naming the store and what is wrong, with what to do."""
    text = " ".join(str(exc).split())
    parts = urlsplit("postgresql://" + where)
    host = f"{parts.hostname}:{parts.port or 5432}"
    if "password authentication failed" in text or "no password supplied" in text:
        user = parts.username or "?"
        why = f"password authentication failed for user {user}: check the user and password"
    elif "Connection refused" in text or "No such file or directory" in text:
        why = f"no PostgreSQL server answers at {host} (connection refused): is it running?"
    elif "timeout expired" in text or "timed out" in text:
        why = f"no answer from {host} within {CONNECT_TIMEOUT_S} s (timeout)"
    elif "does not exist" in text and "database" in text:
        db = parts.path.strip("/")
        return StoreNotFound(
            f"PostgreSQL store {where}: database {db} does not exist (create it: "
            f"createdb -O {parts.username or 'USER'} {db})"
        )
    elif isinstance(exc, pg_errors.InsufficientPrivilege):
        why = f"permission denied ({text})"
    elif "could not translate host name" in text:
        why = f"unknown host {parts.hostname}"
    else:
        why = text
    return StoreError(f"PostgreSQL store {where}: {why}")


def guarded(method: _F) -> _F:
    """Raise psycopg errors of ``method`` as one :class:`StoreError` naming the store; one
    caller at a time on the store's connection (threads sharing a store take turns)."""

    @functools.wraps(method)
    def wrapper(self: _Named, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._lock:
                return method(self, *args, **kwargs)
        except pg_errors.IntegrityError as exc:
            raise StoreConflict(f"PostgreSQL store {self.where}: {first_line(exc)}") from None
        except psycopg.Error as exc:
            raise explain(self.where, exc) from exc

    return cast(_F, wrapper)


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --- binary COPY --------------------------------------------------------------------------------

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_COPY_TRAILER = b"\xff\xff"
_WIRE = {"int4": ">i4", "int8": ">i8", "float8": ">f8", "float8?": ">f8"}


def binary_copy(columns: Sequence[tuple[str, Any]]) -> bytes:
    """COPY … (FORMAT BINARY) data for rows given as columns ``(pg type, values)``.

    Types: ``int4``, ``int8``, ``float8`` (a NaN is sent as NaN), ``float8?`` (a NaN is sent
    as NULL), and ``text`` with one string for every row.  A scalar value is repeated for
    every row.  PostgreSQL docs, COPY, "Binary Format": a 16-bit field count per tuple, then
    per field a 32-bit length (-1: NULL, no bytes follow) and the value in network order."""
    n = max((np.size(v) for k, v in columns if k != "text"), default=0)
    values: list[npt.NDArray[Any]] = []
    for kind, v in columns:
        if kind == "text":
            raw = str(v).encode()
            values.append(np.full(n, raw, dtype=f"S{len(raw)}") if raw else np.zeros(0, "S1"))
        else:
            values.append(np.broadcast_to(np.asarray(v, dtype=_WIRE[kind][1:]), (n,)))
    # rows with the same NULL fields share one layout; COPY takes the tuples in any order
    pattern = np.zeros(n, np.int64)
    nullable = [i for i, (kind, _) in enumerate(columns) if kind == "float8?"]
    for bit, i in enumerate(nullable):
        pattern |= np.isnan(values[i]).astype(np.int64) << bit
    chunks = [_COPY_HEADER]
    for p in np.unique(pattern).tolist() if nullable else [0]:
        pick: Any = np.flatnonzero(pattern == p) if nullable else slice(None)
        null = {i for bit, i in enumerate(nullable) if p >> bit & 1}
        empty = {i for i, (kind, _) in enumerate(columns) if kind == "text" and not len(values[i])}
        fields: list[tuple[str, str]] = [("count", ">i2")]
        for i, (kind, _) in enumerate(columns):
            fields.append((f"len{i}", ">i4"))
            if i not in null and i not in empty:
                wire = values[i].dtype.str if kind == "text" else _WIRE[kind]
                fields.append((f"val{i}", wire))
        rows = np.empty(len(pick) if nullable else n, dtype=np.dtype(fields))
        rows["count"] = len(columns)
        for i, (kind, _) in enumerate(columns):
            if i in null:
                rows[f"len{i}"] = -1
            elif i in empty:
                rows[f"len{i}"] = 0  # an empty string: length 0, no bytes
            else:
                rows[f"len{i}"] = values[i].dtype.itemsize if kind == "text" else (
                    np.dtype(_WIRE[kind]).itemsize)  # fmt: skip
                rows[f"val{i}"] = values[i][pick]
        chunks.append(rows.tobytes())
    chunks.append(_COPY_TRAILER)
    return b"".join(chunks)
