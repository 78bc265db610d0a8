"""Dispatch: split an event's kW target over resources, per 30-minute slot.

Two planners return the same :class:`DispatchPlan`:

- :func:`merit_order` ranks every resource that can help at once (numpy, no loop per
  resource): by priority, then by its price per *expected* kWh, ``(cost + fairness ×
  times called) / reliability``, so the cheapest reliable resources go first and those
  called often go later (the rotation).  Each resource offers the kW it can hold over the
  whole window (:func:`~erab.aggregator.flexibility.flexibility_for_window`, which carries the
  SOC and comfort limits) derated by its reliability; the order is filled until the expected
  kW reach the target plus the over-provision margin; the next resources form the reserve.
- :func:`dispatch_lp` solves a linear programme with HiGHS where constraints couple the
  slots (:func:`~erab.aggregator.flexibility.slot_limits`): a battery's energy over the
  window, a water heater's deadline, the air conditioners' rebound after the window against
  the fleet's headroom, and per-slot targets whose shortfall is penalised.  With
  ``integer=True`` resources with a minimum kW or a minimum run time become on/off (MILP).

kW in a plan are changes against each resource's baseline, ≥ 0 in the plan's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt

from erab.aggregator.flexibility import Direction, SlotLimits, WindowFlexibility

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_TOLERANCE_KW = 1e-6


@dataclass(frozen=True)
class ResourceTerms:
    """What each resource costs and how far it can be trusted (one entry per resource).

    ``cost_per_kwh`` (¥ per kWh changed, the incentive), ``priority`` (lower goes first),
    ``times_called`` (for the fairness rotation), ``reliability`` (0–1, the share of a
    command a resource delivered historically: its contribution is derated by it),
    ``min_kw`` and ``min_run_slots`` (MILP only: a resource called gives at least
    ``min_kw`` and, once started, runs ``min_run_slots`` slots or to the window's end).
    """

    cost_per_kwh: FloatArray
    priority: IntArray
    times_called: IntArray
    reliability: FloatArray
    min_kw: FloatArray
    min_run_slots: IntArray

    def __post_init__(self) -> None:
        n = len(self.cost_per_kwh)
        for name in ("priority", "times_called", "reliability", "min_kw", "min_run_slots"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"ResourceTerms.{name} has {len(getattr(self, name))} rows, not {n}"
                )
        if ((self.reliability < 0) | (self.reliability > 1) | ~np.isfinite(self.reliability)).any():
            raise ValueError("ResourceTerms.reliability must be within [0, 1]")
        if (~np.isfinite(self.cost_per_kwh)).any() or (self.cost_per_kwh < 0).any():
            raise ValueError("ResourceTerms.cost_per_kwh must be finite and >= 0")
        if (
            (self.times_called < 0).any()
            or (self.min_kw < 0).any()
            or (self.min_run_slots < 1).any()
        ):
            raise ValueError("times_called and min_kw must be >= 0, min_run_slots >= 1")

    @classmethod
    def create(
        cls,
        n: int,
        *,
        cost_per_kwh: npt.ArrayLike = 0.0,
        priority: npt.ArrayLike = 0,
        times_called: npt.ArrayLike = 0,
        reliability: npt.ArrayLike = 1.0,
        min_kw: npt.ArrayLike = 0.0,
        min_run_slots: npt.ArrayLike = 1,
    ) -> ResourceTerms:
        """Terms for ``n`` resources; each argument a scalar (all) or ``n`` values."""

        def column(value: npt.ArrayLike, name: str) -> FloatArray:
            array = np.asarray(value, dtype=np.float64)
            if array.ndim > 1 or (array.ndim == 1 and len(array) != n):
                raise ValueError(f"{name} has shape {array.shape}; expected a scalar or {n} values")
            return np.broadcast_to(array, (n,)).copy()

        return cls(
            cost_per_kwh=column(cost_per_kwh, "cost_per_kwh"),
            priority=column(priority, "priority").astype(np.int64),
            times_called=column(times_called, "times_called").astype(np.int64),
            reliability=column(reliability, "reliability"),
            min_kw=column(min_kw, "min_kw"),
            min_run_slots=column(min_run_slots, "min_run_slots").astype(np.int64),
        )


@dataclass(frozen=True)
class DispatchParams:
    """How the planners trade cost, fairness, delivery and rebound.

    ``margin``: over-provision (0.10 plans 110 % of the target in expected kW);
    ``reserve_fraction``: the reserve list holds at least this share of the peak target
    (expected kW), next in merit order; ``fairness_per_call`` (¥/kWh added per past call);
    ``priority_step_per_kwh`` (¥/kWh per priority level, the LP's stand-in for the merit
    order's strict priority); ``shortfall_penalty_per_kwh``; ``rebound_slots`` (slots after
    the window over which an air conditioner's rebound comes back, evenly);
    ``rebound_headroom_kw`` (what the fleet may add in each of those slots; beyond it the
    rebound is counted as excess and penalised by ``rebound_penalty_per_kwh``).
    ``lp_solver``: HiGHS's ``"simplex"``, ``"ipm"`` (interior point without presolve, then
    crossover to a vertex), or ``"auto"``: interior point for LPs above :data:`IPM_ABOVE`
    columns, where it is several times faster on these degenerate models, the simplex below;
    an interior-point run that does not end optimal is solved again by the simplex.
    """

    margin: float = 0.10
    reserve_fraction: float = 0.10
    fairness_per_call: float = 1.0
    priority_step_per_kwh: float = 1000.0
    shortfall_penalty_per_kwh: float = 1.0e5
    rebound_slots: int = 2
    rebound_headroom_kw: float = float("inf")
    rebound_penalty_per_kwh: float = 1.0e3
    time_limit_s: float = 60.0
    lp_solver: str = "auto"

    def __post_init__(self) -> None:
        if self.lp_solver not in ("auto", "simplex", "ipm"):
            raise ValueError(f"lp_solver must be auto, simplex or ipm, got {self.lp_solver!r}")
        if not 0 <= self.margin <= 1:
            raise ValueError(f"margin must be within [0, 1], got {self.margin}")
        if self.reserve_fraction < 0 or self.fairness_per_call < 0:
            raise ValueError("reserve_fraction and fairness_per_call must be >= 0")
        if self.rebound_slots < 1 or self.rebound_headroom_kw < 0:
            raise ValueError("rebound_slots must be >= 1 and rebound_headroom_kw >= 0")


@dataclass(frozen=True)
class DispatchPlan:
    """kW per resource per slot, and what the plan expects to deliver.

    ``kw`` is (resources, slots), the commanded change in ``direction`` (≥ 0);
    ``expected_kw`` per slot is Σ reliability × kW; ``shortfall_kw`` is how far the expected
    kW fall below ``target_kw`` (0 when the fleet can deliver); ``reserve`` lists resources
    not dispatched, next in merit order, to replace those that refuse or fail.
    """

    direction: Direction
    slot_start_s: FloatArray
    slot_s: float
    kw: FloatArray
    target_kw: FloatArray
    total_kw: FloatArray
    expected_kw: FloatArray
    shortfall_kw: FloatArray
    margin: float
    reserve: IntArray
    method: str
    objective: float
    """¥: price × kWh (incentive, fairness and priority terms) plus the penalties for expected
    kW off the goal (target × (1 + margin)) and rebound beyond headroom; both planners."""
    rebound_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    """LP: kW the air conditioners add back in each slot after the window."""
    rebound_excess_kw: FloatArray = field(default_factory=lambda: np.zeros(0))
    """LP: rebound beyond the fleet's headroom per slot after the window."""

    @property
    def dispatched(self) -> IntArray:
        """Resources with a non-zero command in some slot."""
        return np.flatnonzero((self.kw > _TOLERANCE_KW).any(axis=1))


def _targets(target_kw: float | npt.ArrayLike, slots: int) -> FloatArray:
    target = np.asarray(target_kw, dtype=np.float64)
    if target.ndim == 0:
        target = np.full(slots, float(target))
    if target.shape != (slots,):
        raise ValueError(f"target_kw has shape {target.shape}; expected a scalar or {slots} slots")
    if (~np.isfinite(target)).any() or (target < 0).any():
        raise ValueError("target_kw must be finite and >= 0 (its direction says down or up)")
    return target


def _merit_price(terms: ResourceTerms, params: DispatchParams) -> FloatArray:
    """¥ per commanded kWh: the incentive plus the fairness rotation's virtual cost."""
    return np.asarray(
        terms.cost_per_kwh + params.fairness_per_call * terms.times_called, dtype=np.float64
    )


def _objective(
    price: FloatArray,
    kw: FloatArray,
    slot_h: float,
    goal: FloatArray,
    expected: FloatArray,
    excess: FloatArray,
    params: DispatchParams,
) -> float:
    """What both planners minimise: price × kWh (with the fairness and priority terms), plus
    penalties for expected kW off the goal and for rebound beyond the headroom."""
    return float(
        (price[:, None] * kw).sum() * slot_h
        + np.abs(goal - expected).sum() * params.shortfall_penalty_per_kwh * slot_h
        + excess.sum() * params.rebound_penalty_per_kwh * slot_h
    )


def merit_order(
    window: WindowFlexibility,
    direction: Direction,
    target_kw: float | npt.ArrayLike,
    terms: ResourceTerms,
    params: DispatchParams | None = None,
    slot_s: float = 1800.0,
) -> DispatchPlan:
    """Fill ``target_kw`` (a scalar or one per slot) in merit order from the window's flexibility.

    Each resource gets at most the kW it holds over the whole window, so the SOC and comfort
    limits hold whatever slot it is called in.  Vectorised: one sort and one cumulative sum.
    """
    params = params or DispatchParams()
    slots = round(window.duration_s / slot_s)
    if slots < 1 or abs(slots * slot_s - window.duration_s) > 1e-6:
        raise ValueError(
            f"the window ({window.duration_s} s) must be a whole number of {slot_s} s slots"
        )
    target = _targets(target_kw, slots)
    capacity = window.kw(direction)
    n = len(capacity)
    if len(terms.cost_per_kwh) != n:
        raise ValueError(f"terms cover {len(terms.cost_per_kwh)} resources, flexibility {n}")
    rel = terms.reliability
    expected = capacity * rel
    candidates = np.flatnonzero(expected > _TOLERANCE_KW)
    price = _merit_price(terms, params)[candidates] / rel[candidates]
    order = candidates[np.argsort(price, kind="stable")]
    order = order[np.argsort(terms.priority[order], kind="stable")]  # priority first
    offer = expected[order]
    cumulative = np.cumsum(offer)
    before = cumulative - offer
    goal = target * (1.0 + params.margin)
    take = np.clip(goal[None, :] - before[:, None], 0.0, offer[:, None])  # expected kW
    kw = np.zeros((n, slots))
    kw[order] = take / rel[order][:, None]
    available = float(cumulative[-1]) if len(cumulative) else 0.0
    # Reserve: the resources right after the last one dispatched, enough for a share of the peak.
    last = int(np.searchsorted(cumulative, goal.max() - _TOLERANCE_KW, side="left"))
    reserve_kw = params.reserve_fraction * float(target.max(initial=0.0))
    first = min(last + 1, len(order))
    base = cumulative[first - 1] if first > 0 else 0.0
    stop = int(np.searchsorted(cumulative, base + reserve_kw - _TOLERANCE_KW, side="left")) + 1
    reserve = order[first : min(stop, len(order))] if reserve_kw > 0 else order[:0]
    expected_total = take.sum(axis=0)
    slot_h = slot_s / 3600.0
    price = _merit_price(terms, params) + params.priority_step_per_kwh * terms.priority
    objective = _objective(price, kw, slot_h, goal, expected_total, np.zeros(0), params)
    return DispatchPlan(
        direction=direction,
        slot_start_s=window.start_s + slot_s * np.arange(slots, dtype=np.float64),
        slot_s=float(slot_s),
        kw=kw,
        target_kw=target,
        total_kw=kw.sum(axis=0),
        expected_kw=expected_total,
        # what the offers (each above the tolerance) cannot cover; less than that is none
        shortfall_kw=np.where(target - available > _TOLERANCE_KW, target - available, 0.0),
        margin=params.margin,
        reserve=reserve.astype(np.int64),
        method="merit",
        objective=objective,
    )


@dataclass
class _Matrix:
    """A constraint matrix assembled as coordinate triplets, rows with their bounds."""

    rows: list[IntArray] = field(default_factory=list)
    cols: list[IntArray] = field(default_factory=list)
    vals: list[FloatArray] = field(default_factory=list)
    lower: list[FloatArray] = field(default_factory=list)
    upper: list[FloatArray] = field(default_factory=list)
    num_rows: int = 0

    def add(
        self, row: IntArray, col: IntArray, val: FloatArray, lower: FloatArray, upper: FloatArray
    ) -> None:
        """Append ``len(lower)`` rows; ``row`` counts from 0 within them."""
        self.rows.append(np.asarray(row, dtype=np.int64) + self.num_rows)
        self.cols.append(np.asarray(col, dtype=np.int64))
        self.vals.append(np.asarray(val, dtype=np.float64))
        self.lower.append(np.asarray(lower, dtype=np.float64))
        self.upper.append(np.asarray(upper, dtype=np.float64))
        self.num_rows += len(lower)

    def csc(self, num_cols: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], FloatArray]:
        """Column starts, row indices and values (compressed sparse columns)."""
        row = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        col = np.concatenate(self.cols) if self.cols else np.zeros(0, dtype=np.int64)
        val = np.concatenate(self.vals) if self.vals else np.zeros(0)
        order = np.argsort(col, kind="stable")
        start = np.zeros(num_cols + 1, dtype=np.int64)
        np.cumsum(np.bincount(col, minlength=num_cols), out=start[1:])
        return start.astype(np.int32), row[order].astype(np.int32), val[order]

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        if not self.lower:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.lower), np.concatenate(self.upper)


