"""``erab web serve``: the operator's console, in the RA's process, beside its REST API.

The console (:mod:`erab.web`) reaches the security core through :class:`HomeSecurityDesk`,
built here from the deployment home: the operators' directory (Argon2id, lock-out), the PKI's
registry and revocation, the audit log and the guideline self-assessment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn

    from erab.clock import Clock
    from erab.security import Argon2Parameters, AuditLog, Operator
    from erab.web.auth import Account

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(text: str, flag: str = "--listen") -> tuple[str, int]:
    """``HOST:PORT`` (port 0: any free one); ValueError naming ``flag`` otherwise."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{flag} {text!r}: give HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


class HomeSecurityDesk:
    """The console's :class:`erab.web.auth.SecurityDesk` over a deployment home."""

    def __init__(self, home: Path, clock: Clock, audit: AuditLog | None = None, *,
                 argon2_parameters: Argon2Parameters | None = None) -> None:  # fmt: skip
        from erab.security import AuditLog, OperatorDirectory, SecurityHome

        self.home = SecurityHome(Path(home))
        if not self.home.ca_bundle.is_file():
            raise ValueError(f"no deployment in {home}: run 'erab pki init --home {home}' first")
        self.clock = clock
        self.audit = audit or AuditLog.for_home(self.home, clock)
        self.directory = OperatorDirectory(self.home.operators_db, clock, self.audit,
                                           argon2_parameters=argon2_parameters)  # fmt: skip

    @staticmethod
    def _account(operator: Operator) -> Account:
        from erab.security import ROLE_PERMISSIONS
        from erab.web.auth import Account

        return Account(operator.name, operator.role.value,
                       frozenset(p.value for p in ROLE_PERMISSIONS[operator.role]),
                       operator.must_change_password)  # fmt: skip

    def login(self, name: str, password: str, *, source: str) -> Account:
        from erab.security import LoginRefused
        from erab.web.auth import LoginFailed

        try:
            return self._account(self.directory.login(name, password, source=source))
        except LoginRefused as exc:
            retry = exc.retry_after.total_seconds() if exc.retry_after else None
            raise LoginFailed(str(exc), retry) from None

    def account(self, name: str) -> Account | None:
        operator = self.directory.get(name)
        return None if operator is None or operator.disabled else self._account(operator)

    def refused(self, account: Account, permission: str, source: str) -> None:
        from erab.security import AuditKind

        self.audit.append(AuditKind.SECURITY_EVENT, account.name, permission,
                          {"action": "permission_denied", "role": account.role,
                           "source": source, "via": "console"})  # fmt: skip

    def certificates(self) -> Mapping[str, Mapping[str, Any]]:
        from erab.security import CertificateKind, CertificateRegistry

        now = self.clock.now()
        out: dict[str, dict[str, Any]] = {}
        registry = CertificateRegistry(self.home.registry_db, self.clock)
        for cert in registry.certificates(kind=CertificateKind.GATEWAY):
            if cert.gateway_id is None:
                continue
            # the newest issued wins, unless an older one is revoked and the newer is too
            out[cert.gateway_id] = {"serial": cert.serial, "not_after": cert.not_after.isoformat(),
                                    "status": cert.status_at(now).value}  # fmt: skip
        return out

    def revoke_gateway(self, gateway_id: str, reason: str, *, actor: str) -> list[str]:
        from erab.bus.broker import BrokerError, regenerate_and_reload
        from erab.security import AuditKind, CertificateAuthority, PkiError
        from erab.web.auth import ActionRefused

        try:
            ca = CertificateAuthority.open(self.home, self.clock)
            config = self.home.load_config()
            serials = ca.revoke_gateway(gateway_id, reason,
                                        crl_days=7 if config is None else config.crl_days)
        except (PkiError, ValueError) as exc:
            raise ActionRefused(str(exc)) from None
        self.audit.append(AuditKind.REVOCATION, actor, gateway_id,
                          {"serials": serials, "reason": reason, "via": "console"})  # fmt: skip
        try:  # the broker cuts the gateway off, also on an open connection
            regenerate_and_reload(self.home.home, clock=self.clock)
        except BrokerError as exc:
            raise ActionRefused(f"revoked, but the broker did not reload: {exc}") from None
        return serials

    def assess(self) -> dict[str, Any]:
        from erab.bus.broker import assessment as broker_assessment
        from erab.security import assess

        broker = broker_assessment(self.home.home, self.clock)
        result: dict[str, Any] = assess(self.home, self.clock,
                                        extra=() if broker is None else (broker,)).to_dict()
        return result

    def verify_audit(self) -> dict[str, Any]:
        from erab.security.audit import verify_home_audit

        result = verify_home_audit(self.home)
        return {"intact": result.intact, "records_checked": result.records_checked,
                "checkpoints_checked": result.checkpoints_checked,
                "findings": [{"position": f.position, "problem": f.problem.value,
                              "detail": f.detail} for f in result.findings]}  # fmt: skip

    def audit_tail(self, n: int) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.audit.store.tail(n)]

    def operators(self) -> Sequence[Mapping[str, Any]]:
        return [{"name": o.name, "role": o.role.value, "disabled": o.disabled,
                 "created_at": o.created_at.isoformat()} for o in self.directory.operators()]

    def add_operator(self, name: str, role: str, password: str, *, actor: str) -> None:
        from erab.security import Role
        from erab.web.auth import ActionRefused

        try:
            # the admin chose it: the new operator sets their own at the first login
            self.directory.add(name, Role(role), password, by=actor, must_change_password=True)
        except ValueError as exc:
            raise ActionRefused(str(exc)) from None

    def change_password(self, name: str, current: str, new: str, *, source: str) -> None:
        from erab.security import LoginRefused
        from erab.web.auth import ActionRefused, LoginFailed

        try:
            self.directory.change_password(name, current, new, source=source)
        except LoginRefused as exc:
            retry = exc.retry_after.total_seconds() if exc.retry_after else None
            raise LoginFailed(str(exc), retry) from None
        except ValueError as exc:
            raise ActionRefused(str(exc)) from None

    def disable_operator(self, name: str, *, actor: str) -> None:
        from erab.web.auth import ActionRefused

        try:
            self.directory.disable(name, by=actor)
        except ValueError as exc:
            raise ActionRefused(str(exc)) from None


