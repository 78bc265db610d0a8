"""Store and forward: the gateway's uplink messages in one SQLite file, in sequence order.

The outbox also owns the gateway's uplink sequence counter (docs/bus.md: one counter over all
kinds, from 1, kept across restarts), so it can be handed to :class:`erab.bus.GatewayLink` as
its ``sequence``.  A message is stored before it is sent and deleted only after the broker's
PUBACK (MQTT 3.1.1 §4.3.2: QoS 1, at least once), so a crash or a lost link loses nothing;
the RA drops the duplicates by ``seq``.

Past ``max_messages`` the oldest *droppable* message (telemetry, meter reading, state,
heartbeat) is deleted and counted; hellos and acknowledgements are never dropped (an ack is
the RA's only proof that a command was carried out).  The count is kept in the file: it is
reported, never silent.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from erab.bus import MessageKind, UplinkMessage, encode
from erab.bus.schema import kind_of

DROPPABLE = frozenset(
    {MessageKind.TELEMETRY, MessageKind.METER, MessageKind.STATE, MessageKind.HEARTBEAT}
)
DEFAULT_MAX_MESSAGES = 10_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    droppable INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_droppable ON outbox (droppable, seq);
CREATE TABLE IF NOT EXISTS counters (
    gateway_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, name)
);
"""

_decoder: msgspec.json.Decoder[UplinkMessage] = msgspec.json.Decoder(UplinkMessage)

Publish = Callable[[UplinkMessage], Awaitable[None]]


class OutboxError(ValueError):
    """A message the outbox cannot take (wrong gateway, a sequence it did not hand out)."""


@dataclass(frozen=True)
class OutboxStatus:
    backlog: int  # messages stored, not yet acknowledged by the broker
    dropped_total: int  # droppable messages deleted to keep the bound, ever
    last_seq: int  # the last sequence number handed out (0: none yet)
    oldest_seq: int | None


class Outbox:
    """One gateway's on-disk outbox (``path``, created if missing)."""

    def __init__(
        self,
        path: Path,
        gateway_id: str,
        *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
        durable: bool = True,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be >= 1, got {max_messages}")
        self.path = path
        self.gateway_id = gateway_id
        self.max_messages = max_messages
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a stored message survives power loss (each commit reaches the disk).  NORMAL
        # (durable=False): it survives the process crashing, and costs no fsync per message;
        # for many emulated gateways in one process (erab gateway fleet)
        self._db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        self._db.executescript(_SCHEMA)
        # One writer per file: the counter and the row count are kept in memory as well, so
        # storing a message costs one INSERT and its commit, not extra queries.
        self._seq = self._counter("seq")
        (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        self._count = int(count)
        self._dropped = self._counter("dropped")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sequence counter (erab.bus.gateway_link.SequenceSource) -------------------------
    def _counter(self, name: str) -> int:
        row = self._db.execute(
            "SELECT value FROM counters WHERE gateway_id = ? AND name = ?",
            (self.gateway_id, name),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def _bump(self, name: str, by: int) -> int:
        value = self._counter(name) + by
        self._db.execute(
            "INSERT INTO counters (gateway_id, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (gateway_id, name) DO UPDATE SET value = excluded.value",
            (self.gateway_id, name, value),
        )
        return value

    def next(self, gateway_id: str) -> int:
        """The next uplink sequence number, written to disk before it is handed out."""
        if gateway_id != self.gateway_id:
            raise OutboxError(f"this outbox is gateway {self.gateway_id!r}'s, not {gateway_id!r}")
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

    # -- storing and draining ---------------------------------------------------------------
    def put(self, message: UplinkMessage) -> int:
        """Store ``message`` (numbered by :meth:`next_seq`); returns how many were dropped
        to keep the bound (0 usually)."""
        if message.gateway_id != self.gateway_id:
            raise OutboxError(
                f"message names gateway {message.gateway_id!r}, outbox is {self.gateway_id!r}"
            )
        kind = kind_of(message)
        with self._lock:
            if message.seq > self._seq:
                raise OutboxError(
                    f"sequence {message.seq} was not handed out by this outbox "
                    f"(last is {self._seq}): number messages with next_seq()"
                )
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO outbox (seq, kind, droppable, payload) VALUES (?, ?, ?, ?)",
                    (message.seq, kind.value, int(kind in DROPPABLE), encode(message)),
                )
                dropped = self._enforce_bound(self._count + 1)
                self._db.execute("COMMIT")
                self._count += 1 - dropped
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise OutboxError(f"sequence {message.seq} is already in the outbox") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return dropped

    def _enforce_bound(self, count: int) -> int:
        excess = count - self.max_messages
        if excess <= 0:
            return 0
        victims = [
            row[0]
            for row in self._db.execute(
                "SELECT seq FROM outbox WHERE droppable = 1 ORDER BY seq LIMIT ?", (excess,)
            )
        ]
        self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in victims])
        if victims:
            self._dropped = self._bump("dropped", len(victims))
        return len(victims)

    def peek(self) -> UplinkMessage | None:
        """The oldest stored message (lowest sequence), or None when empty."""
        with self._lock:
            row = self._db.execute("SELECT payload FROM outbox ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else _decoder.decode(row[0])

    def remove(self, seq: int) -> None:
        """Forget message ``seq`` (after the broker acknowledged it)."""
        self.remove_many([seq])

    def remove_many(self, seqs: list[int]) -> None:
        """Forget these messages, in one transaction."""
        if not seqs:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                gone = self._db.executemany("DELETE FROM outbox WHERE seq = ?",
                                            [(s,) for s in seqs]).rowcount  # fmt: skip
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= max(gone, 0)

    def _oldest(self, count: int) -> list[UplinkMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT payload FROM outbox ORDER BY seq LIMIT ?", (count,)
            ).fetchall()
        return [_decoder.decode(row[0]) for row in rows]

    async def drain(self, publish: Publish, *, limit: int | None = None) -> int:
        """Publish stored messages oldest first, each stored until ``publish`` has returned
        (its PUBACK); stops at the first failure, which propagates and leaves that message
        and all after it stored.  The published ones are deleted a batch at a time (a crash
        in between sends them again; the RA drops repeats by ``seq``).  Returns how many
        were sent."""
        sent = 0
        while limit is None or sent < limit:
            batch = self._oldest(64 if limit is None else min(64, limit - sent))
            if not batch:
                break
            done: list[int] = []
            try:
                for message in batch:
                    await publish(message)
                    done.append(message.seq)
            finally:
                self.remove_many(done)
            sent += len(done)
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
            (backlog,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            (oldest,) = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()
            return OutboxStatus(
                backlog=int(backlog),
                dropped_total=self._counter("dropped"),
                last_seq=self._seq,
                oldest_seq=None if oldest is None else int(oldest),
            )

    def kinds(self) -> list[tuple[int, str]]:
        """(seq, kind) of every stored message, in order (for status and tests)."""
        with self._lock:
            return [
                (int(s), str(k))
                for s, k in self._db.execute("SELECT seq, kind FROM outbox ORDER BY seq")
            ]
