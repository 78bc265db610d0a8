"""``erab emulate``: starts the town, says where each site is, serves, stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
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


def _bound_udp(address: str, port: int = 3610) -> bool:
    """Whether a UDP socket is bound to exactly ``address:port`` (from /proc/net/udp; a
    probe bind would also trip over other programs' wildcard 0.0.0.0:3610 sockets)."""
    want = f"{socket.inet_aton(address)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/udp") as table:
        return any(line.split()[1] == want for line in table.readlines()[1:])


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
    # the run's energy: 2 s at 60x is 2 simulated minutes of three sites, well under 1 kWh;
    # the meters' registers (thousands of kWh from before the start) are named apart
    assert summary["simulated_s"] == pytest.approx(120.0, abs=30.0)
    assert summary["import_kwh"] < 1.0
    assert summary["register_import_kwh"] > summary["import_kwh"] + 1.0


def test_ctrl_c_shuts_the_town_down_cleanly() -> None:
    proc = _emulate("--homes", "1", "--stores", "0")
    assert proc.stdout is not None
    sites = json.loads(proc.stdout.readline())["sites"]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "summary" in out
    time.sleep(0.1)
    assert not _bound_udp(sites[0]["address"])  # the port was released


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--homes", "-1"], "--homes must be >= 0"),
        (["--speed", "0"], "--speed must be > 0"),
        (["--homes", "0", "--stores", "0"], "nothing to emulate"),
        (["--start", "yesterday"], "cannot read start time"),
        (["--history-days", "120"], "--history-days must be 0-99"),
        (["--base", "127.1.0.300"], "base address '127.1.0.300' is not an IPv4 address"),
        (["--iface", "nosuch0"], "no network interface named 'nosuch0'"),
        (["--announce-every", "-5"], "--announce-every must be >= 0 seconds"),
        (["--announce-every", "inf"], "--announce-every must be >= 0 seconds"),
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


def test_off_a_terminal_progress_is_one_plain_line_per_stage_and_no_bar(
    tmp_path: Path,
) -> None:
    town = tmp_path / "town.json"
    town.write_text('{"sites": [{"name": "demo", "battery_wh": 9800}]}')
    base = random_loopback_address()
    done = subprocess.run(
        [
            *(sys.executable, "-m", "erab", "emulate", "--scenario", str(town)),
            *("--duration", "0", "--history-days", "1", "--start", "2026-08-01T12:00"),
            *("--base", base),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    assert done.returncode == 0, done.stderr
    # 1 day back from 12:00: yesterday's 48 slots and today's 24
    assert done.stderr.splitlines() == [
        "meter history (30-min slots): 72/72",
        "starting nodes: 1/1",
    ]
    lines = done.stdout.splitlines()
    assert "\x1b" not in done.stdout  # no terminal control codes in a pipe
    assert any(f"{base}:3610" in line and "demo" in line for line in lines)
    # what to try next names the site's meter and its battery, and the battery's floor
    assert f"try: erab el get {base} 0x028801 0xE7 0xE0" in done.stdout
    assert f"erab el set {base} 0x027D01 0xDA=discharging" in done.stdout
    assert "10 % SOC reserve" in done.stdout


def test_an_address_in_use_is_a_one_line_error_naming_the_site_and_what_to_do(capsys) -> None:
    base = random_loopback_address()
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # beside any wildcard 0.0.0.0:3610 listener of other tests, as erab's nodes bind
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind((base, 3610))
    try:
        code = main(
            [
                *("emulate", "--homes", "1", "--stores", "0", "--history-days", "0"),
                *("--base", base, "--duration", "0"),
            ]
        )
    finally:
        taken.close()
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert [line for line in err.splitlines() if "error" in line] == [err.splitlines()[-1]]
    assert f"cannot serve site home-1 on {base}:3610: Address already in use" in err
    assert "--base" in err and "--bind" not in err


def test_an_address_in_use_is_refused_before_the_history_is_computed(capsys) -> None:
    base = random_loopback_address()
    second = socket.inet_ntoa(
        (int.from_bytes(socket.inet_aton(base), "big") + 1).to_bytes(4, "big")
    )
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    taken.bind((second, 3610))  # the second site's address
    try:
        code = main(
            [
                *("emulate", "--homes", "2", "--stores", "0", "--history-days", "45"),
                *("--base", base, "--duration", "0"),
            ]
        )
    finally:
        taken.close()
    assert code == 2
    err = capsys.readouterr().err
    assert "meter history" not in err  # no history stage ran (it would print when done)
    [line] = err.strip().splitlines()
    assert line == (
        f"erab: error: cannot serve site home-2 on {second}:3610: Address already in use "
        "(is another erab emulate running there? give another --base, e.g. --base 127.2.0.1)"
    )


def test_on_a_terminal_progress_is_live_bars_and_no_plain_lines() -> None:
    import pty

    base = random_loopback_address()
    master, slave = pty.openpty()  # stderr on a real pseudo-terminal
    chunks: list[bytes] = []

    def drain() -> None:  # read while it runs, so the terminal never fills up
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "erab", "emulate", "--homes", "1", "--stores", "0"),
                *("--duration", "0", "--history-days", "1", "--start", "2026-08-01T12:00"),
                *("--base", base),
            ],
            stdout=subprocess.PIPE,
            stderr=slave,
            text=True,
            env=dict(os.environ, PYTHONWARNINGS="ignore", TERM="xterm-256color", COLUMNS="100"),
        )
        os.close(slave)
        out, _ = proc.communicate(timeout=60)
        reader.join(timeout=5)
    finally:
        os.close(master)
    assert proc.returncode == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "meter history (30-min slots)" in screen and "starting nodes" in screen
    assert "72/72" in screen and "1/1" in screen
    assert "meter history (30-min slots): 72/72" not in screen  # no plain line as well
    assert "serving for 0 s" in out


