"""The outbox: sequence order, nothing lost across a restart, a bound that drops and counts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from erab.bus import Acknowledgement, Heartbeat, Sample, TelemetryBatch, UplinkMessage
from erab.gateway.outbox import Outbox, OutboxError

GW = "gw-0001"
T0 = datetime(2026, 8, 1, 13, 0, tzinfo=UTC)


def telemetry(box: Outbox, power_w: float) -> TelemetryBatch:
    return TelemetryBatch(
        gateway_id=GW,
        seq=box.next_seq(),
        sent_at=T0,
        samples=[Sample(device_id="battery-1", measured_at=T0, values={"power_w": power_w})],
    )


def ack(box: Outbox, command_seq: int) -> Acknowledgement:
    return Acknowledgement(
        gateway_id=GW, seq=box.next_seq(), sent_at=T0, command_seq=command_seq, received_at=T0
    )


class LinkDropsAfter:
    """A publisher whose link breaks after ``ok`` messages (raises before any PUBACK)."""

    def __init__(self, ok: int | None = None) -> None:
        self.ok = ok
        self.got: list[UplinkMessage] = []

    async def __call__(self, message: UplinkMessage) -> None:
        if self.ok is not None and len(self.got) >= self.ok:
            raise ConnectionError("link lost")
        self.got.append(message)


async def test_drain_publishes_in_sequence_order_and_empties(tmp_path: Path) -> None:
    with Outbox(tmp_path / "outbox.sqlite", GW) as box:
        for i in range(5):
            box.put(telemetry(box, float(i)))
        box.put(ack(box, 42))
        link = LinkDropsAfter()
        assert await box.drain(link) == 6
        assert [m.seq for m in link.got] == [1, 2, 3, 4, 5, 6]
        assert isinstance(link.got[-1], Acknowledgement)
        assert box.status().backlog == 0


async def test_restart_in_the_middle_of_a_drain_loses_nothing_and_keeps_the_sequence(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    box = Outbox(path, GW)
    for i in range(10):
        box.put(telemetry(box, float(i)))
    first = LinkDropsAfter(ok=4)
    with pytest.raises(ConnectionError):
        await box.drain(first)
    box.close()  # the process stops here

    with Outbox(path, GW) as again:
        assert again.status().backlog == 6
        assert again.next_seq() == 11  # the counter continues, never reuses
        second = LinkDropsAfter()
        await again.drain(second)
    delivered = [m.seq for m in first.got + second.got]
    assert delivered == list(range(1, 11))


def test_past_the_bound_the_oldest_telemetry_is_dropped_and_counted(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", GW, max_messages=3) as box:
        box.put(ack(box, 1))
        dropped = [box.put(telemetry(box, float(i))) for i in range(4)]
        assert dropped == [0, 0, 1, 1]
        # the ack (seq 1) stays; telemetry 2 and 3 went, 4 and 5 remain
        assert box.kinds() == [(1, "ack"), (4, "telemetry"), (5, "telemetry")]
        assert box.status().dropped_total == 2
    with Outbox(tmp_path / "o.sqlite", GW, max_messages=3) as box:
        assert box.status().dropped_total == 2  # the count survives a restart


def test_acknowledgements_are_never_dropped_even_past_the_bound(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", GW, max_messages=2) as box:
        for n in range(4):
            box.put(ack(box, n + 1))
        assert [k for _, k in box.kinds()] == ["ack"] * 4
        assert box.status().dropped_total == 0


def test_a_message_of_another_gateway_or_an_unissued_sequence_is_refused(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite", GW) as box:
        other = Heartbeat(gateway_id="gw-0002", seq=box.next_seq(), sent_at=T0, uptime_s=1.0)
        with pytest.raises(OutboxError, match="gw-0002"):
            box.put(other)
        with pytest.raises(OutboxError, match="not handed out"):
            box.put(Heartbeat(gateway_id=GW, seq=99, sent_at=T0, uptime_s=1.0))
