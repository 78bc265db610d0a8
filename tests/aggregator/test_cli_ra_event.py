"""``erab ra event create|list|show|cancel`` against the RA's API on a real uvicorn server."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from erab.cli import main
from erab.cli.ra_event import parse_duration, parse_start
from erab.clock import JST
from erab.security import Role
from tests.aggregator.test_api import (  # noqa: F401
    app,
    audit,
    backend,
    clock,
    operators,
    tokens,
)


@pytest.fixture
def api(app: FastAPI) -> Iterator[str]:  # noqa: F811
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def token_file(tmp_path: Path, token: str) -> str:
    path = tmp_path / "token"
    path.write_text(token + "\n")
    return str(path)


def test_an_operator_creates_lists_and_cancels_an_event(
    api: str, tokens: dict[Role, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    tok = token_file(tmp_path, tokens[Role.OPERATOR])
    assert main(["ra", "event", "create", "--kw", "-300", "--start", "2026-08-03T14:00+09:00",
                 "--duration", "3h", "--api", api, "--token-file", tok, "--json"]) == 0  # fmt: skip
    created = json.loads(capsys.readouterr().out)
    assert (created["target_kw"], created["requested_by"]) == (-300.0, "otto")
    assert created["end"].startswith("2026-08-03T17:00")
    assert main(["ra", "event", "list", "--api", api, "--token-file", tok]) == 0
    assert created["event_id"] in capsys.readouterr().out
    assert main(["ra", "event", "cancel", created["event_id"], "--api", api,
                 "--token-file", tok]) == 0  # fmt: skip
    assert "cancelled" in capsys.readouterr().out


def test_a_viewer_is_refused_with_the_apis_reason(
    api: str, tokens: dict[Role, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    tok = token_file(tmp_path, tokens[Role.VIEWER])
    assert main(["ra", "event", "create", "--kw", "-5", "--start", "2026-08-03T14:00+09:00",
                 "--api", api, "--token-file", tok]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "refused (403)" in err and "manage_dr_events" in err


def test_no_ra_running_and_bad_input_are_clear(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tok = token_file(tmp_path, "x")
    assert main(["ra", "event", "list", "--api", "http://127.0.0.1:9", "--token-file", tok]) != 0
    assert "is 'erab ra serve' running?" in capsys.readouterr().err
    assert main(["ra", "event", "create", "--kw", "-5", "--duration", "three hours",
                 "--token-file", tok]) != 0  # fmt: skip
    assert "give e.g. 3h" in capsys.readouterr().err


def test_durations_and_starts() -> None:
    assert parse_duration("3h") == timedelta(hours=3)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("45") == timedelta(minutes=45)
    now = datetime(2026, 8, 3, 10, 0, tzinfo=JST)
    assert parse_start("14:00", now) == datetime(2026, 8, 3, 14, 0, tzinfo=JST)
    with pytest.raises(ValueError, match="zone"):
        parse_start("2026-08-03T14:00", now)
    with pytest.raises(ValueError, match="time of day"):
        parse_start("25:00", now)


def test_metrics_are_served_to_an_operator_in_prometheus_text(
    app: FastAPI, backend: object, tokens: dict[Role, str]  # noqa: F811
) -> None:
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        headers = {"Authorization": f"Bearer {tokens[Role.VIEWER]}"}
        assert client.get("/metrics", headers=headers).status_code == 404  # reports none
        backend.metrics_text = lambda: "# TYPE erab_up gauge\nerab_up 1\n"  # type: ignore[attr-defined]
        answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200 and answer.text == "# TYPE erab_up gauge\nerab_up 1\n"
    assert answer.headers["content-type"].startswith("text/plain")


def test_event_show_prints_delivery_and_the_per_site_table() -> None:
    from erab.cli.ra_event import detail_lines

    event = {"commands": {"sent": 0, "acknowledged": 2}, "sites": [
        {"site": "home-1", "baseline_kw": 0.3, "now_kw": -1.7, "delivered_kw": 2.0,
         "commanded_kw": 2.058, "ratio": 0.972},
        {"site": "home-3", "baseline_kw": None, "now_kw": 0.1, "delivered_kw": None,
         "commanded_kw": 0.5, "ratio": None}],
        "delivery": {"delivered_kw": 2.0, "reference_kw": 1.0, "ratio": 0.78, "checks": 3}}
    lines = detail_lines(event)
    assert lines[0] == "commands: sent 0, acknowledged 2"
    assert lines[1] == "delivered 2.00 kW (78 % of the target) at the last of 3 checks"
    assert lines[3].split() == ["home-1", "0.30", "-1.70", "2.00", "2.06", "0.97"]
    assert lines[4].split() == ["home-3", "-", "0.10", "-", "0.50", "-"]
    assert detail_lines({"sites": []}) == ["per site: no pre-event readings yet"]
