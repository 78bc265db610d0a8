"""The RA as one service (``erab ra serve``): ingest, live state, events, dispatch, fan-out.

A thin asyncio shell around the tested parts:

- :class:`~erab.aggregator.ingest.Ingest` takes telemetry and events from the broker's durable
  JetStream consumers into the store; its hook keeps the :class:`FleetState` columns current;
- a second durable consumer on the acknowledgement stream feeds :class:`Fanout`;
- :meth:`RaService.create_event` checks a request (:class:`EventBook`), plans it from the
  window's flexibility in merit order (:func:`merit_order`), and sends one signed command per
  dispatched resource (a battery's power: its power now moved by the planned kW; an
  air-conditioner setpoint offset; a PV limit), the plan's kW scaled to the target (the
  merit order's margin stays as headroom in the resources called);
- a one-second tick advances events (start, end) and re-sends or expires commands; a refused
  or expired command's resource is replaced from the plan's reserve;
- every ``loop_every_s`` of an active event, the closed loop (:meth:`RaService.correct`)
  measures what the commanded resources deliver against their own level before they were
  commanded, and outside ±``hold_band`` of the target moves the batteries' setpoints, calls
  the reserve, or releases commands.

The leader (``erab ra serve``) keeps the live state from its own feed of the telemetry
stream (the newest message of every gateway, then every new one), so that it sees the whole
fleet also when ``erab ra serve --worker`` processes share the storing of it
(:func:`run_worker`).  The store is any :func:`erab.store.open_store` URL (``store_url``),
the SQLite file under the deployment home by default.  Alerts: :mod:`erab.aggregator.alerts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from nats.errors import Error as NatsError

from erab.aggregator.alerts import AlertDesk, AlertSettings, expiring
from erab.aggregator.closedloop import (
    DeliveryCheck,
    SiteDelivery,
    SiteSnapshots,
    allocate,
    battery_hold_kw,
    commanded_delivery,
    site_delivery,
    site_power_kw,
)
from erab.aggregator.dispatch import DispatchParams, DispatchPlan, ResourceTerms, merit_order
from erab.aggregator.events import DrEvent, EventBook, EventRequest, EventStage, EventTrigger
from erab.aggregator.fanout import (
    FAILED,
    CommandStage,
    Fanout,
    LeasedSequenceCounter,
    RaCommand,
)
from erab.aggregator.flexibility import (
    AC_ON_KW,
    Direction,
    FlexParams,
    WindowFlexibility,
    flexibility,
    flexibility_for_window,
    forecast_table,
)
from erab.aggregator.ingest import CommittedReadings, Ingest
from erab.aggregator.registry import Registry, default_store_url, open_aggregator_store, redact_url
from erab.aggregator.state import (
    FleetState,
    ReadingFlag,
    ResourceKind,
    TelemetryBatch,
    TelemetryField,
)
from erab.aggregator.thermal import ThermalModel, fit_thermal
from erab.bus import (
    Acknowledgement,
    BrokerHome,
    Hello,
    MeterReading,
    RaLink,
    Stream,
    UplinkDecoder,
)
from erab.bus import TelemetryBatch as TelemetryMessage
from erab.bus.broker import read_state
from erab.bus.ra import UplinkConsumer
from erab.bus.topics import MessageKind, subject_filter
from erab.clock import Clock, RealClock
from erab.security import AuditLog, EnvelopeSigner, SecurityHome
from erab.security.keys import load_ed25519_key
from erab.security.registry import CertificateRegistry
from erab.store import AggregatorStore, GatewayStatus, Resource, StoreError, StoreNotFound

KIND_OF_CLASS = {
    "battery": ResourceKind.BATTERY, "aircon": ResourceKind.AIRCON,
    "water_heater": ResourceKind.WATER_HEATER, "ev": ResourceKind.EV, "pv": ResourceKind.PV,
}  # fmt: skip
# telemetry point names (docs/bus.md) → the state's columns; power in W on the bus
POINTS = {
    "power_w": (TelemetryField.POWER_KW, 0.001), "soc_pct": (TelemetryField.SOC_PCT, 1.0),
    "setpoint_c": (TelemetryField.SETPOINT_C, 1.0),
    "room_temp_c": (TelemetryField.ROOM_TEMP_C, 1.0),
    "outdoor_temp_c": (TelemetryField.OUTDOOR_TEMP_C, 1.0),  # an AC's 0xBE, or weather
}  # fmt: skip
AIRCON_OFFSET_C = 2.0  # a down event raises cooling setpoints by this much (inside comfort)
ALLOW_LIST_TYPE = "allow_list"  # not yet a command the gateway executes (issue 11 note)
SNAPSHOT_EVERY_S = 60.0  # the sites' power is kept this often, for the pre-event baseline
CHECK_CERTS_EVERY_S = 3600.0
CHECK_GATEWAYS_EVERY_S = 10.0  # gateways back online (their alerts cleared), revocations
MIN_STEP_KW = 0.05  # the closed loop leaves a setpoint alone for less than this
HOLD_BAND = 0.03  # the closed loop corrects outside ±3 % of the target (the product: ±10 %)
THERMAL_KEEP_S = 6 * 3600.0  # the air conditioners' samples kept for the thermal fit
THERMAL_GAP_S = 600.0  # samples further apart than this give no slope (a gap in telemetry)
THERMAL_REFIT_S = 1800.0  # the rooms are fitted again this often (and when a down event comes)
log = logging.getLogger("erab.ra")


class RaServiceError(RuntimeError):
    """The RA cannot start or act; the message says what to do."""


@dataclass
class EventPlan:
    """An event's plan, the commands sent for it, and the closed loop's checks."""

    event_id: str
    plan: DispatchPlan
    commands: list[RaCommand]  # every command of the event but cancels, in order
    reserve: list[int]  # state rows not yet called, in merit order
    reference_kw: float = 0.0  # the fleet's power just before dispatch
    kw_of: dict[tuple[str, int], float] = field(default_factory=dict)  # per command: planned
    checks: list[DeliveryCheck] = field(default_factory=list)
    last_check_s: float = 0.0
    site_baseline_kw: np.ndarray | None = None  # per site, the mean before the event
    reference_of: dict[int, float] = field(default_factory=dict)
    """Per commanded resource (state row), its power when first commanded (kW)."""
    row_commands: dict[int, list[RaCommand]] = field(default_factory=dict)
    """Per commanded resource, its commands in the order sent (the last one alive is in
    force: a newer command replaces the older at the gateway)."""
    released: set[int] = field(default_factory=set)  # rows the closed loop cancelled
    aircon_kw_at_dispatch: np.ndarray | None = None  # every air conditioner's power then
    aircon_kw_at: list[np.ndarray] = field(default_factory=list)
    """Every air conditioner's power when the event first commanded some of them (the
    first: at dispatch); ``aircon_snapshot_of`` says which one a commanded unit's is."""
    aircon_snapshot_of: dict[int, int] = field(default_factory=dict)
    aircon_snapshot_commands: int = -1  # len(commands) when the last snapshot was taken
    battery_at_call: dict[int, tuple[float, float]] = field(default_factory=dict)
    """Per commanded battery: when it was first commanded (POSIX s) and its SOC then (%)."""

    def in_force(self, row: int) -> RaCommand | None:
        """The command in force for ``row``: its newest not refused or expired (None once
        released)."""
        if row in self.released:
            return None
        for command in reversed(self.row_commands.get(row, [])):
            if command.stage not in FAILED:
                return command
        return None

    def planned_kw(self, command: RaCommand) -> float:
        return self.kw_of.get((command.gateway_id, command.sequence), 0.0)


@dataclass(frozen=True)
class _Delivery:
    """One look at an event's commanded resources (per row in force, in call order)."""

    check: DeliveryCheck
    rows: list[tuple[int, RaCommand]]
    settled: np.ndarray  # its telemetry shows the command in force
    moved: list[float]  # kW it moved from its reference, in the event's direction
    planned: list[float]  # kW its command in force asks
    can: np.ndarray  # per state row: kW more it can give from its power now


def open_ra_store(home: Path, store_url: str | None = None) -> AggregatorStore:
    """The RA's store (``store_url``, default the SQLite file under ``home``); an RA never
    creates its store: ``erab ra import`` or ``erab ra site add`` does."""
    url = store_url or default_store_url(home)
    try:
        return open_aggregator_store(url, create=False)
    except StoreNotFound:
        raise RaServiceError(
            f"no registry at {redact_url(url)}; fill it with 'erab ra import --home {home}"
            + ("" if store_url is None else " --store URL") + " ...' first"
        ) from None
    except StoreError as exc:
        raise RaServiceError(str(exc).replace(url, redact_url(url))) from None


async def connect_link(home: Path, clock: Clock, *, name: str = "erab-ra") -> RaLink:
    """Connect to the broker that ``erab broker run --home`` runs, with the RA's certificate."""
    layout = BrokerHome(home)
    running = read_state(layout)
    if running is None:
        raise RaServiceError(
            f"no broker is running from {home}; start 'erab broker run --home {home}'"
        )
    link = await RaLink.connect(running.nats_url, ca_bundle=layout.security.ca_bundle,
                                cert_file=layout.ra_cert, key_file=layout.ra_key,
                                clock=clock, name=name)  # fmt: skip
    await link.ensure_streams()
    return link


# The durable consumers every ingest process shares (the leader and each --worker).
INGEST_DURABLES = ((Stream.TELEMETRY, "ra-ingest"), (Stream.EVENTS, "ra-ingest-events"),
                   (Stream.ACKS, "ra-ingest-acks"))  # fmt: skip


