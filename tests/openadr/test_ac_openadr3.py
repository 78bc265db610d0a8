"""``erab ac serve`` serves the OpenADR 3 REST API beside the 2.0b VTN: over HTTPS with the
deployment's certificate, to clients registered with ``erab ac client``, every change audited."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from erab.cli import main as erab
from erab.clock import RealClock
from erab.security import AuditLog, SecurityHome
from tests.openadr.conftest import Pki, free_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = erab(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def wait_listening(port: int, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"erab ac serve did not listen: {log.read_text()}") from None
            time.sleep(0.1)


@pytest.fixture
def ac(pki: Pki, tmp_path: Path) -> Iterator[tuple[int, int, subprocess.Popen[str], Path]]:
    port, v3_port = free_port(), free_port()
    log = tmp_path / "ac-serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "erab", "ac", "serve", "--home", str(pki.home),
             "--port", str(port), "--openadr3-port", str(v3_port)],
            stdout=subprocess.DEVNULL, stderr=sink, text=True)  # fmt: skip
    try:
        wait_listening(v3_port, process, log)
        yield port, v3_port, process, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def test_clients_are_added_listed_and_removed(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    home = str(pki.home)
    code, out, _ = run(capsys, "ac", "client", "add", "ops", "--role", "bl", "--home", home)
    assert code == 0 and len(out.splitlines()[-1]) >= 20  # the secret, shown once
    code, _, err = run(capsys, "ac", "client", "add", "v1", "--role", "ven", "--home", home)
    assert code == 2 and "--ven-name" in err
    assert run(capsys, "ac", "client", "add", "v1", "--role", "ven", "--ven-name", "ra-1",
               "--home", home)[0] == 0  # fmt: skip
    code, out, _ = run(capsys, "ac", "client", "list", "--json", "--home", home)
    assert json.loads(out) == [
        {"client_id": "ops", "role": "bl", "ven_name": None},
        {"client_id": "v1", "role": "ven", "ven_name": "ra-1"},
    ]
    assert run(capsys, "ac", "client", "remove", "v1", "--home", home)[0] == 0
    code, _, err = run(capsys, "ac", "client", "remove", "v1", "--home", home)
    assert code == 2 and "no client 'v1'" in err and "ops" in err
    log = AuditLog.for_home(SecurityHome(pki.home), RealClock())
    kinds = [r.details.get("event") for r in log.store.records()]
    assert kinds.count("openadr3_client_added") == 2 and "openadr3_client_removed" in kinds


def test_ac_serve_serves_openadr3_over_https_to_registered_clients(
    ac: tuple[int, int, subprocess.Popen[str], Path], pki: Pki,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _, v3_port, process, log = ac
    code, out, _ = run(capsys, "ac", "client", "add", "ops", "--role", "bl",
                       "--home", str(pki.home))  # fmt: skip
    assert code == 0
    secret = out.splitlines()[-1]
    base = f"https://127.0.0.1:{v3_port}"
    # the AC's certificate is the deployment CA's: verified, not trusted blindly
    trust = ssl.create_default_context(cafile=str(SecurityHome(pki.home).ca_bundle))
    with httpx.Client(base_url=base, verify=trust) as http:
        assert http.get("/programs").status_code in (401, 403)
        wrong = http.post("/auth/token", data={"grant_type": "client_credentials",
                                               "client_id": "ops", "client_secret": "nope"})
        assert wrong.status_code in (400, 401)
        token = http.post("/auth/token", data={"grant_type": "client_credentials",
                                               "client_id": "ops", "client_secret": secret})
        assert token.status_code == 200, token.text
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        made = http.post("/programs", headers=auth, json={"programName": "tertiary-1"})
        assert made.status_code == 201, made.text
        listed = http.get("/programs", headers=auth).json()
        assert [p["programName"] for p in listed] == ["tertiary-1"]
    with pytest.raises(httpx.ConnectError):  # not a certificate the public roots vouch for
        httpx.get(f"https://127.0.0.1:{v3_port}/programs", verify=True, timeout=5)
    records = AuditLog.for_home(SecurityHome(pki.home), RealClock()).store.records()
    changes = [r for r in records if r.details.get("event") == "openadr3_change"]
    assert [(c.subject, c.details["kind"], c.details["operation"]) for c in changes] == [
        ("ops", "PROGRAM", "CREATE")
    ]
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0, log.read_text()
    with socket.socket() as again:  # the port is free once it stopped
        again.bind(("127.0.0.1", v3_port))


def test_ac_serve_on_a_taken_openadr3_port_says_so(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run(capsys, "ac", "serve", "--home", str(pki.home), "--port",
                           str(free_port()), "--openadr3-port", str(port), "--duration", "5")
    assert code == 2 and f"cannot listen on 127.0.0.1:{port} for OpenADR 3" in err


@pytest.mark.parametrize("argv", [["ac", "client", "list"], ["ac", "event", "list"],
                                  ["ac", "ven", "list"]])  # fmt: skip
def test_a_missing_home_is_named_and_nothing_is_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    home = tmp_path / "typo"
    code, _, err = run(capsys, *argv, "--home", str(home))
    assert code == 2 and f"no deployment home at {home}" in err
    assert not home.exists()
