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
from erab.aggregator.settlement import CustomerTerms, EventTerms, MeterData, SettlementError, settle
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
        (28, "5h-2h", (18, 24)),  # 14:00 start: 09:00-12:00
        (28, "4h-1h", (20, 26)),  # 10:00-13:00
        (10, "5h-2h", (0, 6)),  # 05:00 start: 00:00-03:00, exactly at the edge
        (8, "5h-2h", (-2, 4)),  # 04:00 start: 23:00 the day before to 02:00
        (3, "5h-2h", (-7, -1)),  # 01:30 start: 20:30-23:30 the day before
        (0, "4h-1h", (-8, -2)),  # 00:00 start: 20:00-23:00 the day before
    ],
)
def test_adjustment_window_edges(first_slot: int, window: str,
                                 expected: tuple[int, int]) -> None:  # fmt: skip
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


def test_an_adjustment_window_before_midnight_reads_the_evening_before() -> None:
    """(tests/aggregator/test_baseline_early_morning.py has the rule in full.)"""
    data = levels({})
    data[0, 14, 0:4] = 2.0
    data[0, 13, 46:48] = 4.0  # Sunday 23:00-24:00, the event's evening before
    whole = compute_baseline(data, DAYS, EventWindow(14, 8, 2))  # 04:00: 23:00-02:00
    assert not whole.flags["adjustment_truncated"][0]
    assert whole.adjustment_kwh[0] == pytest.approx((2 * 3.0 + 4 * 1.0) / 6)
    early = compute_baseline(data, DAYS, EventWindow(14, 3, 2))  # 01:30: 20:30-23:30
    assert not early.flags["no_adjustment"][0]
    assert early.adjustment_kwh[0] == pytest.approx(3.0 / 6)


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
    with pytest.raises(BaselineError, match="the first must be one of the start day's 48"):
        EventWindow(14, 48, 4)
    with pytest.raises(BaselineError, match=r"event days 14\.\.15 are outside the 15 days"):
        compute_baseline(levels({}), DAYS, EventWindow(14, 46, 4))
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


# --- an event crossing midnight ---------------------------------------------------------------

# Monday 2026-05-18 .. Monday 2026-06-15: Friday 12 June is index 25, Saturday 13 June 26
NIGHT_DAYS = [date(2026, 5, 18) + timedelta(days=k) for k in range(29)]
FRI, SAT = 25, 26
NIGHT = EventWindow(day=FRI, first_slot=46, slots=6)  # Fri 23:00 .. Sat 02:00


def night_levels(per_day: dict[date, float], default: float = 1.0) -> np.ndarray:
    out = np.full((1, len(NIGHT_DAYS), 48), default)
    for d, level in per_day.items():
        out[0, NIGHT_DAYS.index(d), :] = level
    return out


NIGHT_LEVELS = {
    # weekdays before Friday 12th, newest first: 1, 2, 3, 4, 5 -> High 4 of 5 = 3.5
    date(2026, 6, 11): 1.0, date(2026, 6, 10): 2.0, date(2026, 6, 9): 3.0,
    date(2026, 6, 8): 4.0, date(2026, 6, 5): 5.0,
    # non-working days before Saturday 13th, newest first: 6, 8, 10 -> High 2 of 3 = 9.0;
    # Saturday 30 May (20) is the fourth back, outside the pool
    date(2026, 6, 7): 6.0, date(2026, 6, 6): 8.0, date(2026, 5, 31): 10.0,
    date(2026, 5, 30): 20.0,
}  # fmt: skip


def test_an_event_crossing_midnight_is_cut_into_windows_per_calendar_day() -> None:
    w = EventWindow.from_times(NIGHT_DAYS, datetime(2026, 6, 12, 23, tzinfo=JST),
                               datetime(2026, 6, 13, 2, tzinfo=JST))  # fmt: skip
    assert w == NIGHT and w.day_count == 2 and w.crosses_midnight
    assert w.by_day() == [EventWindow(FRI, 46, 2), EventWindow(SAT, 0, 4)]
    assert [s.strftime("%d %H:%M") for s in w.slot_starts(NIGHT_DAYS)] == [
        "12 23:00", "12 23:30", "13 00:00", "13 00:30", "13 01:00", "13 01:30"]  # fmt: skip
    # ending exactly at midnight touches one day only
    assert not EventWindow.from_times(NIGHT_DAYS, datetime(2026, 6, 12, 22, tzinfo=JST),
                                      datetime(2026, 6, 13, tzinfo=JST)).crosses_midnight
    with pytest.raises(BaselineError, match="runs into 2026-06-16, which is not among"):
        EventWindow.from_times(NIGHT_DAYS, datetime(2026, 6, 15, 23, tzinfo=JST),
                               datetime(2026, 6, 16, 1, tzinfo=JST))  # fmt: skip


