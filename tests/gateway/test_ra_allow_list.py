"""The RA's allow-list, executed by a running gateway (emulated home over real UDP, a real
nats-server, MQTT over mutual TLS): a signed ``allow_list`` command replaces the site's
allow-list, the acknowledgement says what became of each listed device, a device taken off the
list is restored and refused, a replay is refused, and a restart keeps the RA's list."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import Acknowledgement, Hello, RaLink, RunningBroker, Stream
from erab.bus.ra import UplinkConsumer
from erab.clock import RealClock
from erab.gateway.config import load_site_config
from erab.gateway.service import ALLOW_LIST_FILE, Gateway, read_status
from erab.security import EnvelopeSigner, SqliteAuditStore
from tests.bus.conftest import Deployment
from tests.gateway.conftest import Home
from tests.gateway.test_service import (
    GW,
    collect,
    command_key_file,
    running,
    wait_for,
    write_site_config,
)

pytestmark = pytest.mark.timeout(120)


def allow_list(home: Home, *, pv: bool, battery: bool = True) -> dict[str, Any]:
    """The body the RA's ``allow_list_body`` builds: the battery, the PV when the RA has
    registered it, and an EV charger the registry knows but the home does not have."""
    devices = []
    if battery:
        devices.append({"device_id": "battery-1", "node_id": home.node_id, "eoj": "027d01",
                        "rated_power_w": 3000.0})  # fmt: skip
    if pv:
        devices.append({"device_id": "site.pv-1", "node_id": home.node_id, "eoj": "027901",
                        "rated_power_w": None})  # fmt: skip
    devices.append({"device_id": "site.ev-1", "node_id": "fe00ff", "eoj": "027e01",
                    "rated_power_w": 6000.0})  # fmt: skip
    return {"type": "allow_list", "devices": devices}


def window() -> dict[str, str]:
    now = RealClock().now()
    return {"start": now.isoformat(), "end": (now + timedelta(minutes=30)).isoformat()}


async def answer(ra: RaLink, acks: UplinkConsumer, wire: bytes) -> Acknowledgement:
    """This command's acknowledgement. An earlier command's acknowledgement may come again
    (at-least-once: a gateway restarted before the broker's PUBACK sends it anew), so the
    answer is picked by the envelope's sequence number, not taken as the first to arrive."""
    seq = json.loads(wire)["envelope"]["sequence"]
    await ra.send_command(GW, wire)

    def mine(got: list[object]) -> list[Acknowledgement]:
        return [m for m in got if isinstance(m, Acknowledgement) and m.command_seq == seq]

    got = await collect(acks, lambda got: bool(mine(got)))
    [ack] = mine(got)
    return ack


async def test_the_ras_allow_list_makes_a_new_device_controllable_and_takes_one_away(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    signing = Ed25519PrivateKey.generate()
    key = command_key_file(tmp_path, signing)
    config = load_site_config(
        write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    )
    gw_home = tmp_path / "gw-home"
    gateway = Gateway(config, gw_home)
    events = await ra.consumer(Stream.EVENTS, "events")
    acks = await ra.consumer(Stream.ACKS, "acks")
    signer = EnvelopeSigner(signing, RealClock())
    pv_found = f"{home.node_id}-027901"
    async with running(gateway):
        # the PV is on the LAN but on no allow-list: reported in the hello, not controlled
        hello = next(m for m in await collect(
            events, lambda got: any(isinstance(m, Hello) for m in got)) if isinstance(m, Hello))
        assert pv_found in {d.device_id for d in hello.devices}
        await wait_for(lambda: gateway.link_up and gateway.batches >= 1)
        assert {"node_id": home.node_id, "eoj": "027901", "host": home.server.addresses[0],
                "finding": "new"} in read_status(gw_home)["findings"]  # fmt: skip
        refused = await answer(ra, acks, signer.sign(GW, {
            "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 40.0, **window()}))
        assert refused.outcomes[0].outcome == "refused"
        assert "not an allow-listed device" in (refused.outcomes[0].reason or "")

        # the RA allows it: applied per device; the EV the home lacks is kept, reported
        listed = signer.sign(GW, allow_list(home, pv=True))
        ack = await answer(ra, acks, listed)
        assert ack.rejected is None
        assert [(o.device_id, o.outcome, o.reason) for o in ack.outcomes] == [
            ("battery-1", "applied", None), ("site.pv-1", "applied", None),
            ("site.ev-1", "refused", "not found on the LAN")]  # fmt: skip
        curtail_before = float(home.town.pv.curtail_pct[0])
        applied = await answer(ra, acks, signer.sign(GW, {
            "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 40.0, **window()}))
        assert (applied.outcomes[0].outcome, applied.outcomes[0].readback) == (
            "applied", {"limit_pct": 40.0})
        assert home.town.pv.curtail_pct[0] == 40.0  # the emulated inverter itself
        # the status file is rewritten once the ack has left (it may reach the RA first)
        await wait_for(lambda: {d["device_id"] for d in read_status(gw_home)["allow_list"]} == {
            "battery-1", "site.pv-1", "site.ev-1"})

        # the same envelope again is a replay (behind the pv_limit since): refused, unchanged
        replayed = await answer(ra, acks, listed)
        assert replayed.rejected == "old_sequence" and replayed.outcomes == []

        # the PV is taken off the list: its command in force is restored, the next refused
        removed = await answer(ra, acks, signer.sign(GW, allow_list(home, pv=False)))
        assert [o.device_id for o in removed.outcomes] == ["battery-1", "site.ev-1"]
        assert home.town.pv.curtail_pct[0] == curtail_before  # restored as cancel would
        again = await answer(ra, acks, signer.sign(GW, {
            "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 30.0, **window()}))
        assert again.outcomes[0].outcome == "refused"
        assert home.town.pv.curtail_pct[0] == curtail_before

        # a malformed list is refused with the reason, and the stored list is untouched
        stored = (gw_home / ALLOW_LIST_FILE).read_bytes()
        bad = await answer(ra, acks, signer.sign(GW, {"type": "allow_list", "devices": [
            {"device_id": "x", "node_id": "not-hex", "eoj": "027d01"}]}))
        assert bad.outcomes[0].outcome == "refused"
        assert "malformed" in (bad.outcomes[0].reason or "")
        assert "node id must be lower-case hex" in (bad.outcomes[0].reason or "")
        assert (gw_home / ALLOW_LIST_FILE).read_bytes() == stored

        # put back, for the restart below
        back = await answer(ra, acks, signer.sign(GW, allow_list(home, pv=True)))
        assert back.outcomes[1].outcome == "applied"

    changes = [r.details for r in SqliteAuditStore(gw_home / "audit.sqlite").records()
               if r.details.get("device_id") == "allow_list" and "added" in r.details]
    assert changes[0]["added"] == ["site.ev-1", "site.pv-1"] and changes[0]["removed"] == []
    assert changes[1]["removed"] == ["site.pv-1"]

    # a restart keeps the RA's list: the PV is controllable before any new allow_list
    restarted = Gateway(config, gw_home)
    assert restarted.allow.key_of("site.pv-1") is not None
    async with running(restarted):
        await wait_for(lambda: restarted.link_up and restarted.executor is not None)
        ack = await answer(ra, acks, signer.sign(GW, {
            "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 55.0, **window()}))
        assert (ack.outcomes[0].outcome, ack.outcomes[0].readback) == (
            "applied", {"limit_pct": 55.0})
    assert json.loads((gw_home / ALLOW_LIST_FILE).read_text())["devices"][1]["eoj"] == "027901"


async def test_a_device_the_registry_allows_after_the_hello_becomes_controllable(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    from erab.aggregator.registry import Registry
    from erab.store import Gateway as GatewayRecord
    from erab.store import Resource, Site, SqliteStore

    signing = Ed25519PrivateKey.generate()
    key = command_key_file(tmp_path, signing)
    config = load_site_config(
        write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    )
    registry = Registry(SqliteStore(tmp_path / "ra.sqlite"))
    registry.add_site(Site(config.site_id, "Home"))
    registry.add_gateway(GatewayRecord(GW, config.site_id))

    def resource(resource_id: str, eoj: str, rated_kw: float | None) -> Resource:
        return Resource(resource_id=resource_id, site_id=config.site_id, gateway_id=GW,
                        device_class="", node_id=home.node_id, eoj=eoj, rated_kw=rated_kw,
                        rated_kwh=None, soc_reserve_pct=None, soc_max_pct=None,
                        availability=())  # fmt: skip

    registry.add_resource(resource("battery-1", "027d01", 3.0))
    gateway = Gateway(config, tmp_path / "gw-home")
    events = await ra.consumer(Stream.EVENTS, "events")
    acks = await ra.consumer(Stream.ACKS, "acks")
    signer = EnvelopeSigner(signing, RealClock())

    def ras_answer(hello: Hello) -> bytes:  # what RaService.answer_hellos signs
        allowed = registry.propose_inventory(hello)
        return signer.sign(GW, {"type": "allow_list", "devices": [
            {"device_id": a.device_id, "node_id": a.node_id, "eoj": a.eoj,
             "rated_power_w": a.rated_power_w} for a in allowed]})  # fmt: skip

    async with running(gateway):
        hello = next(m for m in await collect(
            events, lambda got: any(isinstance(m, Hello) for m in got)) if isinstance(m, Hello))
        first = await answer(ra, acks, ras_answer(hello))
        assert [(o.device_id, o.outcome) for o in first.outcomes] == [("battery-1", "applied")]
        # the PV the hello proposed is pending at the RA; the gateway refuses it
        assert "027901" in {p.eoj for p in registry.pending(GW)}
        refused = await answer(ra, acks, signer.sign(GW, {
            "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 40.0, **window()}))
        assert refused.outcomes[0].outcome == "refused"

        # an operator registers it; the RA's answer to the hello (the same inventory at the
        # gateway's next connect) lets the gateway act
        registry.add_resource(resource("site.pv-1", "027901", None))
        second = await answer(ra, acks, ras_answer(hello))
        assert {(o.device_id, o.outcome) for o in second.outcomes} == {
            ("battery-1", "applied"), ("site.pv-1", "applied")}
        applied = await answer(ra, acks, signer.sign(GW, {
            "type": "pv_limit", "device_id": "site.pv-1", "limit_pct": 40.0, **window()}))
        assert (applied.outcomes[0].outcome, applied.outcomes[0].readback) == (
            "applied", {"limit_pct": 40.0})
    assert home.town.pv.curtail_pct[0] == 40.0


@pytest.mark.parametrize(("flags", "pushed"), [
    ([], True), (["--push-allow-lists"], True), (["--no-push-allow-lists"], False)])
def test_the_ra_pushes_allow_lists_unless_told_not_to(flags: list[str], pushed: bool) -> None:
    from erab.cli import build_parser
    from erab.cli.ra import service_options

    args = build_parser().parse_args(["ra", "serve", *flags])
    assert service_options(args)["push_allow_lists"] is pushed
