"""Fan-out: one signed envelope per gateway, sent until acknowledged or expired.

A command's life at the RA, as one table::

    signed ──send──► sent ──resend──► sent
                      ├──ack (applied, clipped)──► acknowledged
                      ├──ack (refused, rejected)──► refused
                      └──expire──► expired

A gateway that does not acknowledge is sent the *same* signed envelope again every
``retry_after_s`` until it expires: if the first copy did arrive, the gateway's verifier refuses
the second as a replay and its acknowledgement of the first is what comes back; nothing is
executed twice.  Refused and expired commands are handed back by :meth:`Fanout.tick` so the
dispatcher can call a resource of its reserve list instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from erab.bus import Acknowledgement
from erab.clock import Clock
from erab.security import EnvelopeSigner


class CommandStage(StrEnum):
    SIGNED = "signed"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"  # applied or clipped on every device it named
    REFUSED = "refused"  # the envelope or a device refused it (the ack says why)
    EXPIRED = "expired"  # no acknowledgement before the envelope's expiry


class CommandTrigger(StrEnum):
    SEND = "send"
    RESEND = "resend"
    ACK = "ack"
    REFUSAL = "refusal"
    EXPIRE = "expire"


_S, _T = CommandStage, CommandTrigger
TRANSITIONS: dict[tuple[CommandStage, CommandTrigger], CommandStage] = {
    (_S.SIGNED, _T.SEND): _S.SENT,
    (_S.SENT, _T.RESEND): _S.SENT,
    (_S.SENT, _T.ACK): _S.ACKNOWLEDGED,
    (_S.SENT, _T.REFUSAL): _S.REFUSED,
    (_S.SENT, _T.EXPIRE): _S.EXPIRED,
    (_S.SIGNED, _T.EXPIRE): _S.EXPIRED,
}
FAILED = frozenset({CommandStage.REFUSED, CommandStage.EXPIRED})


class CommandPublisher(Protocol):
    """Where envelopes go (erab.bus.RaLink)."""

    async def send_command(self, gateway_id: str, envelope_wire: bytes) -> None: ...


@dataclass
class RaCommand:
    """One signed envelope to one gateway and what became of it."""

    gateway_id: str
    sequence: int
    body: dict[str, Any]
    wire: bytes
    expires_at: datetime
    event_id: str | None = None
    stage: CommandStage = CommandStage.SIGNED
    attempts: int = 0
    last_sent_at: datetime | None = None
    acknowledged_at: datetime | None = None
    reason: str | None = None  # why refused
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    handed_back: bool = False  # tick() has reported its failure
    history: list[tuple[datetime, CommandTrigger, CommandStage]] = field(default_factory=list)

    def advance(self, trigger: CommandTrigger, when: datetime) -> None:
        nxt = TRANSITIONS.get((self.stage, trigger))
        if nxt is None:
            raise ValueError(
                f"command {self.sequence} to {self.gateway_id} is {self.stage.value}: "
                f"it cannot {trigger.value}"
            )
        self.stage = nxt
        self.history.append((when, trigger, nxt))


class Fanout:
    """Signs, sends, re-sends and matches acknowledgements, for many gateways at once."""

    def __init__(
        self,
        publisher: CommandPublisher,
        signer: EnvelopeSigner,
        clock: Clock,
        *,
        retry_after_s: float = 5.0,
        valid_for: timedelta = timedelta(minutes=5),
    ) -> None:
        if retry_after_s <= 0:
            raise ValueError(f"retry_after_s must be positive, got {retry_after_s}")
        self.publisher = publisher
        self.signer = signer
        self.clock = clock
        self.retry_after = timedelta(seconds=retry_after_s)
        self.valid_for = valid_for
        self.commands: dict[tuple[str, int], RaCommand] = {}
        self.unmatched_acks = 0
        self.replays_seen = 0  # gateways that refused a re-send they already had

    async def send(self, gateway_id: str, body: dict[str, Any], *,
                   event_id: str | None = None) -> RaCommand:  # fmt: skip
        return (await self.send_many([(gateway_id, body)], event_id=event_id))[0]

    async def send_many(self, items: Iterable[tuple[str, dict[str, Any]]], *,
                        event_id: str | None = None) -> list[RaCommand]:  # fmt: skip
        """Sign one envelope per (gateway, body) and publish them all concurrently."""
        made = []
        for gateway_id, body in items:
            wire = self.signer.sign(gateway_id, body, valid_for=self.valid_for)
            fields = json.loads(wire)["envelope"]
            command = RaCommand(
                gateway_id, int(fields["sequence"]), body, wire,
                datetime.fromisoformat(fields["expires_at"].replace("Z", "+00:00")),
                event_id=event_id,
            )  # fmt: skip
            self.commands[(gateway_id, command.sequence)] = command
            made.append(command)
        await asyncio.gather(*(self._publish(c) for c in made))
        return made

    async def _publish(self, command: RaCommand) -> None:
        now = self.clock.now()
        try:
            await self.publisher.send_command(command.gateway_id, command.wire)
        except (OSError, TimeoutError, ConnectionError) as exc:
            # the broker did not take it: stay as we are, the next tick tries again
            command.reason = f"publish failed: {exc}"
            if command.stage is CommandStage.SIGNED:
                return
        command.attempts += 1
        command.last_sent_at = now
        # The stage may have moved while the publish was awaited: another send of the same
        # envelope (the tick re-sends what is still signed), or its acknowledgement.
        if command.stage is CommandStage.SIGNED:
            command.advance(CommandTrigger.SEND, now)
        elif command.stage is CommandStage.SENT:
            command.advance(CommandTrigger.RESEND, now)

    def acknowledged(self, ack: Acknowledgement) -> RaCommand | None:
        """Match a gateway's acknowledgement to its command (None: not one of ours, or a
        repeat of one already matched)."""
        command = self.commands.get((ack.gateway_id, ack.command_seq))
        if command is None or command.stage is not CommandStage.SENT:
            self.unmatched_acks += command is None
            return None
        if ack.rejected == "replayed" and command.attempts > 1:
            # our own re-send reached a gateway that already has the command (it may still be
            # waiting for its randomised start): its acknowledgement of the first is to come
            self.replays_seen += 1
            return None
        refused = [o for o in ack.outcomes if o.outcome in ("refused", "not_answering")]
        command.outcomes = [
            {"device_id": o.device_id, "outcome": o.outcome, "reason": o.reason,
             "readback": dict(o.readback)} for o in ack.outcomes
        ]  # fmt: skip
        command.acknowledged_at = self.clock.now()
        if ack.rejected is not None or refused or not ack.outcomes:
            command.reason = ack.rejected or "; ".join(
                f"{o.device_id}: {o.outcome}" + (f" ({o.reason})" if o.reason else "")
                for o in refused
            ) or "no device acted"
            command.advance(CommandTrigger.REFUSAL, command.acknowledged_at)
        else:
            command.advance(CommandTrigger.ACK, command.acknowledged_at)
        return command

    async def tick(self) -> list[RaCommand]:
        """Re-send what is due and expire what is past its expiry; return the commands that
        ended refused or expired since the last tick (for the reserve)."""
        now = self.clock.now()
        failed, resend = [], []
        for command in self.commands.values():
            if command.stage in (CommandStage.SENT, CommandStage.SIGNED):
                if command.expires_at <= now:
                    command.advance(CommandTrigger.EXPIRE, now)
                elif command.stage is CommandStage.SIGNED or (
                    command.last_sent_at is not None
                    and now - command.last_sent_at >= self.retry_after
                ):
                    resend.append(command)
            if command.stage in FAILED and not command.handed_back:
                failed.append(command)
                command.handed_back = True
        await asyncio.gather(*(self._publish(c) for c in resend))
        return failed

    def summary(self, event_id: str | None = None) -> dict[str, int]:
        """Commands by stage (of one event, or all)."""
        counts = Counter(c.stage.value for c in self.commands.values()
                         if event_id is None or c.event_id == event_id)  # fmt: skip
        return {stage.value: counts.get(stage.value, 0) for stage in CommandStage}


class LeasedSequenceCounter:
    """Envelope sequence numbers from one counter for all gateways, leased in blocks.

    A gateway only needs each envelope's sequence to be above the last it accepted, so one
    increasing counter serves every gateway.  The file keeps the *ceiling* of the block in
    use, written (atomically, synced) before any number of a new block is handed out: after
    a restart the count resumes above it, and no number is ever used twice.  One write per
    ``block`` envelopes, where a file of per-gateway counters rewrote itself for each one
    (10 ms and more per envelope for a thousand gateways).  A file of per-gateway counters
    (:class:`erab.security.FileSequenceCounter`) at ``previous`` seeds the count above all
    of its numbers."""

    def __init__(self, path: Path, *, block: int = 10_000, previous: Path | None = None) -> None:
        if block < 1:
            raise ValueError(f"block must be at least 1, got {block}")
        self.path = Path(path)
        self.block = block
        self._lock = threading.Lock()
        self.writes = 0
        floor = 0
        if previous is not None and previous.is_file():
            old = json.loads(previous.read_text(encoding="utf-8"))
            if not isinstance(old, dict) or not all(isinstance(v, int) for v in old.values()):
                raise ValueError(f"{previous}: expected a JSON object of gateway id -> int")
            floor = max(old.values(), default=0)
        if self.path.is_file():
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not isinstance(raw.get("ceiling"), int):
                raise ValueError(f"{self.path}: expected {{\"ceiling\": <int>}}")
            floor = max(floor, int(raw["ceiling"]))
        self._next = floor + 1
        self._ceiling = floor

    def next(self, gateway_id: str) -> int:
        with self._lock:
            if self._next > self._ceiling:
                self._write(self._next + self.block - 1)
            value = self._next
            self._next += 1
            return value

    def _write(self, ceiling: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"ceiling": ceiling}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._ceiling = ceiling
        self.writes += 1
