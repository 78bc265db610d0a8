"""The aggregation coordinator's store (``<home>/ac/ac.sqlite``): VENs, events, opt responses,
reports.

``erab ac serve`` and the ``erab ac ven|event`` commands share this file: the commands write
(a VEN added, an event created or marked for cancellation) and the running VTN picks the change
up within a second; the VTN writes what the VENs answered (registration, opt, reports).  SQLite
in WAL mode lets both work at once; the file is the only channel, so whoever may write it may
act as the AC (its folder is private to the deployment's user).

An event's life at the AC, as a table (its ``state`` column):

    new ──queue──► queued ──cancel──► cancelling ──confirm (the VEN's answer)──► cancelled
     └──cancel (never sent)──► cancelled   queued ──end (window over)──► completed
    queued ──modify──► modifying ──resend (the VTN queued the new version)──► queued
    new ──modify──► new              modifying ──cancel──► cancelling

A modification (OpenADR 2.0b §8.1, event modification) raises the event's modificationNumber
and clears the VEN's answer: the VEN answers the new version again (optIn or optOut).
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS vens (
    ven_id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL UNIQUE, added_at TEXT NOT NULL,
    ven_name TEXT, registration_id TEXT, registered_at TEXT, last_seen TEXT);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY, ven_id TEXT NOT NULL, signal TEXT NOT NULL,
    level INTEGER, target_kw REAL NOT NULL, start TEXT NOT NULL, duration_s REAL NOT NULL,
    ramp_up_s REAL NOT NULL DEFAULT 0, randomise_s REAL NOT NULL DEFAULT 0,
    source TEXT NOT NULL, created_at TEXT NOT NULL, state TEXT NOT NULL,
    modification INTEGER NOT NULL DEFAULT 0, distributed_at TEXT, opt TEXT, opt_detail TEXT,
    responded_at TEXT, award_id TEXT);
CREATE TABLE IF NOT EXISTS reports (
    ven_id TEXT NOT NULL, r_id TEXT NOT NULL, at TEXT NOT NULL, value REAL NOT NULL,
    received_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS reports_by_ven ON reports (ven_id, r_id, at);
CREATE INDEX IF NOT EXISTS reports_by_time ON reports (at);
"""
EVENT_TRANSITIONS = {("new", "queue"): "queued", ("new", "cancel"): "cancelled",
                     ("queued", "cancel"): "cancelling", ("queued", "end"): "completed",
                     ("cancelling", "confirm"): "cancelled",
                     ("new", "modify"): "new", ("queued", "modify"): "modifying",
                     ("modifying", "resend"): "queued",
                     ("modifying", "modify"): "modifying",
                     ("modifying", "cancel"): "cancelling"}  # fmt: skip
LIVE = ("new", "queued", "modifying", "cancelling")
FLEET_R_ID = "fleet_kw"  # the report point erab's VENs send their fleet's power in
DELIVERY_BASELINE = timedelta(minutes=15)
VEN_CACHE_S = 1.0  # the last report this long before start


class AcStoreError(ValueError):
    """A request the AC's store refuses (unknown VEN, duplicate, a bad transition)."""


@dataclass(frozen=True)
class Ven:
    ven_id: str
    fingerprint: str
    added_at: str
    ven_name: str | None = None
    registration_id: str | None = None
    registered_at: str | None = None
    last_seen: str | None = None


@dataclass(frozen=True)
class AcEvent:
    """One event for one VEN; ``target_kw`` negative reduces demand."""

    event_id: str
    ven_id: str
    signal: str  # LOAD_DISPATCH (delta, kW) or SIMPLE (level)
    level: int | None
    target_kw: float
    start: datetime
    duration: timedelta
    ramp_up_s: float = 0.0
    randomise_s: float = 0.0
    source: str = "cli"
    created_at: str = ""
    state: str = "new"
    modification: int = 0
    distributed_at: str | None = None
    opt: str | None = None
    opt_detail: str | None = None
    responded_at: str | None = None
    award_id: str | None = None

    @property
    def end(self) -> datetime:
        return self.start + self.duration


def _now() -> str:
    return datetime.now(UTC).isoformat()


