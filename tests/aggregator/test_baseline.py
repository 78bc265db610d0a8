"""Baselines, rule by rule, on small hand-checked arrays; two properties with hypothesis."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from erab.aggregator.baseline import (
    BaselineError,
    BaselineParams,
    EventWindow,
    adjustment_slots,
    compute_baseline,
    is_working_day,
)
from erab.aggregator.products import get_product
from erab.aggregator.settlement import CustomerTerms, EventTerms, MeterData, settle
from erab.clock import JST

# Monday 2026-06-01 .. Monday 2026-06-15 (index 14, the event day)
DAYS = [date(2026, 6, 1) + timedelta(days=k) for k in range(15)]
EVENT = EventWindow(day=14, first_slot=28, slots=2)  # 14:00-15:00
NO_ADJ = BaselineParams(adjustment=None)


def levels(per_day: dict[int, float], default: float = 1.0) -> np.ndarray:
    """One customer whose consumption is flat each day at the given level (kWh per slot)."""
    out = np.full((1, len(DAYS), 48), default)
    for day, level in per_day.items():
        out[0, day, :] = level
    return out


# weekday indices before the event day, newest first: 11 (Fri 12th), 10, 9, 8, 7, 4, 3, ...


def test_high_4_of_5_takes_the_mean_of_the_four_highest_of_the_last_five_weekdays() -> None:
    data = levels({11: 1.0, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0, 4: 9.0})
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ)
    assert b.name == "high-4-of-5"
    assert b.kwh[0, 28] == pytest.approx((5 + 4 + 3 + 2) / 4)  # day 4 is not among the last 5
    assert b.days_used[0].tolist() == [7, 8, 9, 10]  # highest first


def test_weekends_are_not_weekday_baseline_days() -> None:
    data = levels({5: 50.0, 6: 50.0, 12: 50.0, 13: 50.0})  # the weekends
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ)
    assert b.kwh[0, 28] == pytest.approx(1.0)
    assert not set(b.days_used[0].tolist()) & {5, 6, 12, 13}


def test_a_dr_event_day_is_skipped_and_the_next_older_weekday_taken() -> None:
    data = levels({11: 1.0, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0, 4: 6.0})
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ, dr_days={DAYS[9]})
    assert b.days_used[0].tolist() == [4, 7, 8, 10]
    assert b.kwh[0, 28] == pytest.approx((6 + 5 + 4 + 2) / 4)


def test_a_day_below_25_percent_of_the_five_day_average_is_replaced() -> None:
    # the last five average (0.5 + 2 + 3 + 4 + 5) / 5 = 2.9; 0.5 < 0.725 is a low day
    data = levels({11: 0.5, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0, 4: 6.0})
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ)
    assert b.days_used[0].tolist() == [4, 7, 8, 9]
    assert b.kwh[0, 28] == pytest.approx((6 + 5 + 4 + 3) / 4)
    # at 0.8 (above 0.725 of its own 5-day average of 2.96) it stays in the pool
    kept = compute_baseline(levels({11: 0.8, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0, 4: 6.0}), DAYS,
                            EVENT, params=NO_ADJ)  # fmt: skip
    assert kept.days_used[0].tolist() == [7, 8, 9, 10]


def test_a_tie_in_the_event_window_goes_to_the_more_recent_day() -> None:
    data = levels({11: 2.0, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0})
    data[0, 11, 0] = 8.0  # the two tied days differ outside the window only
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ)
    assert 11 in b.days_used[0] and 10 not in b.days_used[0]
    assert b.kwh[0, 0] == pytest.approx((5 + 4 + 3 + 8) / 4)


def test_a_past_day_missing_a_needed_slot_is_skipped_but_not_for_other_slots() -> None:
    data = levels({11: 9.0, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0, 4: 6.0})
    data[0, 11, 29] = np.nan  # no reading in the event window on the 12th
    data[0, 7, 3] = np.nan  # one outside the slots the baseline needs on the 8th
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ)
    assert b.days_used[0].tolist() == [4, 7, 8, 9]
    assert b.kwh[0, 28] == pytest.approx((6 + 5 + 4 + 3) / 4)
    # the missing slot 3 of the 8th is left out of that slot's mean, never taken as 0
    assert b.kwh[0, 3] == pytest.approx((6 + 4 + 3) / 4 * 4 / 3)


def test_non_working_days_use_high_2_of_3_and_holidays_count_as_non_working() -> None:
    # 2026-07-20 is Marine Day (a Monday); the event is on it
    days = [date(2026, 7, 6) + timedelta(days=k) for k in range(15)]
    assert not is_working_day(date(2026, 7, 20)) and is_working_day(date(2026, 7, 17))
    data = np.full((1, 15, 48), 1.0)
    sat18, sun19, sun12, sat11 = (days.index(date(2026, 7, d)) for d in (18, 19, 12, 11))
    for idx, level in ((sun19, 3.0), (sat18, 2.0), (sun12, 4.0), (sat11, 10.0)):
        data[0, idx] = level
    window = EventWindow(days.index(date(2026, 7, 20)), 28, 2)
    b = compute_baseline(data, days, window, params=NO_ADJ)
    assert b.name == "high-2-of-3"
    assert sorted(b.days_used[0].tolist()) == sorted([sun12, sun19])  # 11th is the 4th back
    assert b.kwh[0, 28] == pytest.approx((4 + 3) / 2)


def test_a_weekday_event_after_a_holiday_skips_the_holiday() -> None:
    days = [date(2026, 7, 6) + timedelta(days=k) for k in range(16)]  # .. Tue 21st
    data = np.full((1, 16, 48), 1.0)
    data[0, days.index(date(2026, 7, 20))] = 100.0  # Marine Day
    b = compute_baseline(data, days, EventWindow(15, 28, 2), params=NO_ADJ)
    assert b.name == "high-4-of-5" and b.kwh[0, 28] == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("first_slot", "window", "expected"),
    [
        (28, "5h-2h", (18, 24, False)),  # 14:00 start: 09:00-12:00
        (28, "4h-1h", (20, 26, False)),  # 10:00-13:00
        (10, "5h-2h", (0, 6, False)),  # 05:00 start: 00:00-03:00, exactly at the edge
        (8, "5h-2h", (0, 4, True)),  # 04:00 start: cut at midnight
        (3, "5h-2h", (0, 0, True)),  # 01:30 start: nothing left
    ],
)
def test_adjustment_window_edges(first_slot: int, window: str,
                                 expected: tuple[int, int, bool]) -> None:  # fmt: skip
    assert adjustment_slots(first_slot, window) == expected


def event_day_actual(data: np.ndarray) -> np.ndarray:
    data[0, 14, 18:24] = [1.0, 1.0, 1.6, 1.6, 1.6, 1.6]
    data[0, 14, 24:26] = 2.2
    return data


def test_same_day_adjustment_adds_the_mean_difference_over_its_window() -> None:
    data = event_day_actual(levels({}))
    b = compute_baseline(data, DAYS, EVENT)  # default 5h-2h
    assert b.name == "high-4-of-5 + same-day 5h-2h"
    assert b.adjustment_kwh[0] == pytest.approx(0.4)
    assert b.kwh[0, 28] == pytest.approx(1.4) and b.unadjusted_kwh[0, 28] == pytest.approx(1.0)
    b41 = compute_baseline(data, DAYS, EVENT, params=BaselineParams(adjustment="4h-1h"))
    assert b41.adjustment_kwh[0] == pytest.approx(0.8)


def test_the_adjustment_cap_limits_it_and_says_so() -> None:
    data = event_day_actual(levels({}))
    b = compute_baseline(data, DAYS, EVENT, params=BaselineParams(adjustment_cap_pct=25.0))
    assert b.adjustment_kwh[0] == pytest.approx(0.25)
    assert b.flags["adjustment_capped"][0]


def test_an_adjustment_window_before_midnight_is_cut_or_dropped_and_flagged() -> None:
    data = levels({})
    data[0, 14, 0:4] = 2.0
    cut = compute_baseline(data, DAYS, EventWindow(14, 8, 2))
    assert cut.flags["adjustment_truncated"][0] and cut.adjustment_kwh[0] == pytest.approx(1.0)
    none = compute_baseline(data, DAYS, EventWindow(14, 3, 2))
    assert none.flags["no_adjustment"][0] and none.adjustment_kwh[0] == 0.0


def test_short_history_and_no_history_are_flagged_never_zero() -> None:
    data = np.full((2, 15, 48), np.nan)
    data[0, 11] = 2.0
    data[0, 10] = 4.0  # customer 0: two usable weekdays; customer 1: none
    b = compute_baseline(data, DAYS, EVENT, params=NO_ADJ)
    assert b.flags["short_history"].tolist() == [True, False]
    assert b.flags["no_baseline"].tolist() == [False, True]
    assert b.kwh[0, 28] == pytest.approx(3.0) and np.isnan(b.kwh[1, 28])


def test_a_submitted_plan_is_the_baseline_as_it_is() -> None:
    plan = np.linspace(0.0, 4.7, 48)[None, :]
    b = compute_baseline(levels({}), DAYS, EVENT, params=BaselineParams(method="plan"),
                         plan_kwh=plan)  # fmt: skip
    assert b.name == "plan" and b.kwh == pytest.approx(plan)
    with pytest.raises(BaselineError, match="needs the submitted plan"):
        compute_baseline(levels({}), DAYS, EVENT, params=BaselineParams(method="plan"))


def test_average_of_5_is_the_previous_days_average() -> None:
    data = levels({11: 1.0, 10: 2.0, 9: 3.0, 8: 4.0, 7: 5.0})
    b = compute_baseline(data, DAYS, EVENT, params=BaselineParams("average-of-y", None))
    assert b.name == "average-of-5" and b.kwh[0, 28] == pytest.approx(3.0)


def test_bad_inputs_are_refused_naming_what_was_wrong() -> None:
    with pytest.raises(BaselineError, match=r"shape \(customers, days, 48\)"):
        compute_baseline(np.zeros((2, 15, 24)), DAYS, EVENT)
    with pytest.raises(BaselineError, match="14 dates for 15 days"):
        compute_baseline(levels({}), DAYS[:14], EVENT)
    with pytest.raises(BaselineError, match="do not fit in one day"):
        EventWindow(14, 46, 4)
    with pytest.raises(BaselineError, match="same-day adjustment '3h-1h'"):
        BaselineParams(adjustment="3h-1h")
    with pytest.raises(BaselineError, match="cannot be settled from route A"):
        BaselineParams.for_contract("metered")
    with pytest.raises(BaselineError, match="not among the days"):
        EventWindow.from_times(DAYS, datetime(2026, 7, 1, 14, tzinfo=JST),
                               datetime(2026, 7, 1, 15, tzinfo=JST))  # fmt: skip


def test_event_window_from_times_covers_every_touched_slot() -> None:
    w = EventWindow.from_times(DAYS, datetime(2026, 6, 15, 13, 45, tzinfo=JST),
                               datetime(2026, 6, 15, 15, 10, tzinfo=JST))  # fmt: skip
    assert (w.day, w.first_slot, w.slots) == (14, 27, 4)


# --- properties -------------------------------------------------------------------------------

# multiples of 1/8 kWh: sums are exact, so no rounding can reorder days between runs
dyadic = st.integers(5, 16).map(lambda k: k / 8.0)  # 0.625 .. 2 kWh: never a low day
histories = arrays(np.float64, st.tuples(st.integers(1, 4), st.just(15), st.just(48)),
                   elements=dyadic)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(histories, st.sampled_from(["5h-2h", "4h-1h", None]), st.integers(0, 40))
def test_a_customer_doing_exactly_what_the_baseline_says_delivers_zero(
    data: np.ndarray, adjustment: str | None, first_slot: int
) -> None:
    window = EventWindow(14, first_slot, 3) if first_slot <= 45 else EVENT
    params = BaselineParams(adjustment=adjustment)
    b = compute_baseline(data, DAYS, window, params=params)
    ev = slice(window.first_slot, window.first_slot + window.slots)
    follows = data.copy()
    follows[:, 14, ev] = b.kwh[:, ev]
    n = data.shape[0]
    md = MeterData(tuple(map(str, range(n))), tuple(DAYS), follows, np.isnan(follows),
                   np.zeros(follows.shape, dtype=np.bool_))  # fmt: skip
    start = datetime(2026, 6, 15, tzinfo=JST) + timedelta(minutes=30 * window.first_slot)
    terms = EventTerms("p", start, start + timedelta(minutes=90), -1.0, get_product("tertiary-2"))
    s = settle(md, terms, CustomerTerms.uniform(md.meter_ids, 10.0), params=params)
    assert np.abs(s.delivered_kwh).max() < 1e-9
    assert s.incentive_yen == pytest.approx(np.zeros(n), abs=1e-6)


@settings(max_examples=25, deadline=None)
@given(histories, st.integers(0, 80).map(lambda k: k / 8.0),
       st.sampled_from(["5h-2h", "4h-1h", None]))  # fmt: skip
def test_adding_a_constant_to_all_consumption_shifts_the_baseline_by_it(
    data: np.ndarray, shift_kwh: float, adjustment: str | None
) -> None:
    params = BaselineParams(adjustment=adjustment)
    a = compute_baseline(data, DAYS, EVENT, params=params)
    b = compute_baseline(data + shift_kwh, DAYS, EVENT, params=params)
    assert np.array_equal(a.days_used, b.days_used)
    assert b.kwh == pytest.approx(a.kwh + shift_kwh, abs=1e-9)


@settings(max_examples=20, deadline=None)
@given(histories, st.integers(0, 40), st.sampled_from(["5h-2h", "4h-1h", None]))
def test_the_needed_slots_alone_give_the_same_baseline_there(
    data: np.ndarray, first_slot: int, adjustment: str | None
) -> None:
    data = data.copy()
    data[0, 3, first_slot] = np.nan  # a gap among the candidates
    window = EventWindow(14, first_slot, 3)
    params = BaselineParams(adjustment=adjustment)
    full = compute_baseline(data, DAYS, window, params=params)
    part = compute_baseline(data, DAYS, window, params=params, whole_day=False)
    ev = slice(first_slot, first_slot + 3)
    assert np.array_equal(full.kwh[:, ev], part.kwh[:, ev])
    assert np.array_equal(full.adjustment_kwh, part.adjustment_kwh)
    assert np.isnan(part.kwh[:, first_slot + 3:]).all()
