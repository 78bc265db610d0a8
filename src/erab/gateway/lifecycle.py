"""A command's life at the gateway, as one table.

    received ──verified──► verified ──in_envelope──► scheduled ──set──► applied
        │                     │                        │  │               │
        └─rejected─► rejected └─out_of_envelope─► refused ◄─device_silent  ├─window_end─┐
                                                   ▲   └─cancelled─► restored ◄─cancel──┤
                                                   │                      ▲─uplink_lost─┘

Any other transition is a bug and raises :class:`LifecycleError`; each one taken is recorded
(the executor writes it to the site's audit log).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Stage(StrEnum):
    RECEIVED = "received"
    VERIFIED = "verified"
    REJECTED = "rejected"  # the envelope failed verification (signature, replay, expiry...)
    SCHEDULED = "scheduled"  # inside the safety envelope, waiting for its start
    REFUSED = "refused"  # outside the envelope, or the device did not take it
    APPLIED = "applied"  # set and read back
    RESTORED = "restored"  # the device is back in its previous state


class Trigger(StrEnum):
    VERIFIED = "verified"
    REJECTED = "rejected"
    IN_ENVELOPE = "in_envelope"
    OUT_OF_ENVELOPE = "out_of_envelope"
    SET = "set"
    DEVICE_SILENT = "device_silent"
    CANCELLED = "cancelled"  # before anything was set
    WINDOW_END = "window_end"
    CANCEL = "cancel"
    UPLINK_LOST = "uplink_lost"  # fail-safe: the RA has been unreachable past the grace


TRANSITIONS: dict[tuple[Stage, Trigger], Stage] = {
    (Stage.RECEIVED, Trigger.VERIFIED): Stage.VERIFIED,
    (Stage.RECEIVED, Trigger.REJECTED): Stage.REJECTED,
    (Stage.VERIFIED, Trigger.IN_ENVELOPE): Stage.SCHEDULED,
    (Stage.VERIFIED, Trigger.OUT_OF_ENVELOPE): Stage.REFUSED,
    (Stage.SCHEDULED, Trigger.SET): Stage.APPLIED,
    (Stage.SCHEDULED, Trigger.DEVICE_SILENT): Stage.REFUSED,
    (Stage.SCHEDULED, Trigger.CANCELLED): Stage.RESTORED,
    (Stage.APPLIED, Trigger.WINDOW_END): Stage.RESTORED,
    (Stage.APPLIED, Trigger.CANCEL): Stage.RESTORED,
    (Stage.APPLIED, Trigger.UPLINK_LOST): Stage.RESTORED,
}


class LifecycleError(RuntimeError):
    """A transition the table does not have."""


@dataclass
class CommandLife:
    """One command's stage and the transitions it took (time, trigger, new stage)."""

    command_seq: int
    stage: Stage = Stage.RECEIVED
    history: list[tuple[datetime, Trigger, Stage]] = field(default_factory=list)

    def advance(self, trigger: Trigger, when: datetime) -> Stage:
        nxt = TRANSITIONS.get((self.stage, trigger))
        if nxt is None:
            raise LifecycleError(
                f"command {self.command_seq}: no transition from {self.stage} on {trigger}"
            )
        self.stage = nxt
        self.history.append((when, trigger, nxt))
        return nxt
