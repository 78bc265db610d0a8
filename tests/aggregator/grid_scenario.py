"""The grid-service quality scenario of issue 11, as a harness the test and the bench share.

A town of ``homes`` homes (``erab emulate`` physics and smart meters, one process), one real
gateway per home (``erab gateway fleet`` style, the same process), the real broker and the RA
(:class:`~erab.aggregator.service.RaService`), all on one simulated clock that the harness
steps: the physics and the meters advance minute by minute, the gateways poll in real time
and see the clock's time, the RA plans and signs on it.  One down event sized at a share of
the fleet's flexibility for its whole window; every ``loop_every_s`` simulated seconds, once
the gateways' telemetry of that moment has reached the RA, the RA's closed loop runs.

Delivery is measured by the sites' smart meters and nothing else: beside the town runs its
twin (the same scenario, the same seed, the same steps) that nobody commands; both towns'
meters record the 30-minute points of route A (0xE2/0xE4 registers), and a slot's delivered
kW is the twin's metered energy less the town's over the slot, over all sites, per hour.
The twin is the counterfactual a settlement baseline estimates; here it is exact, so the
figure says what the RA did and not how good a baseline is.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from erab.aggregator.events import EventRequest
from erab.aggregator.fanout import CommandStage
from erab.aggregator.registry import Registry
from erab.aggregator.service import RaService
from erab.aggregator.state import TelemetryField
from erab.bus import RunningBroker
from erab.cli.ra import scenario_inventory, store_path
from erab.clock import JST, RealClock
from erab.devices import Scenario
from erab.echonet.transport import random_loopback_address
from erab.gateway.fleet import Fleet, FleetSettings, FleetSite
from erab.sim.emulation import Emulation, build_emulation
from erab.store import SqliteStore

SLOT_S = 1800.0
STEP_S = 60.0
# 23:30 JST: the town's batteries charge on the night tariff (auto mode, 23:00-07:00), so
# the fleet has down flexibility (stop charging, cover the home's import); by day each
# already covers its home and may not export (docs/aggregator.md)
DEFAULT_START = datetime(2026, 8, 3, 23, 30, tzinfo=JST)
# 14:00 JST on a weekday of August: the homes with someone in cool their living rooms, the
# batteries already cover their homes' import (no export): the down flexibility is the air
# conditioners'.  The RA fits each site's room from the morning's switch-on (10:00), which
# the harness gives it (SUMMER_WARM_UP), then skips to the afternoon.
SUMMER_START = datetime(2026, 8, 4, 13, 55, tzinfo=JST)
SUMMER_DAWN = datetime(2026, 8, 4, 6, 0, tzinfo=JST)  # the towns start here: rooms warm up
SUMMER_WARM_UP = (datetime(2026, 8, 4, 9, 30, tzinfo=JST), timedelta(minutes=90))


@dataclass(frozen=True)
class SlotFigure:
    """One 30-minute slot of the event: its target and what the meters say was delivered."""

    start: datetime
    target_kw: float  # the event's target, negative down (as the operator gave it)
    delivered_kw: float  # the twin's metered kW less the town's, summed over sites
    exact_kw: float = float("nan")  # the same from the meters' exact energy, not their counts

    @property
    def ratio(self) -> float:
        return self.delivered_kw / abs(self.target_kw)

    @property
    def exact_ratio(self) -> float:
        return self.exact_kw / abs(self.target_kw)


@dataclass
class ScenarioResult:
    homes: int
    resources_online: int
    flexibility_kw: float  # the fleet's down flexibility held over the whole window
    target_kw: float
    slots: list[SlotFigure]
    commands: int = 0
    refused: int = 0
    redispatches: int = 0
    soc_min_margin_pct: float = np.inf  # min over batteries of SOC − reserve (≥ 0: kept)
    soc_max_margin_pct: float = np.inf  # min over batteries of max − SOC
    room_over_band_k: float = -np.inf  # max over rooms of temperature − comfort top
    setup_s: float = 0.0
    event_s: float = 0.0
    checks_kw: list[float] = field(default_factory=list)  # the RA's own measure, per check
    commands_by_type: dict[str, int] = field(default_factory=dict)
    aircons_commanded: int = 0  # distinct air conditioners the event commanded
    aircons_on: int = 0  # air conditioners running at the event's start (by the RA's state)
    thermal_valid: int = 0  # sites with a valid fitted room model
    room_max_c: float = -np.inf  # the warmest commanded room during the event
    room_band_top_c: float = np.nan  # that room's comfort band top
    warm_up_s: float = 0.0

    def share_within(self, tolerance: float = 0.10) -> float:
        """The share of slots whose delivered kW is within ±``tolerance`` of the target."""
        ok = [abs(s.ratio - 1.0) <= tolerance for s in self.slots]
        return sum(ok) / len(ok) if ok else 0.0

    def window_ratio(self) -> float:
        """The whole window's delivered energy by the meters' counts against the target's:
        a slot's rounding to 0.1 kWh carries into the next, so over the window it cancels
        but for the two ends."""
        return sum(s.delivered_kw for s in self.slots) / sum(abs(s.target_kw) for s in self.slots)

    def exact_share_within(self, tolerance: float = 0.10) -> float:
        """:meth:`share_within` by the meters' exact energy (no 0.1 kWh counts)."""
        ok = [abs(s.exact_ratio - 1.0) <= tolerance for s in self.slots]
        return sum(ok) / len(ok) if ok else 0.0

    def table(self) -> str:
        lines = ["slot (JST)   target kW  delivered kW  ratio   exact kW  ratio"]
        for s in self.slots:
            lines.append(f"{s.start.astimezone(JST):%H:%M}        {abs(s.target_kw):9.2f}  "
                         f"{s.delivered_kw:12.2f}  {s.ratio:5.3f}  {s.exact_kw:9.2f}  "
                         f"{s.exact_ratio:5.3f}")  # fmt: skip
        return "\n".join(lines)


