"""Event modification at the AC (OpenADR 2.0b): ``erab ac event modify`` makes a new version of
an event (modificationNumber + 1, the VEN's answer cleared), the VTN replaces the event in
openleadr's queue, and the VEN answers again.  Proven against a plain openleadr VEN talking to
``erab ac serve``, and with the RA's VEN (erab's), which cancels the RA events of the earlier
version and carries out the new one or opts out saying why."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from erab.cli import main as erab
from erab.clock import RealClock
from erab.openadr import AcStore, AcStoreError, ErabVen, VenConfig, VtnConfig, build_vtn, run_vtn
from erab.security import AuditLog, SecurityHome
from tests.openadr.conftest import Pki, free_port
from tests.openadr.peers import OPENLEADR_VEN, Peer
from tests.openadr.test_interop import FleetBackend, ac_serve, until, wait_store  # noqa: F401

pytestmark = pytest.mark.timeout(120)
SOON = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = erab(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def ac(tmp_path: Path) -> AcStore:
    store = AcStore(tmp_path / "ac.sqlite")
    store.add_ven("ra-1", "ab" * 32)
    return store


# --- the lifecycle table ---------------------------------------------------------------------


def test_a_modification_is_a_new_version_with_the_answer_cleared(ac: AcStore) -> None:
    event = ac.create_event("ra-1", -50, SOON, timedelta(hours=1))
    ac.advance(event.event_id, "queue")
    ac.responded(event.event_id, "optIn", None)
    changed = ac.modify_event(event.event_id, target_kw=-80, duration=timedelta(minutes=30))
    assert (changed.state, changed.modification) == ("modifying", 1)
    assert (changed.target_kw, changed.duration, changed.start) == (
        -80.0,
        timedelta(minutes=30),
        SOON,
    )
    assert (changed.opt, changed.opt_detail, changed.responded_at) == (None, None, None)
    assert ac.advance(event.event_id, "resend").state == "queued"


def test_an_event_not_yet_sent_stays_new(ac: AcStore) -> None:
    event = ac.create_event("ra-1", -50, SOON, timedelta(hours=1))
    later = SOON + timedelta(hours=2)
    changed = ac.modify_event(event.event_id, start=later)
    assert (changed.state, changed.modification, changed.start) == ("new", 1, later)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, "give what to change"),
        ({"level": 2}, r"sends kW \(LOAD_DISPATCH\): change it with --kw"),
        ({"target_kw": 0.0}, "non-zero number of kW"),
        ({"duration": timedelta(hours=25)}, "at most 24 h"),
        ({"start": SOON - timedelta(days=1)}, "already over"),
    ],
)
def test_a_bad_modification_is_refused_and_changes_nothing(
    ac: AcStore, change: dict[str, object], message: str
) -> None:
    event = ac.create_event("ra-1", -50, SOON, timedelta(hours=1))
    with pytest.raises(AcStoreError, match=message):
        ac.modify_event(event.event_id, **change)  # type: ignore[arg-type]
    assert ac.event(event.event_id) == event


def test_an_ended_or_cancelled_event_cannot_be_modified(ac: AcStore) -> None:
    event = ac.create_event("ra-1", -50, SOON, timedelta(hours=1))
    ac.advance(event.event_id, "queue")
    ac.advance(event.event_id, "cancel")
    with pytest.raises(AcStoreError, match="is cancelling: it cannot be modified"):
        ac.modify_event(event.event_id, target_kw=-10)
    simple = ac.create_event("ra-1", 0, SOON, timedelta(hours=1), signal="SIMPLE", level=1)
    with pytest.raises(AcStoreError, match="change it with --level"):
        ac.modify_event(simple.event_id, target_kw=-10)
    assert ac.modify_event(simple.event_id, level=3).level == 3


# --- the command -------------------------------------------------------------------------------


def test_erab_ac_event_modify_changes_the_event_and_audits_what_changed(
    pki: Pki, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(pki.home)
    run(capsys, "ac", "ven", "add", "ra-1", "--fingerprint", "ab" * 32, "--home", home)
    code, out, _ = run(capsys, "ac", "event", "create", "--ven", "ra-1", "--kw", "-50", "--start",
                       SOON.isoformat(), "--duration", "1h", "--json", "--home", home)  # fmt: skip
    event_id = json.loads(out)[0]["event_id"]
    code, out, err = run(capsys, "ac", "event", "modify", event_id, "--kw", "-75", "--duration",
                         "90m", "--json", "--home", home)  # fmt: skip
    assert code == 0, err
    [shown] = json.loads(out)
    assert (shown["target_kw"], shown["modification"], shown["state"]) == (-75.0, 1, "new")
    assert shown["end"] == (SOON + timedelta(minutes=90)).isoformat()
    [record] = [r for r in AuditLog.for_home(SecurityHome(pki.home), RealClock()).store.records()
                if r.details.get("event") == "openadr_event_modified"]  # fmt: skip
    assert record.subject == f"event:{event_id}" and record.details["modification"] == 1
    assert record.details["changed"] == {"target_kw": [-50.0, -75.0],
                                         "duration_s": [3600.0, 5400.0]}  # fmt: skip
    code, out, _ = run(capsys, "ac", "event", "list", "--home", home)
    assert "-75 kW" in out and "(modification 1)" in out
    code, _, err = run(capsys, "ac", "event", "modify", event_id, "--home", home)
    assert code == 2 and "give what to change" in err
    code, _, err = run(capsys, "ac", "event", "modify", event_id, "--duration", "soon",
                       "--home", home)  # fmt: skip
    assert code == 2 and "duration 'soon'" in err
    code, _, err = run(capsys, "ac", "event", "modify", "ac-nope", "--kw", "-1", "--home", home)
    assert code == 2 and "no event 'ac-nope'" in err


# --- the RA's VEN follows the modification ------------------------------------------------------


async def test_the_ras_ven_follows_a_modification_from_the_ac(pki: Pki, tmp_path: Path) -> None:
    store = AcStore(tmp_path / "ac.sqlite")
    store.add_ven("ra-1", pki.fingerprint("ra-1"))
    port = free_port()
    vtn = build_vtn(store, VtnConfig(port=port, poll_interval_s=0.5, report_interval_s=1),
                    pki.server_context())  # fmt: skip
    cert, key = pki.ven("ra-1")
    backend = FleetBackend()  # 40 kW down available
    ven = ErabVen(VenConfig(vtn_url=VtnConfig(port=port).url, ven_name="tokyo-ra",
                            cert=str(cert), key=str(key), ca_file=str(pki.ca_bundle),
                            ssl_context=pki.client_context("ra-1"), retry_s=0.5),
                  backend)  # fmt: skip
    stop, vtn_ready, ven_ready = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(run_vtn(vtn, stop, ready=vtn_ready, sync_every_s=0.2))]
    try:
        await asyncio.wait_for(vtn_ready.wait(), 10)
        tasks.append(asyncio.create_task(ven.run(stop, ready=ven_ready)))
        await asyncio.wait_for(ven_ready.wait(), 30)
        event = store.create_event("ra-1", -30, SOON, timedelta(minutes=30))
        await until(lambda: store.event(event.event_id).opt == "optIn", 20, "the opt-in")
        assert [r.target_kw for r in backend.created] == [-30.0]
        # more than the fleet can give: the RA event of version 0 is cancelled, and the VEN
        # opts out of version 1 saying why
        store.modify_event(event.event_id, target_kw=-45)
        await until(lambda: store.event(event.event_id).opt == "optOut", 20, "the opt-out")
        answered = store.event(event.event_id)
        assert (answered.state, answered.modification) == ("queued", 1)
        assert answered.opt_detail and "the fleet can give 40.0 kW down" in answered.opt_detail
        assert backend.cancelled == ["ra-1"] and len(backend.created) == 1
        # a version it can carry out, later: a new RA event with the new window
        later = SOON + timedelta(minutes=30)
        store.modify_event(event.event_id, target_kw=-20, start=later)
        await until(lambda: store.event(event.event_id).opt == "optIn", 20, "the new opt-in")
        assert store.event(event.event_id).modification == 2
        await until(lambda: len(backend.created) == 2, 10, "the new RA event")
        assert (backend.created[1].target_kw, backend.created[1].start) == (-20.0, later)
        assert backend.created[1].external_id == event.event_id
        # the queue openleadr serves has the one event, at its latest version
        [queued] = vtn.server.events["ra-1"]
        assert queued.event_descriptor.modification_number == 2
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        store.close()


# --- a plain openleadr VEN answers the modified event from erab ac serve -------------------------


def test_a_plain_openleadr_ven_gets_the_modified_event_and_answers_again(
    pki: Pki, tmp_path: Path, ac_serve: tuple[int, subprocess.Popen[str]],  # noqa: F811
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
        ven.wait_for(30, what="registered")
        capsys.readouterr()
        created = ["ac", "event", "create", "--ven", "plain-1", "--kw", "-20", "--start",
                   SOON.isoformat(), "--duration", "30m", "--json", "--home", home]  # fmt: skip
        assert erab(created) == 0
        event_id = json.loads(capsys.readouterr().out)[0]["event_id"]
        assert ven.wait_for(20, what="event", event_id=event_id)["modification"] == 0
        wait_store(store, lambda: store.event(event_id).opt == "optIn", 20, "the opt-in")
        assert erab(["ac", "event", "modify", event_id, "--kw", "-35", "--home", home]) == 0
        got = ven.wait_for(20, what="event", event_id=event_id, modification=1)
        assert (got["value"], got["status"]) == (-35.0, "far")
        # the VEN answered version 1: the answer cleared by the modification is back
        wait_store(store, lambda: store.event(event_id).opt == "optIn", 20, "the new answer")
        assert (store.event(event_id).state, store.event(event_id).modification) == ("queued", 1)
        # and it can still be cancelled, as version 2
        assert erab(["ac", "event", "cancel", event_id, "--home", home]) == 0
        cancelled = ven.wait_for(20, what="event", event_id=event_id, status="cancelled")
        assert cancelled["modification"] == 2
        wait_store(store, lambda: store.event(event_id).state == "cancelled", 20, "confirmation")
    finally:
        ven.stop()
        store.close()