def test_each_slot_past_midnight_takes_the_baseline_of_its_own_date() -> None:
    b = compute_baseline(night_levels(NIGHT_LEVELS), NIGHT_DAYS, NIGHT, params=NO_ADJ)
    assert b.day_count == 2 and b.kwh.shape == (1, 96)
    # Friday's slots: High 4 of 5 of the weekdays; Saturday's: High 2 of 3 of the weekends
    assert b.at(slice(46, 52))[0].tolist() == pytest.approx([3.5, 3.5, 9.0, 9.0, 9.0, 9.0])
    assert b.name == "high-4-of-5 then high-2-of-3"
    assert b.describe()["per_day"] == ["2026-06-12: high-4-of-5", "2026-06-13: high-2-of-3"]
    used = b.days_used[0].tolist()
    assert sorted(NIGHT_DAYS[j] for j in used[:4]) == [date(2026, 6, d) for d in (5, 8, 9, 10)]
    assert sorted(NIGHT_DAYS[j] for j in used[4:]) == [date(2026, 5, 31), date(2026, 6, 6)]
    assert not b.flags["short_history"].any() and not b.flags["no_baseline"].any()


def test_the_part_past_midnight_ranks_its_days_on_its_own_slots() -> None:
    """High 2 of 3 for Saturday's part looks at 00:00-02:00 of past weekend days only: a
    weekend day high in the evening but low after midnight is not picked."""
    data = night_levels(NIGHT_LEVELS)
    data[0, NIGHT_DAYS.index(date(2026, 6, 7)), :4] = 30.0  # Sunday 7th high after midnight
    b = compute_baseline(data, NIGHT_DAYS, NIGHT, params=NO_ADJ)
    assert b.at(slice(48, 52))[0].tolist() == pytest.approx([20.0] * 4)  # (30 + 10) / 2
    assert b.at(slice(46, 48))[0].tolist() == pytest.approx([3.5, 3.5])


def test_one_same_day_adjustment_from_before_the_start_covers_both_days() -> None:
    data = night_levels(NIGHT_LEVELS)
    data[0, FRI, 36:42] = 3.5 + 0.6  # 18:00-21:00 Friday, 0.6 kWh above Friday's baseline
    b = compute_baseline(data, NIGHT_DAYS, NIGHT)
    assert b.adjustment_slots == (36, 42)
    assert float(b.adjustment_kwh[0]) == pytest.approx(0.6)
    assert b.at(slice(46, 52))[0].tolist() == pytest.approx([4.1, 4.1, 9.6, 9.6, 9.6, 9.6])
    assert b.name == "high-4-of-5 then high-2-of-3 + same-day 5h-2h"
    # the cap is a share of the whole event's unadjusted baseline: (2 × 3.5 + 4 × 9) / 6
    ref = (2 * 3.5 + 4 * 9.0) / 6
    capped = compute_baseline(data, NIGHT_DAYS, NIGHT, params=BaselineParams(adjustment_cap_pct=5))
    assert float(capped.adjustment_kwh[0]) == pytest.approx(0.05 * ref)
    assert bool(capped.flags["adjustment_capped"][0])
    loose = compute_baseline(data, NIGHT_DAYS, NIGHT, params=BaselineParams(adjustment_cap_pct=10))
    assert float(loose.adjustment_kwh[0]) == pytest.approx(0.6)  # 0.717 > 0.6: not capped
    assert not bool(loose.flags["adjustment_capped"][0])


def test_only_the_needed_slots_across_midnight_match_the_whole_days() -> None:
    data = night_levels(NIGHT_LEVELS)
    data[0, FRI, 36:42] = 4.1
    whole = compute_baseline(data, NIGHT_DAYS, NIGHT)
    part = compute_baseline(data, NIGHT_DAYS, NIGHT, whole_day=False)
    assert part.span == (36, 52)
    np.testing.assert_allclose(part.at(slice(36, 52)), whole.at(slice(36, 52)))


