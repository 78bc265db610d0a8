"""Operators: permissions per role, Argon2id, tokens, login backoff driven by the clock."""

from __future__ import annotations

import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from erab.clock import SimulatedClock
from erab.security import (
    ROLE_PERMISSIONS,
    AuditKind,
    AuditLog,
    LoginPolicy,
    LoginRefusal,
    LoginRefused,
    OperatorDirectory,
    Permission,
    PermissionDenied,
    Role,
    SqliteAuditStore,
)

from .conftest import FAST_ARGON2

PASSWORD = "correct horse battery"


@pytest.fixture
def audit(tmp_path: Path, fixed_clock: SimulatedClock) -> AuditLog:
    return AuditLog(SqliteAuditStore(tmp_path / "audit.sqlite"), fixed_clock)


@pytest.fixture
def directory(tmp_path: Path, fixed_clock: SimulatedClock, audit: AuditLog) -> OperatorDirectory:
    d = OperatorDirectory(
        tmp_path / "operators.sqlite", fixed_clock, audit, argon2_parameters=FAST_ARGON2
    )
    d.add("alice", Role.OPERATOR, PASSWORD)
    return d


def login_outcomes(audit: AuditLog) -> list[str]:
    return [r.details["outcome"] for r in audit.store.records() if r.kind is AuditKind.LOGIN]


@pytest.mark.parametrize(
    ("role", "allowed", "denied"),
    [
        (Role.VIEWER, Permission.VIEW_TELEMETRY, Permission.DISPATCH_COMMANDS),
        (Role.OPERATOR, Permission.DISPATCH_COMMANDS, Permission.REVOKE_CERTIFICATES),
        (Role.SECURITY_OFFICER, Permission.REVOKE_CERTIFICATES, Permission.DISPATCH_COMMANDS),
        (Role.SECURITY_OFFICER, Permission.VIEW_AUDIT_LOG, Permission.MANAGE_OPERATORS),
        (Role.ADMIN, Permission.MANAGE_OPERATORS, None),
    ],
)
def test_each_role_may_do_only_what_its_table_allows(
    role: Role, allowed: Permission, denied: Permission | None
) -> None:
    assert allowed in ROLE_PERMISSIONS[role]
    if denied is not None:
        assert denied not in ROLE_PERMISSIONS[role]


def test_admin_has_every_permission() -> None:
    assert ROLE_PERMISSIONS[Role.ADMIN] == frozenset(Permission)


def test_denied_action_raises_and_is_audited(directory: OperatorDirectory, audit: AuditLog) -> None:
    alice = directory.login("alice", PASSWORD)
    with pytest.raises(PermissionDenied, match="may not revoke certificates"):
        directory.authorize(alice, Permission.REVOKE_CERTIFICATES)
    last = audit.store.head()
    assert last is not None and last.details["action"] == "permission_denied"


def test_password_is_stored_as_argon2id(directory: OperatorDirectory, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "operators.sqlite") as db:
        (stored,) = db.execute("SELECT password_hash FROM operators WHERE name='alice'").fetchone()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_default_argon2id_cost_is_rfc9106_second_recommendation(
    tmp_path: Path, fixed_clock: SimulatedClock
) -> None:
    # RFC 9106 §4: t=3 passes, 64 MiB memory, 4 lanes (tests elsewhere use a cheaper cost).
    d = OperatorDirectory(tmp_path / "ops.sqlite", fixed_clock)
    d.add("dora", Role.VIEWER, PASSWORD)
    with sqlite3.connect(tmp_path / "ops.sqlite") as db:
        (stored,) = db.execute("SELECT password_hash FROM operators WHERE name='dora'").fetchone()
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")


@pytest.mark.parametrize("password", ["short", "password", "elevenchars"])
def test_short_passwords_are_refused(directory: OperatorDirectory, password: str) -> None:
    with pytest.raises(ValueError, match="at least 12 characters"):
        directory.add("bob", Role.VIEWER, password)


def test_password_equal_to_the_name_is_refused(directory: OperatorDirectory) -> None:
    with pytest.raises(ValueError, match="operator's name"):
        directory.add("robert-tables", Role.VIEWER, "Robert-Tables")


def test_default_password_of_sufficient_length_is_refused(directory: OperatorDirectory) -> None:
    with pytest.raises(ValueError, match="common or breached"):
        directory.add("carol", Role.VIEWER, "Administrator")


