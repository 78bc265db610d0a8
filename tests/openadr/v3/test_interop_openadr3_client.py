"""Interop with an independent implementation: openadr3-client 2.4.2 (OpenADR 3.0.1), run in
its own Python 3.12 process against erab's VTN over HTTP on loopback.  As business logic it
creates a program and an event; as a VEN it reads the events that target it and posts a report.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from erab.openadr.v3 import schema
from erab.openadr.v3.app import build_app
from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.models import Kind, event_to_requests
from erab.openadr.v3.serve import RunningVtn, start_in_thread
from erab.openadr.v3.store import ObjectStore

PEER_SCRIPT = """
import json, sys
from datetime import UTC, datetime, timedelta

from openadr3_client._models.common.interval import Interval
from openadr3_client._models.common.interval_period import IntervalPeriod
from openadr3_client.bl.http_factory import BusinessLogicHttpClientFactory
from openadr3_client.oadr301.models.event.event import NewEvent
from openadr3_client.oadr301.models.event.event_payload import (
    EventPayload, EventPayloadDescriptor, EventPayloadType)
from openadr3_client.oadr301.models.program.program import NewProgram
from openadr3_client.oadr301.models.report.report import NewReport, ReportResource
from openadr3_client.oadr301.models.report.report_payload import ReportPayload, ReportPayloadType
from openadr3_client.oadr301.models.target import Target
from openadr3_client.ven.http_factory import VirtualEndNodeHttpClientFactory
from openadr3_client.version import OADRVersion

cfg, role = json.loads(sys.argv[1]), sys.argv[2]
url, token_url = cfg["url"], cfg["url"] + "/auth/token"
if role == "bl":
    bl = BusinessLogicHttpClientFactory.create_http_bl_client(
        url, cfg["client_id"], cfg["secret"], token_url=token_url, version=OADRVersion.OADR_301)
    program = bl.programs.create_program(
        NewProgram(program_name="peer-dr", program_long_name="peer"))
    events = []
    for ven_name, limit_kw in ((cfg["ven_name"], 120.0), ("someone-else", 80.0)):
        events.append(bl.events.create_event(NewEvent(
            programID=program.id, event_name=f"cap-{ven_name}",
            targets=(Target(type="VEN_NAME", values=(ven_name,)),),
            payload_descriptors=(EventPayloadDescriptor(
                payload_type=EventPayloadType.IMPORT_CAPACITY_LIMIT, units="KW"),),
            interval_period=IntervalPeriod(
                start=datetime(2026, 8, 3, 5, 0, tzinfo=UTC), duration=timedelta(hours=1)),
            intervals=(Interval(id=0, payloads=(EventPayload(
                type=EventPayloadType.IMPORT_CAPACITY_LIMIT, values=(limit_kw,)),)),),
        )))
    read_back = bl.programs.get_program_by_id(program.id)
    out = {"program_id": program.id, "program_name": read_back.program_name,
           "event_ids": [e.id for e in events],
           "created": events[0].created_date_time.isoformat()}
else:
    ven = VirtualEndNodeHttpClientFactory.create_http_ven_client(
        url, cfg["client_id"], cfg["secret"], token_url=token_url, version=OADRVersion.OADR_301)
    events = ven.events.get_events(target=None, pagination=None, program_id=None)
    event = events[0]
    report = ven.reports.create_report(NewReport(
        programID=event.program_id, eventID=event.id, client_name=cfg["ven_name"],
        report_name="fleet usage",
        resources=(ReportResource(resource_name="fleet", interval_period=event.interval_period,
            intervals=(Interval(id=0, payloads=(ReportPayload(
                type=ReportPayloadType.USAGE, values=(97.5,)),)),)),),
    ))
    out = {"seen": [e.id for e in events],
           "limit_kw": event.intervals[0].payloads[0].values[0],
           "report_id": report.id, "report_created": report.created_date_time.isoformat()}
print(json.dumps(out))
"""


class Peer:
    def __init__(self, python: Path, script: Path, url: str) -> None:
        self.python, self.script, self.url = python, script, url

    def run(self, role: str, client_id: str, secret: str, ven_name: str) -> dict[str, Any]:
        cfg = {"url": self.url, "client_id": client_id, "secret": secret, "ven_name": ven_name}
        # the peer's OAuth library refuses plain http unless told this is a test set-up
        env = dict(os.environ, OAUTHLIB_INSECURE_TRANSPORT="1")
        done = subprocess.run(
            [str(self.python), str(self.script), json.dumps(cfg), role],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert done.returncode == 0, f"openadr3-client as {role} failed:\n{done.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RunningVtn, ObjectStore, dict[str, str]]]:
    store = ObjectStore(tmp_path / "vtn.sqlite")
    registry = ClientRegistry(store)
    secrets = {
        "bl": registry.register("peer-bl", Role.BL),
        "ven": registry.register("peer-ven", Role.VEN, ven_name="ven-peer"),
    }
    running = start_in_thread(build_app(store, TokenIssuer(os.urandom(32))))
    yield running, store, secrets
    running.stop()
    store.close()


def test_openadr3_client_creates_reads_and_reports(
    peer_python: Path, tmp_path: Path, served: tuple[RunningVtn, ObjectStore, dict[str, str]]
) -> None:
    running, store, secrets = served
    script = tmp_path / "peer.py"
    script.write_text(PEER_SCRIPT)
    peer = Peer(peer_python, script, running.url)

    bl = peer.run("bl", "peer-bl", secrets["bl"], "ven-peer")
    assert bl["program_name"] == "peer-dr"
    programs = store.find(Kind.PROGRAM)
    assert [p.id for p in programs] == [bl["program_id"]]
    events = store.find(Kind.EVENT)
    assert [e.id for e in events] == bl["event_ids"]
    for stored in (*programs, *events):
        wanted = schema.component(stored.kind.value.lower())
        assert schema.validate(stored.body, wanted) == []

    ven = peer.run("ven", "peer-ven", secrets["ven"], "ven-peer")
    # the VEN saw only the event that targets it, with the limit the BL set
    assert ven["seen"] == [bl["event_ids"][0]]
    assert ven["limit_kw"] == 120.0
    (report,) = store.find(Kind.REPORT)
    assert report.id == ven["report_id"] and report.owner == "peer-ven"
    assert report.body["eventID"] == bl["event_ids"][0]
    assert report.body["resources"][0]["intervals"][0]["payloads"][0] == {
        "type": "USAGE",
        "values": [97.5],
    }

    # the event the peer made, as the RA would take it
    plan = event_to_requests(events[0].body, fleet_kw=200.0)
    assert [(r.target_kw, r.duration.total_seconds()) for r in plan.requests] == [(-80.0, 3600.0)]
