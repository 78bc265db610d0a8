"""Interop with independent 2.0b peers, each in its own process: erab's VEN against a plain
openleadr VTN, and a plain openleadr VEN against ``erab ac serve``. An event made on one side
is carried out on the other, and reports come back."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from erab.aggregator import EventRequest
from erab.cli import main as erab
from erab.openadr import AcStore, ErabVen, SignalMapping, VenConfig, short_fingerprint
from tests.openadr.conftest import Pki, free_port
from tests.openadr.peers import OPENLEADR_VEN, OPENLEADR_VTN, Peer

pytestmark = pytest.mark.timeout(120)


class FleetBackend:
    """The RA side as the VEN sees it: 120 kW now, 40 kW down and 5 kW up available."""

    def __init__(self) -> None:
        self.created: list[EventRequest] = []
        self.cancelled: list[str] = []

    def fleet_kw(self) -> float:
        return 120.0

    def flexibility_kw(self, direction: str, start: datetime | None,
                       duration: timedelta) -> float:  # fmt: skip
        return 40.0 if direction == "down" else 5.0

    async def create_event(self, request: EventRequest) -> str:
        self.created.append(request)
        return f"ra-{len(self.created)}"

    async def cancel_event(self, event_id: str) -> None:
        self.cancelled.append(event_id)


async def until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_erab_ven_carries_out_a_plain_openleadr_vtns_event_and_reports(
    pki: Pki, tmp_path: Path
) -> None:
    port = free_port()
    cert, key = pki.ven("erab-ra")
    vtn = Peer("openleadr_vtn", OPENLEADR_VTN,
               [str(port), str(pki.vtn_cert), str(pki.vtn_key), str(pki.ca_bundle),
                short_fingerprint(pki.fingerprint("erab-ra"))], tmp_path)  # fmt: skip
    backend = FleetBackend()
    ven = ErabVen(VenConfig(
        vtn_url=f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b", ven_name="erab-ra",
        cert=str(cert), key=str(key), ca_file=str(pki.ca_bundle),
        ssl_context=pki.client_context("erab-ra"), retry_s=0.5,
        mapping=SignalMapping.parse_levels("1=-10,2=-20")), backend)  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.Event()
    try:
        await asyncio.to_thread(vtn.wait_for, what="ready")
        task = asyncio.create_task(ven.run(stop, ready=ready))
        await asyncio.wait_for(ready.wait(), 30)
        assert ven.client.ven_id == "ven-1"
        # the event: LOAD_DISPATCH -30 kW becomes an RA event, and the VEN opts in
        await asyncio.to_thread(vtn.wait_for, what="opt", event_id="evt-1", n=1)
        assert vtn.wait_for(what="opt", n=1)["opt"] == "optIn"
        first = backend.created[0]
        assert (first.target_kw, first.external_id, first.source) == (-30.0, "evt-1", "openadr")
        # the modification: the old RA event is cancelled, -45 kW is more than the fleet's
        # 40 kW down: opt out, saying why
        second = await asyncio.to_thread(vtn.wait_for, what="opt", n=2)
        assert second["opt"] == "optOut" and backend.cancelled == ["ra-1"]
        why = await asyncio.to_thread(vtn.wait_until, lambda line: "kW down" in line.get(
            "description", ""), 10, "an opt-out's description")
        assert "the fleet can give 40.0 kW down" in why["description"]
        assert "45.0 kW" in why["description"] and why["event_id"] == "evt-1"
        # the cancellation is acknowledged; then a SIMPLE level 3 this VEN has no kW for
        assert (await asyncio.to_thread(vtn.wait_for, what="opt", n=3))["opt"] == "optIn"
        assert (await asyncio.to_thread(vtn.wait_for, what="opt", n=4))["opt"] == "optOut"
        assert len(backend.created) == 1
        # reports at the VTN's interval: the fleet's kW and its availability up and down
        seen = {}
        for r_id in ("fleet_kw", "up_kw", "down_kw"):
            seen[r_id] = (await asyncio.to_thread(vtn.wait_for, what="report", r_id=r_id))
        assert seen["fleet_kw"]["values"][0] == 120.0
        assert (seen["up_kw"]["values"][0], seen["down_kw"]["values"][0]) == (5.0, 40.0)
    finally:
        stop.set()
        if "task" in locals():
            await task
        vtn.stop()


@pytest.fixture
def ac_serve(pki: Pki, tmp_path: Path) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    port = free_port()
    log = (tmp_path / "ac-serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "erab", "ac", "serve", "--home", str(pki.home), "--port",
         str(port), "--poll-interval", "1", "--report-interval", "1", "--json",
         "--openadr3-port", "0"],
        stdout=subprocess.PIPE, stderr=log, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:  # until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "ac-serve.log").read_text()
                assert time.monotonic() < deadline, "erab ac serve did not start listening"
                time.sleep(0.2)
        yield port, process
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def wait_store(store: AcStore, check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_a_plain_openleadr_ven_gets_erab_ac_events_and_its_reports_come_back(
    pki: Pki, tmp_path: Path, ac_serve: tuple[int, subprocess.Popen[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    port, _ = ac_serve
    home = str(pki.home)
    cert, key = pki.ven("plain-ven")
    assert erab(["ac", "ven", "add", "plain-1", "--cert", str(cert), "--home", home]) == 0
    store = AcStore(pki.home / "ac" / "ac.sqlite")
    ven = Peer("openleadr_ven", OPENLEADR_VEN,
               [f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b", str(cert), str(key),
                str(pki.ca_bundle), "plain"], tmp_path)  # fmt: skip
    try:
        registered = ven.wait_for(30, what="registered")
        assert registered["ven_id"] == "plain-1" and registered["registration_id"]
        capsys.readouterr()
        assert erab(["ac", "event", "create", "--ven", "plain-1", "--kw", "-20", "--start",
                     "now", "--duration", "30m", "--json", "--home", home]) == 0
        event_id = json.loads(capsys.readouterr().out)[0]["event_id"]
        got = ven.wait_for(20, what="event", event_id=event_id)
        assert (got["signal"], got["value"], got["modification"]) == ("LOAD_DISPATCH", -20.0, 0)
        wait_store(store, lambda: store.event(event_id).opt == "optIn", 20, "the opt-in")
        wait_store(store, lambda: len(store.reports("plain-1", "fleet_kw")) >= 2, 20, "reports")
        assert {v for _, _, v in store.reports("plain-1", "fleet_kw")} == {42.0}
        # cancel from the command line: the VEN hears it at its next poll, and confirms
        assert erab(["ac", "event", "cancel", event_id, "--home", home]) == 0
        cancelled = ven.wait_for(20, what="event", event_id=event_id, status="cancelled")
        assert cancelled["modification"] == 1
        wait_store(store, lambda: store.event(event_id).state == "cancelled", 20, "confirmation")
        capsys.readouterr()
        assert erab(["ac", "event", "show", event_id, "--json", "--home", home]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["opt"] == "optIn" and shown["distributed_at"] and shown["reports"]
    finally:
        ven.stop()
        store.close()