class _Limits:
    """The registry's limits of the town's batteries and rooms, and how close they came.

    A battery the event commanded must stay within [reserve, max] (the others follow their
    own auto mode, as their twins do); a room must not go above its comfort band where its
    twin, uncommanded, stays under it (a room whose occupants keep the unit off on a
    tropical night is warm without the RA)."""

    def __init__(self, battery_ids: list[str], reserve_pct: np.ndarray, max_pct: np.ndarray,
                 comfort_top_c: np.ndarray) -> None:  # fmt: skip
        self.battery_ids = battery_ids
        self.reserve_pct, self.max_pct, self.comfort_top_c = reserve_pct, max_pct, comfort_top_c
        self.soc_min_pct = np.full(len(battery_ids), np.inf)
        self.soc_max_pct = np.full(len(battery_ids), -np.inf)
        self.soc_start_pct = np.full(len(battery_ids), np.nan)
        self.room_over = -np.inf  # max of room − max(band top, the twin's room)
        self.room_max_c = np.full(len(comfort_top_c), -np.inf)
        self.room_ids: list[str] = []  # the rooms' air conditioners, in the town's order

    @classmethod
    def of(cls, emulation: Emulation, ra: RaService) -> _Limits:
        t = emulation.town
        by_id = {r.resource_id: r for r in ra.resources}
        ids = [f"{t.sites[s].name}.battery-1" for s in t.battery_site.tolist()]
        cells = [by_id[i] for i in ids]
        rooms = [by_id[f"{t.sites[s].name}.aircon-1"] for s in t.home_ac_site.tolist()]
        limits = cls(ids, np.array([r.soc_reserve_pct for r in cells], dtype=np.float64),
                     np.array([r.soc_max_pct for r in cells], dtype=np.float64),
                     np.array([r.comfort_max_c for r in rooms], dtype=np.float64))  # fmt: skip
        limits.room_ids = [r.resource_id for r in rooms]
        return limits

    def observe(self, town: Emulation, twin: Emulation) -> None:
        b = town.town.battery
        soc = np.asarray(100.0 * b.stored_wh / b.capacity_wh, dtype=np.float64)
        if np.isnan(self.soc_start_pct).all():
            self.soc_start_pct = soc.copy()
        self.soc_min_pct = np.minimum(self.soc_min_pct, soc)
        self.soc_max_pct = np.maximum(self.soc_max_pct, soc)
        room = town.town.home_ac.room_temp_c
        if len(room):
            allowed = np.maximum(self.comfort_top_c, twin.town.home_ac.room_temp_c)
            self.room_over = max(self.room_over, float((room - allowed).max()))
            self.room_max_c = np.maximum(self.room_max_c, room)

    def warmest(self, commanded: set[str]) -> tuple[float, float]:
        """The warmest commanded room (°C) and its band's top; (−inf, NaN) with none."""
        mask = np.array([i in commanded for i in self.room_ids], dtype=np.bool_)
        if not mask.any():
            return -np.inf, np.nan
        k = int(np.flatnonzero(mask)[np.argmax(self.room_max_c[mask])])
        return float(self.room_max_c[k]), float(self.comfort_top_c[k])

    def soc_margins(self, commanded: set[str]) -> tuple[float, float]:
        """Over the commanded batteries: the least (SOC − reserve) and (max − SOC), %; a
        battery its own auto mode had below its reserve (or above its max) when the event
        began is held to not going further."""
        mask = np.array([i in commanded for i in self.battery_ids], dtype=np.bool_)
        if not mask.any():
            return np.inf, np.inf
        floor = np.minimum(self.reserve_pct, self.soc_start_pct)
        top = np.maximum(self.max_pct, self.soc_start_pct)
        return (float((self.soc_min_pct - floor)[mask].min()),
                float((top - self.soc_max_pct)[mask].min()))  # fmt: skip


