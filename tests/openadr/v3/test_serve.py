"""The standalone runner: ``python -m erab.openadr.v3`` in its own process, and the app of a
state folder."""

from __future__ import annotations

import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx

from erab.openadr.v3.auth import Role
from erab.openadr.v3.serve import KEY_FILE, STORE_FILE, app_for_home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_runner_registers_clients_and_serves_them(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erab.openadr.v3",
            "--home",
            str(tmp_path),
            "--port",
            str(port),
            "--add-client",
            "grid:bl",
            "--add-client",
            "ra-1:ven:ven-ra-1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        secrets = dict(proc.stdout.readline().split() for _ in range(2))
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.post(
                    f"{url}/auth/token",
                    data={"grant_type": "client_credentials"},
                    auth=("ra-1", secrets["ra-1"]),
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the runner did not start"
                time.sleep(0.1)
        assert r.status_code == 200 and "write_reports" in r.json()["scope"]
    finally:
        proc.terminate()
        proc.wait(10)
    for name in (STORE_FILE, KEY_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_a_bad_client_spec_is_refused_naming_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "erab.openadr.v3",
            "--home",
            str(tmp_path),
            "--add-client",
            "ra-1:ven",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "--add-client ra-1:ven" in done.stderr and "venName" in done.stderr


def test_the_app_of_a_folder_keeps_its_key_across_restarts(tmp_path: Path) -> None:
    first = app_for_home(tmp_path)
    secret = first.state.clients.register("bl", Role.BL)
    key = (tmp_path / KEY_FILE).read_bytes()
    first.state.store.close()
    second = app_for_home(tmp_path)
    assert (tmp_path / KEY_FILE).read_bytes() == key
    assert second.state.clients.authenticate("bl", secret).client_id == "bl"
    second.state.store.close()
