"""`erab broker run / status / reload` as a user runs them: in a subprocess, stopped by signal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from erab.bus.broker import BrokerHome
from tests.bus.conftest import Deployment, make_deployment

pytestmark = pytest.mark.timeout(120)

Running = tuple[Deployment, subprocess.Popen[str], dict[str, object]]


def erab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "erab", *args], capture_output=True,
                          text=True, timeout=60, env=env)


def listening_ports(pid: int) -> set[int]:
    """TCP ports in LISTEN state owned by ``pid`` (from /proc, no probing binds)."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except FileNotFoundError:
        return set()
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def all_listening() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


@pytest.fixture
def running_cli(tmp_path: Path) -> Iterator[Running]:
    deployment = make_deployment(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "erab", "broker", "run", "--home", str(deployment.home),
         "--port", "0", "--mqtt-port", "0", "--monitor-port", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else "no output"
        yield deployment, process, json.loads(line)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_reports_ready_and_a_signal_stops_it_and_its_child(
    running_cli: Running,
    stop_signal: signal.Signals,
) -> None:
    deployment, process, ready = running_cli
    child = int(str(ready["pid"]))
    ports = listening_ports(child)
    assert len(ports) == 3  # NATS, MQTT, monitor
    assert str(ready["nats_url"]).startswith("tls://127.0.0.1:")

    status = erab("broker", "status", "--home", str(deployment.home), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["running"] and report["pid"] == child
    assert report["version"].startswith("2.") and report["gateways_admitted"] == 2
    assert report["nats_url"] == ready["nats_url"]

    process.send_signal(stop_signal)
    assert process.wait(20) == 0
    assert not Path(f"/proc/{child}").exists() or b"nats-server" not in Path(
        f"/proc/{child}/cmdline").read_bytes()
    assert not ports & all_listening()  # nothing of ours left bound
    assert not BrokerHome(deployment.home).state.exists()
    after = erab("broker", "status", "--home", str(deployment.home))
    assert after.returncode == 1 and "not running" in after.stdout


def test_reload_regenerates_permissions_of_a_running_broker(
    running_cli: Running,
) -> None:
    deployment, process, _ = running_cli
    deployment.ca.revoke_gateway("gw-a", "keyCompromise")
    result = erab("broker", "reload", "--home", str(deployment.home), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "reloaded": True, "pid": json.loads(erab("broker", "status", "--home", str(
            deployment.home), "--json").stdout)["pid"], "gateways": ["gw.b"], "services": ["ra"],
    }
    accounts = BrokerHome(deployment.home).accounts.read_text()
    assert "CN=gw-a" not in accounts and "CN=gw.b" in accounts
    process.send_signal(signal.SIGINT)
    assert process.wait(20) == 0


def test_run_stops_after_its_duration(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    result = erab("broker", "run", "--home", str(deployment.home), "--port", "0",
                  "--mqtt-port", "0", "--monitor-port", "0", "--duration", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("broker ready: NATS tls://127.0.0.1:")
    assert "broker stopped" in result.stderr


def test_run_with_a_relative_home(tmp_path: Path) -> None:
    # nats-server runs in the broker folder: a relative --home must not be read from there
    make_deployment(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "erab", "broker", "run", "--home", "erab-home", "--port", "0",
         "--mqtt-port", "0", "--monitor-port", "0", "--duration", "1"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("broker ready: NATS tls://127.0.0.1:")


def test_run_without_a_ca_says_what_to_do(tmp_path: Path) -> None:
    result = erab("broker", "run", "--home", str(tmp_path / "empty"), "--duration", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("erab: error: no CA in ")
    assert "erab pki init" in result.stderr and "Traceback" not in result.stderr


def test_a_taken_port_is_one_clear_error(tmp_path: Path) -> None:
    import socket

    deployment = make_deployment(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = erab("broker", "run", "--home", str(deployment.home), "--port", str(port),
                      "--mqtt-port", "0", "--monitor-port", "0", "--duration", "1")
    assert result.returncode == 2
    assert result.stderr.startswith("erab: error: nats-server stopped while starting")
    assert "address already in use" in result.stderr and "Traceback" not in result.stderr


def test_status_and_reload_without_a_broker(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    status = erab("broker", "status", "--home", str(deployment.home), "--json")
    assert status.returncode == 1 and json.loads(status.stdout)["running"] is False
    reload = erab("broker", "reload", "--home", str(deployment.home))
    assert reload.returncode == 0 and "no broker running" in reload.stdout


def test_env_home_is_used_when_no_home_flag(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    env = {**os.environ, "ERAB_HOME": str(deployment.home)}
    reload = erab("broker", "reload", "--json", env=env)
    assert reload.returncode == 0
    assert json.loads(reload.stdout)["gateways"] == ["gw-a", "gw.b"]


def test_reload_in_a_home_without_a_broker_says_so_and_writes_nothing(tmp_path: Path) -> None:
    from erab.bus import regenerate_and_reload
    from erab.clock import RealClock
    from erab.security import CertificateAuthority, SecurityHome

    home = tmp_path / "no-broker"
    CertificateAuthority.initialise(SecurityHome(home), RealClock())
    assert regenerate_and_reload(home).prepared is False
    result = erab("broker", "reload", "--home", str(home))
    assert result.returncode == 2 and "no broker set up in" in result.stderr
    assert not (home / "broker").exists()
