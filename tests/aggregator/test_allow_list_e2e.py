"""The allow-list end to end: ``RaService.run`` (as ``erab ra serve`` runs it) answers a real
gateway's hello with the registry's allow-list, signed with the RA's command key; the gateway
(emulated home over real UDP, MQTT over mutual TLS to the real nats-server) executes it, and
a device only the RA's list names becomes controllable by the RA's next command."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from erab.aggregator.fanout import CommandStage, RaCommand
from erab.aggregator.registry import Registry
from erab.aggregator.service import RaService
from erab.bus import RunningBroker
from erab.gateway.config import load_site_config
from erab.gateway.service import Gateway, read_status
from erab.security import SecurityHome
from erab.store import Gateway as GatewayRecord
from erab.store import Resource, Site, SqliteStore
from tests.bus.conftest import Deployment, broker, deployment  # noqa: F401
from tests.gateway.conftest import Home, home  # noqa: F401
from tests.gateway.test_fleet import with_command_key
from tests.gateway.test_service import GW, running, wait_for, write_site_config

pytestmark = pytest.mark.timeout(120)
SITE = f"site-{GW}"  # the site write_site_config names


def register(deployment: Deployment, home: Home) -> None:  # noqa: F811
    """The RA's registry: the gateway's site, the gateway, its battery (also in the
    gateway's own site config) and its PV (in no site config: only the RA allows it)."""
    (deployment.home / "ra").mkdir(exist_ok=True)
    store = SqliteStore(deployment.home / "ra" / "ra.sqlite")
    registry = Registry(store)
    registry.add_site(Site(SITE, "Home"))
    registry.add_gateway(GatewayRecord(GW, SITE))
    for resource_id, eoj, rated_kw in (("battery-1", "027d01", 3.0), ("site.pv-1", "027901",
                                                                        4.5)):  # fmt: skip
        registry.add_resource(Resource(resource_id, SITE, GW, "", home.node_id, eoj, rated_kw))
    store.close()


def allow_lists(ra: RaService) -> list[RaCommand]:
    assert ra.fanout is not None
    return [c for c in ra.fanout.commands.values() if c.body.get("type") == "allow_list"]


async def test_the_running_ra_answers_a_hello_with_the_allow_list_the_gateway_executes(
    deployment: Deployment, broker: RunningBroker, home: Home, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    with_command_key(deployment)
    register(deployment, home)
    # the gateway trusts the RA's own command key, as 'erab pki enrol' sets it up
    key = SecurityHome(deployment.home).command_public_key
    config = load_site_config(write_site_config(tmp_path / "site.toml", deployment, broker,
                                                home, key))  # fmt: skip
    gw_home = tmp_path / "gw-home"
    gateway = Gateway(config, gw_home)
    assert gateway.allow.key_of("site.pv-1") is None  # the site config lists the battery only
    ra = RaService(deployment.home, start_spread_s=0.0)
    stop, ready = asyncio.Event(), asyncio.Event()
    ra_task = asyncio.create_task(ra.run(stop, ready=ready))
    try:
        await asyncio.wait_for(ready.wait(), 15)
        async with running(gateway):
            # the hello reaches the RA, which signs and sends the registry's list
            await wait_for(lambda: any(c.stage is CommandStage.ACKNOWLEDGED
                                       for c in allow_lists(ra)), 20)  # fmt: skip
            [listed] = allow_lists(ra)
            assert listed.gateway_id == GW
            assert {d["device_id"] for d in listed.body["devices"]} == {"battery-1",
                                                                        "site.pv-1"}
            assert {(o["device_id"], o["outcome"]) for o in listed.outcomes} == {
                ("battery-1", "applied"), ("site.pv-1", "applied")}
            # the gateway holds it: the PV is now controllable under the RA's device id
            assert gateway.allow.key_of("site.pv-1") is not None
            await wait_for(lambda: {d["device_id"] for d in read_status(gw_home)["allow_list"]}
                           == {"battery-1", "site.pv-1"})  # fmt: skip
            # and the RA's next command to it is carried out on the emulated inverter
            now = ra.clock.now()
            assert ra.fanout is not None
            [command] = await ra.fanout.send_many([(GW, {
                "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 40.0,
                "start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()})])
            await wait_for(lambda: command.stage is not CommandStage.SENT, 20)
            assert command.stage is CommandStage.ACKNOWLEDGED, command.reason
            assert command.outcomes[0]["outcome"] == "applied"
            assert home.town.pv.curtail_pct[0] == 40.0
    finally:
        stop.set()
        await asyncio.gather(ra_task, return_exceptions=True)
    # the hello's other devices (its air conditioner, ...) wait at the RA for an operator;
    # the two registered ones do not
    pending = {p.eoj for p in ra.registry.pending(GW)}
    assert "013001" in pending and not pending & {"027d01", "027901"}
