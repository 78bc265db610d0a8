"""``erab demo``: a whole virtual power plant on one machine, and a scripted day.

:class:`Demo` puts the parts together on embedded defaults, in this process unless said
otherwise: a fresh deployment home (``erab pki init``), the broker (nats-server, a child
process on ephemeral loopback ports), an emulated town (every site an ECHONET Lite node on its
own loopback address), one gateway per site (``erab gateway fleet``'s :class:`Fleet`), the
RA's registry of the same town and the RA (:class:`RaService`), an operator account, and the
console with the RA's REST API on one listener.  Town, gateways and RA share one
:class:`~erab.clock.SimulatedClock` running ``speed`` times faster than real time, so a
command's issue and expiry times mean the same thing on both ends.

The day (:meth:`Demo.run_day`): telemetry comes in; the aggregation coordinator sends a
tertiary-1 event (``-X`` kW for 3 hours, X half the fleet's down flexibility for that window
unless given); the RA plans and dispatches it; gateways act; meters measure; at the end the
settlement is made (issue 12's engine when it is installed; otherwise :func:`summarise`,
this module's own target-against-delivered summary, which says so) and the report written.

The coordinator is a :class:`Coordinator`: by default
:class:`~erab.sim.coordinator.OpenAdrCoordinator`, erab's OpenADR 2.0b VTN with the RA's VEN
registered to it (``--coordinator openadr``); :class:`DirectCoordinator` calls the RA's event
creation in process (``--coordinator direct``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from erab.aggregator.closedloop import DEFAULT_TOLERANCE
from erab.aggregator.events import DrEvent, EventRequest, EventStage
from erab.clock import JST, RealClock, SimulatedClock
from erab.web.views import FleetHistory

DEMO_OPERATOR = "demo"
EVENT_HOURS = 3.0  # tertiary-1: at least 3 hours (balancing market product table)
PRODUCT = "tertiary-1"
SLOT_S = 1800


def day_start(start_at: str, now: datetime) -> datetime:
    """The simulated day's start: the next ``HH:MM`` (JST) after ``now``, or ``now``."""
    now = now.astimezone(JST).replace(microsecond=0)
    if start_at == "now":
        return now
    try:
        hour, minute = (int(part) for part in start_at.split(":"))
        at = now.replace(hour=hour, minute=minute, second=0)
    except ValueError:
        raise ValueError(f"--start {start_at!r}: give HH:MM (JST, 00:00-23:59) or now") from None
    return at if at > now else at + timedelta(days=1)


class DemoError(RuntimeError):
    """The demo cannot start or go on; the message says why."""


@dataclass(frozen=True)
class DemoSettings:
    homes: int = 50
    stores: int = 3
    speed: float = 120.0  # simulated seconds per real second
    event_kw: float | None = None  # None: half the fleet's down flexibility, downwards
    event_hours: float = EVENT_HOURS
    lead_minutes: float = 15.0  # simulated minutes from the coordinator's call to the start
    tail_minutes: float = 15.0  # simulated minutes watched after the end
    home: Path | None = None  # None: a fresh temporary folder
    listen: tuple[str, int] = ("127.0.0.1", 8080)
    base: str = "127.1.0.1"  # the town's first site; later sites count up
    bind_base: str = "127.3.0.1"  # the first gateway's LAN address
    seed: int = 0
    history_days: int = 31  # meter history behind the start: the settlement's baselines
    # look back up to 30 days (High 4 of 5 working days, High 2 of 3 others)
    settle_timeout_s: float = 60.0  # real seconds to wait for the fleet's telemetry
    coordinator: str = "openadr"  # the AC: "openadr" (2.0b VTN and the RA's VEN) or "direct"
    # the simulated day starts at this JST time of day (its next occurrence), "now" for the
    # wall clock's: at 23:30 the batteries charge on the night tariff and can give it up;
    # by day they already cover their homes' import and may not export, so the fleet has
    # little down flexibility (air conditioners are not dispatched without fitted models)
    start_at: str = "23:30"

    def check(self) -> None:
        if self.homes < 0 or self.stores < 0 or self.homes + self.stores == 0:
            raise ValueError(f"the town needs at least one site (homes {self.homes}, "
                             f"stores {self.stores})")  # fmt: skip
        day_start(self.start_at, datetime.now(JST))  # refuses a bad --start naming it
        if self.coordinator not in ("openadr", "direct"):
            raise ValueError(f"coordinator {self.coordinator!r}: openadr or direct")
        if not 1 <= self.speed <= 3600:
            raise ValueError(f"--speed must be 1-3600 (simulated seconds per second), "
                             f"got {self.speed:g}")  # fmt: skip
        if self.event_kw is not None and not (self.event_kw == self.event_kw and self.event_kw):
            raise ValueError(f"--event must be a non-zero number of kW, got {self.event_kw}")

    @property
    def poll_interval_s(self) -> float:
        """Gateways poll in real seconds: every 5 simulated minutes, but 1-10 s."""
        return min(10.0, max(1.0, 300.0 / self.speed))