def test_a_plan_across_midnight_covers_both_days() -> None:
    plan = np.concatenate([np.full((1, 48), 2.0), np.full((1, 48), 1.0)], axis=1)
    b = compute_baseline(night_levels({}), NIGHT_DAYS, NIGHT, params=BaselineParams("plan"),
                         plan_kwh=plan)  # fmt: skip
    assert b.at(slice(46, 52))[0].tolist() == [2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    with pytest.raises(BaselineError, match=r"over 2 days must have shape \(1, 96\)"):
        compute_baseline(night_levels({}), NIGHT_DAYS, NIGHT, params=BaselineParams("plan"),
                         plan_kwh=np.ones((1, 48)))  # fmt: skip


def test_settling_across_midnight_by_hand() -> None:
    """2 kW for 3 h (6 kWh): the customer cuts 1 kWh in each slot on both days."""
    data = night_levels(NIGHT_LEVELS)
    data[0, FRI, 46:48] = 2.5  # Friday's baseline 3.5
    data[0, SAT, 0:4] = 8.0  # Saturday's 9.0
    md = MeterData(("M1",), tuple(NIGHT_DAYS), data, np.isnan(data),
                   np.zeros(data.shape, dtype=np.bool_))  # fmt: skip
    start = datetime(2026, 6, 12, 23, tzinfo=JST)
    terms = EventTerms("ev-night", start, start + timedelta(hours=3), -2.0,
                       get_product("tertiary-1"))  # fmt: skip
    s = settle(md, terms, CustomerTerms.uniform(("a",), 10.0), params=NO_ADJ)
    assert s.baseline_kwh[0].tolist() == pytest.approx([3.5, 3.5, 9.0, 9.0, 9.0, 9.0])
    assert s.metered_kwh[0].tolist() == pytest.approx([2.5, 2.5, 8.0, 8.0, 8.0, 8.0])
    assert s.fleet_delivered_kwh.tolist() == pytest.approx([1.0] * 6)
    assert s.committed_kwh.tolist() == pytest.approx([1.0] * 6)
    assert s.summary()["achieved_ratio"] == pytest.approx(1.0)
    assert float(s.incentive_yen[0]) == pytest.approx(60.0)
    assert s.slot_starts[-1] == datetime(2026, 6, 13, 1, 30, tzinfo=JST)
    assert s.day_metered_kwh is not None and s.day_metered_kwh.shape == (1, 96)
    # the event's start day is no baseline day for the part after midnight either: a
    # Thursday-night event's Friday part must not use Thursday
    thu = EventTerms("ev-thu", start - timedelta(days=1), start + timedelta(days=-1, hours=3),
                     -2.0, get_product("tertiary-1"))  # fmt: skip
    t = settle(md, thu, CustomerTerms.uniform(("a",), 10.0), params=NO_ADJ)
    used = {NIGHT_DAYS[j] for j in t.baseline.days_used[0].tolist() if j >= 0}
    assert date(2026, 6, 11) not in used
    # without the day after in the data, the event is refused, naming the missing day
    short = MeterData(("M1",), tuple(NIGHT_DAYS[:SAT]), data[:, :SAT], np.isnan(data[:, :SAT]),
                      np.zeros(data[:, :SAT].shape, dtype=np.bool_))  # fmt: skip
    with pytest.raises(SettlementError, match="ev-night: the event runs into 2026-06-13"):
        settle(short, terms, CustomerTerms.uniform(("a",), 10.0), params=NO_ADJ)


@settings(max_examples=25, deadline=None)
@given(histories, st.sampled_from(["5h-2h", "4h-1h", None]), st.integers(40, 47),
       st.integers(2, 12), st.integers(0, 16).map(lambda k: k / 8.0))  # fmt: skip
def test_across_midnight_following_the_baseline_delivers_zero_and_a_shift_moves_it(
    data: np.ndarray, adjustment: str | None, first_slot: int, slots: int, shift_kwh: float
) -> None:
    """Sunday 14th evening into Monday 15th: weekend pool before midnight, weekday after."""
    slots = max(slots, 49 - first_slot)  # at least one slot past midnight
    window = EventWindow(13, first_slot, slots)
    params = BaselineParams(adjustment=adjustment)
    b = compute_baseline(data, DAYS, window, params=params)
    shifted = compute_baseline(data + shift_kwh, DAYS, window, params=params)
    assert b.kwh == pytest.approx(shifted.kwh - shift_kwh, abs=1e-9, nan_ok=True)
    part = compute_baseline(data, DAYS, window, params=params, whole_day=False)
    ev = slice(first_slot, first_slot + slots)
    assert np.array_equal(part.at(ev), b.at(ev))
    follows = data.copy()
    timeline = follows[:, 13:15, :].reshape(data.shape[0], 96)
    timeline[:, ev] = b.at(ev)
    follows[:, 13:15, :] = timeline.reshape(data.shape[0], 2, 48)
    n = data.shape[0]
    md = MeterData(tuple(map(str, range(n))), tuple(DAYS), follows, np.isnan(follows),
                   np.zeros(follows.shape, dtype=np.bool_))  # fmt: skip
    start = datetime(2026, 6, 14, tzinfo=JST) + timedelta(minutes=30 * first_slot)
    terms = EventTerms("p", start, start + timedelta(minutes=30 * slots), -1.0,
                       get_product("tertiary-2"))  # fmt: skip
    s = settle(md, terms, CustomerTerms.uniform(md.meter_ids, 10.0), params=params)
    assert s.baseline_kwh.shape == (n, slots)
    assert np.abs(s.delivered_kwh).max() < 1e-9
    assert s.incentive_yen == pytest.approx(np.zeros(n), abs=1e-6)
