"""``erab ra status`` against a real uvicorn server of the RA's API over a real RaService:
the figures of a known state (an active event, a refused command, a silent and a revoked
gateway, open alerts), its JSON, and one-line errors for a refused token and a stopped RA."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn

from erab.aggregator.alerts import AlertKind
from erab.aggregator.api import api_certificate, create_app
from erab.aggregator.events import EventRequest
from erab.aggregator.ingest import to_batch
from erab.aggregator.service import RaService
from erab.bus import Acknowledgement, DeviceOutcome
from erab.cli import main
from erab.security import OperatorDirectory, Role, SecurityHome
from erab.security.operators import Argon2Parameters
from erab.store import Gateway, GatewayStatus
from tests.aggregator.test_operations import (  # noqa: F401
    SITES,
    advance,
    deployment,
    ra,
    telemetry,
)
from tests.bus.conftest import Deployment, make_deployment

KEYS = {"api", "answers", "answered_in_ms", "gateways", "resources", "fleet", "events",
        "commands", "alerts"}  # fmt: skip


@contextlib.asynccontextmanager
async def serve(ra: RaService, deployment: Deployment, *,  # noqa: F811
                tls: bool = False) -> AsyncIterator[tuple[str, str]]:  # fmt: skip
    """The RA's app on uvicorn (over HTTPS with the deployment's API certificate when
    ``tls``), served on the test's event loop: the thread that owns the RA's SQLite store, as
    in 'erab ra serve'.  Yields its URL and a viewer's token file; the CLI runs in another
    thread (:func:`ra_status_cli`)."""
    operators = OperatorDirectory(SecurityHome(deployment.home).operators_db, ra.clock,
                                  argon2_parameters=Argon2Parameters(1, 1024, 1))  # fmt: skip
    operators.add("vera", Role.VIEWER, "correct horse battery")
    token = deployment.home / "vera.token"
    token.write_text(operators.issue_token("vera", "test") + "\n")
    cert = key = None
    if tls:
        cert, key = api_certificate(deployment.home, ["127.0.0.1"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(create_app(ra, operators), log_level="warning",
                                               lifespan="off", ssl_certfile=cert,
                                               ssl_keyfile=key))  # fmt: skip
        task = asyncio.create_task(server.serve(sockets=[sock]))
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        try:
            scheme = "https" if tls else "http"
            yield f"{scheme}://127.0.0.1:{sock.getsockname()[1]}", str(token)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)


@pytest.fixture
async def api(ra: RaService, deployment: Deployment) -> AsyncIterator[tuple[str, str]]:  # noqa: F811
    async with serve(ra, deployment) as served:
        yield served


async def ra_status_cli(*args: str) -> int:
    """``erab ra status ARGS`` in a thread, while the loop serves the API."""
    return await asyncio.to_thread(main, ["ra", "status", *args])


async def known_state(ra: RaService) -> str:  # noqa: F811
    """gw-a online, gw.b silent, gw-c revoked; an active -4 kW event with two battery
    commands, one refused; a wrong-site alert and gw.b's silent alert open."""
    ra.registry.add_gateway(Gateway("gw-c", "site-b"))
    ra.store.set_gateway("gw-c", status=GatewayStatus.REVOKED, cert_serial=None,
                         at=ra.clock.now())  # fmt: skip
    first = ra.clock.now()
    ra.store.write_uplink_batch(to_batch([telemetry(gw, f"{site}.bat", 1, first, soc_pct=80.0)
                                          for site, gw in SITES]), first)  # fmt: skip
    advance(ra, timedelta(minutes=10))
    now = ra.clock.now()
    ra.store.write_uplink_batch(to_batch([telemetry("gw-a", "site-a.bat", 2, now,
                                                    soc_pct=80.0)]), now)  # fmt: skip
    assert ra.store.mark_silent_gateways(now - timedelta(minutes=5), now) == ["gw.b"]
    ra.alerts.raise_once(AlertKind.WRONG_SITE, "gateway gw-a: said hello for site x",
                         gateway_id="gw-a")  # fmt: skip
    ra.apply_telemetry([telemetry(gw, f"{site}.bat", 3, now, soc_pct=80.0, power_w=400.0)
                        for site, gw in SITES])  # fmt: skip
    ra.snapshot()
    event = await ra.create_event(EventRequest(-4.0, now, timedelta(hours=1),
                                               requested_by="otto"))  # fmt: skip
    await ra.tick()  # its window has started: active, with the closed loop's first check
    assert ra.fanout is not None
    commands = list(ra.fanout.commands.values())
    assert len(commands) == 2
    refused = commands[0]
    outcome = DeviceOutcome(device_id=str(refused.body["device_id"]), outcome="refused",
                            reason="held locally")  # fmt: skip
    ra.fanout.acknowledged(Acknowledgement(gateway_id=refused.gateway_id, seq=99, sent_at=now,
                                           command_seq=refused.sequence, received_at=now,
                                           outcomes=[outcome]))  # fmt: skip
    return event.event_id


