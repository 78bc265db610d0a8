"""``erab pki``, ``erab audit`` and ``erab security``: the security tools.

State lives under ``<home>/security`` (``--home``, default ``$ERAB_HOME``).  Secrets (private
keys, enrolment codes, API tokens) are only ever written to files the user names, never
printed.  Every PKI and operator action is recorded in the audit log.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erab.cli.flags import deprecated_alias

if TYPE_CHECKING:
    from erab.security.audit import AuditLog
    from erab.security.home import SecurityHome


def _guard(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn a damaged or locked database into a one-line error instead of a traceback."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        import sqlite3

        try:
            return handler(args)
        except sqlite3.DatabaseError as exc:
            from erab.cli import CliError

            raise CliError(
                f"security database error ({exc}); check the SQLite files under "
                f"{_home(args).dir} (is another process holding a lock, or a file damaged?)"
            ) from None

    return run


def _add_home(parser: argparse.ArgumentParser, *, actor: bool = True) -> None:
    """``--home``, and ``--actor`` on commands that change state (and so are audited)."""
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="deployment home (default: $ERAB_HOME or ./erab-data); state is in HOME/security",
    )
    if actor:
        parser.add_argument(
            "--actor",
            default=None,
            help="the operator acting, checked against their role and recorded in the audit "
            "log (default: the login name; before any operator exists: system:<login name>)",
        )


def _group(subparsers: Any, name: str, help_text: str, usual_order: str) -> Any:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        help=help_text,
        description=f"{help_text}. {usual_order} State is under $ERAB_HOME/security "
        "(or --home); docs/security.md walks through it from an empty home.",
    )
    parser.set_defaults(group_parser=parser)
    return parser.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def register(subparsers: Any) -> None:
    _register_pki(
        _group(
            subparsers,
            "pki",
            "certificate authority: enrol, issue, revoke",
            "Usual order: init, enrol-code (RA) -> enrol (gateway), list, renew before "
            "expiry, revoke, crl.",
        )
    )
    _register_audit(
        _group(
            subparsers,
            "audit",
            "hash-chained audit log: verify, list",
            "Run 'checkpoint' regularly and 'verify' to find changed, removed or reordered "
            "records.",
        )
    )
    _register_security(
        _group(
            subparsers,
            "security",
            "guideline self-assessment, operators, API tokens",
            "Add an admin with operator-add, then run 'assess' regularly (PDCA).",
        )
    )


def _register_pki(sub: Any) -> None:
    p = sub.add_parser("init", help="create the root and issuing CA, CRL, registry, keys")
    _add_home(p)
    p.add_argument(
        "--organisation",
        default="erab resource aggregator",
        help="organisation named in the CA certificates (default: %(default)s)",
    )
    p.set_defaults(handler=_guard(cmd_pki_init))

    p = sub.add_parser("enrol-code", help="make a one-time enrolment code for a gateway")
    _add_home(p)
    p.add_argument("--gateway", required=True, help="gateway id the code is bound to")
    p.add_argument("--site", required=True, help="site id the gateway serves")
    p.add_argument(
        "--valid-hours",
        type=float,
        default=24.0,
        help="hours until the unused code expires (default: %(default)g)",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="file to write the code to (0600); hand it to the installer, never print it",
    )
    p.set_defaults(handler=_guard(cmd_pki_enrol_code))

    p = sub.add_parser("enrol", help="gateway side: make a key and CSR, redeem an enrolment code")
    _add_home(p)
    p.add_argument(
        "--gateway", required=True, help="this gateway's id (must be the one the code is for)"
    )
    p.add_argument(
        "--code-file", type=Path, required=True, help="file holding the one-time enrolment code"
    )
    p.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="where to write the gateway's key (0600), certificate, CA bundle, RA command key",
    )
    p.add_argument(
        "--days",
        type=int,
        default=None,
        help="certificate lifetime in days (local CA only; default: certificate_days in "
        "config.json)",
    )
    p.add_argument(
        "--ra",
        metavar="HOST:PORT",
        help="enrol over HTTPS with the RA's enrolment service instead of the local CA",
    )
    p.add_argument(
        "--ca-bundle",
        type=Path,
        help="with --ra: the RA's trust anchors (ca-bundle.pem), received out of band",
    )
    p.add_argument("--json", action="store_true", help="print the certificate summary as JSON")
    p.set_defaults(handler=_guard(cmd_pki_enrol))

    p = sub.add_parser("serve-enrolment", help="serve gateway enrolment over HTTPS (POST /enrol)")
    _add_home(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback)")
    p.add_argument("--port", type=int, default=8443, help="TCP port (default: %(default)s)")
    p.add_argument("--cert", type=Path, help="server certificate (default: issue one for --host)")
    p.add_argument("--key", type=Path, help="server key (with --cert)")
    p.add_argument("--days", type=int, default=None, help="lifetime of issued certificates")
    p.set_defaults(handler=_guard(cmd_pki_serve_enrolment))

    p = sub.add_parser("issue", help="issue a gateway cert from a CSR, or a server cert")
    _add_home(p)
    p.add_argument("--csr", type=Path, help="gateway CSR (PEM)")
    p.add_argument("--gateway", help="gateway id to put in the certificate (with --csr)")
    p.add_argument("--site", help="site id to put in the certificate (with --csr)")
    p.add_argument("--server", action="store_true", help="issue a TLS server cert with a new key")
    p.add_argument("--dns", action="append", default=[], help="server DNS name (repeatable)")
    p.add_argument("--ip", action="append", default=[], help="server IP address (repeatable)")
    p.add_argument("--out", type=Path, help="certificate file (gateway)")
    p.add_argument("--out-dir", type=Path, help="directory for server key and cert")
    p.add_argument(
        "--days", type=int, default=None, help="lifetime (default: certificate_days in config)"
    )
    p.add_argument("--json", action="store_true", help="print the certificate summary as JSON")
    p.set_defaults(handler=_guard(cmd_pki_issue))

    p = sub.add_parser("renew", help="renew a gateway certificate before it expires")
    _add_home(p)
    p.add_argument("--serial", required=True, help="serial (hex) of the certificate to renew")
    p.add_argument("--csr", type=Path, help="CSR with the gateway's new key (default: keep key)")
    p.add_argument("--out", type=Path, required=True, help="file for the new certificate")
    p.add_argument(
        "--days", type=int, default=None, help="lifetime (default: certificate_days in config)"
    )
    p.add_argument("--json", action="store_true", help="print the certificate summary as JSON")
    p.set_defaults(handler=_guard(cmd_pki_renew))

    p = sub.add_parser("revoke", help="revoke a certificate or all of a gateway's")
    _add_home(p)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--serial", help="serial (hex) of one certificate, as 'pki list' shows")
    target.add_argument("--gateway", help="revoke every certificate of this gateway")
    p.add_argument(
        "--reason",
        default="unspecified",
        help="why (kept in the registry and audit log); an RFC 5280 reason such as "
        "keyCompromise, superseded, cessationOfOperation, affiliationChanged is also put "
        "on the CRL",
    )
    p.add_argument("--json", action="store_true", help="print what was revoked as JSON")
    p.set_defaults(handler=_guard(cmd_pki_revoke))

    p = sub.add_parser("list", help="list issued certificates and their state")
    _add_home(p, actor=False)
    p.add_argument("--gateway", help="only this gateway's certificates")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=_guard(cmd_pki_list))

    p = sub.add_parser("crl", help="sign and write a fresh CRL")
    _add_home(p)
    p.add_argument(
        "--days", type=int, default=None, help="validity of the CRL (default: crl_days in config)"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_guard(cmd_pki_crl))


    p = sub.add_parser(
        "rotate-command-key", help="replace the RA's command signing key (Ed25519)"
    )
    _add_home(p)
    p.add_argument(
        "--keep-hours",
        type=float,
        default=24.0,
        help="hours the old key stays trusted for verifying what it signed, and kept to "
        "announce the new key to gateways (default: %(default)g; at least the longest command "
        "validity)",
    )
    p.add_argument(
        "--compromised",
        action="store_true",
        help="the old key leaked: drop it at once (not kept, not trusted); gateways need the "
        "new command-ed25519.pub by hand",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_guard(cmd_pki_rotate_command_key))

    p = sub.add_parser(
        "reissue-ca", help="renew the issuing CA certificate (same key) with the offline root key"
    )
    _add_home(p)
    p.add_argument(
        "--root-key",
        type=Path,
        default=None,
        help="the root CA key, brought back from offline storage (default: "
        "HOME/security/pki/offline/root-ca.key.pem)",
    )
    p.add_argument(
        "--days",
        type=int,
        default=None,
        help="lifetime of the new certificate (default: 1825, capped at the root's expiry)",
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_guard(cmd_pki_reissue_ca))


def _register_audit(sub: Any) -> None:
    p = sub.add_parser("verify", help="check the chain; report changed/removed/reordered records")
    _add_home(p, actor=False)
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.set_defaults(handler=_guard(cmd_audit_verify))

    for name, help_text in (
        ("list", "show the latest records"),
        ("tail", "show the latest records, then follow new ones as they are appended"),
    ):
        p = sub.add_parser(name, help=help_text)
        _add_home(p, actor=False)
        p.add_argument("--last", type=int, default=20, help="how many records (default: 20)")
        deprecated_alias(p, "-n", "--count", new="--last", type=int)
        p.add_argument(
            "--kind",
            default=None,
            help="only records of this kind: command, enrolment, revocation, login, security_event",
        )
        p.add_argument(
            "--json",
            action="store_true",
            help="print the records as JSON" + (" (one object per line)" if name == "tail" else ""),
        )
        if name == "tail":
            p.add_argument(
                "--duration",
                type=float,
                default=None,
                help="stop following after this many seconds (default: until Ctrl-C)",
            )
        p.set_defaults(handler=_guard(cmd_audit_list if name == "list" else cmd_audit_tail))

    p = sub.add_parser("checkpoint", help="sign the current chain head")
    _add_home(p)
    p.add_argument("--json", action="store_true", help="print the checkpoint as JSON")
    p.set_defaults(handler=_guard(cmd_audit_checkpoint))


def _register_security(sub: Any) -> None:
    p = sub.add_parser("assess", help="assess the deployment against the guideline")
    _add_home(p)
    p.add_argument("--json", action="store_true", help="print the machine-readable report (JSON)")
    p.add_argument("--no-save", action="store_true", help="do not keep the report")
    p.set_defaults(handler=_guard(cmd_security_assess))

    p = sub.add_parser("operator-add", help="add an operator (password read from a file)")
    _add_home(p)
    p.add_argument("name", help="operator name (letters, digits, '.', '_', '-')")
    p.add_argument(
        "--role",
        required=True,
        choices=["viewer", "operator", "security_officer", "admin"],
        help="what the operator may do (see docs/security.md)",
    )
    p.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="file holding the password (at least 12 characters; one trailing newline is ignored)",
    )
    p.add_argument(
        "--must-change-password",
        action="store_true",
        help="the operator must choose their own password at the first console login "
        "(use it when you chose the password for someone else)",
    )
    p.set_defaults(handler=_guard(cmd_operator_add))

    p = sub.add_parser(
        "operator-reset-password",
        help="set a new password for an operator (read from a file); it must be changed at "
        "the next console login, and a lock-out is cleared",
    )
    _add_home(p)
    p.add_argument("name", help="operator name, as operator-list shows")
    p.add_argument(
        "--password-file",
        type=Path,
        required=True,
        help="file holding the new password (at least 12 characters; one trailing newline is "
        "ignored)",
    )
    p.add_argument(
        "--keep",
        action="store_true",
        help="do not ask for a change at the next login (the operator chose this password)",
    )
    p.set_defaults(handler=_guard(cmd_operator_reset_password))

    p = sub.add_parser("operator-list", help="list operators and their roles")
    _add_home(p, actor=False)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=_guard(cmd_operator_list))

    p = sub.add_parser("operator-disable", help="disable an operator (cannot log in any more)")
    _add_home(p)
    p.add_argument("name", help="operator name, as operator-list shows")
    p.set_defaults(handler=_guard(cmd_operator_disable))

    p = sub.add_parser("token-issue", help="issue an API token (written to a file)")
    _add_home(p)
    p.add_argument("name", help="operator the token acts for")
    p.add_argument("--label", required=True, help="what the token is for (shown in token-list)")
    p.add_argument(
        "--valid-days", type=float, default=90.0, help="days until it expires (default: 90)"
    )
    p.add_argument("--out", type=Path, required=True, help="file to write the token to (0600)")
    p.set_defaults(handler=_guard(cmd_token_issue))

    p = sub.add_parser("login", help="log an operator in with their password; writes an API token")
    _add_home(p, actor=False)
    p.add_argument("name", help="operator name, as operator-list shows")
    p.add_argument(
        "--password-file",
        type=Path,
        default=None,
        help="file holding the password (default: ask on the terminal, or read one line from "
        "standard input when it is not a terminal)",
    )
    p.add_argument(
        "--valid-hours",
        type=float,
        default=8.0,
        help="hours the session token is valid (default: %(default)g)",
    )
    p.add_argument("--out", type=Path, required=True, help="file to write the token to (0600)")
    p.set_defaults(handler=_guard(cmd_login))

    p = sub.add_parser("whoami", help="check an API token: whose it is, role, expiry")
    _add_home(p, actor=False)
    p.add_argument("--token-file", type=Path, required=True, help="file holding the token")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_guard(cmd_whoami))

    p = sub.add_parser("logout", help="revoke the API token in a file and delete the file")
    _add_home(p, actor=False)
    p.add_argument("--token-file", type=Path, required=True, help="file holding the token")
    p.set_defaults(handler=_guard(cmd_logout))

    p = sub.add_parser("token-list", help="list API tokens (never the secrets)")
    _add_home(p, actor=False)
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(handler=_guard(cmd_token_list))

    p = sub.add_parser("token-revoke", help="revoke an API token")
    _add_home(p)
    p.add_argument("token_id", help="token id, as token-list shows")
    p.set_defaults(handler=_guard(cmd_token_revoke))


# --- plumbing -----------------------------------------------------------------------------


def _home(args: argparse.Namespace) -> SecurityHome:
    from erab.security.home import SecurityHome
    from erab.settings import Settings

    home = args.home if args.home is not None else Settings.from_env().home
    return SecurityHome(home)


# What each command needs (values of erab.security.operators.Permission; strings here so
# `erab --help` does not import argon2).
_ENROL = "enrol_gateways"
_REVOKE = "revoke_certificates"
_KEYS = "manage_keys"
_OPERATORS = "manage_operators"
_SETTINGS = "manage_settings"


MAX_CODE_HOURS = 24.0 * 30
MAX_TOKEN_DAYS = 366.0


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _actor(args: argparse.Namespace, permission: str | None = None) -> str:
    """Who is acting, for the audit log, after checking they may (ERAB Cyber Security
    Guideline, access control: each action is attributable to a person allowed to do it).

    Once operators exist, ``--actor`` (default: the login name) must name an enabled operator
    whose role has ``permission``; before any exist, the action is recorded as
    ``system:<login name>``.  A refusal is audited and raised as a one-line CliError.
    """
    from erab.cli import CliError
    from erab.security.operators import Permission, roles_that_may

    home = _home(args)
    claimed: str | None = getattr(args, "actor", None)
    login = _login_name()
    directory = _directory(home) if home.operators_db.exists() else None
    operators = directory.operators() if directory is not None else []
    needed = None if permission is None else Permission(permission)

    def refuse(actor: str, reason: str, message: str) -> CliError:
        details = {"action": "actor_refused", "reason": reason, "login": login}
        if needed is not None:
            details["permission"] = needed.value
        if home.dir.exists():
            from erab.security.audit import AuditKind

            _audit_log(home).append(AuditKind.SECURITY_EVENT, actor, "cli", details)
        return CliError(message)

    if not operators:
        if claimed:
            raise refuse(
                claimed,
                "no_operators",
                f"--actor {claimed}: no operators exist yet, so it cannot be checked; leave "
                f"--actor out (recorded as system:{login}) or add an admin first with "
                "'erab security operator-add NAME --role admin --password-file FILE'",
            )
        return f"system:{login}"
    name = claimed or login
    operator = next((o for o in operators if o.name == name), None)
    if operator is None:
        hint = "" if claimed else f" (login name {login!r}; name an operator with --actor NAME)"
        raise refuse(name, "unknown_operator", f"--actor: no operator named {name!r}{hint}")
    if operator.disabled:
        raise refuse(name, "disabled", f"--actor: operator {name!r} is disabled")
    if needed is not None and not operator.may(needed):
        allowed = " or ".join(r.value for r in roles_that_may(needed))
        raise refuse(
            name,
            "permission_denied",
            f"--actor: operator {name!r} (role {operator.role.value}) may not "
            f"{needed.value.replace('_', ' ')}; that needs role {allowed}",
        )
    return name


def _audit_log(home: SecurityHome) -> AuditLog:
    from erab.clock import RealClock
    from erab.security._common import private_dir
    from erab.security.audit import AuditLog

    private_dir(home.dir)
    # Checkpoints itself (config interval) and keeps audit-head.json: guideline, logging.
    return AuditLog.for_home(home, RealClock())


def _ca(home: SecurityHome) -> Any:
    from erab.clock import RealClock
    from erab.security.pki import CertificateAuthority

    return CertificateAuthority.open(home, RealClock())


def _config(home: SecurityHome) -> Any:
    from erab.security.home import SecurityConfig

    return home.load_config() or SecurityConfig()


def _days(args: argparse.Namespace, default: int) -> int:
    """``--days`` if given (it must be positive), else the configured ``default``."""
    if args.days is None:
        return default
    if args.days <= 0:
        from erab.cli import CliError

        raise CliError(f"--days must be a positive number of days, got {args.days}")
    return int(args.days)


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(text)


def _read_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        from erab.cli import CliError

        raise CliError(f"{what} file {path} not found") from None


def _write_secret(path: Path, data: bytes) -> None:
    from erab.security._common import atomic_write

    atomic_write(path, data, private=True)


def _cert_summary(cert: Any) -> dict[str, Any]:
    from erab.security.identity import PeerIdentity

    ident = PeerIdentity.from_certificate(cert)
    return {
        "serial": ident.serial,
        "fingerprint_sha256": ident.fingerprint_sha256,
        "subject": ident.subject,
        "gateway_id": ident.gateway_id,
        "site_id": ident.site_id,
        "not_after": ident.not_after.isoformat(),
    }


# --- pki ----------------------------------------------------------------------------------


def cmd_pki_init(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from erab.clock import RealClock
    from erab.security.audit import AuditKind
    from erab.security.home import SecurityConfig
    from erab.security.keys import public_key_text, write_ed25519_key
    from erab.security.pki import CertificateAuthority

    home = _home(args)
    actor = _actor(args, _SETTINGS)
    ca = CertificateAuthority.initialise(home, RealClock(), organisation=args.organisation)
    if not home.config_file.exists():
        home.save_config(SecurityConfig())
    for path in (home.audit_key, home.command_key):
        if not path.exists():
            write_ed25519_key(path, Ed25519PrivateKey.generate())
    from erab.security.keys import load_ed25519_key

    command_public = public_key_text(load_ed25519_key(home.command_key).public_key())
    from erab.security._common import atomic_write

    atomic_write(home.command_public_key, (command_public + "\n").encode())
    _audit_log(home).append(
        AuditKind.SECURITY_EVENT,
        actor,
        "ca",
        {"action": "ca_initialised", "issuing_ca": format(ca.issuing_cert.serial_number, "x")},
    )
    print(f"CA created in {home.pki_dir}")
    print(f"  trust anchors: {home.ca_bundle}")
    print(f"  CRL:           {home.crl}")
    print(f"  command key:   {home.command_public_key} (give gateways this public key)")
    print(f"Move {home.root_key} to offline storage; it is only needed to renew the issuing CA.")
    print("Next: add an admin ('erab security operator-add NAME --role admin --password-file F'),")
    print("      then enrol gateways ('erab pki enrol-code --gateway ID --site ID --out FILE').")
    return 0


def cmd_pki_enrol_code(args: argparse.Namespace) -> int:
    from erab.security.audit import AuditKind

    home = _home(args)
    if not 0 < args.valid_hours <= MAX_CODE_HOURS:
        # A code is a bearer secret: it should not outlive the installation visit by much.
        raise ValueError(
            f"--valid-hours must be more than 0 and at most {MAX_CODE_HOURS:g} "
            f"({MAX_CODE_HOURS // 24:g} days), got {args.valid_hours:g}"
        )
    actor = _actor(args, _ENROL)
    code = _ca(home).create_enrolment_code(
        args.gateway, args.site, valid_for=timedelta(hours=args.valid_hours)
    )
    _write_secret(args.out, (code + "\n").encode())
    _audit_log(home).append(
        AuditKind.ENROLMENT,
        actor,
        args.gateway,
        {"action": "code_created", "site_id": args.site, "valid_hours": args.valid_hours},
    )
    print(
        f"enrolment code for gateway {args.gateway} at site {args.site} written to {args.out} "
        f"(valid {args.valid_hours:g} h, one use)"
    )
    return 0


def cmd_pki_enrol(args: argparse.Namespace) -> int:
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from erab.cli import CliError
    from erab.security._common import atomic_write
    from erab.security.enrolment import EnrolmentService, request_enrolment
    from erab.security.identity import check_id
    from erab.security.pki import (
        certificate_pem,
        make_csr,
        new_private_key,
        private_key_pem,
    )

    gateway_id = check_id(args.gateway, "gateway id")
    code = _read_file(args.code_file, "enrolment code").decode("utf-8", "replace").strip()
    key = new_private_key()
    out: Path = args.out_dir
    if out.exists() and not out.is_dir():
        raise CliError(f"--out-dir {out} exists and is not a directory")
    if args.ra:
        # Over the network: the RA's CA, registry and audit log are on the other side.
        if args.ca_bundle is None:
            raise CliError("--ra needs --ca-bundle (the RA's trust anchors) to check the RA")
        host, _, port_text = args.ra.rpartition(":")
        if not host or not port_text.isdigit():
            raise CliError(f"--ra {args.ra!r}: give HOST:PORT, e.g. ra.example.net:8443")
        try:
            result = request_enrolment(host, int(port_text), args.ca_bundle, gateway_id, code, key)
        except ssl.SSLCertVerificationError as exc:
            raise CliError(
                f"the RA at {args.ra} could not be authenticated with --ca-bundle "
                f"{args.ca_bundle} ({exc.verify_message}); use the RA's own ca-bundle.pem"
            ) from None
        except ssl.SSLError as exc:
            raise CliError(f"TLS with the RA at {args.ra} failed ({exc})") from None
        except OSError as exc:
            if not args.ca_bundle.exists():
                raise CliError(f"--ca-bundle {args.ca_bundle} not found") from None
            raise CliError(
                f"cannot reach the RA's enrolment service at {args.ra} "
                f"({exc.strerror or exc}); is 'erab pki serve-enrolment' running there?"
            ) from None
        cert = x509.load_pem_x509_certificate(result.certificate_pem)
        ca_bundle = result.ca_bundle_pem
        command_key = (
            None if result.command_public_key is None else result.command_public_key.encode()
        )
    else:
        home = _home(args)
        ca = _ca(home)
        days = _days(args, _config(home).certificate_days)
        csr = make_csr(key, gateway_id).public_bytes(serialization.Encoding.PEM)
        service = EnrolmentService(ca, _audit_log(home), days=days)
        cert = service.enrol(gateway_id, code, csr, source="local")
        ca_bundle = home.ca_bundle.read_bytes()
        command_key = (
            home.command_public_key.read_bytes() if home.command_public_key.exists() else None
        )
    atomic_write(out / f"{gateway_id}.key.pem", private_key_pem(key), private=True)
    atomic_write(out / f"{gateway_id}.pem", certificate_pem(cert))
    atomic_write(out / "ca-bundle.pem", ca_bundle)
    if command_key is not None:
        atomic_write(out / "ra-command.pub", command_key.strip() + b"\n")
    summary = _cert_summary(cert)
    _emit(
        args,
        summary,
        f"gateway {gateway_id} enrolled for site {summary['site_id']}: certificate "
        f"{summary['serial']} valid until {summary['not_after']}; files in {out}",
    )
    return 0


def cmd_pki_serve_enrolment(args: argparse.Namespace) -> int:
    from erab.cli import CliError
    from erab.security._common import atomic_write
    from erab.security.audit import AuditKind
    from erab.security.enrolment import EnrolmentServer, EnrolmentService
    from erab.security.pki import certificate_pem, private_key_pem
    from erab.security.tls import server_context

    home = _home(args)
    ca = _ca(home)
    if (args.cert is None) != (args.key is None):
        raise CliError("give both --cert and --key, or neither (a certificate is then issued)")
    actor = _actor(args, _ENROL)
    days = _days(args, _config(home).certificate_days)
    # Refuse a taken port before a server certificate is issued for nothing.
    _check_listen(args.host, args.port)
    if args.cert is None:
        import ipaddress

        try:
            ips, dns = [str(ipaddress.ip_address(args.host))], []
        except ValueError:
            ips, dns = [], [args.host]
        issued = ca.issue_server(dns, ips)
        cert_path = home.dir / "enrolment-server.pem"
        key_path = home.dir / "enrolment-server.key.pem"
        atomic_write(cert_path, certificate_pem(issued.certificate))
        atomic_write(key_path, private_key_pem(issued.private_key), private=True)
        # ERAB Cyber Security Guideline, logging: every certificate the CA issues is recorded.
        summary = _cert_summary(issued.certificate)
        _audit_log(home).append(
            AuditKind.ENROLMENT,
            actor,
            summary["subject"],
            {"action": "issued", "purpose": "enrolment service", **summary},
        )
    else:
        cert_path, key_path = args.cert, args.key
    context = server_context(cert_path, key_path, home.ca_bundle, require_client_certificate=False)
    try:
        server = EnrolmentServer(
            EnrolmentService(ca, _audit_log(home), days=days), context, args.host, args.port
        )
    except OSError as exc:
        raise CliError(_listen_problem(args.host, args.port, exc)) from None
    print(
        f"enrolment service on https://{args.host}:{server.port}/enrol "
        f"(gateways need {home.ca_bundle}); Ctrl-C to stop",
        flush=True,
    )
    try:
        server.serve_forever()
    finally:
        server.close()
    return 0


def _listen_problem(host: str, port: int, exc: OSError) -> str:
    import errno

    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; choose another with --port"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {port} on {host}; use a port above 1023"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine; choose another with --host"
    return f"cannot listen on {host} port {port} ({exc.strerror or exc})"


def _check_listen(host: str, port: int) -> None:
    """Raise a one-line CliError unless a TCP server could listen on ``host``:``port`` now."""
    import socket

    from erab.cli import CliError

    if not 0 <= port <= 65535:
        raise CliError(f"--port must be 0-65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise CliError(f"--host {host!r} cannot be resolved ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        # The same option the HTTP server sets, so a closed connection in TIME_WAIT is no clash.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    except OSError as exc:
        raise CliError(_listen_problem(host, port, exc)) from None
    finally:
        probe.close()


def _report_issued(
    args: argparse.Namespace,
    home: SecurityHome,
    actor: str,
    cert: Any,
    action: str,
    text: Callable[[dict[str, Any]], str],
    **extra: Any,
) -> int:
    """Audit a certificate the CA just issued and tell the user (text or --json)."""
    from erab.security.audit import AuditKind

    summary = _cert_summary(cert)
    _audit_log(home).append(
        AuditKind.ENROLMENT,
        actor,
        summary["gateway_id"] or summary["subject"],
        {"action": action, **extra, **summary},
    )
    _emit(args, summary, text(summary))
    return 0


def cmd_pki_issue(args: argparse.Namespace) -> int:
    from erab.cli import CliError
    from erab.security._common import atomic_write
    from erab.security.pki import certificate_pem, private_key_pem

    home = _home(args)
    ca = _ca(home)
    days = _days(args, _config(home).certificate_days)
    actor = _actor(args, _ENROL)
    if args.server:
        if args.out_dir is None:
            raise CliError("--server needs --out-dir for the new key and certificate")
        import ipaddress

        for address in args.ip:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise CliError(f"--ip {address!r} is not an IPv4 or IPv6 address") from None
        issued = ca.issue_server(args.dns, args.ip, days=days)
        name = (args.dns or args.ip)[0]
        key_path = args.out_dir / f"{name}.key.pem"
        cert_path = args.out_dir / f"{name}.pem"
        atomic_write(key_path, private_key_pem(issued.private_key), private=True)
        atomic_write(cert_path, certificate_pem(issued.certificate))
        return _report_issued(
            args,
            home,
            actor,
            issued.certificate,
            "issued",
            lambda s: f"server certificate {s['serial']} for {name}: {cert_path}, key {key_path}",
        )
    if args.csr is None or args.gateway is None or args.site is None or args.out is None:
        raise CliError(
            "a gateway certificate needs --csr, --gateway, --site and --out "
            "(or use --server with --dns/--ip)"
        )
    cert = ca.issue_gateway(_read_file(args.csr, "CSR"), args.gateway, args.site, days=days)
    atomic_write(args.out, certificate_pem(cert))
    return _report_issued(
        args,
        home,
        actor,
        cert,
        "issued",
        lambda s: f"gateway certificate {s['serial']} for {args.gateway}: {args.out}",
    )


def cmd_pki_renew(args: argparse.Namespace) -> int:
    from erab.security._common import atomic_write
    from erab.security.pki import certificate_pem
    from erab.security.registry import normalise_serial

    home = _home(args)
    csr = None if args.csr is None else _read_file(args.csr, "CSR")
    days = _days(args, _config(home).certificate_days)
    old_serial = normalise_serial(args.serial)
    actor = _actor(args, _ENROL)
    cert = _ca(home).renew(old_serial, csr, days=days)
    atomic_write(args.out, certificate_pem(cert))
    return _report_issued(
        args,
        home,
        actor,
        cert,
        "renewed",
        lambda s: (
            f"certificate {old_serial} renewed as {s['serial']} (until "
            f"{s['not_after']}): {args.out}; the gateway can switch to it at any time before "
            "the old one expires"
        ),
        old_serial=old_serial,
    )


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    from erab.security.audit import AuditKind

    home = _home(args)
    ca = _ca(home)
    crl_days = _config(home).crl_days
    actor = _actor(args, _REVOKE)
    if args.serial:
        record = ca.revoke(args.serial.lower(), args.reason, crl_days=crl_days)
        serials = [record.serial]
        subject = record.gateway_id or record.subject
    else:
        serials = ca.revoke_gateway(args.gateway, args.reason, crl_days=crl_days)
        subject = args.gateway
    _audit_log(home).append(
        AuditKind.REVOCATION,
        actor,
        subject,
        {"serials": serials, "reason": args.reason},
    )
    broker = _reload_broker(home)
    _emit(
        args,
        {"revoked": serials, "subject": subject, "crl": str(home.crl), "broker": broker},
        f"revoked {len(serials)} certificate(s) of {subject}: {', '.join(serials) or '-'}; "
        f"CRL rewritten: {home.crl}; broker: {broker}",
    )
    return 0


def _reload_broker(home: SecurityHome) -> str:
    """Give the home's embedded broker the registry's new permissions (a revoked gateway is
    cut off, also on an open connection); say what happened, in a few words."""
    from erab.bus.broker import BrokerError, regenerate_and_reload
    from erab.cli import CliError

    try:
        result = regenerate_and_reload(home.home)
    except BrokerError as exc:
        raise CliError(
            f"revoked, but the broker did not take the new permissions: {exc}; "
            "run 'erab broker reload'"
        ) from exc
    if not result.prepared:
        return "none in this home (reload other brokers' CRL and ACLs yourself)"
    if not result.reloaded:
        return "permissions rewritten; it is not running, its next start uses them"
    return f"reloaded (pid {result.pid}); {len(result.gateways)} gateway(s) admitted"


def cmd_pki_list(args: argparse.Namespace) -> int:
    from erab.clock import RealClock
    from erab.security.registry import CertificateRegistry

    home = _home(args)
    if not home.registry_db.exists():
        from erab.cli import CliError

        raise CliError(f"no registry in {home.dir}; run 'erab pki init' first")
    clock = RealClock()
    registry = CertificateRegistry(home.registry_db, clock)
    now = clock.now()
    rows = [
        {
            "serial": c.serial,
            "kind": c.kind.value,
            "gateway_id": c.gateway_id,
            "site_id": c.site_id,
            "status": c.status_at(now).value,
            "not_after": c.not_after.isoformat(),
            "fingerprint_sha256": c.fingerprint_sha256,
            "renewed_by": c.renewed_by,
            "revocation_reason": c.revocation_reason,
        }
        for c in registry.certificates(gateway_id=args.gateway)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no certificates")
        return 0
    print(f"{'serial':<40} {'kind':<8} {'gateway':<16} {'site':<12} {'status':<14} not after")
    for r in rows:
        print(
            f"{r['serial']:<40} {r['kind']:<8} {r['gateway_id'] or '-':<16} "
            f"{r['site_id'] or '-':<12} {r['status']:<14} {r['not_after']}"
        )
    return 0


def cmd_pki_crl(args: argparse.Namespace) -> int:
    from erab.security.audit import AuditKind

    home = _home(args)
    days = _days(args, _config(home).crl_days)
    actor = _actor(args, _REVOKE)
    crl = _ca(home).write_crl(days=days)
    next_update = crl.next_update_utc.isoformat() if crl.next_update_utc else None
    _audit_log(home).append(
        AuditKind.SECURITY_EVENT,
        actor,
        "crl",
        {"action": "crl_signed", "revoked": len(list(crl)), "next_update": next_update},
    )
    _emit(
        args,
        {"crl": str(home.crl), "revoked": len(list(crl)), "next_update": next_update},
        f"CRL with {len(list(crl))} revoked certificate(s) written to {home.crl}, "
        f"valid until {next_update}",
    )
    return 0


# --- audit --------------------------------------------------------------------------------


def _require_audit(home: SecurityHome) -> None:
    if not home.audit_db.exists():
        from erab.cli import CliError

        raise CliError(f"no audit log at {home.audit_db}; run 'erab pki init' first")


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from erab.security.audit import home_has_security_state, verify_home_audit

    home = _home(args)
    if not home_has_security_state(home):
        from erab.cli import CliError

        raise CliError(f"no security state in {home.dir}; run 'erab pki init' first")
    # Read-only (SQLite mode=ro): a verifier never writes to the evidence it checks.
    result = verify_home_audit(home)
    signed = result.signatures_checked
    unsigned_note = (
        f"; checkpoint signatures NOT checked (no key at {home.audit_key})"
        if not signed and result.checkpoints_checked
        else ""
    )
    latest = result.latest_checkpoint
    data = {
        "intact": result.intact,
        "records_checked": result.records_checked,
        "checkpoints_checked": result.checkpoints_checked,
        "checkpoint_signatures_checked": signed,
        "head_position": result.head_position,
        "head_hash": result.head_hash,
        "latest_checkpoint": None if latest is None else latest.to_dict(),
        "head_file_checkpoint": None
        if result.head_checked is None
        else result.head_checked.checkpoint.sequence,
        "records_after_checkpoint": result.records_after_checkpoint,
        "findings": [
            {"position": f.position, "problem": f.problem.value, "detail": f.detail}
            for f in result.findings
        ],
    }
    if args.json:
        print(json.dumps(data, indent=2))
    elif result.intact:
        print(
            f"audit log intact: {result.records_checked} record(s), "
            f"{result.checkpoints_checked} checkpoint(s), head {result.head_hash[:16]}, "
            f"{result.records_after_checkpoint} record(s) after the latest checkpoint"
            + unsigned_note
        )
    else:
        print(f"audit log BROKEN: {len(result.findings)} problem(s){unsigned_note}")
        for finding in result.findings:
            print(f"  {finding}")
    return 0 if result.intact else 1


def cmd_audit_list(args: argparse.Namespace) -> int:
    from erab.security.audit import AuditKind

    home = _home(args)
    _require_audit(home)
    if args.last <= 0:
        raise ValueError(f"--last must be positive, got {args.last}")
    if args.kind is not None:
        kinds = [k.value for k in AuditKind]
        if args.kind not in kinds:
            raise ValueError(f"--kind {args.kind!r} is not one of {', '.join(kinds)}")
    from erab.security.audit import SqliteAuditStore

    store = SqliteAuditStore.open_read_only(home.audit_db)  # reading never recreates tables
    try:
        records = list(store.records())
    finally:
        store.close()
    if args.kind is not None:
        records = [r for r in records if r.kind.value == args.kind]
    records = records[-args.last :]
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return 0
    for r in records:
        details = json.dumps(r.details, sort_keys=True, ensure_ascii=False)
        print(
            f"{r.position:>6} {r.recorded_at.isoformat()} {r.kind.value:<14} {r.actor} -> "
            f"{r.subject} {details}"
        )
    return 0


def cmd_audit_tail(args: argparse.Namespace) -> int:
    """The latest ``--last`` records, then each new one as it is appended (like tail -f)."""
    import time

    from erab.security.audit import AuditKind, SqliteAuditStore

    home = _home(args)
    _require_audit(home)
    if args.last <= 0:
        raise ValueError(f"--last must be positive, got {args.last}")
    if args.kind is not None and args.kind not in {k.value for k in AuditKind}:
        kinds = ", ".join(k.value for k in AuditKind)
        raise ValueError(f"--kind {args.kind!r} is not one of {kinds}")
    if args.duration is not None and not args.duration > 0:
        raise ValueError(f"--duration must be a positive number of seconds, got {args.duration}")
    deadline = None if args.duration is None else time.monotonic() + args.duration

    def show(record: Any) -> None:
        if args.kind is not None and record.kind.value != args.kind:
            return
        if args.json:
            print(json.dumps(record.to_dict(), sort_keys=True), flush=True)
        else:
            details = json.dumps(record.details, sort_keys=True, ensure_ascii=False)
            print(
                f"{record.position:>6} {record.recorded_at.isoformat()} {record.kind.value:<14} "
                f"{record.actor} -> {record.subject} {details}",
                flush=True,
            )

    store = SqliteAuditStore.open_read_only(home.audit_db)
    try:
        records = list(store.records())
        shown = [r for r in records if args.kind is None or r.kind.value == args.kind]
        for record in shown[-args.last :]:
            show(record)
        seen = records[-1].position if records else 0
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
            head = store.head()
            if head is None or head.position <= seen:
                continue
            for record in store.records():
                if record.position > seen:
                    show(record)
            seen = head.position
    finally:
        store.close()
    return 0


def cmd_audit_checkpoint(args: argparse.Namespace) -> int:
    from erab.security.keys import load_or_create_ed25519_key

    home = _home(args)
    _require_audit(home)
    cp = _audit_log(home).checkpoint(load_or_create_ed25519_key(home.audit_key))
    _emit(
        args,
        {
            "position": cp.position,
            "head_hash": cp.head_hash,
            "key_id": cp.key_id,
            "created_at": cp.created_at.isoformat(),
        },
        f"checkpoint signed at record {cp.position} (head {cp.head_hash[:16]}, key {cp.key_id})",
    )
    return 0


# --- security -----------------------------------------------------------------------------


def home_has_broker(home: SecurityHome) -> bool:
    return (home.home / "broker" / "nats.conf").exists() and home.registry_db.exists()


def cmd_security_assess(args: argparse.Namespace) -> int:
    from erab.bus.broker import assessment as broker_assessment
    from erab.clock import RealClock
    from erab.security.assess import assess, save_assessment

    home = _home(args)
    clock = RealClock()
    broker = broker_assessment(home.home, clock) if home_has_broker(home) else None
    result = assess(home, clock, extra=() if broker is None else (broker,))
    saved = None if args.no_save else save_assessment(home, result)
    if args.json:
        data = result.to_dict()
        data["saved_to"] = None if saved is None else str(saved)
        print(json.dumps(data, indent=2))
    else:
        marks = {"n/a": "N/A", "pass": "PASS", "warn": "WARN", "fail": "FAIL"}
        for req in result.requirements:
            print(f"[{marks[req.status.value]}] {req.title}  ({req.source})")
            for check in req.checks:
                print(f"    {marks[check.status.value]}  {check.control}: {check.evidence}")
        print(
            f"overall: {marks[result.status.value]}"
            + (f"; report kept in {saved}" if saved else "")
        )
    return 1 if result.status.value == "fail" else 0


def _directory(home: SecurityHome) -> Any:
    from erab.clock import RealClock
    from erab.security.operators import OperatorDirectory

    return OperatorDirectory(home.operators_db, RealClock(), _audit_log(home))


def cmd_operator_add(args: argparse.Namespace) -> int:
    from erab.security.operators import Role

    home = _home(args)
    password = _read_file(args.password_file, "password").decode("utf-8").rstrip("\r\n")
    actor = _actor(args, _OPERATORS)
    operator = _directory(home).add(args.name, Role(args.role), password, by=actor,
                                    must_change_password=args.must_change_password)  # fmt: skip
    print(f"operator {operator.name} added with role {operator.role.value}"
          + ("; the password must be changed at the first login"
             if args.must_change_password else ""))  # fmt: skip
    return 0


def cmd_operator_reset_password(args: argparse.Namespace) -> int:
    home = _home(args)
    password = _read_file(args.password_file, "password").decode("utf-8").rstrip("\r\n")
    _directory(home).set_password(args.name, password, by=_actor(args, _OPERATORS),
                                  must_change_password=not args.keep)  # fmt: skip
    print(f"operator {args.name}: password set"
          + ("" if args.keep else "; it must be changed at the next console login"))
    return 0


def cmd_operator_list(args: argparse.Namespace) -> int:
    home = _home(args)
    rows = [
        {
            "name": o.name,
            "role": o.role.value,
            "disabled": o.disabled,
            "created_at": o.created_at.isoformat(),
            "must_change_password": o.must_change_password,
        }
        for o in _directory(home).operators()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(
            "no operators; add an admin with "
            "'erab security operator-add NAME --role admin --password-file FILE'"
        )
    else:
        for r in rows:
            state = "disabled" if r["disabled"] else "enabled"
            if r["must_change_password"] and not r["disabled"]:
                state += " (must change password)"
            print(f"{r['name']:<20} {r['role']:<18} {state}")
    return 0


def cmd_operator_disable(args: argparse.Namespace) -> int:
    home = _home(args)
    _directory(home).disable(args.name, by=_actor(args, _OPERATORS))
    print(f"operator {args.name} disabled (password and API tokens no longer accepted)")
    return 0


def cmd_token_issue(args: argparse.Namespace) -> int:
    home = _home(args)
    if not 0 < args.valid_days <= MAX_TOKEN_DAYS:
        raise ValueError(
            f"--valid-days must be more than 0 and at most {MAX_TOKEN_DAYS:g}, "
            f"got {args.valid_days:g}"
        )
    actor = _actor(args, _OPERATORS)
    token = _directory(home).issue_token(
        args.name, args.label, valid_for=timedelta(days=args.valid_days), by=actor
    )
    _write_secret(args.out, (token + "\n").encode())
    token_id = token.split("_", 2)[1]
    print(f"API token {token_id} for {args.name} written to {args.out}")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    from erab.clock import RealClock

    home = _home(args)
    now = RealClock().now()

    def status(expires_at: Any, revoked_at: Any) -> str:
        if revoked_at is not None:
            return "revoked"
        return "expired" if expires_at is not None and expires_at <= now else "active"

    rows = [
        {
            "token_id": t.token_id,
            "operator": t.operator,
            "label": t.label,
            "status": status(t.expires_at, t.revoked_at),
            "created_at": t.created_at.isoformat(),
            "expires_at": None if t.expires_at is None else t.expires_at.isoformat(),
            "revoked_at": None if t.revoked_at is None else t.revoked_at.isoformat(),
        }
        for t in _directory(home).tokens()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no API tokens")
    else:
        print(f"{'token id':<14} {'operator':<20} {'label':<20} {'status':<8} expires")
        for r in rows:
            print(
                f"{r['token_id']:<14} {r['operator']:<20} {r['label']:<20} {r['status']:<8} "
                f"{r['expires_at'] or 'never'}"
            )
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    home = _home(args)
    _directory(home).revoke_token(args.token_id, by=_actor(args, _OPERATORS))
    print(f"API token {args.token_id} revoked")
    return 0


# --- keys, CA and sessions ------------------------------------------------------------------


def cmd_pki_rotate_command_key(args: argparse.Namespace) -> int:
    from erab.clock import RealClock
    from erab.security.audit import AuditKind
    from erab.security.keys import rotate_ed25519_key

    home = _home(args)
    if not home.command_key.exists():
        from erab.cli import CliError

        raise CliError(f"no command key at {home.command_key}; run 'erab pki init' first")
    if not 0 <= args.keep_hours <= 24 * 30:
        raise ValueError(f"--keep-hours must be 0 to 720, got {args.keep_hours:g}")
    actor = _actor(args, _KEYS)
    keep = timedelta(0) if args.compromised else timedelta(hours=args.keep_hours)
    if args.compromised:
        home.command_previous_key.unlink(missing_ok=True)
    retired, new = rotate_ed25519_key(
        home.command_key,
        home.command_public_key,
        home.command_retired_keys,
        RealClock().now(),
        keep_for=keep,
        previous_key_path=None if args.compromised else home.command_previous_key,
    )
    from erab.security.keys import key_id_of

    result = {
        "old_key_id": retired.key_id,
        "new_key_id": key_id_of(new.public_key()),
        "old_key_trusted_until": retired.verify_until.isoformat(),
        "compromised": bool(args.compromised),
        "public_key_file": str(home.command_public_key),
    }
    _audit_log(home).append(
        AuditKind.SECURITY_EVENT, actor, "command_key", {"action": "command_key_rotated", **result}
    )
    if args.compromised:
        text = (
            f"command key {retired.key_id} dropped (compromised); new key "
            f"{result['new_key_id']} in {home.command_public_key}: give it to every gateway"
        )
    else:
        text = (
            f"command key rotated: {retired.key_id} -> {result['new_key_id']}; the old key "
            f"verifies until {result['old_key_trusted_until']} and is kept in "
            f"{home.command_previous_key} to announce the new one to gateways"
        )
    _emit(args, result, text)
    return 0


def cmd_pki_reissue_ca(args: argparse.Namespace) -> int:
    from erab.security.audit import AuditKind

    home = _home(args)
    ca = _ca(home)
    root_key_file = args.root_key or home.root_key
    root_key = _read_file(root_key_file, "root CA key")
    days = _days(args, 1825)
    actor = _actor(args, _KEYS)
    old = ca.issuing_cert
    cert = ca.reissue_issuing_ca(root_key, days=days)
    result = {
        "old_serial": format(old.serial_number, "x"),
        "old_not_after": old.not_valid_after_utc.isoformat(),
        "serial": format(cert.serial_number, "x"),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "ca_bundle": str(home.ca_bundle),
    }
    _audit_log(home).append(
        AuditKind.SECURITY_EVENT, actor, "ca", {"action": "issuing_ca_reissued", **result}
    )
    _emit(
        args,
        result,
        f"issuing CA re-issued (same key): valid until {result['not_after']} (was "
        f"{result['old_not_after']}); give peers the new {home.ca_bundle}"
        + ("" if args.root_key is None else "; put the root key back offline"),
    )
    return 0


def _read_password(args: argparse.Namespace) -> str:
    import sys

    if args.password_file is not None:
        return _read_file(args.password_file, "password").decode("utf-8").rstrip("\r\n")
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.name}: ")
    return sys.stdin.readline().rstrip("\r\n")


def _login_refused(exc: Exception) -> Exception:
    from erab.cli import CliError

    return CliError(str(exc))


def cmd_login(args: argparse.Namespace) -> int:
    from erab.security.operators import LoginRefused

    home = _home(args)
    if not home.operators_db.exists():
        from erab.cli import CliError

        raise CliError(f"no operators in {home.dir}; add one with 'erab security operator-add'")
    if not 0 < args.valid_hours <= 24 * 7:
        raise ValueError(
            f"--valid-hours must be more than 0 and at most 168, got {args.valid_hours:g}"
        )
    directory = _directory(home)
    password = _read_password(args)
    try:
        operator = directory.login(args.name, password, source="cli")
    except LoginRefused as exc:
        raise _login_refused(exc) from None
    token = directory.issue_token(
        operator.name, "login", valid_for=timedelta(hours=args.valid_hours), by=operator.name
    )
    _write_secret(args.out, (token + "\n").encode())
    print(
        f"logged in as {operator.name} ({operator.role.value}); session token "
        f"{token.split('_', 2)[1]} written to {args.out}, valid {args.valid_hours:g} h"
    )
    return 0


def _token_operator(args: argparse.Namespace) -> tuple[Any, Any, str]:
    from erab.security.operators import LoginRefused

    home = _home(args)
    if not home.operators_db.exists():
        from erab.cli import CliError

        raise CliError(f"no operators in {home.dir}, so no token can be valid")
    token = _read_file(args.token_file, "token").decode("utf-8", "replace").strip()
    directory = _directory(home)
    try:
        operator = directory.authenticate_token(token, source="cli")
    except LoginRefused as exc:
        raise _login_refused(exc) from None
    return directory, operator, token.split("_", 2)[1]


def cmd_whoami(args: argparse.Namespace) -> int:
    directory, operator, token_id = _token_operator(args)
    entry = next(t for t in directory.tokens(operator.name) if t.token_id == token_id)
    expires = None if entry.expires_at is None else entry.expires_at.isoformat()
    _emit(
        args,
        {
            "operator": operator.name,
            "role": operator.role.value,
            "token_id": token_id,
            "label": entry.label,
            "expires_at": expires,
        },
        f"{operator.name} ({operator.role.value}), token {token_id} '{entry.label}', "
        f"expires {expires or 'never'}",
    )
    return 0


def cmd_logout(args: argparse.Namespace) -> int:
    directory, operator, token_id = _token_operator(args)
    directory.revoke_token(token_id, by=operator.name)
    args.token_file.unlink(missing_ok=True)
    print(f"logged out: token {token_id} of {operator.name} revoked, {args.token_file} deleted")
    return 0
