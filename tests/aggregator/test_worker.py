"""``erab ra serve`` as processes: two real ``--worker`` processes share the ingest through the
durable consumers of a real nats-server (every message stored once, none lost), and
``--api-tls`` serves HTTPS that clients verify with the deployment's CA."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from erab.aggregator.service import RaService
from erab.bus import RunningBroker, UplinkMessage
from erab.bus.ra import LinkErrors
from erab.clock import RealClock
from erab.security import OperatorDirectory, Role, SecurityHome
from erab.security.operators import Argon2Parameters
from erab.store import SqliteStore, open_store
from tests.aggregator.test_ingest import publish, setup_registry, telemetry
from tests.bus.conftest import Deployment, broker, connect_ra, deployment  # noqa: F401
from tests.gateway.test_fleet import with_command_key
from tests.store.conftest import MIGRATED, pg_cluster  # noqa: F401

pytestmark = pytest.mark.timeout(120)

N = 200


def start_worker(home: Path, store_url: str | None) -> subprocess.Popen[str]:
    store = [] if store_url is None else ["--store", store_url]
    return subprocess.Popen(
        [sys.executable, "-m", "erab", "ra", "serve", "--worker", "--home", str(home), "--json",
         *store],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip


def stop_worker(worker: subprocess.Popen[str]) -> dict[str, object]:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Traceback" not in err, err
    return dict(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, deployment: Deployment) -> str | None:  # noqa: F811
    """None: the default SQLite file under the home; else a fresh PostgreSQL database of
    a throw-away cluster (tests/pg.py), given to the workers with --store."""
    if request.param == "sqlite":
        return None
    cluster = request.getfixturevalue("pg_cluster")
    return str(cluster.fresh_database(template=MIGRATED))


async def test_two_worker_processes_store_every_message_once(
    deployment: Deployment, broker: RunningBroker, store_url: str | None,  # noqa: F811
) -> None:  # fmt: skip
    url = store_url or f"sqlite:///{deployment.home / 'ra' / 'ra.sqlite'}"
    setup_registry(open_store(url))  # type: ignore[arg-type]
    workers = [start_worker(deployment.home, store_url) for _ in range(2)]
    try:
        for w in workers:  # each says so once its consumers are bound
            line = await asyncio.to_thread(w.stdout.readline)  # type: ignore[union-attr]
            assert json.loads(line) == {"worker": "ready"}, (line, w.stderr.read())  # type: ignore[union-attr]
        link = await connect_ra(deployment, broker)
        try:
            messages: list[UplinkMessage] = [telemetry(s) for s in range(1, N + 1)]
            messages += [telemetry(s) for s in range(1, N + 1, 5)]  # 40 redelivered copies
            messages += [telemetry(s, gw="gw.b", device="site-b.bat") for s in range(1, 21)]
            for i in range(0, len(messages), 10):  # bursts, while both workers are pulling
                await publish(link, messages[i : i + 10])
                await asyncio.sleep(0.05)
        finally:
            await link.close()
        store: Any = open_store(url)
        for _ in range(200):
            if store.count_rows("uplink_seen") == N + 20:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let any straggling redelivery arrive, to be dropped
    finally:
        counts = [stop_worker(w) for w in workers]
    assert store.count_rows("uplink_seen") == N + 20
    assert store.count_rows("telemetry") == 2 * (N + 20)
    powers = [v for _, p, _, v, _, _ in store.telemetry("site-a.bat") if p == "power_w"]
    assert powers == [100.0 * s for s in range(1, N + 1)]  # none lost, none twice
    stored = [int(c["messages"]) for c in counts]  # type: ignore[call-overload]
    assert sum(stored) == N + 20
    assert all(n > 0 for n in stored), f"one worker took everything: {stored}"
    assert sum(int(c["duplicates"]) for c in counts) == 40  # type: ignore[call-overload]
    # the registry commands read the same store (--store, or the home's SQLite file)
    where = ["--home", str(deployment.home)] + ([] if store_url is None else ["--store", url])
    listed = subprocess.run([sys.executable, "-m", "erab", "ra", "gateway", "list", "--json",
                             *where], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    status = {g["gateway_id"]: g["status"] for g in json.loads(listed.stdout)}
    assert set(status) == {"gw-a", "gw.b"}
    # the messages were sent an hour ago: a worker's silence check may have found a gateway
    # silent since (past --silent-after): offline, with an alert the store shows
    alerts = subprocess.run([sys.executable, "-m", "erab", "ra", "alerts", "--json", *where],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert alerts.returncode == 0, alerts.stderr
    silent = {a["gateway"] for a in json.loads(alerts.stdout) if a["kind"] == "gateway_silent"}
    assert silent == {g for g, st in status.items() if st == "offline"}


def test_a_worker_without_a_registry_says_what_to_do(deployment: Deployment) -> None:  # noqa: F811
    done = subprocess.run(
        [sys.executable, "-m", "erab", "ra", "serve", "--worker", "--home", str(deployment.home),
         "--duration", "1"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "erab ra import" in done.stderr and "Traceback" not in done.stderr


def test_a_store_url_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "erab", "ra", "site", "list", "--store",
         "mysql://ra:secret@db/erab"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "unknown store URL" in done.stderr and "Traceback" not in done.stderr
    assert "secret" not in done.stderr  # a password in a URL is never printed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_erab_ra_serve_api_tls_serves_https_that_the_deployment_ca_verifies(
    deployment: Deployment, broker: RunningBroker, tmp_path: Path,  # noqa: F811
) -> None:  # fmt: skip
    with_command_key(deployment)
    setup_registry(SqliteStore(deployment.home / "ra" / "ra.sqlite"))
    operators = OperatorDirectory(SecurityHome(deployment.home).operators_db, RealClock(),
                                  argon2_parameters=Argon2Parameters(1, 1024, 1))  # fmt: skip
    operators.add("vera", Role.VIEWER, "correct horse battery")
    token = tmp_path / "vera.token"
    token.write_text(operators.issue_token("vera", "test") + "\n")
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "erab", "ra", "serve", "--home", str(deployment.home), "--api",
         f"127.0.0.1:{port}", "--api-tls", "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = await asyncio.to_thread(serve.stderr.readline)  # type: ignore[union-attr]
        assert f"REST API on https://127.0.0.1:{port}" in line, line
        bundle = SecurityHome(deployment.home).ca_bundle
        done = None
        for _ in range(50):  # until uvicorn listens
            done = await asyncio.to_thread(subprocess.run, [
                sys.executable, "-m", "erab", "ra", "flex", "--api", f"https://127.0.0.1:{port}",
                "--token-file", str(token), "--ca-file", str(bundle), "--json"],
                capture_output=True, text=True, timeout=60)  # fmt: skip
            if done.returncode == 0 or "cannot reach" not in done.stderr:
                break
            await asyncio.sleep(0.2)
        assert done is not None and done.returncode == 0, done.stderr if done else ""
        assert len(json.loads(done.stdout)["slots"]) == 48
        plain = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "erab", "ra", "flex", "--api", f"http://127.0.0.1:{port}",
            "--token-file", str(token)], capture_output=True, text=True, timeout=60)  # fmt: skip
        assert plain.returncode != 0 and "Traceback" not in plain.stderr  # no plain HTTP
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=30)


def test_a_worker_refuses_what_only_the_ra_does(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "erab", "ra", "serve", "--worker", "--home", str(tmp_path),
         "--event-kw", "-5"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0 and "--worker runs ingest only" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_ra_opens_its_telemetry_feed_again_when_the_broker_drops_it(
    deployment: Deployment, broker: RunningBroker,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    with_command_key(deployment)
    setup_registry(SqliteStore(deployment.home / "ra" / "ra.sqlite"))
    ra = RaService(deployment.home)
    row = [r.resource_id for r in ra.resources].index("site-a.bat")
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(ra.run(stop, ready=ready))
    link = await connect_ra(deployment, broker)

    async def soc_becomes(value: float) -> None:
        for _ in range(150):
            if ra.state.soc_pct[row] == value:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"the RA's state never saw SOC {value}: {ra.state.soc_pct[row]}")

    try:
        await asyncio.wait_for(ready.wait(), 15)
        await publish(link, [telemetry(1, soc=50.0, at=datetime.now(UTC))])
        await soc_becomes(50.0)
        dropped = [c.name async for c in _ephemeral(link)]
        assert dropped, "the RA's feed is an ephemeral consumer"
        for name in dropped:
            await link.js.delete_consumer("ERAB_TELEMETRY", name)
        await publish(link, [telemetry(2, soc=60.0, at=datetime.now(UTC))])
        await soc_becomes(60.0)
        assert not task.done()
        assert "telemetry feed lost" in caplog.text
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await link.close()


async def _ephemeral(link: Any) -> Any:
    for info in await link.js.consumers_info("ERAB_TELEMETRY"):
        if not info.config.durable_name:
            yield info


async def test_a_tls_error_while_the_broker_link_closes_prints_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the cause of a worker's traceback at SIGTERM, about one stop in six under load: nats-py
    # hands the TLS close race to its error callback, whose default logs a traceback
    caplog.set_level(logging.DEBUG)
    crossed = ssl.SSLError(1, "[SSL: APPLICATION_DATA_AFTER_CLOSE_NOTIFY] application data "
                              "after close notify")  # fmt: skip
    errors = LinkErrors()
    await errors.report(crossed)  # before the close: a real problem, one warning line
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "APPLICATION_DATA_AFTER_CLOSE_NOTIFY" in caplog.records[0].getMessage()
    assert caplog.records[0].exc_info is None  # no traceback
    errors.closing = True
    await errors.report(crossed)
    await errors.report(ConnectionResetError("reset by peer"))
    assert [r.levelno for r in caplog.records[1:]] == [logging.DEBUG, logging.DEBUG]
    assert all("harmless at shutdown" in r.getMessage() for r in caplog.records[1:])
    await errors.report(ValueError("a real bug"))  # anything else still reaches the log
    assert caplog.records[-1].levelno == logging.WARNING and "a real bug" in caplog.text
