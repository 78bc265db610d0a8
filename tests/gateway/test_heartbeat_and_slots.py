"""When a heartbeat goes up, and when a fleet gateway's next poll starts."""

from __future__ import annotations

import pytest

from erab.gateway.service import (
    HEARTBEAT_AT_LEAST_EVERY,
    HeartbeatFigures,
    heartbeat_due,
    next_poll_at,
)

QUIET = HeartbeatFigures(backlog=0, dropped_total=0, last_command_seq=0)


def test_the_first_heartbeat_always_goes_up() -> None:
    assert heartbeat_due(QUIET, None, others=5, skipped=0)


def test_a_heartbeat_that_says_nothing_new_is_left_out_while_other_messages_go_up() -> None:
    assert not heartbeat_due(QUIET, QUIET, others=2, skipped=0)
    in_flight = HeartbeatFigures(backlog=2, dropped_total=0, last_command_seq=0)
    assert not heartbeat_due(in_flight, QUIET, others=2, skipped=3)  # a poll in flight


def test_a_heartbeat_goes_up_when_nothing_else_did() -> None:
    assert heartbeat_due(QUIET, QUIET, others=0, skipped=0)


@pytest.mark.parametrize("figures", [
    HeartbeatFigures(backlog=0, dropped_total=4, last_command_seq=0),  # drops: news
    HeartbeatFigures(backlog=0, dropped_total=0, last_command_seq=17),  # a command accepted
    HeartbeatFigures(backlog=500, dropped_total=0, last_command_seq=0),  # falling behind
])  # fmt: skip
def test_a_heartbeat_with_news_goes_up(figures: HeartbeatFigures) -> None:
    assert heartbeat_due(figures, QUIET, others=3, skipped=0)


def test_a_heartbeat_goes_up_at_least_every_so_many_intervals() -> None:
    due = [heartbeat_due(QUIET, QUIET, others=1, skipped=n) for n in range(12)]
    assert due.index(True) == HEARTBEAT_AT_LEAST_EVERY - 1


def test_without_a_phase_the_next_poll_is_one_interval_later() -> None:
    assert next_poll_at(100.25, 60.0, None) == 160.25


def test_with_a_phase_polls_settle_on_it_one_interval_apart() -> None:
    assert next_poll_at(100.25, 60.0, 15.0) == 135.0  # the first gap: half to 1.5 intervals
    assert next_poll_at(135.0, 60.0, 15.0) == 195.0
    assert next_poll_at(135.4, 60.0, 15.0) == 195.0  # a poll that started late: back on phase
    starts = {next_poll_at(100.0 + i / 17, 60.0, 5.0) for i in range(17)}
    assert starts == {185.0}  # gateways started a few ms apart, one phase: they poll together
