"""The gateway's run loop: one site, a thin asyncio shell around the tested parts.

:class:`Gateway` discovers the site's ECHONET Lite devices, polls their telemetry into the
outbox, drains the outbox to the broker whenever the MQTT link is up (reconnecting with
backoff while it is down, and measuring meanwhile), hands signed commands to the
:class:`~erab.gateway.executor.CommandExecutor`, and runs its restore timers.  It writes a
small status file (``HOME/status.json``, replaced atomically) that ``erab gateway status``
reads.  docs/gateway.md describes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import ssl
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
from cryptography import x509

from erab import __version__
from erab.bus import (
    Device,
    DeviceOutcome,
    DeviceState,
    GatewayLink,
    Heartbeat,
    Hello,
    MeterReading,
    Sample,
    State,
    TelemetryBatch,
)
from erab.clock import Clock, RealClock
from erab.echonet.controller import Controller, NoResponse, RemoteNode
from erab.echonet.frame import EOJ
from erab.gateway.allowlist import AllowList, DeviceKey, SeenDevice
from erab.gateway.config import KINDS, SiteConfig
from erab.gateway.ems import EmsInputs, decide_ems
from erab.gateway.envelope import (
    ALLOW_LIST_TYPE,
    CommandInvalid,
    RaAllowedDevice,
    parse_allow_list,
)
from erab.gateway.executor import (
    AIRCON_MODES,
    AllowListChange,
    CommandExecutor,
    ControlledDevice,
)
from erab.gateway.meter import METER_CLASS, LanMeter, MeterSource, MeterValues, RouteBMeter
from erab.gateway.meter import READ_EPCS as METER_READ_EPCS
from erab.gateway.outbox import Outbox
from erab.meter.routeb import RouteBCredentials, RouteBError
from erab.security import (
    AuditLog,
    EnvelopeVerifier,
    FileVerifierStateStore,
    SqliteAuditStore,
    client_context,
    public_key_from_text,
)
from erab.security.envelope import VerifierStateStore

NODE_PROFILE_CLASS = 0x0EF0
STATUS_FILE = "status.json"
# the timer loop's longest sleep with commands in force on the real clock: a thousand
# gateways of a fleet each waking every second for their commands' restores would cost
# more than their polls
MAX_TIMER_PAUSE_S = 60.0


def _u8(edt: bytes) -> float | None:
    return float(edt[0]) if len(edt) == 1 else None


def _s8(edt: bytes) -> float | None:
    # 0x7E: "unmeasurable" for temperatures (Appendix, e.g. home air conditioner 0xBB)
    return float(struct.unpack(">b", edt)[0]) if len(edt) == 1 and edt[0] != 0x7E else None


def _u16(edt: bytes) -> float | None:
    return float(struct.unpack(">H", edt)[0]) if len(edt) == 2 else None


def _s32(edt: bytes) -> float | None:
    return float(struct.unpack(">i", edt)[0]) if len(edt) == 4 else None


def _operating(edt: bytes) -> float | None:
    return None if len(edt) != 1 else float(edt[0] == 0x30)  # 0x80: 0x30 on, 0x31 off


Decoder = Callable[[bytes], float | None]

# What is polled, by EPC, named with its unit (ECHONET Lite Appendix, Release R).  A class's
# own properties come after the common ones and replace a common one of the same name.
COMMON_POINTS: dict[int, tuple[str, Decoder]] = {
    0x80: ("operating", _operating),
    0x84: ("power_w", _u16),  # measured instantaneous power consumption
}
CLASS_POINTS: dict[int, dict[int, tuple[str, Decoder]]] = {
    0x027D: {  # storage battery
        0xD3: ("power_w", _s32),  # charging +, discharging −
        0xE4: ("soc_pct", _u8),
        0xDA: ("mode_code", _u8),
    },
    0x0130: {  # home air conditioner
        0xB0: ("mode_code", _u8),
        0xB3: ("setpoint_c", _u8),
        0xBB: ("room_temp_c", _s8),
        0xBE: ("outdoor_temp_c", _s8),  # measured outdoor air temperature (the RA's room fit)
    },
    0x0279: {  # household solar power generation
        0xE0: ("power_w", _u16),  # instantaneous generation
        0xA0: ("limit_pct", _u8),
    },
    0x026B: {  # electric (heat-pump) water heater
        0xB0: ("mode_code", _u8),  # automatic water heating setting
        0xB2: ("heating", lambda e: None if len(e) != 1 else float(e[0] == 0x41)),
        0xE1: ("hot_water_l", _u16),  # remaining hot water in the tank
    },
    0x027E: {  # EV charger/discharger
        0xD3: ("power_w", _s32),  # charging +, discharging −
        0xE4: ("soc_pct", _u8),  # the car's battery
        0xDA: ("mode_code", _u8),
        0xC7: ("connected", lambda e: None if len(e) != 1 else float(e[0] not in (0x30, 0xFF))),
    },
}
# the smart meter (0x0288) is not polled as a device: its readings go out as ``meter``
# messages (gateway/meter.py)

# what ``mode_code`` means, by class, for the state messages (Appendix, Release R)
STORAGE_MODES = {0x41: "rapid_charging", 0x42: "charging", 0x43: "discharging",
                 0x44: "standby", 0x45: "test", 0x46: "auto", 0x48: "restart",
                 0x49: "capacity_recalculation", 0x40: "other"}  # fmt: skip
MODE_NAMES: dict[int, dict[int, str]] = {
    0x027D: STORAGE_MODES,  # 0xDA
    0x027E: STORAGE_MODES,  # 0xDA
    0x0130: AIRCON_MODES,  # 0xB0
    0x026B: {0x41: "auto", 0x42: "heating", 0x43: "stopped"},  # 0xB0
}


def points_of(eoj: EOJ) -> dict[int, tuple[str, Decoder]]:
    """The telemetry points of a class: EPC → (name, decoder)."""
    own = CLASS_POINTS.get(eoj.class_code, {})
    names = {name for name, _ in own.values()}
    points = {epc: p for epc, p in COMMON_POINTS.items() if p[0] not in names}
    points.update(own)
    return points


_POINTS: dict[int, dict[int, tuple[str, Decoder]]] = {}


def _points_cached(eoj: EOJ) -> dict[int, tuple[str, Decoder]]:
    """:func:`points_of` made once per class (the poll asks for it every time)."""
    found = _POINTS.get(eoj.class_code)
    if found is None:
        found = _POINTS[eoj.class_code] = points_of(eoj)
    return found


@dataclass(frozen=True)
class GatewayFiles:
    """Where a gateway keeps its state while it runs (:meth:`Gateway.open_files`)."""

    outbox: Outbox
    audit: AuditLog
    verifier_store: VerifierStateStore
    # returns once every write so far is on disk; None: each write is on disk when done
    committed: Callable[[], Awaitable[None]] | None
    close: Callable[[], None]


@dataclass(frozen=True)
class InventoryItem:
    """A device object found on the LAN, as the hello and the status file show it."""

    device_id: str
    host: str
    eoj: EOJ
    node_id: str | None
    maker_code: str | None
    class_name: str
    get_map: frozenset[int]
    allowed: bool

    @property
    def eoj_hex(self) -> str:
        return f"{self.eoj.group:02x}{self.eoj.cls:02x}{self.eoj.instance:02x}"

    def as_dict(self) -> dict[str, object]:
        return {
            "device_id": self.device_id,
            "host": self.host,
            "eoj": self.eoj_hex,
            "node_id": self.node_id,
            "class": self.class_name,
            "allowed": self.allowed,
        }


async def wait_event(event: asyncio.Event, timeout_s: float) -> None:
    """Wait until ``event`` is set, at most ``timeout_s``.

    Not ``asyncio.wait_for``: on Python 3.11 it returns normally when the event is set in the
    same loop turn as the task is cancelled, swallowing the cancellation, and the loop it is
    in then never stops (found by the gateway tests: a stop that hung).
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await event.wait()