@dataclass
class DemoProgress:
    """One look at the day, for the terminal and ``--json``."""

    phase: str
    sim_time: str
    event_id: str | None = None
    stage: str | None = None
    target_kw: float | None = None
    delivered_kw: float | None = None
    fleet_kw: float | None = None
    resources_online: int = 0
    commands: int = 0
    acknowledged: int = 0
    refused: int = 0


class Coordinator(Protocol):
    """The aggregation coordinator as the demo uses it: it sends the RA one event."""

    async def send_event(self, target_kw: float, start: datetime, duration: timedelta,
                         product: str) -> DrEvent: ...  # fmt: skip


class DirectCoordinator:
    """Sends the event by calling the RA's event creation in this process (until the OpenADR
    VTN of issue 13 sends it over OpenADR 2.0b instead)."""

    def __init__(self, ra: Any) -> None:
        self.ra = ra

    async def send_event(self, target_kw: float, start: datetime, duration: timedelta,
                         product: str) -> DrEvent:  # fmt: skip
        request = EventRequest(target_kw, start, duration, product=product,
                               source="coordinator", requested_by="ac:demo")  # fmt: skip
        event: DrEvent = await self.ra.create_event(request)
        return event


@dataclass
class Sample:
    at_s: float
    fleet_kw: float
    delivered_kw: float | None


