"""Many site gateways in one process: the tool for demos and load tests (``erab gateway fleet``).

Every site gets a whole gateway of its own, as if it were a box on the customer's wall: its own
certificate and key from the deployment's CA, its own MQTT connection over mutual TLS, its own
ECHONET Lite controller on its own loopback address, its own outbox, audit log and command
verifier.  Only the process and the event loop are shared.

The fleet's files live under ``HOME/fleet/<gateway id>/``: ``identity/`` (what ``erab pki
enrol`` would write), ``site.toml`` (the site config, written at commissioning) and ``state/``
(outbox, audit log, verifier state).  ``HOME/fleet/fleet.json`` is the fleet's status,
rewritten every few seconds while it runs.

Three steps, each idempotent, so a second run reuses what the first made:

1. :meth:`Fleet.enrol` issues a certificate to every gateway that has none (or one about to
   expire) and lets the broker admit them (:func:`erab.bus.regenerate_and_reload`);
2. :meth:`Fleet.commission` discovers the sites that have no site config yet and writes one,
   allowing the controllable devices found there (what an installer confirms on site);
3. :meth:`Fleet.run` runs every gateway until stopped, starting them spread over a few
   seconds so that a thousand TLS handshakes do not land on the broker at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import json
import math
import os
import resource
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from erab.bus import regenerate_and_reload
from erab.clock import Clock, RealClock
from erab.echonet.controller import Controller, RemoteNode
from erab.gateway.config import KINDS, SiteConfig, load_site_config
from erab.gateway.journal import DEFAULT_COMMIT_INTERVAL_S, FleetJournal
from erab.gateway.service import Gateway, GatewayFiles, write_atomically
from erab.security import CertificateAuthority, SecurityHome, make_csr, new_private_key
from erab.security.audit import AuditKind, AuditLog
from erab.security.envelope import FileVerifierStateStore
from erab.security.pki import certificate_pem, private_key_pem

FLEET_DIR = "fleet"
STATUS_FILE = "fleet.json"
JOURNAL_FILE = "fleet-state.sqlite"  # every gateway's outbox and verifier state
RENEW_BEFORE = timedelta(days=1)  # a certificate closer than this to expiry is reissued
YOUNG_GC_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)
FDS_PER_GATEWAY = 12  # UDP + MQTT sockets, two SQLite databases with their WAL files, margin

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class FleetError(RuntimeError):
    """The fleet cannot be set up or run; the message says why and what to do."""


@dataclass(frozen=True)
class FleetSite:
    """One site of the fleet: its id and the address of its ECHONET Lite node."""

    site_id: str
    address: str

    @property
    def gateway_id(self) -> str:
        return f"gw-{self.site_id}"


@dataclass(frozen=True)
class FleetSettings:
    broker_host: str
    broker_port: int
    bind_base: str = "127.3.0.1"  # gateway i's controller binds bind_base + i
    poll_interval_s: float = 60.0
    heartbeat_interval_s: float = 60.0
    certificate_days: int = 30
    start_spread_s: float | None = None  # default: 5 ms per gateway, at most one poll interval
    status_every_s: float = 5.0
    commit_interval_s: float = DEFAULT_COMMIT_INTERVAL_S  # the gateways' writes, grouped
    # the gateways poll in slots of this length (default: 5 s, at most a quarter of the
    # poll interval), an equal share of them in each slot of the interval: those of one slot
    # poll together and share the event loop's turns, and no slot holds them all
    poll_slot_s: float | None = None

    @property
    def poll_slot(self) -> float:
        if self.poll_slot_s is not None:
            return self.poll_slot_s
        return min(5.0, self.poll_interval_s / 4)
    # MQTT keepalive; default: longer than a poll interval, so that a gateway's telemetry
    # keeps its link alive and no PINGREQ is needed (the broker still ends a silent link
    # after 1.5 keepalives and publishes its last will)
    keepalive_s: int | None = None

    @property
    def keepalive(self) -> int:
        if self.keepalive_s is not None:
            return self.keepalive_s
        return max(30, math.ceil(1.5 * self.poll_interval_s))
    durable: bool = False  # fsync each group commit (journal.py)


@dataclass
class FleetStatus:
    """What the fleet reports (``fleet.json``, ``--json``)."""

    gateways: int = 0
    started: int = 0
    links_up: int = 0
    polls: int = 0
    telemetry_batches: int = 0
    backlog: int = 0
    dropped: int = 0
    active_commands: int = 0
    all_up_after_s: float | None = None  # from the first start to the last link up
    rss_before_bytes: int = 0  # the process before any gateway was made
    rss_bytes: int = 0
    cpu_s: float = 0.0  # the process's user + system time so far
    down: list[str] = field(default_factory=list)  # gateway ids whose link is down

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["down"] = self.down[:20]
        data["down_count"] = len(self.down)
        return data


def rss_bytes() -> int:
    """This process's resident set size now (Linux), 0 where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def freeze_long_lived() -> tuple[int, int, int]:
    """Take what the fleet has built so far (a thousand gateways' links, controllers and
    state) out of the garbage collector's sight.  The cyclic collector's full collections
    scan every tracked object: with a thousand gateways in the process one takes of the
    order of a second, all of it on the event loop, and the allocations of a burst of
    commands set one off.  What is frozen is what lives as long as the fleet; what the
    gateways make afterwards is collected as usual."""
    gc.collect()  # the garbage of starting up first: frozen, it would stay
    gc.freeze()
    # and fewer young collections: each costs a pass over the containers the loop's
    # callbacks hold (measured: about 0.5 ms each, several a second with 1,000 gateways)
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, before[1], before[2])
    return before


