"""Numbered schema migrations: the store's schema as a sequence of steps.

Each :class:`Migration` is one step from version ``n - 1`` to ``n``; the table
``schema_migrations`` records every step applied (version, name, POSIX second).  Opening a
store applies the steps it lacks, in order, each inside its own savepoint and all of them
inside one transaction, so a step that fails leaves the file exactly as it was before the
store was opened (SQLite's DDL is transactional; so is PostgreSQL's).

The SQL is kept plain (INTEGER, REAL, TEXT; times as POSIX seconds) so that a PostgreSQL
store can run the same steps; the two SQLite-only spellings it would translate are marked
``-- sqlite:`` (``WITHOUT ROWID``, ``INTEGER PRIMARY KEY`` as an auto-assigned key).

Stores written before migrations existed carry ``store_meta.schema_version = '1'`` and no
``schema_migrations`` table: they are version 1.  ``store_meta.schema_version`` is kept at
the newest version too, so an older erab (which only reads that key) refuses a newer file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One schema step: ``version`` (1, 2, …), a short ``name``, and its SQL statements."""

    version: int
    name: str
    sql: str


class MigrationError(Exception):
    """A migration could not run; the store is left at ``version``."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


class SchemaTooNew(Exception):
    """The store was written by a newer erab (its schema version is past the last known)."""

    def __init__(self, found: int, known: int) -> None:
        super().__init__(f"schema version {found}, newer than this erab knows ({known})")
        self.found = found
        self.known = known


_METER_TABLES = """
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meters (
    meter_key INTEGER PRIMARY KEY,      -- compact surrogate key used by the readings
    meter_id TEXT NOT NULL UNIQUE,
    wrap_kwh REAL
);
CREATE TABLE IF NOT EXISTS meter_readings (
    slot_end INTEGER NOT NULL,          -- POSIX seconds (UTC) of the 30-minute slot end
    meter_key INTEGER NOT NULL REFERENCES meters (meter_key),
    import_kwh REAL,                    -- cumulative, normal direction (NULL: no data)
    export_kwh REAL,                    -- cumulative, reverse direction (NULL: no data)
    read_at INTEGER NOT NULL,
    source TEXT NOT NULL,
    -- unique per (meter, slot_end); slot first so that a collection, which writes one
    -- slot end for the whole fleet, appends to the B-tree instead of scattering into it
    PRIMARY KEY (slot_end, meter_key)
) WITHOUT ROWID;                        -- sqlite: a clustered primary key
CREATE TABLE IF NOT EXISTS meter_actions (
    action_id INTEGER PRIMARY KEY AUTOINCREMENT,
    meter_id TEXT NOT NULL,
    action TEXT NOT NULL,
    params TEXT NOT NULL,
    requested_at INTEGER NOT NULL,
    result TEXT NOT NULL,
    detail TEXT NOT NULL,
    actor TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS meter_actions_by_meter ON meter_actions (meter_id, action_id);
"""

_REGISTRY_TABLES = """
CREATE TABLE customers (
    customer_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE sites (
    site_id TEXT PRIMARY KEY,
    customer_id TEXT REFERENCES customers (customer_id),
    name TEXT NOT NULL,
    kind TEXT NOT NULL,                 -- home, store, office, factory, other
    created_at INTEGER NOT NULL
);
CREATE TABLE gateways (
    gateway_key INTEGER PRIMARY KEY,    -- sqlite: auto-assigned; compact key for telemetry
    gateway_id TEXT NOT NULL UNIQUE,
    site_id TEXT NOT NULL REFERENCES sites (site_id),
    cert_serial TEXT,                   -- hex, of the certificate now in use
    status TEXT NOT NULL,               -- enrolled, online, offline, revoked
    status_since INTEGER NOT NULL,
    last_seen INTEGER,                  -- sent_at of the newest uplink message
    session_at INTEGER                  -- sent_at of the newest hello (current connection)
);
CREATE INDEX gateways_by_site ON gateways (site_id);
CREATE TABLE resources (
    resource_key INTEGER PRIMARY KEY,   -- sqlite: auto-assigned; compact key for telemetry
    resource_id TEXT NOT NULL UNIQUE,
    site_id TEXT NOT NULL REFERENCES sites (site_id),
    gateway_id TEXT NOT NULL REFERENCES gateways (gateway_id),
    device_class TEXT NOT NULL,
    node_id TEXT NOT NULL,              -- ECHONET Lite node identification (EPC 0x83), hex
    eoj TEXT NOT NULL,                  -- class group, class, instance: 6 hex digits
    rated_kw REAL,
    rated_kwh REAL,
    comfort_min_c REAL,
    comfort_max_c REAL,
    soc_reserve_pct REAL,
    soc_max_pct REAL,
    availability TEXT NOT NULL,         -- JSON list of "HH:MM-HH:MM" windows (JST)
    allowed INTEGER NOT NULL,           -- 1: the gateway may control it
    created_at INTEGER NOT NULL,
    UNIQUE (gateway_id, node_id, eoj)
);
CREATE INDEX resources_by_site ON resources (site_id);
CREATE TABLE pending_devices (
    gateway_id TEXT NOT NULL REFERENCES gateways (gateway_id),
    node_id TEXT NOT NULL,
    eoj TEXT NOT NULL,
    device_id TEXT NOT NULL,            -- the gateway's name for it
    rated_power_w REAL,
    name TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (gateway_id, node_id, eoj)
);
CREATE TABLE contracts (
    contract_id TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (customer_id),
    products TEXT NOT NULL,             -- JSON list of product names
    incentive_yen_per_kwh REAL NOT NULL,
    baseline_method TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE alerts (
    alert_id INTEGER PRIMARY KEY AUTOINCREMENT,  -- sqlite: an identity column elsewhere
    raised_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    gateway_id TEXT,
    resource_id TEXT,
    message TEXT NOT NULL,
    cleared_at INTEGER
);
CREATE INDEX alerts_open ON alerts (cleared_at, alert_id);
"""

_INGEST_TABLES = """
CREATE TABLE uplink_seen (              -- the dedup key of every uplink message stored
    gateway_key INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    stored_at INTEGER NOT NULL,
    PRIMARY KEY (gateway_key, seq)
) WITHOUT ROWID;                        -- sqlite: a clustered primary key
CREATE TABLE telemetry_points (
    point_key INTEGER PRIMARY KEY,      -- sqlite: auto-assigned
    name TEXT NOT NULL UNIQUE           -- power_w, soc_pct, room_temp_c, ...
);
CREATE TABLE telemetry (
    measured_at INTEGER NOT NULL,       -- POSIX seconds
    resource_key INTEGER NOT NULL,
    point_key INTEGER NOT NULL,
    value REAL NOT NULL,
    gateway_key INTEGER NOT NULL,
    seq INTEGER NOT NULL,               -- the uplink message it came in
    flagged INTEGER NOT NULL,           -- 1: out of range, kept for inspection, not truth
    -- time first: a batch appends to the B-tree instead of scattering into it
    PRIMARY KEY (measured_at, resource_key, point_key)
) WITHOUT ROWID;                        -- sqlite: a clustered primary key
CREATE TABLE device_states (
    resource_key INTEGER PRIMARY KEY,
    measured_at INTEGER NOT NULL,
    online INTEGER NOT NULL,
    operating INTEGER,
    mode TEXT,
    controlled INTEGER NOT NULL
);
CREATE TABLE site_meter_readings (      -- route B readings the gateways send
    gateway_key INTEGER NOT NULL,
    meter_id TEXT NOT NULL,
    measured_at INTEGER NOT NULL,
    power_w REAL,
    import_kwh REAL,
    export_kwh REAL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (gateway_key, meter_id, measured_at)
);
CREATE TABLE command_acks (
    gateway_key INTEGER NOT NULL,
    command_seq INTEGER NOT NULL,       -- the envelope's sequence number
    seq INTEGER NOT NULL,               -- the uplink message of the acknowledgement
    received_at INTEGER NOT NULL,       -- when the gateway received the command
    rejected TEXT,                      -- why the envelope was refused (no device touched)
    PRIMARY KEY (gateway_key, command_seq)
);
CREATE TABLE command_outcomes (
    gateway_key INTEGER NOT NULL,
    command_seq INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    outcome TEXT NOT NULL,              -- applied, clipped, refused, not_answering
    reason TEXT,
    readback TEXT NOT NULL,             -- JSON object of values read back
    measured_at INTEGER,
    PRIMARY KEY (gateway_key, command_seq, device_id)
);
"""

_SITE_METERS_AND_CAPS = """
ALTER TABLE sites ADD COLUMN meter_id TEXT;
CREATE UNIQUE INDEX sites_by_meter ON sites (meter_id);
ALTER TABLE contracts ADD COLUMN incentive_cap_yen REAL;
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "meter readings, meters, meter actions, settings", _METER_TABLES),
    Migration(
        2,
        "aggregator registry: customers, sites, gateways, resources, contracts, alerts",
        _REGISTRY_TABLES,
    ),
    Migration(
        3,
        "aggregator ingest: uplink dedup, telemetry, device states, route B "
        "readings, command acknowledgements",
        _INGEST_TABLES,
    ),
    # settlement reads each site's meter from the registry; a contract may cap incentives
    Migration(4, "site meters, contract incentive caps", _SITE_METERS_AND_CAPS),
)


def statements(script: str) -> list[str]:
    """The SQL statements of ``script`` (a ``;`` in a comment does not end one)."""
    out: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            out.append(pending)
            pending = ""
    if pending.strip():
        out.append(pending)
    return out


def _table_exists(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return row is not None


def current_version(db: sqlite3.Connection) -> int:
    """The schema version of an open SQLite database (0: empty, nothing applied)."""
    if _table_exists(db, "schema_migrations"):
        row = db.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0)
    if _table_exists(db, "store_meta"):
        # a store from before numbered migrations: only the meter tables existed
        row = db.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            text = str(row[0])
            if not text.isdigit():
                raise MigrationError(f"store_meta.schema_version is {text!r}, not a number", 0)
            return int(text)
    return 0


def check_sequence(migrations: Sequence[Migration]) -> None:
    for number, step in enumerate(migrations, start=1):
        if step.version != number:
            raise ValueError(
                f"migrations must be numbered 1, 2, 3, ... in order; step {number} is "
                f"version {step.version} ({step.name!r})"
            )


def pending(db: sqlite3.Connection, migrations: Sequence[Migration]) -> list[Migration]:
    """The steps ``db`` lacks; :class:`SchemaTooNew` for a store newer than ``migrations``."""
    check_sequence(migrations)
    version = current_version(db)
    if version > len(migrations):
        raise SchemaTooNew(version, len(migrations))
    return list(migrations[version:])


def migrate(db: sqlite3.Connection, migrations: Sequence[Migration], now_s: int) -> list[int]:
    """Bring ``db`` (autocommit connection, no transaction open) up to the last step.

    All pending steps run in one ``BEGIN IMMEDIATE`` transaction, each in a savepoint; a
    failing step raises :class:`MigrationError` after rolling everything back.  Returns the
    versions applied (empty when the store was up to date).
    """
    todo = pending(db, migrations)  # a read: opening an up-to-date store takes no lock
    if not todo:
        return []
    db.execute("BEGIN IMMEDIATE")
    try:
        todo = pending(db, migrations)  # again under the lock: another process may have won
        if not todo:
            db.execute("ROLLBACK")
            return []
        start = current_version(db)
        if start and not _table_exists(db, "schema_migrations"):
            _create_version_table(db)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (start, "before numbered migrations", now_s),
            )
        for step in todo:
            db.execute(f"SAVEPOINT step_{step.version}")
            try:
                for statement in statements(step.sql):
                    db.execute(statement)
                if not _table_exists(db, "schema_migrations"):
                    _create_version_table(db)
                db.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (step.version, step.name, now_s),
                )
            except sqlite3.Error as exc:
                raise MigrationError(
                    f"migration {step.version} ({step.name}) failed: {exc}; nothing was "
                    f"changed, the store stays at version {start}",
                    start,
                ) from exc
            db.execute(f"RELEASE step_{step.version}")
        db.execute(
            "INSERT INTO store_meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(todo[-1].version),),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return [step.version for step in todo]


def _create_version_table(db: sqlite3.Connection) -> None:
    db.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at INTEGER NOT NULL)"
    )
