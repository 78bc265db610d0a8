"""Store and forward: the gateway's uplink messages in SQLite, in sequence order.

The outbox also owns the gateway's uplink sequence counter (docs/bus.md: one counter over all
kinds, from 1, kept across restarts), so it can be handed to :class:`erab.bus.GatewayLink` as
its ``sequence``.  A message is stored before it is sent and deleted only after the broker's
PUBACK (MQTT 3.1.1 §4.3.2: QoS 1, at least once), so a crash or a lost link loses nothing;
the RA drops the duplicates by ``seq``.

Past ``max_messages`` the oldest *droppable* message (telemetry, meter reading, state,
heartbeat) is deleted and counted; hellos and acknowledgements are never dropped (an ack is
the RA's only proof that a command was carried out).  The count is kept in the file: it is
reported, never silent.

One gateway (``Outbox(path, gateway_id)``) has a file of its own and commits every message as
it is stored.  Many gateways in one process (``erab gateway fleet``) share one
:class:`OutboxDatabase` in *group commit* mode: every write goes into one open transaction
that :meth:`OutboxDatabase.commit` ends a few times a second for all of them.  The promise
is kept by never letting anything out before the commit that stored it: a message is
published, and a sequence number used, only once committed (:meth:`Outbox.committed_seq`),
so a crash loses at most what nobody outside the process has seen yet.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import msgspec

from erab.bus import MessageKind, UplinkMessage, encode
from erab.bus.schema import kind_of

DROPPABLE = frozenset(
    {MessageKind.TELEMETRY, MessageKind.METER, MessageKind.STATE, MessageKind.HEARTBEAT}
)
DROPPABLE_NAMES = frozenset(k.value for k in DROPPABLE)
DEFAULT_MAX_MESSAGES = 10_000
DRAIN_BATCH = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    gateway_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    droppable INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (gateway_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (gateway_id, droppable, seq);
CREATE TABLE IF NOT EXISTS counters (
    gateway_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, name)
);
CREATE TABLE IF NOT EXISTS verifier_state (
    gateway_id TEXT PRIMARY KEY,
    state BLOB NOT NULL
);
"""
# files written before the outbox kept several gateways: (seq PRIMARY KEY, kind, droppable,
# payload), one gateway, whose id is in ``counters``
_MIGRATE_ONE_GATEWAY = """
ALTER TABLE outbox RENAME TO outbox_one_gateway;
DROP INDEX IF EXISTS outbox_droppable;
"""

_decoder: msgspec.json.Decoder[UplinkMessage] = msgspec.json.Decoder(UplinkMessage)

Publish = Callable[[UplinkMessage], Awaitable[None]]
# [(kind, payload)] -> per message None (the broker has it) or the error, in order
PublishMany = Callable[[list[tuple[str, bytes]]], Awaitable[list[BaseException | None]]]


class OutboxError(ValueError):
    """A message the outbox cannot take (wrong gateway, a sequence it did not hand out)."""


@dataclass(frozen=True)
class OutboxStatus:
    backlog: int  # messages stored, not yet acknowledged by the broker
    dropped_total: int  # droppable messages deleted to keep the bound, ever
    last_seq: int  # the last sequence number handed out (0: none yet)
    oldest_seq: int | None


