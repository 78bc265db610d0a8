"""Interop with an independent implementation of OpenADR 3.1.0: openadr3-client 2.4.2's
``oadr310`` module, run in its own Python 3.12 process against ``erab ac serve`` over HTTPS
(the deployment's certificate, verified against its CA bundle) at ``/openadr3/3.1.0``.

The client finds the token URL itself (``GET auth/server``).  As business logic it creates a
program, the VEN object (BL form: the VEN client's clientID, targets) and two events with
string targets; as the VEN it finds its VEN object, adds a resource (VEN form), reads only the
event whose targets its VEN holds, and posts a report.  The business logic's later PUT of that
event reaches the VEN's webhook as a 3.1.0 ``UPDATE`` notification; the PUT of the other event
does not.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from erab.cli import main as erab
from erab.clock import RealClock
from erab.openadr.v3 import schema
from erab.openadr.v3.models import Kind
from erab.openadr.v3.store import ObjectStore
from erab.security import AuditLog, SecurityHome
from tests.openadr.conftest import Pki
from tests.openadr.test_ac_openadr3 import ac  # noqa: F401  (the fixture: erab ac serve)

PEER_SCRIPT = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from openadr3_client._auth.token_manager import OAuthTokenManagerConfig
from openadr3_client._models.common.interval import Interval
from openadr3_client._models.common.interval_period import IntervalPeriod
from openadr3_client.bl.http_factory import BusinessLogicHttpClientFactory
from openadr3_client.oadr310.models.event.event import EventUpdate, NewEvent
from openadr3_client.oadr310.models.event.event_payload import (
    EventPayload, EventPayloadDescriptor, EventPayloadType)
from openadr3_client.oadr310.models.program.program import NewProgram
from openadr3_client.oadr310.models.report.report import NewReport, ReportResource
from openadr3_client.oadr310.models.report.report_payload import ReportPayload, ReportPayloadType
from openadr3_client.oadr310.models.resource.resource import NewResourceVenRequest
from openadr3_client.oadr310.models.ven.ven import NewVenBlRequest
from openadr3_client.ven.http_factory import VirtualEndNodeHttpClientFactory
from openadr3_client.version import OADRVersion

cfg, step = json.loads(sys.argv[1]), sys.argv[2]
url, ca = cfg["url"], Path(cfg["ca"])
start = datetime(2026, 8, 3, 5, 0, tzinfo=UTC)

def cap(program_id, targets, limit_kw):
    return dict(programID=program_id, event_name=f"cap-{'-'.join(targets)}", targets=targets,
        payload_descriptors=(EventPayloadDescriptor(
            payload_type=EventPayloadType.IMPORT_CAPACITY_LIMIT, units="KW"),),
        interval_period=IntervalPeriod(start=start, duration=timedelta(hours=1)),
        intervals=(Interval(id=0, payloads=(EventPayload(
            type=EventPayloadType.IMPORT_CAPACITY_LIMIT, values=(limit_kw,)),)),))

if step.startswith("bl"):
    # no token_url: the client discovers it at auth/server (OpenADR 3.1.0)
    bl = BusinessLogicHttpClientFactory.create_http_bl_client(
        url, cfg["client_id"], cfg["secret"], verify_vtn_tls_certificate=ca,
        version=OADRVersion.OADR_310)
if step == "bl-create":
    program = bl.programs.create_program(NewProgram(program_name="peer-dr-31"))
    ven = bl.vens.create_ven(NewVenBlRequest(
        ven_name=cfg["ven_name"], client_id=cfg["ven_client_id"], targets=("kanto", "ra-1")))
    mine = bl.events.create_event(NewEvent(**cap(program.id, ("kanto",), 120.0)))
    other = bl.events.create_event(NewEvent(**cap(program.id, ("kyushu",), 80.0)))
    out = {"program_id": program.id, "ven_id": ven.id, "ven_client_id": ven.client_id,
           "event_ids": [mine.id, other.id],
           "token_url": bl.auth.get_auth_server().token_url}
elif step == "bl-update":
    for event_id, targets, kw in cfg["updates"]:
        bl.events.update_event_by_id(event_id, EventUpdate(**cap(cfg["program_id"],
                                                                  tuple(targets), kw)))
    out = {"updated": [u[0] for u in cfg["updates"]]}
else:
    ven = VirtualEndNodeHttpClientFactory.create_http_ven_client(
        url, cfg["client_id"], cfg["secret"], verify_vtn_tls_certificate=ca,
        version=OADRVersion.OADR_310)
    (me,) = ven.vens.get_vens(ven_name=cfg["ven_name"], target=None, pagination=None)
    resource = ven.resources.create_resource(NewResourceVenRequest(
        resource_name="fleet", ven_id=me.id))
    events = ven.events.get_events(target=None, pagination=None, program_id=None)
    event = events[0]
    report = ven.reports.create_report(NewReport(
        eventID=event.id, client_name=cfg["ven_name"], report_name="fleet usage",
        resources=(ReportResource(resource_name="fleet", interval_period=event.interval_period,
            intervals=(Interval(id=0, payloads=(ReportPayload(
                type=ReportPayloadType.USAGE, values=(97.5,)),)),)),)))
    out = {"me": me.id, "my_targets": list(me.targets or ()), "resource": resource.id,
           "resource_client_id": resource.client_id, "seen": [e.id for e in events],
           "limit_kw": event.intervals[0].payloads[0].values[0],
           "report_id": report.id, "report_client_id": report.client_id}
print(json.dumps(out))
"""