def test_right_password_logs_in(directory: OperatorDirectory, audit: AuditLog) -> None:
    operator = directory.login("alice", PASSWORD, source="127.0.0.1")
    assert operator.name == "alice" and operator.role is Role.OPERATOR
    assert login_outcomes(audit) == ["success"]


def test_wrong_password_is_refused_and_audited(
    directory: OperatorDirectory, audit: AuditLog
) -> None:
    with pytest.raises(LoginRefused) as err:
        directory.login("alice", "wrong password!")
    assert err.value.reason is LoginRefusal.BAD_CREDENTIALS
    assert login_outcomes(audit) == ["bad_password"]


def test_unknown_operator_gets_the_same_answer_as_a_wrong_password(
    directory: OperatorDirectory, audit: AuditLog
) -> None:
    with pytest.raises(LoginRefused) as err:
        directory.login("mallory", PASSWORD)
    assert err.value.reason is LoginRefusal.BAD_CREDENTIALS
    assert str(err.value) == "wrong operator name or password"
    assert login_outcomes(audit) == ["unknown_operator"]


def test_repeated_failures_lock_out_with_doubling_delay(
    directory: OperatorDirectory, fixed_clock: SimulatedClock
) -> None:
    policy = LoginPolicy()
    for _ in range(policy.free_failures - 1):
        with pytest.raises(LoginRefused) as err:
            directory.login("alice", "nope nope nope")
        assert err.value.retry_after is None
    waits = []
    for _ in range(3):
        with pytest.raises(LoginRefused) as err:
            directory.login("alice", "nope nope nope")
        assert err.value.retry_after is not None
        waits.append(err.value.retry_after)
        fixed_clock.advance(err.value.retry_after.total_seconds())
    assert waits == [timedelta(seconds=2), timedelta(seconds=4), timedelta(seconds=8)]


def test_locked_out_account_refuses_even_the_right_password(
    directory: OperatorDirectory, fixed_clock: SimulatedClock, audit: AuditLog
) -> None:
    for _ in range(3):
        with pytest.raises(LoginRefused):
            directory.login("alice", "nope nope nope")
    with pytest.raises(LoginRefused) as err:
        directory.login("alice", PASSWORD)
    assert err.value.reason is LoginRefusal.LOCKED_OUT
    assert login_outcomes(audit)[-1] == "locked_out"
    fixed_clock.advance(2)
    assert directory.login("alice", PASSWORD).name == "alice"


def test_success_resets_the_failure_count(
    directory: OperatorDirectory, fixed_clock: SimulatedClock
) -> None:
    for _ in range(2):
        with pytest.raises(LoginRefused):
            directory.login("alice", "nope nope nope")
    directory.login("alice", PASSWORD)
    with pytest.raises(LoginRefused) as err:
        directory.login("alice", "nope nope nope")
    assert err.value.retry_after is None  # counting starts again


def test_failed_logins_are_logged_with_count_lockout_and_source(
    directory: OperatorDirectory, audit: AuditLog
) -> None:
    for _ in range(4):
        with pytest.raises(LoginRefused):
            directory.login("alice", "nope nope nope", source="192.0.2.7")
    failures = [
        r.details
        for r in audit.store.records()
        if r.kind is AuditKind.LOGIN and r.details["outcome"] == "bad_password"
    ]
    assert [(d["consecutive_failures"], d["locked_for_s"]) for d in failures] == [
        (1, 0.0),
        (2, 0.0),
        (3, 2.0),
    ]
    assert {d["source"] for d in failures} == {"192.0.2.7"}
    assert login_outcomes(audit)[-1] == "locked_out"  # the 4th came inside the lock-out


def test_lockout_is_capped(directory: OperatorDirectory) -> None:
    assert LoginPolicy().lockout_after(40) == timedelta(minutes=15)


def test_disabled_operator_cannot_log_in(directory: OperatorDirectory) -> None:
    directory.disable("alice")
    with pytest.raises(LoginRefused) as err:
        directory.login("alice", PASSWORD)
    assert err.value.reason is LoginRefusal.DISABLED


# --- API tokens -----------------------------------------------------------------------------


def test_token_authenticates_its_operator(directory: OperatorDirectory) -> None:
    token = directory.issue_token("alice", "dashboard")
    assert directory.authenticate_token(token).name == "alice"


