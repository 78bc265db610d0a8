"""The same-day adjustment of an event starting between 00:00 and 05:00 JST: its window is
clock hours before the start, so it lies (partly) in the evening before, read on the event's
side from the day before the event and on the baseline's side from the day before each
chosen baseline day.  Hand-computed cases, then hypothesis properties."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from erab.aggregator.baseline import (
    ADJUSTMENT_BEFORE_MIDNIGHT,
    ADJUSTMENT_WINDOWS,
    BaselineParams,
    EventWindow,
    compute_baseline,
    day_run_slots,
    window_clock_text,
)
from erab.aggregator.products import get_product
from erab.aggregator.settlement import CustomerTerms, EventTerms, MeterData, settle
from erab.clock import JST

# Monday 1 June .. Wednesday 17 June 2026
DAYS = [date(2026, 6, 1) + timedelta(days=k) for k in range(17)]
WED = 16  # Wednesday 17th, the event day
TUE, MON15, SUN14 = 15, 14, 13
EVENING = slice(40, 46)  # 20:00-23:00


def wednesday_data() -> np.ndarray:
    """1 kWh in every slot; the event's 01:00-02:00 slots rank the weekdays before it: Tue
    16th 1 (the lowest, dropped), Mon 15th 2, Fri 12th 3, Thu 11th 4, Wed 10th 5; so the
    baseline days are Mon 15th, Fri 12th, Thu 11th, Wed 10th, and their evenings before are
    Sun 14th, Thu 11th, Wed 10th, Tue 9th."""
    data = np.ones((1, len(DAYS), 48))
    for day, level in ((TUE, 1.0), (MON15, 2.0), (11, 3.0), (10, 4.0), (9, 5.0)):
        data[0, day, 2:4] = level
    data[0, SUN14, EVENING] = 2.0  # the evening before Monday 15th, a baseline day
    data[0, TUE, EVENING] = 2.0  # the event's own evening before (Tuesday 16th)
    data[0, TUE, 46:48] = 3.0  # 23:00-24:00 on the event's evening before
    return data


AT_0100 = EventWindow(day=WED, first_slot=2, slots=2)


def test_an_event_at_0100_with_5h_2h_is_adjusted_over_2000_2300_of_the_evening_before() -> None:
    b = compute_baseline(wednesday_data(), DAYS, AT_0100)
    assert b.days_used[0].tolist() == [9, 10, 11, MON15]
    assert b.adjustment_slots == (-8, -2)
    # actual 2.0 over 20:00-23:00 of Tuesday; the baseline there is the mean of the four
    # evenings before the baseline days: (2 + 1 + 1 + 1) / 4 = 1.25
    assert b.adjustment_kwh[0] == pytest.approx(2.0 - 1.25)
    assert b.unadjusted_kwh[0, 2] == pytest.approx(3.5)  # (2 + 3 + 4 + 5) / 4
    assert b.kwh[0, 2] == pytest.approx(3.5 + 0.75)
    assert not b.flags["adjustment_truncated"][0] and not b.flags["no_adjustment"][0]
    assert b.name == "high-4-of-5 + same-day 5h-2h"


def test_an_event_at_0100_with_4h_1h_is_adjusted_over_2100_2400_of_the_evening_before() -> None:
    b = compute_baseline(wednesday_data(), DAYS, AT_0100,
                         params=BaselineParams(adjustment="4h-1h"))  # fmt: skip
    assert b.adjustment_slots == (-6, 0)
    # 21:00-24:00: actual [2, 2, 2, 2, 3, 3]; baseline 1.25 for 21:00-23:00, 1.0 after
    actual = (4 * 2.0 + 2 * 3.0) / 6
    base = (4 * 1.25 + 2 * 1.0) / 6
    assert b.adjustment_kwh[0] == pytest.approx(actual - base)  # 7/6


def test_an_event_at_0430_is_adjusted_over_2330_to_0230_across_midnight() -> None:
    """5h-2h before 04:30 is 23:30 of the day before to 02:30; 4h-1h (00:30-03:30) lies
    within the day and is as it always was."""
    data = wednesday_data()
    w = EventWindow(day=WED, first_slot=9, slots=1)
    data[0, :, 0:10] = 1.0
    data[0, [9, 10, 11, MON15], 9] = 2.0  # the same four baseline days win at 04:30
    data[0, WED, 0:5] = 1.5  # 00:00-02:30 on the event day
    b = compute_baseline(data, DAYS, w)
    assert b.adjustment_slots == (-1, 5)
    assert sorted(b.days_used[0].tolist()) == [9, 10, 11, MON15]
    # actual: 3.0 (Tue 23:30) and five slots at 1.5; baseline: 1.0 in each (the evenings
    # before the baseline days are 1.0 at 23:30)
    assert b.adjustment_kwh[0] == pytest.approx((3.0 + 5 * 1.5) / 6 - 1.0)
    b41 = compute_baseline(data, DAYS, w, params=BaselineParams(adjustment="4h-1h"))
    assert b41.adjustment_slots == (1, 7)
    assert b41.adjustment_kwh[0] == pytest.approx((4 * 1.5 + 2 * 1.0) / 6 - 1.0)
    assert "adjustment_before_midnight" not in b41.describe()


# Monday 15 June 2026, 01:00: its window is Sunday evening, its baseline days are weekdays
MON_DAYS = DAYS[:15]
MONDAY_0100 = EventWindow(day=14, first_slot=2, slots=2)


def monday_data(chosen_monday: bool) -> np.ndarray:
    """Sunday evenings at 3 kWh per slot, weekday evenings at 1.  The event slots rank Fri
    12th, Thu 11th, Wed 10th above the rest; with ``chosen_monday`` Mon 8th is the fourth
    (Tue 9th the lowest), else Tue 9th (Mon 8th the lowest)."""
    data = np.ones((1, 15, 48))
    for d in range(15):
        if DAYS[d].weekday() == 6:
            data[0, d, EVENING] = 3.0
    ranks = {11: 5.0, 10: 4.0, 9: 3.0, 8: 2.0, 7: 1.5}
    if chosen_monday:
        ranks[8], ranks[7] = 1.5, 2.0
    for d, level in ranks.items():
        data[0, d, 2:4] = level
    return data


def test_a_monday_0100_event_compares_sunday_evening_with_the_evenings_before_its_weekdays() -> (
    None
):
    """The rule: the window's baseline is read on the evening before each chosen baseline
    day (the same clock hours, a day earlier), whatever that evening's kind; it is not
    taken from past Sunday evenings.  Friday 12th as a baseline day brings Thursday
    evening: the Monday event's adjustment measures how far Sunday evening stood above the
    evenings before its baseline days, as every slot of its baseline comes from those days."""
    b = compute_baseline(monday_data(chosen_monday=False), MON_DAYS, MONDAY_0100)
    assert sorted(MON_DAYS[d].isoformat() for d in b.days_used[0]) == [
        "2026-06-09", "2026-06-10", "2026-06-11", "2026-06-12"]  # fmt: skip
    # Sunday 14th's evening (3) against the evenings of Mon 8th .. Thu 11th (1 each)
    assert b.adjustment_kwh[0] == pytest.approx(3.0 - 1.0)
    with_monday = compute_baseline(monday_data(chosen_monday=True), MON_DAYS, MONDAY_0100)
    assert date(2026, 6, 8) in {MON_DAYS[d] for d in with_monday.days_used[0]}
    # Monday 8th's evening before is Sunday 7th (3): (3 + 1 + 1 + 1) / 4
    assert with_monday.adjustment_kwh[0] == pytest.approx(3.0 - 1.5)


def test_a_baseline_day_whose_evening_before_lacks_a_reading_is_not_used() -> None:
    data = wednesday_data()
    data[0, SUN14, 42] = np.nan  # the evening before Monday 15th
    b = compute_baseline(data, DAYS, AT_0100)
    # Monday 15th is no baseline day now: Tue 16th (1.0) joins Fri 12th .. Wed 10th
    assert sorted(b.days_used[0].tolist()) == [9, 10, 11, TUE]
    assert b.unadjusted_kwh[0, 2] == pytest.approx((3 + 4 + 5 + 1) / 4)
    # the evenings before them (Mon 15th 1, Thu, Wed, Tue 1): actual 2 - 1
    assert b.adjustment_kwh[0] == pytest.approx(1.0)


def test_the_window_is_cut_only_where_the_day_before_is_not_given() -> None:
    data = wednesday_data()[:, 1:]  # Tuesday 2nd .. Wednesday 17th
    b = compute_baseline(data, DAYS[1:], EventWindow(day=0, first_slot=8, slots=2))
    assert b.flags["adjustment_truncated"][0]
    b = compute_baseline(data, DAYS[1:], EventWindow(day=WED - 1, first_slot=8, slots=2))
    assert not b.flags["adjustment_truncated"][0]


def test_a_missing_evening_before_the_event_gives_no_adjustment() -> None:
    data = wednesday_data()
    data[0, TUE, EVENING] = np.nan
    b = compute_baseline(data, DAYS, AT_0100)
    assert b.flags["no_adjustment"][0] and b.adjustment_kwh[0] == 0.0
    assert b.kwh[0, 2] == pytest.approx(3.5)


def test_the_settlement_names_the_rule_and_delivers_against_the_adjusted_baseline() -> None:
    data = wednesday_data()
    data[0, WED, 2:4] = 1.0  # the customer cut to 1 kWh in the event
    md = MeterData(("M1",), tuple(DAYS), data, np.isnan(data), np.zeros(data.shape, bool))
    start = datetime(2026, 6, 17, 1, tzinfo=JST)
    terms = EventTerms("ev-early", start, start + timedelta(hours=1), -2.0,
                       get_product("tertiary-2"))  # fmt: skip
    s = settle(md, terms, CustomerTerms.uniform(("a",), 10.0))
    assert s.delivered_kwh[0].tolist() == pytest.approx([4.25 - 1.0] * 2)
    doc = json.loads(s.to_json())
    assert doc["baseline"]["adjustment_slots"] == [-8, -2]
    assert doc["baseline"]["adjustment_before_midnight"] == ADJUSTMENT_BEFORE_MIDNIGHT
    afternoon = EventTerms("ev-pm", start + timedelta(hours=13), start + timedelta(hours=14),
                           -2.0, get_product("tertiary-2"))  # fmt: skip
    pm = json.loads(settle(md, afternoon, CustomerTerms.uniform(("a",), 10.0)).to_json())
    assert "adjustment_before_midnight" not in pm["baseline"]


def test_day_run_slots_reads_negative_slots_on_the_day_before() -> None:
    data = np.arange(2 * 3 * 48, dtype=np.float64).reshape(2, 3, 48)
    out = day_run_slots(data, [0, 2], -2, 1)
    assert out.shape == (2, 2, 3)
    assert np.isnan(out[:, 0, :2]).all() and out[0, 0, 2] == 0.0  # no day before day 0
    assert out[1, 1].tolist() == [data[1, 1, 46], data[1, 1, 47], data[1, 2, 0]]
    per_customer = day_run_slots(data, np.array([[1], [2]]), -1, 0)
    assert per_customer[:, 0, 0].tolist() == [data[0, 0, 47], data[1, 1, 47]]


@pytest.mark.parametrize(
    ("lo", "hi", "text"),
    [
        (-8, -2, "20:00 to 23:00 the day before"),
        (-6, 0, "21:00 to 24:00 the day before"),
        (-1, 5, "23:30 the day before to 02:30"),
        (18, 24, "09:00 to 12:00"),
    ],
)
def test_windows_read_as_clock_times(lo: int, hi: int, text: str) -> None:
    assert window_clock_text(lo, hi) == text


# --- properties -------------------------------------------------------------------------------

PROP_DAYS = [date(2026, 6, 1) + timedelta(days=k) for k in range(15)]  # .. Monday 15th


def recut_at_noon(data: np.ndarray) -> np.ndarray:
    """The same meters with each day re-cut at noon: day j runs from 12:00 of day j - 1 to
    12:00 of day j (NaN before the first day), so an event at 01:00 on day j becomes one at
    13:00 on day j, and its evening-before window a same-day one."""
    out = np.full_like(data, np.nan)
    out[:, 1:, :24] = data[:, :-1, 24:]
    out[:, :, 24:] = data[:, :, :24]
    return out


@settings(max_examples=60, deadline=None)
@given(
    data=arrays(
        np.float64, (2, 15, 48), elements=st.one_of(st.floats(0.0, 5.0), st.just(np.nan))
    ),
    first_slot=st.integers(0, 9),
    slots=st.integers(1, 6),
    adjustment=st.sampled_from(sorted(ADJUSTMENT_WINDOWS)),
    cap=st.one_of(st.none(), st.floats(0.0, 50.0)),
    whole_day=st.booleans(),
)
def test_an_early_event_adjusts_as_the_same_day_rule_on_meters_recut_at_noon(
    data: np.ndarray, first_slot: int, slots: int, adjustment: str, cap: float | None,
    whole_day: bool,
) -> None:  # fmt: skip
    """Moving the clock by 12 hours moves the window entirely into the day: the rule across
    midnight gives what the same-day rule (unchanged since issue 12) gives on the re-cut
    meters for the event 12 hours later, to the last bit of every figure."""
    w = EventWindow(day=14, first_slot=first_slot, slots=slots)
    p = BaselineParams(adjustment=adjustment, adjustment_cap_pct=cap)
    early = compute_baseline(data, PROP_DAYS, w, params=p, whole_day=whole_day)
    noon = compute_baseline(recut_at_noon(data), PROP_DAYS,
                            EventWindow(14, first_slot + 24, slots), params=p,
                            whole_day=whole_day)  # fmt: skip
    assert noon.adjustment_slots[0] >= 0  # the same-day rule: the window lies within the day
    assert early.days_used.tolist() == noon.days_used.tolist()
    np.testing.assert_array_equal(early.adjustment_kwh, noon.adjustment_kwh)
    ev = slice(first_slot, first_slot + slots)
    np.testing.assert_array_equal(early.at(ev), noon.at(slice(ev.start + 24, ev.stop + 24)))
    for name in ("no_adjustment", "adjustment_capped", "no_baseline", "short_history"):
        assert early.flags[name].tolist() == noon.flags[name].tolist(), name


@settings(max_examples=40, deadline=None)
@given(
    data=arrays(np.float64, (3, 15, 48), elements=st.floats(0.0, 5.0)),
    first_slot=st.integers(0, 9),
    adjustment=st.sampled_from(sorted(ADJUSTMENT_WINDOWS)),
)
def test_the_adjustment_is_the_evening_before_minus_the_baseline_days_evenings_before(
    data: np.ndarray, first_slot: int, adjustment: str
) -> None:
    """Against a plain per-customer reading of the rule: the mean over the window's clock
    hours of the event's actual minus the mean of the same hours counted from each baseline
    day (the day before it where the hours lie before 00:00)."""
    b = compute_baseline(data, PROP_DAYS, EventWindow(14, first_slot, 2),
                         params=BaselineParams(adjustment=adjustment))  # fmt: skip
    opens_h, closes_h = ADJUSTMENT_WINDOWS[adjustment]
    offsets = range(first_slot - 2 * opens_h, first_slot - 2 * closes_h)

    def at(i: int, day: int, slot: int) -> float:
        return float(data[i, day - 1, 48 + slot] if slot < 0 else data[i, day, slot])

    for i in range(3):
        used = [d for d in b.days_used[i].tolist() if d >= 0]
        expected = np.mean([at(i, 14, k) - np.mean([at(i, d, k) for d in used])
                            for k in offsets])  # fmt: skip
        assert b.adjustment_kwh[i] == pytest.approx(expected, abs=1e-9)
