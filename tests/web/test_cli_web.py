"""``erab web serve``: the RA of a deployment home with its console and REST API on one
listener, against a real broker; and what it says when the home is not a deployment."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from erab.aggregator import Registry
from erab.bus import RunningBroker
from erab.cli.ra import scenario_inventory, store_path
from erab.clock import RealClock
from erab.devices import Scenario
from erab.security import Argon2Parameters, OperatorDirectory, Role, SecurityHome
from erab.store import SqliteStore
from tests.bus.conftest import Deployment, broker, deployment  # noqa: F401
from tests.gateway.test_fleet import with_command_key
from tests.web.conftest import PASSWORD, csrf_of

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_web_serve_runs_the_ra_with_console_and_api_on_one_listener(
    deployment: Deployment, broker: RunningBroker, tls: bool,  # noqa: F811
) -> None:  # fmt: skip
    with_command_key(deployment)
    store = SqliteStore(store_path(deployment.home), create=True)
    Registry(store).import_inventory(scenario_inventory(Scenario.generate(3, 0, seed=0)))
    store.close()
    OperatorDirectory(SecurityHome(deployment.home).operators_db, RealClock(),
                      argon2_parameters=Argon2Parameters(1, 1024, 1)).add(
        "vera", Role.VIEWER, PASSWORD)  # fmt: skip
    # over TLS: the broker's server certificate (127.0.0.1, issued by the deployment's CA)
    layout = deployment.layout
    extra = ["--tls-cert", str(layout.server_cert), "--tls-key", str(layout.server_key)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "erab", "web", "serve", "--home", str(deployment.home),
         "--listen", "127.0.0.1:0", "--duration", "60", *(extra if tls else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stderr is not None
    try:
        url = None
        deadline = time.monotonic() + 30
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "console and REST API on " in line:
                url = line.rsplit(" ", 1)[1].strip()
        assert url is not None, "erab web serve printed no address"
        assert url.startswith("https://" if tls else "http://")
        verify = ssl.create_default_context(cafile=str(layout.security.ca_bundle))
        with httpx.Client(base_url=url, follow_redirects=True, verify=verify) as c:
            assert c.get("/api/v1/fleet").status_code == 401  # the RA's API, mounted
            page = c.get("/login")
            assert ("Secure" in page.headers["set-cookie"]) is tls
            r = c.post("/login", data={"name": "vera", "password": PASSWORD,
                                       "csrf_token": csrf_of(page.text)})
            assert r.status_code == 200 and 'data-page="fleet"' in r.text
            fleet = c.get("/ui/api/fleet").json()
            assert {s["site_id"] for s in fleet["sites"]} == {"home-1", "home-2", "home-3"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing listens there any more


def test_web_serve_on_a_folder_that_is_no_deployment_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "erab", "web", "serve", "--home",
                           str(tmp_path), "--listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2 and "erab pki init" in proc.stderr
    assert "Traceback" not in proc.stderr
