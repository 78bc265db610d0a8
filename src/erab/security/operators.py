"""Operators of the RA: roles and permissions, Argon2id passwords, API tokens, login backoff.

ERAB Cyber Security Guideline, access control and logging: each person works under a role
that allows only what the role needs; passwords are stored as Argon2id hashes (RFC 9106);
API tokens are stored as hashes and can be listed and revoked; repeated failed logins are
slowed down (exponential lock-out, timed by the :class:`~erab.clock.Clock`) and audited.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

import argon2

from erab.clock import Clock
from erab.security._common import parse_utc_iso, private_dir, sqlite_connection, utc_iso
from erab.security.audit import AuditKind, AuditLog
from erab.security.identity import check_id


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    SECURITY_OFFICER = "security_officer"
    ADMIN = "admin"


class Permission(StrEnum):
    VIEW_TELEMETRY = "view_telemetry"
    VIEW_EVENTS = "view_events"
    DISPATCH_COMMANDS = "dispatch_commands"
    MANAGE_DR_EVENTS = "manage_dr_events"
    ENROL_GATEWAYS = "enrol_gateways"
    REVOKE_CERTIFICATES = "revoke_certificates"
    MANAGE_KEYS = "manage_keys"  # rotate the RA command key, re-issue the issuing CA
    VIEW_AUDIT_LOG = "view_audit_log"
    RUN_ASSESSMENT = "run_assessment"
    MANAGE_OPERATORS = "manage_operators"
    MANAGE_SETTINGS = "manage_settings"


_VIEW = {Permission.VIEW_TELEMETRY, Permission.VIEW_EVENTS}
# Separation of duties: operators run the plant, security officers run the PKI and the audit
# trail; only admins manage people and settings.
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset(_VIEW),
    Role.OPERATOR: frozenset(_VIEW | {Permission.DISPATCH_COMMANDS, Permission.MANAGE_DR_EVENTS}),
    Role.SECURITY_OFFICER: frozenset(
        _VIEW
        | {
            Permission.ENROL_GATEWAYS,
            Permission.REVOKE_CERTIFICATES,
            Permission.MANAGE_KEYS,
            Permission.VIEW_AUDIT_LOG,
            Permission.RUN_ASSESSMENT,
        }
    ),
    Role.ADMIN: frozenset(Permission),
}

# NIST SP 800-63B §5.1.1.2: at least 8 characters (erab asks 12 of operators of a power
# plant), at least 64 allowed, no composition rules, and candidates checked against a list
# of commonly used, expected or compromised values.
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
# zxcvbn's guess-count score (0-4); 3 means "safely unguessable: moderate protection from
# offline slow-hash scenario" (about 10^8 guesses or more).
MIN_PASSWORD_SCORE = 3
_ZXCVBN_MAX_LENGTH = 72  # zxcvbn refuses longer input; the rest of a password only adds
# Passwords shipped as defaults by common devices and tools; never accepted.
DEFAULT_PASSWORDS = frozenset(
    {
        "admin",
        "password",
        "changeme",
        "erab",
        "root",
        "123456",
        "12345678",
        "administrator",
        "password123",
        "admin123",
        "changeme123",
        "erab-admin",
    }
)


@dataclass(frozen=True)
class Argon2Parameters:
    """Argon2id cost.  The default is RFC 9106's second recommended (memory-constrained) option."""

    time_cost: int = 3
    memory_cost_kib: int = 65536
    parallelism: int = 4

    def hasher(self) -> argon2.PasswordHasher:
        return argon2.PasswordHasher(
            time_cost=self.time_cost,
            memory_cost=self.memory_cost_kib,
            parallelism=self.parallelism,
            type=argon2.Type.ID,
        )


@dataclass(frozen=True)
class LoginPolicy:
    """After ``free_failures`` failures in a row, each further one locks the account for
    ``base_lockout`` doubled per failure, up to ``max_lockout``."""

    free_failures: int = 3
    base_lockout: timedelta = timedelta(seconds=2)
    max_lockout: timedelta = timedelta(minutes=15)

    def lockout_after(self, failures: int) -> timedelta:
        if failures < self.free_failures:
            return timedelta(0)
        doubled: timedelta = self.base_lockout * (2 ** (failures - self.free_failures))
        return min(doubled, self.max_lockout)


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    # A password someone else chose (the demo's, an admin's reset): the operator must pick
    # their own before anything else (ERAB guideline, authentication: no shared initial secret).
    must_change_password: bool = False

    def may(self, permission: Permission) -> bool:
        return not self.disabled and permission in ROLE_PERMISSIONS[self.role]


