"""Uplink ingest: from the RA's JetStream durable consumers into the store, in batches.

Per batch: fetch from each consumer (``UplinkConsumer.fetch`` has already checked every
payload and counted rejections by reason in its decoder: a gateway's message naming another
gateway in its body is refused there, so it never touches that gateway's rows), turn the
messages into one :class:`~erab.store.UplinkBatch` (:func:`to_batch`, pure), write it in one
transaction (the store drops any (gateway, seq) it already holds: exactly-once rows under
redelivery, several workers and RA restarts), and only then acknowledge the JetStream
messages.  A crash between commit and acknowledgement makes JetStream deliver again, and the
store's dedup key turns that into nothing.

Readings out of range (a percentage outside 0-100, a temperature outside -50-80 °C, a
power beyond 1 MW for one device) are stored flagged, for inspection, and not handed on as
truth.  Gateways silent past ``silent_after_s`` are marked offline with an alert.
An optional ``on_readings`` hook receives each committed batch's readings as numpy arrays
(:class:`CommittedReadings`) for the live fleet state.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from erab.bus.ra import Delivery, UplinkConsumer
from erab.bus.schema import (
    Acknowledgement,
    Heartbeat,
    Hello,
    MeterReading,
    Offline,
    State,
    TelemetryBatch,
    UplinkMessage,
    kind_of,
)
from erab.clock import Clock, RealClock
from erab.store import AggregatorStore, AllowEntry, ProposedDevice, UplinkBatch

# Plausible range by the unit a point name ends with (schema.py: names carry their unit).
UNIT_LIMITS: dict[str, tuple[float, float]] = {
    "_pct": (0.0, 100.0),
    "_c": (-50.0, 80.0),
    "_w": (-1.0e6, 1.0e6),
    "_kwh": (0.0, 1.0e7),
    "_wh": (0.0, 1.0e10),
}


@dataclass(frozen=True)
class CommittedReadings:
    """Readings of one committed batch, as columns (flagged readings left out).

    ``resource_key`` is the store's compact key of each resource
    (``store.resource_keys()`` maps ids to keys); ``point`` indexes ``point_names``.
    """

    resource_key: npt.NDArray[np.int64]
    point: npt.NDArray[np.int64]
    value: npt.NDArray[np.float64]
    measured_at_s: npt.NDArray[np.float64]
    point_names: tuple[str, ...]


ReadingsHook = Callable[[CommittedReadings], None]


@dataclass
class IngestStats:
    """Counters since the ingest started."""

    batches: int = 0
    messages: int = 0  # stored (new to the store)
    duplicates: int = 0  # redeliveries dropped
    readings: int = 0  # telemetry rows written (flagged ones included)
    flagged: int = 0
    unknown_devices: int = 0  # samples naming no resource of their gateway
    refused: Counter[str] = field(default_factory=Counter)  # unknown/revoked gateway
    offline_marked: int = 0  # gateways marked offline for silence
    allow_lists: dict[str, list[AllowEntry]] = field(default_factory=dict)


class _Limits:
    """Per point name, its plausible range (cached: a fleet has few point names)."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, float] | None] = {}

    def range_of(self, point: str) -> tuple[float, float] | None:
        try:
            return self._cache[point]
        except KeyError:
            found = next((r for unit, r in UNIT_LIMITS.items() if point.endswith(unit)), None)
            self._cache[point] = found
            return found

    def flagged(self, values: Mapping[str, float]) -> frozenset[str]:
        bad: list[str] | None = None
        for point, value in values.items():
            limits = self.range_of(point)
            if not math.isfinite(value) or (
                limits is not None and not limits[0] <= value <= limits[1]
            ):
                bad = [point] if bad is None else [*bad, point]
        return _NONE if bad is None else frozenset(bad)


_NONE: frozenset[str] = frozenset()
_LIMITS = _Limits()


def to_batch(messages: Iterable[UplinkMessage]) -> UplinkBatch:
    """One store batch from decoded, checked uplink messages (pure)."""
    batch = UplinkBatch()
    flagged = _LIMITS.flagged
    for i, m in enumerate(messages):
        batch.messages.append((m.gateway_id, m.seq, kind_of(m).value, int(m.sent_at.timestamp())))
        if isinstance(m, TelemetryBatch):
            batch.samples.extend(
                (i, s.device_id, int(s.measured_at.timestamp()), s.values, flagged(s.values))
                for s in m.samples
            )
        elif isinstance(m, MeterReading):
            batch.meter.append(
                (
                    i,
                    m.meter_id,
                    int(m.measured_at.timestamp()),
                    m.power_w,
                    m.import_kwh,
                    m.export_kwh,
                )
            )
        elif isinstance(m, State):
            batch.states.extend(
                (
                    i,
                    d.device_id,
                    int(d.measured_at.timestamp()),
                    d.online,
                    d.operating,
                    d.mode,
                    d.controlled,
                )
                for d in m.devices
            )
        elif isinstance(m, Hello):
            devices = [
                ProposedDevice(d.device_id, d.node_id, d.eoj, d.rated_power_w, d.name)
                for d in m.devices
            ]
            batch.hellos.append((i, m.site_id, devices))
        elif isinstance(m, Acknowledgement):
            outcomes: list[tuple[str, str, str | None, Mapping[str, float], int | None]] = [
                (
                    o.device_id,
                    o.outcome,
                    o.reason,
                    o.readback,
                    None if o.measured_at is None else int(o.measured_at.timestamp()),
                )
                for o in m.outcomes
            ]
            batch.acks.append(
                (i, m.command_seq, int(m.received_at.timestamp()), m.rejected, outcomes)
            )
        elif isinstance(m, Offline):
            batch.offline.append((i, m.reason))
        else:
            assert isinstance(m, Heartbeat)  # liveness only: its seq and sent_at are enough
    return batch


