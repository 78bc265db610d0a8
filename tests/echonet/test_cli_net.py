"""`erab el serve | discover | get | set | watch` against real nodes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from erab.cli import main
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.echonet.node import DeviceObject, LocalNode
from erab.echonet.transport import random_loopback_address

AIRCON = EOJ(0x01, 0x30, 0x01)


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, LocalNode]]:
    node = LocalNode([DeviceObject(AIRCON, {0xB0: b"\x42", 0xB3: b"\x1a"})])
    host = random_loopback_address()
    await node.start(host)
    yield host, node
    await node.close()


async def erab(*argv: str) -> int:
    """Run the CLI in a thread (it runs its own event loop), with a fresh --bind address."""
    args = [*argv[:2], "--bind", random_loopback_address(), "--timeout", "0.5", *argv[2:]]
    return await asyncio.to_thread(main, args)


async def test_serve_runs_a_node_that_answers_and_is_discoverable() -> None:
    host = random_loopback_address()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "erab",
            "el",
            "serve",
            "--bind",
            host,
            "--class",
            "0x0130",
            "--class",
            "storageBattery",
            "--json",
            "--seconds",
            "10",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
        described = json.loads(line)
        assert described["address"] == host
        assert [o["eoj"] for o in described["objects"]] == ["0x013001", "0x027D01"]
        async with Controller(random_loopback_address(), timeout_s=1.0) as ctl:
            [node] = await ctl.discover(hosts=[host], multicast=False)
            assert node.key == described["identification"]
            assert {str(e) for e in node.objects} == {"0x013001", "0x027D01"}
            values = await ctl.get(host, AIRCON, ["operationMode", "targetTemperature"])
            assert values == {0xB0: "cooling", 0xB3: 26}  # plausible defaults
    finally:
        proc.terminate()
        proc.wait(10)


async def test_serve_rejects_an_unknown_class(capsys) -> None:
    code = await asyncio.to_thread(
        main, ["el", "serve", "--bind", random_loopback_address(), "--class", "warpCore"]
    )
    assert code == 2
    assert "--class 'warpCore': no such class" in capsys.readouterr().err


async def test_a_bind_address_in_use_is_one_line_advising_another_bind(served, capsys) -> None:
    host, _ = served  # a node holds host:3610
    code = await asyncio.to_thread(
        main, ["el", "get", host, "0x013001", "0x80", "--bind", host, "--timeout", "0.5"]
    )
    assert code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"erab: error: cannot bind UDP {host} port 3610: Address already in use (another "
        "socket is bound to that address and port); pick another --bind address"
    )


async def test_discover_json_lists_objects_with_class_names(served, capsys) -> None:
    host, node = served
    code = await erab("el", "discover", "--host", host, "--no-multicast", "--json")
    assert code == 0
    [entry] = json.loads(capsys.readouterr().out)
    assert entry["host"] == host
    assert entry["identification"] == node.identification.hex()
    assert entry["manufacturer_code"] == "0xFFFFFF"
    [obj] = entry["objects"]
    assert obj["eoj"] == "0x013001" and obj["class"] == "Home air conditioner"
    assert "0xB0" in obj["set"]


async def test_discover_table_shows_host_maker_and_class(served, capsys) -> None:
    host, _ = served
    assert await erab("el", "discover", "--host", host, "--no-multicast") == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith(host))
    assert "0xFFFFFF" in row and "0x013001" in row and "Home air conditioner" in row


async def test_get_prints_typed_values(served, capsys) -> None:
    host, _ = served
    assert await erab("el", "get", host, "0x013001", "operationMode", "0xB3", "--json") == 0
    props = json.loads(capsys.readouterr().out)["properties"]
    assert props["0xB0"]["value"] == "cooling"
    assert props["0xB3"]["value"] == 26 and props["0xB3"]["text"] == "26 °C"


async def test_get_of_unavailable_property_exits_1_and_says_so(served, capsys) -> None:
    host, _ = served
    assert await erab("el", "get", host, "0x013001", "0xC0") == 1
    assert "(not available)" in capsys.readouterr().out


async def test_set_changes_device_and_verifies(served, capsys) -> None:
    host, node = served
    code = await erab("el", "set", host, "0x013001", "0xB0=heating", "targetTemperature=22")
    assert code == 0
    assert node.object(AIRCON).read(0xB0) == b"\x43"
    assert node.object(AIRCON).read(0xB3) == b"\x16"
    assert "0xB0: set and verified" in capsys.readouterr().out


async def test_set_with_invalid_value_names_the_allowed_states(served, capsys) -> None:
    host, node = served
    assert await erab("el", "set", host, "0x013001", "0xB0=frying") == 2
    err = capsys.readouterr().err
    assert "operationMode" in err and "cooling" in err
    assert node.object(AIRCON).read(0xB0) == b"\x42"


async def test_set_refused_by_device_exits_1(served, capsys) -> None:
    host, _ = served
    assert await erab("el", "set", host, "0x013001", "0x82=0x00005100", "--json") == 1
    out = json.loads(capsys.readouterr().out)
    assert out["rejected"] == ["0x82"] and out["ok"] is False


async def test_set_without_equals_sign_explains_the_form(served, capsys) -> None:
    host, _ = served
    assert await erab("el", "set", host, "0x013001", "0xB0") == 2
    assert "write PROP=VALUE" in capsys.readouterr().err


async def test_get_from_silent_host_reports_no_answer(capsys) -> None:
    silent = random_loopback_address()
    assert await erab("el", "get", silent, "0x013001", "0x80") == 2
    assert f"no answer from {silent}" in capsys.readouterr().err


async def test_bad_eoj_is_reported(served, capsys) -> None:
    host, _ = served
    assert await erab("el", "get", host, "0x0130", "0x80") == 2
    assert "EOJ '0x0130'" in capsys.readouterr().err


async def test_watch_prints_announcements(served, capsys) -> None:
    host, node = served

    async def keep_changing() -> None:
        # change the mode every 0.2 s, so the watcher sees one whenever it is ready
        modes = [b"\x44", b"\x42"]
        for turn in range(100):
            await asyncio.sleep(0.2)
            node.object(AIRCON).update(0xB0, modes[turn % 2])

    task = asyncio.create_task(keep_changing())
    try:
        code = await erab("el", "watch", "--json", "--seconds", "1.5")
    finally:
        task.cancel()
    assert code == 0
    notes = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    ours = [n for n in notes if n["host"] == host and n["eoj"] == "0x013001"]
    assert ours, notes
    assert ours[0]["esv"] == "INF"
    assert ours[0]["properties"]["0xB0"]["value"] in ("dehumidification", "cooling")