def summarise(event: DrEvent, samples: list[Sample], *, tolerance: float = DEFAULT_TOLERANCE,
              response_s: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """The demo's own settlement stand-in: target against delivered per 30-minute slot and
    over the window.  Delivered is measured on the resources the RA commanded: their power
    against what each drew just before dispatch (a per-resource "before" baseline), summed;
    not issue 12's baseline settlement from the meters.  The window's figure is held to the
    tolerance from the product's response time on (``response_s`` after the start: the
    ramp the product allows); the slots show everything."""
    request = event.request
    lo_s, hi_s = request.start.timestamp(), request.end.timestamp()
    during = [s for s in samples if lo_s <= s.at_s < hi_s and s.delivered_kw is not None]
    inside = [s for s in during if s.at_s >= lo_s + response_s]
    want = abs(request.target_kw)
    slots = []
    for slot in request.slots():
        lo = max(slot, request.start).timestamp()
        hi = min(slot + timedelta(minutes=30), request.end).timestamp()
        part = [s.delivered_kw for s in during if lo <= s.at_s < hi and s.delivered_kw is not None]
        delivered = float(np.mean(part)) if part else None
        slots.append({"slot": slot.isoformat(), "target_kw": want, "delivered_kw": _r(delivered),
                      "energy_kwh": _r(None if delivered is None else delivered * (hi - lo) / 3600),
                      "samples": len(part)})  # fmt: skip
    delivered_kw = float(np.mean([s.delivered_kw for s in inside])) if inside else None
    ratio = None if delivered_kw is None else delivered_kw / want
    fleet = [s.fleet_kw for s in inside]
    return {
        "method": "erab demo summary: the commanded resources' power against their power just "
        "before dispatch (not the settlement engine's baseline from meter data; issue 12)",
        "event_id": event.event_id, "product": request.product,
        "target_kw": request.target_kw, "start": request.start.isoformat(),
        "end": request.end.isoformat(), "delivered_kw": _r(delivered_kw), "ratio": _r(ratio, 4),
        "tolerance": tolerance, "assessed_after_s": response_s,
        "within_tolerance": ratio is not None and abs(ratio - 1.0) <= tolerance,
        "fleet_kw_mean": _r(float(np.mean(fleet)) if fleet else None),
        "samples": len(inside), "slots": slots,
    }  # fmt: skip


def delivered_by_commanded(ra: Any, event_id: str, before_kw: np.ndarray, down: bool) -> float:
    """kW the resources commanded for ``event_id`` deliver now against ``before_kw`` (their
    power just before dispatch), in the event's direction; resources not heard count 0."""
    plan = ra.plans.get(event_id)
    if plan is None:
        return 0.0
    row_of = {r.resource_id: i for i, r in enumerate(ra.resources)}
    rows = sorted({row_of[c.body["device_id"]] for c in plan.commands
                   if c.body.get("device_id") in row_of})  # fmt: skip
    if not rows:
        return 0.0
    idx = np.array(rows)
    change = np.nan_to_num(before_kw[idx] - ra.state.power_kw[idx])
    return float(change.sum() if down else -change.sum())


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def settle_with_engine(home: Path, event_id: str, out_dir: Path,
                       participants: list[str] | None = None) -> dict[str, Any] | None:  # fmt: skip
    """Issue 12's settlement of the event from the home's meter data and audit log, and its
    report (CSV, JSON, PNG plots, HTML) in ``out_dir``, over the ``participants`` (the sites
    the RA dispatched) when given; None when the engine is not installed, ``{"error": ...}``
    when it cannot settle the event."""
    try:
        from erab.aggregator.report import write_report
        from erab.aggregator.settlement import HomeSources, find_event, settle_home
    except ImportError:
        return None
    try:
        sources = HomeSources.of(home)
        event, events = find_event(sources, event_id)
        settlement = settle_home(sources, event, all_events=events.values(),
                                 participants=participants)  # fmt: skip
        files = write_report(settlement, out_dir)
    except (ValueError, OSError) as exc:
        return {"error": str(exc)}
    summary: dict[str, Any] = settlement.as_dict()["summary"]
    return {"summary": summary, "files": [str(f) for f in files.files]}


def init_home(home: Path) -> None:
    """``erab pki init`` on ``home`` (its output kept off the terminal)."""
    from erab.cli import main as erab

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = erab(["pki", "init", "--home", str(home)])
    if code != 0:
        raise DemoError(f"erab pki init --home {home} failed: {out.getvalue().strip()}")


ProgressHook = Callable[[str, str], None]  # (phase, detail)


@dataclass
class DemoParts:
    """What a running demo is made of (for stopping it, and for tests to look at)."""

    home: Path
    clock: SimulatedClock
    broker: Any = None
    emulation: Any = None
    fleet: Any = None
    ra: Any = None
    desk: Any = None
    console: Any = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)


