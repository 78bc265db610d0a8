"""A resource registered while the RA runs reaches its live state, without a broker: rows
and sites are appended (nothing that is there moves, mid-event neither), a withdrawn
resource keeps its row but is no longer available, an edit of a resource's constraints
restates its row, and the tick picks up what another process wrote to the store."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from erab.aggregator.api import create_app
from erab.aggregator.events import EventRequest
from erab.aggregator.fanout import Fanout
from erab.aggregator.ingest import CommittedReadings
from erab.aggregator.registry import Registry
from erab.aggregator.service import CHECK_GATEWAYS_EVERY_S, RaService
from erab.aggregator.state import FleetState, ResourceKind, TelemetryBatch, TelemetryField
from erab.aggregator.thermal import ThermalModel
from erab.bus import Sample
from erab.bus import TelemetryBatch as TelemetryMessage
from erab.clock import SimulatedClock
from erab.security import OperatorDirectory, Role, SecurityHome
from erab.security.operators import Argon2Parameters
from erab.store import Gateway, Resource, Site, SqliteStore
from tests.aggregator.test_operations import Publisher
from tests.bus.conftest import Deployment, make_deployment
from tests.gateway.test_fleet import with_command_key

NOW = datetime(2026, 8, 4, 5, 0, tzinfo=UTC)  # 14:00 JST
BATTERY = {"rated_kw": 3.0, "rated_kwh": 10.0, "soc_reserve_pct": 20.0, "soc_max_pct": 95.0}


def register_batteries(home: Path) -> None:
    store = SqliteStore(home / "ra" / "ra.sqlite")
    reg = Registry(store, SimulatedClock(NOW - timedelta(hours=1), speed=0))
    for i, (site, gw) in enumerate((("site-a", "gw-a"), ("site-b", "gw.b"))):
        reg.add_site(Site(site, site))
        reg.add_gateway(Gateway(gw, site))
        reg.add_resource(Resource(f"{site}.bat", site, gw, "battery", f"0{i + 1}0a", "027d01",
                                  **BATTERY))  # type: ignore[arg-type]
    store.close()


def start_ra(deployment: Deployment) -> RaService:
    service = RaService(deployment.home, clock=SimulatedClock(NOW, speed=0), start_spread_s=0.0)
    service.fanout = Fanout(Publisher(), service.signer, service.clock)
    return service


@pytest.fixture
def ra(tmp_path: Path) -> RaService:
    deployment = make_deployment(tmp_path)
    with_command_key(deployment)
    register_batteries(deployment.home)
    return start_ra(deployment)


def telemetry(gw: str, device: str, seq: int, at: datetime, **values: float) -> TelemetryMessage:
    return TelemetryMessage(gateway_id=gw, seq=seq, sent_at=at,
                            samples=[Sample(device_id=device, measured_at=at, values=values)])


def row(ra: RaService, resource_id: str) -> int:
    return ra._row_of_resource[resource_id]


def sent_bodies(ra: RaService) -> list[tuple[str, dict[str, Any]]]:
    assert ra.fanout is not None and isinstance(ra.fanout.publisher, Publisher)
    publisher = ra.fanout.publisher
    return [(gw, json.loads(wire)["envelope"]["body"]) for gw, wire in publisher.sent]


def advance(ra: RaService, seconds: float) -> None:
    clock = ra.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance(seconds)


@pytest.fixture
async def registrar(ra: RaService) -> AsyncIterator[httpx.AsyncClient]:
    operators = OperatorDirectory(SecurityHome(ra.home).operators_db, ra.clock,
                                  argon2_parameters=Argon2Parameters(1, 1024, 1))  # fmt: skip
    operators.add("sofia", Role.SECURITY_OFFICER, "correct horse battery")
    token = operators.issue_token("sofia", "test")
    transport = httpx.ASGITransport(app=create_app(ra, operators))  # same thread as the store
    async with httpx.AsyncClient(transport=transport, base_url="http://ra",
                                 headers={"Authorization": f"Bearer {token}"}) as client:
        yield client


# -- FleetState ----------------------------------------------------------------------------
def test_extending_a_fleet_keeps_every_live_value_and_adds_unheard_rows() -> None:
    state = FleetState.create([ResourceKind.BATTERY, ResourceKind.AIRCON], site=[0, 0],
                              rated_kw=[3.0, 1.0], capacity_kwh=[10.0, 0.0])  # fmt: skip
    now = 1_780_000_000.0
    state.apply(TelemetryBatch.of([0, 0, 1], [TelemetryField.SOC_PCT, TelemetryField.POWER_KW,
                                              TelemetryField.ROOM_TEMP_C],
                                  [55.0, -1.5, 26.5], [now] * 3), now)  # fmt: skip
    state.apply_meter([0], [0.8], [now], now)
    state.extend(FleetState.create([ResourceKind.PV], site=[1], rated_kw=[4.0]))
    assert len(state) == 3 and state.sites == 2
    assert state.soc_pct[0] == 55.0 and state.power_kw[0] == -1.5 and state.room_temp_c[1] == 26.5
    assert state.online.tolist() == [True, True, False]
    assert np.isnan(state.power_kw[2]) and state.last_seen_s[2] == -np.inf
    assert state.site_meter_kw[0] == 0.8 and np.isnan(state.site_meter_kw[1])
    assert state.rated_kw.tolist() == [3.0, 1.0, 4.0] and state.kind[2] == ResourceKind.PV
    # the new row takes telemetry, and an older reading of an old row is still refused
    result = state.apply(TelemetryBatch.of([2, 0], [TelemetryField.POWER_KW] * 2,
                                           [-2.0, 0.0], [now + 1, now - 60]), now + 1)
    assert result.flags.tolist() == [0, 256] and state.power_kw[2] == -2.0


@given(st.lists(st.sampled_from(list(ResourceKind)), min_size=1, max_size=12),
       st.integers(0, 12))  # fmt: skip
def test_a_fleet_built_in_two_parts_has_the_columns_of_one_built_at_once(
    kinds: list[ResourceKind], split: int,
) -> None:  # fmt: skip
    split = min(split, len(kinds))
    sites = [i // 2 for i in range(len(kinds))]
    rated = [1.0 + i for i in range(len(kinds))]
    whole = FleetState.create(kinds, site=sites, rated_kw=rated)
    part = FleetState.create(kinds[:split], site=sites[:split], rated_kw=rated[:split])
    part.extend(FleetState.create(kinds[split:], site=sites[split:], rated_kw=rated[split:]))
    for name in ("kind", "site", "rated_kw", "available", "soc_reserve_pct", "export_allowed"):
        assert getattr(part, name).tolist() == getattr(whole, name).tolist(), name
    assert part.sites == whole.sites and len(part.site_meter_time_s) == whole.sites


def test_restating_a_row_changes_its_constraints_not_its_kind() -> None:
    state = FleetState.create([ResourceKind.BATTERY], soc_reserve_pct=20.0)
    state.restate([0], FleetState.create([ResourceKind.BATTERY], soc_reserve_pct=40.0,
                                         site=[0]))  # fmt: skip
    assert state.soc_reserve_pct[0] == 40.0
    with pytest.raises(ValueError, match="resource 0: its kind or site differs"):
        state.restate([0], FleetState.create([ResourceKind.AIRCON], site=[0]))
    with pytest.raises(ValueError, match="row out of range"):
        state.restate([3], FleetState.create([ResourceKind.BATTERY], site=[0]))


# -- the RA --------------------------------------------------------------------------------
async def test_a_battery_added_through_the_api_reports_offers_and_is_dispatched(
    ra: RaService, registrar: httpx.AsyncClient,
) -> None:  # fmt: skip
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 1, NOW, soc_pct=80.0, power_w=0.0),
                        telemetry("gw.b", "site-b.bat", 1, NOW, soc_pct=70.0,
                                  power_w=0.0)])  # fmt: skip
    before = {c: getattr(ra.state, c).copy() for c in ("soc_pct", "power_kw", "last_seen_s")}
    assert ra.flexibility_kw("down") == pytest.approx(6.0)
    # unknown to the registry, its telemetry is ignored
    assert ra.apply_telemetry([telemetry("gw-c", "site-c.bat", 1, NOW, soc_pct=70.0)]) == 0

    for path, record in (
        ("sites", {"site_id": "site-c", "name": "site-c"}),
        ("gateways", {"gateway_id": "gw-c", "site_id": "site-c"}),
        ("resources", {"resource_id": "site-c.bat", "site_id": "site-c", "gateway_id": "gw-c",
                       "device_class": "battery", "node_id": "030a", "eoj": "027d01",
                       **BATTERY}),
    ):  # fmt: skip
        response = await registrar.post(f"/api/v1/{path}", json=record)
        assert response.status_code == 201, response.text

    new = row(ra, "site-c.bat")
    assert (new, len(ra.state), ra.site_ids) == (2, 3, ["site-a", "site-b", "site-c"])
    assert ra.state.site[new] == 2 and ra.state.sites == 3
    for column, values in before.items():  # the rows that were there keep their live values
        assert getattr(ra.state, column)[:2].tolist() == values.tolist(), column
    assert ra.state.online.tolist() == [True, True, False]
    assert ra.flexibility_kw("down") == pytest.approx(6.0)  # not heard yet: nothing

    assert ra.apply_telemetry([telemetry("gw-c", "site-c.bat", 1, NOW, soc_pct=60.0,
                                         power_w=200.0)]) == 2  # fmt: skip
    assert (ra.state.soc_pct[new], ra.state.power_kw[new]) == (60.0, 0.2)
    # 3.2 kW more: its charge stopped, and its rating discharging
    assert ra.flexibility_kw("down") == pytest.approx(9.2)

    # 8.5 kW down needs all three batteries
    event = await ra.create_event(EventRequest(-8.5, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    assert new in plan.row_commands
    [command] = plan.row_commands[new]
    assert (command.gateway_id, command.body["device_id"]) == ("gw-c", "site-c.bat")
    # its own power (0.2 kW) moved by what it is asked
    assert command.body["power_w"] == round(200.0 - 1000.0 * plan.planned_kw(command))
    assert plan.planned_kw(command) > 2.0
    # the next tick tells the new gateway its allow-list, so it takes the command
    await ra.tick()
    lists = [body for gw, body in sent_bodies(ra) if body["type"] == "allow_list"]
    assert [[d["device_id"] for d in body["devices"]] for body in lists] == [["site-c.bat"]]


async def test_an_import_reaches_the_live_state_with_its_new_sites(
    ra: RaService, registrar: httpx.AsyncClient,
) -> None:  # fmt: skip
    response = await registrar.post("/api/v1/import", json={
        "site": [{"site_id": "site-d"}],
        "gateway": [{"gateway_id": "gw-d", "site_id": "site-d"}],
        "resource": [{"resource_id": "site-d.pv", "site_id": "site-d", "gateway_id": "gw-d",
                      "device_class": "pv", "node_id": "040a", "eoj": "027901",
                      "rated_kw": 4.0}],
    })  # fmt: skip
    assert response.status_code == 200, response.text
    pv = row(ra, "site-d.pv")
    assert ra.site_ids[ra.state.site[pv]] == "site-d" and ra.state.kind[pv] == ResourceKind.PV
    # the gateway's positive generation is negative at the site, as for the rows at start
    assert ra.apply_telemetry([telemetry("gw-d", "site-d.pv", 1, NOW, power_w=2500.0)]) == 1
    assert ra.state.power_kw[pv] == -2.5
    assert ra.site_power_kw().tolist()[-1] == -2.5


async def test_a_withdrawn_resource_keeps_its_row_offers_nothing_and_is_released(
    ra: RaService, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 1, NOW, soc_pct=80.0, power_w=0.0),
                        telemetry("gw.b", "site-b.bat", 1, NOW, soc_pct=80.0, power_w=0.0)])
    event = await ra.create_event(EventRequest(-5.0, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    b = row(ra, "site-b.bat")
    assert plan.in_force(b) is not None

    ra.registry.update_resource("site-b.bat", allowed=False)
    with caplog.at_level(logging.INFO, logger="erab.ra"):
        assert ra.refresh_resources() == 0
    assert [r.getMessage() for r in caplog.records if r.name == "erab.ra"] == [
        "registry: 0 resources added to the live state, 1 retired, 0 updated (2 rows)"]
    assert len(ra.state) == 2 and row(ra, "site-b.bat") == b
    assert not ra.state.available[b] and ra.state.soc_pct[b] == 80.0
    assert ra.flexibility_kw("down") == pytest.approx(3.0)  # site-a's battery alone
    # its command stops counting at once, and is cancelled at the next tick
    assert plan.in_force(b) is None and b not in plan.reserve
    await ra.tick()
    cancels = [(gw, body["device_id"]) for gw, body in sent_bodies(ra) if body["type"] == "cancel"]
    assert cancels == [("gw.b", "site-b.bat")]
    allow = [body for gw, body in sent_bodies(ra) if gw == "gw.b" and body["type"] == "allow_list"]
    assert allow == [{"type": "allow_list", "devices": []}]
    # the closed loop makes up with what is left; the withdrawn battery is never called
    for _ in range(3):
        advance(ra, 60.0)
        await ra.correct(event.event_id)
    assert len(plan.row_commands[b]) == 1 and b not in plan.reserve
    assert [c for c in ra.fanout.commands.values()  # type: ignore[union-attr]
            if c.body.get("device_id") == "site-b.bat" and c.body["type"] != "cancel"
            ] == plan.row_commands[b][:1]  # fmt: skip
    # a later event does not plan on it either
    await ra.cancel_event(event.event_id, "test")
    later = await ra.create_event(EventRequest(-2.0, NOW + timedelta(hours=2), timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    assert b not in ra.plans[later.event_id].plan.dispatched.tolist()
    assert b not in ra.plans[later.event_id].reserve
    # allowed again, it plans at once from the values it kept
    ra.registry.update_resource("site-b.bat", allowed=True)
    ra.refresh_resources()
    assert ra.state.available[b] and ra.flexibility_kw("down") == pytest.approx(6.0)


async def test_an_edit_of_the_constraints_restates_the_row(ra: RaService) -> None:
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 1, NOW, soc_pct=80.0, power_w=0.0)])
    a = row(ra, "site-a.bat")
    ra.registry.update_resource("site-a.bat", soc_reserve_pct=60.0, rated_kw=5.0)
    assert ra.refresh_resources() == 0
    assert (ra.state.soc_reserve_pct[a], ra.state.rated_kw[a]) == (60.0, 5.0)
    assert ra.state.soc_pct[a] == 80.0 and ra.state.online[a]
    assert ra.resources[a].soc_reserve_pct == 60.0
    # 80 % of 10 kWh down to 60 %: 2 kWh over the hour
    assert ra.flexibility_kw("down") == pytest.approx(2.0)


async def test_a_resource_moved_to_another_gateway_gets_a_row_of_its_own(ra: RaService) -> None:
    b = row(ra, "site-b.bat")
    ra.registry.update_resource("site-b.bat", site_id="site-a", gateway_id="gw-a")
    assert ra.refresh_resources() == 1
    moved = row(ra, "site-b.bat")
    assert moved == 2 and not ra.state.available[b] and ra.state.available[moved]
    assert ra.site_ids[ra.state.site[moved]] == "site-a"
    # its old gateway no longer speaks for it; the new one does
    assert ra.apply_telemetry([telemetry("gw.b", "site-b.bat", 1, NOW, soc_pct=50.0)]) == 0
    assert ra.apply_telemetry([telemetry("gw-a", "site-b.bat", 1, NOW, soc_pct=50.0)]) == 1
    assert ra.state.soc_pct[moved] == 50.0 and np.isnan(ra.state.soc_pct[b])


async def test_the_tick_picks_up_a_resource_written_to_the_store_by_another_process(
    ra: RaService, caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # as 'erab ra resource add --offline' does: its own connection to the RA's store
    other = SqliteStore(ra.home / "ra" / "ra.sqlite")
    Registry(other, SimulatedClock(NOW, speed=0)).add_resource(Resource(
        "site-b.bat2", "site-b", "gw.b", "battery", "020a", "027d02", **BATTERY))  # type: ignore[arg-type]
    other.close()
    await ra.tick()  # checked at start: not due yet
    assert len(ra.state) == 2
    advance(ra, CHECK_GATEWAYS_EVERY_S)
    with caplog.at_level(logging.INFO, logger="erab.ra"):
        await ra.tick()
        await ra.tick()  # nothing new: no second refresh
    assert [r.getMessage() for r in caplog.records if r.name == "erab.ra"] == [
        "registry: 1 resources added to the live state, 0 retired, 0 updated (3 rows)"]
    new = row(ra, "site-b.bat2")
    assert ra.state.site[new] == ra.state.site[row(ra, "site-b.bat")]
    assert ra.apply_telemetry([telemetry("gw.b", "site-b.bat2", 1, ra.clock.now(),
                                         soc_pct=50.0, power_w=0.0)]) == 2  # fmt: skip
    assert ra.state.soc_pct[new] == 50.0
    lists = [body for gw, body in sent_bodies(ra) if body["type"] == "allow_list"]
    assert [[d["device_id"] for d in body["devices"]] for body in lists] == [
        ["site-b.bat", "site-b.bat2"]]


def test_the_ingest_hook_maps_a_new_resources_store_key_to_its_row(ra: RaService) -> None:
    other = SqliteStore(ra.home / "ra" / "ra.sqlite")
    Registry(other, SimulatedClock(NOW, speed=0)).add_resource(Resource(
        "site-a.pv", "site-a", "gw-a", "pv", "010a", "027901", rated_kw=4.0))
    other.close()
    assert ra.refresh_resources() == 1
    keys = ra.store.resource_keys()
    t = NOW.timestamp()
    ra.on_readings(CommittedReadings(
        resource_key=np.array([keys["site-a.pv"], keys["site-a.bat"]], dtype=np.int64),
        point=np.array([0, 1], dtype=np.int64), value=np.array([1500.0, 75.0]),
        measured_at_s=np.array([t, t]), point_names=("power_w", "soc_pct")))  # fmt: skip
    assert ra.state.power_kw[row(ra, "site-a.pv")] == -1.5  # generation, as the site sees it
    assert ra.state.soc_pct[row(ra, "site-a.bat")] == 75.0


# -- growth during an event with air conditioners -------------------------------------------
HOMES = [f"home-{i}" for i in range(6)]


def register_aircons(home: Path) -> None:
    store = SqliteStore(home / "ra" / "ra.sqlite")
    reg = Registry(store, SimulatedClock(NOW - timedelta(hours=1), speed=0))
    for i, site in enumerate(HOMES):
        add_aircon_home(reg, site, i)
    store.close()


def add_aircon_home(reg: Registry, site: str, i: int) -> None:
    reg.add_site(Site(site, site))
    reg.add_gateway(Gateway(f"gw-{site}", site))
    reg.add_resource(Resource(f"{site}.ac", site, f"gw-{site}", "aircon", f"fe{i:04x}",
                              "013001", rated_kw=1.0, comfort_min_c=20.0,
                              comfort_max_c=28.0))  # fmt: skip


def feed_aircons(ra: RaService, seq: int, kw: dict[str, float], default_kw: float) -> None:
    at = ra.clock.now()
    ra.apply_telemetry([telemetry(f"gw-{site}", f"{site}.ac", seq, at,
                                  power_w=1000.0 * kw.get(site, default_kw), setpoint_c=26.0,
                                  room_temp_c=26.0, outdoor_temp_c=33.0)
                        for site in ra.site_ids])  # fmt: skip


async def test_growth_during_an_event_keeps_the_closed_loop_and_the_room_fit_whole(
    tmp_path: Path,
) -> None:  # fmt: skip
    deployment = make_deployment(tmp_path)
    with_command_key(deployment)
    register_aircons(deployment.home)
    ra = start_ra(deployment)
    ra.thermal = ThermalModel.of([0.3] * ra.state.sites, 5.0)
    for minute in range(3):  # samples for the room fit, and the pre-event baseline
        feed_aircons(ra, minute + 1, {}, 0.4)
        ra.snapshot()
        advance(ra, 60.0)
    feed_aircons(ra, 20, {}, 0.4)
    event = await ra.create_event(EventRequest(-0.4, ra.clock.now(), timedelta(hours=2),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    [first] = plan.row_commands
    await ra.tick()  # active
    assert ra.delivery_by_site(event.event_id) is not None  # the baseline: 6 sites

    # a seventh home is registered mid-event, its unit running hard
    add_aircon_home(ra.registry, "home-new", 6)
    assert ra.refresh_resources() == 1
    new = row(ra, "home-new.ac")
    assert (new, ra.state.sites) == (6, 7)
    assert ra.thermal is not None and len(ra.thermal) == 7 and not ra.thermal.valid[6]
    assert all(len(sample[0]) == 7 for sample in ra.thermal_samples)
    assert all(len(p) == 7 for p in ra.snapshots.power_kw)

    # the uncommanded units drop to 0.3 kW (a quarter less); the new one runs at 1.2 kW
    advance(ra, 60.0)
    feed_aircons(ra, 21, {ra.resources[first].site_id: 0.0, "home-new": 1.2}, 0.3)
    check = await ra.correct(event.event_id)
    assert np.isfinite(check.delivered_kw)
    # its reference follows the units that ran at dispatch alone: 0.4 x 0.3 / 0.4; were the
    # new unit counted (1.2 then and now), it would be 0.4 x 2.7 / 3.2
    rows = [(first, plan.row_commands[first][-1])]
    assert ra._references(plan, rows) == [pytest.approx(0.3)]
    # no room model for its site yet: it offers nothing until the next fit
    window = ra.window_flexibility(ra.clock.now(), 3600.0)
    assert window.down_kw[new] == 0.0

    # called in the running event, it is measured from its own call
    await ra._send_rows(plan, event.request, [(new, 1.2)])
    assert len(plan.aircon_kw_at[-1]) == 7 and len(plan.aircon_kw_at[0]) == 6
    advance(ra, 60.0)
    feed_aircons(ra, 22, {ra.resources[first].site_id: 0.0, "home-new": 0.0}, 0.3)
    references = ra._references(plan, [(first, plan.row_commands[first][-1]),
                                       (new, plan.row_commands[new][-1])])  # fmt: skip
    assert references == [pytest.approx(0.3), pytest.approx(1.2)]
    sites = ra.delivery_by_site(event.event_id)
    assert sites is not None and "home-new" in sites.site_ids
    for minute in range(10):
        advance(ra, 60.0)
        feed_aircons(ra, 30 + minute, {}, 0.2 + 0.2 * (minute % 3))
        ra.snapshot()
    assert len(ra.thermal_samples) >= 12
    model = ra.fit_thermal_models()  # the new unit NaN in the samples before it came
    assert model is not None and len(model) == 7
