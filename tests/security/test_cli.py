"""The `erab pki`, `erab audit` and `erab security` commands, run in-process."""

from __future__ import annotations

import json
import sqlite3
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509

from erab.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def add_operator(
    capsys: pytest.CaptureFixture[str],
    home: Path,
    name: str,
    role: str,
    password_file: Path,
    *extra: str,
) -> int:
    """`erab security operator-add` with a password read from ``password_file``."""
    if not password_file.exists():
        password_file.write_text("a long unguessable passphrase\n")
    return run(
        capsys, "security", "operator-add", "--home", str(home), name, "--role", role,
        "--password-file", str(password_file), *extra,
    )[0]  # fmt: skip


def add_admin_and(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path, name: str, role: str
) -> None:
    """The first operator, admin "chief" (recorded as the system user), then ``name``."""
    assert add_operator(capsys, home, "chief", "admin", tmp_path / "pw") == 0
    assert add_operator(capsys, home, name, role, tmp_path / "pw", "--actor", "chief") == 0


@pytest.fixture
def home(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    path = tmp_path / "home"
    code, _, _ = run(capsys, "pki", "init", "--home", str(path))
    assert code == 0
    return path


@pytest.fixture
def enrolled(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code_file = tmp_path / "code.txt"
    assert (
        run(
            capsys,
            "pki",
            "enrol-code",
            "--home",
            str(home),
            "--gateway",
            "gw-1",
            "--site",
            "site-1",
            "--out",
            str(code_file),
        )[0]
        == 0
    )
    assert (
        run(
            capsys,
            "pki",
            "enrol",
            "--home",
            str(home),
            "--gateway",
            "gw-1",
            "--code-file",
            str(code_file),
            "--out-dir",
            str(tmp_path / "gw"),
        )[0]
        == 0
    )
    return tmp_path / "gw"


def test_init_prints_no_private_key_and_keeps_keys_private(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "pki", "init", "--home", str(tmp_path / "h"))
    assert code == 0
    assert "PRIVATE KEY" not in out
    key = tmp_path / "h" / "security" / "pki" / "issuing-ca.key.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert (tmp_path / "h" / "security" / "config.json").exists()


def test_init_twice_is_a_one_line_error(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "pki", "init", "--home", str(home))
    assert code == 2
    assert err.startswith("erab: error: a CA already exists") and err.count("\n") == 1


def test_enrol_code_is_written_to_a_private_file_not_printed(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "code.txt"
    code, out, _ = run(
        capsys,
        "pki",
        "enrol-code",
        "--home",
        str(home),
        "--gateway",
        "gw-9",
        "--site",
        "s-9",
        "--out",
        str(out_file),
    )
    assert code == 0
    secret = out_file.read_text().strip()
    assert len(secret) >= 20 and secret not in out
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600


def test_gateway_enrols_with_its_own_key(enrolled: Path) -> None:
    cert = x509.load_pem_x509_certificate((enrolled / "gw-1.pem").read_bytes())
    serial = format(cert.serial_number, "x")  # the subject names the certificate itself
    assert cert.subject.rfc4514_string() == f"2.5.4.5={serial},OU=site-1,CN=gw-1"
    assert stat.S_IMODE((enrolled / "gw-1.key.pem").stat().st_mode) == 0o600
    assert (enrolled / "ca-bundle.pem").exists() and (enrolled / "ra-command.pub").exists()


def test_spent_code_is_refused_with_a_clear_message(
    home: Path, enrolled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "pki",
        "enrol",
        "--home",
        str(home),
        "--gateway",
        "gw-1",
        "--code-file",
        str(tmp_path / "code.txt"),
        "--out-dir",
        str(tmp_path / "x"),
    )
    assert code == 2
    assert "already used" in err and "ask for a new code" in err


def test_list_json_shows_state(
    home: Path, enrolled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "pki", "list", "--home", str(home), "--json")
    rows = json.loads(out)
    assert code == 0
    assert [(r["gateway_id"], r["site_id"], r["status"]) for r in rows] == [
        ("gw-1", "site-1", "active")
    ]


def test_revoke_updates_registry_crl_and_audit(
    home: Path, enrolled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "pki",
        "revoke",
        "--home",
        str(home),
        "--gateway",
        "gw-1",
        "--reason",
        "stolen",
        "--json",
    )
    assert code == 0
    serial = json.loads(out)["revoked"][0]
    _, out, _ = run(capsys, "pki", "list", "--home", str(home), "--json")
    assert json.loads(out)[0]["status"] == "revoked"
    crl = x509.load_pem_x509_crl((home / "security" / "pki" / "crl.pem").read_bytes())
    assert crl.get_revoked_certificate_by_serial_number(int(serial, 16)) is not None
    _, out, _ = run(capsys, "audit", "list", "--home", str(home), "--kind", "revocation", "--json")
    assert json.loads(out)[-1]["details"] == {"reason": "stolen", "serials": [serial]}


def test_renew_writes_a_new_certificate(
    home: Path, enrolled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = x509.load_pem_x509_certificate((enrolled / "gw-1.pem").read_bytes())
    code, _, _ = run(
        capsys,
        "pki",
        "renew",
        "--home",
        str(home),
        "--serial",
        format(old.serial_number, "x"),
        "--out",
        str(tmp_path / "new.pem"),
    )
    new = x509.load_pem_x509_certificate((tmp_path / "new.pem").read_bytes())
    assert code == 0
    assert new.serial_number != old.serial_number
    # the same gateway and site; the subject's serialNumber follows the certificate
    new_rdns, old_rdns = (c.subject.rfc4514_string().split(",") for c in (new, old))
    assert new_rdns[1:] == old_rdns[1:] and new_rdns[0] == f"2.5.4.5={new.serial_number:x}"


def test_issue_server_certificate(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys,
        "pki",
        "issue",
        "--home",
        str(home),
        "--server",
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
        "--out-dir",
        str(tmp_path / "srv"),
        "--json",
    )
    assert code == 0
    assert json.loads(out)["subject"] == "CN=localhost"
    assert (tmp_path / "srv" / "localhost.key.pem").exists()


def test_issue_gateway_without_csr_explains_what_is_needed(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "pki", "issue", "--home", str(home), "--gateway", "gw-2")
    assert code == 2 and "--csr, --gateway, --site and --out" in err


def test_bad_gateway_id_is_a_one_line_error(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "pki",
        "enrol-code",
        "--home",
        str(home),
        "--gateway",
        "gw 1",
        "--site",
        "s",
        "--out",
        str(tmp_path / "c"),
    )
    assert code == 2 and "invalid gateway id 'gw 1'" in err and err.count("\n") == 1


def test_commands_without_a_ca_say_to_run_init(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "pki", "list", "--home", str(tmp_path / "empty"))
    assert code == 2 and "erab pki init" in err


def test_home_defaults_to_erab_home(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ERAB_HOME", str(tmp_path / "env-home"))
    assert run(capsys, "pki", "init")[0] == 0
    assert (tmp_path / "env-home" / "security" / "pki" / "root-ca.pem").exists()


def test_audit_verify_reports_tampering_by_position(
    home: Path, enrolled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 0 and "intact" in out
    with sqlite3.connect(home / "security" / "audit.sqlite") as db:
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("UPDATE audit_records SET actor='mallory' WHERE position=2")
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home), "--json")
    assert code == 1
    assert json.loads(out)["findings"] == [
        {"position": 2, "problem": "changed", "detail": "content does not match its hash"}
    ]


def test_audit_verify_text_lists_each_problem_by_record(
    home: Path, enrolled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with sqlite3.connect(home / "security" / "audit.sqlite") as db:
        db.execute("DROP TRIGGER audit_records_no_update")
        db.execute("DROP TRIGGER audit_records_no_delete")
        db.execute("UPDATE audit_records SET subject='gw-9' WHERE position=1")
        db.execute("DELETE FROM audit_records WHERE position=2")
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 1
    assert out.splitlines() == [
        "audit log BROKEN: 2 problem(s)",
        "  record 1: changed: content does not match its hash",
        "  record 2: removed: record 2 missing",
    ]


def test_audit_checkpoint_then_verify(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit", "checkpoint", "--home", str(home), "--json")
    assert code == 0 and json.loads(out)["position"] == 1
    _, out, _ = run(capsys, "audit", "verify", "--home", str(home), "--json")
    assert json.loads(out)["checkpoints_checked"] == 2  # pki init's own, then this one


def test_audit_verify_says_when_checkpoint_signatures_were_not_checked(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "audit", "checkpoint", "--home", str(home))
    (home / "security" / "audit-checkpoint.key.pem").unlink()
    code, out, _ = run(capsys, "audit", "verify", "--home", str(home))
    assert code == 0 and "checkpoint signatures NOT checked" in out
    _, out, _ = run(capsys, "audit", "verify", "--home", str(home), "--json")
    assert json.loads(out)["checkpoint_signatures_checked"] is False


def test_audit_list_rejects_unknown_kind(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "audit", "list", "--home", str(home), "--kind", "gossip")
    assert code == 2 and "not one of command" in err


def test_assess_json_flags_missing_operators_then_passes_access_control(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "security", "assess", "--home", str(home), "--json")
    report = json.loads(out)
    access = next(r for r in report["requirements"] if r["id"] == "access-control")
    assert code == 1 and access["status"] == "fail"
    assert Path(report["saved_to"]).exists()
    assert add_operator(capsys, home, "chief", "admin", tmp_path / "pw") == 0
    _, out, _ = run(capsys, "security", "assess", "--home", str(home), "--json")
    access = next(r for r in json.loads(out)["requirements"] if r["id"] == "access-control")
    assert access["status"] == "pass"


def test_tokens_are_written_to_file_and_listed_without_secret(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = tmp_path / "pw"
    password.write_text("a long unguessable passphrase")  # no trailing newline
    add_admin_and(capsys, home, tmp_path, "ops", "operator")
    code, out, _ = run(
        capsys,
        "security",
        "token-issue",
        "--home",
        str(home),
        "--actor",
        "chief",
        "ops",
        "--label",
        "dashboard",
        "--out",
        str(tmp_path / "token"),
    )
    token = (tmp_path / "token").read_text().strip()
    assert code == 0 and token not in out
    _, out, _ = run(capsys, "security", "token-list", "--home", str(home), "--json")
    rows = json.loads(out)
    assert [r["label"] for r in rows] == ["dashboard"] and token.split("_", 2)[2] not in out
    revoke = ["security", "token-revoke", "--home", str(home), "--actor", "chief"]
    assert run(capsys, *revoke, rows[0]["token_id"])[0] == 0
    _, out, _ = run(capsys, "security", "token-list", "--home", str(home), "--json")
    assert json.loads(out)[0]["revoked_at"] is not None


def test_damaged_registry_is_a_one_line_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home / "security" / "registry.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (home / "security" / f"registry.sqlite{suffix}").unlink(missing_ok=True)
    code, _, err = run(capsys, "pki", "list", "--home", str(home))
    assert code == 2
    assert err.startswith("erab: error: security database error") and err.count("\n") == 1


def test_gateway_enrols_over_the_network_with_serve_enrolment(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import re
    import subprocess
    import sys

    code_file = tmp_path / "code.txt"
    run(
        capsys,
        "pki",
        "enrol-code",
        "--home",
        str(home),
        "--gateway",
        "gw-remote",
        "--site",
        "site-far",
        "--out",
        str(code_file),
    )
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erab",
            "pki",
            "serve-enrolment",
            "--home",
            str(home),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        banner = server.stdout.readline()
        match = re.search(r"https://127\.0\.0\.1:(\d+)/enrol", banner)
        assert match, banner + (server.stderr.read() if server.poll() is not None else "")
        bundle = home / "security" / "pki" / "ca-bundle.pem"
        code, out, err = run(
            capsys,
            "pki",
            "enrol",
            "--gateway",
            "gw-remote",
            "--code-file",
            str(code_file),
            "--out-dir",
            str(tmp_path / "gw"),
            "--ra",
            f"127.0.0.1:{match.group(1)}",
            "--ca-bundle",
            str(bundle),
            "--json",
        )
    finally:
        server.terminate()
        server.wait(10)
    assert code == 0, err
    assert json.loads(out)["site_id"] == "site-far"
    assert (tmp_path / "gw" / "ra-command.pub").read_text().strip() == (
        home / "security" / "command-ed25519.pub"
    ).read_text().strip()
    _, listed, _ = run(
        capsys, "pki", "list", "--home", str(home), "--gateway", "gw-remote", "--json"
    )
    assert [r["status"] for r in json.loads(listed)] == ["active"]
    # The service's own server certificate is on record too (every certificate the CA signs).
    _, listed, _ = run(capsys, "pki", "list", "--home", str(home), "--json")
    (server_cert,) = [r for r in json.loads(listed) if r["kind"] == "server"]
    issued = [r for r in _audit_records(home, capsys) if r["details"].get("action") == "issued"]
    assert [(r["details"]["serial"], r["details"]["purpose"]) for r in issued] == [
        (server_cert["serial"], "enrolment service")
    ]


def test_enrol_over_network_needs_the_ra_trust_anchors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "code").write_text("abc")
    code, _, err = run(
        capsys,
        "pki",
        "enrol",
        "--gateway",
        "gw-1",
        "--code-file",
        str(tmp_path / "code"),
        "--out-dir",
        str(tmp_path / "o"),
        "--ra",
        "127.0.0.1:1",
    )
    assert code == 2 and "--ca-bundle" in err


def test_init_tells_a_new_operator_what_to_do_next(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "pki", "init", "--home", str(tmp_path / "new"))
    assert code == 0
    assert "erab security operator-add" in out and "erab pki enrol-code" in out


def test_refused_local_enrolment_is_audited_with_its_reason(
    home: Path, enrolled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--gateway", "gw-1", "--code-file", str(tmp_path / "code.txt")]
    run(capsys, "pki", "enrol", "--home", str(home), *args, "--out-dir", str(tmp_path / "x"))
    _, out, _ = run(capsys, "audit", "list", "--home", str(home), "--kind", "enrolment", "--json")
    outcomes = [(r["details"].get("outcome"), r["details"].get("reason")) for r in json.loads(out)]
    assert outcomes[-2:] == [("enrolled", None), ("refused", "code_spent")]
    assert not (tmp_path / "x").exists()  # nothing written for a refused enrolment


def test_revoke_signs_the_crl_for_the_configured_days_with_the_reason_code(
    home: Path, enrolled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = home / "security" / "config.json"
    config = json.loads(config_file.read_text())
    config["crl_days"] = 2
    config_file.write_text(json.dumps(config))
    code, out, _ = run(
        capsys, "pki", "revoke", "--home", str(home), "--gateway", "gw-1", "--reason",
        "keyCompromise", "--json",
    )  # fmt: skip
    assert code == 0
    crl = x509.load_pem_x509_crl((home / "security" / "pki" / "crl.pem").read_bytes())
    assert crl.next_update_utc is not None
    # valid from 5 minutes back (clock slack) to 2 days ahead
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=2, minutes=5)
    entry = crl.get_revoked_certificate_by_serial_number(int(json.loads(out)["revoked"][0], 16))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise


def test_empty_lists_say_so_and_how_to_add(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, "security", "operator-list", "--home", str(home))
    assert out.startswith("no operators") and "operator-add" in out
    _, out, _ = run(capsys, "security", "token-list", "--home", str(home))
    assert out.strip() == "no API tokens"


def test_assess_names_the_command_that_adds_an_admin(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "security", "assess", "--home", str(home), "--json", "--no-save")
    access = next(r for r in json.loads(out)["requirements"] if r["id"] == "access-control")
    assert code == 1
    assert "erab security operator-add NAME --role admin" in access["checks"][0]["evidence"]
    assert not (home / "security" / "assessments").exists()  # --no-save keeps nothing


def test_disabled_operator_is_listed_and_its_token_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.clock import RealClock
    from erab.security import LoginRefusal, LoginRefused, OperatorDirectory

    home_args = ["--home", str(home), "--actor", "chief"]
    add_admin_and(capsys, home, tmp_path, "ops", "operator")
    run(capsys, "security", "token-issue", *home_args, "ops", "--label", "script",
        "--out", str(tmp_path / "token"))  # fmt: skip
    code, out, _ = run(capsys, "security", "operator-disable", *home_args, "ops")
    assert code == 0 and "ops disabled" in out
    _, out, _ = run(capsys, "security", "operator-list", "--home", str(home), "--json")
    assert {r["name"]: r["disabled"] for r in json.loads(out)} == {"chief": False, "ops": True}
    directory = OperatorDirectory(home / "security" / "operators.sqlite", RealClock())
    with pytest.raises(LoginRefused) as err:
        directory.authenticate_token((tmp_path / "token").read_text().strip())
    assert err.value.reason is LoginRefusal.DISABLED
    code, _, err_text = run(capsys, "security", "operator-disable", *home_args, "nobody")
    assert code == 2 and "no operator named 'nobody'" in err_text


def test_a_reset_password_must_be_changed_unless_kept(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.clock import RealClock
    from erab.security import OperatorDirectory

    home_args = ["--home", str(home), "--actor", "chief"]
    add_admin_and(capsys, home, tmp_path, "ops", "operator")
    (tmp_path / "new").write_text("a second long passphrase\n")
    code, out, _ = run(capsys, "security", "operator-reset-password", *home_args, "ops",
                       "--password-file", str(tmp_path / "new"))  # fmt: skip
    assert code == 0 and "must be changed at the next console login" in out
    _, out, _ = run(capsys, "security", "operator-list", "--home", str(home))
    assert "ops" in out and "(must change password)" in out
    directory = OperatorDirectory(home / "security" / "operators.sqlite", RealClock())
    assert directory.login("ops", "a second long passphrase").must_change_password
    code, _, _ = run(capsys, "security", "operator-reset-password", *home_args, "ops",
                     "--password-file", str(tmp_path / "new"), "--keep")  # fmt: skip
    assert code == 0 and not directory.login("ops", "a second long passphrase").must_change_password
    (tmp_path / "weak").write_text("password\n")
    code, _, err_text = run(capsys, "security", "operator-reset-password", *home_args, "ops",
                            "--password-file", str(tmp_path / "weak"))  # fmt: skip
    assert code == 2 and "12 characters" in err_text
    assert directory.login("ops", "a second long passphrase")  # the old one still stands
    code, _, err_text = run(capsys, "security", "operator-reset-password", *home_args, "nobody",
                            "--password-file", str(tmp_path / "new"))  # fmt: skip
    assert code == 2 and "no operator named 'nobody'" in err_text
    code, _, _ = run(capsys, "security", "operator-add", *home_args, "newbie", "--role",
                     "viewer", "--password-file", str(tmp_path / "new"),
                     "--must-change-password")  # fmt: skip
    assert code == 0 and directory.get("newbie").must_change_password  # type: ignore[union-attr]


def test_token_list_shows_each_tokens_status(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home_args = ["--home", str(home), "--actor", "chief"]
    add_admin_and(capsys, home, tmp_path, "ops", "viewer")
    for label in ("kept", "dropped"):
        run(capsys, "security", "token-issue", *home_args, "ops", "--label", label,
            "--out", str(tmp_path / label))  # fmt: skip
    _, out, _ = run(capsys, "security", "token-list", "--home", str(home), "--json")
    dropped = next(r["token_id"] for r in json.loads(out) if r["label"] == "dropped")
    run(capsys, "security", "token-revoke", *home_args, dropped)
    _, out, _ = run(capsys, "security", "token-list", "--home", str(home), "--json")
    assert {r["label"]: r["status"] for r in json.loads(out)} == {
        "kept": "active",
        "dropped": "revoked",
    }
    _, out, _ = run(capsys, "security", "token-list", "--home", str(home))
    assert "revoked" in out and "active" in out and "token id" in out


def test_crl_resigning_is_valid_for_the_days_asked_and_audited(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "pki", "crl", "--home", str(home), "--days", "3", "--json")
    assert code == 0 and json.loads(out)["revoked"] == 0
    crl = x509.load_pem_x509_crl((home / "security" / "pki" / "crl.pem").read_bytes())
    assert crl.next_update_utc - crl.last_update_utc == timedelta(days=3, minutes=5)  # type: ignore[operator]
    _, out, _ = run(capsys, "audit", "list", "--home", str(home), "--last", "1", "--json")
    assert json.loads(out)[0]["details"]["action"] == "crl_signed"


def test_audit_list_count_is_last_and_the_old_spelling_warns(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "pki", "crl", "--home", str(home))
    code, out, err = run(capsys, "audit", "list", "--home", str(home), "-n", "1", "--json")
    assert code == 0 and len(json.loads(out)) == 1
    assert "-n is deprecated" in err and "use --last" in err


def test_audit_tail_follows_records_appended_after_it_started(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys
    import time

    tail = subprocess.Popen(
        [sys.executable, "-m", "erab", "audit", "tail", "--home", str(home), "--last", "1",
         "--json", "--duration", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert tail.stdout is not None
        first = json.loads(tail.stdout.readline())
        time.sleep(0.3)
        assert run(capsys, "pki", "crl", "--home", str(home))[0] == 0
        followed = json.loads(tail.stdout.readline())
    finally:
        tail.terminate()
        tail.wait(10)
    assert first["details"]["action"] == "ca_initialised"
    assert followed["details"]["action"] == "crl_signed"
    assert followed["position"] == first["position"] + 1


def _enrol_over_network(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, ra: str, bundle: Path
) -> tuple[int, str]:
    (tmp_path / "code").write_text("not-a-real-code")
    code, _, err = run(
        capsys, "pki", "enrol", "--gateway", "gw-1", "--code-file", str(tmp_path / "code"),
        "--out-dir", str(tmp_path / "o"), "--ra", ra, "--ca-bundle", str(bundle),
    )  # fmt: skip
    return code, err


def test_enrol_says_when_the_ra_cannot_be_reached(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    bundle = home / "security" / "pki" / "ca-bundle.pem"
    code, err = _enrol_over_network(capsys, tmp_path, f"127.0.0.1:{port}", bundle)
    assert code == 2 and err.count("\n") == 1
    assert f"cannot reach the RA's enrolment service at 127.0.0.1:{port}" in err
    assert not (tmp_path / "o").exists()


def test_enrol_says_when_the_ra_is_not_the_one_the_bundle_trusts(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.clock import RealClock
    from erab.security import (
        CertificateAuthority,
        EnrolmentServer,
        EnrolmentService,
        SecurityHome,
        server_context,
    )
    from erab.security.pki import certificate_pem, private_key_pem

    ca = CertificateAuthority.open(SecurityHome(home), RealClock())
    issued = ca.issue_server([], ["127.0.0.1"])
    (tmp_path / "ra.pem").write_bytes(certificate_pem(issued.certificate))
    (tmp_path / "ra.key").write_bytes(private_key_pem(issued.private_key))
    context = server_context(
        tmp_path / "ra.pem",
        tmp_path / "ra.key",
        ca.home.ca_bundle,
        require_client_certificate=False,
    )
    server = EnrolmentServer(EnrolmentService(ca), context)
    server.start()
    other = tmp_path / "other-home"
    run(capsys, "pki", "init", "--home", str(other))
    try:
        code, err = _enrol_over_network(
            capsys, tmp_path, f"127.0.0.1:{server.port}",
            other / "security" / "pki" / "ca-bundle.pem",
        )  # fmt: skip
    finally:
        server.close()
    assert code == 2 and err.count("\n") == 1
    assert f"the RA at 127.0.0.1:{server.port} could not be authenticated" in err
    assert "use the RA's own ca-bundle.pem" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["pki", "crl", "--days", "0"],
        ["pki", "crl", "--days", "-3"],
        ["pki", "issue", "--server", "--dns", "localhost", "--out-dir", "srv", "--days", "0"],
        ["pki", "renew", "--serial", "ab", "--out", "new.pem", "--days", "0"],
    ],
)
def test_days_that_are_not_positive_are_refused_naming_the_option(
    home: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # relative output paths land in tmp_path
    crl_before = (home / "security" / "pki" / "crl.pem").read_bytes()
    code, out, err = run(capsys, *argv, "--home", str(home))
    assert code == 2 and out == ""
    assert err.startswith("erab: error: --days must be a positive number of days")
    assert (home / "security" / "pki" / "crl.pem").read_bytes() == crl_before
    assert not (tmp_path / "srv").exists()


def test_server_ip_that_is_not_an_address_is_named(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys, "pki", "issue", "--home", str(home), "--server", "--ip", "999.1.1.1",
        "--out-dir", str(tmp_path / "srv"),
    )  # fmt: skip
    assert code == 2 and "--ip '999.1.1.1' is not an IPv4 or IPv6 address" in err


def test_init_and_enrol_under_umask_000_make_private_folders(tmp_path: Path) -> None:
    import subprocess
    import sys

    def erab(*argv: str) -> None:
        # A login shell with umask 000: what a careless service unit or container gives.
        cmd = " ".join([f"umask 000 && exec {sys.executable} -m erab", *argv])
        proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr

    home = tmp_path / "h"
    erab("pki", "init", "--home", str(home))
    erab("pki", "enrol-code", "--home", str(home), "--gateway", "gw-1", "--site", "s-1",
         "--out", str(tmp_path / "code"))  # fmt: skip
    erab("pki", "enrol", "--home", str(home), "--gateway", "gw-1", "--code-file",
         str(tmp_path / "code"), "--out-dir", str(tmp_path / "gw" / "out"))  # fmt: skip
    security = home / "security"
    for folder in (home, security, security / "pki", security / "pki" / "offline",
                   tmp_path / "gw", tmp_path / "gw" / "out"):  # fmt: skip
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE((tmp_path / "gw" / "out" / "gw-1.key.pem").stat().st_mode) == 0o600


def _audit_records(home: Path, capsys: pytest.CaptureFixture[str]) -> list[dict]:  # type: ignore[type-arg]
    code, out, _ = run(capsys, "audit", "list", "--home", str(home), "--last", "1000", "--json")
    assert code == 0
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.mark.parametrize("hours", ["1e9", "inf", "nan", "0", "-1", "721"])
def test_enrol_code_lifetime_out_of_range_is_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], hours: str
) -> None:
    code, _, err = run(
        capsys, "pki", "enrol-code", "--home", str(home), "--gateway", "gw-1", "--site", "s-1",
        "--out", str(tmp_path / "c"), "--valid-hours", hours,
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("erab: error: --valid-hours must be more than 0 and at most 720")
    assert not (tmp_path / "c").exists()


def test_token_lifetime_out_of_range_is_one_line(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_operator(capsys, home, "chief", "admin", tmp_path / "pw") == 0
    code, _, err = run(
        capsys, "security", "token-issue", "--home", str(home), "chief", "--label", "x",
        "--valid-days", "1e9", "--out", str(tmp_path / "t"),
    )  # fmt: skip
    assert code == 2 and err.startswith("erab: error: --valid-days must be more than 0")


def test_without_operators_the_system_user_is_recorded(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import getpass

    assert run(capsys, "pki", "crl", "--home", str(home))[0] == 0
    assert _audit_records(home, capsys)[-1]["actor"] == f"system:{getpass.getuser()}"


def test_without_operators_a_made_up_actor_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "pki", "crl", "--home", str(home), "--actor", "mallory")
    assert code == 2 and err.count("\n") == 1
    assert "--actor mallory: no operators exist yet" in err
    last = _audit_records(home, capsys)[-1]
    assert (last["actor"], last["details"]["reason"]) == ("mallory", "no_operators")


def test_disabled_operator_cannot_sign_a_crl_and_is_audited(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_admin_and(capsys, home, tmp_path, "sam", "security_officer")
    assert run(capsys, "security", "operator-disable", "--home", str(home), "--actor", "chief",
               "sam")[0] == 0  # fmt: skip
    crl = home / "security" / "pki" / "crl.pem"
    before = crl.read_bytes()
    code, _, err = run(capsys, "pki", "crl", "--home", str(home), "--actor", "sam")
    assert code == 2 and err == "erab: error: --actor: operator 'sam' is disabled\n"
    assert crl.read_bytes() == before
    last = _audit_records(home, capsys)[-1]
    assert last["kind"] == "security_event"
    assert (last["actor"], last["details"]["action"], last["details"]["reason"]) == (
        "sam", "actor_refused", "disabled",
    )  # fmt: skip


def test_viewer_may_not_revoke_but_a_security_officer_may(
    home: Path, enrolled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_admin_and(capsys, home, tmp_path, "vera", "viewer")
    assert add_operator(capsys, home, "sam", "security_officer", tmp_path / "pw",
                        "--actor", "chief") == 0  # fmt: skip
    revoke = ["pki", "revoke", "--home", str(home), "--gateway", "gw-1", "--actor"]
    code, _, err = run(capsys, *revoke, "vera")
    assert code == 2
    assert err == (
        "erab: error: --actor: operator 'vera' (role viewer) may not revoke certificates; "
        "that needs role security_officer or admin\n"
    )
    refused = _audit_records(home, capsys)[-1]
    assert refused["details"]["reason"] == "permission_denied"
    _, listed, _ = run(capsys, "pki", "list", "--home", str(home), "--json")
    assert [r["status"] for r in json.loads(listed)] == ["active"]
    assert run(capsys, *revoke, "sam")[0] == 0
    done = _audit_records(home, capsys)[-1]
    assert (done["kind"], done["actor"]) == ("revocation", "sam")


def test_once_operators_exist_an_unknown_actor_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_operator(capsys, home, "chief", "admin", tmp_path / "pw") == 0
    code, _, err = run(capsys, "pki", "crl", "--home", str(home), "--actor", "ghost")
    assert code == 2 and "no operator named 'ghost'" in err


def test_serve_enrolment_on_a_taken_port_is_one_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        code, _, err = run(capsys, "pki", "serve-enrolment", "--home", str(home),
                           "--port", str(port))  # fmt: skip
    finally:
        taken.close()
    assert code == 2
    assert err == (
        f"erab: error: port {port} on 127.0.0.1 is in use; choose another with --port\n"
    )
    # Nothing was issued for a server that could not start.
    _, listed, _ = run(capsys, "pki", "list", "--home", str(home), "--json")
    assert json.loads(listed) == []


def test_rotate_command_key_keeps_the_old_key_to_verify_and_announce(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.clock import RealClock
    from erab.security import (
        EnvelopeSigner,
        EnvelopeVerifier,
        MemoryVerifierStateStore,
        SecurityHome,
        load_ed25519_key,
        public_key_from_text,
    )
    from erab.security.keys import key_id_of, verification_keys

    sec = SecurityHome(home)
    old_key = load_ed25519_key(sec.command_key)
    clock = RealClock()
    # A gateway enrolled before the rotation trusts only the old key.
    gateway = EnvelopeVerifier("gw-1", clock, MemoryVerifierStateStore(),
                               trusted_key=old_key.public_key())  # fmt: skip
    in_flight = EnvelopeSigner(old_key, clock).sign("gw-1", {"action": "noop"})

    code, out, _ = run(capsys, "pki", "rotate-command-key", "--home", str(home), "--json")
    assert code == 0
    result = json.loads(out)
    new_public = public_key_from_text(sec.command_public_key.read_text().strip())
    assert result["old_key_id"] == key_id_of(old_key.public_key())
    assert result["new_key_id"] == key_id_of(new_public) != result["old_key_id"]
    assert stat.S_IMODE(sec.command_previous_key.stat().st_mode) == 0o600
    trusted = verification_keys(sec.command_key, sec.command_retired_keys, clock.now())
    assert set(trusted) == {result["old_key_id"], result["new_key_id"]}
    # What the old key signed before the rotation still verifies ...
    assert gateway.verify(in_flight).body == {"action": "noop"}
    # ... and the kept key announces the new one, after which the gateway takes commands
    # signed with the new key.
    signer = EnvelopeSigner(load_ed25519_key(sec.command_previous_key), clock)
    signer.sequences.next("gw-1")  # the RA's counter is past the in-flight command
    gateway.verify(signer.announce_next_key("gw-1", new_public))
    signer.switch_to(load_ed25519_key(sec.command_key))
    assert gateway.verify(signer.sign("gw-1", {"action": "on"})).body == {"action": "on"}
    last = _audit_records(home, capsys)[-1]
    assert last["details"]["action"] == "command_key_rotated"
    assert last["details"]["new_key_id"] == result["new_key_id"]


def test_rotating_a_compromised_command_key_drops_it(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.clock import RealClock
    from erab.security import SecurityHome
    from erab.security.keys import verification_keys

    sec = SecurityHome(home)
    code, out, _ = run(capsys, "pki", "rotate-command-key", "--home", str(home), "--compromised",
                       "--json")  # fmt: skip
    assert code == 0
    result = json.loads(out)
    assert not sec.command_previous_key.exists()
    assert set(verification_keys(sec.command_key, sec.command_retired_keys, RealClock().now())) == {
        result["new_key_id"]
    }


def test_rotate_command_key_needs_a_role_that_manages_keys(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_admin_and(capsys, home, tmp_path, "ops", "operator")
    before = (home / "security" / "command-ed25519.pub").read_text()
    code, _, err = run(capsys, "pki", "rotate-command-key", "--home", str(home), "--actor", "ops")
    assert code == 2 and "may not manage keys" in err
    assert (home / "security" / "command-ed25519.pub").read_text() == before


def test_reissue_ca_extends_the_issuing_ca_and_old_certificates_still_chain(
    home: Path, enrolled: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = home / "security" / "pki"
    old_issuing = x509.load_pem_x509_certificate((pki / "issuing-ca.pem").read_bytes())
    gateway_cert = x509.load_pem_x509_certificate((enrolled / "gw-1.pem").read_bytes())
    code, out, _ = run(capsys, "pki", "reissue-ca", "--home", str(home), "--days", "3000",
                       "--json")  # fmt: skip
    assert code == 0
    new_issuing = x509.load_pem_x509_certificate((pki / "issuing-ca.pem").read_bytes())
    root = x509.load_pem_x509_certificate((pki / "root-ca.pem").read_bytes())
    assert json.loads(out)["serial"] == format(new_issuing.serial_number, "x")
    assert new_issuing.serial_number != old_issuing.serial_number
    assert new_issuing.not_valid_after_utc > old_issuing.not_valid_after_utc
    assert new_issuing.not_valid_after_utc <= root.not_valid_after_utc  # capped at the root
    assert new_issuing.public_key() == old_issuing.public_key()
    new_issuing.verify_directly_issued_by(root)
    gateway_cert.verify_directly_issued_by(new_issuing)  # issued before, still chains
    bundle = x509.load_pem_x509_certificates((pki / "ca-bundle.pem").read_bytes())
    assert bundle == [root, new_issuing]
    assert _audit_records(home, capsys)[-1]["details"]["action"] == "issuing_ca_reissued"


def test_reissue_ca_with_a_key_that_is_not_the_root_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erab.security.pki import new_private_key, private_key_pem

    before = (home / "security" / "pki" / "issuing-ca.pem").read_bytes()
    (tmp_path / "other.pem").write_bytes(private_key_pem(new_private_key()))
    code, _, err = run(capsys, "pki", "reissue-ca", "--home", str(home), "--root-key",
                       str(tmp_path / "other.pem"))  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "not the root CA's key" in err
    assert (home / "security" / "pki" / "issuing-ca.pem").read_bytes() == before


def test_login_whoami_logout(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add_operator(capsys, home, "chief", "admin", tmp_path / "pw") == 0
    session = tmp_path / "session"
    code, out, _ = run(capsys, "security", "login", "--home", str(home), "chief",
                       "--password-file", str(tmp_path / "pw"), "--out", str(session))  # fmt: skip
    assert code == 0 and "logged in as chief (admin)" in out
    assert stat.S_IMODE(session.stat().st_mode) == 0o600
    assert session.read_text().strip() not in out
    code, out, _ = run(capsys, "security", "whoami", "--home", str(home), "--token-file",
                       str(session), "--json")  # fmt: skip
    assert code == 0
    who = json.loads(out)
    assert (who["operator"], who["role"], who["label"]) == ("chief", "admin", "login")
    token = session.read_text()
    code, out, _ = run(capsys, "security", "logout", "--home", str(home), "--token-file",
                       str(session))  # fmt: skip
    assert code == 0 and not session.exists()
    session.write_text(token)
    code, _, err = run(capsys, "security", "whoami", "--home", str(home), "--token-file",
                       str(session))  # fmt: skip
    assert code == 2 and err == f"erab: error: API token {who['token_id']} was revoked\n"
    outcomes = [r["details"].get("outcome") for r in _audit_records(home, capsys)
                if r["kind"] == "login"]  # fmt: skip
    assert outcomes == ["success", "success", "success", "token_revoked"]


def test_login_reads_the_password_from_stdin_and_refuses_a_wrong_one(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    assert add_operator(capsys, home, "chief", "admin", tmp_path / "pw") == 0
    login = [sys.executable, "-m", "erab", "security", "login", "--home", str(home), "chief",
             "--out", str(tmp_path / "s")]  # fmt: skip
    good = subprocess.run(login, input="a long unguessable passphrase\n", capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(login, input="not the passphrase\n", capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr == "erab: error: wrong operator name or password\n"