def metered_kwh(emulation: Emulation, point_s: float) -> np.ndarray:
    """Each site's net energy (import − export, kWh) at the 30-minute point ``point_s``, from
    its meter's recorded registers (what route A collects)."""
    meters = emulation.meters
    imported, exported = meters.readings_at(datetime.fromtimestamp(point_s, JST))
    return (imported.astype(np.float64) - exported.astype(np.float64)) * meters.kwh_per_count


def exact_kwh(emulation: Emulation) -> np.ndarray:
    """Each site's net energy (kWh) now, as the meter integrates it before counting it in
    0.1 kWh steps: what the registers' rounding hides in a slot of a small fleet."""
    meters = emulation.meters
    return np.asarray((meters.import_wh - meters.export_wh) / 1000.0, dtype=np.float64)


async def _wait(condition: object, timeout_s: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not condition():  # type: ignore[operator]
        if loop.time() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def _acknowledged(ra: RaService, event_id: str) -> bool:
    return all(c.stage is not CommandStage.SENT for c in ra.plans[event_id].commands)


async def run_grid_scenario(
    home: Path,
    broker: RunningBroker,
    homes: int,
    *,
    seed: int = 11,
    start: datetime = DEFAULT_START,
    hours: int = 3,
    share: float = 0.6,
    closed_loop: bool = True,
    loop_every_s: float = 300.0,
    poll_interval_s: float | None = None,
    summer: bool = False,
) -> ScenarioResult:
    """Run the scenario on the deployment ``home`` (``erab pki init`` and a command key)
    served by ``broker``; returns the per-slot figures and the limits kept.  ``start`` should
    be a 30-minute point less five minutes' warm-up: the event starts on the point.

    ``summer``: the afternoon of :data:`SUMMER_START` (``start`` is ignored), the towns
    built at dawn, the RA's thermal samples taken every simulated minute of
    :data:`SUMMER_WARM_UP` (the morning's switch-on), then a skip to the afternoon: each
    sample the room (0xBB) and outdoor (0xBE) temperatures the gateways polled."""
    if summer:
        start = SUMMER_START
    t_setup = time.monotonic()
    # the gateways' polls cost CPU (bench/bench_fleet.py): 1 s at 200 sites, 5 s at 1,000
    poll_s = poll_interval_s if poll_interval_s is not None else max(1.0, homes / 200)
    scenario = Scenario.generate(homes, 0, seed=seed)
    ra_dir = home / "ra"
    ra_dir.mkdir(exist_ok=True)
    store = SqliteStore(store_path(home), create=True)
    Registry(store).import_inventory(scenario_inventory(scenario))
    store.close()
    warm_up = start - timedelta(minutes=5) if not summer else SUMMER_DAWN
    town = build_emulation(scenario, warm_up, speed=0, history_days=0,
                           base=random_loopback_address())  # fmt: skip
    twin = build_emulation(scenario, warm_up, speed=0, history_days=0,
                           base=random_loopback_address())  # fmt: skip
    clock = town.clock  # everyone's: the RA's, the gateways', the physics'
    if summer:  # the rooms warm through the morning, before anyone is connected
        clock.set(SUMMER_WARM_UP[0])
        town.town.advance_to(clock.timestamp())
        twin.town.advance_to(clock.timestamp())
    settings = FleetSettings(
        broker_host=broker.host, broker_port=broker.mqtt_port,
        bind_base=random_loopback_address(), poll_interval_s=poll_s,
        heartbeat_interval_s=30.0, status_every_s=5.0, certificate_days=365,
    )  # fmt: skip
    sites = [FleetSite(s.name, a) for s, a in zip(scenario.sites, town.server.addresses,
                                                   strict=True)]  # fmt: skip
    # certificates on the wall clock: TLS checks them against real time
    await asyncio.to_thread(Fleet(home, sites, settings, clock=RealClock()).enrol)
    fleet = Fleet(home, sites, settings, clock=clock)
    await town.start()
    ra = RaService(home, clock=clock, start_spread_s=0.0, loop_every_s=1e9)
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks: list[asyncio.Task[object]] = []
    try:
        await fleet.commission()
        tasks.append(asyncio.create_task(ra.run(stop, ready=ready)))
        tasks.append(asyncio.create_task(fleet.run()))
        await asyncio.wait_for(ready.wait(), 30)
        assert ra.fanout is not None
        # the clock stands still between steps: a command lives for simulated time
        ra.fanout.valid_for = timedelta(hours=hours + 1)
        ra.fanout.retry_after = timedelta(hours=hours + 1)
        batteries = np.array([i for i, r in enumerate(ra.resources)
                              if r.device_class == "battery"])  # fmt: skip

        def share_fresh(since_s: float) -> float:
            """The share of batteries' powers and meters read since ``since_s``."""
            heard = ra.state.reading_time_s(TelemetryField.POWER_KW)[batteries] >= since_s
            meters = ra.state.site_meter_time_s >= since_s
            return float((heard.sum() + meters.sum()) / (len(heard) + len(meters)))

        def step(seconds: float) -> None:
            clock.advance(seconds)
            town.server.tick()
            twin.town.advance_to(clock.timestamp())

        async def heard_now() -> None:
            now_s = clock.timestamp()
            await _wait(lambda: share_fresh(now_s) >= 0.99, 60,
                        "the fleet's telemetry of this minute")  # fmt: skip

        aircons = np.array([i for i, r in enumerate(ra.resources) if r.device_class == "aircon"],
                           dtype=np.int64)  # fmt: skip

        async def sample_aircons() -> None:
            """Wait for the air conditioners' room temperatures of this minute and let the
            RA keep the sample."""
            now_s = clock.timestamp()
            heard = ra.state.reading_time_s
            await _wait(lambda: float(np.mean(heard(TelemetryField.ROOM_TEMP_C)[aircons]
                                              >= now_s)) >= 0.99, 60,
                        "the air conditioners' rooms of this minute")  # fmt: skip
            ra.snapshot()

        # every gateway is up a little after the others on a busy machine: 99 % will do
        await _wait(lambda: share_fresh(clock.timestamp()) >= 0.99, 60 + homes / 5,
                    "the batteries and meters in the RA")  # fmt: skip
        warm_up_s = 0.0
        if summer:
            t_warm = time.monotonic()
            for _ in range(round(SUMMER_WARM_UP[1].total_seconds() / STEP_S)):
                step(STEP_S)
                await sample_aircons()
            warm_up_s = time.monotonic() - t_warm
            step(start.timestamp() - clock.timestamp())  # skip to the afternoon
            await heard_now()
        for _ in range(5):
            step(STEP_S)
            if summer:
                await sample_aircons()
        await heard_now()
        if summer:
            ra.fit_thermal_models()
        thermal = ra.thermal  # the models the event is planned with
        setup_s = time.monotonic() - t_setup
        t_event = time.monotonic()
        window = timedelta(hours=hours)
        flex = ra.flexibility_kw("down", clock.now(), window)
        if not flex > 0 and not summer:
            raise RuntimeError(f"the town has no down flexibility for {hours} h from "
                               f"{clock.now().astimezone(JST):%H:%M} JST: by day its batteries "
                               "already cover their homes (docs/aggregator.md); start at night")
        aircons_on = int((np.nan_to_num(ra.state.power_kw[aircons]) >= 0.05).sum())
        if not flex > 0:
            raise RuntimeError(f"the town has no down flexibility for {hours} h from "
                               f"{clock.now().astimezone(JST):%H:%M} JST ({aircons_on} air "
                               "conditioners on; the thermal fit found "
                               f"{0 if ra.thermal is None else int(ra.thermal.valid.sum())} "
                               "valid rooms)")  # fmt: skip
        target = -share * flex
        event = await ra.create_event(EventRequest(target, clock.now(), window,
                                                   requested_by="scenario"))  # fmt: skip
        await _wait(lambda: _acknowledged(ra, event.event_id), 60, "the acknowledgements")
        await ra.tick()  # active: the check at the start
        event_start_s = clock.timestamp()
        points = [event_start_s]
        exact = [(exact_kwh(town), exact_kwh(twin))]
        limits = _Limits.of(town, ra)
        limits.observe(town, twin)  # the event's start
        steps_per_loop = max(1, round(loop_every_s / STEP_S))
        for k in range(1, round(hours * 3600 / STEP_S) + 1):
            step(STEP_S)
            limits.observe(town, twin)
            if k * STEP_S % SLOT_S == 0:
                points.append(clock.timestamp())
                exact.append((exact_kwh(town), exact_kwh(twin)))
            if closed_loop and k % steps_per_loop == 0 and k * STEP_S < hours * 3600:
                await heard_now()
                await ra.correct(event.event_id)
                await _wait(lambda: _acknowledged(ra, event.event_id), 60,
                            "the acknowledgements")  # fmt: skip
        slots = []
        for (a, b), (before, after) in zip(itertools.pairwise(points),
                                           itertools.pairwise(exact), strict=True):
            town_kwh = metered_kwh(town, b) - metered_kwh(town, a)
            twin_kwh = metered_kwh(twin, b) - metered_kwh(twin, a)
            hours_slot = (b - a) / 3600.0
            delivered = float((twin_kwh - town_kwh).sum()) / hours_slot
            exact_kw = float(((after[1] - before[1]) - (after[0] - before[0])).sum()) / hours_slot
            slots.append(SlotFigure(datetime.fromtimestamp(a, JST), target, delivered,
                                    exact_kw))  # fmt: skip
        plan = ra.plans[event.event_id]
        commanded = {str(c.body.get("device_id")) for c in plan.commands}
        soc_low, soc_high = limits.soc_margins(commanded)
        room_max, room_top = limits.warmest(commanded)
        result = ScenarioResult(
            homes=homes, resources_online=int(ra.state.online.sum()), flexibility_kw=flex,
            target_kw=target, slots=slots, commands=len(plan.commands),
            refused=sum(c.stage is CommandStage.REFUSED for c in plan.commands),
            redispatches=len(plan.checks), soc_min_margin_pct=soc_low,
            soc_max_margin_pct=soc_high, room_over_band_k=limits.room_over,
            setup_s=setup_s, checks_kw=[round(c.delivered_kw, 2) for c in plan.checks],
            commands_by_type=dict(Counter(str(c.body["type"]) for c in plan.commands)),
            event_s=time.monotonic() - t_event,
            aircons_commanded=len({str(c.body.get("device_id")) for c in plan.commands
                                   if c.body.get("type") == "aircon_offset"}),
            aircons_on=aircons_on, thermal_valid=0 if thermal is None else int(thermal.valid.sum()),
            room_max_c=room_max, room_band_top_c=room_top, warm_up_s=warm_up_s,
        )  # fmt: skip
        if ra.events.get(event.event_id).stage.value not in ("completed", "cancelled"):
            await ra.cancel_event(event.event_id, "scenario")
        return result
    finally:
        # the RA stops by its event, as on SIGTERM (cancelled, its link's flush could be cut
        # with the server's PONG on the way: nats-py then logs an InvalidStateError)
        stop.set()
        if tasks:
            done, _ = await asyncio.wait(tasks[:1], timeout=20)
            if not done:
                tasks[0].cancel()
        for task in tasks[1:]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await town.server.close()
