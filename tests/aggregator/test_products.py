"""Balancing-market products: the shipped table, bad product files, and the checks of an
event against its product (slot kWh for the slow ones, 1-s telemetry for the fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.aggregator.products import (
    ProductError,
    dashboard_products,
    get_product,
    load_products,
    verify_slots,
    verify_telemetry,
)


def test_the_shipped_products_carry_the_published_figures() -> None:
    p = load_products()
    assert list(p) == ["primary", "secondary-1", "secondary-2", "tertiary-1", "tertiary-2",
                       "capacity-dr"]  # fmt: skip
    assert (p["primary"].response_time_s, p["primary"].min_duration_s) == (10, 300)
    assert (p["secondary-1"].response_time_s, p["secondary-1"].min_duration_s) == (300, 1800)
    assert (p["tertiary-1"].response_time_s, p["tertiary-1"].min_duration_s) == (900, 10800)
    assert (p["tertiary-2"].response_time_s, p["tertiary-2"].block_minutes) == (3600, 30)
    assert (p["capacity-dr"].notice_s, p["capacity-dr"].min_duration_s) == (10800, 10800)
    assert p["capacity-dr"].grace_s == 0  # dispatched 3 h ahead: delivers from the start
    assert {x.assessment for x in p.values() if x.response_time_s <= 300} == {"instantaneous-kw"}
    assert [d["name"] for d in dashboard_products()] == list(p)


def test_an_unknown_product_names_the_known_ones() -> None:
    with pytest.raises(ProductError, match="unknown product 'quaternary'; known: primary"):
        get_product("quaternary")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("response_time_s = 10\n", ""), "missing response_time_s"),
        (lambda t: t.replace('assessment = "slot-kwh"', 'assessment = "daily"', 1),
         "assessment 'daily'"),
        (lambda t: t.replace("min_offer_kw = 1000", "min_offer_kw = -5", 1), "min_offer_kw"),
        (lambda t: t.replace('name = "secondary-1"', 'name = "primary"'), "appears twice"),
        (lambda t: t + "\n[[product\n", "not valid TOML"),
    ],
)
def test_a_bad_products_file_is_refused_with_the_reason(
    tmp_path: Path, edit: object, message: str
) -> None:
    from importlib import resources

    text = resources.files("erab.aggregator").joinpath("data/products.toml").read_text()
    path = tmp_path / "products.toml"
    path.write_text(edit(text))  # type: ignore[operator]
    with pytest.raises(ProductError, match=message):
        load_products(path)


def test_slot_checks_pass_a_three_hour_tertiary_1_event_held_throughout() -> None:
    t1 = get_product("tertiary-1")
    committed = np.full(6, 500.0)  # 1,000 kW for 3 h
    delivered = np.array([300.0, 480, 500, 510, 460, 470])  # ramping in the first slot
    checks = {c.name: c for c in verify_slots(t1, -1000.0, 10800, 0, delivered, committed)}
    assert all(c.passed for c in checks.values()), checks
    assert checks["response"].value == 480.0 and checks["response"].limit == pytest.approx(450)
    assert checks["held for duration"].value == 10800


def test_slot_checks_fail_a_fleet_that_gives_up_and_say_where() -> None:
    t1 = get_product("tertiary-1")
    delivered = np.array([500.0, 500, 500, 200, 500, 500])
    checks = {c.name: c for c in verify_slots(t1, -1000.0, 10800, 0, delivered,
                                              np.full(6, 500.0))}  # fmt: skip
    held = checks["held for duration"]
    assert held.passed is False and held.value == 5400  # three slots then the gap
    assert "5 of 5 assessed slots" not in held.detail and "4 of 5" in held.detail


def test_capacity_dr_has_no_grace_after_the_start() -> None:
    cap = get_product("capacity-dr")
    delivered = np.array([100.0, 500, 500, 500, 500, 500])
    checks = {c.name: c for c in verify_slots(cap, -1000.0, 10800, 0, delivered,
                                              np.full(6, 500.0))}  # fmt: skip
    assert checks["response"].passed is False and checks["response"].value == 100.0


def test_block_length_and_minimum_offer_are_checked() -> None:
    t2 = get_product("tertiary-2")
    checks = {c.name: c for c in verify_slots(t2, -400.0, 2700, 0, np.ones(2), np.ones(2))}
    assert checks["block length"].passed is False and checks["block length"].value == 1.5
    assert checks["minimum offer"].passed is False and checks["minimum offer"].value == 400


def test_telemetry_checks_measure_response_and_holding_in_seconds() -> None:
    primary = get_product("primary")
    t = np.arange(0.0, 400.0, 1.0)
    kw = np.clip(t * 200.0, 0, 1100.0)  # 200 kW/s ramp to 1,100 kW
    checks = {c.name: c for c in verify_telemetry(primary, -1000.0, 360.0, t, kw)}
    assert checks["response"].passed and checks["response"].value == 5.0  # 1,000 kW at 5 s
    assert checks["held for duration"].passed
    assert checks["held for duration"].value == pytest.approx(394.0)
    slow = {c.name: c for c in verify_telemetry(primary, -1000.0, 360.0, t, t * 50.0)}
    assert slow["response"].passed is False and slow["response"].value == 18.0


def test_telemetry_sampled_too_coarsely_fails_the_interval_check() -> None:
    primary = get_product("primary")
    t = np.arange(0.0, 400.0, 10.0)
    checks = {c.name: c for c in verify_telemetry(primary, -1000.0, 360, t, np.full(40, 1e3))}
    assert checks["telemetry interval"].passed is False
    assert checks["telemetry interval"].value == 10.0
    # gaps longer than the product's interval end a holding run
    assert checks["held for duration"].passed is False


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.dictionaries(
        st.sampled_from(["name", "label", "response_time_s", "min_duration_s", "block_minutes",
                         "min_offer_kw", "assessment", "telemetry_interval_s", "notice_s",
                         "tolerance_pct", "price_yen_per_kwh", "penalty_yen_per_kwh", "x"]),
        st.one_of(st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=8),
                  st.booleans()),
    ), max_size=3).map(lambda rows: "\n".join(
        "[[product]]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in row.items())
        for row in rows)),
))  # fmt: skip
def test_any_products_file_loads_or_is_refused_with_a_product_error(text: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.toml"
        path.write_text(text, encoding="utf-8")
        try:
            products = load_products(path)
        except ProductError as exc:
            assert str(exc)
        else:
            for p in products.values():
                assert p.assessment in ("instantaneous-kw", "slot-kwh")
                numbers = [v for v in p.as_dict().values() if isinstance(v, float)]
                assert all(np.isfinite(v) and v >= 0 for v in numbers), p


def _toml(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == float("inf") else
                                     "-inf" if v == float("-inf") else repr(v))  # fmt: skip
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)


def test_fleet_delivery_from_resource_telemetry_against_the_level_before_the_start() -> None:
    from erab.aggregator.products import telemetry_delivery

    start = 1_800_000_000.0
    samples = []
    for r in range(10):
        for k in range(-300, 400):
            discharging = r < 5 and k >= 3  # half the fleet answers 3 s after the start
            samples.append((f"b{r}", start + k, -1.0 if discharging else 2.0))
    d = telemetry_delivery(samples, start, start + 360, "down")
    assert d.reference_kw == pytest.approx(20.0) and d.interval_s == 1.0 and d.resources == 10
    assert d.delivered_kw[0] == pytest.approx(0.0) and d.delivered_kw[5] == pytest.approx(15.0)
    primary = get_product("primary")
    checks = {c.name: c for c in verify_telemetry(primary, -15.0, 360, d.times_s, d.delivered_kw,
                                                  interval_s=d.interval_s)}  # fmt: skip
    assert checks["response"].value == 3.0 and checks["response"].passed
    assert checks["held for duration"].passed and checks["telemetry interval"].passed


def test_a_resource_falling_silent_is_left_out_and_never_reads_as_delivery() -> None:
    from erab.aggregator.products import telemetry_delivery

    start = 1_800_000_000.0
    samples = [("a", start + k, 1.0) for k in range(-300, 400)]
    samples += [("b", start + k, 1.0) for k in range(-300, 0)]  # b falls silent at the start
    d = telemetry_delivery(samples, start, start + 300, "down", stale_s=60)
    assert (d.resources, d.dropped) == (1, 1)
    assert d.reference_kw == pytest.approx(1.0)
    assert np.abs(d.delivered_kw).max() == pytest.approx(0.0)
    with pytest.raises(ProductError, match="no telemetry"):
        telemetry_delivery([], start, start + 300, "down")
    with pytest.raises(ProductError, match="gaps longer than 60 s"):
        telemetry_delivery(samples[700:], start, start + 300, "down")
