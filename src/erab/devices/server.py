"""Serve a town on the network: one ECHONET Lite node per site, each at its own address.

:class:`TownServer` builds a :class:`~erab.echonet.node.LocalNode` per site holding the
site's device objects (plus any extra objects, e.g. the site's smart meter, given by the
caller), starts them on consecutive loopback addresses from ``base`` (127.1.0.1,
127.1.0.2, …; all of 127/8 is the loopback interface on Linux), and then advances the
town to the clock's time every tick, pushing announced properties so changes go out as
INF.  Multicast stays on the loopback interface unless an interface is named.

Besides announcing status changes, every site announces its objects' power (and a
battery's state of charge, the meter's instantaneous power 0xE7) once per announcement
cycle of simulated time, as real devices notify their values periodically; each site has
its own phase in the cycle, so a thousand sites do not all send in the same instant.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from erab.clock import Clock
from erab.devices.objects import ANNOUNCE_STATE, FleetObject, periodic_epcs, site_objects
from erab.devices.town import Town
from erab.echonet.node import ECHONET_PORT, DeviceObject, LocalNode

ExtraObjects = Callable[[int], Sequence[DeviceObject]]
Progress = Callable[[int, int], None]

ANNOUNCE_EVERY_S = 60.0
"""Default announcement cycle, seconds of simulated time (0 turns periodic INF off)."""


@dataclass(frozen=True)
class SiteEndpoint:
    """Where a site is served and what it offers."""

    name: str
    kind: str
    address: str
    port: int
    identification: str
    objects: tuple[str, ...]  # EOJs as "0x013001"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "address": self.address,
            "port": self.port,
            "identification": self.identification,
            "objects": list(self.objects),
        }


def site_addresses(base: str, count: int) -> list[str]:
    """``count`` consecutive IPv4 addresses from ``base`` (checked to stay valid)."""
    try:
        first = ipaddress.IPv4Address(base)
    except ipaddress.AddressValueError as exc:
        raise ValueError(f"base address {base!r} is not an IPv4 address: {exc}") from exc
    last = int(first) + count - 1
    if count and (
        last > int(ipaddress.IPv4Address("255.255.255.254"))
        or (first.is_loopback and not ipaddress.IPv4Address(last).is_loopback)
    ):
        raise ValueError(
            f"{count} sites from {base} run past the end of the address range; "
            f"use a lower base such as 127.1.0.1"
        )
    return [str(ipaddress.IPv4Address(int(first) + k)) for k in range(count)]


def ensure_open_files(needed: int) -> None:
    """Raise this process's open-file limit to ``needed`` if the hard limit allows (one
    socket per node); refuse with what to do otherwise."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise OSError(
            f"serving needs about {needed} open sockets but this process may open only "
            f"{hard}; raise the limit (ulimit -n) or emulate fewer sites"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