def raise_if_cancelled() -> None:
    """Raise the cancellation a library swallowed.

    aiomqtt 2.x (publish, connect) and the route B reader await ``asyncio.wait_for``, which on
    Python 3.11 returns normally when what it waits for finishes in the same loop turn as the
    task is cancelled; the task's ``cancelling()`` count still shows the request.  Without
    this check a loop carries on and the gateway's stop hangs (seen in the gateway tests).
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


ALLOW_LIST_FILE = "allow-list.json"  # the RA's allow-list, beside the verifier state


def save_ra_allow_list(path: Path, listed: tuple[RaAllowedDevice, ...],
                       received_at: datetime, *, durable: bool = True) -> None:  # fmt: skip
    """Store the RA's allow-list atomically (a crash leaves the old or the new), and with
    ``durable`` on disk before returning ([outbox] durable, as for the verifier state)."""
    data = json.dumps({
        "received_at": received_at.isoformat(),
        "devices": [{"device_id": d.device_id, "node_id": d.key.node_id, "eoj": d.key.eoj,
                     "rated_power_w": d.rated_power_w} for d in listed],
    }, indent=2) + "\n"  # fmt: skip
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data.encode("utf-8"))
        f.flush()
        if durable:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if not durable:
        return
    with contextlib.suppress(OSError):  # the rename itself on disk
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_ra_allow_list(path: Path) -> tuple[RaAllowedDevice, ...] | None:
    """The RA's allow-list stored in ``path``; None when there is none yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        stored = json.loads(text)
        if not isinstance(stored, dict):
            raise CommandInvalid("not a JSON object")
        return parse_allow_list({"type": ALLOW_LIST_TYPE, "devices": stored.get("devices")})
    except (ValueError, CommandInvalid) as exc:
        raise ValueError(
            f"{path}: not a stored RA allow-list ({exc}); remove it to fall back to the site "
            "config's allow-list until the RA sends its list again"
        ) from None


def certificate_summary(path: Path) -> dict[str, object]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return {
        "subject": cert.subject.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_after": cert.not_valid_after_utc.isoformat(),
    }