def readings_arrays(rows: Sequence[tuple[int, str, float, int]]) -> CommittedReadings:
    """Columns of committed rows ``(resource_key, point, value, measured_at_s)``."""
    names: dict[str, int] = {}
    points = [names.setdefault(p, len(names)) for _, p, _, _ in rows]
    return CommittedReadings(
        resource_key=np.fromiter((r[0] for r in rows), np.int64, len(rows)),
        point=np.asarray(points, dtype=np.int64),
        value=np.fromiter((r[2] for r in rows), np.float64, len(rows)),
        measured_at_s=np.fromiter((r[3] for r in rows), np.float64, len(rows)),
        point_names=tuple(names),
    )


class Ingest:
    """One ingest worker: consumers in, store out.  Several workers (processes) may share
    the same durable consumers and store."""

    def __init__(
        self,
        store: AggregatorStore,
        consumers: Sequence[UplinkConsumer],
        *,
        clock: Clock | None = None,
        batch_size: int = 500,
        fetch_timeout_s: float = 0.5,
        silent_after_s: float = 300.0,
        on_readings: ReadingsHook | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"ingest batch size must be at least 1, got {batch_size}")
        if silent_after_s <= 0:
            raise ValueError(f"silent_after_s must be positive, got {silent_after_s}")
        self.store = store
        self.consumers = list(consumers)
        self.clock = clock or RealClock()
        self.batch_size = batch_size
        self.fetch_timeout_s = fetch_timeout_s
        self.silent_after = timedelta(seconds=silent_after_s)
        self.on_readings = on_readings
        self.stats = IngestStats()

    @property
    def rejected(self) -> Counter[str]:
        """Payloads refused by the decoders, by reason (``oversized``, ``wrong_gateway``...)."""
        total: Counter[str] = Counter()
        for c in self.consumers:
            total.update({reason.value: n for reason, n in c.decoder.rejected.items()})
        return total

    async def fetch(self) -> list[Delivery]:
        got: list[Delivery] = []
        for consumer in self.consumers:
            try:
                got += await consumer.fetch(self.batch_size, timeout=self.fetch_timeout_s)
            except TimeoutError:
                # nats-py sometimes ends an empty pull with a plain asyncio timeout, which
                # UplinkConsumer.fetch does not turn into "nothing yet": the same here
                continue
        return got

    def store_batch(self, deliveries: Sequence[Delivery]) -> int:
        """Write one batch (one transaction); returns the messages new to the store."""
        fresh = [d.message for d in deliveries if not d.duplicate]
        self.stats.duplicates += len(deliveries) - len(fresh)
        if not fresh:
            return 0
        batch = to_batch(fresh)
        outcome = self.store.write_uplink_batch(batch, self.clock.now())
        s = self.stats
        s.batches += 1
        s.messages += outcome.stored
        s.duplicates += outcome.duplicates
        s.readings += outcome.readings
        s.flagged += outcome.readings - len(outcome.rows)  # rows for the hook leave them out
        s.unknown_devices += outcome.unknown_devices
        s.refused.update(outcome.refused)
        s.allow_lists.update(outcome.allow_lists)
        if self.on_readings is not None and outcome.rows:
            self.on_readings(readings_arrays(outcome.rows))
        return outcome.stored

    async def step(self) -> int:
        """Fetch, store in one transaction, then acknowledge; returns messages fetched."""
        deliveries = await self.fetch()
        if deliveries:
            self.store_batch(deliveries)  # raises before any ack if the write fails
            for d in deliveries:
                await d.ack()
        return len(deliveries)

    def check_silence(self) -> list[str]:
        """Mark online gateways silent for longer than ``silent_after_s`` offline."""
        now = self.clock.now()
        silent = self.store.mark_silent_gateways(now - self.silent_after, now)
        self.stats.offline_marked += len(silent)
        return silent

    async def run(self, stop: asyncio.Event, *, silence_every_s: float = 10.0) -> None:
        """Ingest until ``stop`` is set; check for silent gateways every ``silence_every_s``."""
        loop = asyncio.get_running_loop()
        next_check = loop.time()
        while not stop.is_set():
            await self.step()
            if loop.time() >= next_check:
                self.check_silence()
                next_check = loop.time() + silence_every_s
