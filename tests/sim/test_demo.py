"""``erab demo`` end to end, as a user runs it: a 20-home town at 600x, the coordinator's
event, the report; then nothing of it is left running or bound."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from erab.echonet.transport import check_bindable, random_loopback_address
from erab.sim.demo import DemoSettings, delivered_by_commanded, summarise

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("demo") / "home"
    base, bind_base = random_loopback_address(), random_loopback_address()
    proc = subprocess.run(
        [sys.executable, "-m", "erab", "demo", "--homes", "20", "--speed", "600",
         "--no-browser", "--json", "--listen", "127.0.0.1:0", "--base", base,
         "--bind-base", bind_base, "--home", str(home)],
        capture_output=True, text=True, timeout=280,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {"proc": proc, "lines": lines, "home": home, "base": base, "bind_base": bind_base}


def _line(run: dict[str, Any], key: str, value: str | None = None) -> dict[str, Any]:
    for line in run["lines"]:
        if key in line and (value is None or line[key] == value):
            return line  # type: ignore[no-any-return]
    raise AssertionError(f"no {key} {value or ''} line in: {run['proc'].stdout[-2000:]}"
                         f"\nstderr: {run['proc'].stderr[-2000:]}")  # fmt: skip


def test_the_demo_exits_cleanly_and_writes_its_report(demo_run: dict[str, Any]) -> None:
    proc = demo_run["proc"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = _line(demo_run, "result")["result"]
    report = Path(result["report"])
    assert report.is_file() and report.is_relative_to(demo_run["home"])
    assert json.loads(report.read_text())["event_id"] == result["event_id"]
    assert result["product"] == "tertiary-1" and result["target_kw"] < 0
    assert result["samples"] > 10 and len(result["slots"]) >= 6  # 3 hours of 30-min slots
    commands = [c for c in result["commands"] if c["type"] != "cancel"]
    assert commands and any(c["stage"] == "acknowledged" for c in commands)
    engine = result["settlement_engine"]  # issue 12's settlement from route A meter data
    assert engine is not None and "error" not in engine, engine
    # the sites the RA dispatched (one gateway each) are settled, of the 20 homes and 3 stores
    assert engine["summary"]["customers"] == len({c["gateway"] for c in commands}) <= 23
    assert engine["summary"]["committed_kwh"] > 0
    assert {Path(f).name for f in engine["files"]} >= {"settlement.csv", "fleet.png"}
    assert all(Path(f).is_file() for f in engine["files"])
    console = _line(demo_run, "console")
    assert console["login"] == "demo" and len(console["password"]) >= 12


def test_the_event_is_delivered_within_the_products_tolerance(
    demo_run: dict[str, Any],
) -> None:
    result = _line(demo_run, "result")["result"]
    assert result["delivered_kw"] is not None
    assert abs(result["ratio"] - 1.0) <= result["tolerance"], (
        f"delivered {result['delivered_kw']} kW of {-result['target_kw']} kW; per slot "
        f"{[s['delivered_kw'] for s in result['slots']]}; commands {result['commands']}")


def test_nothing_is_left_running_or_bound(demo_run: dict[str, Any]) -> None:
    assert demo_run["proc"].returncode == 0
    console_port = int(_line(demo_run, "console")["console"].rsplit(":", 1)[1])
    broker = _line(demo_run, "phase", "broker")["detail"]
    fields = dict(part.strip().split(" ") for part in broker.split(","))
    for port in (console_port, int(fields["nats"]), int(fields["mqtt"]),
                 int(fields["monitor"])):  # fmt: skip
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))  # raises if anything still listens there
    with pytest.raises(ProcessLookupError):
        os.kill(int(fields["pid"]), 0)  # the broker's nats-server is gone
    # the town's sites and the gateways' LAN addresses are free again (UDP 3610)
    check_bindable(demo_run["base"], 3610)
    check_bindable(demo_run["bind_base"], 3610)


def test_the_simulated_day_starts_at_the_next_given_time_of_day() -> None:
    from datetime import datetime

    from erab.clock import JST
    from erab.sim.demo import day_start

    evening = datetime(2026, 12, 3, 19, 5, 30, tzinfo=JST)
    assert day_start("23:30", evening) == datetime(2026, 12, 3, 23, 30, tzinfo=JST)
    assert day_start("08:00", evening) == datetime(2026, 12, 4, 8, 0, tzinfo=JST)
    assert day_start("now", evening) == evening
    for bad in ("25:00", "noon", "7"):
        with pytest.raises(ValueError, match="--start"):
            day_start(bad, evening)


def test_bad_flags_are_refused_with_the_reason() -> None:
    for args, words in ((["--speed", "0"], "--speed must be"),
                        (["--homes", "0", "--stores", "0"], "at least one site"),
                        (["--listen", "nowhere"], "--listen 'nowhere'")):  # fmt: skip
        proc = subprocess.run([sys.executable, "-m", "erab", "demo", "--no-browser", *args],
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_the_summary_measures_the_commanded_resources_against_their_power_before() -> None:
    from datetime import datetime, timedelta

    import numpy as np

    from erab.aggregator.events import EventBook, EventRequest
    from erab.clock import JST, SimulatedClock
    from erab.sim.demo import Sample

    clock = SimulatedClock(datetime(2026, 8, 3, 13, 0, tzinfo=JST), speed=0)
    start = datetime(2026, 8, 3, 14, 0, tzinfo=JST)
    event = EventBook(clock).create(EventRequest(-10.0, start, timedelta(hours=1)))
    t0 = start.timestamp()
    samples = [Sample(t0 + 60 * k, 50.0, 9.5 if k < 30 else 10.5) for k in range(60)]
    result = summarise(event, samples)
    assert result["delivered_kw"] == pytest.approx(10.0)
    assert [s["delivered_kw"] for s in result["slots"]] == [9.5, 10.5]
    assert result["within_tolerance"] and result["ratio"] == pytest.approx(1.0)
    # a ramp inside the product's response time is shown per slot, not held against the event
    ramp = [Sample(t0 + 60 * k, 50.0, 2.0 if k < 15 else 10.0) for k in range(60)]
    assert not summarise(event, ramp)["within_tolerance"]  # 8.0 kW of 10 over the window
    held = summarise(event, ramp, response_s=900.0)
    assert held["within_tolerance"] and held["delivered_kw"] == pytest.approx(10.0)
    assert [s["delivered_kw"] for s in held["slots"]] == [6.0, 10.0]

    class Command:
        def __init__(self, device: str) -> None:
            self.body = {"device_id": device}

    ra = SimpleNamespace(
        resources=[SimpleNamespace(resource_id=f"r{i}") for i in range(3)],
        state=SimpleNamespace(power_kw=np.array([-2.0, 1.0, np.nan])),
        plans={"ev": SimpleNamespace(commands=[Command("r0"), Command("r2")])},
    )

    # r0 went from 0 to -2 kW (discharging): 2 kW down; r2 not heard counts 0; r1 not commanded
    assert delivered_by_commanded(ra, "ev", np.array([0.0, 0.0, 0.0]), down=True) == 2.0
    assert delivered_by_commanded(ra, "other", np.zeros(3), down=True) == 0.0


def test_demo_settings_scale_the_gateways_poll_with_the_clock() -> None:
    assert DemoSettings(speed=120).poll_interval_s == 2.5
    assert DemoSettings(speed=600).poll_interval_s == 1.0
    assert DemoSettings(speed=1).poll_interval_s == 10.0


def test_ctrl_c_in_the_middle_of_the_day_stops_everything(tmp_path: Path) -> None:
    import signal
    import time

    base, bind_base = random_loopback_address(), random_loopback_address()
    proc = subprocess.Popen(
        [sys.executable, "-m", "erab", "demo", "--homes", "5", "--stores", "0", "--speed",
         "120", "--no-browser", "--json", "--listen", "127.0.0.1:0", "--base", base,
         "--bind-base", bind_base, "--home", str(tmp_path / "home")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    for raw in proc.stdout:
        if raw.startswith("{"):
            lines.append(json.loads(raw))
            if lines[-1].get("phase") == "event":  # the coordinator's event is out
                break
        assert time.monotonic() < deadline, "no event within 120 s"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "demo stopped" in err, err[-2000:]
    assert "Traceback" not in err
    run = {"lines": lines, "proc": proc}
    console_port = int(_line(run, "phase", "console")["detail"].rsplit(":", 1)[1])
    fields = dict(part.strip().split(" ")
                  for part in _line(run, "phase", "broker")["detail"].split(","))  # fmt: skip
    for port in (console_port, int(fields["nats"]), int(fields["mqtt"])):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
    with pytest.raises(ProcessLookupError):
        os.kill(int(fields["pid"]), 0)
    check_bindable(base, 3610)
    check_bindable(bind_base, 3610)
