"""The closed loop: delivered kW against the target, and the correction to make.

During an event the RA compares, every minute, what the fleet delivers with what was asked
(ARCHITECTURE.md: "the RA plans kW per 30-minute slot and corrects every minute from
telemetry").  Until baselines land (issue 12) the reference is the fleet's level just before
dispatch.  A pure function; the service acts on its answer (more resources from the reserve,
or fewer commands in force).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TOLERANCE = 0.10  # hold delivery within ±10 % of the target (issue 11)


@dataclass(frozen=True)
class DeliveryCheck:
    """``delivered_kw`` ≥ 0 in the event's direction; ``adjust_kw`` > 0: call this much more,
    < 0: release this much, 0: inside the band."""

    target_kw: float  # signed, as the event: < 0 down, > 0 up
    reference_kw: float  # the fleet's level before dispatch
    now_kw: float
    delivered_kw: float
    adjust_kw: float

    @property
    def ratio(self) -> float:
        return self.delivered_kw / abs(self.target_kw) if self.target_kw else 0.0


def check_delivery(
    target_kw: float, reference_kw: float, now_kw: float, *, tolerance: float = DEFAULT_TOLERANCE
) -> DeliveryCheck:
    """How far the fleet's power ``now_kw`` has moved from ``reference_kw`` in the direction of
    ``target_kw``, and the correction that brings it back to the target when it is outside
    ±``tolerance`` of it."""
    if not target_kw:
        raise ValueError("an event's target must be non-zero")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    want = abs(target_kw)
    delivered = (reference_kw - now_kw) if target_kw < 0 else (now_kw - reference_kw)
    adjust = 0.0
    if abs(delivered - want) > tolerance * want:
        adjust = want - delivered
    return DeliveryCheck(target_kw, reference_kw, now_kw, delivered, adjust)