async def test_the_text_gives_each_figure_of_the_known_state(
    ra: RaService, api: tuple[str, str], capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:  # fmt: skip
    event_id = await known_state(ra)
    url, token = api
    fleet = ra.fleet_summary()
    delivery = ra.event_detail(event_id)["delivery"]
    assert await ra_status_cli("--api", url, "--token-file", token) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"RA at {url}: answers (")
    assert lines[1] == ("gateways: 1 online, 0 offline, 1 silent, 1 revoked (of 3); "
                        "resources: 2 of 2 online")  # fmt: skip
    assert lines[2] == (f"fleet: 0.80 kW now; flexibility next hour "
                        f"{fleet['flexibility_down_kw']:.2f} kW down, "
                        f"{fleet['flexibility_up_kw']:.2f} kW up")  # fmt: skip
    assert lines[3] == "events: 1 active"
    assert lines[4].startswith(f"  active {event_id}: target -4 kW until ")
    assert lines[4].endswith(f"delivered {delivery['delivered_kw']:.2f} kW "
                             f"({100 * delivery['ratio']:.0f} % of the target)")  # fmt: skip
    assert lines[5] == "commands: 1 pending, 1 refused (of 2)"
    assert lines[6] == "alerts: 2 open, newest:"
    assert [line.split()[1] for line in lines[7:]] == ["wrong_site", "gateway_silent"]


async def test_json_is_one_object_with_the_documented_keys_and_figures(
    ra: RaService, api: tuple[str, str], capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:  # fmt: skip
    event_id = await known_state(ra)
    url, token = api
    assert await ra_status_cli("--api", url, "--token-file", token, "--json") == 0
    status = json.loads(capsys.readouterr().out)
    assert set(status) == KEYS
    assert (status["api"], status["answers"]) == (url, True)
    assert status["gateways"] == {"total": 3, "online": 1, "offline": 0, "silent": 1,
                                  "revoked": 1, "enrolled": 0}  # fmt: skip
    assert status["resources"] == {"total": 2, "online": 2}
    assert status["fleet"]["power_kw"] == pytest.approx(0.8)
    assert status["events"]["by_stage"]["active"] == 1 and status["events"]["total"] == 1
    active = status["events"]["active"]
    assert (active["event_id"], active["target_kw"]) == (event_id, -4.0)
    assert active["delivered_kw"] == ra.event_detail(event_id)["delivery"]["delivered_kw"]
    assert active["delivered_kw"] is not None
    commands = status["commands"]
    assert (commands["pending"], commands["refused"], commands["total"]) == (1, 1, 2)
    assert commands["by_stage"]["sent"] == 1
    assert status["alerts"]["open"] == 2
    assert [a["kind"] for a in status["alerts"]["newest"]] == ["wrong_site", "gateway_silent"]


async def test_an_idle_ra_says_none(
    api: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url, token = api
    assert await ra_status_cli("--api", url, "--token-file", token) == 0
    out = capsys.readouterr().out
    assert "events: none" in out and "commands: 0 pending, 0 refused (of 0)" in out
    assert out.rstrip().endswith("alerts: 0 open")


async def test_a_refused_token_is_one_line_and_exit_2(
    api: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _ = api
    bad = tmp_path / "bad.token"
    bad.write_text("erab_not-a-token\n")
    assert await ra_status_cli("--api", url, "--token-file", str(bad)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("erab: error: the RA refused (401)")


def test_a_stopped_ra_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:  # a port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    token = tmp_path / "token"
    token.write_text("erab_x\n")
    assert main(["ra", "status", "--api", f"http://127.0.0.1:{port}", "--token-file",
                 str(token), "--json"]) == 2  # fmt: skip
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert f"cannot reach the RA at http://127.0.0.1:{port}" in line
    assert "is 'erab ra serve' running?" in line


async def test_an_https_ra_is_verified_against_the_deployments_ca(
    ra: RaService, deployment: Deployment, tmp_path: Path,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    bundle = SecurityHome(deployment.home).ca_bundle
    async with serve(ra, deployment, tls=True) as (url, token):
        assert await ra_status_cli("--api", url, "--token-file", token, "--ca-file",
                                   str(bundle), "--json") == 0  # fmt: skip
        assert json.loads(capsys.readouterr().out)["gateways"]["total"] == 2
        other = make_deployment(tmp_path / "other")  # another deployment's CA: not trusted
        assert await ra_status_cli("--api", url, "--token-file", token, "--ca-file",
                                   str(SecurityHome(other.home).ca_bundle)) == 2  # fmt: skip
    [line] = capsys.readouterr().err.splitlines()
    assert "not verified by the CA bundle" in line
