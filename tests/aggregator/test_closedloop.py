"""The closed loop's decision: delivered kW from the reference, corrections outside ±10 %."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erab.aggregator.closedloop import check_delivery


def test_a_down_event_delivering_too_little_calls_for_more() -> None:
    c = check_delivery(-100.0, reference_kw=500.0, now_kw=420.0)
    assert (c.delivered_kw, c.adjust_kw) == (80.0, 20.0)
    assert c.ratio == pytest.approx(0.8)


def test_inside_the_band_nothing_changes_and_too_much_is_released() -> None:
    assert check_delivery(-100.0, 500.0, 405.0).adjust_kw == 0.0  # 95 kW: inside ±10 %
    assert check_delivery(-100.0, 500.0, 380.0).adjust_kw == -20.0  # 120 kW: release 20


def test_an_up_event_counts_the_rise() -> None:
    c = check_delivery(50.0, reference_kw=100.0, now_kw=130.0)
    assert (c.delivered_kw, c.adjust_kw) == (30.0, 20.0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="non-zero"):
        check_delivery(0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="tolerance"):
        check_delivery(-1.0, 1.0, 1.0, tolerance=1.5)


@given(st.floats(-1e4, 1e4).filter(lambda t: abs(t) > 1e-3), st.floats(-1e4, 1e4),
       st.floats(-1e4, 1e4))  # fmt: skip
def test_after_the_correction_delivery_equals_the_target(target: float, ref: float,
                                                          now: float) -> None:  # fmt: skip
    c = check_delivery(target, ref, now)
    corrected = c.delivered_kw + c.adjust_kw
    if c.adjust_kw:
        assert corrected == pytest.approx(abs(target), rel=1e-9, abs=1e-6)
    else:
        assert abs(c.delivered_kw - abs(target)) <= 0.1 * abs(target) + 1e-9


def test_commanded_resources_count_their_own_move_and_pending_ones_what_is_expected() -> None:
    from erab.aggregator.closedloop import commanded_delivery

    # two batteries commanded 2 kW down each: one shows it (+1 -> -1 kW), one's command
    # does not show yet (its reading still +0.5 kW): it counts the 2 kW expected of it
    c = commanded_delivery(-4.0, [1.0, 0.5], [-1.0, 0.5], [2.0, 2.0], [True, False])
    assert (c.reference_kw, c.delivered_kw, c.adjust_kw) == (1.5, 4.0, 0.0)
    # once it shows, and gives only 1 kW (its home's import), the loop asks 1 kW more
    c = commanded_delivery(-4.0, [1.0, 0.5], [-1.0, -0.5], [2.0, 2.0], [True, True])
    assert (c.delivered_kw, c.adjust_kw) == (3.0, 1.0)
    # up: the rise counts; a resource not heard counts what is expected of it
    c = commanded_delivery(2.0, [0.0, 0.0], [1.0, float("nan")], [1.0, 1.0], [True, True])
    assert (c.delivered_kw, c.adjust_kw) == (2.0, 0.0)


def test_allocate_fills_each_resource_in_order_up_to_its_room() -> None:
    from erab.aggregator.closedloop import allocate

    assert allocate(2.5, [1.0, float("nan"), 2.0, 3.0]).tolist() == [1.0, 0.0, 1.5, 0.0]
    assert allocate(-1.0, [1.0]).tolist() == [0.0]
    assert allocate(9.0, [1.0, -2.0]).tolist() == [1.0, 0.0]


def test_a_batterys_hold_to_the_window_end_keeps_its_reserve_through_the_converter() -> None:
    import numpy as np

    from erab.aggregator.closedloop import battery_hold_kw

    # 10 kWh at 50 %, reserve 20 %, max 95 %, two hours left: 29 points usable (1 for the
    # whole-percent reading), 2.9 kWh, 2.755 kWh out of the converter: 1.3775 kW down
    down = battery_hold_kw([50.0, 20.5, np.nan], [10.0, 10.0, 10.0], [20.0, 20.0, 20.0],
                           [95.0, 95.0, 95.0], 2.0, down=True)  # fmt: skip
    np.testing.assert_allclose(down[:2], [1.3775, 0.0])
    assert np.isnan(down[2])  # no reading: nothing to guard by
    # up: 44 points to 95 %, 4.4 kWh in the cells, 4.63 kWh drawn over two hours
    up = battery_hold_kw([50.0], [10.0], [20.0], [95.0], 2.0, down=False)
    np.testing.assert_allclose(up, [4.4 / 0.95 / 2.0])
    with pytest.raises(ValueError, match="hours_left"):
        battery_hold_kw([50.0], [10.0], [20.0], [95.0], 0.0, down=True)