class Demo:
    """The whole plant on one machine (see the module's text)."""

    def __init__(self, settings: DemoSettings, *, on_phase: ProgressHook | None = None) -> None:
        settings.check()
        self.settings = settings
        self.on_phase = on_phase or (lambda phase, detail: None)
        self.parts: DemoParts | None = None
        self.password: str | None = None
        self.timings: dict[str, float] = {}
        self._began = time.monotonic()
        self._coordinator: Any = None  # the OpenADR coordinator run_day started, if any

    def _mark(self, phase: str, detail: str = "") -> None:
        self.timings[phase] = round(time.monotonic() - self._began, 3)
        self.on_phase(phase, detail)

    @property
    def console_url(self) -> str:
        if self.parts is None or self.parts.console is None:
            raise DemoError("the demo's console is not running")
        return str(self.parts.console.url)

    async def start(self) -> DemoParts:
        """Everything up to the RA running and the console answering; then the town and
        its gateways (telemetry starts coming in)."""
        from erab.aggregator.registry import Registry
        from erab.aggregator.service import RaService
        from erab.bus import BrokerHome, BrokerProcess, Ports, prepare
        from erab.cli.ra import scenario_inventory, store_path
        from erab.cli.web import HomeSecurityDesk, start_console
        from erab.devices import Scenario
        from erab.devices.server import site_addresses
        from erab.gateway.fleet import Fleet, FleetSettings, FleetSite
        from erab.security import Role
        from erab.sim.emulation import build_emulation, check_site_addresses
        from erab.store import SqliteStore
        from erab.web.app import ConsoleHooks

        s = self.settings
        home = Path(s.home) if s.home is not None else Path(tempfile.mkdtemp(prefix="erab-demo-"))
        home.mkdir(parents=True, exist_ok=True)
        scenario = Scenario.generate(s.homes, s.stores, seed=s.seed)
        check_site_addresses(scenario, base=s.base)
        start = day_start(s.start_at, datetime.now(JST))
        # everyone's clock but the town's, which build_emulation makes; set to it once built
        parts = self.parts = DemoParts(home, SimulatedClock(start, speed=s.speed))

        await asyncio.to_thread(init_home, home)
        self._mark("pki", str(home))
        prepare(home, ports=Ports(0, 0, 0))
        parts.broker = BrokerProcess(BrokerHome(home))
        # started from this (the main) thread: the child dies with the thread that forked it
        # (PR_SET_PDEATHSIG), and an executor thread ends long before the demo does
        running = parts.broker.start()
        self._mark("broker", f"nats {running.nats_port}, mqtt {running.mqtt_port}, "
                             f"monitor {running.monitor_port}, pid {running.pid}")
        building = asyncio.create_task(asyncio.to_thread(
            build_emulation, scenario, start, speed=s.speed, history_days=s.history_days,
            base=s.base))  # fmt: skip
        store = SqliteStore(store_path(home), create=True)
        Registry(store).import_inventory(scenario_inventory(scenario))
        store.close()
        try:
            # the RA and its console answer while the town's history is being computed
            # the closed loop compares with telemetry: checking more often than it arrives
            # (every poll interval, real time) would correct the same stale reading again
            loop_every_s = max(60.0, 2 * s.poll_interval_s * s.speed)
            parts.ra = ra = RaService(home, clock=parts.clock, start_spread_s=30.0,
                                      loop_every_s=loop_every_s)
            parts.desk = desk = HomeSecurityDesk(home, parts.clock, ra.audit)
            self.password = secrets.token_urlsafe(12)
            # printed on the terminal, so a one-time password: the console asks for a new
            # one at the first login
            await asyncio.to_thread(partial(desk.directory.add, DEMO_OPERATOR, Role.ADMIN,
                                            self.password, by="system:erab-demo",
                                            must_change_password=True))  # fmt: skip
            hooks = ConsoleHooks(meter_history=self.meter_history,
                                 outbox_depth=self.outbox_depth)
            history = FleetHistory()
            parts.console = await start_console(ra, desk, s.listen, hooks=hooks,
                                                history=history)
            self._mark("console", parts.console.url)
            parts.emulation = emulation = await building
        except BaseException:
            building.cancel()
            raise
        # one time for all: the town's clock started when its history was done; ours (the
        # RA's, the console's, the gateways') joins it, and the charts start afresh
        parts.clock.set(emulation.clock.now())
        history.samples.clear()
        ready = asyncio.Event()
        parts.tasks.append(asyncio.create_task(ra.run(parts.stop, ready=ready), name="ra"))
        await emulation.start()
        parts.tasks.append(asyncio.create_task(emulation.server.run(), name="town"))
        self._mark("town", f"{len(scenario.sites)} sites from {s.base}")
        sites = [FleetSite(spec.name, a) for spec, a in
                 zip(scenario.sites, site_addresses(s.base, len(scenario.sites)), strict=True)]
        fleet_settings = FleetSettings(
            broker_host=running.host, broker_port=running.mqtt_port, bind_base=s.bind_base,
            poll_interval_s=s.poll_interval_s, heartbeat_interval_s=30.0, status_every_s=2.0,
            certificate_days=365,
        )  # fmt: skip
        # certificates on the wall clock: TLS checks their validity against real time, and
        # the simulated clock runs ahead of it
        await asyncio.to_thread(Fleet(home, sites, fleet_settings, clock=RealClock()).enrol)
        parts.fleet = fleet = Fleet(home, sites, fleet_settings, clock=parts.clock)
        await fleet.commission()
        parts.tasks.append(asyncio.create_task(fleet.run(), name="fleet"))
        await asyncio.wait_for(ready.wait(), 20.0)
        if ra.fanout is not None:
            # a command's life is counted on the simulated clock: at 600x the default five
            # minutes pass in half a real second, before the acknowledgement is back through
            # the broker; give it 30 real seconds, and re-send every 2
            ra.fanout.valid_for = max(ra.fanout.valid_for, timedelta(seconds=30 * s.speed))
            ra.fanout.retry_after = max(ra.fanout.retry_after, timedelta(seconds=2 * s.speed))
        # a reading arrives up to a poll interval (real) old: silent only past three of them
        ra.state.silence_s = max(ra.state.silence_s, 3 * s.poll_interval_s * s.speed)
        self._mark("gateways", f"{len(sites)} gateways")
        return parts

    def collect_meter_data(self) -> int:
        """Route A: the head-end collects every meter's 30-minute readings, from the start of
        the history to now, into ``HOME/erab.sqlite``, where the settlement reads them."""
        from erab.meter.headend import EmulatedAmi, HeadEnd
        from erab.store import SqliteStore

        assert self.parts is not None and self.parts.emulation is not None
        emulation = self.parts.emulation
        store = SqliteStore(self.parts.home / "erab.sqlite", create=True)
        try:
            headend = HeadEnd(EmulatedAmi(emulation.meters), store, self.parts.clock)
            first = datetime.fromtimestamp(
                emulation.run_start_s - self.settings.history_days * 86_400, JST)
            reports = headend.collect_range(first)
            return sum(r.stored for r in reports)
        finally:
            store.close()

    # -- hooks for the console ----------------------------------------------------------------
    def meter_history(self, site_id: str) -> list[dict[str, Any]] | None:
        """The site's meter's 30-minute slots of the last day (the town's meters)."""
        if self.parts is None or self.parts.emulation is None:
            return None
        emulation = self.parts.emulation
        names = [spec.name for spec in emulation.scenario.sites]
        if site_id not in names:
            return None
        return meter_slots(emulation.meters, names.index(site_id), emulation.town.time_s)

    def outbox_depth(self) -> dict[str, int]:
        if self.parts is None or self.parts.fleet is None:
            return {}
        return {g.gateway_id: (g.outbox.backlog if g.outbox is not None else 0)
                for g in self.parts.fleet.gateways}  # fmt: skip

    # -- the day ------------------------------------------------------------------------------
    def progress(self, phase: str, event: DrEvent | None = None,
                 before_kw: np.ndarray | None = None) -> DemoProgress:  # fmt: skip
        assert self.parts is not None
        ra = self.parts.ra
        now = self.parts.clock.now().astimezone(JST)
        fleet_kw = float(ra.fleet_kw())
        p = DemoProgress(phase, now.isoformat(timespec="seconds"), fleet_kw=round(fleet_kw, 2),
                         resources_online=int(np.sum(ra.state.online)))  # fmt: skip
        if event is not None:
            p.event_id, p.stage = event.event_id, event.stage.value
            p.target_kw = event.request.target_kw
            summary = ra.fanout.summary(event.event_id) if ra.fanout is not None else {}
            p.commands = sum(summary.values())
            p.acknowledged = summary.get("acknowledged", 0)
            p.refused = summary.get("refused", 0) + summary.get("expired", 0)
            if before_kw is not None and event.stage is EventStage.ACTIVE:
                p.delivered_kw = round(delivered_by_commanded(
                    ra, event.event_id, before_kw, event.request.target_kw < 0), 3)
        return p

    async def _sleep_or_stop(self, real_s: float) -> bool:
        """Wait ``real_s``; True if the demo was asked to stop meanwhile."""
        assert self.parts is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.parts.stop.wait(), real_s)
        return self.parts.stop.is_set()

    def _check_running(self) -> None:
        assert self.parts is not None
        for task in self.parts.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise DemoError(f"the {task.get_name()} stopped: {task.exception()}")

    async def run_day(self, report: Callable[[DemoProgress], None],
                      coordinator: Coordinator | None = None,
                      every_s: float = 0.5) -> dict[str, Any] | None:  # fmt: skip
        """The scripted day; returns the settlement (None if stopped before the end)."""
        assert self.parts is not None
        s, ra, clock = self.settings, self.parts.ra, self.parts.clock
        if coordinator is None and s.coordinator == "openadr":
            from erab.sim.coordinator import OpenAdrCoordinator

            # the AC's VTN and the RA's VEN register while the telemetry comes in
            own = self._coordinator = OpenAdrCoordinator(self.parts.home, ra)
            await own.start()
            self._mark("openadr", f"the AC's VTN on {own.url}; the RA's VEN registered "
                       "(TLS 1.2, client certificates)")  # fmt: skip
            coordinator = own
        coordinator = coordinator or DirectCoordinator(ra)
        # 1. telemetry: until the number of resources heard stops growing (some devices,
        # e.g. a store's showcase, are never polled as resources), or the time is up
        deadline = time.monotonic() + s.settle_timeout_s
        steady_for = max(5.0, 4 * s.poll_interval_s)  # real seconds without a new resource
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            self._check_running()
            online = int(np.sum(ra.state.online))
            if online != seen:
                seen, since = online, time.monotonic()
            elif online > 0 and time.monotonic() - since >= steady_for:
                break
            report(self.progress("telemetry"))
            if await self._sleep_or_stop(every_s):
                return None
        # 2. the coordinator's event, sized from the fleet's flexibility for its window
        # notice: the product's 15 minutes, but at least 10 real seconds, so that at a high
        # speed the event reaches the RA over OpenADR and its commands the gateways before it
        # starts (1.5 real seconds at 600x were not always enough on a loaded machine)
        start = clock.now() + timedelta(seconds=max(s.lead_minutes * 60.0, 10.0 * s.speed))
        duration = timedelta(hours=s.event_hours)
        target = s.event_kw
        if target is None:
            flex = ra.flexibility_kw("down", start, duration)
            target = -max(0.5, round(0.5 * flex, 1))
        before_kw = ra.state.power_kw.copy()  # each resource just before dispatch
        event = await coordinator.send_event(target, start, duration, PRODUCT)
        self._mark("event", f"{event.event_id}: {target:+g} kW from {start.astimezone(JST):%H:%M}")
        samples: list[Sample] = []
        end_s = event.request.end.timestamp() + s.tail_minutes * 60
        while clock.timestamp() < end_s:
            self._check_running()
            p = self.progress("event " + event.stage.value, event, before_kw)
            samples.append(Sample(clock.timestamp(), float(ra.fleet_kw()), p.delivered_kw))
            report(p)
            if event.stage is EventStage.CANCELLED:
                break
            if await self._sleep_or_stop(every_s):
                return None
        # 3. settlement and report
        report(self.progress("settlement", event, before_kw))
        collected = await asyncio.to_thread(self.collect_meter_data)
        self._mark("meters", f"{collected} route A readings into {self.parts.home / 'erab.sqlite'}")
        # the sites the RA dispatched are settled: the rest of the town's baseline noise is
        # no part of what the event delivered (a few kW against a fleet of ~100 kW at night)
        dispatched = {c.gateway_id for c in (ra.fanout.commands.values() if ra.fanout else ())
                      if c.event_id == event.event_id and c.body.get("type") != "cancel"}
        participants = sorted({g.site_id for g in ra.store.gateways()
                               if g.gateway_id in dispatched})  # fmt: skip
        engine = await asyncio.to_thread(settle_with_engine, self.parts.home, event.event_id,
                                         self.parts.home / "reports" / event.event_id,
                                         participants or None)  # fmt: skip
        from erab.aggregator.products import ProductError, get_product

        try:
            response_s = get_product(event.request.product).response_time_s
        except ProductError:
            response_s = 0.0
        result = summarise(event, samples, response_s=response_s)
        result["commands"] = [{"gateway": c.gateway_id, "device_id": c.body.get("device_id"),
                               "type": c.body.get("type"), "stage": c.stage.value,
                               "reason": c.reason}
                              for c in (ra.fanout.commands.values() if ra.fanout else ())
                              if c.event_id == event.event_id]  # fmt: skip
        result["settlement_engine"] = engine
        result["timings_s"] = dict(self.timings)
        result["speed"] = s.speed
        out = self.parts.home / "reports" / f"{event.event_id}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        result["report"] = str(out)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        self._mark("report", str(out))
        return result

    async def close(self) -> None:
        """Stop everything this demo started, newest first; nothing left bound."""
        parts = self.parts
        if parts is None:
            return
        parts.stop.set()
        if self._coordinator is not None:
            await self._coordinator.close()
            self._coordinator = None
        if parts.console is not None:
            await parts.console.stop()
        for task in reversed(parts.tasks):
            if task.get_name() != "ra":
                task.cancel()
        await asyncio.gather(*parts.tasks, return_exceptions=True)
        if parts.emulation is not None:
            await parts.emulation.server.close()
        if parts.ra is not None:
            with contextlib.suppress(Exception):
                parts.ra.store.close()
        if parts.broker is not None:
            await asyncio.to_thread(parts.broker.stop)


