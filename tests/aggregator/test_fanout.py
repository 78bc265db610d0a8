"""Fan-out: signed envelopes to many gateways, re-sent until acknowledged or expired, refusals
and expiries handed back for the reserve; end to end through the real broker to a fleet of
real gateways."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.aggregator.fanout import CommandStage, Fanout, LeasedSequenceCounter
from erab.bus import Acknowledgement, DeviceOutcome, RunningBroker, Stream
from erab.clock import RealClock, SimulatedClock
from erab.devices.server import TownServer
from erab.security import (
    EnvelopeSigner,
    EnvelopeVerifier,
    MemoryVerifierStateStore,
    SecurityHome,
)
from erab.security.keys import load_ed25519_key
from tests.bus.conftest import Deployment, broker, connect_ra, deployment  # noqa: F401
from tests.gateway.test_fleet import make_fleet, town, with_command_key  # noqa: F401

T0 = datetime(2026, 8, 3, 5, 0, tzinfo=UTC)


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.fail = fail

    async def send_command(self, gateway_id: str, envelope_wire: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise ConnectionError("broker gone")
        self.sent.append((gateway_id, envelope_wire))


def ack(gw: str, seq: int, outcome: str = "applied", rejected: str | None = None
        ) -> Acknowledgement:  # fmt: skip
    outcomes = [] if rejected else [DeviceOutcome(device_id="b-1", outcome=outcome,
                                                  reason=None if outcome == "applied"
                                                  else "below SOC reserve")]  # fmt: skip
    return Acknowledgement(gateway_id=gw, seq=7, sent_at=T0, command_seq=seq, received_at=T0,
                           rejected=rejected, outcomes=outcomes)  # fmt: skip


def fanout(publisher: Recorder) -> tuple[Fanout, SimulatedClock, Ed25519PrivateKey]:
    clock = SimulatedClock(T0, speed=0)
    key = Ed25519PrivateKey.generate()
    return Fanout(publisher, EnvelopeSigner(key, clock), clock, retry_after_s=5,
                  valid_for=timedelta(seconds=30)), clock, key  # fmt: skip


BODY = {"type": "battery_power", "device_id": "b-1", "power_w": -1000.0,
        "start": T0.isoformat(), "end": (T0 + timedelta(hours=1)).isoformat()}  # fmt: skip


async def test_acknowledged_refused_and_silent_gateways_each_end_as_they_should() -> None:
    rec = Recorder()
    fan, clock, key = fanout(rec)
    a, b, c = await fan.send_many([("gw-a", BODY), ("gw-b", BODY), ("gw-c", BODY)], event_id="e1")
    assert [g for g, _ in rec.sent] == ["gw-a", "gw-b", "gw-c"]
    assert fan.acknowledged(ack("gw-a", a.sequence)) is a and a.stage is CommandStage.ACKNOWLEDGED
    assert fan.acknowledged(ack("gw-a", a.sequence)) is None  # a repeat changes nothing
    assert fan.acknowledged(ack("gw-b", b.sequence, "refused")) is b
    assert b.stage is CommandStage.REFUSED and "below SOC reserve" in (b.reason or "")
    assert fan.acknowledged(ack("gw-x", 99)) is None and fan.unmatched_acks == 1
    assert await fan.tick() == [b]  # handed back once
    assert await fan.tick() == []
    clock.set(T0 + timedelta(seconds=6))
    await fan.tick()
    assert rec.sent[-1] == ("gw-c", c.wire) and c.attempts == 2  # the same envelope again
    clock.set(T0 + timedelta(seconds=31))
    assert await fan.tick() == [c] and c.stage is CommandStage.EXPIRED
    assert fan.summary("e1") == {"signed": 0, "sent": 0, "acknowledged": 1, "refused": 1,
                                 "expired": 1}  # fmt: skip
    # what was sent verifies at a gateway, and its copy is a replay there
    verifier = EnvelopeVerifier("gw-c", SimulatedClock(T0, speed=0), MemoryVerifierStateStore(),
                                trusted_key=key.public_key())
    verifier.verify(c.wire)
    with pytest.raises(Exception, match=r"replay|sequence"):
        verifier.verify(c.wire)


async def test_a_replay_refusal_of_our_own_resend_is_not_the_answer() -> None:
    fan, clock, _ = fanout(Recorder())
    cmd = await fan.send("gw-a", BODY)
    clock.set(T0 + timedelta(seconds=6))
    await fan.tick()  # re-sent: the gateway had it, and is waiting for its start
    assert fan.acknowledged(ack("gw-a", cmd.sequence, rejected="replayed")) is None
    assert cmd.stage is CommandStage.SENT and fan.replays_seen == 1
    assert fan.acknowledged(ack("gw-a", cmd.sequence)) is cmd  # the first one's answer
    assert cmd.stage is CommandStage.ACKNOWLEDGED


async def test_a_rejected_envelope_is_a_refusal_with_the_gateways_reason() -> None:
    fan, _, _ = fanout(Recorder())
    cmd = await fan.send("gw-a", BODY)
    fan.acknowledged(ack("gw-a", cmd.sequence, rejected="expired"))
    assert (cmd.stage, cmd.reason) == (CommandStage.REFUSED, "expired")


async def test_a_publish_that_fails_is_tried_again_at_the_next_tick() -> None:
    rec = Recorder(fail=1)
    fan, _, _ = fanout(rec)
    cmd = await fan.send("gw-a", BODY)
    assert cmd.stage is CommandStage.SIGNED and "broker gone" in (cmd.reason or "")
    await fan.tick()
    assert cmd.stage is CommandStage.SENT and rec.sent == [("gw-a", cmd.wire)]


@pytest.mark.timeout(120)
class SlowBroker(Recorder):
    """A broker that takes its time to accept a publish (many gateways at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def send_command(self, gateway_id: str, envelope_wire: bytes) -> None:
        await self.release.wait()
        await super().send_command(gateway_id, envelope_wire)


async def test_a_tick_during_a_slow_send_resends_it_without_breaking_its_life() -> None:
    publisher = SlowBroker()
    out, _clock, _key = fanout(publisher)
    sending = asyncio.create_task(out.send_many([("gw-1", BODY)]))
    await asyncio.sleep(0)  # the send is waiting on the broker: the command is still signed
    ticking = asyncio.create_task(out.tick())  # it re-sends what is signed
    await asyncio.sleep(0)
    publisher.release.set()
    [command] = await sending
    assert await ticking == []
    assert command.stage is CommandStage.SENT and command.attempts == 2
    assert [t.value for _, t, _ in command.history] == ["send", "resend"]
    assert len(publisher.sent) == 2 and publisher.sent[0] == publisher.sent[1]  # one envelope
    assert out.acknowledged(ack("gw-1", command.sequence)) is command
    assert command.stage is CommandStage.ACKNOWLEDGED


async def test_commands_to_a_fleet_of_real_gateways_are_acknowledged_or_refused(
    deployment: Deployment, broker: RunningBroker, town: TownServer  # noqa: F811
) -> None:
    with_command_key(deployment)
    fleet = make_fleet(deployment, broker, town)
    fleet.enrol()
    await fleet.commission()
    runner = asyncio.create_task(fleet.run(30.0))
    ra = await connect_ra(deployment, broker)
    try:
        acks = await ra.consumer(Stream.ACKS, "acks")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while fleet.refresh_status().links_up < 3:
            assert loop.time() < deadline
            await asyncio.sleep(0.1)
        key = load_ed25519_key(SecurityHome(deployment.home).command_key)
        fan = Fanout(ra, EnvelopeSigner(key, RealClock()), RealClock(), retry_after_s=2)
        now = RealClock().now()
        window = {"start": now.isoformat(), "end": (now + timedelta(minutes=10)).isoformat()}
        sent = await fan.send_many([
            ("gw-home-1", {"type": "battery_power", "device_id": "home-1.battery-1",
                           "power_w": -1000.0, **window}),
            ("gw-home-2", {"type": "pv_limit", "device_id": "home-2.pv-1", "limit_pct": 50.0,
                           **window}),
            ("gw-home-3", {"type": "battery_power", "device_id": "no-such-device",
                           "power_w": -1000.0, **window}),
        ], event_id="e1")  # fmt: skip
        while any(c.stage is CommandStage.SENT for c in sent):
            assert loop.time() < deadline + 20, fan.summary()
            for delivery in await acks.fetch(10, 0.5):
                await delivery.ack()
                if isinstance(delivery.message, Acknowledgement):
                    fan.acknowledged(delivery.message)
            await fan.tick()
    finally:
        await ra.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert [c.stage for c in sent] == [CommandStage.ACKNOWLEDGED, CommandStage.ACKNOWLEDGED,
                                       CommandStage.REFUSED]  # fmt: skip
    assert sent[0].outcomes[0]["readback"]["mode_code"] == 0x43  # discharging, read back
    assert "no-such-device" in (sent[2].reason or "")



def test_leased_sequences_rise_for_every_gateway_and_survive_a_restart(tmp_path: Path) -> None:
    old = tmp_path / "command-sequences.json"  # what a per-gateway counter left behind
    old.write_text(json.dumps({"gw-1": 41, "gw-2": 7}))
    path = tmp_path / "command-sequence.json"
    counter = LeasedSequenceCounter(path, block=3, previous=old)
    got = [counter.next(g) for g in ("gw-1", "gw-2", "gw-1", "gw-3", "gw-2")]
    assert got == [42, 43, 44, 45, 46]  # above every old number, rising
    assert counter.writes == 2  # one write per block of 3, not per envelope
    assert json.loads(path.read_text()) == {"ceiling": 47}
    restarted = LeasedSequenceCounter(path, block=3, previous=old)
    assert restarted.next("gw-1") == 48  # never one that may have been used
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="ceiling"):
        LeasedSequenceCounter(path)