async def test_ctrl_c_while_the_history_is_computed_stops_before_anything_is_bound(
    capsys,
) -> None:
    import asyncio

    from erab.cli import build_parser
    from erab.cli.emulate import _scenario, _serve_until_stopped
    from erab.clock import parse_start

    base = random_loopback_address()
    args = build_parser().parse_args(
        ["emulate", "--homes", "2", "--stores", "0", "--base", base, "--history-days", "5"]
    )
    stop = asyncio.Event()
    stop.set()  # as the SIGINT handler does
    code = await _serve_until_stopped(args, _scenario(args), parse_start("2026-08-01T12:00"), stop)
    assert code == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "stopped while starting"
    assert captured.out == ""  # no site table: nothing was served
    assert not _bound_udp(base)  # nothing holds the first site's address


def _emulate_plain(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "erab", "emulate", "--history-days", "0"),
            *("--start", "2026-08-01T12:00", "--base", random_loopback_address(), *args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONWARNINGS="ignore", COLUMNS="200"),
    )


def test_a_big_town_lists_its_first_sites_and_totals_not_a_row_per_site() -> None:
    done = _emulate_plain("--homes", "58", "--stores", "2", "--duration", "0")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert len(out.splitlines()) < 40  # a screenful, not 60 rows
    assert "│ home-8 " in out and "│ home-9 " not in out
    assert "… 52 more sites" in out and "--json lists all" in out
    assert "total: 60 sites: 58 homes, 2 stores" in out
    assert "60 0x0288 lvSmartElectricEnergyMeter" in out
    # a town of a screenful or less is listed in full
    small = _emulate_plain("--homes", "20", "--stores", "1", "--duration", "0")
    assert small.returncode == 0, small.stderr
    assert "│ store-1 " in small.stdout and "more sites" not in small.stdout


def test_the_json_start_line_lists_every_site_of_a_big_town() -> None:
    proc = _emulate("--homes", "60", "--stores", "0", "--duration", "0")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert len(json.loads(out.splitlines()[0])["sites"]) == 60


def test_the_old_seconds_flag_still_works_warns_and_is_hidden(capsys) -> None:
    done = _emulate_plain("--homes", "1", "--stores", "0", "--seconds", "0")
    assert done.returncode == 0, done.stderr
    assert "serving for 0 s" in done.stdout
    assert "erab: warning: --seconds is deprecated and will be removed; use --duration" in (
        done.stderr
    )
    with pytest.raises(SystemExit):
        main(["emulate", "--help"])
    text = capsys.readouterr().out
    assert "--duration" in text and "--announce-every" in text and "--seconds" not in text
