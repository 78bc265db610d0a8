"""Exactly-once records from at-least-once delivery: drop repeats by (gateway, sequence).

MQTT QoS 1 and JetStream both deliver at least once: after a lost acknowledgement the same
message comes again.  Every uplink message carries its gateway's sequence number, unique per
gateway over all kinds, so the pair identifies it.  :class:`SequenceDedup` remembers, per
gateway, a *floor* (every sequence at or below it has been seen, or is too old to matter) and
the set of sequences seen above it; the set is compacted as gaps fill and bounded by
``window`` (the oldest are given up first).  Pure and in memory; :meth:`snapshot` and
:meth:`restore` let the owner persist it beside its records.

One instance per consumer process.  Several workers that share one durable consumer each
see a message's redelivery possibly on another worker, so there the store's unique key
``(gateway_id, seq)`` is the final word (docs/bus.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _GatewayWindow:
    floor: int = 0  # sequence numbers start at 1 (as erab's counters do)
    above: set[int] = field(default_factory=set)


class SequenceDedup:
    """``admit(gateway_id, seq)`` is True the first time a pair is seen, False afterwards."""

    def __init__(self, window: int = 65_536) -> None:
        if window < 1:
            raise ValueError(f"dedup window must be at least 1, got {window}")
        self.window = window
        self._gateways: dict[str, _GatewayWindow] = {}
        self.duplicates = 0

    def admit(self, gateway_id: str, seq: int) -> bool:
        state = self._gateways.setdefault(gateway_id, _GatewayWindow())
        if seq <= state.floor or seq in state.above:
            self.duplicates += 1
            return False
        state.above.add(seq)
        while state.floor + 1 in state.above:
            state.floor += 1
            state.above.remove(state.floor)
        while len(state.above) > self.window:
            # Give up waiting for the oldest gap: everything up to the oldest seen is done.
            oldest = min(state.above)
            state.above.remove(oldest)
            state.floor = oldest
            while state.floor + 1 in state.above:
                state.floor += 1
                state.above.remove(state.floor)
        return True

    def seen(self, gateway_id: str, seq: int) -> bool:
        """Whether ``admit`` would refuse this pair now (no state change)."""
        state = self._gateways.get(gateway_id)
        return state is not None and (seq <= state.floor or seq in state.above)

    def snapshot(self) -> dict[str, list[int]]:
        """Per gateway ``[floor, *sequences seen above it]`` (JSON-ready)."""
        return {gw: [s.floor, *sorted(s.above)] for gw, s in self._gateways.items()}

    def restore(self, snapshot: dict[str, list[int]]) -> None:
        for gateway_id, numbers in snapshot.items():
            if not numbers:
                raise ValueError(f"dedup snapshot of {gateway_id!r} has no floor")
            self._gateways[gateway_id] = _GatewayWindow(numbers[0], set(numbers[1:]))