def test_token_list_shows_no_secret(directory: OperatorDirectory, tmp_path: Path) -> None:
    token = directory.issue_token("alice", "dashboard")
    secret = token.split("_", 2)[2]
    listed = directory.tokens("alice")
    assert [t.label for t in listed] == ["dashboard"]
    assert secret not in repr(listed)
    assert secret.encode() not in (tmp_path / "operators.sqlite").read_bytes()


def test_revoked_token_is_refused(directory: OperatorDirectory) -> None:
    token = directory.issue_token("alice", "script")
    directory.revoke_token(directory.tokens("alice")[0].token_id)
    with pytest.raises(LoginRefused) as err:
        directory.authenticate_token(token)
    assert err.value.reason is LoginRefusal.TOKEN_REVOKED


def test_expired_token_is_refused(
    directory: OperatorDirectory, fixed_clock: SimulatedClock
) -> None:
    token = directory.issue_token("alice", "script", valid_for=timedelta(days=1))
    fixed_clock.advance(86400)
    with pytest.raises(LoginRefused) as err:
        directory.authenticate_token(token)
    assert err.value.reason is LoginRefusal.TOKEN_EXPIRED


@pytest.mark.parametrize("token", ["", "erab_", "erab_abc_def", "Bearer xyz"])
def test_made_up_tokens_are_refused(directory: OperatorDirectory, token: str) -> None:
    with pytest.raises(LoginRefused) as err:
        directory.authenticate_token(token)
    assert err.value.reason is LoginRefusal.BAD_CREDENTIALS


def test_token_with_right_id_and_wrong_secret_is_refused(directory: OperatorDirectory) -> None:
    token = directory.issue_token("alice", "script")
    prefix, token_id, _ = token.split("_", 2)
    with pytest.raises(LoginRefused) as err:
        directory.authenticate_token(f"{prefix}_{token_id}_{'x' * 43}")
    assert err.value.reason is LoginRefusal.BAD_CREDENTIALS


# --- default-password check (used by the assessment) -----------------------------------------


def test_password_set_through_the_policy_is_not_a_default(directory: OperatorDirectory) -> None:
    assert directory.uses_default_password("alice") is False


def test_password_hash_swapped_for_a_default_is_found(
    directory: OperatorDirectory, tmp_path: Path
) -> None:
    # Written behind the policy's back after alice's clean hash was remembered.
    weak = FAST_ARGON2.hasher().hash("changeme")
    with sqlite3.connect(tmp_path / "operators.sqlite") as db:
        db.execute("UPDATE operators SET password_hash=? WHERE name='alice'", (weak,))
    assert directory.uses_default_password("alice") is True
    assert directory.uses_default_password("alice") is True  # a match is never remembered


def test_password_equal_to_the_name_written_behind_the_policy_is_found(
    directory: OperatorDirectory, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "operators.sqlite") as db:
        db.execute(
            "INSERT INTO operators (name, role, password_hash, created_at) VALUES"
            " ('bob-the-admin', 'admin', ?, '2026-01-01T00:00:00.000000Z')",
            (FAST_ARGON2.hasher().hash("bob-the-admin"),),
        )
    assert directory.uses_default_password("bob-the-admin") is True


