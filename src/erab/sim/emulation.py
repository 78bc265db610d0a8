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
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, Town, TownServer
from erab.devices.server import site_addresses
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

    async def start(self, progress: StageProgress | None = None) -> None:
        """Bind every site's node (progress stage "nodes")."""
        await self.server.start(
            None if progress is None else lambda done, total: progress("nodes", done, total)
        )

    def summary(self) -> dict[str, object]:
        """Where the simulated clock stopped and the energy the town's meters counted."""
        return {
            "stopped": datetime.fromtimestamp(self.town.time_s, JST).isoformat(),
            "sites": self.town.n_sites,
            "import_kwh": round(float(self.meters.import_wh.sum()) / 1000.0, 3),
            "export_kwh": round(float(self.meters.export_wh.sum()) / 1000.0, 3),
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
    progress: StageProgress | None = None,
) -> Emulation:
    """Build the town at ``start`` (aware) with ``history_days`` (0-99) of meter history
    behind it, computed from the town's own physics; raises ValueError on bad input."""
    if not 0 <= history_days <= 99:
        raise ValueError(
            f"history_days must be 0-99 (meter day selection 0xE5), got {history_days}"
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
    )
    return Emulation(scenario, clock, town, meters, server)
