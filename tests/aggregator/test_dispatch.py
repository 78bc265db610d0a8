"""Dispatch: the merit order and the LP/MILP, by hand and as properties."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.aggregator.dispatch import DispatchParams, ResourceTerms, dispatch_lp, merit_order
from erab.aggregator.flexibility import (
    Direction,
    FlexParams,
    SlotLimits,
    WindowFlexibility,
    flexibility_for_window,
    slot_limits,
)
from erab.aggregator.state import FleetState, ResourceKind, TelemetryBatch
from erab.aggregator.state import TelemetryField as F
from erab.aggregator.thermal import ThermalModel

NOW = 1_780_000_000.0
HOURS_3 = 3 * 3600.0


def window(kw: list[float]) -> WindowFlexibility:
    return WindowFlexibility(NOW, HOURS_3, np.array(kw, dtype=np.float64), np.zeros(len(kw)))


def test_merit_order_fills_the_cheapest_first_with_the_margin_and_keeps_a_reserve() -> None:
    terms = ResourceTerms.create(4, cost_per_kwh=[30.0, 10.0, 20.0, 40.0])
    params = DispatchParams(margin=0.1, reserve_fraction=0.5, fairness_per_call=0.0)
    plan = merit_order(window([4.0, 3.0, 5.0, 2.0]), Direction.DOWN, 7.0, terms, params)
    # goal 7.7 kW: resource 1 (¥10) 3 kW, resource 2 (¥20) 4.7 of its 5 kW
    assert plan.kw[:, 0].tolist() == pytest.approx([0.0, 3.0, 4.7, 0.0])
    assert plan.kw.shape == (4, 6) and (plan.kw == plan.kw[:, :1]).all()
    assert plan.expected_kw.tolist() == pytest.approx([7.7] * 6)
    assert plan.shortfall_kw.tolist() == [0.0] * 6
    # reserve: next in merit order until 3.5 kW (half the target): resource 0 (4 kW)
    assert plan.reserve.tolist() == [0]
    assert plan.dispatched.tolist() == [1, 2]


def test_reliability_derates_and_fairness_rotates() -> None:
    # resource 0 is cheaper but has been called 10 times (¥1 per call): ¥15 against ¥12
    terms = ResourceTerms.create(
        2, cost_per_kwh=[5.0, 12.0], times_called=[10, 0], reliability=[1.0, 0.5]
    )
    plan = merit_order(window([4.0, 4.0]), Direction.DOWN, 1.0, terms, DispatchParams(margin=0.0))
    # resource 1 costs 12 / 0.5 = ¥24 per expected kWh, resource 0 ¥15: resource 0 first
    assert plan.kw[:, 0].tolist() == pytest.approx([1.0, 0.0])
    plan = merit_order(window([0.5, 4.0]), Direction.DOWN, 1.0, terms, DispatchParams(margin=0.0))
    # 0.5 kW from resource 0, the other 0.5 expected kW needs 1 kW commanded from resource 1
    assert plan.kw[:, 0].tolist() == pytest.approx([0.5, 1.0])
    assert plan.total_kw[0] == pytest.approx(1.5) and plan.expected_kw[0] == pytest.approx(1.0)


def test_priority_goes_before_cost() -> None:
    terms = ResourceTerms.create(2, cost_per_kwh=[5.0, 50.0], priority=[1, 0])
    plan = merit_order(window([2.0, 2.0]), Direction.DOWN, 1.0, terms, DispatchParams(margin=0))
    assert plan.kw[:, 0].tolist() == [0.0, 1.0]


def test_a_target_beyond_the_fleet_is_planned_with_its_shortfall() -> None:
    terms = ResourceTerms.create(2)
    plan = merit_order(window([2.0, 1.0]), Direction.DOWN, [2.0, 5.0, 0.0, 1.0, 1.0, 1.0], terms)
    assert plan.shortfall_kw.tolist() == pytest.approx([0.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    assert plan.kw[:, 1].tolist() == [2.0, 1.0]
    assert plan.total_kw[2] == 0.0


def test_bad_dispatch_input_is_named() -> None:
    terms = ResourceTerms.create(2)
    with pytest.raises(ValueError, match="target_kw"):
        merit_order(window([1.0, 1.0]), Direction.DOWN, -5.0, terms)
    with pytest.raises(ValueError, match="terms cover"):
        merit_order(window([1.0, 1.0, 1.0]), Direction.DOWN, 1.0, terms)
    with pytest.raises(ValueError, match="reliability"):
        ResourceTerms.create(2, reliability=[1.2, 0.5])
    with pytest.raises(ValueError, match="whole number"):
        merit_order(
            WindowFlexibility(NOW, 1000.0, np.ones(2), np.ones(2)), Direction.DOWN, 1, terms
        )


@settings(max_examples=60, deadline=None)
@given(
    flex=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=30),
    target=st.floats(0.0, 150.0),
    margin=st.floats(0.0, 0.3),
    seed=st.integers(0, 1000),
)
def test_merit_order_properties(flex: list[float], target: float, margin: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(flex)
    terms = ResourceTerms.create(
        n,
        cost_per_kwh=rng.uniform(0, 30, n),
        times_called=rng.integers(0, 5, n),
        reliability=rng.uniform(0.5, 1.0, n),
    )
    flexible = window(flex)
    plan = merit_order(flexible, Direction.DOWN, target, terms, DispatchParams(margin=margin))
    # never beyond any resource's flexibility
    assert (plan.kw <= flexible.down_kw[:, None] + 1e-9).all() and (plan.kw >= 0).all()
    deliverable = float((flexible.down_kw * terms.reliability).sum())
    if deliverable >= target:
        assert (plan.expected_kw >= target - 1e-6).all()
        assert (plan.expected_kw <= target * (1 + margin) + 1e-6).all()
        assert (plan.shortfall_kw == 0).all()
    else:
        # resources offering less than the planner's tolerance (1e-6 kW) are left out
        assert plan.shortfall_kw == pytest.approx([target - deliverable] * 6, abs=1e-5)
    # the reserve is disjoint from the dispatched resources
    assert not set(plan.reserve.tolist()) & set(plan.dispatched.tolist())


def limits_of(
    kw: np.ndarray, cap: np.ndarray | None = None, share: np.ndarray | None = None
) -> SlotLimits:
    n, slots = kw.shape
    return SlotLimits(
        Direction.DOWN,
        NOW,
        1800.0,
        kw,
        np.full((n, slots), np.inf) if cap is None else cap,
        np.zeros(n) if share is None else share,
    )


def test_lp_moves_a_batterys_energy_to_the_slots_where_it_is_needed() -> None:
    # Two slots, targets 4 then 0 kW; battery 0 (¥5) holds 5 kW but only 1.5 kWh; resource 1
    # (¥20) 5 kW, no energy limit.  The battery's 1.5 kWh = 3 kW over one 30-min slot.
    kw = np.array([[5.0, 5.0], [5.0, 5.0]])
    cap = np.array([[1.5, 1.5], [np.inf, np.inf]])
    terms = ResourceTerms.create(2, cost_per_kwh=[5.0, 20.0])
    params = DispatchParams(margin=0.0)
    plan = dispatch_lp(limits_of(kw, cap), [4.0, 0.0], terms, params)
    np.testing.assert_allclose(plan.kw, [[3.0, 0.0], [1.0, 0.0]], atol=1e-9)
    assert plan.objective == pytest.approx(3.0 * 0.5 * 5 + 1.0 * 0.5 * 20)  # ¥17.5
    # the merit order, which must hold each kW through the hour, gets only 1.5 kW from it
    held = WindowFlexibility(NOW, 3600.0, np.array([1.5, 5.0]), np.zeros(2))
    merit = merit_order(held, Direction.DOWN, [4.0, 0.0], terms, params)
    np.testing.assert_allclose(merit.kw, [[1.5, 0.0], [2.5, 0.0]], atol=1e-9)
    assert merit.objective == pytest.approx(1.5 * 0.5 * 5 + 2.5 * 0.5 * 20)  # ¥28.75


def brute_force_cost(kw: np.ndarray, cap: np.ndarray, price: np.ndarray, goal: np.ndarray) -> float:
    """Least cost by enumerating a grid of 0.5 kW steps (exact when the optimum lies on it)."""
    n, slots = kw.shape
    best = np.inf
    grids = [np.arange(0, kw[i, k] + 1e-9, 0.5) for i in range(n) for k in range(slots)]
    for values in itertools.product(*grids):
        x = np.array(values).reshape(n, slots)
        if not np.allclose(x.sum(axis=0), goal):
            continue
        if ((np.cumsum(x, axis=1) * 0.5) > cap + 1e-9).any():
            continue
        best = min(best, float((price[:, None] * x).sum() * 0.5))
    return best


@settings(max_examples=25, deadline=None)
@given(
    kw=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]), min_size=6, max_size=6),
    caps=st.lists(st.sampled_from([0.25, 0.5, 0.75, 1.0, np.inf]), min_size=3, max_size=3),
    goal=st.lists(st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]), min_size=2, max_size=2),
    prices=st.permutations([3.0, 7.0, 11.0]),
)
def test_lp_objective_equals_brute_force_on_small_cases(
    kw: list[float], caps: list[float], goal: list[float], prices: list[float]
) -> None:
    bounds = np.array(kw).reshape(3, 2)
    cap = np.column_stack([np.full(3, np.inf), caps])  # each energy cap over the window
    goal_kw = np.array(goal)
    expected = brute_force_cost(bounds, cap, np.array(prices), goal_kw)
    terms = ResourceTerms.create(3, cost_per_kwh=prices)
    plan = dispatch_lp(
        limits_of(bounds, cap), goal_kw, terms, DispatchParams(margin=0.0, fairness_per_call=0.0)
    )
    if np.isfinite(expected):
        assert plan.objective == pytest.approx(expected, abs=1e-6)
        assert (plan.shortfall_kw == 0).all()
    else:
        assert plan.shortfall_kw.sum() > 0  # the grid had no way to meet the goal exactly


def aircon_and_pv_fleet(n: int, seed: int) -> tuple[FleetState, FlexParams]:
    rng = np.random.default_rng(seed)
    kind = rng.choice([ResourceKind.AIRCON, ResourceKind.PV], size=n)
    state = FleetState.create(kind, rated_kw=rng.uniform(1, 4, n), comfort_high_c=28.0)
    is_ac = kind == ResourceKind.AIRCON
    power = np.where(is_ac, rng.uniform(0.3, 1.0, n), -rng.uniform(0, 3, n))
    rows = np.arange(n)
    state.apply(
        TelemetryBatch.of(
            np.concatenate([rows, rows]),
            np.concatenate([np.full(n, F.POWER_KW), np.full(n, F.ROOM_TEMP_C)]),
            np.concatenate([power, rng.uniform(25, 27.5, n)]),
            np.full(2 * n, NOW),
        ),
        NOW,
    )
    thermal = ThermalModel.of(rng.uniform(0.1, 0.5, n), rng.uniform(2, 5, n))
    return state, FlexParams(thermal=thermal)


@settings(max_examples=20, deadline=None)
# targets of a millionth of the fleet or more: below that, HiGHS's feasibility tolerance
# (1e-7) times the shortfall penalty is larger than the whole objective
@given(n=st.integers(1, 40), fraction=st.just(0.0) | st.floats(1e-6, 1.3),
       seed=st.integers(0, 10_000))  # fmt: skip
def test_merit_order_and_lp_agree_without_coupling(n: int, fraction: float, seed: int) -> None:
    state, params = aircon_and_pv_fleet(n, seed)
    rng = np.random.default_rng(seed)
    terms = ResourceTerms.create(
        n, cost_per_kwh=rng.uniform(1, 30, n), reliability=rng.uniform(0.5, 1, n)
    )
    for direction in Direction:
        held = flexibility_for_window(state, NOW, HOURS_3, params)
        target = fraction * float((held.kw(direction) * terms.reliability).sum())
        merit = merit_order(held, direction, target, terms)
        limits = slot_limits(state, direction, NOW, 6, params=params)
        lp = dispatch_lp(limits, target, terms)  # rebound headroom unlimited: no coupling
        assert lp.objective == pytest.approx(merit.objective, rel=1e-7, abs=1e-6)
        assert lp.expected_kw == pytest.approx(merit.expected_kw, abs=1e-6)
        assert lp.shortfall_kw == pytest.approx(merit.shortfall_kw, abs=1e-6)


def battery_fleet(n: int, seed: int) -> FleetState:
    rng = np.random.default_rng(seed)
    state = FleetState.create(
        np.zeros(n, dtype=np.int64),
        rated_kw=rng.uniform(1, 5, n),
        capacity_kwh=rng.uniform(2, 12, n),
        soc_reserve_pct=rng.uniform(5, 30, n),
        soc_max_pct=rng.uniform(80, 100, n),
    )
    rows = np.arange(n)
    state.apply(
        TelemetryBatch.of(
            np.concatenate([rows, rows]),
            np.concatenate([np.full(n, F.SOC_PCT), np.full(n, F.POWER_KW)]),
            np.concatenate([rng.uniform(0, 100, n), rng.uniform(-1, 1, n) * state.rated_kw]),
            np.full(2 * n, NOW),
        ),
        NOW,
    )
    return state


def soc_trajectory_kwh(state: FleetState, plan_kw: np.ndarray, direction: Direction) -> np.ndarray:
    """SOC at each slot end: the untouched battery (power now, stopped at limits) plus the plan."""
    base = slot_limits(state, direction, NOW, plan_kw.shape[1])
    soc0 = state.soc_kwh()
    sign = -1.0 if direction is Direction.DOWN else 1.0
    slots = plan_kw.shape[1]
    ends = NOW + 1800.0 * (np.arange(slots) + 1)
    cap = state.capacity_kwh
    reserve, top = state.soc_reserve_pct * cap / 100, state.soc_max_pct * cap / 100
    p = np.clip(state.power_kw, -state.rated_kw, state.rated_kw)
    lo, hi = np.minimum(soc0, reserve), np.maximum(soc0, top)
    baseline = np.clip(
        soc0[:, None] + p[:, None] * (ends - NOW)[None, :] / 3600, lo[:, None], hi[:, None]
    )
    assert base.kw.shape == plan_kw.shape
    return np.asarray(baseline + sign * np.cumsum(plan_kw, axis=1) * 0.5)


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 25),
    fraction=st.floats(0.0, 1.5),
    seed=st.integers(0, 10_000),
    direction=st.sampled_from(Direction),
)
def test_lp_keeps_every_battery_within_reserve_and_max(
    n: int, fraction: float, seed: int, direction: Direction
) -> None:
    state = battery_fleet(n, seed)
    limits = slot_limits(state, direction, NOW, 6)
    target = fraction * float(limits.kw.min(axis=1).sum()) / 2
    plan = dispatch_lp(limits, target, ResourceTerms.create(n, cost_per_kwh=np.arange(n) + 1.0))
    assert (plan.kw <= limits.kw + 1e-7).all()
    soc = soc_trajectory_kwh(state, plan.kw, direction)
    cap = state.capacity_kwh
    reserve, top = state.soc_reserve_pct * cap / 100, state.soc_max_pct * cap / 100
    soc0 = state.soc_kwh()
    # never below the reserve nor above the maximum (or past where it already was)
    assert (soc >= np.minimum(reserve, soc0)[:, None] - 1e-6).all()
    assert (soc <= np.maximum(top, soc0)[:, None] + 1e-6).all()
    feasible = plan.shortfall_kw == 0
    assert (plan.expected_kw[feasible] >= plan.target_kw[feasible] - 1e-6).all()


def test_rebound_beyond_the_headroom_is_limited_or_counted() -> None:
    # one aircon (¥1, rebound share 0.5) and one battery (¥50): 2 kW target over 2 slots
    kw = np.array([[2.0, 2.0], [2.0, 2.0]])
    share = np.array([0.5, 0.0])
    terms = ResourceTerms.create(2, cost_per_kwh=[1.0, 50.0])
    free = dispatch_lp(limits_of(kw, share=share), 2.0, terms, DispatchParams(margin=0.0))
    assert free.kw[0].tolist() == pytest.approx([2.0, 2.0])
    # 2 kWh curtailed, half comes back over 2 slots of 30 min: 1 kW each
    assert free.rebound_kw.tolist() == pytest.approx([1.0, 1.0])
    tight = dispatch_lp(
        limits_of(kw, share=share), 2.0, terms, DispatchParams(margin=0.0, rebound_headroom_kw=0.5)
    )
    # headroom 0.5 kW = 1 kWh over the hour after: 2 kWh of aircon at most, the rest battery
    assert tight.kw[0].sum() * 0.5 == pytest.approx(1.0)
    assert tight.rebound_kw.tolist() == pytest.approx([0.5, 0.5])
    assert tight.rebound_excess_kw.tolist() == [0.0, 0.0]
    assert tight.expected_kw.tolist() == pytest.approx([2.0, 2.0])


def test_milp_respects_minimum_kw_and_minimum_run_time() -> None:
    # resource 0 is cheap but runs at least 2 kW for at least 3 slots once started
    kw = np.full((2, 4), 3.0)
    terms = ResourceTerms.create(
        2, cost_per_kwh=[1.0, 10.0], min_kw=[2.0, 0.0], min_run_slots=[3, 1]
    )
    targets = [0.0, 1.0, 0.0, 2.5]
    lp = dispatch_lp(limits_of(kw), targets, terms, DispatchParams(margin=0.0))
    assert lp.kw[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 2.5])  # continuous: cheapest
    milp = dispatch_lp(limits_of(kw), targets, terms, DispatchParams(margin=0.0), integer=True)
    assert milp.method == "milp"
    on = milp.kw[0] > 1e-6
    assert (milp.kw[0][on] >= 2.0 - 1e-6).all()
    starts = np.flatnonzero(on & ~np.concatenate([[False], on[:-1]]))
    for s in starts:
        assert on[s : min(s + 3, 4)].all()
    assert milp.expected_kw.tolist() == pytest.approx(targets)
    # running it from slot 1 would give 2 kW in slot 2 (target 0): over-delivery; so it
    # runs only in slot 3 (to the window's end) and resource 1 covers slot 1
    np.testing.assert_allclose(milp.kw, [[0.0, 0.0, 0.0, 2.5], [0.0, 1.0, 0.0, 0.0]], atol=1e-9)


def test_the_decomposition_reaches_the_plain_lp_optimum() -> None:
    n = 3000
    rng = np.random.default_rng(7)
    state = battery_fleet(n // 2, 7)
    ac_state, params = aircon_and_pv_fleet(n // 2, 8)
    limits_b = slot_limits(state, Direction.DOWN, NOW, 6)
    limits_a = slot_limits(ac_state, Direction.DOWN, NOW, 6, params=params)
    limits = SlotLimits(
        Direction.DOWN,
        NOW,
        1800.0,
        np.vstack([limits_b.kw, limits_a.kw]),
        np.vstack([limits_b.energy_cap_kwh, limits_a.energy_cap_kwh]),
        np.concatenate([limits_b.rebound_share, limits_a.rebound_share]),
    )
    terms = ResourceTerms.create(
        n, cost_per_kwh=rng.uniform(1, 30, n), reliability=rng.uniform(0.6, 1, n)
    )
    target = 0.4 * float((limits.kw.mean(axis=1) * terms.reliability).sum())
    params_d = DispatchParams(rebound_headroom_kw=0.05 * target)
    full = dispatch_lp(limits, target, terms, params_d, method="full")
    split = dispatch_lp(limits, target, terms, params_d, method="decomposed")
    assert split.method == "lp-decomposed"
    assert split.objective == pytest.approx(full.objective, rel=1e-7)
    # slots with a shortfall may share it differently (equal penalties): compare the sums
    assert split.expected_kw.sum() == pytest.approx(full.expected_kw.sum(), rel=1e-7)
    assert (split.kw <= limits.kw + 1e-7).all()


def test_the_interior_point_and_the_simplex_reach_the_same_optimum() -> None:
    n = 600
    rng = np.random.default_rng(11)
    state = battery_fleet(n // 2, 11)
    ac_state, params = aircon_and_pv_fleet(n // 2, 12)
    limits_b = slot_limits(state, Direction.DOWN, NOW, 6)
    limits_a = slot_limits(ac_state, Direction.DOWN, NOW, 6, params=params)
    limits = SlotLimits(
        Direction.DOWN, NOW, 1800.0, np.vstack([limits_b.kw, limits_a.kw]),
        np.vstack([limits_b.energy_cap_kwh, limits_a.energy_cap_kwh]),
        np.concatenate([limits_b.rebound_share, limits_a.rebound_share]),
    )  # fmt: skip
    terms = ResourceTerms.create(n, cost_per_kwh=rng.uniform(1, 30, n),
                                 reliability=rng.uniform(0.6, 1, n))  # fmt: skip
    target = 0.5 * float((limits.kw.mean(axis=1) * terms.reliability).sum())
    plans = {
        solver: dispatch_lp(limits, target, terms, DispatchParams(
            rebound_headroom_kw=0.05 * target, lp_solver=solver), method="full")
        for solver in ("simplex", "ipm")
    }  # fmt: skip
    assert plans["ipm"].objective == pytest.approx(plans["simplex"].objective, rel=1e-7)
    assert (plans["ipm"].kw <= limits.kw + 1e-7).all() and (plans["ipm"].kw >= 0).all()
    with pytest.raises(ValueError, match="lp_solver"):
        DispatchParams(lp_solver="barrier")
