"""(gateway, sequence) dedup: at-least-once in, exactly-once out."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.bus import SequenceDedup


def test_the_first_sighting_is_admitted_and_repeats_are_not() -> None:
    dedup = SequenceDedup()
    assert dedup.admit("gw-a", 1) is True
    assert dedup.admit("gw-a", 1) is False
    assert dedup.admit("gw-b", 1) is True  # another gateway's sequence is its own
    assert dedup.duplicates == 1


def test_out_of_order_arrivals_are_each_admitted_once() -> None:
    dedup = SequenceDedup()
    assert [dedup.admit("gw", s) for s in (3, 1, 2, 3, 1, 5, 4, 2)] == [
        True, True, True, False, False, True, True, False]
    assert dedup.snapshot() == {"gw": [5]}  # compacted: everything up to 5 seen


def test_memory_is_bounded_by_the_window() -> None:
    dedup = SequenceDedup(window=10)
    for s in range(2, 1000, 2):  # every odd number missing: gaps never fill
        dedup.admit("gw", s)
    floor, *above = dedup.snapshot()["gw"]
    assert len(above) <= 10
    assert dedup.admit("gw", floor) is False  # given up on: treated as seen


def test_a_snapshot_restores_the_same_decisions() -> None:
    first = SequenceDedup()
    for s in (1, 2, 4, 7):
        first.admit("gw", s)
    second = SequenceDedup()
    second.restore(first.snapshot())
    assert [second.admit("gw", s) for s in (1, 3, 4, 7, 8)] == [False, True, False, False, True]


def test_a_bad_window_or_snapshot_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        SequenceDedup(window=0)
    with pytest.raises(ValueError, match="no floor"):
        SequenceDedup().restore({"gw": []})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 300)),
                max_size=400), st.randoms())
def test_redelivered_shuffled_stream_gives_each_pair_exactly_once(
    sent: list[tuple[str, int]], rnd: random.Random
) -> None:
    delivered = sent + [rnd.choice(sent) for _ in range(len(sent) // 2)] if sent else []
    rnd.shuffle(delivered)
    dedup = SequenceDedup()  # window larger than the stream: nothing given up
    kept = [pair for pair in delivered if dedup.admit(*pair)]
    assert sorted(kept) == sorted(set(sent))
