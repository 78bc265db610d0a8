"""Building a town for ``erab emulate``: meters whose past is the town's own physics."""

from __future__ import annotations

import socket
from datetime import datetime

import numpy as np
import pytest

from erab.clock import JST
from erab.devices import Scenario, SiteSpec, Town
from erab.echonet.transport import TransportError, random_loopback_address
from erab.meter.smartmeter import SmartMeter
from erab.sim import build_emulation, check_site_addresses

START = datetime(2026, 8, 20, 14, 10, tzinfo=JST)


@pytest.fixture(scope="module")
def emulation():
    return build_emulation(Scenario.generate(2, 1, seed=4), START, history_days=45)


def _meter(emulation, site: int) -> SmartMeter:
    return next(o for o in emulation.server.nodes[site].objects if isinstance(o, SmartMeter))


def test_the_meters_answer_45_days_of_history_from_the_start(emulation) -> None:
    meter = _meter(emulation, 0)
    oldest = meter.history(45)
    assert oldest[0].point == datetime(2026, 7, 6, tzinfo=JST)
    assert all(r.import_kwh is not None for r in oldest)
    assert meter.history(46)[0].import_kwh is None
    today = meter.history(0)
    assert today[28].import_kwh is not None and today[29].import_kwh is None  # 14:00 / 14:30


def test_the_town_and_its_meters_stand_at_the_start_time(emulation) -> None:
    assert emulation.town.time_s == START.timestamp()
    assert emulation.meters.time_s == START.timestamp()
    assert 0 <= (emulation.clock.now() - START).total_seconds() < 60  # real time runs on
    assert _meter(emulation, 2).now == START


def test_the_history_is_the_towns_own_physics(emulation) -> None:
    # the same scenario run alone at 30-minute steps gives the same energy, slot by slot
    scenario = emulation.scenario
    origin = datetime(2026, 7, 6, tzinfo=JST)
    town = Town(scenario, origin, max_step_s=1800.0)
    net_w = town.simulate(datetime(2026, 8, 20, 14, 0, tzinfo=JST).timestamp(), 1800.0)
    imported_kwh = net_w.clip(min=0).sum(axis=0) * 0.5 / 1000.0
    point = datetime(2026, 8, 20, 14, 0, tzinfo=JST)
    for site in range(town.n_sites):
        m = _meter(emulation, site)
        used = m.reading_at(point).import_kwh - m.history(45)[0].import_kwh
        assert used == pytest.approx(imported_kwh[site], abs=0.1 + 1e-9)  # one 0.1 kWh count
    # and a store uses more than a home
    used = [
        _meter(emulation, i).reading_at(point).import_kwh
        - _meter(emulation, i).history(45)[0].import_kwh
        for i in range(3)
    ]
    assert used[2] > max(used[0], used[1])


def test_progress_is_reported_per_stage_up_to_its_total() -> None:
    seen: list[tuple[str, int, int]] = []
    build_emulation(
        Scenario((SiteSpec("only"),), seed=1),
        datetime(2026, 8, 20, 1, 0, tzinfo=JST),
        history_days=1,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    assert {s for s, _, _ in seen} == {"history"}
    assert seen[-1] == ("history", 50, 50)  # yesterday's 48 slots and today's 2
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)


def test_the_summary_counts_the_energy_of_the_run_and_names_the_registers_apart() -> None:
    emulation = build_emulation(Scenario.generate(2, 1, seed=4), START, history_days=2)
    at_start = emulation.summary()
    assert at_start["import_kwh"] == 0.0 and at_start["export_kwh"] == 0.0
    assert at_start["register_import_kwh"] > 100.0  # the meters' reading before the run
    # run two simulated hours, integrating the sites' net power independently
    imported_wh = np.zeros(3)
    exported_wh = np.zeros(3)

    def integrate(t0: float, t1: float, net_w: np.ndarray) -> None:
        imported_wh[:] += np.maximum(net_w, 0.0) * (t1 - t0) / 3600.0
        exported_wh[:] += np.maximum(-net_w, 0.0) * (t1 - t0) / 3600.0

    emulation.town.observers.append(integrate)
    emulation.town.advance_to(START.timestamp() + 7200.0)
    summary = emulation.summary()
    assert summary["sites"] == 3
    assert summary["started"] == START.isoformat()
    assert summary["stopped"] == datetime(2026, 8, 20, 16, 10, tzinfo=JST).isoformat()
    assert summary["simulated_s"] == 7200.0
    assert summary["import_kwh"] == pytest.approx(imported_wh.sum() / 1000.0, abs=1e-6)
    assert summary["export_kwh"] == pytest.approx(exported_wh.sum() / 1000.0, abs=1e-6)
    assert 1.0 < summary["import_kwh"] < 50.0  # two summer afternoon hours of three sites
    register_kwh = summary["register_import_kwh"]
    assert register_kwh == round(float(np.sum(emulation.meters.import_wh)) / 1000, 3)
    assert register_kwh == pytest.approx(
        at_start["register_import_kwh"] + summary["import_kwh"], abs=2e-3
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"history_days": 100}, "history_days must be 0-99"),
        ({"history_days": -1}, "history_days must be 0-99"),
    ],
)
def test_bad_history_days_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_emulation(Scenario.generate(1, 0), START, **kwargs)


def test_a_naive_start_time_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        build_emulation(Scenario.generate(1, 0), datetime(2026, 8, 20, 14, 10), history_days=0)


def test_site_addresses_are_checked_and_the_taken_one_named() -> None:
    scenario = Scenario.generate(2, 1, seed=4)
    base = random_loopback_address()
    check_site_addresses(scenario, base=base)  # all three free: no error
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind((base, 3610))
    try:
        with pytest.raises(TransportError) as info:
            check_site_addresses(scenario, base=base)
    finally:
        taken.close()
    assert info.value.address_in_use
    name = scenario.sites[0].name
    assert str(info.value) == f"cannot serve site {name} on {base}:3610: Address already in use"
