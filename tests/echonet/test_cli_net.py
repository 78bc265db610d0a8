"""`erab el serve | discover | get | set | watch` against real nodes on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from erab.cli import main
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ, ESV, Frame, Property
from erab.echonet.node import DeviceObject, LocalNode
from erab.echonet.transport import random_loopback_address

from .misbehaving import MisbehavingDevice

AIRCON = EOJ(0x01, 0x30, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)
METER = EOJ(0x02, 0x88, 0x01)


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
            "--duration",
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
        code = await erab("el", "watch", "--json", "--duration", "1.5")
    finally:
        task.cancel()
    assert code == 0
    notes = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    ours = [n for n in notes if n["host"] == host and n["eoj"] == "0x013001"]
    assert ours, notes
    assert ours[0]["esv"] == "INF"
    assert ours[0]["properties"]["0xB0"]["value"] in ("dehumidification", "cooling")


# -- hardening (issue 9) ----------------------------------------------------------------


def aircon() -> DeviceObject:
    return DeviceObject(AIRCON, {0xB0: b"\x42", 0xB3: b"\x1a"})


async def test_get_from_a_device_that_answers_late_prints_its_values(capsys) -> None:
    # answers come 1.5 timeouts late: each is taken for its own request, never another's
    async with MisbehavingDevice([aircon()], delay_s=0.75) as device:
        code = await erab("el", "get", device.host, "0x013001", "0x80", "0xB3", "0xB0", "--json")
    props = json.loads(capsys.readouterr().out)["properties"]
    assert {epc: entry["value"] for epc, entry in props.items()} == {
        "0x80": "true",
        "0xB3": 26,
        "0xB0": "cooling",
    }
    assert code == 0


async def test_get_exits_1_unless_every_property_asked_has_a_value(capsys) -> None:
    def other_properties(frame: Frame) -> Frame:
        if frame.esv is not ESV.Get_Res or frame.props[0].epc == 0x9F:
            return frame
        return frame._replace(props=(Property(0x88, b"\x42"), Property(0x8A, b"\x00\x00\x77")))

    async with MisbehavingDevice([aircon()], rewrite=other_properties) as device:
        code = await erab("el", "get", device.host, "0x013001", "0xB0", "0xB3", "--json")
    props = json.loads(capsys.readouterr().out)["properties"]
    assert props == {"0xB0": None, "0xB3": None}
    assert code == 1


async def test_get_exits_0_when_a_device_adds_properties_not_asked_for(capsys) -> None:
    def extra_property(frame: Frame) -> Frame:
        if frame.esv is not ESV.Get_Res or frame.props[0].epc == 0x9F:
            return frame
        return frame._replace(props=(*frame.props, Property(0x88, b"\x42")))

    async with MisbehavingDevice([aircon()], rewrite=extra_property) as device:
        code = await erab("el", "get", device.host, "0x013001", "0xB0", "0xB3")
    out = capsys.readouterr().out
    assert "cooling" in out and "26 °C" in out and "0x88" not in out
    assert code == 0


async def test_discover_lists_a_node_with_a_silent_object_and_marks_it(capsys) -> None:
    async with MisbehavingDevice([aircon(), DeviceObject(BATTERY)], silent=[BATTERY]) as device:
        code = await erab("el", "discover", "--host", device.host, "--no-multicast")
        json_code = await erab(
            "el", "discover", "--host", device.host, "--no-multicast", "--json"
        )
    text, json_text = capsys.readouterr().out.split("\n[", 1)
    assert code == 0 and json_code == 0
    rows = {line.split()[2]: line for line in text.splitlines() if line.startswith(device.host)}
    assert "Home air conditioner" in rows["0x013001"] and "no answer" not in rows["0x013001"]
    assert "Storage battery (no answer)" in rows["0x027D01"]
    [node] = json.loads("[" + json_text)
    assert {o["eoj"]: o["status"] for o in node["objects"]} == {
        "0x013001": "ok",
        "0x027D01": "no answer",
    }


async def test_discover_json_exits_1_when_no_node_answered(capsys) -> None:
    silent = random_loopback_address()
    code = await erab("el", "discover", "--host", silent, "--no-multicast", "--json")
    assert json.loads(capsys.readouterr().out) == []
    assert code == 1


def meter() -> DeviceObject:
    # 140733 counts of 0.1 kWh (0xE1 = 0x01) with coefficient 1: 14,073.3 kWh
    values = {0xE0: (140733).to_bytes(4, "big"), 0xD3: b"\x00\x00\x00\x01", 0xE1: b"\x01"}
    return DeviceObject(METER, values)


@pytest.mark.parametrize("asked", [["0xE0"], ["0xE0", "0xD3", "0xE1"]])
async def test_get_of_cumulative_energy_shows_kwh_scaled_by_the_meter(asked, capsys) -> None:
    async with MisbehavingDevice([meter()]) as device:
        code = await erab("el", "get", device.host, "0x028801", *asked, "--json")
        text_code = await erab("el", "get", device.host, "0x028801", *asked)
    json_out, text_out = capsys.readouterr().out.split("\n", 1)
    entry = json.loads(json_out)["properties"]["0xE0"]
    assert entry["value"] == 140733
    assert entry["scaledValue"] == pytest.approx(14073.3) and entry["scaledUnit"] == "kWh"
    assert "= 14073.3 kWh" in text_out
    assert code == 0 and text_code == 0


async def test_watch_scales_a_meter_notification(capsys) -> None:
    watcher = random_loopback_address()
    argv = ["el", "watch", "--bind", watcher, "--json", "--duration", "4", "--timeout", "0.5"]
    async with MisbehavingDevice([meter()]) as device:
        watching = asyncio.create_task(asyncio.to_thread(main, argv))
        await asyncio.sleep(1.0)  # the watcher is listening
        count = (140734).to_bytes(4, "big")
        note = Frame(1, METER, EOJ(0x05, 0xFF, 0x01), ESV.INF, (Property(0xE0, count),))
        device.sock.sendto(note.encode(), (watcher, 3610))
        code = await watching
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x]
    ours = [x for x in lines if x["host"] == device.host]
    assert ours and ours[0]["properties"]["0xE0"]["scaledValue"] == pytest.approx(14073.4)
    assert code == 0


async def test_a_host_name_is_refused_at_once(capsys) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    code = await erab("el", "get", "not.an.ip", "0x013001", "0x80")
    assert loop.time() - started < 2.0
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("erab: error: host 'not.an.ip' is not an IPv4 or IPv6 address")
    assert code == 2


async def test_old_seconds_flag_still_works_and_warns(capsys) -> None:
    code = await asyncio.to_thread(
        main, ["el", "watch", "--bind", random_loopback_address(), "--seconds", "0.2"]
    )
    assert code == 0
    assert "--seconds is deprecated" in capsys.readouterr().err


def _erab_process(*argv: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "erab", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def test_controllers_without_bind_run_side_by_side_and_all_hear_multicast(
    served, capsys
) -> None:
    # two `erab el watch` without --bind (the README's usage in two shells), and an
    # `erab el get` without --bind beside them: at most one can have 127.0.0.1:3610
    host, node = served
    watchers = [_erab_process("el", "watch", "-v", "--duration", "8") for _ in range(2)]
    addresses = set()
    try:
        for proc in watchers:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 20)
            assert line.startswith("watching on ")
            addresses.add(line.split()[2])
        code = await asyncio.to_thread(
            main, ["el", "get", host, "0x013001", "0xB3", "-v", "--timeout", "1"]
        )
        assert code == 0 and "26 °C" in capsys.readouterr().out
        for turn in range(10):  # an INF by multicast on lo at each change of mode
            node.object(AIRCON).update(0xB0, b"\x44" if turn % 2 == 0 else b"\x42")
            await asyncio.sleep(0.3)
    finally:
        outputs = []
        for proc in watchers:
            out, err = await asyncio.to_thread(proc.communicate, timeout=20)
            outputs.append((proc.returncode, out, err))
    for code, out, err in outputs:
        assert code == 0, err
        heard = [line for line in out.splitlines() if line.startswith(f"{host} 0x013001 INF")]
        assert heard, (out, err)
    assert len(addresses) == 2  # each on an address of its own
    said = "".join(err for _, _, err in outputs)
    assert "127.0.0.1 port 3610 is in use; using 127." in said
    assert "late answers 0, duplicates 0" in said


async def test_watch_reports_notifications_it_had_to_drop(capsys) -> None:
    watcher = random_loopback_address()
    argv = ["el", "watch", "--bind", watcher, "--json", "--duration", "3", "--queue", "5"]
    watching = asyncio.create_task(asyncio.to_thread(main, argv))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.bind((random_loopback_address(), 0))
    try:
        await asyncio.sleep(1.2)  # the watcher is listening
        for i in range(300):  # one burst: far more than the watcher can print at once
            note = Frame(i, AIRCON, EOJ(0x05, 0xFF, 0x01), ESV.INF, (Property(0xB3, b"\x1a"),))
            sender.sendto(note.encode(), (watcher, 3610))
        host = sender.getsockname()[0]
        code = await watching
    finally:
        sender.close()
    out, err = capsys.readouterr()
    printed = [line for line in out.splitlines() if json.loads(line)["host"] == host]
    dropped = sum(
        int(line.split()[2]) for line in err.splitlines() if "notification(s) dropped" in line
    )
    assert code == 0
    assert dropped > 0 and len(printed) < 300
    assert len(printed) + dropped >= 300  # every one was printed or reported dropped
