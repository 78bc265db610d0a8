"""AC to RA to gateways: an event created at erab's VTN reaches erab's VEN, which feeds a real
RA service (real broker, real gateways on an emulated town); the RA plans and dispatches it,
the gateways acknowledge, the VEN's fleet reports reach the AC, and the AC's cancellation
cancels the RA's event."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from erab.aggregator.events import EventStage
from erab.aggregator.fanout import CommandStage
from erab.aggregator.registry import Registry
from erab.aggregator.service import RaService
from erab.bus import RunningBroker
from erab.cli.ra import scenario_inventory
from erab.devices import Scenario
from erab.devices.server import TownServer
from erab.openadr import AcStore, ErabVen, RaBackend, VenConfig, VtnConfig, build_vtn, run_vtn
from erab.store import SqliteStore
from tests.aggregator.test_service import wait
from tests.bus.conftest import Deployment, broker, deployment  # noqa: F401
from tests.gateway.test_fleet import SPECS, make_fleet, town, with_command_key  # noqa: F401
from tests.openadr.conftest import free_port, make_pki

pytestmark = pytest.mark.timeout(120)


async def test_an_ac_event_is_planned_and_dispatched_by_the_ra_and_cancelled(
    deployment: Deployment, broker: RunningBroker, town: TownServer,  # noqa: F811
) -> None:  # fmt: skip
    with_command_key(deployment)
    (deployment.home / "ra").mkdir()
    db = SqliteStore(deployment.home / "ra" / "ra.sqlite")
    Registry(db).import_inventory(scenario_inventory(Scenario(SPECS, seed=5)))
    db.close()
    fleet = make_fleet(deployment, broker, town)
    fleet.enrol()
    await fleet.commission()
    ra = RaService(deployment.home, start_spread_s=1.0)
    pki = make_pki(deployment.home, deployment.ca)
    ac = AcStore(deployment.home / "ac" / "ac.sqlite")
    ac.add_ven("ra-1", pki.fingerprint("ra-1"))
    port = free_port()
    vtn = build_vtn(ac, VtnConfig(port=port, poll_interval_s=1, report_interval_s=1),
                    pki.server_context())  # fmt: skip
    cert, key = pki.ven("ra-1")
    ven = ErabVen(VenConfig(vtn_url=VtnConfig(port=port).url, ven_name="tokyo-ra",
                            cert=str(cert), key=str(key), ca_file=str(pki.ca_bundle),
                            ssl_context=pki.client_context("ra-1"), min_share=0.9),
                  RaBackend(ra))  # fmt: skip

    stop, ra_ready, vtn_ready, ven_ready = (asyncio.Event() for _ in range(4))
    tasks = [asyncio.create_task(fleet.run(60.0)),
             asyncio.create_task(ra.run(stop, ready=ra_ready)),
             asyncio.create_task(run_vtn(vtn, stop, ready=vtn_ready))]  # fmt: skip
    try:
        await wait(ra_ready.is_set, 15, "the RA to connect")
        await wait(vtn_ready.is_set, 10, "the VTN")
        tasks.append(asyncio.create_task(ven.run(stop, ready=ven_ready)))
        await wait(ven_ready.is_set, 20, "the VEN's registration")
        batteries = [i for i, r in enumerate(ra.resources) if r.device_class == "battery"]
        await wait(lambda: all(ra.state.soc_pct[b] == ra.state.soc_pct[b] for b in batteries),
                   20, "battery SOC in the RA's state")  # fmt: skip
        down = ra.flexibility_kw("down", None, timedelta(minutes=30))
        assert down > 0
        target = -round(0.4 * down, 2)
        event = ac.create_event("ra-1", target, datetime.now(UTC), timedelta(minutes=30))
        await wait(lambda: ac.event(event.event_id).opt is not None, 20, "the VEN's answer")
        assert ac.event(event.event_id).opt == "optIn", ac.event(event.event_id).opt_detail
        [ra_event] = [e for e in ra.events.events.values()
                      if e.request.external_id == event.event_id]  # fmt: skip
        assert ra_event.request.source == "openadr"
        assert ra_event.request.target_kw == pytest.approx(target)
        plan = ra.plans[ra_event.event_id]
        assert plan.commands
        await wait(lambda: all(c.stage is CommandStage.ACKNOWLEDGED for c in plan.commands),
                   20, "the gateways' acknowledgements")  # fmt: skip
        # the VEN's fleet reports reach the AC
        await wait(lambda: len(ac.reports("ra-1", "fleet_kw")) >= 2, 20, "fleet reports")
        assert ac.reports("ra-1", "fleet_kw")[-1][2] == pytest.approx(ra.fleet_kw(), abs=50)
        # the AC cancels: the RA's event is cancelled and its sites told
        ac.advance(event.event_id, "cancel")
        await wait(lambda: ra_event.stage is EventStage.CANCELLED, 20, "the RA's cancellation")
        await wait(lambda: ac.event(event.event_id).state == "cancelled", 20, "confirmation")
    finally:
        stop.set()
        for task in tasks[1:]:
            await asyncio.gather(task, return_exceptions=True)
        tasks[0].cancel()
        await asyncio.gather(tasks[0], return_exceptions=True)
        ac.close()


async def test_erab_ra_serve_vtn_joins_the_ac_and_opts_out_without_telemetry(
    deployment: Deployment, broker: RunningBroker, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    """The command itself, in its own process: registration, reports and an answered event
    (no gateway reports yet, so the fleet has nothing to give and says so)."""
    with_command_key(deployment)
    (deployment.home / "ra").mkdir()
    db = SqliteStore(deployment.home / "ra" / "ra.sqlite")
    Registry(db).import_inventory(scenario_inventory(Scenario(SPECS, seed=5)))
    db.close()
    pki = make_pki(deployment.home, deployment.ca)
    ac = AcStore(tmp_path / "ac.sqlite")
    ac.add_ven("ra-1", pki.fingerprint("ra-1"))
    port = free_port()
    vtn = build_vtn(ac, VtnConfig(port=port, poll_interval_s=1, report_interval_s=1),
                    pki.server_context())  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.Event()
    vtn_task = asyncio.create_task(run_vtn(vtn, stop, ready=ready))
    await ready.wait()
    cert, key = pki.ven("ra-1")
    log = (tmp_path / "ra-serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "erab", "ra", "serve", "--home", str(deployment.home),
         "--api", "off", "--duration", "40", "--vtn", VtnConfig(port=port).url,
         "--ven-name", "tokyo-ra", "--ven-cert", str(cert), "--ven-key", str(key)],
        stdout=subprocess.DEVNULL, stderr=log)  # fmt: skip
    try:
        await wait(lambda: ac.ven("ra-1").registration_id is not None, 30, "registration")
        assert ac.ven("ra-1").ven_name == "tokyo-ra"
        await wait(lambda: len(ac.reports("ra-1", "down_kw")) >= 1, 20, "reports")
        event = ac.create_event("ra-1", -5, datetime.now(UTC) + timedelta(minutes=1),
                                timedelta(minutes=30))  # fmt: skip
        await wait(lambda: ac.event(event.event_id).opt is not None, 20, "the answer")
        answered = ac.event(event.event_id)
        assert answered.opt == "optOut"
        assert answered.opt_detail and "the fleet can give 0.0 kW down" in answered.opt_detail
    finally:
        process.terminate()
        process.wait(20)
        log.close()
        stop.set()
        await vtn_task
        ac.close()