class Gateway:
    """One site's gateway.  ``home`` holds its state: the outbox, the audit log, the command
    verifier's state and ``status.json``.  Use :meth:`run`."""

    def __init__(self, config: SiteConfig, home: Path, *, clock: Clock | None = None) -> None:
        missing = config.identity.missing()
        if missing:
            raise FileNotFoundError(
                f"gateway file {missing[0]} not found; run 'erab pki enrol --out-dir' and "
                "point [identity] dir at its folder"
            )
        self.config = config
        self.home = home
        self.clock = clock or RealClock()
        self.gateway_id = config.gateway_id
        self.allow = AllowList(
            {DeviceKey(d.node_id, f"{d.eoj.group:02x}{d.eoj.cls:02x}{d.eoj.instance:02x}"):
             d.device_id for d in config.devices}
        )
        self.rated: dict[str, float | None] = {d.device_id: d.rated_power_w
                                               for d in config.devices}  # fmt: skip
        ra_list = load_ra_allow_list(home / ALLOW_LIST_FILE)
        if ra_list is not None:  # the RA's list, once received, replaces the site config's
            self.allow = AllowList({d.key: d.device_id for d in ra_list})
            self.rated = {d.device_id: d.rated_power_w for d in ra_list}
        self._nodes: list[RemoteNode] = []
        self.certificate = certificate_summary(config.identity.cert)
        self.tls: ssl.SSLContext = client_context(
            config.identity.ca_bundle, cert_file=config.identity.cert,
            key_file=config.identity.key,
        )  # fmt: skip
        self.command_key = public_key_from_text(
            config.identity.command_key.read_text(encoding="utf-8").strip()
        )
        self.inventory: dict[str, InventoryItem] = {}
        self.findings: list[dict[str, str]] = []
        self.link_up = False
        self.link_since: datetime | None = None
        self.link_error: str | None = None
        self.polls = 0
        self.batches = 0  # telemetry batches stored in the outbox
        self.last_batch_seq: int | None = None
        self.last_poll_at: datetime | None = None
        self._started = time.monotonic()
        self._wake = asyncio.Event()  # the outbox has something to send
        self._tick = asyncio.Event()  # the timer loop should look again now
        self._command_tasks: set[asyncio.Task[None]] = set()
        self.outbox: Outbox | None = None
        self._committed: Callable[[], Awaitable[None]] | None = None
        self.executor: CommandExecutor | None = None
        # the latest values per device, and whether it answered the last poll
        self.latest: dict[str, dict[str, float]] = {}
        self.online: dict[str, bool] = {}
        self._state_sent: dict[str, tuple[object, ...]] | None = None
        self.states_sent = 0
        self.heartbeats = 0
        self._next_heartbeat = float("inf")  # loop time; the timer loop sets the first
        self._beat_sent: HeartbeatFigures | None = None  # what the last heartbeat said
        self._beats_skipped = 0
        self._beat_seq = 0  # the outbox's last sequence number at the last heartbeat
        # polls at this phase of the poll interval on the loop's clock (None: one interval
        # after the last): gateways sharing a loop and a phase poll together and share its
        # turns, and phases spread over the interval spread the load (erab gateway fleet)
        self.poll_phase_s: float | None = None
        self.keepalive_s = 30  # MQTT keepalive: the broker declares the link dead after 1.5x
        self.meter: MeterSource | None = None
        self.meter_values: MeterValues | None = None
        self.meter_error: str | None = None
        self.meter_readings = 0
        self._fixed_sent: datetime | None = None
        self._epcs_for: tuple[object, ...] | None = None  # what _epcs was made for
        self._epcs: list[int] = []
        self.ems_actions = 0
        self.ems_last: dict[str, object] | None = None

    # -- discovery -------------------------------------------------------------------------
    def _inventory_from(self, nodes: list[RemoteNode]) -> dict[str, InventoryItem]:
        found: dict[str, InventoryItem] = {}
        seen = []
        for node in nodes:
            node_id = None if node.identification is None else node.identification.hex()
            for eoj, obj in sorted(node.objects.items()):
                if eoj.class_code == NODE_PROFILE_CLASS or obj.status == "no answer":
                    continue
                eoj_hex = f"{eoj.group:02x}{eoj.cls:02x}{eoj.instance:02x}"
                device_id = f"{node_id or node.host}-{eoj_hex}"
                allowed = False
                if node_id is not None:
                    key = DeviceKey(node_id, eoj_hex)
                    seen.append(SeenDevice(node.host, key))
                    if self.allow.allows(key):
                        device_id, allowed = self.allow.devices[key], True
                maker = node.manufacturer_code
                found[device_id] = InventoryItem(
                    device_id, node.host, eoj, node_id,
                    None if maker is None else f"{maker:06x}", obj.class_name,
                    obj.get_map, allowed,
                )  # fmt: skip
        known = {i.host: i.node_id for i in self.inventory.values() if i.node_id is not None}
        review = self.allow.review(seen, known)
        self.findings = [{"host": f.host, "node_id": f.key.node_id, "eoj": f.key.eoj,
                          "finding": f.problem} for f in review.findings]  # fmt: skip
        return found

    async def discover(self, controller: Controller) -> None:
        nodes = await controller.discover(
            hosts=self.config.hosts, multicast=self.config.multicast
        )
        self._nodes = nodes
        self.inventory = self._inventory_from(nodes)
        if self.executor is not None:
            self.executor.devices = self._controlled()

    def replace_allow_list(self, listed: tuple[RaAllowedDevice, ...]) -> AllowListChange:
        """Take the RA's allow-list (an ``allow_list`` command): store it in ``home`` (it
        outlives a restart) and make the listed devices discovered here controllable under
        the RA's device ids; a listed device not found is kept and reported refused."""
        allow = AllowList({d.key: d.device_id for d in listed})
        save_ra_allow_list(self.home / ALLOW_LIST_FILE, listed, self.clock.now(),
                           durable=self.config.outbox_durable)  # fmt: skip
        before = set(self.allow.devices.values())
        self.allow = allow
        self.rated = {d.device_id: d.rated_power_w for d in listed}
        self.inventory = self._inventory_from(self._nodes)
        found = {DeviceKey(i.node_id, i.eoj_hex) for i in self.inventory.values()
                 if i.node_id is not None}  # fmt: skip
        outcomes = [
            DeviceOutcome(device_id=d.device_id, outcome="applied") if d.key in found
            else DeviceOutcome(device_id=d.device_id, outcome="refused",
                               reason="not found on the LAN")
            for d in listed
        ]  # fmt: skip
        after = {d.device_id for d in listed}
        return AllowListChange(self._controlled(), outcomes, sorted(after - before),
                               sorted(before - after))  # fmt: skip

    def _controlled(self) -> dict[str, ControlledDevice]:
        rated = self.rated
        out = {}
        for item in self.inventory.values():
            kind = KINDS.get(item.eoj.class_code)
            if not item.allowed or kind is None:
                continue
            battery = self.config.battery
            if rated.get(item.device_id) is not None:
                battery = type(battery)(rated_power_w=float(rated[item.device_id] or 0.0),
                                        soc_reserve_pct=battery.soc_reserve_pct,
                                        soc_max_pct=battery.soc_max_pct,
                                        max_step_w=battery.max_step_w)  # fmt: skip
            out[item.device_id] = ControlledDevice(
                item.device_id, kind, item.host, item.eoj, battery=battery,
                comfort=self.config.comfort, pv=self.config.pv, aircon=self.config.aircon,
                water_heater=self.config.water_heater, ev=self.config.ev,
            )  # fmt: skip
        return out

    def _lan_meter(self, controller: Controller) -> LanMeter | None:
        """The site's meter object on the LAN (an allow-listed one first), if any."""
        meters = [i for i in self.inventory.values() if i.eoj.class_code == METER_CLASS]
        if not meters:
            return None
        item = sorted(meters, key=lambda i: not i.allowed)[0]
        current = self.meter
        if isinstance(current, LanMeter) and (current.host, current.eoj) == (item.host, item.eoj):
            return current
        return LanMeter(controller, item.host, item.eoj, item.device_id, self.clock)

    def hello(self, outbox: Outbox) -> Hello:
        return Hello(
            gateway_id=self.gateway_id, seq=outbox.next_seq(), sent_at=self.clock.now(),
            site_id=self.config.site_id, software=f"erab {__version__}",
            devices=[Device(device_id=i.device_id, eoj=i.eoj_hex, node_id=i.node_id,
                            maker_code=i.maker_code, name=i.class_name[:200])
                     for i in self.inventory.values()],
        )  # fmt: skip

    # -- telemetry -------------------------------------------------------------------------
    def _sample(self, item: InventoryItem, raw: dict[int, bytes],
                measured_at: datetime) -> Sample | None:  # fmt: skip
        """The telemetry sample of ``item`` from what it answered (None: nothing usable)."""
        points = _points_cached(item.eoj)
        values: dict[str, float] = {}
        for epc, edt in raw.items():
            point = points.get(epc)
            if point is None:
                continue  # asked for another object of the site (one EPC list per poll)
            value = point[1](edt)
            if value is not None:
                values[point[0]] = value
        if not values:
            return None
        return Sample(device_id=item.device_id, measured_at=measured_at, values=values)

    def _poll_epcs(self, devices: list[InventoryItem], meter: LanMeter | None) -> list[int]:
        """Every EPC this site's poll reads: the points of its devices' classes and the
        meter's; each object is asked only for those of them its Get map offers."""
        key = (tuple(i.eoj for i in devices), meter is not None)
        if self._epcs_for != key:
            wanted: dict[int, None] = {}
            for item in devices:
                wanted.update(dict.fromkeys(_points_cached(item.eoj)))
            if meter is not None:
                wanted.update(dict.fromkeys(METER_READ_EPCS))
            self._epcs_for, self._epcs = key, list(wanted)
        return self._epcs

    async def poll(self, controller: Controller, outbox: Outbox) -> TelemetryBatch | None:
        """Read every device once and store the batch in the outbox (None: nothing read);
        with no route B meter, read the LAN meter too.  A state message follows when a
        device's state changed."""
        devices = [i for i in self.inventory.values() if i.eoj.class_code != METER_CLASS]
        if self.config.meter is None:
            self.meter = self._lan_meter(controller)
        lan_meter = self.meter if isinstance(self.meter, LanMeter) else None
        if lan_meter is not None and lan_meter.scaling is None:
            await self.read_meter(outbox)  # the first reading reads the meter's scaling too
            meter_target = None
        else:
            meter_target = lan_meter
        # One Controller.get_many for the whole site: a Get per object, every object's in
        # flight one after another per node (one request per host, as get_raw keeps), with
        # no task, lock or timer per object.  One EPC list serves all the site's objects,
        # each asked for the part of it its Get map offers.
        targets = [(i.host, i.eoj) for i in devices]
        if meter_target is not None:
            targets.append((meter_target.host, meter_target.eoj))
        epcs = self._poll_epcs(devices, meter_target)
        answers = await controller.get_many(targets, epcs) if targets else {}
        measured_at = self.clock.now()
        if meter_target is not None:
            answer = answers.get((meter_target.host, meter_target.eoj))
            if isinstance(answer, dict) and answer:
                self._store_meter(outbox, meter_target,
                                  meter_target.values_from(answer, measured_at))  # fmt: skip
            else:
                self.meter_error = str(answer) if answer is not None else "no answer"
        read: list[Sample | None] = []
        for item in devices:
            answer = answers.get((item.host, item.eoj))
            read.append(self._sample(item, answer, measured_at)
                        if isinstance(answer, dict) else None)  # fmt: skip
        samples = [s for s in read if s is not None]
        self.polls += 1
        self.last_poll_at = measured_at
        for item, sample in zip(devices, read, strict=True):
            self.online[item.device_id] = sample is not None
            if sample is not None:
                self.latest[item.device_id] = dict(sample.values)
        self.send_state_if_changed(outbox)
        if lan_meter is not None:
            await self.ems_step()
        if not samples:
            return None
        batch = TelemetryBatch(gateway_id=self.gateway_id, seq=outbox.next_seq(),
                               sent_at=measured_at, samples=samples)  # fmt: skip
        outbox.put(batch)
        self.batches += 1
        self.last_batch_seq = batch.seq
        self._stored()
        return batch

    # -- the meter ---------------------------------------------------------------------------
    async def read_meter(self, outbox: Outbox) -> MeterReading | None:
        """Read the site's meter once and store a ``meter`` message (None: no reading)."""
        source = self.meter
        if source is None:
            return None
        try:
            values = await source.read()
        except (NoResponse, TimeoutError, RouteBError, OSError) as exc:
            self.meter_error = str(exc) or type(exc).__name__
            return None
        return self._store_meter(outbox, source, values)

    def _store_meter(self, outbox: Outbox, source: MeterSource,
                     values: MeterValues) -> MeterReading:  # fmt: skip
        self.meter_error = None
        self.meter_values = values
        self.meter_readings += 1
        fixed = values.fixed_at is not None and values.fixed_at != self._fixed_sent
        reading = MeterReading(
            gateway_id=self.gateway_id, seq=outbox.next_seq(), sent_at=self.clock.now(),
            meter_id=source.meter_id, measured_at=values.measured_at, power_w=values.power_w,
            import_kwh=values.import_kwh, export_kwh=values.export_kwh,
            # the 30-minute readings only when the meter has a new one
            fixed_at=values.fixed_at if fixed else None,
            fixed_import_kwh=values.fixed_import_kwh if fixed else None,
            fixed_export_kwh=values.fixed_export_kwh if fixed else None,
        )  # fmt: skip
        outbox.put(reading)
        if fixed:
            self._fixed_sent = values.fixed_at
        self._stored()
        return reading

    async def _route_b_loop(self, outbox: Outbox) -> None:
        meter = self.config.meter
        assert meter is not None
        source = RouteBMeter(
            meter.port, RouteBCredentials(meter.route_b_id, meter.password), meter.meter_id,
            self.clock, property_timeout_s=meter.property_timeout_s,
        )  # fmt: skip
        self.meter = source
        interval = meter.interval_s or self.config.poll_interval_s
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = loop.time()
                if await self.read_meter(outbox) is not None:
                    await self.ems_step()
                raise_if_cancelled()
                await asyncio.sleep(max(0.0, interval - (loop.time() - started)))
        finally:
            await source.close()

    # -- the local EMS -----------------------------------------------------------------------
    def _ems_battery(self) -> str | None:
        if self.config.ems.battery_id is not None:
            return self.config.ems.battery_id
        batteries = [d for d, c in (self.executor.devices if self.executor else {}).items()
                     if c.kind == "battery"]  # fmt: skip
        return batteries[0] if batteries else None

    async def ems_step(self) -> None:
        """After a meter reading: let the local EMS set the battery, unless it is off, an RA
        command is in force on the battery, or nothing needs to change."""
        policy, executor, meter = self.config.ems, self.executor, self.meter_values
        if not policy.enabled or executor is None or meter is None or meter.power_w is None:
            return
        battery_id = self._ems_battery()
        device = None if battery_id is None else executor.devices.get(battery_id)
        values = self.latest.get(battery_id or "", {})
        if device is None or "soc_pct" not in values or "power_w" not in values:
            return
        if executor.ra_controls(device.device_id):
            return  # the RA's command wins; the EMS resumes when it ends
        inputs = EmsInputs(meter.power_w, values["power_w"], values["soc_pct"])
        setpoint = decide_ems(inputs, policy, device.battery or self.config.battery)
        if setpoint is None:
            return
        outcome = await executor.apply_local(device.device_id, setpoint.power_w, setpoint.reason)
        self.ems_actions += 1
        self.ems_last = {"at": self.clock.now().isoformat(), "device_id": device.device_id,
                         "power_w": setpoint.power_w, "reason": setpoint.reason,
                         "outcome": outcome.outcome, "detail": outcome.reason}  # fmt: skip
        if outcome.readback and "mode_code" in outcome.readback:
            self.latest.setdefault(device.device_id, {})["mode_code"] = outcome.readback[
                "mode_code"]
        # the battery reads its new power on the next poll; until then assume the setpoint
        if outcome.outcome in ("applied", "clipped"):
            self.latest[device.device_id]["power_w"] = setpoint.power_w

    # -- state ---------------------------------------------------------------------------------
    def device_states(self) -> list[DeviceState]:
        now = self.clock.now()
        active = set() if self.executor is None else set(self.executor.active)
        states = []
        for item in self.inventory.values():
            if item.eoj.class_code == METER_CLASS or item.device_id not in self.online:
                continue
            values = self.latest.get(item.device_id, {})
            operating = values.get("operating")
            code = values.get("mode_code")
            mode = None
            if code is not None:
                names = MODE_NAMES.get(item.eoj.class_code, {})
                mode = names.get(int(code), f"0x{int(code):02x}")
            states.append(DeviceState(
                device_id=item.device_id, measured_at=now, online=self.online[item.device_id],
                operating=None if operating is None else operating == 1.0, mode=mode,
                controlled=item.device_id in active,
            ))  # fmt: skip
        return states

    def send_state(self, outbox: Outbox) -> State:
        """Store a ``state`` message with every device's state."""
        states = self.device_states()
        message = State(gateway_id=self.gateway_id, seq=outbox.next_seq(),
                        sent_at=self.clock.now(), devices=states)  # fmt: skip
        outbox.put(message)
        self._state_sent = {d.device_id: _state_key(d) for d in states}
        self.states_sent += 1
        self._stored()
        return message

    def send_state_if_changed(self, outbox: Outbox) -> State | None:
        states = self.device_states()
        if self._state_sent is None or not states:
            return None  # nothing sent yet: the connect sends the first
        if {d.device_id: _state_key(d) for d in states} == self._state_sent:
            return None
        return self.send_state(outbox)

    # -- the loops -------------------------------------------------------------------------
    def _stored(self) -> None:
        """A message went into the outbox: wake the drain, unless the outbox groups its
        commits (then the commit wakes it: nothing may leave before it)."""
        if self.outbox is None or not self.outbox.database.group_commit:
            self._wake.set()

    async def _poll_loop(self, controller: Controller, outbox: Outbox) -> None:
        loop = asyncio.get_running_loop()
        next_discovery = loop.time() + self.config.discover_every_s
        while True:
            started = loop.time()
            if started >= next_discovery:
                await self.discover(controller)
                next_discovery = started + self.config.discover_every_s
            await self.poll(controller, outbox)
            if self.executor is not None:
                self._heartbeat_if_due(self.executor, outbox)
            self.write_status()
            raise_if_cancelled()
            wake = next_poll_at(started, self.config.poll_interval_s, self.poll_phase_s)
            await asyncio.sleep(max(0.0, wake - loop.time()))

    def _heartbeat_if_due(self, executor: CommandExecutor, outbox: Outbox) -> None:
        now = asyncio.get_running_loop().time()
        if now < self._next_heartbeat:
            return
        last = executor.verifier.state.last_sequence
        figures = HeartbeatFigures(outbox.backlog, outbox.dropped_total, last)
        others = outbox.last_seq - self._beat_seq  # messages stored since the last beat
        if heartbeat_due(figures, self._beat_sent, others=others, skipped=self._beats_skipped):
            outbox.put(Heartbeat(
                gateway_id=self.gateway_id, seq=outbox.next_seq(), sent_at=self.clock.now(),
                uptime_s=time.monotonic() - self._started, backlog=figures.backlog,
                dropped_total=figures.dropped_total, last_command_seq=last or None,
            ))  # fmt: skip
            self.heartbeats += 1
            self._stored()
            self._beat_sent, self._beats_skipped = figures, 0
        else:
            self._beats_skipped += 1
        self._beat_seq = outbox.last_seq
        self._next_heartbeat = now + self.config.heartbeat_interval_s

    async def _timer_loop(self, executor: CommandExecutor, outbox: Outbox) -> None:
        loop = asyncio.get_running_loop()
        self._next_heartbeat = loop.time()
        self._beat_seq = outbox.last_seq
        # the poll loop looks for a due heartbeat after every poll: when it polls at least
        # as often as heartbeats are due, an idle gateway's timer loop need not wake for them
        polls_beat = self.config.poll_interval_s <= self.config.heartbeat_interval_s
        while True:
            restored = await executor.restore_due()
            restored += await executor.uplink_state(self.link_up)
            if restored:
                self.send_state_if_changed(outbox)  # a restore ends "controlled"
            self._heartbeat_if_due(executor, outbox)
            # idle gateways (no command in force, link up) wake only for the heartbeat, or
            # not at all: a fleet of a thousand in one process must not spend its CPU on
            # empty ticks
            idle = not executor.active and self.link_up
            self._tick.clear()
            if idle and polls_beat:
                await self._tick.wait()
            elif idle:
                await wait_event(self._tick, max(0.05, self._next_heartbeat - loop.time()))
            else:
                await wait_event(self._tick, self._active_pause_s(executor, polls_beat))

    def _active_pause_s(self, executor: CommandExecutor, polls_beat: bool) -> float:
        """How long the timer loop may sleep with commands in force: until the earliest
        window's end (its restore), or the heartbeat when the polls do not send it.  One
        second on a simulated clock (its time may jump or speed up) or with the link down
        (the uplink grace is counted in those ticks).  A new command, a restore and a link
        change wake it at once (``_tick``)."""
        if not self.link_up or not isinstance(self.clock, RealClock) or not executor.active:
            return 1.0
        earliest = min(a.end for a in executor.active.values())
        pause = (earliest - self.clock.now()).total_seconds()
        if not polls_beat:
            pause = min(pause, self._next_heartbeat - asyncio.get_running_loop().time())
        return min(max(0.05, pause), MAX_TIMER_PAUSE_S)

    async def _handle(self, wire: bytes, executor: CommandExecutor, outbox: Outbox) -> None:
        ack = await executor.handle(wire)
        raise_if_cancelled()
        outbox.put(ack)
        for outcome in ack.outcomes:  # the read-back is the device's newest mode
            if "mode_code" in outcome.readback and outcome.device_id in self.latest:
                self.latest[outcome.device_id]["mode_code"] = outcome.readback["mode_code"]
        self.send_state_if_changed(outbox)  # "controlled" now, or no longer
        self._stored()
        self._tick.set()  # a command may now be in force: its restore timer must run

    async def _commands(self, link: GatewayLink, executor: CommandExecutor,
                        outbox: Outbox) -> None:  # fmt: skip
        async for command in link.commands():
            task = asyncio.create_task(self._handle(bytes(command.envelope), executor, outbox))
            self._command_tasks.add(task)
            task.add_done_callback(self._command_tasks.discard)

    async def _drain_loop(self, link: GatewayLink, outbox: Outbox) -> None:
        while True:
            self._wake.clear()
            if await outbox.drain_encoded(link.publish_many_encoded):
                self.write_status()
            raise_if_cancelled()
            if outbox.backlog:
                # woken by every put (or group commit); the timeout only re-checks a
                # backlog left by a failed publish
                await wait_event(self._wake, 30.0)
            else:  # nothing left to re-check: no timer (a fleet has a thousand drains)
                await self._wake.wait()

    def _set_link(self, up: bool, error: str | None = None) -> None:
        if up != self.link_up or self.link_since is None:
            self.link_since = self.clock.now()
        self.link_up = up
        self.link_error = error
        self._tick.set()  # the uplink-loss grace is timed by the timer loop
        self.write_status()

    async def _link_loop(self, executor: CommandExecutor, outbox: Outbox) -> None:
        backoff = 1.0
        while True:
            try:
                link = GatewayLink(self.gateway_id, self.config.broker_host,
                                   self.config.broker_port, self.tls, sequence=outbox,
                                   clock=self.clock, keepalive_s=self.keepalive_s)  # fmt: skip
                if self._committed is not None:  # the will's sequence number, before use
                    await self._committed()
                async with link:
                    raise_if_cancelled()
                    backoff = 1.0
                    self._set_link(True)
                    outbox.put(self.hello(outbox))  # every connect (docs/bus.md)
                    self.send_state(outbox)  # and the devices' states
                    tasks = [asyncio.create_task(self._commands(link, executor, outbox)),
                             asyncio.create_task(self._drain_loop(link, outbox))]  # fmt: skip
                    try:
                        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        for task in tasks:
                            task.cancel()
                        await asyncio.gather(*tasks, return_exceptions=True)
                    for task in done:
                        task.result()  # raises the link's error
                    raise aiomqtt.MqttError("the broker closed the session")
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                self._set_link(False, str(exc) or type(exc).__name__)
            raise_if_cancelled()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.reconnect_max_s)

    def open_files(self) -> GatewayFiles:
        """The outbox, audit log and verifier state of this gateway, each a file of its own
        in ``home`` (or where the site config says), every write committed as it is made."""
        config = self.config
        outbox = Outbox(config.outbox_path or self.home / "outbox.sqlite", self.gateway_id,
                        max_messages=config.outbox_max_messages,
                        durable=config.outbox_durable)  # fmt: skip
        audit_store = SqliteAuditStore(self.home / "audit.sqlite")
        # [outbox] durable governs every state file a command passes through
        state = FileVerifierStateStore(self.home / "verifier.json", durable=config.outbox_durable)

        def close() -> None:
            outbox.close()
            audit_store.close()

        return GatewayFiles(outbox, AuditLog(audit_store, self.clock), state, None, close)

    async def run(self, duration_s: float | None = None) -> None:
        """Run until cancelled (Ctrl-C) or for ``duration_s`` seconds; stops cleanly."""
        self.home.mkdir(parents=True, exist_ok=True)
        config = self.config
        files = self.open_files()
        outbox, audit = files.outbox, files.audit
        self.outbox = outbox
        self._committed = files.committed
        outbox.on_committed = self._wake.set  # group commit: now there is more to send
        verifier = EnvelopeVerifier(
            self.gateway_id, self.clock, files.verifier_store, trusted_key=self.command_key,
            audit=audit,
        )  # fmt: skip
        controller = Controller(config.bind, timeout_s=1.0, multicast=config.multicast)
        tasks: list[asyncio.Task[None]] = []
        try:
            await controller.open()
            await self.discover(controller)
            executor = CommandExecutor(
                self.gateway_id, verifier=verifier, controller=controller,
                devices=self._controlled(), audit=audit, clock=self.clock, ack_seq=outbox,
                uplink_grace=timedelta(seconds=config.uplink_grace_s),
                committed=files.committed, on_allow_list=self.replace_allow_list,
            )  # fmt: skip
            self.executor = executor
            self.write_status()
            tasks = [
                asyncio.create_task(self._poll_loop(controller, outbox)),
                asyncio.create_task(self._link_loop(executor, outbox)),
                asyncio.create_task(self._timer_loop(executor, outbox)),
            ]
            if config.meter is not None:
                tasks.append(asyncio.create_task(self._route_b_loop(outbox)))
            # the loops run until cancelled; one that ends has failed, and says why
            done, _ = await asyncio.wait(
                tasks, timeout=duration_s, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                task.result()
            await self._last_drain(outbox)
        finally:
            for task in [*tasks, *self._command_tasks]:
                task.cancel()
            await asyncio.gather(*tasks, *self._command_tasks, return_exceptions=True)
            if self.link_up:
                self.link_up, self.link_since = False, self.clock.now()
            with contextlib.suppress(Exception):
                self.write_status(running=False)
            await controller.close()
            outbox.on_committed = None
            files.close()
            self.outbox = None

    async def _last_drain(self, outbox: Outbox) -> None:
        """Give the link a moment to send what the last poll stored before stopping."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while self.link_up and outbox.status().backlog and loop.time() < deadline:
            self._wake.set()
            await asyncio.sleep(0.1)

    # -- status ----------------------------------------------------------------------------
    def status(self, *, running: bool = True) -> dict[str, Any]:
        outbox = self.outbox.status() if self.outbox is not None else None
        active = [] if self.executor is None else [
            {"device_id": d, "command_seq": a.life.command_seq, "end": a.end.isoformat()}
            for d, a in sorted(self.executor.active.items())
        ]  # fmt: skip
        return {
            "gateway_id": self.gateway_id,
            "site_id": self.config.site_id,
            "running": running,
            "pid": os.getpid(),
            "updated_at": self.clock.now().isoformat(),
            "poll_interval_s": self.config.poll_interval_s,
            "certificate": self.certificate,
            "link": {
                "state": "up" if self.link_up else "down",
                "since": None if self.link_since is None else self.link_since.isoformat(),
                "broker": f"{self.config.broker_host}:{self.config.broker_port}",
                "error": self.link_error,
            },
            "outbox": None if outbox is None else {
                "backlog": outbox.backlog, "dropped_total": outbox.dropped_total,
                "last_seq": outbox.last_seq,
            },
            "polls": self.polls,
            "telemetry_batches": self.batches,
            "last_poll_at": None if self.last_poll_at is None else self.last_poll_at.isoformat(),
            "inventory": [i.as_dict() for i in self.inventory.values()],
            "findings": self.findings,
            "allow_list": [{"device_id": d, "node_id": k.node_id, "eoj": k.eoj}
                           for k, d in sorted(self.allow.devices.items())],
            "active_commands": active,
            "meter": None if self.meter is None else {
                "source": self.meter.kind, "meter_id": self.meter.meter_id,
                "readings": self.meter_readings,
                "power_w": None if self.meter_values is None else self.meter_values.power_w,
                "measured_at": None if self.meter_values is None
                else self.meter_values.measured_at.isoformat(),
                "error": self.meter_error,
            },
            "ems": {"enabled": self.config.ems.enabled, "actions": self.ems_actions,
                    "last": self.ems_last},
        }

    def write_status(self, *, running: bool = True) -> None:
        data = json.dumps(self.status(running=running), indent=2) + "\n"
        write_atomically(self.home / STATUS_FILE, data.encode("utf-8"))


def read_status(home: Path) -> dict[str, Any]:
    """The status a gateway running (or last run) from ``home`` wrote."""
    path = home / STATUS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no gateway status in {home}: no gateway has run from there")
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def next_poll_at(started: float, interval_s: float, phase_s: float | None) -> float:
    """When the poll after the one ``started`` begins: one interval later; or, with a
    ``phase_s``, at the next time ``phase_s + k * interval_s`` at least half an interval
    on (so a gateway's polls settle on its phase, one interval apart, after the first)."""
    if phase_s is None:
        return started + interval_s
    k = math.ceil((started + interval_s / 2 - phase_s) / interval_s)
    return phase_s + k * interval_s


@dataclass(frozen=True)
class HeartbeatFigures:
    """What a heartbeat tells beyond "alive" (docs/bus.md)."""

    backlog: int
    dropped_total: int
    last_command_seq: int


HEARTBEAT_BACKLOG_QUIET = 16  # a backlog up to this is the poll in flight, not news
HEARTBEAT_AT_LEAST_EVERY = 10  # intervals: a heartbeat at least this often, news or not


def heartbeat_due(
    figures: HeartbeatFigures, sent: HeartbeatFigures | None, *, others: int, skipped: int
) -> bool:
    """Whether the heartbeat of this interval goes up.  It is left out only when it would
    say nothing new: other messages (``others``, stored since the last one) already show
    that the gateway is alive, its figures are those of the last heartbeat (a backlog of a
    poll in flight counts as none), and fewer than ``HEARTBEAT_AT_LEAST_EVERY`` - 1 were
    left out in a row."""
    if sent is None or others <= 0 or skipped + 1 >= HEARTBEAT_AT_LEAST_EVERY:
        return True
    return (
        figures.dropped_total != sent.dropped_total
        or figures.last_command_seq != sent.last_command_seq
        or max(figures.backlog, sent.backlog) > HEARTBEAT_BACKLOG_QUIET
    )


def _state_key(state: DeviceState) -> tuple[object, ...]:
    return (state.online, state.operating, state.mode, state.controlled)


STALE_POLLS = 3  # a running gateway rewrites its status after every poll
STALE_MIN_S = 10.0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def not_running_reason(status: dict[str, Any], *, age_s: float, alive: bool) -> str | None:
    """Why a status that says ``running`` is wrong (None: it may be believed).

    ``age_s`` is how long ago the file was written (by the file's own mtime, so a gateway on
    a simulated clock is judged in real seconds), ``alive`` whether its pid still exists.
    """
    if not status.get("running"):
        return None
    last = status.get("updated_at")
    if not alive:
        return f"pid {status.get('pid')} gone; last update {last}"
    interval = float(status.get("poll_interval_s") or 60.0)
    limit = max(STALE_POLLS * interval, STALE_MIN_S)
    if age_s > limit:
        return f"no update for {age_s:.0f} s (more than {limit:g} s); last update {last}"
    return None


def check_status(home: Path) -> dict[str, Any]:
    """:func:`read_status` plus ``alive`` (the gateway really is running) and
    ``not_running_reason`` (why not, when the file says running but the process is gone or
    has stopped writing)."""
    status = read_status(home)
    age_s = time.time() - (home / STATUS_FILE).stat().st_mtime
    pid = status.get("pid")
    alive = isinstance(pid, int) and pid_alive(pid)
    reason = not_running_reason(status, age_s=age_s, alive=alive)
    status["alive"] = bool(status.get("running")) and reason is None
    status["not_running_reason"] = reason
    return status
