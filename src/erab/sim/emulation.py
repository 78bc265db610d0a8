"""A town ready to serve: physics, smart meters with their past, and the nodes serving them.

:func:`build_emulation` is what ``erab emulate`` runs before it binds sockets: it starts the
town's physics ``history_days`` before ``start`` (at midnight JST), runs it at 30-minute
steps up to the newest 30-minute point, loads the resulting per-slot import and export into
the sites' smart meters in one vectorised pass, then follows the physics minute by minute
to ``start`` and wires each site's node (its appliances plus its meter, 0x028801).

:func:`check_site_addresses` tells, in a moment, whether every site's address and port can
be bound: run it before :func:`build_emulation`, whose history takes seconds to compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, Town, TownServer
from erab.devices.server import ANNOUNCE_EVERY_S, site_addresses
from erab.echonet.transport import TransportError, check_bindable
from erab.meter.smartmeter import HISTORY_DAYS, SLOT_S, MeterFleet, SmartMeter

StageProgress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages are "history" (30-minute slots) and "nodes"."""

_DAY_S = 86_400
_JST_OFFSET_S = 9 * 3600
_LIVE_STEP_S = 60.0
"""Longest physics step once live (the meters' one-minute points need no finer)."""


@dataclass
class Emulation:
    """A town at its start time: physics, meters and the (not yet bound) nodes."""

    scenario: Scenario
    clock: SimulatedClock
    town: Town
    meters: MeterFleet
    server: TownServer
    run_start_s: float = field(init=False)
    """Simulated time the run starts from (the start time; history lies before it)."""
    _run_start_import_wh: np.ndarray = field(init=False, repr=False)
    _run_start_export_wh: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_start_s = self.town.time_s
        self._run_start_import_wh = self.meters.import_wh.copy()
        self._run_start_export_wh = self.meters.export_wh.copy()

    async def start(self, progress: StageProgress | None = None) -> None:
        """Bind every site's node (progress stage "nodes")."""
        await self.server.start(
            None if progress is None else lambda done, total: progress("nodes", done, total)
        )

    def run_energy_wh(self) -> tuple[np.ndarray, np.ndarray]:
        """Energy each site's meter counted since the start (import, export; Wh per site),
        the history before it left out."""
        return (
            self.meters.import_wh - self._run_start_import_wh,
            self.meters.export_wh - self._run_start_export_wh,
        )

    def summary(self) -> dict[str, object]:
        """Where the simulated clock stopped, how long the run lasted and the energy of the
        run over all sites (``import_kwh``, ``export_kwh``); ``register_import_kwh`` and
        ``register_export_kwh`` are the meters' totals at the stop (their reading before the
        start, the generated history and the run)."""
        imported_wh, exported_wh = self.run_energy_wh()
        return {
            "started": datetime.fromtimestamp(self.run_start_s, JST).isoformat(),
            "stopped": datetime.fromtimestamp(self.town.time_s, JST).isoformat(),
            "simulated_s": round(self.town.time_s - self.run_start_s, 3),
            "sites": self.town.n_sites,
            "import_kwh": round(float(imported_wh.sum()) / 1000.0, 6),
            "export_kwh": round(float(exported_wh.sum()) / 1000.0, 6),
            "register_import_kwh": round(float(self.meters.import_wh.sum()) / 1000.0, 3),
            "register_export_kwh": round(float(self.meters.export_wh.sum()) / 1000.0, 3),
        }


def check_site_addresses(scenario: Scenario, *, base: str = "127.1.0.1", port: int = 3610) -> None:
    """Check that every site's node could bind its address (``base`` counting up) and
    ``port`` now; raise :class:`~erab.echonet.transport.TransportError` naming the first
    site that could not and why (``address_in_use`` for a taken address), or ValueError for
    a bad ``base``."""
    for spec, address in zip(
        scenario.sites, site_addresses(base, len(scenario.sites)), strict=True
    ):
        try:
            check_bindable(address, port)
        except TransportError as exc:
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            raise TransportError(
                f"cannot serve site {spec.name} on {address}:{port}: {cause.strerror or cause}",
                errno=exc.errno,
            ) from exc


def build_emulation(
    scenario: Scenario,
    start: datetime,
    *,
    speed: float = 1.0,
    history_days: int = HISTORY_DAYS,
    base: str = "127.1.0.1",
    port: int = 3610,
    interface: str | None = None,
    tick_s: float = 1.0,
    announce_every_s: float = ANNOUNCE_EVERY_S,
    progress: StageProgress | None = None,
) -> Emulation:
    """Build the town at ``start`` (aware) with ``history_days`` (0-99) of meter history
    behind it, computed from the town's own physics; every site announces its values each
    ``announce_every_s`` simulated seconds (0: on status change only).  Raises ValueError
    on bad input."""
    if not 0 <= history_days <= 99:
        raise ValueError(
            f"history_days must be 0-99 (meter day selection 0xE5), got {history_days}"
        )
    if not announce_every_s >= 0 or announce_every_s == float("inf"):
        raise ValueError(
            f"the announcement cycle must be >= 0 s (0 turns it off), got {announce_every_s}"
        )
    if start.tzinfo is None:
        raise ValueError(f"the start time must carry a time zone, got {start.isoformat()}")
    start_s = start.timestamp()
    midnight_s = (start_s + _JST_OFFSET_S) // _DAY_S * _DAY_S - _JST_OFFSET_S
    origin = datetime.fromtimestamp(midnight_s - history_days * _DAY_S, JST)
    town = Town(scenario, origin, max_step_s=float(SLOT_S))
    # Meters in service for years: a starting register between 0 and 20,000 kWh.
    rng = np.random.default_rng([scenario.seed & 0xFFFFFFFF, 31])
    meters = MeterFleet(
        town.n_sites,
        origin,
        initial_import_kwh=rng.uniform(0.0, 20_000.0, town.n_sites),
        capacity_days=max(history_days, HISTORY_DAYS) + 2,
    )
    origin_s = origin.timestamp()
    newest_point_s = origin_s + (start_s - origin_s) // SLOT_S * SLOT_S

    def report(done: int, total: int) -> None:
        if progress is not None:
            progress("history", done, total)

    net_w = town.simulate(newest_point_s, SLOT_S, progress=report)
    hours = SLOT_S / 3600.0
    meters.load_history(net_w.clip(min=0) * hours, (-net_w).clip(min=0) * hours)
    # From the newest point on, the meters follow the physics live.
    town.max_step_s = _LIVE_STEP_S
    town.observers.append(meters.observe)
    town.advance_to(start_s)
    clock = SimulatedClock(start, speed=speed)
    server = TownServer(
        town,
        clock,
        base=base,
        port=port,
        interface=interface,
        tick_s=tick_s,
        extra_objects=lambda site: [SmartMeter(meters, site)],
        announce_every_s=announce_every_s,
    )
    return Emulation(scenario, clock, town, meters, server)
