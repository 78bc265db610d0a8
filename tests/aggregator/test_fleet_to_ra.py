"""Issue 10 meets issue 11: a fleet of real gateways (``erab gateway fleet``'s ``Fleet``) on
an emulated town, the real broker, and the RA's ingest into its registry's store.  The RA's
town import (``erab ra import --homes``) and the fleet's commissioning must name the same
resources, so every allowed device's telemetry lands on its registry row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from erab.aggregator import Ingest, Registry
from erab.bus import RunningBroker, Stream
from erab.cli.ra import scenario_inventory
from erab.devices import Scenario
from erab.devices.server import TownServer
from erab.store import SqliteStore
from tests.bus.conftest import Deployment, broker, connect_ra, deployment  # noqa: F401
from tests.gateway.test_fleet import SPECS, make_fleet, town, with_command_key  # noqa: F401

pytestmark = pytest.mark.timeout(120)


async def test_the_fleets_telemetry_lands_on_the_registrys_resources(
    tmp_path: Path, deployment: Deployment, broker: RunningBroker,  # noqa: F811
    town: TownServer,  # noqa: F811
) -> None:  # fmt: skip
    store = SqliteStore(tmp_path / "ra.sqlite")
    report = Registry(store).import_inventory(scenario_inventory(Scenario(SPECS, seed=5)))
    assert report is not None
    with_command_key(deployment)
    fleet = make_fleet(deployment, broker, town)
    fleet.enrol()
    await fleet.commission()
    allowed = {d.device_id for s in fleet.configs() for d in s.devices}
    registered = {r.resource_id for r in Registry(store).resources()}
    assert allowed and allowed <= registered  # the same names on both sides

    runner = asyncio.create_task(fleet.run(8.0))
    ra = await connect_ra(deployment, broker)
    try:
        consumers = [await ra.consumer(Stream.TELEMETRY, "ingest"),
                     await ra.consumer(Stream.EVENTS, "ingest-events")]  # fmt: skip
        ingest = Ingest(store, consumers, fetch_timeout_s=0.3)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while loop.time() < deadline:
            await ingest.step()
            seen = {rid for rid in allowed if store.telemetry(rid)}
            if seen == allowed:
                break
        await runner
    finally:
        await ra.close()
    assert seen == allowed, f"no telemetry stored for {sorted(allowed - seen)}"
    # what the gateways report but do not control (no allow-list entry, so no registry name:
    # e.g. a lighting object) is counted as unknown at the RA, not stored
    not_allowed = [i.device_id for g in fleet.gateways for i in g.inventory.values()
                   if not i.allowed]  # fmt: skip
    assert ingest.stats.unknown_devices <= len(not_allowed), not_allowed
    assert not ingest.stats.refused
    assert {g.gateway_id: g.status for g in Registry(store).gateways()} == {
        "gw-home-1": "online", "gw-home-2": "online", "gw-home-3": "online"}