def test_a_clean_hash_costs_argon2id_work_only_once(
    directory: OperatorDirectory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = FAST_ARGON2.hasher().hash("a passphrase nobody guesses")
    with sqlite3.connect(tmp_path / "operators.sqlite") as db:
        db.execute(
            "INSERT INTO operators (name, role, password_hash, created_at) VALUES"
            " ('carol', 'viewer', ?, '2026-01-01T00:00:00.000000Z')",
            (unknown,),
        )
    verifications: list[str] = []
    real = directory._hasher

    class CountingHasher:
        def verify(self, hash_: str, password: str) -> bool:
            verifications.append(password)
            return real.verify(hash_, password)

    monkeypatch.setattr(directory, "_hasher", CountingHasher())
    assert directory.uses_default_password("carol") is False
    first = len(verifications)
    assert first >= 12  # every default and the name were tried
    assert directory.uses_default_password("carol") is False
    assert len(verifications) == first  # the second check was free


@pytest.mark.parametrize(
    ("name", "password", "reason"),
    [
        ("dave", "password1234", "list of common or breached passwords"),
        ("dave", "aaaaaaaaaaaa", 'too guessable: Repeats like "aaa" are easy to guess'),
        ("dave", "Password1234!", "too guessable: This is similar to a commonly used password"),
        ("kaneko", "kaneko20240601", "contains the operator's name"),
        ("kaneko", "KANEKO-kaneko", "contains the operator's name"),
    ],
)
def test_guessable_passwords_are_refused_with_the_reason(
    directory: OperatorDirectory, name: str, password: str, reason: str
) -> None:
    # NIST SP 800-63B §5.1.1.2: long enough is not enough; common, breached and
    # context-specific passwords are refused, and the user is told why.
    assert len(password) >= 12
    with pytest.raises(ValueError, match=re.escape(reason)):
        directory.add(name, Role.VIEWER, password)
    assert directory.get(name) is None


@pytest.mark.parametrize(
    "password", ["a long unguessable passphrase", "kettle orbit 77 lantern", "x" * 11 + "Q7#pLm2v"]
)
def test_long_uncommon_passwords_need_no_composition_rules(
    directory: OperatorDirectory, password: str
) -> None:
    directory.add("erin", Role.VIEWER, password)
    assert directory.login("erin", password).name == "erin"


def test_a_very_long_password_is_judged_and_accepted(directory: OperatorDirectory) -> None:
    # NIST SP 800-63B §5.1.1.2: at least 64 characters must be allowed.
    password = "correct horse battery staple " * 4
    directory.add("frank", Role.VIEWER, password)
    assert directory.login("frank", password).name == "frank"


def test_a_password_someone_else_chose_must_be_changed_and_the_change_is_checked(
    directory: OperatorDirectory, audit: AuditLog
) -> None:
    directory.add("bob", Role.VIEWER, "given by the admin 7", must_change_password=True)
    assert directory.login("bob", "given by the admin 7").must_change_password
    with pytest.raises(LoginRefused):  # the current password is checked (and counted)
        directory.change_password("bob", "not the current one", "quiet harbour lantern 9")
    assert login_outcomes(audit)[-1] == "bad_password"
    with pytest.raises(ValueError, match="differ"):
        directory.change_password("bob", "given by the admin 7", "given by the admin 7")
    with pytest.raises(ValueError):  # the policy applies to the new one
        directory.change_password("bob", "given by the admin 7", "password")
    assert directory.get("bob").must_change_password  # type: ignore[union-attr]
    directory.change_password("bob", "given by the admin 7", "quiet harbour lantern 9")
    bob = directory.login("bob", "quiet harbour lantern 9")
    assert not bob.must_change_password
    with pytest.raises(LoginRefused):
        directory.login("bob", "given by the admin 7")
    actions = [r.details.get("action") for r in audit.store.records()
               if r.kind is AuditKind.SECURITY_EVENT]  # fmt: skip
    assert actions[-1] == "password_changed"


def test_an_admin_reset_sets_the_flag_clears_a_lockout_and_refuses_unknown_names(
    directory: OperatorDirectory, fixed_clock: SimulatedClock
) -> None:
    for _ in range(5):
        with pytest.raises(LoginRefused):
            directory.login("alice", "wrong wrong wrong")
    directory.set_password("alice", "a fresh one from the admin", by="root")
    alice = directory.login("alice", "a fresh one from the admin")
    assert alice.must_change_password
    directory.set_password("alice", "winter orchard compass 5", by="root",
                           must_change_password=False)  # fmt: skip
    assert not directory.login("alice", "winter orchard compass 5").must_change_password
    with pytest.raises(ValueError, match="no operator named 'nobody'"):
        directory.set_password("nobody", "a fresh one from the admin")
    with pytest.raises(ValueError):
        directory.set_password("alice", "admin")


def test_an_operators_file_from_before_the_flag_gains_it(
    tmp_path: Path, fixed_clock: SimulatedClock
) -> None:
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE operators (name TEXT PRIMARY KEY, role TEXT NOT NULL,
            password_hash TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL, failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT);
        INSERT INTO operators (name, role, password_hash, created_at)
            VALUES ('old', 'viewer', 'x', '2026-01-01T00:00:00.000000Z');""")
    db.commit()
    db.close()
    d = OperatorDirectory(path, fixed_clock, argon2_parameters=FAST_ARGON2)
    old = d.get("old")
    assert old is not None and not old.must_change_password and old.role is Role.VIEWER
