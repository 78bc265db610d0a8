"""The certificate registry: which certificates the RA's CA issued, to whom, and their state.

The broker and the RA consult it after a TLS handshake (is this peer certificate one we
issued, and is it still good?) and the CA writes it when it issues, renews and revokes.
One SQLite file; every time comes from the caller's :class:`~erab.clock.Clock`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from erab.clock import Clock
from erab.security._common import parse_utc_iso, private_dir, sqlite_connection, utc_iso

_SCHEMA = """
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,
    fingerprint_sha256 TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    gateway_id TEXT,
    site_id TEXT,
    subject TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    revoked_at TEXT,
    revocation_reason TEXT,
    renewed_by TEXT,
    last_seen TEXT,
    pem TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_gateway ON certificates(gateway_id);
CREATE TABLE IF NOT EXISTS enrolment_codes (
    code_hash TEXT PRIMARY KEY,
    gateway_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    spent_at TEXT,
    spent_for_serial TEXT
);
CREATE TABLE IF NOT EXISTS gateways (
    gateway_id TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    status TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
"""


class CertificateStatus(StrEnum):
    """State of a certificate at a given time."""

    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    UNKNOWN = "unknown"  # not issued by this CA


class CertificateKind(StrEnum):
    GATEWAY = "gateway"  # TLS client, identifies one gateway at one site
    SERVER = "server"  # TLS server (broker, RA API, VTN)


@dataclass(frozen=True)
class CertificateRecord:
    """One issued certificate as the registry knows it."""

    serial: str  # hex
    fingerprint_sha256: str  # hex of SHA-256 over the DER certificate
    kind: CertificateKind
    gateway_id: str | None
    site_id: str | None
    subject: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked: bool
    revoked_at: datetime | None
    revocation_reason: str | None
    renewed_by: str | None
    last_seen: datetime | None
    pem: str

    def status_at(self, when: datetime) -> CertificateStatus:
        if self.revoked:
            return CertificateStatus.REVOKED
        if when < self.not_before:
            return CertificateStatus.NOT_YET_VALID
        if when >= self.not_after:
            return CertificateStatus.EXPIRED
        return CertificateStatus.ACTIVE


@dataclass(frozen=True)
class EnrolmentCodeRecord:
    code_hash: str
    gateway_id: str
    site_id: str
    created_at: datetime
    expires_at: datetime
    spent_at: datetime | None
    spent_for_serial: str | None


@dataclass(frozen=True)
class GatewayRecord:
    gateway_id: str
    site_id: str
    status: str  # "active" or "revoked"
    enrolled_at: datetime
    updated_at: datetime


def normalise_serial(serial: str) -> str:
    text = serial.strip().lower().removeprefix("0x").replace(":", "")
    return text.lstrip("0") or "0"


def _opt_time(text: str | None) -> datetime | None:
    return None if text is None else parse_utc_iso(text)


class CertificateRegistry:
    """SQLite registry of issued certificates, enrolment codes and enrolled gateways."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = Path(path)
        self.clock = clock
        private_dir(self.path.parent)
        with self._connect() as db:
            db.executescript(_SCHEMA)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_connection(self.path, wal=True)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE): all of it happens, or none."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- certificates -------------------------------------------------------------------

    def record_issued(self, db: sqlite3.Connection, record: CertificateRecord) -> None:
        db.execute(
            "INSERT INTO certificates (serial, fingerprint_sha256, kind, gateway_id, site_id,"
            " subject, not_before, not_after, issued_at, status, pem)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                record.serial,
                record.fingerprint_sha256,
                record.kind.value,
                record.gateway_id,
                record.site_id,
                record.subject,
                utc_iso(record.not_before),
                utc_iso(record.not_after),
                utc_iso(record.issued_at),
                "revoked" if record.revoked else "active",
                record.pem,
            ),
        )

    @staticmethod
    def _row_to_cert(row: tuple[object, ...]) -> CertificateRecord:
        (
            serial,
            fp,
            kind,
            gw,
            site,
            subject,
            nb,
            na,
            issued,
            status,
            rev_at,
            reason,
            renewed_by,
            last_seen,
            pem,
        ) = row
        return CertificateRecord(
            serial=str(serial),
            fingerprint_sha256=str(fp),
            kind=CertificateKind(str(kind)),
            gateway_id=None if gw is None else str(gw),
            site_id=None if site is None else str(site),
            subject=str(subject),
            not_before=parse_utc_iso(str(nb)),
            not_after=parse_utc_iso(str(na)),
            issued_at=parse_utc_iso(str(issued)),
            revoked=status == "revoked",
            revoked_at=_opt_time(None if rev_at is None else str(rev_at)),
            revocation_reason=None if reason is None else str(reason),
            renewed_by=None if renewed_by is None else str(renewed_by),
            last_seen=_opt_time(None if last_seen is None else str(last_seen)),
            pem=str(pem),
        )

    _CERT_COLUMNS = (
        "serial, fingerprint_sha256, kind, gateway_id, site_id, subject, not_before, not_after,"
        " issued_at, status, revoked_at, revocation_reason, renewed_by, last_seen, pem"
    )

    def certificates(
        self, *, gateway_id: str | None = None, kind: CertificateKind | None = None
    ) -> list[CertificateRecord]:
        """All certificates (optionally of one gateway or kind), oldest issue first."""
        query = f"SELECT {self._CERT_COLUMNS} FROM certificates WHERE 1=1"
        params: list[str] = []
        if gateway_id is not None:
            query += " AND gateway_id = ?"
            params.append(gateway_id)
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind.value)
        query += " ORDER BY issued_at, serial"
        with self._connect() as db:
            return [self._row_to_cert(row) for row in db.execute(query, params)]

    def by_serial(self, serial: str) -> CertificateRecord | None:
        """Look up by serial in hex; ``0x``, colons and leading zeros are ignored."""
        with self._connect() as db:
            row = db.execute(
                f"SELECT {self._CERT_COLUMNS} FROM certificates WHERE serial = ?",
                (normalise_serial(serial),),
            ).fetchone()
        return None if row is None else self._row_to_cert(row)

    def by_fingerprint(self, fingerprint_sha256: str) -> CertificateRecord | None:
        with self._connect() as db:
            row = db.execute(
                f"SELECT {self._CERT_COLUMNS} FROM certificates WHERE fingerprint_sha256 = ?",
                (fingerprint_sha256.lower(),),
            ).fetchone()
        return None if row is None else self._row_to_cert(row)

    def status_of(self, fingerprint_sha256: str) -> CertificateStatus:
        """State of the certificate with this fingerprint now (UNKNOWN if never issued)."""
        record = self.by_fingerprint(fingerprint_sha256)
        if record is None:
            return CertificateStatus.UNKNOWN
        return record.status_at(self.clock.now())

    def mark_revoked(
        self, db: sqlite3.Connection, serial: str, reason: str, when: datetime
    ) -> bool:
        """Revoke one certificate; False if it was already revoked."""
        cur = db.execute(
            "UPDATE certificates SET status='revoked', revoked_at=?, revocation_reason=?"
            " WHERE serial=? AND status != 'revoked'",
            (utc_iso(when), reason, serial),
        )
        return cur.rowcount == 1

    def mark_renewed(self, db: sqlite3.Connection, serial: str, new_serial: str) -> None:
        db.execute("UPDATE certificates SET renewed_by=? WHERE serial=?", (new_serial, serial))

    def mark_seen(self, fingerprint_sha256: str) -> None:
        """Note that a peer presented this certificate now (the broker calls this)."""
        with self._connect() as db:
            db.execute(
                "UPDATE certificates SET last_seen=? WHERE fingerprint_sha256=?",
                (utc_iso(self.clock.now()), fingerprint_sha256.lower()),
            )

    def revoked(self) -> list[CertificateRecord]:
        return [c for c in self.certificates() if c.revoked]

    # --- enrolment codes ---------------------------------------------------------------

    def add_enrolment_code(self, record: EnrolmentCodeRecord) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO enrolment_codes (code_hash, gateway_id, site_id, created_at,"
                " expires_at) VALUES (?,?,?,?,?)",
                (
                    record.code_hash,
                    record.gateway_id,
                    record.site_id,
                    utc_iso(record.created_at),
                    utc_iso(record.expires_at),
                ),
            )

    def enrolment_code(self, db: sqlite3.Connection, code_hash: str) -> EnrolmentCodeRecord | None:
        row = db.execute(
            "SELECT code_hash, gateway_id, site_id, created_at, expires_at, spent_at,"
            " spent_for_serial FROM enrolment_codes WHERE code_hash=?",
            (code_hash,),
        ).fetchone()
        if row is None:
            return None
        return EnrolmentCodeRecord(
            code_hash=row[0],
            gateway_id=row[1],
            site_id=row[2],
            created_at=parse_utc_iso(row[3]),
            expires_at=parse_utc_iso(row[4]),
            spent_at=_opt_time(row[5]),
            spent_for_serial=row[6],
        )

    def spend_enrolment_code(
        self, db: sqlite3.Connection, code_hash: str, when: datetime, serial: str
    ) -> bool:
        cur = db.execute(
            "UPDATE enrolment_codes SET spent_at=?, spent_for_serial=?"
            " WHERE code_hash=? AND spent_at IS NULL",
            (utc_iso(when), serial, code_hash),
        )
        return cur.rowcount == 1

    def enrolment_codes(self) -> list[EnrolmentCodeRecord]:
        with self._connect() as db:
            hashes = [r[0] for r in db.execute("SELECT code_hash FROM enrolment_codes")]
            found = [self.enrolment_code(db, h) for h in hashes]
        return [f for f in found if f is not None]

    # --- gateways ----------------------------------------------------------------------

    def set_gateway(
        self, db: sqlite3.Connection, gateway_id: str, site_id: str, status: str, when: datetime
    ) -> None:
        db.execute(
            "INSERT INTO gateways (gateway_id, site_id, status, enrolled_at, updated_at)"
            " VALUES (?,?,?,?,?) ON CONFLICT(gateway_id) DO UPDATE SET site_id=excluded.site_id,"
            " status=excluded.status, updated_at=excluded.updated_at",
            (gateway_id, site_id, status, utc_iso(when), utc_iso(when)),
        )

    def gateways(self) -> list[GatewayRecord]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT gateway_id, site_id, status, enrolled_at, updated_at FROM gateways"
                " ORDER BY gateway_id"
            ).fetchall()
        return [
            GatewayRecord(r[0], r[1], r[2], parse_utc_iso(r[3]), parse_utc_iso(r[4])) for r in rows
        ]

    def gateway(self, gateway_id: str) -> GatewayRecord | None:
        for gw in self.gateways():
            if gw.gateway_id == gateway_id:
                return gw
        return None