def thaw(threshold: tuple[int, int, int]) -> None:
    """Undo :func:`freeze_long_lived` (the fleet stopped; the process may go on, e.g. a
    test session)."""
    gc.unfreeze()
    gc.set_threshold(*threshold)


def raise_open_files(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise FleetError(
            f"the fleet needs about {needed} open files but this process may open only {hard}; "
            "raise the limit (ulimit -n) or run fewer sites"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def bind_addresses(base: str, count: int) -> list[str]:
    try:
        first = ipaddress.IPv4Address(base)
    except ipaddress.AddressValueError as exc:
        raise FleetError(f"--bind-base {base!r} is not an IPv4 address") from exc
    last = ipaddress.IPv4Address(int(first) + max(count - 1, 0))
    if not (first.is_loopback and last.is_loopback):
        raise FleetError(
            f"{count} gateway addresses from {base} leave the loopback range 127.0.0.0/8; "
            "use a base such as 127.3.0.1"
        )
    return [str(ipaddress.IPv4Address(int(first) + i)) for i in range(count)]


def _toml_string(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def render_site_config(
    site: FleetSite, settings: FleetSettings, bind: str, devices: Sequence[tuple[str, str, str]]
) -> str:
    """The site config of one fleet gateway; ``devices`` are (device id, node id, EOJ hex)."""
    lines = [
        "# written by erab gateway fleet at commissioning; edit the allow-list as an installer",
        f"gateway_id = {_toml_string(site.gateway_id)}",
        f"site_id = {_toml_string(site.site_id)}",
        f"poll_interval_s = {settings.poll_interval_s!r}",
        f"heartbeat_interval_s = {settings.heartbeat_interval_s!r}",
        "",
        "[broker]",
        f"host = {_toml_string(settings.broker_host)}",
        f"port = {settings.broker_port}",
        "",
        "[identity]",
        'dir = "identity"',
        "",
        "[lan]",
        f"hosts = [{_toml_string(site.address)}]",
        "multicast = false",
        f"bind = {_toml_string(bind)}",
        "",
        "[outbox]",
        'path = "state/outbox.sqlite"',
        "# many emulated gateways share one machine: no fsync per message (a crash of the",
        "# process still loses nothing; a power cut may lose the last messages)",
        "durable = false",
    ]
    for device_id, node_id, eoj in devices:
        lines += [
            "",
            "[[device]]",
            f"device_id = {_toml_string(device_id)}",
            f"node_id = {_toml_string(node_id)}",
            f"eoj = {_toml_string(eoj)}",
        ]
    return "\n".join(lines) + "\n"


def allowed_devices(site: FleetSite, node: RemoteNode) -> list[tuple[str, str, str]]:
    """The devices of ``node`` the fleet's installer allows: every object of a class the
    gateway knows how to control (KINDS), named ``<site>.<kind>-<instance>``, the ids the
    RA's registry gives a town's resources (``erab ra import --homes N``)."""
    if node.identification is None:
        return []
    node_id = node.identification.hex()
    found = []
    for eoj in sorted(node.objects):
        kind = KINDS.get(eoj.class_code)
        if kind is None or node.objects[eoj].status == "no answer":
            continue
        eoj_hex = f"{eoj.group:02x}{eoj.cls:02x}{eoj.instance:02x}"
        found.append((f"{site.site_id}.{kind}-{eoj.instance}", node_id, eoj_hex))
    return found


class FleetGateway(Gateway):
    """A gateway of the fleet: the fleet reports for it, so it writes no status file of its
    own while running (a thousand files rewritten each poll would cost more than the polls);
    its outbox, verifier state and audit records go through the fleet's journal (grouped
    commits, journal.py)."""

    def __init__(self, config: SiteConfig, home: Path, *, journal: FleetJournal,
                 clock: Clock | None = None) -> None:  # fmt: skip
        super().__init__(config, home, clock=clock)
        self.journal = journal

    def open_files(self) -> GatewayFiles:
        journal, config = self.journal, self.config
        outbox = journal.outbox(self.gateway_id, config.outbox_path or self.home / "outbox.sqlite",
                                max_messages=config.outbox_max_messages)  # fmt: skip
        audit_store = journal.audit_store(self.home / "audit.sqlite")
        state = journal.verifier_store(self.gateway_id, self.home / "verifier.json")

        def close() -> None:
            outbox.close()
            journal.release_audit_store(audit_store)
            # the state of a gateway run alone again later (erab gateway run): the file
            latest = state.load()
            if latest is not None:
                FileVerifierStateStore(self.home / "verifier.json", durable=False).save(latest)

        return GatewayFiles(outbox, AuditLog(audit_store, self.clock), state, journal.committed,
                            close)  # fmt: skip

    def write_status(self, *, running: bool = True) -> None:
        if not running:
            super().write_status(running=False)


class Fleet:
    """The gateways of ``sites``, with their files under ``home/fleet``.  ``home`` is the
    deployment home (``erab pki init``), whose CA issues the gateways' certificates."""

    def __init__(
        self,
        home: Path,
        sites: Sequence[FleetSite],
        settings: FleetSettings,
        *,
        clock: Clock | None = None,
    ) -> None:
        ids = [s.gateway_id for s in sites]
        if len(set(ids)) != len(ids):
            raise FleetError("two sites of the fleet have the same id")
        self.home = Path(home)
        self.sites = list(sites)
        self.settings = settings
        self.clock = clock or RealClock()
        self.dir = self.home / FLEET_DIR
        self.binds = bind_addresses(settings.bind_base, len(self.sites))
        self.gateways: list[FleetGateway] = []
        self.status = FleetStatus(gateways=len(self.sites), rss_before_bytes=rss_bytes())
        self._first_start_at: datetime | None = None

    def site_dir(self, site: FleetSite) -> Path:
        return self.dir / site.gateway_id

    # -- 1. enrolment -----------------------------------------------------------------------------
    def _needs_certificate(self, site: FleetSite) -> bool:
        folder = self.site_dir(site) / "identity"
        cert_file = folder / f"{site.gateway_id}.pem"
        if not (cert_file.is_file() and (folder / f"{site.gateway_id}.key.pem").is_file()):
            return True
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except ValueError:
            return True
        return cert.not_valid_after_utc - self.clock.now() < RENEW_BEFORE

    def enrol(self, progress: Progress | None = None) -> list[str]:
        """Issue certificates to the gateways that need one; return their ids.  The broker,
        if one runs from this home, is told to admit them."""
        security = SecurityHome(self.home)
        if not security.ca_bundle.is_file():
            raise FleetError(
                f"no certificate authority in {self.home}; run 'erab pki init --home {self.home}'"
            )
        todo = [s for s in self.sites if self._needs_certificate(s)]
        if not todo:
            return []
        ca = CertificateAuthority.open(security, self.clock)
        ca_bundle = security.ca_bundle.read_bytes()
        command_key = (
            security.command_public_key.read_bytes()
            if security.command_public_key.is_file()
            else None
        )
        if command_key is None:
            raise FleetError(f"no RA command key in {self.home}; run 'erab pki init' there")
        audit = AuditLog.for_home(security, self.clock)
        for done, site in enumerate(todo, 1):
            folder = self.site_dir(site) / "identity"
            folder.mkdir(parents=True, exist_ok=True)
            key = new_private_key()
            csr = make_csr(key, site.gateway_id).public_bytes(serialization.Encoding.PEM)
            cert = ca.issue_gateway(
                csr, site.gateway_id, site.site_id, days=self.settings.certificate_days
            )
            write_atomically(folder / f"{site.gateway_id}.key.pem", private_key_pem(key))
            (folder / f"{site.gateway_id}.key.pem").chmod(0o600)
            write_atomically(folder / f"{site.gateway_id}.pem", certificate_pem(cert))
            write_atomically(folder / "ca-bundle.pem", ca_bundle)
            write_atomically(folder / "ra-command.pub", command_key.strip() + b"\n")
            audit.append(AuditKind.ENROLMENT, "system:fleet", site.gateway_id,
                         {"site_id": site.site_id, "serial": format(cert.serial_number, "x"),
                          "source": "erab gateway fleet"})  # fmt: skip
            if progress is not None:
                progress("enrol", done, len(todo))
        regenerate_and_reload(self.home, clock=self.clock)
        return [s.gateway_id for s in todo]

    # -- 2. commissioning -------------------------------------------------------------------------
    async def commission(
        self, *, again: bool = False, progress: Progress | None = None
    ) -> dict[str, int]:
        """Write a site config for every site that has none (all with ``again``), allowing
        the controllable devices discovered there.  Returns allowed device counts by site."""
        todo = [s for s in self.sites if again or not (self.site_dir(s) / "site.toml").is_file()]
        counts: dict[str, int] = {}
        if not todo:
            return counts
        by_host: dict[str, RemoteNode] = {}
        batch = 256  # sites discovered at once: bounds the burst of answers
        async with Controller(self.binds[0], timeout_s=1.0) as controller:
            for start in range(0, len(todo), batch):
                part = todo[start : start + batch]
                nodes = await controller.discover(
                    hosts=[s.address for s in part], multicast=False, wait_s=0.5
                )
                by_host.update({n.host: n for n in nodes})
                if progress is not None:
                    progress("commission", min(start + batch, len(todo)), len(todo))
        index = {s.gateway_id: i for i, s in enumerate(self.sites)}
        for site in todo:
            node = by_host.get(site.address)
            devices = [] if node is None else allowed_devices(site, node)
            counts[site.site_id] = len(devices)
            folder = self.site_dir(site)
            (folder / "state").mkdir(parents=True, exist_ok=True)
            text = render_site_config(site, self.settings, self.binds[index[site.gateway_id]],
                                      devices)  # fmt: skip
            write_atomically(folder / "site.toml", text.encode("utf-8"))
        silent = [s.site_id for s in todo if s.address not in by_host]
        if len(silent) == len(todo):
            raise FleetError(
                f"no site answered at {todo[0].address} … {todo[-1].address}; is the town "
                "running (erab emulate) with the same --base and number of sites?"
            )
        return counts

    def configs(self) -> list[SiteConfig]:
        """Every gateway's site config, with the broker and poll settings of this run."""
        out = []
        for site, bind in zip(self.sites, self.binds, strict=True):
            path = self.site_dir(site) / "site.toml"
            if not path.is_file():
                raise FleetError(f"site {site.site_id} is not commissioned ({path} missing)")
            config = load_site_config(path)
            out.append(config.__class__(**{
                **config.__dict__, "broker_host": self.settings.broker_host,
                "broker_port": self.settings.broker_port, "bind": bind,
                "poll_interval_s": self.settings.poll_interval_s,
                "heartbeat_interval_s": self.settings.heartbeat_interval_s,
            }))  # fmt: skip
        return out

    # -- 3. running -------------------------------------------------------------------------------
    def refresh_status(self) -> FleetStatus:
        s = self.status
        s.started = len(self.gateways)
        backlog = dropped = active = links_up = polls = batches = 0
        for g in self.gateways:  # one pass: a thousand gateways every few seconds
            links_up += g.link_up
            polls += g.polls
            batches += g.batches
            if g.outbox is not None:
                backlog += g.outbox.backlog
                dropped += g.outbox.dropped_total
            if g.executor is not None:
                active += len(g.executor.active)
        s.backlog, s.dropped, s.active_commands = backlog, dropped, active
        s.links_up, s.polls, s.telemetry_batches = links_up, polls, batches
        s.down = [g.gateway_id for g in self.gateways if not g.link_up]
        if (s.all_up_after_s is None and self._first_start_at is not None
                and s.links_up == s.gateways):  # fmt: skip
            last_up = max(g.link_since for g in self.gateways if g.link_since is not None)
            s.all_up_after_s = (last_up - self._first_start_at).total_seconds()
        s.rss_bytes = rss_bytes()
        s.cpu_s = cpu_seconds()
        return s

    def write_status(self, *, running: bool = True) -> None:
        data = {"running": running, "pid": os.getpid(), "updated_at": self.clock.now().isoformat(),
                **self.refresh_status().as_dict()}  # fmt: skip
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomically(self.dir / STATUS_FILE, (json.dumps(data, indent=2) + "\n").encode())

    async def run(
        self,
        duration_s: float | None = None,
        *,
        on_status: Callable[[FleetStatus], None] | None = None,
    ) -> FleetStatus:
        """Run every gateway until cancelled or for ``duration_s`` seconds; stops them all."""
        configs = self.configs()
        raise_open_files(FDS_PER_GATEWAY * len(configs) + 256)
        # the MQTT client connects (TCP + TLS handshake) in the loop's executor threads;
        # the default handful of threads would queue a thousand handshakes
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="fleet-connect")
        )
        n = len(configs)
        spread = self.settings.start_spread_s
        if spread is None:
            spread = min(0.005 * n, self.settings.poll_interval_s)
        first_start = time.monotonic()
        self._first_start_at = self.clock.now()
        tasks: list[asyncio.Task[None]] = []
        journal = FleetJournal(self.dir / JOURNAL_FILE, durable=self.settings.durable,
                               commit_interval_s=self.settings.commit_interval_s)  # fmt: skip
        committer = asyncio.create_task(journal.run())

        async def start_all() -> None:
            for i, (site, config) in enumerate(zip(self.sites, configs, strict=True)):
                gateway = FleetGateway(config, self.site_dir(site) / "state", journal=journal,
                                       clock=self.clock)  # fmt: skip
                slots = max(1, round(self.settings.poll_interval_s / self.settings.poll_slot))
                gateway.poll_phase_s = (i * slots // n) * self.settings.poll_slot
                gateway.keepalive_s = self.settings.keepalive
                self.gateways.append(gateway)
                tasks.append(asyncio.create_task(gateway.run(), name=site.gateway_id))
                if spread > 0:
                    await asyncio.sleep(max(0.0, first_start + spread * (i + 1) / n
                                            - time.monotonic()))  # fmt: skip

        settle_s = spread + self.settings.poll_interval_s  # every gateway started, polled

        thresholds: list[tuple[int, int, int]] = []  # the collector's, when it was frozen

        async def report() -> None:
            while True:
                await asyncio.sleep(self.settings.status_every_s)
                self.write_status()
                if not thresholds and (self.status.all_up_after_s is not None
                                       or time.monotonic() - first_start > settle_s):  # fmt: skip
                    thresholds.append(freeze_long_lived())
                if on_status is not None:
                    on_status(self.status)
                for task in tasks:  # a gateway whose loop failed takes the fleet down
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise FleetError(f"gateway {task.get_name()} failed: {task.exception()}")

        starter = asyncio.create_task(start_all())
        reporter = asyncio.create_task(report())
        try:
            done, _ = await asyncio.wait([reporter], timeout=duration_s)
            for task in done:
                task.result()
        finally:
            for task in (starter, reporter, *tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(starter, reporter, *tasks, return_exceptions=True)
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            journal.close()
            self.write_status(running=False)
            if thresholds:
                thaw(thresholds[0])
        return self.status


def read_fleet_status(home: Path) -> dict[str, Any]:
    path = Path(home) / FLEET_DIR / STATUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fleet status in {path.parent}: no fleet has run from there")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data