class OutboxDatabase:
    """The SQLite file behind one gateway's outbox, or (``group_commit``) the outboxes and
    command-verifier states of many gateways of one process.

    ``durable``: FULL synchronisation, each commit reaches the disk (survives a power cut);
    otherwise NORMAL, a commit survives the process crashing and costs no fsync.  In group
    commit mode, :meth:`commit` (called on a short timer) ends the open
    transaction for every gateway at once: one fsync for all of them."""

    def __init__(self, path: Path, *, durable: bool = True, group_commit: bool = False) -> None:
        self.path = path
        self.group_commit = group_commit
        self.lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(outbox)")}
        if columns and "gateway_id" not in columns:
            self.db.executescript(_MIGRATE_ONE_GATEWAY)
        self.db.executescript(_SCHEMA)
        self._in_transaction = False
        self.on_pending: Callable[[], None] | None = None  # a group transaction was begun
        self._boxes: dict[str, Outbox] = {}
        self._dirty: set[str] = set()  # gateways whose counters changed since the commit
        self._committed: asyncio.Future[None] | None = None  # resolved by the next commit
        self.commits = 0

    # -- writing --------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and an open transaction: committed at once (one gateway), or by
        the next :meth:`commit` (group commit)."""
        with self.lock:
            if not self.group_commit:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.db
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
                self.db.execute("COMMIT")
                return
            if not self._in_transaction:
                self.db.execute("BEGIN IMMEDIATE")
                self._in_transaction = True
                if self.on_pending is not None:
                    self.on_pending()
            yield self.db

    @property
    def pending(self) -> bool:
        """Something is written and not yet committed."""
        return self._in_transaction

    def commit(self) -> int:
        """End the open transaction (group commit); returns how many outboxes it made
        more of sendable, after telling each (its ``on_committed``)."""
        with self.lock:
            if not self._in_transaction:
                return 0
            boxes = [self._boxes[g] for g in self._dirty if g in self._boxes]
            self.db.executemany(
                "INSERT INTO counters (gateway_id, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (gateway_id, name) DO UPDATE SET value = excluded.value",
                [(b.gateway_id, name, value) for b in boxes
                 for name, value in (("seq", b._seq), ("dropped", b._dropped))],
            )  # fmt: skip
            self.db.execute("COMMIT")
            self._in_transaction = False
            self._dirty.clear()
            self.commits += 1
            moved = [b for b in boxes if b._committed_seq != b._seq]
            for box in moved:
                box._committed_seq = box._seq
        for box in moved:
            if box.on_committed is not None:
                box.on_committed()
        done, self._committed = self._committed, None
        if done is not None and not done.done():
            done.set_result(None)
        return len(moved)

    async def committed(self) -> None:
        """Return once everything written so far is committed (at once if it is)."""
        if not self._in_transaction:
            return
        if self._committed is None:
            self._committed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._committed)

    def outbox(self, gateway_id: str, *, max_messages: int = DEFAULT_MAX_MESSAGES) -> Outbox:
        """The outbox of ``gateway_id`` in this file (one per gateway and process)."""
        if gateway_id in self._boxes:
            raise OutboxError(f"gateway {gateway_id!r} already has an outbox open in {self.path}")
        return Outbox(self, gateway_id, max_messages=max_messages)

    def import_one_gateway_file(self, path: Path, gateway_id: str) -> int:
        """Move what an older, one-gateway outbox file holds for ``gateway_id`` (its unsent
        messages and counters) into this database; the file is renamed ``*.imported``.
        Returns the messages moved.  Call before the gateway's :meth:`outbox`."""
        if not path.is_file():
            return 0
        self.commit()
        with Outbox(path, gateway_id) as old:
            rows = old._db.execute(
                "SELECT seq, kind, droppable, payload FROM outbox WHERE gateway_id = ?",
                (gateway_id,),
            ).fetchall()
            counters = [(gateway_id, "seq", old._seq), (gateway_id, "dropped", old._dropped)]
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                self.db.executemany(
                    "INSERT OR IGNORE INTO outbox (gateway_id, seq, kind, droppable, payload) "
                    "VALUES (?, ?, ?, ?, ?)", [(gateway_id, *r) for r in rows])  # fmt: skip
                self.db.executemany(
                    "INSERT INTO counters (gateway_id, name, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (gateway_id, name) DO UPDATE SET "
                    "value = max(value, excluded.value)", counters)  # fmt: skip
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        for suffix in ("", "-wal", "-shm"):
            part = path.with_name(path.name + suffix)
            if part.exists():
                part.rename(part.with_name(part.name + ".imported"))
        return len(rows)

    def close(self) -> None:
        if self.group_commit:
            self.commit()
        self.db.close()

    # -- the command verifier's state (erab.security.VerifierStateStore) --------------------
    def load_verifier_state(self, gateway_id: str) -> bytes | None:
        with self.lock:
            row = self.db.execute(
                "SELECT state FROM verifier_state WHERE gateway_id = ?", (gateway_id,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def save_verifier_state(self, gateway_id: str, state: bytes) -> None:
        with self.writing() as db:
            db.execute(
                "INSERT INTO verifier_state (gateway_id, state) VALUES (?, ?) "
                "ON CONFLICT (gateway_id) DO UPDATE SET state = excluded.state",
                (gateway_id, state),
            )


class Outbox:
    """One gateway's outbox: in a file of its own (``Outbox(path, gateway_id)``, created if
    missing, every message committed as stored) or in a shared :class:`OutboxDatabase`
    (:meth:`OutboxDatabase.outbox`)."""

    def __init__(
        self,
        path: Path | OutboxDatabase,
        gateway_id: str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        durable: bool = True,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        self.gateway_id = gateway_id
        self.max_messages = max_messages
        if isinstance(path, OutboxDatabase):
            self.database, self._owns_database = path, False
        else:
            self.database, self._owns_database = OutboxDatabase(path, durable=durable), True
        self.path = self.database.path
        self._db = self.database.db
        self._lock = self.database.lock
        # called after a group commit made more of this outbox sendable (wakes the drain)
        self.on_committed: Callable[[], None] | None = None
        self._seq = self._counter("seq")
        self._dropped = self._counter("dropped")
        self._migrate_one_gateway_rows()
        with self._lock:
            (count,) = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE gateway_id = ?", (gateway_id,)
            ).fetchone()
        # One writer per gateway: the counter and the row count are kept in memory as well,
        # so storing a message costs one INSERT, not extra queries.
        self._count = int(count)
        self._committed_seq = self._seq
        self.database._boxes[gateway_id] = self

    def _migrate_one_gateway_rows(self) -> None:
        with self._lock:
            old = self._db.execute(
                "SELECT name FROM sqlite_master WHERE name = 'outbox_one_gateway'"
            ).fetchone()
        if old is None:
            return
        with self.database.writing() as db:
            db.execute(
                "INSERT OR IGNORE INTO outbox (gateway_id, seq, kind, droppable, payload) "
                "SELECT ?, seq, kind, droppable, payload FROM outbox_one_gateway",
                (self.gateway_id,),
            )
            db.execute("DROP TABLE outbox_one_gateway")

    def close(self) -> None:
        if self.database.group_commit:
            self.database.commit()  # this outbox's counters with it
        self.database._boxes.pop(self.gateway_id, None)
        if self._owns_database:
            self.database.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sequence counter (erab.bus.gateway_link.SequenceSource) -------------------------
    def _counter(self, name: str) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT value FROM counters WHERE gateway_id = ? AND name = ?",
                (self.gateway_id, name),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def next(self, gateway_id: str) -> int:
        """The next uplink sequence number, written to disk before it is handed out (in
        group commit mode: before anything numbered with it leaves, :meth:`committed_seq`)."""
        if gateway_id != self.gateway_id:
            raise OutboxError(f"this outbox is gateway {self.gateway_id!r}'s, not {gateway_id!r}")
        if self.database.group_commit:
            with self.database.writing():
                self._seq += 1
                self.database._dirty.add(self.gateway_id)
                return self._seq
        with self._lock:
            value = self._seq + 1
            self._db.execute(
                "INSERT INTO counters (gateway_id, name, value) VALUES (?, 'seq', ?) "
                "ON CONFLICT (gateway_id, name) DO UPDATE SET value = excluded.value",
                (self.gateway_id, value),
            )  # one statement: its own transaction, on disk before the number is used
            self._seq = value
            return value

    def next_seq(self) -> int:
        return self.next(self.gateway_id)

    @property
    def last_seq(self) -> int:
        """The last sequence number handed out (0: none yet)."""
        return self._seq

    @property
    def committed_seq(self) -> int:
        """Every sequence number up to this one is on disk, with its message if stored."""
        return self._committed_seq if self.database.group_commit else self._seq

    # -- storing and draining ---------------------------------------------------------------
    def put(self, message: UplinkMessage) -> int:
        """Store ``message`` (numbered by :meth:`next_seq`); returns how many were dropped
        to keep the bound (0 usually)."""
        if message.gateway_id != self.gateway_id:
            raise OutboxError(
                f"message names gateway {message.gateway_id!r}, outbox is {self.gateway_id!r}"
            )
        kind = kind_of(message)
        if message.seq > self._seq:
            raise OutboxError(
                f"sequence {message.seq} was not handed out by this outbox "
                f"(last is {self._seq}): number messages with next_seq()"
            )
        payload = encode(message)
        with self.database.writing() as db:
            stored = db.execute(
                "INSERT OR IGNORE INTO outbox (gateway_id, seq, kind, droppable, payload) "
                "VALUES (?, ?, ?, ?, ?)",
                (self.gateway_id, message.seq, kind.value, int(kind in DROPPABLE), payload),
            ).rowcount
            if stored != 1:
                raise OutboxError(f"sequence {message.seq} is already in the outbox")
            dropped = self._enforce_bound(db, self._count + 1)
            self._count += 1 - dropped
            return dropped

    def _enforce_bound(self, db: sqlite3.Connection, count: int) -> int:
        excess = count - self.max_messages
        if excess <= 0:
            return 0
        victims = [
            (self.gateway_id, row[0])
            for row in db.execute(
                "SELECT seq FROM outbox WHERE gateway_id = ? AND droppable = 1 "
                "ORDER BY seq LIMIT ?",
                (self.gateway_id, excess),
            )
        ]
        db.executemany("DELETE FROM outbox WHERE gateway_id = ? AND seq = ?", victims)
        if victims:
            self._dropped += len(victims)
            if self.database.group_commit:
                self.database._dirty.add(self.gateway_id)
            else:
                db.execute(
                    "INSERT INTO counters (gateway_id, name, value) VALUES (?, 'dropped', ?) "
                    "ON CONFLICT (gateway_id, name) DO UPDATE SET value = excluded.value",
                    (self.gateway_id, self._dropped),
                )
        return len(victims)

    def peek(self) -> UplinkMessage | None:
        """The oldest stored message (lowest sequence), or None when empty."""
        rows = self._oldest_rows(1)
        return None if not rows else _decoder.decode(rows[0][2])

    def remove(self, seq: int) -> None:
        """Forget message ``seq`` (after the broker acknowledged it)."""
        self.remove_many([seq])

    def remove_many(self, seqs: list[int]) -> None:
        """Forget these messages, in one transaction."""
        if not seqs:
            return
        with self.database.writing() as db:
            gone = db.executemany("DELETE FROM outbox WHERE gateway_id = ? AND seq = ?",
                                  [(self.gateway_id, s) for s in seqs]).rowcount  # fmt: skip
            self._count -= max(gone, 0)

    def _oldest_rows(self, count: int) -> list[tuple[int, str, bytes]]:
        """(seq, kind, payload) of the oldest stored messages that may be sent."""
        with self._lock:
            return [
                (int(s), str(k), bytes(p))
                for s, k, p in self._db.execute(
                    "SELECT seq, kind, payload FROM outbox WHERE gateway_id = ? AND seq <= ? "
                    "ORDER BY seq LIMIT ?",
                    (self.gateway_id, self.committed_seq, count),
                )
            ]

    async def drain(self, publish: Publish, *, limit: int | None = None) -> int:
        """Publish stored messages oldest first, each stored until ``publish`` has returned
        (its PUBACK); stops at the first failure, which propagates and leaves that message
        and all after it stored.  The published ones are deleted a batch at a time (a crash
        in between sends them again; the RA drops repeats by ``seq``).  Returns how many
        were sent."""

        async def one_by_one(rows: list[tuple[int, str, bytes]]) -> list[int]:
            done: list[int] = []
            try:
                for _, _, payload in rows:
                    message = _decoder.decode(payload)
                    await publish(message)
                    done.append(message.seq)
            finally:
                self.remove_many(done)
            return done

        return await self._drain(one_by_one, limit)

    async def drain_encoded(self, publish: PublishMany, *, limit: int | None = None) -> int:
        """:meth:`drain` for a link that takes the stored bytes as they are (no decoding and
        encoding again) a batch at a time, ``publish([(kind, payload), ...])``, e.g. every
        message of a batch handed to the broker before the first PUBACK is awaited (one
        connection keeps them in order, MQTT 3.1.1 §4.6).  Those before the first failure
        are deleted, the failure propagates, and everything from it on stays."""

        async def pipelined(rows: list[tuple[int, str, bytes]]) -> list[int]:
            results = await publish([(kind, payload) for _, kind, payload in rows])
            done: list[int] = []
            failure: BaseException | None = None
            for (seq, _, _), result in zip(rows, results, strict=True):
                if isinstance(result, BaseException):
                    failure = result
                    break
                done.append(seq)
            self.remove_many(done)
            if failure is not None:
                raise failure
            return done

        return await self._drain(pipelined, limit)

    async def _drain(
        self,
        send: Callable[[list[tuple[int, str, bytes]]], Awaitable[list[int]]],
        limit: int | None,
    ) -> int:
        sent = 0
        while limit is None or sent < limit:
            batch = DRAIN_BATCH if limit is None else min(DRAIN_BATCH, limit - sent)
            rows = self._oldest_rows(batch)
            if not rows:
                break
            sent += len(await send(rows))
            if len(rows) < batch and self.database.group_commit:
                # every committed row was in this batch; what was stored meanwhile is
                # not committed yet, and its commit wakes the drain again
                break
        return sent

    @property
    def backlog(self) -> int:
        """Messages stored and not yet acknowledged (from memory: no query)."""
        return self._count

    @property
    def dropped_total(self) -> int:
        return self._dropped

    def status(self) -> OutboxStatus:
        with self._lock:
            backlog, oldest = self._db.execute(
                "SELECT COUNT(*), MIN(seq) FROM outbox WHERE gateway_id = ?", (self.gateway_id,)
            ).fetchone()
        return OutboxStatus(
            backlog=int(backlog),
            dropped_total=self._dropped,
            last_seq=self._seq,
            oldest_seq=None if oldest is None else int(oldest),
        )

    def kinds(self) -> list[tuple[int, str]]:
        """(seq, kind) of every stored message, in order (for status and tests)."""
        with self._lock:
            return [
                (int(s), str(k))
                for s, k in self._db.execute(
                    "SELECT seq, kind FROM outbox WHERE gateway_id = ? ORDER BY seq",
                    (self.gateway_id,),
                )
            ]