class AcStore:
    """Open (creating if needed) the AC's SQLite store at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                   check_same_thread=False)  # fmt: skip
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per commit, still safe
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(SCHEMA)
        # the VTN looks a VEN up several times per request: keep the registry for a second
        self._vens: tuple[float, dict[str, Ven], dict[str, Ven]] | None = None

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._vens = None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- VENs -------------------------------------------------------------------------------
    def add_ven(self, ven_id: str, fingerprint: str) -> Ven:
        if not ven_id or len(ven_id) > 64 or not ven_id.replace("-", "").replace("_", "").replace(
                ".", "").isalnum():  # fmt: skip
            raise AcStoreError(f"VEN id {ven_id!r}: use 1-64 letters, digits, '.', '_' or '-'")
        with self._write() as db:
            taken = db.execute("SELECT ven_id FROM vens WHERE ven_id=? OR fingerprint=?",
                               (ven_id, fingerprint)).fetchone()  # fmt: skip
            if taken is not None:
                raise AcStoreError(f"VEN {taken['ven_id']} already has that id or certificate; "
                                   "remove it first")  # fmt: skip
            db.execute("INSERT INTO vens (ven_id, fingerprint, added_at) VALUES (?,?,?)",
                       (ven_id, fingerprint, _now()))  # fmt: skip
        return self.ven(ven_id)

    def remove_ven(self, ven_id: str) -> Ven:
        ven = self.ven(ven_id)
        with self._write() as db:
            db.execute("DELETE FROM vens WHERE ven_id=?", (ven_id,))
        return ven

    def _registry(self) -> tuple[dict[str, Ven], dict[str, Ven]]:
        """VENs by id and by fingerprint, read at most once a second (a VEN added or removed
        by another process counts within a second; this process's writes at once)."""
        now = time.monotonic()
        if self._vens is None or now - self._vens[0] > VEN_CACHE_S:
            vens = self.vens()
            self._vens = (now, {v.ven_id: v for v in vens}, {v.fingerprint: v for v in vens})
        return self._vens[1], self._vens[2]

    def ven(self, ven_id: str) -> Ven:
        ven = self._registry()[0].get(ven_id)
        if ven is None:
            known = ", ".join(v.ven_id for v in self.vens()[:8]) or "none yet"
            raise AcStoreError(f"no VEN {ven_id!r} in the registry (known: {known}); add it "
                               "with 'erab ac ven add'")  # fmt: skip
        return ven

    def ven_by_fingerprint(self, fingerprint: str) -> Ven | None:
        return self._registry()[1].get(fingerprint)

    def vens(self) -> list[Ven]:
        return [Ven(**dict(r)) for r in self._db.execute("SELECT * FROM vens ORDER BY ven_id")]

    def registered(self, ven_id: str, ven_name: str | None) -> str:
        """Record a registration; the registration id it was given."""
        registration_id = "reg-" + secrets.token_hex(8)
        with self._write() as db:
            db.execute("UPDATE vens SET registration_id=?, ven_name=?, registered_at=?, "
                       "last_seen=? WHERE ven_id=?",
                       (registration_id, ven_name, _now(), _now(), ven_id))  # fmt: skip
        return registration_id

    def forget_registrations(self) -> None:
        """At the VTN's start: every VEN must register again (its report requests and queues
        lived in the previous process), which openleadr asks of a VEN whose registration id is
        unknown (oadrRequestReregistration)."""
        with self._write() as db:
            db.execute("UPDATE vens SET registration_id=NULL")

    def unregistered(self, ven_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE vens SET registration_id=NULL WHERE ven_id=?", (ven_id,))

    def seen(self, ven_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE vens SET last_seen=? WHERE ven_id=?", (_now(), ven_id))

    # -- events -----------------------------------------------------------------------------
    def create_event(self, ven_id: str, target_kw: float, start: datetime, duration: timedelta,
                     *, signal: str = "LOAD_DISPATCH", level: int | None = None,
                     ramp_up_s: float = 0.0, randomise_s: float = 0.0, source: str = "cli",
                     award_id: str | None = None) -> AcEvent:  # fmt: skip
        self.ven(ven_id)  # refuses an unknown VEN, naming the known ones
        if start.tzinfo is None:
            raise AcStoreError(f"start {start.isoformat()} needs a time zone")
        if duration <= timedelta(0) or duration > timedelta(hours=24):
            raise AcStoreError(f"duration {duration} must be more than 0 and at most 24 h")
        if signal not in ("LOAD_DISPATCH", "SIMPLE"):
            raise AcStoreError(f"signal {signal!r}: LOAD_DISPATCH (kW) or SIMPLE (level 0-3)")
        if signal == "SIMPLE" and level not in (0, 1, 2, 3):
            raise AcStoreError(f"a SIMPLE event needs a level 0-3, got {level}")
        if signal == "LOAD_DISPATCH" and not (target_kw == target_kw and target_kw != 0):
            raise AcStoreError(f"target must be a non-zero number of kW, got {target_kw}")
        if ramp_up_s < 0 or randomise_s < 0:
            raise AcStoreError("ramp-up and randomisation must not be negative")
        if start + duration <= datetime.now(UTC):
            raise AcStoreError(f"the window {start.isoformat()} + {duration} is already over")
        event_id = f"ac-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        with self._write() as db:
            db.execute(
                "INSERT INTO events (event_id, ven_id, signal, level, target_kw, start, "
                "duration_s, ramp_up_s, randomise_s, source, created_at, state, award_id) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (event_id, ven_id, signal, level, float(target_kw), start.isoformat(),
                 duration.total_seconds(), ramp_up_s, randomise_s, source, _now(), "new",
                 award_id),
            )  # fmt: skip
        return self.event(event_id)

    def event(self, event_id: str) -> AcEvent:
        row = self._db.execute("SELECT * FROM events WHERE event_id=?", (event_id,)).fetchone()
        if row is None:
            raise AcStoreError(f"no event {event_id!r} (see 'erab ac event list')")
        return _event(row)

    def events(self, *, live: bool = False) -> list[AcEvent]:
        """All events, oldest first; ``live``: only those not yet completed or cancelled."""
        where = f" WHERE state IN ({','.join('?' * len(LIVE))})" if live else ""
        rows = self._db.execute(f"SELECT * FROM events{where} ORDER BY created_at",
                                LIVE if live else ())  # fmt: skip
        return [_event(r) for r in rows]

    def advance(self, event_id: str, trigger: str) -> AcEvent:
        with self._write() as db:
            row = db.execute("SELECT state FROM events WHERE event_id=?", (event_id,)).fetchone()
            if row is None:
                raise AcStoreError(f"no event {event_id!r} (see 'erab ac event list')")
            nxt = EVENT_TRANSITIONS.get((row["state"], trigger))
            if nxt is None:
                raise AcStoreError(f"event {event_id} is {row['state']}: it cannot {trigger}")
            extra = ", modification=modification+1" if trigger == "cancel" else ""
            db.execute(f"UPDATE events SET state=?{extra} WHERE event_id=?", (nxt, event_id))
        return self.event(event_id)

    def modify_event(self, event_id: str, *, target_kw: float | None = None,
                     level: int | None = None, start: datetime | None = None,
                     duration: timedelta | None = None) -> AcEvent:  # fmt: skip
        """Change a live event's target (kW, or level for a SIMPLE one), start or duration:
        a new version (modificationNumber + 1) that the VTN sends at the VEN's next poll; the
        VEN's earlier answer is cleared until it answers the new version."""
        if target_kw is None and level is None and start is None and duration is None:
            raise AcStoreError("give what to change: --kw, --level, --start or --duration")
        event = self.event(event_id)
        if event.signal == "SIMPLE" and target_kw is not None:
            raise AcStoreError(f"event {event_id} sends a SIMPLE level: change it with --level")
        if event.signal == "LOAD_DISPATCH" and level is not None:
            raise AcStoreError(f"event {event_id} sends kW (LOAD_DISPATCH): change it with --kw")
        new_start = start or event.start
        new_duration = duration or event.duration
        if new_start.tzinfo is None:
            raise AcStoreError(f"start {new_start.isoformat()} needs a time zone")
        if new_duration <= timedelta(0) or new_duration > timedelta(hours=24):
            raise AcStoreError(f"duration {new_duration} must be more than 0 and at most 24 h")
        if level is not None and level not in (0, 1, 2, 3):
            raise AcStoreError(f"a SIMPLE event needs a level 0-3, got {level}")
        if target_kw is not None and not (target_kw == target_kw and target_kw != 0):
            raise AcStoreError(f"target must be a non-zero number of kW, got {target_kw}")
        if new_start + new_duration <= datetime.now(UTC):
            raise AcStoreError(f"the window {new_start.isoformat()} + {new_duration} is "
                               "already over")  # fmt: skip
        with self._write() as db:
            row = db.execute("SELECT state FROM events WHERE event_id=?", (event_id,)).fetchone()
            nxt = EVENT_TRANSITIONS.get((row["state"], "modify"))
            if nxt is None:
                raise AcStoreError(f"event {event_id} is {row['state']}: it cannot be modified")
            db.execute(
                "UPDATE events SET state=?, modification=modification+1, target_kw=?, level=?, "
                "start=?, duration_s=?, opt=NULL, opt_detail=NULL, responded_at=NULL "
                "WHERE event_id=?",
                (nxt, float(event.target_kw if target_kw is None else target_kw),
                 event.level if level is None else level, new_start.isoformat(),
                 new_duration.total_seconds(), event_id),
            )  # fmt: skip
        return self.event(event_id)

    def distributed(self, event_id: str) -> None:
        with self._write() as db:
            db.execute("UPDATE events SET distributed_at=COALESCE(distributed_at, ?) "
                       "WHERE event_id=?", (_now(), event_id))  # fmt: skip

    def responded(self, event_id: str, opt: str, detail: str | None) -> None:
        with self._write() as db:
            db.execute("UPDATE events SET opt=?, opt_detail=COALESCE(?, opt_detail), "
                       "responded_at=? WHERE event_id=?",
                       (opt, detail, _now(), event_id))  # fmt: skip

    # -- reports ----------------------------------------------------------------------------
    def add_reports(self, ven_id: str, r_id: str, values: list[tuple[datetime, float]]) -> None:
        now = _now()
        with self._write() as db:
            db.executemany("INSERT INTO reports VALUES (?,?,?,?,?)",
                           [(ven_id, r_id, at.astimezone(UTC).isoformat(), float(v), now)
                            for at, v in values])  # fmt: skip

    def prune_reports(self, before: datetime) -> int:
        """Delete report values measured before ``before``; how many went."""
        with self._write() as db:
            return db.execute("DELETE FROM reports WHERE at < ?", (before.isoformat(),)).rowcount

    def reports(self, ven_id: str, r_id: str | None = None) -> list[tuple[str, datetime, float]]:
        rows = self._db.execute(
            "SELECT r_id, at, value FROM reports WHERE ven_id=?"
            + (" AND r_id=?" if r_id else "") + " ORDER BY at",
            (ven_id, r_id) if r_id else (ven_id,),
        )
        return [(r["r_id"], datetime.fromisoformat(r["at"]), r["value"]) for r in rows]

    def delivery(self, event: AcEvent) -> dict[str, Any]:
        """Delivered kW from the VEN's fleet reports: the mean during the event minus the last
        report before it (within 15 minutes), and its ratio to the target."""
        points = self.reports(event.ven_id, FLEET_R_ID)
        before = [v for _, at, v in points
                  if event.start - DELIVERY_BASELINE <= at < event.start]  # fmt: skip
        during = [v for _, at, v in points if event.start <= at < event.end]
        out: dict[str, Any] = {"reports_during": len(during), "baseline_kw": None,
                               "delivered_kw": None, "ratio": None}  # fmt: skip
        if before and during:
            delivered = sum(during) / len(during) - before[-1]
            out.update(baseline_kw=round(before[-1], 3), delivered_kw=round(delivered, 3),
                       ratio=round(delivered / event.target_kw, 3) if event.target_kw else None)
        return out


def _event(row: sqlite3.Row) -> AcEvent:
    d = dict(row)
    d["start"] = datetime.fromisoformat(d["start"])
    d["duration"] = timedelta(seconds=d.pop("duration_s"))
    return AcEvent(**d)