@dataclass
class RunningConsole:
    """A console being served: its server, task and the address it is bound to."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    host: str
    port: int
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    async def stop(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 10.0)


async def start_console(ra: Any, desk: HomeSecurityDesk, listen: tuple[str, int], *,
                        hooks: Any = None, history: Any = None,
                        tls: tuple[Path, Path] | None = None) -> RunningConsole:  # fmt: skip
    """Serve the console and the RA's REST API on ``listen`` (over TLS with ``tls``: the
    certificate and key files); return once it is bound."""
    import uvicorn

    from erab.aggregator.api import create_app
    from erab.web.app import create_console

    api = create_app(ra, desk.directory, audit=desk.audit)
    app = create_console(ra, desk, api=api, hooks=hooks, history=history,
                         secure_cookies=tls is not None)  # fmt: skip
    server = uvicorn.Server(uvicorn.Config(
        app, host=listen[0], port=listen[1], log_level="warning", lifespan="on",
        ssl_certfile=None if tls is None else str(tls[0]),
        ssl_keyfile=None if tls is None else str(tls[1])))  # fmt: skip
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            exc = task.exception() if not task.cancelled() else None
            raise OSError(f"the console could not listen on {listen[0]}:{listen[1]}"
                          + (f": {exc}" if exc else " (address in use?)"))  # fmt: skip
        await asyncio.sleep(0.05)
    sock = server.servers[0].sockets[0]
    host, port = sock.getsockname()[:2]
    return RunningConsole(server, task, str(host), int(port), tls=tls is not None)


def register(subparsers: Any) -> None:
    group = subparsers.add_parser(
        "web", help="the operator's console (a web dashboard over the RA)",
        description="The operator's console: fleet, sites, events, gateways, security, "
        "products and settlement in a browser. docs/dashboard.md.",
    )  # fmt: skip
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="web_command", metavar="COMMAND")
    p = sub.add_parser(
        "serve", help="run the RA with its console and REST API on one listener",
        description="Run the resource aggregator of a deployment home (as 'erab ra serve' does: "
        "use one or the other) and serve the console and the RA's REST API on --listen. "
        "Operators log in with their erab accounts ('erab security operator-add').",
        epilog="example: erab web serve --home H --listen 127.0.0.1:8080",
    )  # fmt: skip
    p.add_argument("--home", type=Path, default=None,
                   help="deployment home (default: $ERAB_HOME or ./erab-data)")  # fmt: skip
    p.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to serve the console and API (default {DEFAULT_LISTEN}; "
                   "loopback unless you mean it)")  # fmt: skip
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (default: run until Ctrl-C)")  # fmt: skip
    p.add_argument("--tls-cert", type=Path, default=None, metavar="FILE",
                   help="serve over TLS with this certificate (PEM; e.g. one issued by the "
                   "deployment's CA with 'erab pki issue'); session cookies become Secure")
    p.add_argument("--tls-key", type=Path, default=None, metavar="FILE",
                   help="the private key of --tls-cert (PEM)")
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import signal

    from erab.aggregator.service import RaService, RaServiceError
    from erab.cli import CliError
    from erab.settings import Settings

    home: Path = args.home if args.home is not None else Settings.from_env().home
    listen = parse_listen(args.listen)
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be more than 0 seconds, got {args.duration:g}")
    tls = None
    if (args.tls_cert is None) != (args.tls_key is None):
        raise CliError("--tls-cert and --tls-key go together")
    if args.tls_cert is not None:
        for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
            if not path.is_file():
                raise CliError(f"{flag} {path}: no such file")
        tls = (args.tls_cert, args.tls_key)
    try:
        ra = RaService(home)
    except RaServiceError as exc:
        raise CliError(str(exc)) from None
    desk = HomeSecurityDesk(home, ra.clock, ra.audit)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        task = asyncio.create_task(ra.run(stop))
        console = await start_console(ra, desk, listen, tls=tls)
        print(f"console and REST API on {console.url}", file=sys.stderr, flush=True)
        try:
            waiter = asyncio.create_task(stop.wait())
            await asyncio.wait([task, waiter], timeout=args.duration,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            waiter.cancel()
        finally:
            stop.set()
            await console.stop()
            await asyncio.gather(task, return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise CliError(f"the RA stopped: {task.exception()}")

    asyncio.run(main())
    return 0
