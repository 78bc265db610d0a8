"""``erab emulate``: starts the town, says where each site is, serves, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erab.cli import main
from erab.echonet.frame import EOJ, ESV, Frame, Property, decode_frame
from erab.echonet.transport import random_loopback_address


def _emulate(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erab",
            "emulate",
            "--json",
            "--history-days",
            "1",
            "--start",
            "2026-08-01T12:00",
            "--base",
            random_loopback_address(),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _get(address: str, deoj: EOJ, epc: int) -> Frame:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((random_loopback_address(0), 0))
    sock.settimeout(2.0)
    try:
        sock.sendto(
            Frame(7, EOJ(0x05, 0xFF, 1), deoj, ESV.Get, (Property(epc, b""),)).encode(),
            (address, 3610),
        )
        frame = decode_frame(sock.recv(1500))
        assert isinstance(frame, Frame)
        return frame
    finally:
        sock.close()


def test_emulate_lists_sites_serves_them_and_stops_after_its_duration() -> None:
    proc = _emulate(
        "--homes", "2", "--stores", "1", "--seed", "3", "--duration", "2", "--speed", "60"
    )
    assert proc.stdout is not None
    sites = json.loads(proc.stdout.readline())["sites"]
    assert [s["kind"] for s in sites] == ["home", "home", "store"]
    assert len({s["address"] for s in sites}) == 3
    assert all("0x028801" in s["objects"] for s in sites)
    reply = _get(sites[2]["address"], EOJ(0x02, 0x88, 0x01), 0xE7)
    assert reply.esv is ESV.Get_Res and len(reply.props[0].edt) == 4
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["sites"] == 3 and summary["import_kwh"] > 0


def test_ctrl_c_shuts_the_town_down_cleanly() -> None:
    proc = _emulate("--homes", "1", "--stores", "0")
    assert proc.stdout is not None
    sites = json.loads(proc.stdout.readline())["sites"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "summary" in out
    time.sleep(0.1)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind((sites[0]["address"], 3610))  # the port was released
    finally:
        probe.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--homes", "-1"], "--homes must be >= 0"),
        (["--speed", "0"], "--speed must be > 0"),
        (["--homes", "0", "--stores", "0"], "nothing to emulate"),
        (["--start", "yesterday"], "cannot read start time"),
        (["--history-days", "120"], "--history-days must be 0-99"),
        (["--base", "127.1.0.300"], "base address '127.1.0.300' is not an IPv4 address"),
    ],
)
def test_bad_options_are_one_line_errors(args: list[str], message: str, capsys) -> None:
    assert main(["emulate", *args, "--duration", "0"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_bad_scenario_file_names_the_problem(tmp_path: Path, capsys) -> None:
    path = tmp_path / "town.json"
    path.write_text('{"homes": {"count": 2, "batteries": 1}}')
    assert main(["emulate", "--scenario", str(path), "--duration", "0"]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) batteries" in err and str(path) in err


def test_the_emulated_meters_answer_45_days_of_history_from_the_start() -> None:
    from datetime import datetime

    from erab.cli.emulate import build_emulation
    from erab.clock import JST
    from erab.devices import Scenario
    from erab.meter.smartmeter import SmartMeter

    start = datetime(2026, 8, 20, 14, 10, tzinfo=JST)
    emulation = build_emulation(Scenario.generate(2, 1, seed=4), start, history_days=45)
    meter = next(o for o in emulation.server.nodes[0].objects if isinstance(o, SmartMeter))
    oldest = meter.history(45)
    assert oldest[0].point == datetime(2026, 7, 6, tzinfo=JST)
    assert all(r.import_kwh is not None for r in oldest)
    assert meter.history(46)[0].import_kwh is None
    today = meter.history(0)
    assert today[28].import_kwh is not None and today[29].import_kwh is None  # 14:00 / 14:30
    # the history is the town's own physics: a store uses more than a home
    used = [
        SmartMeter(emulation.meters, i).import_kwh
        - SmartMeter(emulation.meters, i).history(45)[0].import_kwh
        for i in range(3)
    ]
    assert used[2] > max(used[0], used[1])