def meter_slots(meters: Any, site: int, now_s: float, slots: int = 48) -> list[dict[str, Any]]:
    """The last ``slots`` 30-minute import and export energies of one site's meter (kWh):
    differences of its cumulative registers at the 30-minute points (route A's data)."""
    from erab.meter.smartmeter import NO_DATA

    newest = float(meters.newest_point_s())
    first = newest - slots * SLOT_S
    imp, exp = meters.points(site, first, slots + 1)
    out = []
    for k in range(1, slots + 1):
        if NO_DATA in (imp[k], imp[k - 1], exp[k], exp[k - 1]):
            continue
        i1, i0 = meters.count_to_kwh(imp[k]), meters.count_to_kwh(imp[k - 1])
        e1, e0 = meters.count_to_kwh(exp[k]), meters.count_to_kwh(exp[k - 1])
        if None in (i1, i0, e1, e0):
            continue
        end = datetime.fromtimestamp(first + k * SLOT_S, JST)
        out.append({"slot": (end - timedelta(seconds=SLOT_S)).isoformat(),
                    "import_kwh": round(i1 - i0, 3), "export_kwh": round(e1 - e0, 3)})
    return out[::-1]  # newest first


def as_json(progress: DemoProgress) -> str:
    return json.dumps(asdict(progress))
