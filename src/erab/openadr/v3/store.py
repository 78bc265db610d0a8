"""The OpenADR 3 VTN's objects and clients in a SQLite file.

Tables are erab's own (``oadr3_*``), so the file may be the AC's store that other parts of
erab use too; their schema version lives in ``oadr3_schema`` and :data:`MIGRATIONS` bring an
older file forward.  Each object is kept as the JSON the spec defines, with the columns the
server looks things up by (its kind and id, the parent it hangs from, its unique name, the
client that owns it).  Every change is one transaction: a refused request leaves the file as
it was.

The objects of each API version are apart (column ``api``): a 3.0.1 target is a type and its
values, a 3.1.0 target a plain string matched with AND, so one object cannot be shown to both
without changing what it means.  The clients are shared: one registration serves both APIs.
:meth:`ObjectStore.for_api` gives another version's view over the same connection.
"""

from __future__ import annotations

import copy
import json
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from erab.clock import Clock, RealClock
from erab.openadr.v3.models import JsonObject, Kind

MIGRATIONS: tuple[str, ...] = (
    # 1: objects and clients
    """
    CREATE TABLE oadr3_objects (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        parent TEXT NOT NULL DEFAULT '',
        name TEXT,
        owner TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (kind, id)
    );
    CREATE UNIQUE INDEX oadr3_objects_name ON oadr3_objects (kind, parent, name)
        WHERE name IS NOT NULL;
    CREATE INDEX oadr3_objects_parent ON oadr3_objects (kind, parent, seq);
    CREATE TABLE oadr3_clients (
        client_id TEXT PRIMARY KEY,
        role TEXT NOT NULL,
        ven_name TEXT,
        secret_salt BLOB NOT NULL,
        secret_hash BLOB NOT NULL,
        created TEXT NOT NULL
    );
    """,
    # 2: objects of each API version apart (3.0.1 and 3.1.0 objects differ in shape and meaning)
    """
    ALTER TABLE oadr3_objects ADD COLUMN api TEXT NOT NULL DEFAULT '3.0.1';
    DROP INDEX oadr3_objects_name;
    DROP INDEX oadr3_objects_parent;
    CREATE UNIQUE INDEX oadr3_objects_name ON oadr3_objects (api, kind, parent, name)
        WHERE name IS NOT NULL;
    CREATE INDEX oadr3_objects_parent ON oadr3_objects (api, kind, parent, seq);
    """,
)

_ID_PREFIX = {
    Kind.PROGRAM: "prg",
    Kind.EVENT: "evt",
    Kind.REPORT: "rpt",
    Kind.SUBSCRIPTION: "sub",
    Kind.VEN: "ven",
    Kind.RESOURCE: "res",
}


class StoreConflict(Exception):
    """A change that would break a unique name; the message says which."""


@dataclass(frozen=True)
class Stored:
    """One object: its JSON ``body`` and the columns kept beside it."""

    kind: Kind
    id: str
    parent: str
    owner: str
    body: JsonObject


@dataclass(frozen=True)
class ClientRow:
    client_id: str
    role: str
    ven_name: str | None
    secret_salt: bytes
    secret_hash: bytes