class Webhook:
    """A subscriber's callback on loopback: records each notification and its bearer token."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                hook.received.append((self.headers.get("Authorization", ""), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, object_id: str, timeout_s: float = 15.0) -> tuple[str, dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for auth, note in self.received:
                if note["object"]["id"] == object_id:
                    return auth, note
            time.sleep(0.05)
        raise AssertionError(f"no notification of {object_id}; got {self.received}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def add_client(pki: Pki, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert erab(["ac", "client", "add", *argv, "--home", str(pki.home)]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_openadr3_client_speaks_3_1_with_erab_ac_serve(
    peer_python: Path,
    pki: Pki,
    ac: tuple[int, int, subprocess.Popen[str], Path],  # noqa: F811
    webhook: Webhook,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, v3_port, _, _ = ac
    bl_secret = add_client(pki, capsys, "peer-bl", "--role", "bl")
    ven_secret = add_client(pki, capsys, "peer-ven", "--role", "ven", "--ven-name", "ven-peer")
    base = f"https://127.0.0.1:{v3_port}/openadr3/3.1.0"
    script = tmp_path / "peer31.py"
    script.write_text(PEER_SCRIPT)

    def peer(step: str, **cfg: Any) -> dict[str, Any]:
        cfg = {"url": base, "ca": str(pki.ca_bundle), "ven_name": "ven-peer", **cfg}
        # the token request goes through requests' default verification: point it at the CA
        env = dict(os.environ, REQUESTS_CA_BUNDLE=str(pki.ca_bundle))
        done = subprocess.run(
            [str(peer_python), str(script), json.dumps(cfg), step],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert done.returncode == 0, f"openadr3-client {step} failed:\n{done.stderr[-3000:]}"
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return result

    bl = peer("bl-create", client_id="peer-bl", secret=bl_secret, ven_client_id="peer-ven")
    assert bl["token_url"] == f"{base}/auth/token"
    assert bl["ven_client_id"] == "peer-ven"
    mine, other = bl["event_ids"]

    # the VEN's own subscription (openadr3-client 2.4.2 sends 3.0.1's operation names, which
    # the 3.1.0 definition refuses, so it is made here with the VEN client's token)
    trust = ssl.create_default_context(cafile=str(pki.ca_bundle))
    with httpx.Client(verify=trust, base_url=base) as http:
        token = http.post(
            "/auth/token",
            data={"grant_type": "client_credentials", "client_id": "peer-ven",
                  "client_secret": ven_secret},
        ).json()["access_token"]  # fmt: skip
        sub = http.post(
            "/subscriptions",
            headers={"Authorization": f"Bearer {token}"},
            json={"clientName": "ven-peer", "programID": bl["program_id"],
                  "objectOperations": [{"objects": ["EVENT"], "operations": ["UPDATE"],
                                        "callbackUrl": webhook.url, "bearerToken": "hook-secret"}]},
        )  # fmt: skip
        assert sub.status_code == 201, sub.text
        assert sub.json()["clientID"] == "peer-ven"

    ven = peer("ven", client_id="peer-ven", secret=ven_secret)
    assert ven["me"] == bl["ven_id"] and sorted(ven["my_targets"]) == ["kanto", "ra-1"]
    assert ven["seen"] == [mine]  # "kyushu" is not among the VEN's targets
    assert ven["limit_kw"] == 120.0
    assert ven["resource_client_id"] == "peer-ven" and ven["report_client_id"] == "peer-ven"

    peer(
        "bl-update", client_id="peer-bl", secret=bl_secret, program_id=bl["program_id"],
        updates=[[other, ["kyushu"], 60.0], [mine, ["kanto"], 100.0]],
    )  # fmt: skip
    auth, note = webhook.wait_for(mine)
    assert auth == "Bearer hook-secret"
    assert note["operation"] == "UPDATE" and note["objectType"] == "EVENT"
    assert note["targets"] == ["kanto"]
    assert note["object"]["intervals"][0]["payloads"][0]["values"] == [100.0]
    event_schema = schema.component("event", "3.1.0")
    assert schema.validate(note["object"], event_schema, version="3.1.0") == []
    time.sleep(0.5)
    assert [n["object"]["id"] for _, n in webhook.received] == [mine]  # not the other one

    # what the peer made is stored as 3.1.0 objects that meet the (corrected) definition, apart
    # from the 3.0.1 API's
    store = ObjectStore(pki.home / "ac" / "openadr3" / "openadr3.sqlite", api="3.1.0")
    try:
        for kind in (Kind.PROGRAM, Kind.VEN, Kind.RESOURCE, Kind.EVENT, Kind.REPORT):
            found = store.find(kind)
            assert found, kind
            for stored in found:
                wanted = schema.component(kind.value.lower(), "3.1.0")
                assert schema.validate(stored.body, wanted, version="3.1.0") == []
        assert store.for_api("3.0.1").find(Kind.PROGRAM) == []
    finally:
        store.close()

    records = [
        r for r in AuditLog.for_home(SecurityHome(pki.home), RealClock()).store.records()
        if r.details.get("event") == "openadr3_change"
    ]  # fmt: skip
    assert {(r.details["kind"], r.details["api"]) for r in records} >= {
        ("PROGRAM", "3.1.0"),
        ("EVENT", "3.1.0"),
        ("REPORT", "3.1.0"),
        ("RESOURCE", "3.1.0"),
    }
    # the modification (the BL's PUT) is audited as the BL's, for the event it changed
    updates = [(r.subject, r.details["id"]) for r in records if r.details["operation"] == "UPDATE"]
    assert ("peer-bl", mine) in updates and ("peer-bl", other) in updates
