"""Who is at the console: operator logins, browser sessions, CSRF tokens, and roles.

Logins go to erab's operator accounts (``erab.security.OperatorDirectory``: Argon2id, lock-out,
audit) through a :class:`SecurityDesk`, which the command line builds from the deployment home
(``erab.cli.web.HomeSecurityDesk``): this folder imports only the aggregator (the layers of
ARCHITECTURE.md), so the security core reaches it as an object, not as an import.

ERAB Cyber Security Guideline, access control: every page and every call checks the
operator's role through the permission names of ``erab.security.Permission``.  The session is
a random id in a cookie that scripts cannot read (HttpOnly) and that the browser sends only to
this site (SameSite=Strict; Secure over TLS); every POST carries the session's CSRF token
(OWASP CSRF cheat sheet: synchroniser token pattern), compared in constant time.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

SESSION_COOKIE = "erab_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
IDLE_TIMEOUT_S = 30 * 60.0  # a console left alone logs out
MAX_SESSIONS = 10_000  # anonymous login-page sessions cannot grow memory without bound

# Permission names, as erab.security.Permission spells them (a test checks they match).
VIEW_TELEMETRY = "view_telemetry"
VIEW_EVENTS = "view_events"
MANAGE_DR_EVENTS = "manage_dr_events"
REVOKE_CERTIFICATES = "revoke_certificates"
VIEW_AUDIT_LOG = "view_audit_log"
RUN_ASSESSMENT = "run_assessment"
MANAGE_OPERATORS = "manage_operators"
PERMISSIONS = (VIEW_TELEMETRY, VIEW_EVENTS, MANAGE_DR_EVENTS, REVOKE_CERTIFICATES,
               VIEW_AUDIT_LOG, RUN_ASSESSMENT, MANAGE_OPERATORS)  # fmt: skip


class LoginFailed(Exception):
    """A refused login: the message is safe to show; ``retry_after_s`` when locked out."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ActionRefused(Exception):
    """The security core refused an action (a bad operator name, an unknown gateway, ...)."""


@dataclass(frozen=True)
class Account:
    """An operator as the console sees one: name, role, and the role's permissions."""

    name: str
    role: str
    permissions: frozenset[str]
    must_change_password: bool = False  # nothing but the password page until it is changed

    def may(self, permission: str) -> bool:
        return permission in self.permissions


class SecurityDesk(Protocol):
    """What the console needs of the security core (erab.security) of a deployment home."""

    def login(self, name: str, password: str, *, source: str) -> Account:
        """The operator, or :class:`LoginFailed` (wrong credentials, locked out, disabled)."""
        ...

    def account(self, name: str) -> Account | None:
        """The operator now (a disabled or deleted one: None), re-read on every request so a
        role change or a disable takes effect at once."""
        ...

    def refused(self, account: Account, permission: str, source: str) -> None:
        """Record a refused permission in the audit log."""
        ...

    def certificates(self) -> Mapping[str, Mapping[str, Any]]:
        """Per gateway id: its newest certificate's ``serial``, ``not_after`` (ISO) and
        ``status``."""
        ...

    def revoke_gateway(self, gateway_id: str, reason: str, *, actor: str) -> list[str]:
        """Revoke every certificate of a gateway, tell the broker; the serials revoked."""
        ...

    def assess(self) -> dict[str, Any]:
        """``erab security assess``'s report (``Assessment.to_dict()``)."""
        ...

    def verify_audit(self) -> dict[str, Any]:
        """``erab audit verify``'s result: ``intact``, ``records_checked``, ``findings``."""
        ...

    def audit_tail(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` audit records, oldest first."""
        ...

    def operators(self) -> Sequence[Mapping[str, Any]]:
        """Every operator: ``name``, ``role``, ``disabled``, ``created_at``."""
        ...

    def add_operator(self, name: str, role: str, password: str, *, actor: str) -> None:
        """Add an operator (the password policy applies: :class:`ActionRefused` says why)."""
        ...

    def disable_operator(self, name: str, *, actor: str) -> None: ...

    def change_password(self, name: str, current: str, new: str, *, source: str) -> None:
        """The operator's own change: :class:`LoginFailed` for a wrong current password,
        :class:`ActionRefused` (why) for a new one the policy refuses."""
        ...


@dataclass
class Session:
    session_id: str
    csrf_token: str
    operator: str | None = None  # None: the login page's session, before a login
    last_used_s: float = 0.0
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, message)


class Sessions:
    """Browser sessions in memory (a restart logs everyone out, which is what we want of a
    power plant's console).  Time is the process's monotonic clock: an accelerated
    simulation must not age sessions."""

    def __init__(self, idle_timeout_s: float = IDLE_TIMEOUT_S) -> None:
        self.idle_timeout_s = idle_timeout_s
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def new(self, operator: str | None = None) -> Session:
        if len(self._sessions) >= MAX_SESSIONS:
            self._expire(force=True)
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), operator,
                          time.monotonic())  # fmt: skip
        self._sessions[session.session_id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        now = time.monotonic()
        if session is None or now - session.last_used_s > self.idle_timeout_s:
            self._sessions.pop(session_id, None)
            return None
        session.last_used_s = now
        return session

    def drop(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def drop_operator(self, operator: str) -> None:
        for sid in [k for k, s in self._sessions.items() if s.operator == operator]:
            del self._sessions[sid]

    def _expire(self, *, force: bool = False) -> None:
        now = time.monotonic()
        stale = [k for k, s in self._sessions.items()
                 if now - s.last_used_s > self.idle_timeout_s
                 or (force and s.operator is None)]  # fmt: skip
        for k in stale:
            del self._sessions[k]


def csrf_ok(session: Session | None, presented: str | None) -> bool:
    """Whether ``presented`` is the session's CSRF token (constant-time comparison)."""
    if session is None or not presented:
        return False
    return secrets.compare_digest(session.csrf_token.encode(), presented.encode())