class ObjectStore:
    """The VTN's SQLite file at ``path`` (created and migrated on open)."""

    def __init__(self, path: Path | str, *, clock: Clock | None = None, api: str = "3.0.1") -> None:
        self.path = Path(path)
        self.clock: Clock = clock or RealClock()
        self.api = api
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # one connection shared by the server's threads, serialised by a lock
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def close(self) -> None:
        """Close the file (and so every view of it from :meth:`for_api`)."""
        with self._lock:
            self._db.close()

    def for_api(self, api: str) -> ObjectStore:
        """The objects of API version ``api`` in the same file, over the same connection
        (clients are shared)."""
        view = copy.copy(self)
        view.api = api
        return view

    @property
    def schema_version(self) -> int:
        row = self._db.execute("SELECT MAX(version) FROM oadr3_schema").fetchone()
        return int(row[0] or 0)

    def _migrate(self) -> None:
        with self._tx() as db:
            db.execute("CREATE TABLE IF NOT EXISTS oadr3_schema (version INTEGER, applied TEXT)")
            have = int(
                db.execute("SELECT COALESCE(MAX(version), 0) FROM oadr3_schema").fetchone()[0]
            )
            if have > len(MIGRATIONS):
                raise RuntimeError(
                    f"{self.path}: OpenADR 3 tables are at version {have}, newer than this erab "
                    f"knows ({len(MIGRATIONS)}); upgrade erab"
                )
            for version, script in enumerate(MIGRATIONS[have:], start=have + 1):
                for statement in filter(str.strip, script.split(";")):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO oadr3_schema VALUES (?, ?)",
                    (version, self.clock.now().isoformat()),
                )

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _now(self) -> str:
        # RFC 3339 with 'Z', milliseconds: what clients' parsers all accept
        return self.clock.now().isoformat(timespec="milliseconds").replace("+00:00", "Z")

    # --- objects ---------------------------------------------------------------------------

    def create(
        self, kind: Kind, body: JsonObject, *, owner: str, parent: str = "", name: str | None = None
    ) -> JsonObject:
        """Store a new object; the server sets ``id``, ``objectType`` and both times
        (whatever the client sent for them is replaced)."""
        now = self._now()
        stored = dict(body)
        stored.update(
            id=f"{_ID_PREFIX[kind]}-{secrets.token_hex(8)}",
            objectType=kind.value,
            createdDateTime=now,
            modificationDateTime=now,
        )
        with self._tx() as db:
            seq = int(
                db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM oadr3_objects").fetchone()[0]
            )
            try:
                db.execute(
                    "INSERT INTO oadr3_objects (kind, id, seq, parent, name, owner, body, api) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        kind.value,
                        stored["id"],
                        seq,
                        parent,
                        name,
                        owner,
                        json.dumps(stored),
                        self.api,
                    ),
                )
            except sqlite3.IntegrityError:
                raise StoreConflict(_conflict(kind, name)) from None
        return stored

    def replace(
        self,
        kind: Kind,
        object_id: str,
        body: JsonObject,
        *,
        name: str | None = None,
        owner: str | None = None,
    ) -> JsonObject | None:
        """Replace the object's content (PUT); keeps its id and creation time (and its owner
        unless ``owner`` is given), sets the modification time.  None when there is no such
        object."""
        with self._tx() as db:
            row = db.execute(
                "SELECT body FROM oadr3_objects WHERE kind = ? AND id = ? AND api = ?",
                (kind.value, object_id, self.api),
            ).fetchone()
            if row is None:
                return None
            old = json.loads(row[0])
            stored = dict(body)
            stored.update(
                id=object_id,
                objectType=kind.value,
                createdDateTime=old["createdDateTime"],
                modificationDateTime=self._now(),
            )
            try:
                db.execute(
                    "UPDATE oadr3_objects SET body = ?, name = ?, owner = COALESCE(?, owner) "
                    "WHERE kind = ? AND id = ? AND api = ?",
                    (json.dumps(stored), name, owner, kind.value, object_id, self.api),
                )
            except sqlite3.IntegrityError:
                raise StoreConflict(_conflict(kind, name)) from None
        return stored

    def delete(self, kind: Kind, object_id: str) -> JsonObject | None:
        """Remove the object and return it as it was; None when there is no such object."""
        with self._tx() as db:
            row = db.execute(
                "SELECT body FROM oadr3_objects WHERE kind = ? AND id = ? AND api = ?",
                (kind.value, object_id, self.api),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "DELETE FROM oadr3_objects WHERE kind = ? AND id = ? AND api = ?",
                (kind.value, object_id, self.api),
            )
        body: JsonObject = json.loads(row[0])
        return body

    def get(self, kind: Kind, object_id: str) -> Stored | None:
        with self._lock:
            row = self._db.execute(
                "SELECT kind, id, parent, owner, body FROM oadr3_objects "
                "WHERE kind = ? AND id = ? AND api = ?",
                (kind.value, object_id, self.api),
            ).fetchone()
        return None if row is None else _stored(row)

    def find(
        self,
        kind: Kind,
        *,
        parent: str | None = None,
        name: str | None = None,
        owner: str | None = None,
    ) -> list[Stored]:
        """Objects of ``kind`` in creation order, narrowed by the columns given."""
        sql = "SELECT kind, id, parent, owner, body FROM oadr3_objects WHERE kind = ? AND api = ?"
        args: list[Any] = [kind.value, self.api]
        for column, value in (("parent", parent), ("name", name), ("owner", owner)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY seq", args).fetchall()
        return [_stored(row) for row in rows]

    def count(self, kind: Kind, *, parent: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM oadr3_objects WHERE kind = ? AND parent = ? AND api = ?",
                (kind.value, parent, self.api),
            ).fetchone()
        return int(row[0])

    # --- clients ---------------------------------------------------------------------------

    def put_client(self, row: ClientRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO oadr3_clients VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.client_id,
                    row.role,
                    row.ven_name,
                    row.secret_salt,
                    row.secret_hash,
                    self._now(),
                ),
            )

    def client(self, client_id: str) -> ClientRow | None:
        with self._lock:
            r = self._db.execute(
                "SELECT client_id, role, ven_name, secret_salt, secret_hash FROM oadr3_clients "
                "WHERE client_id = ?",
                (client_id,),
            ).fetchone()
        return None if r is None else ClientRow(r[0], r[1], r[2], bytes(r[3]), bytes(r[4]))

    def clients(self) -> list[ClientRow]:
        with self._lock:
            rows = self._db.execute(
                "SELECT client_id, role, ven_name, secret_salt, secret_hash FROM oadr3_clients "
                "ORDER BY client_id"
            ).fetchall()
        return [ClientRow(r[0], r[1], r[2], bytes(r[3]), bytes(r[4])) for r in rows]

    def remove_client(self, client_id: str) -> bool:
        with self._tx() as db:
            return (
                db.execute("DELETE FROM oadr3_clients WHERE client_id = ?", (client_id,)).rowcount
                > 0
            )


def _stored(row: tuple[Any, ...]) -> Stored:
    return Stored(Kind(row[0]), row[1], row[2], row[3], json.loads(row[4]))


def _conflict(kind: Kind, name: str | None) -> str:
    label = {Kind.PROGRAM: "programName", Kind.VEN: "venName", Kind.RESOURCE: "resourceName"}.get(
        kind, "name"
    )
    scope = " for this VEN" if kind is Kind.RESOURCE else ""
    return f"a {kind.value.lower()} with {label} {name!r} already exists{scope}"
