"""How the RA calls air conditioners in a down event, without a broker: an air conditioner
offers no more than its site imports where a battery or a fuel cell follows the site's load;
the dispatch calls whole units (a raised setpoint idles a unit at once), never overshooting
the target by more than it would leave short; a unit called later is measured against the
uncommanded units' power since its own call, not since the dispatch; a shed the site's battery
takes up counts as nothing; and a battery charging when called counts only until it would have
been full."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from erab.aggregator.events import EventRequest
from erab.aggregator.fanout import CommandStage, Fanout
from erab.aggregator.registry import Registry
from erab.aggregator.service import RaService
from erab.aggregator.thermal import ThermalModel
from erab.bus import MeterReading, Sample, TelemetryBatch
from erab.clock import SimulatedClock
from erab.store import Gateway, Resource, Site, SqliteStore
from tests.aggregator.test_operations import Publisher
from tests.bus.conftest import Deployment, make_deployment
from tests.gateway.test_fleet import with_command_key

NOW = datetime(2026, 8, 4, 5, 0, tzinfo=UTC)  # 14:00 JST
PLAIN = [f"home-{i}" for i in range(6)]  # an air conditioner only
BATTERY, FUEL_CELL = "home-bat", "home-fc"


def register(home: Path) -> None:
    store = SqliteStore(home / "ra" / "ra.sqlite")
    reg = Registry(store, SimulatedClock(NOW - timedelta(hours=1), speed=0))
    for i, site in enumerate([*PLAIN, BATTERY, FUEL_CELL]):
        reg.add_site(Site(site, site))
        reg.add_gateway(Gateway(f"gw-{site}", site))
        node = f"fe{i:04x}"
        reg.add_resource(Resource(f"{site}.ac", site, f"gw-{site}", "aircon", node, "013001",
                                  rated_kw=1.0, comfort_min_c=20.0, comfort_max_c=28.0))
        if site == BATTERY:
            reg.add_resource(Resource(f"{site}.bat", site, f"gw-{site}", "battery", node,
                                      "027d01", rated_kw=3.0, rated_kwh=10.0,
                                      soc_reserve_pct=20.0, soc_max_pct=95.0))  # fmt: skip
        if site == FUEL_CELL:
            reg.add_resource(Resource(f"{site}.fc", site, f"gw-{site}", "fuel_cell", node,
                                      "027c01", rated_kw=0.7))  # fmt: skip
    store.close()


@pytest.fixture
def ra(tmp_path: Path) -> RaService:
    deployment: Deployment = make_deployment(tmp_path)
    with_command_key(deployment)
    register(deployment.home)
    service = RaService(deployment.home, clock=SimulatedClock(NOW, speed=0), start_spread_s=0.0)
    service.fanout = Fanout(Publisher(), service.signer, service.clock)
    # every room alike: it leaks 0.3 K/h per K, a kW of the unit moves it 5 K/h
    service.thermal = ThermalModel.of([0.3] * service.state.sites, 5.0)
    return service


def feed(ra: RaService, seq: int, ac_kw: dict[str, float], *, meter_kw: dict[str, float],
         battery_kw: float = 0.0) -> None:  # fmt: skip
    at = ra.clock.now()
    messages: list[object] = []
    for site in [*PLAIN, BATTERY, FUEL_CELL]:
        samples = [Sample(device_id=f"{site}.ac", measured_at=at, values={
            "power_w": 1000.0 * ac_kw.get(site, 0.4), "setpoint_c": 26.0, "room_temp_c": 26.0,
            "outdoor_temp_c": 33.0, "mode_code": 0x42, "operating": 1.0})]  # fmt: skip
        if site == BATTERY:
            samples.append(Sample(device_id=f"{site}.bat", measured_at=at, values={
                "power_w": 1000.0 * battery_kw, "soc_pct": 60.0}))  # fmt: skip
        messages.append(TelemetryBatch(gateway_id=f"gw-{site}", seq=seq, sent_at=at,
                                       samples=samples))  # fmt: skip
        messages.append(MeterReading(gateway_id=f"gw-{site}", seq=seq + 1000, sent_at=at,
                                     meter_id=f"{site}.meter", measured_at=at,
                                     power_w=1000.0 * meter_kw.get(site, 0.6)))  # fmt: skip
    ra.apply_telemetry(messages)


def row(ra: RaService, resource_id: str) -> int:
    return [r.resource_id for r in ra.resources].index(resource_id)


def test_a_shed_where_a_battery_or_fuel_cell_follows_the_load_counts_only_up_to_the_import(
    ra: RaService,
) -> None:
    # the battery charges 1 kW from the PV's surplus: the site imports nothing, and what the
    # air conditioner sheds would only charge the battery faster; the fuel cell's site
    # imports 0.25 kW, all the meter can see of a shed there
    feed(ra, 1, {}, meter_kw={BATTERY: 0.0, FUEL_CELL: 0.25}, battery_kw=1.0)
    window = ra.window_flexibility(ra.clock.now(), 3 * 3600.0)
    down = {r.resource_id: float(window.down_kw[i]) for i, r in enumerate(ra.resources)}
    assert down["home-0.ac"] > 0.1  # 2 K of margin / 5 K per kWh over 3 h: 0.13 kW
    assert down[f"{BATTERY}.ac"] == 0.0
    assert 0.0 < down[f"{FUEL_CELL}.ac"] <= 0.25 - 0.05

    # once the battery stands idle (full), a shed shows at the meter again
    feed(ra, 2, {}, meter_kw={BATTERY: -0.8, FUEL_CELL: 0.25}, battery_kw=0.0)
    window = ra.window_flexibility(ra.clock.now(), 3 * 3600.0)
    assert window.down_kw[row(ra, f"{BATTERY}.ac")] == pytest.approx(down["home-0.ac"])


async def test_the_dispatch_calls_whole_units_and_keeps_the_rest_first_in_reserve(
    ra: RaService,
) -> None:
    feed(ra, 1, {}, meter_kw={BATTERY: 0.0, FUEL_CELL: 0.0}, battery_kw=1.0)
    # 0.9 kW from units of 0.4 kW each: two (0.8, 11 % short) rather than three (33 % over)
    event = await ra.create_event(EventRequest(-0.9, NOW, timedelta(hours=3),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    called = [c for c in plan.commands if c.body["type"] == "aircon_offset"]
    assert len(called) == 2
    assert sum(plan.planned_kw(c) for c in called) == pytest.approx(0.8)
    ac_reserve = [r for r in plan.reserve if ra.resources[r].device_class == "aircon"]
    # the unit the merit order called for the margin waits first in line
    assert plan.reserve[0] == ac_reserve[0] and ac_reserve[0] in plan.plan.dispatched
    sent = ra.fanout.publisher.sent  # type: ignore[union-attr]
    assert {json.loads(w)["envelope"]["body"]["offset_c"] for _, w in sent} == {2.0}


async def test_a_unit_called_later_is_measured_from_its_own_call(ra: RaService) -> None:
    feed(ra, 1, {}, meter_kw={BATTERY: 0.0, FUEL_CELL: 0.0}, battery_kw=1.0)
    event = await ra.create_event(EventRequest(-0.4, NOW, timedelta(hours=3),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    [first] = plan.row_commands
    assert plan.reference_of[first] == pytest.approx(0.4)
    # an hour on, the uncommanded units draw a quarter less (the sun has moved); a second
    # unit is called then, at their new level
    clock = ra.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance(3600.0)
    others = {s: 0.3 for s in [*PLAIN, BATTERY, FUEL_CELL]}
    feed(ra, 2, others | {ra.resources[first].site_id: 0.0},
         meter_kw={BATTERY: 0.0, FUEL_CELL: 0.0}, battery_kw=1.0)  # fmt: skip
    second = next(r for r in plan.reserve if ra.resources[r].device_class == "aircon")
    await ra._send_rows(plan, ra.events.get(event.event_id).request, [(second, 0.3)])
    # later still, the uncommanded units are back to 0.4 kW
    clock.advance(600.0)
    feed(ra, 3, {ra.resources[first].site_id: 0.0, ra.resources[second].site_id: 0.0},
         meter_kw={BATTERY: 0.0, FUEL_CELL: 0.0}, battery_kw=1.0)  # fmt: skip
    rows = [(r, plan.row_commands[r][-1]) for r in (first, second)]
    reference = ra._references(plan, rows)
    # the first against the dispatch (0.4 → 0.4: unchanged), the second against its own
    # call (0.3 → 0.4: a third more), not against the dispatch
    assert reference[0] == pytest.approx(0.4, rel=0.01)
    assert reference[1] == pytest.approx(0.3 * 0.4 / 0.3, rel=0.01)


async def test_a_shed_the_sites_battery_takes_up_is_not_counted_as_delivered(
    ra: RaService,
) -> None:
    # the battery stands idle and the home imports: its air conditioner's shed shows
    feed(ra, 1, {}, meter_kw={BATTERY: 0.6, FUEL_CELL: 0.0}, battery_kw=0.0)
    unit = row(ra, f"{BATTERY}.ac")
    others = [i for i, r in enumerate(ra.resources) if i != unit]
    ra.state.available[others] = False  # the event can only call this one
    event = await ra.create_event(EventRequest(-0.4, NOW, timedelta(hours=3),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    assert list(plan.row_commands) == [unit]
    command = plan.row_commands[unit][0]
    command.stage = CommandStage.ACKNOWLEDGED
    command.acknowledged_at = NOW
    clock = ra.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance(120.0)
    feed(ra, 2, {BATTERY: 0.0}, meter_kw={BATTERY: 0.2, FUEL_CELL: 0.0}, battery_kw=0.0)
    assert ra.commanded_check(event.event_id).delivered_kw == pytest.approx(0.4)
    # later the battery starts covering the home: the meter reads 0 whatever the unit does
    clock.advance(120.0)
    feed(ra, 3, {BATTERY: 0.0}, meter_kw={BATTERY: 0.0, FUEL_CELL: 0.0}, battery_kw=-0.2)
    check = ra.commanded_check(event.event_id)
    assert check.delivered_kw == pytest.approx(0.0)
    assert check.adjust_kw == pytest.approx(0.4)


async def test_a_battery_charging_when_called_is_counted_only_until_it_would_have_been_full(
    ra: RaService,
) -> None:
    # the battery charges 2 kW from the PV's surplus at 80 %: 10 kWh × (95 − 80) % = 1.5 kWh
    # to its max, full in 45 minutes had it been left alone
    feed(ra, 1, {}, meter_kw={BATTERY: 0.0, FUEL_CELL: 0.0}, battery_kw=2.0)
    unit = row(ra, f"{BATTERY}.bat")
    ra.state.soc_pct[unit] = 80.0
    others = [i for i in range(len(ra.resources)) if i != unit]
    ra.state.available[others] = False
    event = await ra.create_event(EventRequest(-1.0, NOW, timedelta(hours=3),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    assert list(plan.row_commands) == [unit]
    rows = [(unit, plan.row_commands[unit][0])]
    clock = ra.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance(40 * 60.0)
    assert ra._references(plan, rows) == [pytest.approx(2.0)]
    clock.advance(10 * 60.0)
    assert ra._references(plan, rows) == [0.0]  # its twin is full and charges no more