async def ingest_consumers(link: RaLink) -> list[UplinkConsumer]:
    return [await link.consumer(stream, durable) for stream, durable in INGEST_DURABLES]


async def run_worker(home: Path, stop: asyncio.Event, *, store_url: str | None = None,
                     clock: Clock | None = None, ready: asyncio.Event | None = None,
                     silent_after_s: float = 300.0, batch_size: int = 500) -> Ingest:  # fmt: skip
    """One ``erab ra serve --worker`` process: ingest only, sharing the durable consumers
    with the leader and any other worker (JetStream gives each message to one of them; the
    store's (gateway, seq) key drops what a crash made it deliver twice).  Returns the
    ingest, with its counters, once ``stop`` is set."""
    clock = clock or RealClock()
    store = open_ra_store(Path(home), store_url)
    try:
        link = await connect_link(Path(home), clock, name="erab-ra-worker")
        try:
            ingest = Ingest(store, await ingest_consumers(link), clock=clock,
                            batch_size=batch_size, fetch_timeout_s=0.3,
                            silent_after_s=silent_after_s)  # fmt: skip
            if ready is not None:
                ready.set()
            await ingest.run(stop)
            return ingest
        finally:
            await link.close()
    finally:
        store.close()


async def state_feed(link: RaLink) -> UplinkConsumer:
    """The leader's own view of the telemetry stream (device telemetry and meter readings):
    an ephemeral consumer that starts with the newest message of every gateway and then
    takes every new one, unacknowledged (the state needs the latest values, not each
    message once: ingest stores those)."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    filters = [subject_filter(MessageKind.TELEMETRY), subject_filter(MessageKind.METER)]
    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        filter_subjects=filters, inactive_threshold=60.0,
    )  # fmt: skip
    sub = await link.js.pull_subscribe(filters[0], stream=Stream.TELEMETRY.value,
                                       config=config)  # fmt: skip
    return UplinkConsumer(sub, UplinkDecoder(), None, link.clock)


async def hello_feed(link: RaLink) -> UplinkConsumer:
    """The leader's view of new hellos (whichever process stores them), to answer each
    with its allow-list."""
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    config = ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.NEW,
        filter_subject=subject_filter(MessageKind.HELLO), inactive_threshold=60.0,
    )  # fmt: skip
    sub = await link.js.pull_subscribe(subject_filter(MessageKind.HELLO),
                                       stream=Stream.EVENTS.value, config=config)  # fmt: skip
    return UplinkConsumer(sub, UplinkDecoder(), None, link.clock)


class RaService:
    """The RA of the deployment in ``home`` (``erab pki init``; a broker from ``erab broker
    run``); its store is ``home/ra/ra.sqlite`` (``erab ra import`` fills the registry)."""

    def __init__(self, home: Path, *, clock: Clock | None = None, margin: float = 0.1,
                 start_spread_s: float = 30.0, loop_every_s: float = 60.0,
                 hold_band: float = HOLD_BAND,
                 store_url: str | None = None, alerts: AlertSettings | None = None,
                 push_allow_lists: bool = True) -> None:  # fmt: skip
        self.home = Path(home)
        self.clock = clock or RealClock()
        security = SecurityHome(self.home)
        if not security.command_key.is_file():
            raise RaServiceError(f"no RA command key in {self.home}; run 'erab pki init' there")
        self.store = open_ra_store(self.home, store_url)
        self.registry = Registry(self.store, self.clock)
        self.alert_settings = alerts or AlertSettings()
        # each hello is answered with the gateway's allow-list, which the gateway executes
        self.push_allow_lists = push_allow_lists
        self.alerts = AlertDesk(self.store, self.clock, self.alert_settings)
        self._certificates = (CertificateRegistry(security.registry_db, self.clock)
                              if security.registry_db.is_file() else None)  # fmt: skip
        self.audit = AuditLog.for_home(security, self.clock)
        self.signer = EnvelopeSigner(
            load_ed25519_key(security.command_key), self.clock,
            LeasedSequenceCounter(self.home / "ra" / "command-sequence.json",
                                  previous=self.home / "ra" / "command-sequences.json"),
            audit=self.audit,
        )  # fmt: skip
        self.events = EventBook(self.clock, audit=self.audit)
        self.margin = margin
        self.start_spread_s = start_spread_s  # gateways start at random within this (no herd)
        self.loop_every_s = loop_every_s  # the closed loop's period during an event
        self.hold_band = hold_band  # the closed loop corrects outside ±this of the target
        self.fanout: Fanout | None = None
        self.plans: dict[str, EventPlan] = {}
        self.resources: list[Resource] = []
        self.state = self._build_state()
        # A resource is silent only when not heard for longer than the closed loop's period
        # too: a period that long (an accelerated clock: `erab demo` at 600x) says that
        # telemetry comes that seldom, and a resource must not flap offline between readings.
        self.state.silence_s = max(self.state.silence_s, loop_every_s)
        self._link: RaLink | None = None
        self.ingest: Ingest | None = None
        self.snapshots = SiteSnapshots()
        self.flagged: dict[str, int] = {}  # readings the state refused, by reason
        self._revoked: set[str] = set()
        self._flag_alerted: set[str] = set()
        self._last_snapshot_s = -np.inf
        self._last_cert_check_s = -np.inf
        self._last_gateway_check_s = -np.inf
        self.ingest_pending: dict[str, int] = {}  # per durable consumer: not yet stored
        self._last_lag_s = -np.inf
        # per snapshot: the air conditioners' room reading times, room, outdoor and power
        self.thermal_samples: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._snapshot_times: list[float] = []  # when each of thermal_samples was taken
        self.thermal: ThermalModel | None = None
        self._last_fit_s = -np.inf

    # -- live state -------------------------------------------------------------------------
    def _build_state(self) -> FleetState:
        """The live state of the registry's allowed resources, one row each (in registry
        order), their sites indexed in name order; :meth:`refresh_resources` appends the
        ones allowed later."""
        self.resources = []
        self.site_ids: list[str] = []
        # a sample counts only for a resource of the gateway that sent it
        self._row_of_device: dict[tuple[str, str], int] = {}
        self._row_of_resource: dict[str, int] = {}
        self._site_of_gateway: dict[str, int] = {}
        self._power_sign = np.zeros(0)
        self._fuel_cell_site = np.zeros(0, dtype=np.bool_)
        self._row_of_key = np.zeros(0, dtype=np.int64)
        self._cancels_due: list[RaCommand] = []  # commands in force of retired resources
        self._allow_lists_due: set[str] = set()  # gateways whose allowed resources changed
        self._registry_keys = self.store.resource_keys()
        self._last_registry_check_s = self._last_registry_refresh_s = self.clock.timestamp()
        state = FleetState.create(np.zeros(0, dtype=np.int64))
        self._append_resources(state, [r for r in self.registry.resources() if r.allowed])
        return state

    def _static_rows(self, rs: Sequence[Resource]) -> FleetState:
        """The registry's columns of ``rs`` (each site already in ``site_ids``)."""
        sites = {s: i for i, s in enumerate(self.site_ids)}

        def col(values: Sequence[float | None], default: float) -> np.ndarray:
            return np.array([default if v is None else v for v in values], dtype=np.float64)

        return FleetState.create(
            np.array([KIND_OF_CLASS.get(r.device_class, ResourceKind.OTHER) for r in rs],
                     dtype=np.int64),
            site=np.array([sites[r.site_id] for r in rs], dtype=np.int64),
            rated_kw=col([r.rated_kw for r in rs], 0.0),
            capacity_kwh=col([r.rated_kwh for r in rs], 0.0),
            comfort_low_c=col([r.comfort_min_c for r in rs], 20.0),
            comfort_high_c=col([r.comfort_max_c for r in rs], 28.0),
            soc_reserve_pct=col([r.soc_reserve_pct for r in rs], 20.0),
            soc_max_pct=col([r.soc_max_pct for r in rs], 95.0),
            available=np.array([r.allowed for r in rs], dtype=np.bool_),
        )  # fmt: skip

    def _append_resources(self, state: FleetState, rs: Sequence[Resource]) -> None:
        """Rows for ``rs`` after the last row, their new sites after the last site (nothing
        already there moves), and the lookups from a gateway's sample, a store key and a
        gateway's meter to them."""
        start = len(self.resources)
        sites = {s: i for i, s in enumerate(self.site_ids)}
        for site_id in sorted({r.site_id for r in rs} - sites.keys()):
            sites[site_id] = len(self.site_ids)
            self.site_ids.append(site_id)
        for row, r in enumerate(rs, start):
            self._row_of_device[(r.gateway_id, r.resource_id)] = row
            self._row_of_resource[r.resource_id] = row
            self._site_of_gateway[r.gateway_id] = sites[r.site_id]
        self.resources.extend(rs)  # in place: views of the RA (the console) hold this list
        # the gateway reports a PV unit's generation (0xE0) as a positive power_w; the
        # state counts generation negative, as the site sees it
        self._power_sign = np.concatenate(
            [self._power_sign, np.array([-1.0 if r.device_class == "pv" else 1.0 for r in rs])])
        # a fuel cell follows its site's load: a load shed there first lowers its output
        fuel_cell = np.zeros(len(self.site_ids), dtype=np.bool_)
        fuel_cell[: len(self._fuel_cell_site)] = self._fuel_cell_site
        fuel_cell[[sites[r.site_id] for r in rs if r.device_class == "fuel_cell"]] = True
        self._fuel_cell_site = fuel_cell
        state.extend(self._static_rows(rs))
        keys = self.store.resource_keys()
        size = max(max(keys.values(), default=-1) + 1, len(self._row_of_key))
        row_of_key = np.full(size, -1, dtype=np.int64)
        row_of_key[: len(self._row_of_key)] = self._row_of_key
        for row, r in enumerate(rs, start):
            if r.resource_id in keys:
                row_of_key[keys[r.resource_id]] = row
        self._row_of_key = row_of_key

    def refresh_resources(self) -> int:
        """Bring the live state up to the registry, append-only, so that nothing indexed by
        row or site (an event's commands, the room models) moves mid-event:

        - a resource allowed since the last look (the API, an import, ``erab ra resource
          add --offline``) gets a row after the last one, its site an index after the
          last; its telemetry counts from now on, and it plans like any other;
        - one no longer allowed, or gone from the registry, keeps its row but is not
          available: no flexibility, never dispatched; a command of it in force stops
          counting at once and is cancelled at the next :meth:`tick`.  Its telemetry is
          still applied (its site's power stays whole; allowed again, it plans at once);
        - an edit of a row's rating, comfort band or SOC limits updates its static
          columns; a resource moved to another site, gateway or class is retired from its
          row and gets a new one.

        The gateways concerned get their allow-lists at the next tick.  Returns the rows
        added."""
        now_s = self.clock.timestamp()
        self._last_registry_check_s = self._last_registry_refresh_s = now_s
        self._registry_keys = self.store.resource_keys()
        records = self.registry.resources()
        s = self.state
        added: list[Resource] = []
        retired: list[int] = []
        restated: list[tuple[int, Resource]] = []
        for r in records:
            row = self._row_of_resource.get(r.resource_id)
            if row is None:
                if r.allowed:
                    added.append(r)
                continue
            old = self.resources[row]
            if r == old and bool(s.available[row]) == r.allowed:
                continue
            self._allow_lists_due.update({old.gateway_id, r.gateway_id})
            if (r.site_id, r.gateway_id, r.device_class) != (
                    old.site_id, old.gateway_id, old.device_class):  # fmt: skip
                del self._row_of_resource[r.resource_id]
                del self._row_of_device[(old.gateway_id, old.resource_id)]
                retired += [row] if s.available[row] else []
                added += [r] if r.allowed else []
                continue
            self.resources[row] = r
            restated.append((row, r))
            retired += [row] if s.available[row] and not r.allowed else []
        registered = {r.resource_id for r in records}
        for resource_id, row in self._row_of_resource.items():
            if resource_id not in registered and s.available[row]:
                retired.append(row)
                self._allow_lists_due.add(self.resources[row].gateway_id)
        if restated:
            s.restate([row for row, _ in restated], self._static_rows([r for _, r in restated]))
        if retired:
            s.available[retired] = False
            self._release_retired(retired)
        if added:
            acs, sites = int(np.count_nonzero(s.kind == ResourceKind.AIRCON)), s.sites
            self._append_resources(s, added)
            self._pad_to_state(acs, sites)
            self._allow_lists_due.update(r.gateway_id for r in added)
        updated = len({row for row, _ in restated} - set(retired))
        if added or retired or updated:
            log.info("registry: %d resources added to the live state, %d retired, %d updated "
                     "(%d rows)", len(added), len(retired), updated, len(s))  # fmt: skip
        return len(added)

    def check_registry(self) -> int:
        """:meth:`refresh_resources` when the registry's resources are not those of the last
        look (one cheap query of their ids: another process, ``erab ra resource add
        --offline``, may write the store while the RA runs), and every
        ``CHECK_CERTS_EVERY_S`` in any case (an edit of a record in place).  Returns the
        rows added."""
        now_s = self.clock.timestamp()
        self._last_registry_check_s = now_s
        if (self.store.resource_keys() != self._registry_keys
                or now_s - self._last_registry_refresh_s >= CHECK_CERTS_EVERY_S):  # fmt: skip
            return self.refresh_resources()
        return 0

    def _release_retired(self, rows: Sequence[int]) -> None:
        """Retired rows leave every running event: out of its reserve, and a command in
        force released (the closed loop makes up for it) and queued for a cancel."""
        gone = set(rows)
        for plan in self.plans.values():
            event = self.events.events.get(plan.event_id)
            if event is None or event.stage.value in ("completed", "cancelled"):
                continue
            plan.reserve[:] = [row for row in plan.reserve if row not in gone]
            for row in sorted(gone):
                command = plan.in_force(row)
                if command is not None:
                    plan.released.add(row)
                    self._cancels_due.append(command)

    def _pad_to_state(self, acs: int, sites: int) -> None:
        """Grow what is kept per air conditioner (there were ``acs``) or per site (``sites``)
        to the state's size: the thermal samples (a new unit unheard in the old ones), the
        room models (a new site has none until the next fit: no air-conditioner
        flexibility there yet), the snapshots of the sites' power and each event's
        pre-event baseline (a new site unknown then).  An event's air-conditioner powers
        are padded where read (:meth:`_references`)."""
        s = self.state
        more_acs = int(np.count_nonzero(s.kind == ResourceKind.AIRCON)) - acs
        if more_acs > 0:
            n, pad = acs + more_acs, self._nan_padded
            self.thermal_samples[:] = [(pad(t, n), pad(room, n), pad(out, n), pad(kw, n))
                                       for t, room, out, kw in self.thermal_samples]  # fmt: skip
        if s.sites == sites:
            return
        model, n = self.thermal, s.sites
        if model is not None and len(model) < n:
            pad = self._nan_padded
            self.thermal = ThermalModel(
                pad(model.a_per_h, n), pad(model.b_k_per_kwh, n), pad(model.c_k_per_h, n),
                pad(model.rmse_k_per_h, n),
                np.concatenate([model.samples, np.zeros(n - len(model), dtype=np.int64)]),
                np.concatenate([model.valid, np.zeros(n - len(model), dtype=np.bool_)]))
        self.snapshots.pad_sites(s.sites)
        for plan in self.plans.values():
            if plan.site_baseline_kw is not None:
                plan.site_baseline_kw = self._nan_padded(plan.site_baseline_kw, s.sites)

    async def push_registry_changes(self) -> None:
        """Send what :meth:`refresh_resources` left to send: a cancel for each retired
        resource's command in force, then each gateway concerned its allow-list (the
        registry's allowed resources of it; docs/aggregator.md, "The allow-list pushed
        back"), so that it takes a new resource's commands and refuses a retired one's."""
        if self.fanout is None:
            return
        cancels, self._cancels_due = self._cancels_due, []
        for event_id in dict.fromkeys(c.event_id for c in cancels):
            await self.fanout.send_many(
                [(c.gateway_id, {"type": "cancel", "device_id": c.body["device_id"]})
                 for c in cancels if c.event_id == event_id], event_id=event_id)  # fmt: skip
        gateways, self._allow_lists_due = self._allow_lists_due, set()
        for gateway_id in sorted(gateways) if self.push_allow_lists else []:
            gateway = self.store.gateway(gateway_id)
            if gateway is not None and gateway.status is not GatewayStatus.REVOKED:
                await self.fanout.send(gateway_id, self.allow_list_body(gateway_id))

    @staticmethod
    def _nan_padded(values: np.ndarray, n: int, fill: float = np.nan) -> np.ndarray:
        """``values`` (one per air conditioner or site) widened to ``n`` with ``fill``: a
        resource or site added since was not known then."""
        values = np.asarray(values, dtype=np.float64)
        if len(values) >= n:
            return values
        return np.concatenate([values, np.full(n - len(values), fill)])

    def on_readings(self, readings: CommittedReadings) -> None:
        """The ingest hook: committed readings into the state's columns."""
        size = len(self._row_of_key)
        keys = readings.resource_key
        rows = np.full(len(keys), -1, dtype=np.int64)
        if size:
            known = (keys >= 0) & (keys < size)
            rows[known] = self._row_of_key[keys[known]]
        fields = np.full(len(rows), -1, dtype=np.int64)
        scale = np.ones(len(rows))
        for p, name in enumerate(readings.point_names):
            if name in POINTS:
                field, factor = POINTS[name]
                fields[readings.point == p] = int(field)
                scale[readings.point == p] = factor
        keep = (rows >= 0) & (fields >= 0)
        power = keep & (fields == int(TelemetryField.POWER_KW))
        scale[power] *= self._power_sign[rows[power]]
        if keep.any():
            self.state.apply(TelemetryBatch.of(rows[keep], fields[keep],
                                               readings.value[keep] * scale[keep],
                                               readings.measured_at_s[keep]),
                             self.clock.timestamp())  # fmt: skip

    def apply_telemetry(self, messages: Iterable[object]) -> int:
        """The state feed: telemetry and meter messages into the state's columns, the rest
        ignored.  A sample counts only for a resource of the gateway that sent it, a meter
        reading for that gateway's site, and nothing of a revoked gateway; a reading the
        state refuses is counted by reason and raises a ``reading_flagged`` alert for its
        resource (a redelivered one, ``out_of_order``, is only counted).  Returns the
        resources' readings stored."""
        rows: list[int] = []
        fields: list[int] = []
        values: list[float] = []
        times: list[float] = []
        meter_sites: list[int] = []
        meter_kw: list[float] = []
        meter_times: list[float] = []
        row_of = self._row_of_device
        sign_of = self._power_sign
        for m in messages:
            if isinstance(m, MeterReading) and m.gateway_id not in self._revoked:
                site = self._site_of_gateway.get(m.gateway_id)
                if site is not None and m.power_w is not None:
                    meter_sites.append(site)
                    meter_kw.append(m.power_w / 1000.0)
                    meter_times.append(m.measured_at.timestamp())
                continue
            if not isinstance(m, TelemetryMessage) or m.gateway_id in self._revoked:
                continue
            for sample in m.samples:
                row = row_of.get((m.gateway_id, sample.device_id))
                if row is None:
                    continue
                t = sample.measured_at.timestamp()
                for point, value in sample.values.items():
                    mapped = POINTS.get(point)
                    if mapped is not None:
                        rows.append(row)
                        fields.append(int(mapped[0]))
                        sign = sign_of[row] if mapped[0] is TelemetryField.POWER_KW else 1.0
                        values.append(value * mapped[1] * sign)
                        times.append(t)
        if meter_sites:
            self.state.apply_meter(meter_sites, meter_kw, meter_times, self.clock.timestamp())
        if not rows:
            return 0
        result = self.state.apply(TelemetryBatch.of(rows, fields, values, times),
                                  self.clock.timestamp())  # fmt: skip
        bad = np.flatnonzero(result.flags)
        for i in bad:
            flag = ReadingFlag(int(result.flags[i]))
            why = "|".join(str(f.name).lower() for f in ReadingFlag if f and f in flag)
            self.flagged[why] = self.flagged.get(why, 0) + 1
            r = self.resources[rows[i]]
            if flag is not ReadingFlag.OUT_OF_ORDER and r.resource_id not in self._flag_alerted:
                self._flag_alerted.add(r.resource_id)  # one alert per resource and run
                self.alerts.reading(r.resource_id, r.gateway_id, why)
        return result.stored

    def allow_list_body(self, gateway_id: str) -> dict[str, Any]:
        """The signed-command body that gives a gateway its allow-list: the registry's
        allowed resources of that gateway (their ids are the device ids it uses)."""
        return {"type": ALLOW_LIST_TYPE, "devices": [
            {"device_id": a.device_id, "node_id": a.node_id, "eoj": a.eoj,
             "rated_power_w": a.rated_power_w}
            for a in self.registry.allow_list(gateway_id)]}  # fmt: skip

    async def answer_hellos(self, messages: Iterable[object]) -> list[str]:
        """Send each gateway that said hello its allow-list, as a signed envelope (the
        registry decides; docs/aggregator-registry.md).  Nothing for an unknown or revoked
        gateway, or one whose hello names another site (ingest raises that alert).
        Returns the gateways answered."""
        answered: list[str] = []
        if self.fanout is None:
            return answered
        for m in messages:
            if not isinstance(m, Hello) or m.gateway_id in answered:
                continue
            gateway = self.store.gateway(m.gateway_id)
            if (gateway is None or gateway.status is GatewayStatus.REVOKED
                    or gateway.site_id != m.site_id):  # fmt: skip
                continue
            await self.fanout.send(m.gateway_id, self.allow_list_body(m.gateway_id))
            answered.append(m.gateway_id)
        return answered

    def flex_params(self) -> FlexParams:
        """The flexibility parameters of the fleet now: the thermal models last fitted."""
        return FlexParams(thermal=self.thermal)

    def fit_thermal_models(self) -> ThermalModel | None:
        """Fit every site's room model (:func:`fit_thermal`) from the air conditioners'
        samples kept by :meth:`snapshot` (room, outdoor temperature and power), and plan with
        it from now on.  A unit needs its power to have changed in the samples (switched on,
        a setpoint moved): the morning's switch-on of a cooling day is enough (about an hour
        and a half of one-minute samples; docs/aggregator.md).  A site without a valid fit
        offers no air-conditioner flexibility.  None while fewer than 12 samples are kept."""
        rows = np.flatnonzero(self.state.kind == ResourceKind.AIRCON)
        if len(self.thermal_samples) < 12 or not len(rows):
            return self.thermal
        self._last_fit_s = self.clock.timestamp()
        # each sample at its reading's time: a snapshot taken before a unit's new reading
        # came repeats the old one (no slope: the interval is 0)
        times, room, outdoor, power = (np.stack([sample[k] for sample in self.thermal_samples],
                                                axis=1) for k in (0, 1, 2, 3))  # fmt: skip
        # a gap in the samples (the RA stopped, telemetry lost) is no slope: NaN before it
        gap = np.zeros(room.shape, dtype=np.bool_)
        gap[:, :-1] = np.diff(times, axis=1) > THERMAL_GAP_S
        room[gap] = np.nan
        fitted = fit_thermal(times, room, outdoor, power)
        # one model per site (a site's first air conditioner; the others of a store share
        # its floor); sites without one are invalid
        sites = self.state.sites
        first = np.full(sites, -1, dtype=np.int64)
        site_of = self.state.site[rows]
        first[site_of[::-1]] = np.arange(len(rows))[::-1]
        pick = np.where(first >= 0, first, 0)
        have = first >= 0
        self.thermal = ThermalModel(
            fitted.a_per_h[pick], fitted.b_k_per_kwh[pick], fitted.c_k_per_h[pick],
            fitted.rmse_k_per_h[pick], np.where(have, fitted.samples[pick], 0),
            fitted.valid[pick] & have)  # fmt: skip
        return self.thermal

    def window_flexibility(self, start: datetime, duration_s: float) -> WindowFlexibility:
        """What each resource holds from ``start`` for ``duration_s``, with the thermal models.

        An air conditioner offers down at most the energy its raised setpoint surely sheds
        (``margin / b``) over the window; nothing where the gateway cannot raise its setpoint
        a whole degree inside its comfort band (erab.gateway.envelope.decide_aircon); and
        where something follows the site's load (a battery charging or discharging in its
        own auto mode, a fuel cell), no more than the site imports now: the rest of a load
        shed only moves that battery or fuel cell, and the meter sees nothing of it
        (docs/aggregator.md)."""
        window = flexibility_for_window(self.state, start, duration_s, self.flex_params())
        s = self.state
        is_ac = s.kind == ResourceKind.AIRCON
        stuck = is_ac & ~(s.setpoint_c + 1.0 <= s.comfort_high_c)
        down = np.minimum(window.down_kw, self._aircon_import_cap_kw())
        ac = np.flatnonzero((s.kind == ResourceKind.AIRCON) & (down > 0))
        if len(ac) and self.thermal is not None:
            # what a raised setpoint gives for sure: the unit idles while its room warms
            # by the offset, margin / b kWh whatever the leak a (which whole-degree room
            # readings over-estimate, and with it the steady saving after); that energy
            # spread over the window (the saving after it is the closed loop's headroom)
            model = self.thermal.for_sites(s.site[ac])
            offset_k = np.minimum(AIRCON_OFFSET_C, s.comfort_high_c[ac] - s.setpoint_c[ac])
            margin_k = np.clip(np.minimum(offset_k, s.comfort_high_c[ac] - s.room_temp_c[ac]),
                               0.0, None)  # fmt: skip
            with np.errstate(divide="ignore", invalid="ignore"):
                burst_kw = margin_k / np.abs(model.b_k_per_kwh) / (duration_s / 3600.0)
            down[ac] = np.minimum(down[ac], np.where(model.valid, np.nan_to_num(burst_kw), 0.0))
        return WindowFlexibility(window.start_s, window.duration_s,
                                 np.where(stuck, 0.0, down), window.up_kw)  # fmt: skip

    def _load_followed(self) -> np.ndarray:
        """Per site: something there follows the site's load now (a battery charging or
        discharging in its own auto mode, a fuel cell), so a load shed moves it first."""
        s = self.state
        battery = (s.kind == ResourceKind.BATTERY) & (np.abs(np.nan_to_num(s.power_kw))
                                                      >= MIN_STEP_KW)  # fmt: skip
        follows = self._fuel_cell_site[: s.sites].copy()
        follows[s.site[battery]] = True
        return follows

    def _aircon_import_cap_kw(self) -> np.ndarray:
        """Per resource: the most an air conditioner's shed shows at its site's meter now
        (``inf`` where nothing follows the site's load; a site's units share its import)."""
        s = self.state
        cap = np.full(len(s), np.inf)
        rows = np.flatnonzero((s.kind == ResourceKind.AIRCON) & self._load_followed()[s.site])
        if len(rows):
            site = s.site[rows]
            importing = np.clip(np.nan_to_num(s.site_meter_kw[site], nan=0.0) - MIN_STEP_KW,
                                0.0, None)  # fmt: skip
            cap[rows] = importing / np.bincount(site, minlength=s.sites)[site]
        return cap

    def flexibility_kw(self, direction: str, start: datetime | None = None,
                       duration: timedelta = timedelta(hours=1)) -> float:  # fmt: skip
        window = self.window_flexibility(start or self.clock.now(), duration.total_seconds())
        return float(np.nansum(window.down_kw if direction == "down" else window.up_kw))

    def flexibility_forecast(self, at: datetime | None = None, *, slots: int = 48,
                             slot_s: float = 1800.0) -> dict[str, Any]:  # fmt: skip
        """The fleet's and each kind's flexibility from ``at`` (default now), per slot
        (48 × 30 min: the next 24 h), each slot's kW held for an hour."""
        start = at or self.clock.now()
        flex = flexibility(self.state, self.flex_params(), start, slots=slots, slot_s=slot_s)
        return {"at": start.isoformat(), "resources": len(self.resources),
                "online": int(np.sum(self.state.online)),
                **forecast_table(flex, self.state.kind)}  # fmt: skip

    def site_power_kw(self) -> np.ndarray:
        """Each site's power now (kW; NaN for a site not heard yet), in ``site_ids`` order."""
        return site_power_kw(self.state.site, self.state.power_kw, len(self.site_ids))

    def delivery_by_site(self, event_id: str) -> SiteDelivery | None:
        """What each site of an event delivers against its pre-event baseline (None before
        the event has a plan, or when no snapshot of the sites' power precedes it)."""
        plan = self.plans.get(event_id)
        if plan is None:
            return None
        event = self.events.get(event_id)
        if plan.site_baseline_kw is None:
            plan.site_baseline_kw = self.snapshots.baseline(
                min(event.request.start.timestamp(), self.clock.timestamp()))
            if plan.site_baseline_kw is None:
                return None
        commanded = np.zeros(len(self.site_ids))
        for row, command in self._rows_in_force(plan):
            commanded[self.state.site[row]] += plan.planned_kw(command)
        involved = np.flatnonzero(commanded > 0)
        return site_delivery(event.request.target_kw, [self.site_ids[i] for i in involved],
                             plan.site_baseline_kw[involved], self.site_power_kw()[involved],
                             commanded[involved])  # fmt: skip

    def event_detail(self, event_id: str) -> dict[str, Any]:
        """The event (``DrEvent.as_dict``) with its commands by stage, the closed loop's last
        check, and its delivery per site (the API's ``GET /events/{id}``)."""
        event = self.events.get(event_id)
        out = event.as_dict()
        plan = self.plans.get(event_id)
        if plan is None:
            return out
        if self.fanout is not None:
            out["commands"] = self.fanout.summary(event_id)
        if plan.checks:
            last = plan.checks[-1]
            out["delivery"] = {"delivered_kw": round(last.delivered_kw, 3),
                               "reference_kw": round(last.reference_kw, 3),
                               "ratio": round(last.ratio, 4),
                               "checks": len(plan.checks)}  # fmt: skip
        sites = self.delivery_by_site(event_id)
        out["sites"] = [] if sites is None else sites.rows()
        return out

    def alert_rows(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        """The store's alerts (open ones by default), newest first."""
        return [
            {"alert_id": a.alert_id, "raised_at": a.raised_at.isoformat(), "kind": a.kind,
             "message": a.message, "gateway": a.gateway_id, "resource": a.resource_id,
             "cleared_at": None if a.cleared_at is None else a.cleared_at.isoformat()}
            for a in reversed(self.store.alerts(open_only=open_only))
        ]  # fmt: skip

    def metrics_text(self) -> str:
        """The RA's figures in Prometheus text format (exposition format 0.0.4)."""
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str,
                   samples: Sequence[tuple[str, float]]) -> None:  # fmt: skip
            lines.append(f"# HELP erab_{name} {help_text}")
            lines.append(f"# TYPE erab_{name} {kind}")
            for labels, value in samples:
                lines.append(f"erab_{name}{labels} {value:g}")

        ingest = self.ingest.stats if self.ingest is not None else None
        metric("ingest_messages_total", "counter", "uplink messages stored",
               [("", ingest.messages if ingest else 0)])  # fmt: skip
        metric("ingest_readings_total", "counter", "telemetry readings stored",
               [("", ingest.readings if ingest else 0)])  # fmt: skip
        metric("ingest_duplicates_total", "counter", "redelivered messages dropped",
               [("", ingest.duplicates if ingest else 0)])  # fmt: skip
        rejected = self.ingest.rejected if self.ingest is not None else {}
        metric("ingest_rejected_total", "counter", "payloads refused, by reason",
               [(f'{{reason="{r}"}}', n) for r, n in sorted(rejected.items())] or [("", 0)])
        online = sum(1 for g in self.registry.gateways() if g.status == "online")
        metric("gateways", "gauge", "gateways in the registry, by status",
               [('{status="online"}', online),
                ('{status="other"}', len(self.registry.gateways()) - online)])  # fmt: skip
        metric("resources_online", "gauge", "resources reporting",
               [("", int(np.sum(self.state.online)))])
        metric("fleet_power_kw", "gauge", "the fleet's power now (consumption positive)",
               [("", round(self.fleet_kw(), 3))])
        commands = self.fanout.summary() if self.fanout is not None else {}
        metric("commands", "gauge", "commands by stage",
               [(f'{{stage="{k}"}}', v) for k, v in commands.items()] or [("", 0)])
        events: dict[str, int] = {}
        for event in self.events.events.values():
            events[event.stage.value] = events.get(event.stage.value, 0) + 1
        metric("events", "gauge", "DR events by stage",
               [(f'{{stage="{k}"}}', v) for k, v in sorted(events.items())] or [("", 0)])
        delivered = [(f'{{event="{eid}"}}', p.checks[-1].ratio)
                     for eid, p in self.plans.items() if p.checks]  # fmt: skip
        metric("event_delivery_ratio", "gauge", "delivered / target at the last check",
               delivered or [("", 0)])
        metric("ingest_pending", "gauge",
               "messages in the broker's streams not yet stored (all ingest processes)",
               [(f'{{consumer="{k}"}}', n) for k, n in sorted(self.ingest_pending.items())]
               or [("", 0)])  # fmt: skip
        metric("ingest_flagged_total", "counter", "readings stored flagged (out of range)",
               [("", ingest.flagged if ingest else 0)])  # fmt: skip
        metric("readings_refused_total", "counter",
               "readings the live state did not take as truth, by reason",
               [(f'{{reason="{r}"}}', n) for r, n in sorted(self.flagged.items())]
               or [("", 0)])  # fmt: skip
        open_alerts = self.alerts.counts()
        metric("alerts_open", "gauge", "open alerts, by kind",
               [(f'{{kind="{k}"}}', n) for k, n in sorted(open_alerts.items())] or [("", 0)])
        metric("alerts_raised_total", "counter", "alerts this RA raised since it started",
               [(f'{{kind="{k}"}}', n) for k, n in sorted(self.alerts.raised.items())]
               or [("", 0)])  # fmt: skip
        return "\n".join(lines) + "\n"

    def audit_tail(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` records of the deployment's audit log (the API's /audit)."""
        return [r.to_dict() for r in self.audit.store.tail(n)]

    def fleet_summary(self) -> dict[str, Any]:
        s = self.state
        return {
            "resources": len(self.resources), "online": int(np.sum(s.online)),
            "gateways": len(self.registry.gateways()),
            "power_kw": float(np.nansum(s.power_kw)),
            "flexibility_down_kw": self.flexibility_kw("down"),
            "flexibility_up_kw": self.flexibility_kw("up"),
        }  # fmt: skip

    # -- events -----------------------------------------------------------------------------
    def _command(self, row: int, kw: float, direction: Direction, request: EventRequest,
                 reference_kw: float) -> tuple[dict[str, Any], float] | None:  # fmt: skip
        """The command body that asks ``kw`` (≥ 0, in ``direction``) of resource ``row``,
        whose power before the event was ``reference_kw``, and the kW it really asks (a
        battery's setpoint stays within its rating); None when this RA cannot command it."""
        r = self.resources[row]
        window = {"start": max(request.start, self.clock.now()).isoformat(),
                  "end": request.end.isoformat(), "max_delay_s": self.start_spread_s}  # fmt: skip
        down = direction is Direction.DOWN
        if r.device_class == "battery":
            # the gateway's battery_power sets an absolute power (erab.gateway.envelope
            # decide_battery): the setpoint is the battery's own level moved by the kW, so
            # a battery charging at 2 kW asked for 3 kW down discharges 1 kW, not 3
            rated = r.rated_kw or 0.0
            setpoint_kw = float(np.clip(reference_kw - kw if down else reference_kw + kw,
                                        -rated, rated))  # fmt: skip
            power_w = round(setpoint_kw * 1000.0)
            asked = (reference_kw - power_w / 1000.0) if down else (power_w / 1000.0 - reference_kw)
            return {"type": "battery_power", "device_id": r.resource_id, "power_w": power_w,
                    **window}, max(asked, 0.0)  # fmt: skip
        if r.device_class == "aircon" and down:
            return {"type": "aircon_offset", "device_id": r.resource_id,
                    "offset_c": AIRCON_OFFSET_C, **window}, kw  # fmt: skip
        if r.device_class == "pv" and not down:
            rated = r.rated_kw or 0.0
            limit = 100.0 * max(0.0, rated - kw) / rated if rated else 100.0
            return {"type": "pv_limit", "device_id": r.resource_id,
                    "limit_pct": round(limit, 1), **window}, kw  # fmt: skip
        return None  # not a resource this RA commands yet

    def _commandable(self, row: int, direction: Direction) -> bool:
        """Whether :meth:`_command` has a command for this resource in this direction."""
        kind = self.resources[row].device_class
        down = direction is Direction.DOWN
        return kind == "battery" or (kind == "aircon" and down) or (kind == "pv" and not down)

    def _power_now_kw(self, row: int) -> float:
        value = float(self.state.power_kw[row])
        return value if np.isfinite(value) else 0.0

    async def _send_rows(self, plan: EventPlan, request: EventRequest,
                         asks: Sequence[tuple[int, float]]) -> list[RaCommand]:  # fmt: skip
        """Command each (row, kW) of ``asks`` for the event, against the row's power when the
        event first commanded it (now, for a row not commanded yet); rows this RA cannot
        command, or asked next to nothing, are skipped.  Returns the commands sent."""
        assert self.fanout is not None
        direction = plan.plan.direction
        items, rows, kws = [], [], []
        ac = self.state.kind == ResourceKind.AIRCON
        for row, kw in asks:
            reference = plan.reference_of.get(row, self._power_now_kw(row))
            made = self._command(row, kw, direction, request, reference)
            if made is None or made[1] < MIN_STEP_KW / 2:
                continue
            if row not in plan.reference_of and ac[row] and plan.aircon_kw_at_dispatch is not None:
                # the uncommanded units' power now: this unit's reference follows theirs
                # from here on (_references), not from the dispatch
                if plan.aircon_snapshot_commands != len(plan.commands):  # a new batch
                    plan.aircon_kw_at.append(self.state.power_kw[ac].copy())
                    plan.aircon_snapshot_commands = len(plan.commands)
                plan.aircon_snapshot_of[row] = len(plan.aircon_kw_at) - 1
            if row not in plan.reference_of and self.state.kind[row] == ResourceKind.BATTERY:
                plan.battery_at_call[row] = (self.clock.timestamp(),
                                             float(self.state.soc_pct[row]))  # fmt: skip
            plan.reference_of.setdefault(row, reference)
            items.append((self.resources[row].gateway_id, made[0]))
            rows.append(row)
            kws.append(made[1])
        commands = await self.fanout.send_many(items, event_id=plan.event_id)
        for command, row, kw in zip(commands, rows, kws, strict=True):
            plan.commands.append(command)
            plan.row_commands.setdefault(row, []).append(command)
            plan.kw_of[(command.gateway_id, command.sequence)] = kw
            plan.released.discard(row)
        return commands

    async def create_event(self, request: EventRequest) -> DrEvent:
        """Accept, plan and dispatch an event (the CLI's, the API's or OpenADR's)."""
        if self.fanout is None:
            raise RaServiceError("the RA is not connected to the broker yet")
        direction = Direction.DOWN if request.direction == "down" else Direction.UP
        start = max(request.start, self.clock.now())
        if direction is Direction.DOWN:
            self.fit_thermal_models()
        # merit order plans whole 30-minute slots over the window
        slots = max(1, round((request.end - start).total_seconds() / 1800.0))
        window = self.window_flexibility(start, slots * 1800.0)
        total = float(np.nansum(window.down_kw if direction is Direction.DOWN else window.up_kw))
        event = self.events.create(request, flexibility_kw=total)
        n = len(self.resources)
        terms = ResourceTerms.create(n)
        immediate = self._immediate(window)
        plan = merit_order(immediate, direction, abs(request.target_kw), terms,
                           DispatchParams(margin=self.margin))  # fmt: skip
        event.shortfall_kw = float(np.max(plan.shortfall_kw, initial=0.0))
        self.events.advance(event.event_id, EventTrigger.PLAN, "ra",
                            dispatched=len(plan.dispatched),
                            shortfall_kw=event.shortfall_kw)  # fmt: skip
        # The merit order called resources for the target and its margin; each is asked its
        # share of the target alone, and keeps the rest as headroom for the closed loop.
        expected = float(np.max(plan.expected_kw, initial=0.0))
        scale = min(1.0, abs(request.target_kw) / expected) if expected > 0 else 1.0
        running = self.plans[event.event_id] = EventPlan(
            event.event_id, plan, [], [int(r) for r in plan.reserve],
            reference_kw=self.fleet_kw(), last_check_s=self.clock.timestamp(),
            aircon_kw_at_dispatch=self.state.power_kw[self.state.kind == ResourceKind.AIRCON]
            .copy())  # fmt: skip
        asks = [(int(row), float(plan.kw[row].max()) * scale) for row in plan.dispatched]
        if direction is Direction.DOWN:
            asks = self._whole_aircons(running, asks, abs(request.target_kw),
                                       immediate.down_kw)  # fmt: skip
        await self._send_rows(running, request, asks)
        self.events.advance(event.event_id, EventTrigger.DISPATCH, "ra",
                            commands=len(running.commands))  # fmt: skip
        return event

    def _whole_aircons(self, plan: EventPlan, asks: Sequence[tuple[int, float]],
                       target_kw: float, sheds: np.ndarray) -> list[tuple[int, float]]:  # fmt: skip
        """``asks`` with each air conditioner asked what its raised setpoint really sheds
        at once (``sheds``: its power now), not a share of it; one that would overshoot the
        target by more than it would leave short is not called yet: it goes back to the
        front of the reserve, for the closed loop."""
        out: list[tuple[int, float]] = []
        held: list[int] = []
        total = 0.0
        for row, kw in asks:
            if self.state.kind[row] == ResourceKind.AIRCON:
                whole = float(sheds[row])
                if not np.isfinite(whole) or total + whole / 2 > target_kw:
                    held.append(row)
                    continue
                kw = whole
            out.append((row, kw))
            total += kw
        plan.reserve[:0] = held
        return out

    def _immediate(self, window: WindowFlexibility) -> WindowFlexibility:
        """The window's flexibility as the commands give it at once: a raised cooling
        setpoint idles the unit until its room has warmed (its whole power now, for tens of
        minutes), then saves little; the kW it holds over the window (the thermal model's)
        comes as that burst.  So the plan calls units for their power now, few at a time,
        and the closed loop calls the next as the first ones' rooms reach their setpoints."""
        ac = (self.state.kind == ResourceKind.AIRCON) & (window.down_kw > 0)
        now_kw = np.minimum(np.maximum(np.nan_to_num(self.state.power_kw, nan=0.0), 0.0),
                            self._aircon_import_cap_kw())  # fmt: skip
        return WindowFlexibility(window.start_s, window.duration_s,
                                 np.where(ac, now_kw, window.down_kw),
                                 window.up_kw)  # fmt: skip

    def _rows_in_force(self, plan: EventPlan) -> list[tuple[int, RaCommand]]:
        """The rows with a command in force, in the order they were first commanded."""
        return [(row, c) for row in plan.row_commands
                if (c := plan.in_force(row)) is not None]  # fmt: skip

    async def cancel_event(self, event_id: str, actor: str) -> DrEvent:
        event = self.events.cancel(event_id, actor)
        self.alerts.event_over(event_id)
        plan = self.plans.get(event_id)
        if plan is not None and self.fanout is not None:
            # one cancel per device: a newer command replaced any older one at the gateway
            acknowledged = [c for row, c in self._rows_in_force(plan)
                            if any(x.stage is CommandStage.ACKNOWLEDGED
                                   for x in plan.row_commands[row])]  # fmt: skip
            await self.fanout.send_many(
                [(c.gateway_id, {"type": "cancel", "device_id": c.body["device_id"]})
                 for c in acknowledged],
                event_id=event_id,
            )  # fmt: skip
        return event

    def fleet_kw(self) -> float:
        """The fleet's power now, from the resources' telemetry (consumption positive)."""
        return float(np.nansum(self.state.power_kw))

    def _settled(self, plan: EventPlan, rows: Sequence[tuple[int, RaCommand]]) -> np.ndarray:
        """Per (row, command in force): acknowledged, and the row's power measured since."""
        power_at = self.state.reading_time_s(TelemetryField.POWER_KW)
        return np.array([c.stage is CommandStage.ACKNOWLEDGED and c.acknowledged_at is not None
                         and power_at[row] >= c.acknowledged_at.timestamp()
                         for row, c in rows], dtype=np.bool_)  # fmt: skip

    def _delivery(self, event_id: str, tolerance: float, *, measure: bool = True) -> _Delivery:
        plan = self.plans[event_id]
        request = self.events.get(event_id).request
        direction = plan.plan.direction
        sign = 1.0 if direction is Direction.DOWN else -1.0
        rows = self._rows_in_force(plan)
        idx = np.array([row for row, _ in rows], dtype=np.int64)
        settled = self._settled(plan, rows) if measure else np.zeros(len(rows), dtype=np.bool_)
        now = self.clock.now()
        window = self._immediate(self.window_flexibility(now, max(
            60.0, (request.end - now).total_seconds())))  # fmt: skip
        can = window.kw(direction)  # more, from each resource's power now
        reference = self._references(plan, rows)
        # an air conditioner's shed where the site's battery or fuel cell follows the load
        # and the site imports nothing now went into that battery or fuel cell: the meter
        # sees none of it (a battery may start covering its home as the afternoon goes on)
        s = self.state
        hidden = ((s.kind[idx] == ResourceKind.AIRCON) & self._load_followed()[s.site[idx]]
                  & (s.site_meter_kw[s.site[idx]] <= MIN_STEP_KW)) if len(idx) else []  # fmt: skip
        reference = [self._power_now_kw(row) if hide else ref
                     for (row, _), ref, hide in zip(rows, reference, hidden, strict=True)]
        moved = [sign * (ref - self._power_now_kw(row))
                 for (row, _), ref in zip(rows, reference, strict=True)]  # fmt: skip
        planned = [plan.planned_kw(c) for _, c in rows]
        # a battery whose command does not show yet is expected to give what it was asked,
        # as far as its state now lets it (its site's import may have fallen since)
        expected = [min(p, max(m, 0.0) + float(can[row]))
                    if c.body.get("type") == "battery_power" else p
                    for (row, c), p, m in zip(rows, planned, moved, strict=True)]  # fmt: skip
        check = commanded_delivery(request.target_kw, reference,
                                   self.state.power_kw[idx], expected, settled,
                                   tolerance=tolerance)  # fmt: skip
        return _Delivery(check, rows, settled, moved, planned, can)

    def _battery_reference(self, plan: EventPlan, row: int, reference_kw: float) -> float:
        """A battery's power without the event, now: ``reference_kw`` (its power when first
        commanded) while that would not yet have filled it to its max or emptied it to its
        reserve since, else 0.  (A battery charging from the PV's surplus at 15:00 is full
        by 16:00 on its own: counting its stopped charge after that counts what the meter
        never sees.)"""
        at = plan.battery_at_call.get(row)
        s = self.state
        if at is None or not np.isfinite(at[1]) or s.capacity_kwh[row] <= 0 or reference_kw == 0:
            return reference_kw
        started_s, soc_pct = at
        hours = (self.clock.timestamp() - started_s) / 3600.0
        if reference_kw > 0:
            energy_kwh = (s.soc_max_pct[row] - soc_pct) / 100.0 * s.capacity_kwh[row]
        else:
            energy_kwh = (soc_pct - s.soc_reserve_pct[row]) / 100.0 * s.capacity_kwh[row]
        return reference_kw if hours * abs(reference_kw) < max(energy_kwh, 0.0) else 0.0

    def _references(self, plan: EventPlan, rows: Sequence[tuple[int, RaCommand]]) -> list[float]:
        """Each commanded resource's level without its command, now: its power when first
        commanded; an air conditioner's moved with the air conditioners the event never
        commanded that ran at dispatch, since that unit was first commanded (their power
        follows the afternoon's heat, and so would the commanded ones' have); a battery's
        until its SOC would have reached its max (charging) or reserve (discharging) at that
        power, then 0 (its twin left alone would have stopped)."""
        reference = [self._battery_reference(plan, row, plan.reference_of[row])
                     if self.state.kind[row] == ResourceKind.BATTERY else plan.reference_of[row]
                     for row, _ in rows]  # fmt: skip
        at_dispatch = plan.aircon_kw_at_dispatch
        if at_dispatch is None:
            return reference
        ac = np.flatnonzero(self.state.kind == ResourceKind.AIRCON)
        now = self.state.power_kw[ac]
        # a unit registered since the dispatch is NaN then: no control unit
        at_dispatch = self._nan_padded(at_dispatch, len(ac))
        control = (at_dispatch >= AC_ON_KW) & np.isfinite(now)
        control &= np.array([int(r) not in plan.row_commands for r in ac], dtype=np.bool_)
        if control.sum() < 3:
            return reference
        now_sum = float(now[control].sum())
        trends: dict[int, float] = {}

        def trend(row: int) -> float:
            k = plan.aircon_snapshot_of.get(row, 0)
            if k not in trends:
                snaps = plan.aircon_kw_at or [at_dispatch]
                snap = self._nan_padded(snaps[min(k, len(snaps) - 1)], len(ac))
                before = float(np.nansum(snap[control]))
                trends[k] = now_sum / before if before > 0 else 1.0
            return trends[k]

        return [ref * trend(row) if self.state.kind[row] == ResourceKind.AIRCON else ref
                for (row, _), ref in zip(rows, reference, strict=True)]  # fmt: skip

    def commanded_check(self, event_id: str, *, tolerance: float | None = None) -> DeliveryCheck:
        """What the event's commanded resources deliver now (each against its own power when
        first commanded; one whose command does not show in its telemetry yet, what it was
        asked as far as its state now allows), and the correction outside ±``tolerance``
        (``hold_band``)."""
        return self._delivery(event_id, self.hold_band if tolerance is None else tolerance).check

    async def correct(self, event_id: str, *, measure: bool = True) -> DeliveryCheck:
        """One turn of the closed loop: compare what the commanded resources deliver with the
        target; when short, ask more of the batteries in force that can give it, then call
        resources from the reserve; when over, ask less of the latest batteries, and cancel
        the latest commands that are then not needed.  ``measure=False`` (the check at the
        event's start, when commands are only just taking effect) expects of every command
        what the state now lets it give, without reading its effect."""
        plan = self.plans[event_id]
        event = self.events.get(event_id)
        delivery = self._delivery(event_id, self.hold_band, measure=measure)
        check = delivery.check
        plan.checks.append(check)
        plan.last_check_s = self.clock.timestamp()
        self.alerts.delivery(event_id, check)
        if self.fanout is None:
            return check
        rows, settled, moved, can = delivery.rows, delivery.settled, delivery.moved, delivery.can
        headroom, changed = await self._guard_batteries(plan, event.request, rows)
        if check.adjust_kw == 0:
            if changed and event.stage is EventStage.ACTIVE:
                self.events.advance(event_id, EventTrigger.REDISPATCH, "ra",
                                    delivered_kw=round(check.delivered_kw, 3), adjust_kw=0.0,
                                    devices=changed[:20])  # fmt: skip
            return check
        direction = plan.plan.direction
        batteries = [i for i, (_, c) in enumerate(rows) if c.body.get("type") == "battery_power"
                     and str(c.body.get("device_id")) not in changed]  # fmt: skip
        can_move = {i for i in batteries if settled[i]}
        if check.adjust_kw > 0:
            # what a battery is asked but does not give (its site's import, its ramp) is
            # not more room: a deeper setpoint would not move it
            planned = [delivery.planned[i] for i in batteries]
            room = [min(can[rows[i][0]] - max(0.0, planned_i - moved[i]), headroom.get(i, np.inf))
                    for i, planned_i in zip(batteries, planned, strict=True)]  # fmt: skip
            extra = allocate(check.adjust_kw, room)
            asks = [(rows[i][0], planned_i + e)
                    for i, planned_i, e in zip(batteries, planned, extra, strict=True)
                    if e >= MIN_STEP_KW]  # fmt: skip
            need = check.adjust_kw - sum(e for e in extra if e >= MIN_STEP_KW)
            while need >= MIN_STEP_KW and plan.reserve:
                row = plan.reserve[0]
                aircon = self.state.kind[row] == ResourceKind.AIRCON
                if aircon and need < float(can[row]) / 2:
                    break  # it sheds all its power at once: more over than this is short
                plan.reserve.pop(0)
                kw = float(min(need, can[row])) if np.isfinite(can[row]) else 0.0
                if aircon:
                    kw = float(can[row]) if np.isfinite(can[row]) else 0.0
                if kw >= MIN_STEP_KW and self._commandable(row, direction):
                    asks.append((row, kw))
                    need -= kw
            if need >= MIN_STEP_KW:
                asks += self._fresh_calls(plan, can, need, {row for row, _ in asks})
            sent = await self._send_rows(plan, event.request, asks)
            changed += [str(c.body["device_id"]) for c in sent]
        else:
            excess = -check.adjust_kw
            eased = set(changed)  # by the guard this turn: their figures are gone
            for i in reversed(range(len(rows))):
                row, command = rows[i]
                have = moved[i] if i in can_move else plan.planned_kw(command)
                # a raised setpoint put back would pull its warmed room down at full power
                # (the rebound): an air conditioner called stays so to the event's end
                if (excess < MIN_STEP_KW or not settled[i] or have < MIN_STEP_KW
                        or str(command.body.get("device_id")) in eased
                        or command.body.get("type") == "aircon_offset"):  # fmt: skip
                    continue
                if i in can_move and have - excess >= MIN_STEP_KW:
                    sent = await self._send_rows(plan, event.request, [(row, have - excess)])
                    changed += [str(c.body["device_id"]) for c in sent]
                    excess = 0.0
                elif i in can_move or have <= excess + MIN_STEP_KW:
                    await self.fanout.send_many([(command.gateway_id, {
                        "type": "cancel", "device_id": command.body["device_id"]})],
                        event_id=event_id)  # fmt: skip
                    plan.released.add(row)
                    excess -= have
                    changed.append(str(command.body["device_id"]))
        if changed and event.stage is EventStage.ACTIVE:
            self.events.advance(event_id, EventTrigger.REDISPATCH, "ra",
                                delivered_kw=round(check.delivered_kw, 3),
                                adjust_kw=round(check.adjust_kw, 3), devices=changed[:20])
        return check

    async def _guard_batteries(self, plan: EventPlan, request: EventRequest,
                               rows: Sequence[tuple[int, RaCommand]]
                               ) -> tuple[dict[int, float], list[str]]:  # fmt: skip
        """Keep every battery in force within [reserve, max] to the end of the event.

        The gateway holds a battery's setpoint until the window ends, and the battery's own
        limits are wider than the registry's (a 10 % floor against a 20 % reserve): the RA
        eases a setpoint its SOC cannot hold to the end (:func:`battery_hold_kw`), and
        cancels one that has nothing left to give.  Returns, per index of ``rows``, the kW
        more each battery may still be asked, and the devices eased or released."""
        down = plan.plan.direction is Direction.DOWN
        hours_left = max((request.end - self.clock.now()).total_seconds() / 3600.0, 1 / 60)
        idx = [i for i, (_, c) in enumerate(rows) if c.body.get("type") == "battery_power"]
        if not idx:
            return {}, []
        r = np.array([rows[i][0] for i in idx], dtype=np.int64)
        s = self.state
        hold = battery_hold_kw(s.soc_pct[r], s.capacity_kwh[r], s.soc_reserve_pct[r],
                               s.soc_max_pct[r], hours_left, down=down)  # fmt: skip
        headroom: dict[int, float] = {}
        asks: list[tuple[int, float]] = []
        released: list[RaCommand] = []
        for i, hold_kw in zip(idx, hold.tolist(), strict=True):
            row, command = rows[i]
            if not np.isfinite(hold_kw):
                continue
            setpoint_kw = float(command.body.get("power_w", 0.0)) / 1000.0
            drawn = -setpoint_kw if down else setpoint_kw  # out of (into) the cells now
            headroom[i] = max(hold_kw - max(drawn, 0.0), 0.0)
            if drawn <= hold_kw + MIN_STEP_KW:
                continue
            reference = plan.reference_of[row]
            ask = (reference + hold_kw) if down else (hold_kw - reference)
            if ask >= MIN_STEP_KW:
                asks.append((row, ask))
            else:
                released.append(command)
                plan.released.add(row)
        changed = [str(c.body["device_id"]) for c in await self._send_rows(plan, request, asks)]
        if released and self.fanout is not None:
            await self.fanout.send_many([(c.gateway_id, {
                "type": "cancel", "device_id": c.body["device_id"]}) for c in released],
                event_id=plan.event_id)  # fmt: skip
            changed += [str(c.body["device_id"]) for c in released]
        return headroom, changed

    def _fresh_calls(self, plan: EventPlan, can: np.ndarray, need_kw: float,
                     taken: set[int]) -> list[tuple[int, float]]:  # fmt: skip
        """Resources the event never commanded, for ``need_kw`` the reserve could not give:
        the flexibility the plan saw at dispatch drifts over a long window (at night a
        home's import falls, and a battery that may not export can cover less of it), while
        batteries charging on their own still have the room the plan did not call.  Those
        that can give the most for the rest of the window first, so that few are called."""
        direction = plan.plan.direction
        room = np.nan_to_num(np.asarray(can, dtype=np.float64), nan=0.0, posinf=0.0)
        order = np.argsort(-room, kind="stable")
        asks: list[tuple[int, float]] = []
        for row in order.tolist():
            if need_kw < MIN_STEP_KW or room[row] < MIN_STEP_KW:
                break
            if (row in plan.row_commands or row in taken or not self.state.online[row]
                    or not self._commandable(row, direction)):  # fmt: skip
                continue
            kw = float(min(need_kw, room[row]))
            if self.state.kind[row] == ResourceKind.AIRCON:
                if need_kw < room[row] / 2:
                    continue  # all its power at once would overshoot: a smaller one may fit
                kw = float(room[row])
            asks.append((row, kw))
            need_kw -= kw
        return asks

    async def tick(self) -> None:
        """Advance events whose window started or ended; run the closed loop of each active
        event every ``loop_every_s``; re-send, expire, replace."""
        for due, trigger in self.events.due():
            self.events.advance(due.event_id, trigger, "ra")
            if due.stage.value in ("completed", "cancelled"):
                self.alerts.event_over(due.event_id)
            elif due.stage is EventStage.ACTIVE and due.event_id in self.plans:
                # at the start, against the state now: a site's import may have fallen
                # since dispatch (a water heater done), and its battery with it
                await self.correct(due.event_id, measure=False)
        now_s = self.clock.timestamp()
        if now_s - self._last_registry_check_s >= CHECK_GATEWAYS_EVERY_S:
            self.check_registry()  # resources registered (or withdrawn) while the RA runs
        await self.push_registry_changes()
        if now_s - self._last_snapshot_s >= SNAPSHOT_EVERY_S:
            self.snapshot()
        if (now_s - self._last_fit_s >= THERMAL_REFIT_S and len(self.thermal_samples) >= 12
                and not self._events_running()):  # fmt: skip
            # so that the forecast (erab ra flex) shows the rooms; an event runs on the
            # models it was planned with (its commanded units' samples are not the rooms'
            # own behaviour, and the units it may still call should not change under it)
            self.fit_thermal_models()
        if now_s - self._last_cert_check_s >= CHECK_CERTS_EVERY_S:
            self.check_alerts()
        elif now_s - self._last_gateway_check_s >= CHECK_GATEWAYS_EVERY_S:
            self.check_gateways()
        for event_id, running in list(self.plans.items()):
            current = self.events.events.get(event_id)
            if (current is not None and current.stage is EventStage.ACTIVE
                    and now_s - running.last_check_s >= self.loop_every_s):  # fmt: skip
                await self.correct(event_id)
        if self.fanout is None:
            return
        for failed in await self.fanout.tick():
            plan = self.plans.get(failed.event_id or "")
            live = None if plan is None else self.events.events.get(plan.event_id)
            if (plan is None or live is None or live.stage.value in ("completed", "cancelled")
                    or failed.body.get("type") == "cancel"):  # fmt: skip
                continue
            failed_row = self._row_of_resource.get(str(failed.body.get("device_id")))
            if failed_row is not None and plan.in_force(failed_row) is not None:
                continue  # a newer setpoint refused: the one before it still holds
            kw = plan.planned_kw(failed)
            while plan.reserve:  # the next in merit order that this RA can command
                row = plan.reserve.pop(0)
                if await self._send_rows(plan, live.request,
                                         [(row, kw or (self.resources[row].rated_kw or 0.0))]):
                    break

    def _events_running(self) -> bool:
        """Some event has a plan and is not over yet."""
        return any((e := self.events.events.get(event_id)) is not None
                   and e.stage.value not in ("completed", "cancelled")
                   for event_id in self.plans)  # fmt: skip

    def snapshot(self) -> None:
        """Keep the sites' power now (for pre-event baselines) and the air conditioners'
        room, outdoor temperature and power (for the thermal fit)."""
        now_s = self._last_snapshot_s = self.clock.timestamp()
        self.snapshots.add(now_s, self.site_power_kw())
        ac = self.state.kind == ResourceKind.AIRCON
        if ac.any():
            s = self.state
            self._snapshot_times.append(now_s)
            self.thermal_samples.append((s.reading_time_s(TelemetryField.ROOM_TEMP_C)[ac],
                                         s.room_temp_c[ac].copy(), s.outdoor_temp_c[ac].copy(),
                                         s.power_kw[ac].copy()))  # fmt: skip
            while (self.thermal_samples
                   and self._snapshot_times[0] < now_s - THERMAL_KEEP_S):  # fmt: skip
                self._snapshot_times.pop(0)
                self.thermal_samples.pop(0)

    def check_alerts(self) -> None:
        """Certificates near expiry, then :meth:`check_gateways`."""
        self._last_cert_check_s = self.clock.timestamp()
        if self._certificates is not None:
            records = [(c.serial, c.subject, c.gateway_id, c.not_before, c.not_after, c.revoked,
                        c.renewed_by) for c in self._certificates.certificates()]  # fmt: skip
            self.alerts.certificates(expiring(
                records, self.clock.now(), timedelta(days=self.alert_settings.cert_warn_days)))
        self.check_gateways()

    def check_gateways(self) -> None:
        """Gateways back online (their silent/offline alerts cleared), and the revoked
        gateways whose telemetry the state feed ignores."""
        self._last_gateway_check_s = self.clock.timestamp()
        self.alerts.gateways_back()
        self._revoked = {g.gateway_id for g in self.registry.gateways()
                         if g.status is GatewayStatus.REVOKED}  # fmt: skip

    async def _measure_lag(self, link: RaLink) -> None:
        """The ingest's backlog: what the shared durable consumers have not yet had
        acknowledged (pending delivery, or delivered and not yet stored)."""
        now_s = self.clock.timestamp()
        if now_s - self._last_lag_s < CHECK_GATEWAYS_EVERY_S:
            return
        self._last_lag_s = now_s
        for stream, durable in INGEST_DURABLES:
            try:
                info = await link.js.consumer_info(stream.value, durable)
            except (NatsError, TimeoutError) as exc:  # a figure is not worth stopping the RA
                log.debug("no consumer info for %s: %s", durable, exc)
                continue
            self.ingest_pending[durable] = int(info.num_pending or 0) + int(
                info.num_ack_pending or 0)

    # -- running ----------------------------------------------------------------------------
    async def connect(self) -> RaLink:
        link = await connect_link(self.home, self.clock)
        self._link = link
        self.fanout = Fanout(link, self.signer, self.clock)
        return link

    async def run(self, stop: asyncio.Event, *, ready: asyncio.Event | None = None) -> None:
        """Run until ``stop`` is set: ingest, acknowledgements and the tick."""
        link = await self.connect()
        try:
            consumers = await ingest_consumers(link)
            acks = await link.consumer(Stream.ACKS, "ra-fanout")
            feed = await state_feed(link)
            # the state comes from the feed, which sees every message; this ingest stores
            # its share (all of them, unless --worker processes share the consumers)
            ingest = self.ingest = Ingest(
                self.store, consumers, clock=self.clock, fetch_timeout_s=0.3,
                silent_after_s=self.alert_settings.silent_after_s)  # fmt: skip
            self.check_alerts()
            if ready is not None:
                ready.set()

            async def state_loop() -> None:
                nonlocal feed
                while not stop.is_set():
                    try:
                        self.apply_telemetry(d.message for d in await feed.fetch(1000, 0.5))
                    except NatsError as exc:
                        # an ephemeral consumer does not outlive a long disconnection: the
                        # feed starts again (newest message of each gateway, then new ones)
                        log.warning("telemetry feed lost (%s); opening it again", exc)
                        await asyncio.sleep(1.0)
                        with contextlib.suppress(NatsError, TimeoutError):
                            feed = await state_feed(link)

            async def hello_loop() -> None:
                hellos = await hello_feed(link)
                while not stop.is_set():
                    try:
                        messages = [d.message for d in await hellos.fetch(100, 0.5)]
                    except NatsError as exc:
                        log.warning("hello feed lost (%s); opening it again", exc)
                        await asyncio.sleep(1.0)
                        with contextlib.suppress(NatsError, TimeoutError):
                            hellos = await hello_feed(link)
                        continue
                    await self.answer_hellos(messages)

            async def ack_loop() -> None:
                while not stop.is_set():
                    for delivery in await acks.fetch(500, 0.5):
                        await delivery.ack()
                        if isinstance(delivery.message, Acknowledgement) and self.fanout:
                            self.fanout.acknowledged(delivery.message)

            async def tick_loop() -> None:
                while not stop.is_set():
                    await self.tick()
                    await self._measure_lag(link)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)

            loops = [ingest.run(stop), ack_loop(), tick_loop(), state_loop()]
            if self.push_allow_lists:
                loops.append(hello_loop())
            await asyncio.gather(*loops)
        finally:
            await link.close()
            self._link = None
