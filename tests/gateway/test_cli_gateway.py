"""`erab gateway run / status` as a user runs them, in a subprocess, against an emulated home
and the real nats-server; and the one-line errors for a bad site config or missing files."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import RaLink, RunningBroker, Stream, TelemetryBatch
from tests.bus.conftest import Deployment
from tests.gateway.conftest import Home
from tests.gateway.test_service import collect, command_key_file, write_site_config

pytestmark = pytest.mark.timeout(120)


async def erab(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "erab", *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_run_for_a_few_seconds_then_status_shows_the_inventory_and_an_empty_outbox(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    gw_home = tmp_path / "gw"
    telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")
    code, out, err = await erab("gateway", "run", "--home", str(gw_home), "--config",
                                str(config), "--duration", "3")  # fmt: skip
    assert code == 0, err
    assert "gateway gw-a (site site-gw-a)" in out
    assert err.startswith("gateway stopped: 5 devices") and err.count("\n") == 1  # no traceback

    code, out, err = await erab("gateway", "status", "--home", str(gw_home), "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["running"] is False
    assert status["outbox"]["backlog"] == 0
    assert {d["eoj"] for d in status["inventory"]} >= {"027d01", "027901", "028801"}
    assert [d["device_id"] for d in status["allow_list"]] == ["battery-1"]
    assert status["certificate"]["subject"].find("gw-a") >= 0
    assert status["telemetry_batches"] >= 3  # polled every 0.3 s for 3 s
    got = await collect(telemetry, lambda got: sum(
        isinstance(m, TelemetryBatch) for m in got) >= status["telemetry_batches"])  # fmt: skip
    assert sum(isinstance(m, TelemetryBatch) for m in got) == status["telemetry_batches"]

    code, out, err = await erab("gateway", "status", "--home", str(gw_home))
    assert code == 0, err
    assert "outbox: 0 waiting" in out
    assert "battery-1" in out
    meter_id = status["meter"]["meter_id"]
    assert status["meter"]["source"] == "lan" and status["meter"]["readings"] >= 3
    assert f"meter: {meter_id} by lan, " in out
    assert "local EMS: off" in out


async def test_a_missing_config_bad_toml_or_missing_certificate_is_one_line_exit_2(
    deployment: Deployment, broker: RunningBroker, home: Home, tmp_path: Path
) -> None:
    gw_home = str(tmp_path / "gw")
    code, _, err = await erab("gateway", "run", "--home", gw_home, "--config",
                              str(tmp_path / "nope.toml"))  # fmt: skip
    assert (code, err.count("\n")) == (2, 1)
    assert err.startswith("erab: error: site config") and "not found" in err

    bad = tmp_path / "bad.toml"
    bad.write_text('gateway_id = "gw-a"\nsite_id = \n')
    code, _, err = await erab("gateway", "run", "--home", gw_home, "--config", str(bad))
    assert (code, err.count("\n")) == (2, 1)
    assert "is not valid TOML" in err

    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    deployment.gateways["gw-a"].cert.unlink()
    code, _, err = await erab("gateway", "run", "--home", gw_home, "--config", str(config))
    assert (code, err.count("\n")) == (2, 1)
    assert "gw.pem not found" in err and "erab pki enrol" in err

    code, _, err = await erab("gateway", "status", "--home", str(tmp_path / "empty"))
    assert (code, err.count("\n")) == (2, 1)
    assert "no gateway status" in err
    assert f"erab gateway run --home {tmp_path / 'empty'} --config" in err  # the home given


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_stops_the_gateway_cleanly_and_the_status_says_stopped(
    deployment: Deployment, broker: RunningBroker, home: Home, tmp_path: Path,
    signal_number: int,
) -> None:  # fmt: skip
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    gw_home = tmp_path / "gw"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "erab", "gateway", "run", "--home", str(gw_home),
        "--config", str(config), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        status_file = gw_home / "gateway" / "status.json"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not (status_file.exists() and json.loads(status_file.read_text())["link"]["state"]
                   == "up"):  # fmt: skip
            assert loop.time() < deadline, "the gateway never connected"
            await asyncio.sleep(0.1)
        process.send_signal(signal_number)
        _, err = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert err.decode().startswith("gateway stopped:") and err.count(b"\n") == 1  # no traceback
    status = json.loads(status_file.read_text())
    assert status["running"] is False
    assert status["link"]["state"] == "down"


async def test_status_of_a_killed_gateway_says_not_running_with_its_pid_gone(
    deployment: Deployment, broker: RunningBroker, home: Home, tmp_path: Path
) -> None:
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    gw_home = tmp_path / "gw"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "erab", "gateway", "run", "--home", str(gw_home),
        "--config", str(config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        status_file = gw_home / "gateway" / "status.json"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while not (status_file.exists() and json.loads(status_file.read_text())["polls"] >= 1):
            assert loop.time() < deadline, "the gateway never polled"
            await asyncio.sleep(0.1)
        code, out, err = await erab("gateway", "status", "--home", str(gw_home), "--json")
        alive = json.loads(out)
        assert (alive["alive"], alive["not_running_reason"]) == (True, None)
        process.kill()  # SIGKILL: no chance to write "stopped"
        await process.wait()  # reaped, so its pid is gone
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert json.loads(status_file.read_text())["running"] is True  # the file still says so

    code, out, err = await erab("gateway", "status", "--home", str(gw_home), "--json")
    assert code == 0, err
    status = json.loads(out)
    assert status["alive"] is False
    assert status["not_running_reason"].startswith(f"pid {process.pid} gone; last update ")
    code, out, err = await erab("gateway", "status", "--home", str(gw_home))
    assert code == 0, err
    first = out.splitlines()[0]
    assert f"not running (pid {process.pid} gone; last update {status['updated_at']})" in first


def test_a_status_file_not_rewritten_for_several_polls_is_not_running() -> None:
    from erab.gateway.service import not_running_reason

    status = {"running": True, "pid": 1, "poll_interval_s": 5.0, "updated_at": "T"}
    assert not_running_reason(status, age_s=14.0, alive=True) is None
    reason = not_running_reason(status, age_s=16.0, alive=True)
    assert reason is not None and reason.startswith("no update for 16 s (more than 15 s)")
    assert not_running_reason({**status, "running": False}, age_s=999, alive=False) is None