@dataclass(frozen=True)
class ApiToken:
    """What is kept about a token (never the token itself)."""

    token_id: str
    operator: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


class LoginRefusal(StrEnum):
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED_OUT = "locked_out"
    DISABLED = "disabled"
    TOKEN_REVOKED = "token_revoked"
    TOKEN_EXPIRED = "token_expired"


class LoginRefused(Exception):
    def __init__(
        self, reason: LoginRefusal, message: str, retry_after: timedelta | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.retry_after = retry_after


class PermissionDenied(Exception):
    def __init__(self, operator: Operator, permission: Permission) -> None:
        super().__init__(
            f"operator {operator.name!r} (role {operator.role.value}) may not "
            f"{permission.value.replace('_', ' ')}"
        )
        self.operator = operator
        self.permission = permission


_SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    must_change_password INTEGER NOT NULL DEFAULT 0
);
-- Digests of password hashes known not to be a default password (see uses_default_password).
CREATE TABLE IF NOT EXISTS clean_password_hashes (
    digest TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS api_tokens (
    token_id TEXT PRIMARY KEY,
    operator TEXT NOT NULL REFERENCES operators(name),
    token_hash TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT
);
"""

TOKEN_PREFIX = "erab_"


def password_problem(name: str, password: str) -> str | None:
    """Why ``password`` is not acceptable for operator ``name``, or None if it is.

    NIST SP 800-63B §5.1.1.2: length, then a check against commonly used and breached
    passwords (zxcvbn's frequency lists: 30,000 common passwords plus common words and names)
    and context-specific words (the operator's name); composition rules are not imposed.
    """
    from zxcvbn import zxcvbn
    from zxcvbn.matching import RANKED_DICTIONARIES

    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must be at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must be at most {MAX_PASSWORD_LENGTH} characters"
    lowered = password.lower()
    if lowered in DEFAULT_PASSWORDS or lowered in RANKED_DICTIONARIES["passwords"]:
        return "password is on a list of common or breached passwords; choose another"
    lowered_name = name.lower()
    # A very short name would match inside almost any password; then only equality counts.
    if lowered == lowered_name or (len(lowered_name) >= 3 and lowered_name in lowered):
        return "password contains the operator's name; choose another"
    result = zxcvbn(password[:_ZXCVBN_MAX_LENGTH], user_inputs=[name, "erab"])
    if int(result["score"]) < MIN_PASSWORD_SCORE:
        feedback = result.get("feedback") or {}
        warning = str(feedback.get("warning") or "it is easy to guess").rstrip(".")
        hints = " ".join(str(h) for h in feedback.get("suggestions") or [])
        return f"password is too guessable: {warning}" + (f" ({hints})" if hints else "")
    return None


def roles_that_may(permission: Permission) -> list[Role]:
    """The roles whose table includes ``permission`` (for telling a refused user who may)."""
    return [role for role in Role if permission in ROLE_PERMISSIONS[role]]


def check_password_policy(name: str, password: str) -> None:
    """Raise ``ValueError`` naming the reason unless :func:`password_problem` accepts it."""
    problem = password_problem(name, password)
    if problem is not None:
        raise ValueError(problem)


class OperatorDirectory:
    """Operators and their tokens in one SQLite file; every login outcome is audited."""

    def __init__(
        self,
        path: Path,
        clock: Clock,
        audit: AuditLog | None = None,
        *,
        argon2_parameters: Argon2Parameters | None = None,
        policy: LoginPolicy | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.audit = audit
        self.policy = policy or LoginPolicy()
        self._hasher = (argon2_parameters or Argon2Parameters()).hasher()
        self._dummy_hash: str | None = None
        private_dir(self.path.parent)
        with self._connect() as db:
            db.executescript(_SCHEMA)
            columns = {row[1] for row in db.execute("PRAGMA table_info(operators)")}
            if "must_change_password" not in columns:  # a directory from before the column
                db.execute("ALTER TABLE operators ADD COLUMN"
                           " must_change_password INTEGER NOT NULL DEFAULT 0")  # fmt: skip

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_connection(self.path)

    def _audit(self, kind: AuditKind, actor: str, subject: str, **details: object) -> None:
        if self.audit is not None:
            self.audit.append(kind, actor, subject, dict(details))

    # --- operators -----------------------------------------------------------------------

    def add(self, name: str, role: Role, password: str, *, by: str = "system",
            must_change_password: bool = False) -> Operator:  # fmt: skip
        """Add an operator; ``must_change_password`` when someone else chose the password (the
        operator then has to set their own at the first login before doing anything else)."""
        check_id(name, "operator name")
        role = Role(role)
        check_password_policy(name, password)
        now = self.clock.now()
        password_hash = self._hasher.hash(password)
        try:
            with self._connect() as db:
                db.execute(
                    "INSERT INTO operators (name, role, password_hash, created_at,"
                    " must_change_password) VALUES (?,?,?,?,?)",
                    (name, role.value, password_hash, utc_iso(now), int(must_change_password)),
                )
                # The policy check above already ruled out the defaults for this password.
                _remember_clean(db, name, password_hash)
        except sqlite3.IntegrityError:
            raise ValueError(f"operator {name!r} already exists") from None
        self._audit(AuditKind.SECURITY_EVENT, by, name, action="operator_added", role=role.value,
                    must_change_password=must_change_password)  # fmt: skip
        return Operator(name, role, False, now, must_change_password)

    def get(self, name: str) -> Operator | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT name, role, disabled, created_at, must_change_password FROM operators"
                " WHERE name=?", (name,)
            ).fetchone()  # fmt: skip
        if row is None:
            return None
        return Operator(row[0], Role(row[1]), bool(row[2]), parse_utc_iso(row[3]), bool(row[4]))

    def operators(self) -> list[Operator]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT name, role, disabled, created_at, must_change_password FROM operators"
                " ORDER BY name"
            ).fetchall()
        return [Operator(r[0], Role(r[1]), bool(r[2]), parse_utc_iso(r[3]), bool(r[4]))
                for r in rows]  # fmt: skip

    def set_role(self, name: str, role: Role, *, by: str = "system") -> None:
        with self._connect() as db:
            cur = db.execute("UPDATE operators SET role=? WHERE name=?", (Role(role).value, name))
        if cur.rowcount != 1:
            raise ValueError(f"no operator named {name!r}")
        self._audit(AuditKind.SECURITY_EVENT, by, name, action="role_changed", role=role.value)

    def disable(self, name: str, *, by: str = "system") -> None:
        with self._connect() as db:
            cur = db.execute("UPDATE operators SET disabled=1 WHERE name=?", (name,))
        if cur.rowcount != 1:
            raise ValueError(f"no operator named {name!r}")
        self._audit(AuditKind.SECURITY_EVENT, by, name, action="operator_disabled")

    def set_password(self, name: str, password: str, *, by: str = "system",
                     must_change_password: bool = True) -> None:  # fmt: skip
        """An administrator's reset: the new password (policy-checked), to be changed by the
        operator at the next login unless ``must_change_password`` is False.  Clears a
        lock-out."""
        check_password_policy(name, password)
        password_hash = self._hasher.hash(password)
        with self._connect() as db:
            cur = db.execute(
                "UPDATE operators SET password_hash=?, must_change_password=?, failed_logins=0,"
                " locked_until=NULL WHERE name=?",
                (password_hash, int(must_change_password), name),
            )
            if cur.rowcount == 1:
                _remember_clean(db, name, password_hash)
        if cur.rowcount != 1:
            raise ValueError(f"no operator named {name!r}")
        self._audit(AuditKind.SECURITY_EVENT, by, name, action="password_reset",
                    must_change_password=must_change_password)  # fmt: skip

    def change_password(self, name: str, current: str, new: str, *,
                        source: str = "unknown") -> None:  # fmt: skip
        """The operator's own change: ``current`` must match (a failure counts towards the
        lock-out like a failed login), ``new`` must pass the policy and differ from it."""
        self.login(name, current, source=source)  # verifies, counts failures, audits
        if new == current:
            raise ValueError("the new password must differ from the current one")
        check_password_policy(name, new)
        password_hash = self._hasher.hash(new)
        with self._connect() as db:
            db.execute(
                "UPDATE operators SET password_hash=?, must_change_password=0 WHERE name=?",
                (password_hash, name),
            )
            _remember_clean(db, name, password_hash)
        self._audit(AuditKind.SECURITY_EVENT, name, name, action="password_changed",
                    source=source)  # fmt: skip

    def authorize(self, operator: Operator, permission: Permission) -> None:
        """Raise :class:`PermissionDenied` unless ``operator`` may do ``permission``."""
        if not operator.may(permission):
            self._audit(
                AuditKind.SECURITY_EVENT,
                operator.name,
                permission.value,
                action="permission_denied",
                role=operator.role.value,
            )
            raise PermissionDenied(operator, permission)

    def uses_default_password(self, name: str) -> bool:
        """Whether ``name``'s password is a well-known default or the name itself.

        Each candidate costs one Argon2id verification, so a hash once found clean (or set
        through :meth:`add`, whose policy refuses defaults) is remembered by digest and not
        checked again until the hash changes.
        """
        with self._connect() as db:
            row = db.execute("SELECT password_hash FROM operators WHERE name=?", (name,)).fetchone()
            if row is None:
                return False
            digest = _clean_digest(name, row[0])
            known = db.execute(
                "SELECT 1 FROM clean_password_hashes WHERE digest=?", (digest,)
            ).fetchone()
        if known is not None:
            return False
        if self.password_matches(name, DEFAULT_PASSWORDS | {name, name.lower()}):
            return True
        with self._connect() as db:
            _remember_clean(db, name, row[0])
        return False

    def password_matches(self, name: str, candidates: frozenset[str]) -> bool:
        """Whether the operator's password is one of ``candidates`` (for the assessment)."""
        with self._connect() as db:
            row = db.execute("SELECT password_hash FROM operators WHERE name=?", (name,)).fetchone()
        if row is None:
            return False
        for candidate in candidates:
            try:
                if self._hasher.verify(row[0], candidate):
                    return True
            except argon2.exceptions.VerifyMismatchError:
                continue
        return False

    # --- login ---------------------------------------------------------------------------

    def login(self, name: str, password: str, *, source: str = "unknown") -> Operator:
        """The operator, if the password is right and the account is not locked out."""
        now = self.clock.now()
        with self._connect() as db:
            row = db.execute(
                "SELECT role, password_hash, disabled, created_at, failed_logins, locked_until,"
                " must_change_password FROM operators WHERE name=?",
                (name,),
            ).fetchone()
        if row is None:
            # Verify against a throwaway hash so an unknown name takes as long as a known one.
            if self._dummy_hash is None:
                self._dummy_hash = self._hasher.hash(secrets.token_hex(16))
            with suppress(argon2.exceptions.VerifyMismatchError):
                self._hasher.verify(self._dummy_hash, password)
            self._audit(
                AuditKind.LOGIN, name, "password", outcome="unknown_operator", source=source
            )
            raise LoginRefused(LoginRefusal.BAD_CREDENTIALS, "wrong operator name or password")
        role, password_hash, disabled, created_at, _, locked_until, must_change = row
        if locked_until is not None and now < parse_utc_iso(locked_until):
            wait = parse_utc_iso(locked_until) - now
            self._audit(AuditKind.LOGIN, name, "password", outcome="locked_out", source=source)
            raise LoginRefused(
                LoginRefusal.LOCKED_OUT,
                f"too many failed logins for {name!r}; try again in {wait.total_seconds():.0f} s",
                retry_after=wait,
            )
        try:
            self._hasher.verify(password_hash, password)
        except (argon2.exceptions.VerifyMismatchError, argon2.exceptions.InvalidHashError):
            with self._connect() as db:
                # Counted in the database so concurrent failures all count.
                (failures,) = db.execute(
                    "UPDATE operators SET failed_logins = failed_logins + 1 WHERE name=?"
                    " RETURNING failed_logins",
                    (name,),
                ).fetchone()
                lock = self.policy.lockout_after(failures)
                db.execute(
                    "UPDATE operators SET locked_until=? WHERE name=?",
                    (utc_iso(now + lock) if lock else None, name),
                )
            self._audit(
                AuditKind.LOGIN,
                name,
                "password",
                outcome="bad_password",
                consecutive_failures=failures,
                locked_for_s=lock.total_seconds(),
                source=source,
            )
            raise LoginRefused(
                LoginRefusal.BAD_CREDENTIALS,
                "wrong operator name or password",
                retry_after=lock or None,
            ) from None
        if disabled:
            self._audit(AuditKind.LOGIN, name, "password", outcome="disabled", source=source)
            raise LoginRefused(LoginRefusal.DISABLED, f"operator {name!r} is disabled")
        with self._connect() as db:
            db.execute(
                "UPDATE operators SET failed_logins=0, locked_until=NULL WHERE name=?", (name,)
            )
            if self._hasher.check_needs_rehash(password_hash):
                db.execute(
                    "UPDATE operators SET password_hash=? WHERE name=?",
                    (self._hasher.hash(password), name),
                )
        self._audit(AuditKind.LOGIN, name, "password", outcome="success", source=source)
        return Operator(name, Role(role), bool(disabled), parse_utc_iso(created_at),
                        bool(must_change))  # fmt: skip

    # --- API tokens ----------------------------------------------------------------------

    def issue_token(
        self,
        name: str,
        label: str,
        *,
        valid_for: timedelta | None = timedelta(days=90),
        by: str = "system",
    ) -> str:
        """A new API token for ``name``; only its hash is kept, so show it once."""
        if self.get(name) is None:
            raise ValueError(f"no operator named {name!r}")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        now = self.clock.now()
        with self._connect() as db:
            db.execute(
                "INSERT INTO api_tokens (token_id, operator, token_hash, label, created_at,"
                " expires_at) VALUES (?,?,?,?,?,?)",
                (
                    token_id,
                    name,
                    _token_hash(secret),
                    label,
                    utc_iso(now),
                    None if valid_for is None else utc_iso(now + valid_for),
                ),
            )
        self._audit(AuditKind.SECURITY_EVENT, by, name, action="token_issued", token_id=token_id)
        return f"{TOKEN_PREFIX}{token_id}_{secret}"

    def tokens(self, name: str | None = None) -> list[ApiToken]:
        query = (
            "SELECT token_id, operator, label, created_at, expires_at, revoked_at FROM api_tokens"
        )
        params: tuple[str, ...] = ()
        if name is not None:
            query += " WHERE operator=?"
            params = (name,)
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created_at", params).fetchall()
        return [
            ApiToken(
                r[0],
                r[1],
                r[2],
                parse_utc_iso(r[3]),
                None if r[4] is None else parse_utc_iso(r[4]),
                None if r[5] is None else parse_utc_iso(r[5]),
            )
            for r in rows
        ]

    def revoke_token(self, token_id: str, *, by: str = "system") -> None:
        with self._connect() as db:
            cur = db.execute(
                "UPDATE api_tokens SET revoked_at=? WHERE token_id=? AND revoked_at IS NULL",
                (utc_iso(self.clock.now()), token_id),
            )
        if cur.rowcount != 1:
            raise ValueError(f"no active token with id {token_id!r}")
        self._audit(AuditKind.SECURITY_EVENT, by, token_id, action="token_revoked")

    def authenticate_token(self, token: str, *, source: str = "unknown") -> Operator:
        """The operator a presented API token belongs to, if it is valid now."""
        parts = token[len(TOKEN_PREFIX) :].split("_", 1) if token.startswith(TOKEN_PREFIX) else []
        bad = LoginRefused(LoginRefusal.BAD_CREDENTIALS, "API token not recognised")
        if len(parts) != 2:
            self._audit(AuditKind.LOGIN, "?", "token", outcome="malformed_token", source=source)
            raise bad
        token_id, secret = parts
        with self._connect() as db:
            row = db.execute(
                "SELECT operator, token_hash, expires_at, revoked_at FROM api_tokens"
                " WHERE token_id=?",
                (token_id,),
            ).fetchone()
        if row is None or not secrets.compare_digest(row[1], _token_hash(secret)):
            self._audit(AuditKind.LOGIN, "?", token_id, outcome="bad_token", source=source)
            raise bad
        name, _, expires_at, revoked_at = row
        if revoked_at is not None:
            self._audit(AuditKind.LOGIN, name, token_id, outcome="token_revoked", source=source)
            raise LoginRefused(LoginRefusal.TOKEN_REVOKED, f"API token {token_id} was revoked")
        if expires_at is not None and self.clock.now() >= parse_utc_iso(expires_at):
            self._audit(AuditKind.LOGIN, name, token_id, outcome="token_expired", source=source)
            raise LoginRefused(LoginRefusal.TOKEN_EXPIRED, f"API token {token_id} has expired")
        operator = self.get(name)
        if operator is None or operator.disabled:
            self._audit(AuditKind.LOGIN, name, token_id, outcome="disabled", source=source)
            raise LoginRefused(LoginRefusal.DISABLED, f"operator {name!r} is disabled")
        self._audit(AuditKind.LOGIN, name, token_id, outcome="success", source=source)
        return operator


def _clean_digest(name: str, password_hash: str) -> str:
    # Tied to the candidate list too: adding a default to the list re-checks every hash.
    material = "\n".join([name, password_hash, *sorted(DEFAULT_PASSWORDS)])
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def _remember_clean(db: sqlite3.Connection, name: str, password_hash: str) -> None:
    db.execute(
        "INSERT OR IGNORE INTO clean_password_hashes (digest) VALUES (?)",
        (_clean_digest(name, password_hash),),
    )


def _token_hash(secret: str) -> str:
    # Tokens are 256-bit random: a fast hash is enough (there is nothing to brute-force).
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