def _energy_rows(
    matrix: _Matrix, cap: FloatArray, ub: FloatArray, slot_h: float, slots: int
) -> None:
    """Σ_{l ≤ k} x[j, l] · slot_h ≤ cap[j, k], only where the row can bind and is not implied."""
    reach = np.cumsum(ub, axis=1) * slot_h  # the most energy the bounds alone allow
    later_min = np.full_like(cap, np.inf)
    later_min[:, :-1] = np.minimum.accumulate(cap[:, ::-1], axis=1)[:, ::-1][:, 1:]
    # A row is implied by a later one with a cap no larger (x >= 0), or by the bounds.
    keep = (cap < later_min) & (cap < reach - 1e-9)
    j, k = np.nonzero(keep)
    if len(j) == 0:
        return
    lengths = k + 1
    row = np.repeat(np.arange(len(j)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    col = np.repeat(j * slots, lengths) + offsets
    matrix.add(row, col, np.full(len(col), slot_h), np.full(len(j), -np.inf), cap[j, k])


@dataclass(frozen=True)
class _Block:
    """The LP over a subset of resources, with what the rest contributes held fixed."""

    ub: FloatArray
    cap: FloatArray
    rel: FloatArray
    price: FloatArray
    share: FloatArray
    goal: FloatArray
    """Per-slot goal left for this block (the fixed resources' part taken off)."""
    headroom: FloatArray
    """Per rebound slot, headroom left; empty when the rebound is not coupled."""


@dataclass(frozen=True)
class _BlockSolution:
    x: FloatArray
    objective: float
    target_dual: FloatArray
    rebound_dual: FloatArray


def _solve_block(
    block: _Block,
    slot_h: float,
    params: DispatchParams,
    terms: ResourceTerms | None = None,
    active: IntArray | None = None,
) -> _BlockSolution:
    """Build the block's model as compressed columns and solve it with HiGHS.

    Columns: x[j, k] (resource-major), then per slot a shortfall and an over-delivery
    (the latter only matters when fixed resources already exceed the goal), then the
    rebound excess per slot after the window; with ``terms``, on/off columns (MILP).
    """
    m, slots = block.ub.shape
    x_cols = m * slots
    cost = [np.repeat(block.price * slot_h, slots)]
    lower = [np.zeros(x_cols)]
    upper = [block.ub.ravel()]
    matrix = _Matrix()

    # Per-slot targets: Σ_j rel_j x[j, k] + shortfall_k − over_k = goal_k.
    shortfall_col = x_cols + np.arange(slots)
    over_col = shortfall_col + slots
    matrix.add(
        np.concatenate([np.tile(np.arange(slots), m), np.arange(slots), np.arange(slots)]),
        np.concatenate([np.arange(x_cols), shortfall_col, over_col]),
        np.concatenate([np.repeat(block.rel, slots), np.ones(slots), -np.ones(slots)]),
        block.goal,
        block.goal,
    )
    penalty = params.shortfall_penalty_per_kwh * slot_h
    cost.append(np.full(2 * slots, penalty))
    lower.append(np.zeros(2 * slots))
    upper.append(np.full(2 * slots, np.inf))
    num_cols = x_cols + 2 * slots

    # Rebound after the window: share × curtailed energy, evenly over the rebound slots.
    # Every rebound slot gets the same amount against the same headroom, so their rows
    # would be identical: one row stands for them all, its excess costing each slot's
    # penalty (the excess is the same in each), and its dual is their duals' sum.
    after = len(block.headroom)
    rebound_row = matrix.num_rows
    if after:
        rebounding = np.flatnonzero(block.share > 0)
        cols = (rebounding[:, None] * slots + np.arange(slots)[None, :]).ravel()
        coef = np.repeat(block.share[rebounding] / after, slots)
        matrix.add(
            np.zeros(len(cols) + 1, dtype=np.int64),
            np.concatenate([cols, [num_cols]]),
            np.concatenate([coef, [-1.0]]),
            np.full(1, -np.inf),
            np.full(1, float(block.headroom.min())),
        )
        cost.append(np.full(1, after * params.rebound_penalty_per_kwh * slot_h))
        lower.append(np.zeros(1))
        upper.append(np.full(1, np.inf))
        num_cols += 1

    _energy_rows(matrix, block.cap, block.ub, slot_h, slots)

    integrality = [np.zeros(num_cols, dtype=np.int32)]
    if terms is not None and active is not None:
        num_cols = _on_off(
            matrix, terms, active, block.ub, slots, num_cols, cost, lower, upper, integrality
        )
    start, index, value = matrix.csc(num_cols)
    row_lower, row_upper = matrix.bounds()
    highs = highspy.Highs()  # type: ignore[no-untyped-call]
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("time_limit", float(params.time_limit_s))
    status = highs.passModel(
        num_cols, matrix.num_rows, len(value),
        int(highspy.MatrixFormat.kColwise), int(highspy.ObjSense.kMinimize), 0.0,
        np.concatenate(cost), np.concatenate(lower), np.concatenate(upper),
        row_lower, row_upper, start, index, value, np.concatenate(integrality),
    )  # fmt: skip
    if status == highspy.HighsStatus.kError:
        raise RuntimeError("HiGHS refused the dispatch model (inconsistent bounds or matrix)")
    solver = params.lp_solver
    if solver == "auto":
        solver = "ipm" if terms is None and num_cols > IPM_ABOVE else "simplex"
    ipm = solver == "ipm" and terms is None
    highs.setOptionValue("solver", "ipm" if ipm else "choose")
    if ipm:
        # HiGHS's presolve takes longer than it saves on these models (bounds and a few
        # dense rows; measured: 100,000 x 6 solved in 6.5 s without it, 13 s with it)
        highs.setOptionValue("presolve", "off")
    highs.run()
    model_status = highs.getModelStatus()
    if model_status != highspy.HighsModelStatus.kOptimal and ipm:
        # the interior point's crossover can end short of a vertex: the simplex finishes
        highs.setOptionValue("solver", "simplex")
        highs.setOptionValue("presolve", "choose")
        highs.run()
        model_status = highs.getModelStatus()
    if model_status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"dispatch LP not solved: {highs.modelStatusToString(model_status)}")
    solution = highs.getSolution()
    x = np.clip(np.asarray(solution.col_value[:x_cols]).reshape(m, slots), 0.0, block.ub)
    duals = np.asarray(solution.row_dual, dtype=np.float64) if terms is None else np.zeros(0)
    return _BlockSolution(
        x=x,
        objective=float(highs.getInfo().objective_function_value),
        target_dual=duals[:slots] if len(duals) else np.zeros(slots),
        rebound_dual=duals[rebound_row : rebound_row + 1] if len(duals) and after else np.zeros(0),
    )


def _reduced_cost(block: _Block, solution: _BlockSolution, slot_h: float) -> FloatArray:
    """Cost of one more kW in each slot, net of what it earns at the block's prices (duals)."""
    after = max(len(block.headroom), 1)
    rebound_price = solution.rebound_dual.sum() * block.share / after
    return np.asarray(
        (block.price * slot_h - rebound_price)[:, None]
        - block.rel[:, None] * solution.target_dual[None, :],
        dtype=np.float64,
    )


def _best_response(d: FloatArray, ub: FloatArray, cap: FloatArray, slot_h: float) -> FloatArray:
    """Each resource's own optimum at prices ``d``: min Σ d·x within bounds and energy caps.

    The caps are nested (every prefix of slots), a laminar family, so filling the most
    profitable slots first, each as far as every cap containing it allows, is optimal.
    """
    m, slots = d.shape
    x = np.zeros((m, slots))
    remaining = cap.copy()
    rows = np.arange(m)
    after = np.arange(slots)[None, :]
    for k in np.argsort(d, axis=1, kind="stable").T:  # the r-th most profitable slot of each
        room = np.minimum.accumulate(remaining[:, ::-1], axis=1)[:, ::-1][rows, k] / slot_h
        amount = np.where(d[rows, k] < 0, np.clip(np.minimum(ub[rows, k], room), 0.0, None), 0.0)
        x[rows, k] = amount
        remaining = remaining - np.where(after >= k[:, None], amount[:, None] * slot_h, 0.0)
    return x


def _decomposed(
    full: _Block, slot_h: float, params: DispatchParams, seed: int = 0
) -> tuple[FloatArray, int]:
    """The full block's optimum by a working set, and how many blocks were solved.

    Prices come first from the LP of a random sample (targets and headroom scaled to it);
    resources whose reduced costs are far from zero at those prices are fixed at their own
    optimum, the rest (the marginal ones) form a small LP.  After each solve every fixed
    resource is checked against the new prices; any that would do better joins the LP.
    When none would, the fixed parts and the LP's solution satisfy the optimality
    conditions of the full LP (each block optimal at one set of duals): the same optimum.
    """
    m = len(full.ub)
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(m, size=min(m, 4000), replace=False))
    scale = len(sample) / m
    estimate = _solve_block(_subset(full, sample, full.goal * scale, full.headroom * scale),
                            slot_h, params)  # fmt: skip
    d = _reduced_cost(full, estimate, slot_h)
    x_fixed = _best_response(d, full.ub, full.cap, slot_h)
    # Free the resources closest to the margin, enough of them that in every slot the goal
    # left after the fixed ones sits well inside what the free ones can give: then the
    # block's prices are set by its own marginal resources, not by a penalty.
    order = np.argsort(np.abs(d).min(axis=1), kind="stable")
    x_sorted = (full.rel[:, None] * x_fixed)[order]
    cap_sorted = (full.rel[:, None] * full.ub)[order]
    fixed_left = x_sorted.sum(axis=0)[None, :] - np.cumsum(x_sorted, axis=0)
    free_cap = np.cumsum(cap_sorted, axis=0)
    left = full.goal[None, :] - fixed_left
    inside_well = ((left >= 0.05 * free_cap) & (left <= 0.95 * free_cap)) | (left >= free_cap)
    ok = inside_well.all(axis=1)
    count = max(2000, m // 50, int(np.argmax(ok)) + 1) if ok.any() else m
    free = np.zeros(m, dtype=np.bool_)
    free[order[:count]] = True
    for solves in range(1, 40):
        fixed = ~free
        fixed_x = np.where(fixed[:, None], x_fixed, 0.0)
        goal = full.goal - (full.rel[:, None] * fixed_x).sum(axis=0)
        rebound = (full.share * fixed_x.sum(axis=1)).sum() / max(len(full.headroom), 1)
        inside = np.flatnonzero(free)
        block = _subset(full, inside, goal, full.headroom - rebound)
        solution = _solve_block(block, slot_h, params)
        d = _reduced_cost(full, solution, slot_h)
        best = _best_response(d, full.ub, full.cap, slot_h)
        value_fixed = (d * x_fixed).sum(axis=1)
        value_best = (d * best).sum(axis=1)
        scale_j = 1e-7 * (1.0 + (np.abs(d) * full.ub).sum(axis=1))
        worse = fixed & (value_fixed > value_best + scale_j)
        if not worse.any():
            x = np.where(fixed[:, None], x_fixed, 0.0)
            x[inside] = solution.x
            return x, solves
        free |= worse
    raise RuntimeError("dispatch decomposition did not converge; use method='full'")


def _subset(full: _Block, rows: IntArray, goal: FloatArray, headroom: FloatArray) -> _Block:
    return _Block(
        ub=full.ub[rows],
        cap=full.cap[rows],
        rel=full.rel[rows],
        price=full.price[rows],
        share=full.share[rows],
        goal=goal,
        headroom=headroom,
    )


IPM_ABOVE = 50_000
"""lp_solver='auto' uses the interior point (without presolve) for LPs with more columns than
this: on a mixed fleet of 100,000 resources x 6 slots (449,000 columns), measured 6.5 s
against 48 s for the simplex; 20,000 resources: 1.7 s against 2.2 s."""

DECOMPOSE_ABOVE: int | None = None
"""method='auto' decomposes LPs with more resource-slot columns than this; None: never.
Measured (bench/bench_dispatch.py), the decomposition is not yet faster than the plain
model on mixed fleets (100,000 x 6: 50 s against 41 s), so 'auto' solves the plain model."""


def dispatch_lp(
    limits: SlotLimits,
    target_kw: float | npt.ArrayLike,
    terms: ResourceTerms,
    params: DispatchParams | None = None,
    *,
    integer: bool = False,
    method: str = "auto",
) -> DispatchPlan:
    """Plan by linear programme (HiGHS): least cost per slot target, with slot coupling.

    Minimises Σ price × kWh + penalties for shortfall and for rebound beyond headroom,
    subject to: per slot, Σ reliability × kW + shortfall = target × (1 + margin); per
    resource and slot, kW within ``limits.kw``; per resource, energy from the window start
    to each slot's end within ``limits.energy_cap_kwh``; after the window, the rebound
    (``limits.rebound_share`` of the curtailed energy, spread over ``rebound_slots``) within
    ``rebound_headroom_kw`` plus a penalised excess.  ``integer=True`` makes resources with
    ``min_kw > 0`` or ``min_run_slots > 1`` on/off with those minimums (MILP).

    ``method``: ``"full"`` passes the whole model to HiGHS; ``"decomposed"`` solves it as
    a working set of marginal resources with the rest fixed at their own optimum (the same
    optimum; LP only); ``"auto"`` decomposes LPs above :data:`DECOMPOSE_ABOVE` columns.
    """
    params = params or DispatchParams()
    if method not in ("auto", "full", "decomposed"):
        raise ValueError(f"method must be 'auto', 'full' or 'decomposed', got {method!r}")
    if integer and method == "decomposed":
        raise ValueError("the decomposition solves LPs only; use method='full' with integer=True")
    n, slots = limits.kw.shape
    if len(terms.cost_per_kwh) != n:
        raise ValueError(f"terms cover {len(terms.cost_per_kwh)} resources, limits {n}")
    target = _targets(target_kw, slots)
    slot_h = limits.slot_s / 3600.0
    rel = terms.reliability
    active = np.flatnonzero((limits.kw > _TOLERANCE_KW).any(axis=1) & (rel > 0))
    price = (
        _merit_price(terms, params)[active] + params.priority_step_per_kwh * terms.priority[active]
    )
    share = limits.rebound_share[active]
    coupled = bool((share > 0).any()) and np.isfinite(params.rebound_headroom_kw)
    full = _Block(
        ub=limits.kw[active],
        cap=limits.energy_cap_kwh[active],
        rel=rel[active],
        price=price,
        share=share,
        goal=target * (1.0 + params.margin),
        headroom=np.full(params.rebound_slots if coupled else 0, params.rebound_headroom_kw),
    )
    decompose = method == "decomposed" or (
        method == "auto"
        and not integer
        and DECOMPOSE_ABOVE is not None
        and len(active) * slots > DECOMPOSE_ABOVE
    )
    if decompose:
        x, _ = _decomposed(full, slot_h, params)
    else:
        x = _solve_block(full, slot_h, params, terms if integer else None, active).x
    kw = np.zeros((n, slots))
    kw[active] = x
    expected = (full.rel[:, None] * x).sum(axis=0)
    after = params.rebound_slots
    rebound = np.full(after, (share * x.sum(axis=1)).sum() / after) if share.any() else np.zeros(0)
    excess = np.maximum(rebound - params.rebound_headroom_kw, 0.0)
    objective = _objective(price, x, slot_h, full.goal, expected, excess, params)
    return DispatchPlan(
        direction=limits.direction,
        slot_start_s=limits.start_s + limits.slot_s * np.arange(slots, dtype=np.float64),
        slot_s=limits.slot_s,
        kw=kw,
        target_kw=target,
        total_kw=kw.sum(axis=0),
        expected_kw=expected,
        shortfall_kw=np.where(target - expected > 1e-6, target - expected, 0.0),
        margin=params.margin,
        reserve=_lp_reserve(limits, terms, params, kw, target),
        method=("milp" if integer else "lp") + ("-decomposed" if decompose else ""),
        objective=objective,
        rebound_kw=rebound,
        rebound_excess_kw=excess,
    )


def _lp_reserve(
    limits: SlotLimits,
    terms: ResourceTerms,
    params: DispatchParams,
    kw: FloatArray,
    target: FloatArray,
) -> IntArray:
    """Undispatched resources in merit order until they hold the reserve share of the peak."""
    idle = ~(kw > _TOLERANCE_KW).any(axis=1)
    held = limits.kw.min(axis=1) * terms.reliability
    candidates = np.flatnonzero(idle & (held > _TOLERANCE_KW))
    price = _merit_price(terms, params)[candidates] / terms.reliability[candidates]
    order = candidates[np.argsort(price, kind="stable")]
    order = order[np.argsort(terms.priority[order], kind="stable")]
    need = params.reserve_fraction * float(target.max(initial=0.0))
    if need <= 0:
        return order[:0].astype(np.int64)
    cumulative = np.cumsum(held[order])
    stop = int(np.searchsorted(cumulative, need - _TOLERANCE_KW, side="left")) + 1
    return order[:stop].astype(np.int64)


def _on_off(
    matrix: _Matrix,
    terms: ResourceTerms,
    active: IntArray,
    ub: FloatArray,
    slots: int,
    num_cols: int,
    cost: list[FloatArray],
    lower: list[FloatArray],
    upper: list[FloatArray],
    integrality: list[npt.NDArray[np.int32]],
) -> int:
    """Add on/off binaries, start indicators and minimum kW / run-time rows; new column count."""
    min_kw = terms.min_kw[active]
    min_run = terms.min_run_slots[active]
    switched = np.flatnonzero((min_kw > 0) | (min_run > 1))
    b = len(switched)
    if b == 0:
        return num_cols
    on = num_cols + np.arange(b * slots).reshape(b, slots)
    start = on + b * slots
    x = (switched * slots)[:, None] + np.arange(slots)[None, :]
    flat = np.arange(b * slots)
    # x ≤ ub · on and x ≥ min_kw · on
    matrix.add(
        np.concatenate([flat, flat]),
        np.concatenate([x.ravel(), on.ravel()]),
        np.concatenate([np.ones(b * slots), -ub[switched].ravel()]),
        np.full(b * slots, -np.inf),
        np.zeros(b * slots),
    )
    matrix.add(
        np.concatenate([flat, flat]),
        np.concatenate([x.ravel(), on.ravel()]),
        np.concatenate([np.ones(b * slots), -np.repeat(min_kw[switched], slots)]),
        np.zeros(b * slots),
        np.full(b * slots, np.inf),
    )
    # start[k] ≥ on[k] − on[k−1] (on[−1] = 0)
    previous = np.concatenate([np.full((b, 1), -1), on[:, :-1]], axis=1).ravel()
    has_previous = previous >= 0
    matrix.add(
        np.concatenate([flat, flat, flat[has_previous]]),
        np.concatenate([start.ravel(), on.ravel(), previous[has_previous]]),
        np.concatenate([np.ones(b * slots), -np.ones(b * slots), np.ones(int(has_previous.sum()))]),
        np.zeros(b * slots),
        np.full(b * slots, np.inf),
    )
    # Σ_{l = k}^{k + run − 1} on[l] ≥ run_k · start[k], the run cut at the window's end
    run = np.minimum(min_run[switched][:, None], slots - np.arange(slots)[None, :])
    rows, cols, vals = [], [], []
    for offset in range(int(run.max())):  # a few slots: one vectorised pass per offset
        reach = run > offset
        r = np.flatnonzero(reach.ravel())
        rows.append(r)
        cols.append(on.ravel()[r + offset])  # flat index j·slots + k + offset
        vals.append(np.ones(len(r)))
    rows.append(flat)
    cols.append(start.ravel())
    vals.append(-run.ravel().astype(np.float64))
    matrix.add(
        np.concatenate(rows),
        np.concatenate(cols),
        np.concatenate(vals),
        np.zeros(b * slots),
        np.full(b * slots, np.inf),
    )
    cost.append(np.zeros(2 * b * slots))
    lower.append(np.zeros(2 * b * slots))
    upper.append(np.ones(2 * b * slots))
    integrality[0] = np.concatenate([integrality[0], np.ones(b * slots, dtype=np.int32),
                                     np.zeros(b * slots, dtype=np.int32)])  # fmt: skip
    return num_cols + 2 * b * slots
