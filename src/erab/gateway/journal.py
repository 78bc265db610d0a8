"""What many gateways of one process write, written together (``erab gateway fleet``).

A gateway on its own commits each uplink message, each audit record and each new state of its
command verifier as it happens.  A thousand gateways in one event loop doing the same spend
their time in commits and hold each other up.  :class:`FleetJournal` groups the writes: the
gateways' outboxes and verifier states live in one SQLite file in group commit mode
(:class:`~erab.gateway.outbox.OutboxDatabase`), each gateway's audit records are chained in
memory at once and appended to its own audit log a batch at a time
(:class:`DeferredAuditStore`), and one timer ends all of it every ``commit_interval_s``.

The guarantees stay those of a gateway on its own, because nothing leaves the process, and no
device is set, before the commit that records it:

- an uplink message is published only once committed (``Outbox.committed_seq``);
- each commit first appends the pending audit records, so an acknowledgement never reaches the
  RA before the audit records of its command are on disk;
- a command is carried out only after :meth:`FleetJournal.committed` has returned, i.e. with
  the verifier's new last sequence (the replay high-water mark) and the ``accepted`` record on
  disk: a crash can lose a command that was verified, never one that was acted on, and a
  replay after a restart is still refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from erab.gateway.outbox import DEFAULT_MAX_MESSAGES, Outbox, OutboxDatabase
from erab.security.audit import AuditRecord, ChainHead, Checkpoint, SqliteAuditStore
from erab.security.envelope import VerifierState

DEFAULT_COMMIT_INTERVAL_S = 0.05


class DeferredAuditStore:
    """An :class:`~erab.security.audit.AuditStore` over a :class:`SqliteAuditStore` that
    chains each record in memory when it is appended and stores the records on
    :meth:`flush`, in one transaction.

    The chain is the same as if each had been appended at once.  Should another writer have
    appended to the file meanwhile (it should not: one process per gateway's log), the
    pending records are chained after its records instead, never lost.  Every read flushes
    first, so what is read is what is stored.

    The fleet's journal writes in a worker thread: :meth:`take` (on the event loop) moves
    the pending records to a queue of batches, and :meth:`write_queued` (any thread) stores
    the queued batches in the order they were taken, under a lock, so records taken later
    never reach the file before records taken earlier, whichever thread writes them."""

    def __init__(self, store: SqliteAuditStore, on_pending: Callable[[], None] | None = None):
        self.store = store
        self.on_pending = on_pending  # told when the first record of a batch is waiting
        last = store.head()
        self._head = None if last is None else ChainHead(last.position, last.record_hash)
        self._pending: list[Callable[[ChainHead | None], AuditRecord]] = []
        self._built: list[AuditRecord] = []  # what the pending builds made, in order
        # batches taken and not yet stored, oldest first; written under _io
        self._queued: deque[tuple[list[Callable[[ChainHead | None], AuditRecord]],
                                  list[AuditRecord]]] = deque()  # fmt: skip
        self._io = threading.Lock()

    @property
    def pending(self) -> int:
        return len(self._pending) + sum(len(b) for b, _ in self._queued)

    def append(self, build: Callable[[ChainHead | None], AuditRecord]) -> AuditRecord:
        record = build(self._head)
        self._head = ChainHead(record.position, record.record_hash)
        self._pending.append(build)
        self._built.append(record)
        if len(self._pending) == 1 and self.on_pending is not None:
            self.on_pending()
        return record

    def take(self) -> bool:
        """Queue the pending records as one batch for :meth:`write_queued`; False when
        there were none.  Call on the thread that appends."""
        if not self._pending:
            return False
        self._queued.append((self._pending, self._built))
        self._pending, self._built = [], []
        return True

    def write_queued(self) -> int:
        """Store every queued batch, oldest first; how many records.  A batch that fails
        stays queued (with those after it) for the next write."""
        written = 0
        with self._io:
            while self._queued:
                builds, built = self._queued[0]
                stored = self.store.append_many(builds, built)
                self._queued.popleft()
                written += len(stored)
                if stored[-1] is not built[-1] and not self._pending and not self._queued:
                    # chained after another writer's records: go on from the file's head
                    self._head = ChainHead(stored[-1].position, stored[-1].record_hash)
        return written

    def flush(self) -> int:
        """Store the pending records (and any batch still queued before them); how many."""
        self.take()
        return self.write_queued()

    def records(self) -> Iterator[AuditRecord]:
        self.flush()
        return self.store.records()

    def tail(self, count: int) -> list[AuditRecord]:
        self.flush()
        return self.store.tail(count)

    def head(self) -> AuditRecord | None:
        self.flush()
        return self.store.head()

    def add_checkpoint(
        self, build: Callable[[Checkpoint | None, ChainHead | None], Checkpoint | None]
    ) -> Checkpoint | None:
        self.flush()
        return self.store.add_checkpoint(build)

    def checkpoints(self) -> list[Checkpoint]:
        return self.store.checkpoints()

    def latest_checkpoint(self) -> Checkpoint | None:
        self.flush()
        return self.store.latest_checkpoint()

    def close(self) -> None:
        self.flush()
        self.store.close()


class SharedVerifierStateStore:
    """A gateway's command-verifier state as a row of the fleet's database, written in its
    next group commit (:class:`~erab.security.VerifierStateStore`).  A gateway that kept its
    state in a file (``verifier.json``, before it joined a fleet journal) starts from that
    file: its replay protection carries over."""

    def __init__(self, database: OutboxDatabase, gateway_id: str, legacy_file: Path) -> None:
        self.database = database
        self.gateway_id = gateway_id
        self.legacy_file = legacy_file

    def load(self) -> VerifierState | None:
        data = self.database.load_verifier_state(self.gateway_id)
        if data is not None:
            return VerifierState.from_json(data, f"{self.database.path} ({self.gateway_id})")
        if self.legacy_file.is_file():
            return VerifierState.from_json(self.legacy_file.read_bytes(), str(self.legacy_file))
        return None

    def save(self, state: VerifierState) -> None:
        self.database.save_verifier_state(self.gateway_id, state.to_json())


class FleetJournal:
    """The shared writes of one process's gateways: ``path`` is the SQLite file of their
    outboxes and verifier states; each gateway's audit log stays a file of its own."""

    def __init__(
        self,
        path: Path,
        *,
        durable: bool = False,
        commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S,
    ) -> None:
        if commit_interval_s <= 0:
            raise ValueError(f"commit_interval_s must be > 0, got {commit_interval_s}")
        self.database = OutboxDatabase(path, durable=durable, group_commit=True)
        self.commit_interval_s = commit_interval_s
        self._audits: list[DeferredAuditStore] = []
        self._waiting: list[DeferredAuditStore] = []  # with records to flush
        self._due = asyncio.Event()  # something waits for the next commit
        self.database.on_pending = self._due.set
        self._writer: ThreadPoolExecutor | None = None  # writes the audit files
        self._in_flight: list[DeferredAuditStore] = []  # stores the writer has batches of

    def outbox(
        self, gateway_id: str, legacy_file: Path | None = None, *,
        max_messages: int = DEFAULT_MAX_MESSAGES,
    ) -> Outbox:  # fmt: skip
        """``gateway_id``'s outbox; what an older outbox file of its own still held
        (``legacy_file``) is moved in first."""
        if legacy_file is not None:
            self.database.import_one_gateway_file(legacy_file, gateway_id)
        return self.database.outbox(gateway_id, max_messages=max_messages)

    def audit_store(self, path: Path) -> DeferredAuditStore:
        store = DeferredAuditStore(SqliteAuditStore(path))

        def pending() -> None:
            self._waiting.append(store)
            self._due.set()

        store.on_pending = pending
        self._audits.append(store)
        return store

    def release_audit_store(self, store: DeferredAuditStore) -> None:
        """Store what ``store`` holds and close it (its gateway stopped)."""
        if store in self._waiting:
            self._waiting.remove(store)
        if store in self._audits:
            self._audits.remove(store)
        store.close()

    def verifier_store(self, gateway_id: str, legacy_file: Path) -> SharedVerifierStateStore:
        return SharedVerifierStateStore(self.database, gateway_id, legacy_file)

    def flush_audit(self) -> int:
        """Append every pending audit record to its log; how many."""
        waiting, self._waiting = self._waiting, []
        return sum(store.flush() for store in waiting)

    def commit(self) -> None:
        """Audit records first, then the outboxes and verifier states: see the module."""
        self.flush_audit()
        for store in self._in_flight:  # a commit_soon cancelled while its thread wrote
            store.write_queued()
        self.database.commit()

    async def commit_soon(self) -> None:
        """:meth:`commit`, with the audit records written in a worker thread meanwhile the
        event loop goes on (SQLite lets go of the GIL while it writes: a thousand audit
        files a commit are work for the machine's other core).  What was appended while the
        thread wrote is stored on the loop just before the outbox commit, so the order
        holds: every audit record appended before the commit is on disk before it."""
        waiting, self._waiting = self._waiting, []
        taken = [store for store in waiting if store.take()]
        if taken:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="fleet-audit")
            # kept past a cancellation (the thread goes on writing): commit() waits for it
            self._in_flight = taken
            await asyncio.get_running_loop().run_in_executor(self._writer, _write_all, taken)
            self._in_flight = []
        self.commit()

    async def committed(self) -> None:
        """Return once everything written so far is on disk (within one interval)."""
        if self._waiting and not self.database.pending:
            self.commit()  # only audit records wait: no reason to wait for the timer
            return
        await self.database.committed()

    async def run(self) -> None:
        """Commit within one interval of the first write after the last commit (no timer
        while nothing is written), until cancelled, and once more then."""
        try:
            while True:
                await self._due.wait()
                await asyncio.sleep(self.commit_interval_s)
                self._due.clear()
                await self.commit_soon()
        finally:
            self.commit()

    def close(self) -> None:
        self.commit()
        for store in self._audits:
            with contextlib.suppress(Exception):
                store.close()
        self._audits.clear()
        self.database.close()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None


def _write_all(stores: list[DeferredAuditStore]) -> None:
    for store in stores:
        store.write_queued()