class TownServer:
    """Serve every site of ``town`` and keep its physics in step with ``clock``.

    ``extra_objects(site)`` adds objects to a site's node (the meter layer passes the
    site's :class:`~erab.meter.smartmeter.SmartMeter`).  ``tick_s`` is real seconds
    between physics updates.  ``announce_every_s`` is the announcement cycle in simulated
    seconds (0: announce status changes only); site ``i`` announces at
    ``announce_phase_s[i]`` into each cycle (spread from the seed and the site's name), at
    most once per tick.
    """

    def __init__(
        self,
        town: Town,
        clock: Clock,
        *,
        base: str = "127.1.0.1",
        port: int = ECHONET_PORT,
        interface: str | None = None,
        tick_s: float = 1.0,
        extra_objects: ExtraObjects | None = None,
        announce_every_s: float = ANNOUNCE_EVERY_S,
    ) -> None:
        if not np.isfinite(announce_every_s) or announce_every_s < 0:
            raise ValueError(
                f"the announcement cycle must be >= 0 s (0 turns it off), got {announce_every_s}"
            )
        self.town = town
        self.clock = clock
        self.port = port
        self.interface = interface
        self.tick_s = tick_s
        self.addresses = site_addresses(base, town.n_sites)
        self.nodes: list[LocalNode] = []
        self.live_objects: list[FleetObject] = []
        self._by_kind: dict[str, dict[int, FleetObject]] = {}
        seed = town.scenario.seed
        for i, spec in enumerate(town.sites):
            live = site_objects(town, i)
            for ref, obj in zip(town.devices_of(i), live, strict=True):
                self._by_kind.setdefault(ref.kind, {})[ref.index] = obj
            self.live_objects.extend(live)
            objects: list[DeviceObject] = list(live)
            if extra_objects is not None:
                objects.extend(extra_objects(i))
            # A stable identification (0x83) per site, so controllers recognise it again.
            ident = hashlib.sha256(f"erab-site:{seed}:{spec.name}".encode()).digest()[:13]
            self.nodes.append(LocalNode(objects, identification=ident))
        self._started = 0
        self._snapshots: dict[str, np.ndarray] = {}
        # what each site announces every cycle: (object, EPCs) per object that has any
        self._periodic: list[list[tuple[DeviceObject, tuple[int, ...]]]] = [
            [(o, epcs) for o in node.objects if (epcs := periodic_epcs(o))] for node in self.nodes
        ]
        fractions = [
            int.from_bytes(
                hashlib.sha256(f"erab-announce:{seed}:{spec.name}".encode()).digest()[:8], "big"
            )
            / 2.0**64
            for spec in town.sites
        ]
        self._phase_fraction = np.asarray(fractions, dtype=np.float64)
        self.announce_every_s = float(announce_every_s)
        self._next_announce_s = self._first_announcements(town.time_s)

    @property
    def announce_phase_s(self) -> np.ndarray:
        """Where in each announcement cycle every site announces (s after a multiple of the
        cycle, in POSIX time)."""
        return self._phase_fraction * self.announce_every_s

    def _first_announcements(self, now_s: float) -> np.ndarray:
        every = self.announce_every_s
        if every <= 0:
            return np.full(self.town.n_sites, np.inf)
        phase = self.announce_phase_s
        return phase + np.ceil((now_s - phase) / every) * every

    def endpoints(self) -> list[SiteEndpoint]:
        return [
            SiteEndpoint(
                name=spec.name,
                kind=spec.kind,
                address=self.addresses[i],
                port=self.port,
                identification=node.identification.hex(),
                objects=tuple(
                    f"0x{o.eoj.class_code:04X}{o.eoj.instance:02X}" for o in node.objects
                ),
            )
            for i, (spec, node) in enumerate(zip(self.town.sites, self.nodes, strict=True))
        ]

    async def start(self, progress: Progress | None = None) -> None:
        """Bind every site's node (reporting ``progress(done, total)``)."""
        total = len(self.nodes)
        ensure_open_files(total + 64)
        try:
            for i, node in enumerate(self.nodes):
                await node.start(self.addresses[i], port=self.port, interface=self.interface)
                self._started = i + 1
                if progress is not None:
                    progress(i + 1, total)
        except OSError as exc:
            failed = self._started  # close() resets the count
            await self.close()
            # the socket's own reason (e.g. "Address already in use"), not the transport's
            # advice for a single node
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            raise OSError(
                f"cannot serve site {self.town.sites[failed].name} on "
                f"{self.addresses[failed]}:{self.port}: {cause.strerror or cause}"
            ) from exc

    def tick(self) -> int:
        """Advance the town to the clock's time and announce what changed; the step count."""
        steps = self.town.advance_to(self.clock.timestamp())
        if steps:
            self.announce_changes()
            self.announce_periodic()
        return steps

    def announce_periodic(self) -> int:
        """Announce the values of every started site whose moment in the announcement cycle
        has come (ECHONET Lite INF to all nodes, one frame per object); how many sites
        announced.  A site that missed several cycles (a long tick) announces once."""
        now = self.town.time_s
        due = np.flatnonzero(self._next_announce_s[: self._started] <= now + 1e-6)
        if not len(due):
            return 0
        for site in due.tolist():
            node = self.nodes[site]
            for obj, epcs in self._periodic[site]:
                node.announce(obj, epcs)
        every = self.announce_every_s
        phase = self.announce_phase_s[due]
        self._next_announce_s[due] = phase + (np.floor((now + 1e-6 - phase) / every) + 1) * every
        return len(due)

    def announce_changes(self) -> int:
        """Push announced properties of units whose state changed; how many were pushed."""
        pushed = 0
        for kind, objects in self._by_kind.items():
            arrays = ANNOUNCE_STATE[kind](self.town)
            if not arrays:
                continue
            state = np.column_stack([np.asarray(a, dtype=np.float64) for a in arrays])
            before = self._snapshots.get(kind)
            changed = (
                np.arange(len(state))
                if before is None or before.shape != state.shape
                else np.flatnonzero(np.any(state != before, axis=1))
            )
            self._snapshots[kind] = state
            for index in changed.tolist():
                obj = objects.get(index)
                if obj is not None:
                    obj.refresh()
                    pushed += 1
        return pushed

    async def run(self, duration_s: float | None = None) -> None:
        """Tick every ``tick_s`` real seconds, for ``duration_s`` real seconds or forever."""
        loop = asyncio.get_running_loop()
        end = None if duration_s is None else loop.time() + duration_s
        while end is None or loop.time() < end:
            self.tick()
            wait = self.tick_s if end is None else min(self.tick_s, end - loop.time())
            if wait > 0:
                await asyncio.sleep(wait)
        self.tick()

    async def close(self) -> None:
        for node in self.nodes[: self._started]:
            await node.close()
        self._started = 0
