"""The erab VTN's guard over real TLS: VENs by certificate fingerprint, refused messages with
their reason in the audit log, and the server still up after each."""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openleadr.messaging import create_message

from erab.cli.ac import audit_hook
from erab.clock import RealClock
from erab.openadr import AcStore, AcVtn, VtnConfig, build_vtn, run_vtn
from erab.openadr.xmlguard import OADR_NS, XmlLimits
from erab.security import AuditLog, SecurityHome
from tests.openadr.conftest import Pki, free_port
from tests.openadr.test_xmlguard import BILLION_LAUGHS

pytestmark = pytest.mark.timeout(60)


@dataclass
class Running:
    vtn: AcVtn
    url: str
    pki: Pki
    store: AcStore

    def audit(self) -> list[dict[str, object]]:
        log = AuditLog.for_home(SecurityHome(self.pki.home), RealClock())
        return [r.details for r in log.store.records() if r.actor == "openadr"]


def config(port: int, **kw: object) -> VtnConfig:
    return VtnConfig(port=port, poll_interval_s=1, limits=XmlLimits(max_bytes=64_000), **kw)  # type: ignore[arg-type]


@pytest.fixture
async def running(pki: Pki, store: AcStore) -> AsyncIterator[Running]:
    store.add_ven("ven-1", pki.fingerprint("ven-1"))
    port = free_port()
    vtn = build_vtn(store, config(port, require_signatures=True), pki.server_context(),
                    audit=audit_hook(pki.home))  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_vtn(vtn, stop, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        yield Running(vtn, f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b", pki, store)
    finally:
        stop.set()
        await task


async def post(run: Running, name: str, body: bytes,
               service: str = "OadrPoll") -> tuple[int, str]:  # fmt: skip
    """Status and body of one request as VEN ``name``."""
    connector = aiohttp.TCPConnector(ssl=run.pki.client_context(name))
    async with aiohttp.ClientSession(connector=connector) as session, session.post(
            f"{run.url}/{service}", data=body,
            headers={"content-type": "application/xml"}) as response:  # fmt: skip
        return response.status, await response.text()


def signed(run: Running, name: str, message: str = "oadrPoll", **payload: object) -> bytes:
    cert, key = run.pki.ven(name)
    return create_message(message, cert=cert.read_bytes(), key=key.read_bytes(),
                          **({"ven_id": name} | payload)).encode()  # fmt: skip


async def test_a_registered_fingerprints_signed_poll_is_answered_over_tls_1_2(
    running: Running,
) -> None:
    status, text = await post(running, "ven-1", signed(running, "ven-1"))
    assert status == 200 and "oadrPayload" in text
    port = int(running.url.split(":")[2].split("/")[0])
    # a client that would take TLS 1.3 is held to 1.2 by the VTN (2.0b §10.1)
    modern = running.pki.client_context("ven-1")
    modern.maximum_version = ssl.TLSVersion.TLSv1_3
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=modern)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


async def test_a_certificate_not_in_the_registry_is_refused_and_audited(
    running: Running,
) -> None:
    status, text = await post(running, "stranger", signed(running, "stranger"))
    assert status == 403 and "unknown_ven" in text and "erab ac ven add" in text
    audited = running.audit()
    assert {"event": "openadr_refused", "reason": "unknown_ven"}.items() <= audited[-1].items()


async def test_billion_laughs_is_refused_audited_and_the_server_stays_up(
    running: Running,
) -> None:
    status, text = await post(running, "ven-1", BILLION_LAUGHS)
    assert status == 400 and "entity_declaration" in text
    assert running.vtn.refusals == {"entity_declaration": 1}
    assert running.audit()[-1]["reason"] == "entity_declaration"
    status, _ = await post(running, "ven-1", signed(running, "ven-1"))
    assert status == 200


async def test_an_oversized_message_is_refused(running: Running) -> None:
    body = b'<oadrPayload xmlns="' + OADR_NS.encode() + b'">' + b" " * 70_000 + b"</oadrPayload>"
    status, text = await post(running, "ven-1", body)
    assert status == 413 and "oversized" in text


async def test_an_unsigned_message_is_refused_when_signatures_are_required(
    running: Running,
) -> None:
    status, text = await post(running, "ven-1", create_message(
        "oadrPoll", ven_id="ven-1").encode())  # fmt: skip
    assert status == 400 and "unsigned" in text and "oadrPoll" in text


async def test_a_replayed_signed_message_is_refused(running: Running) -> None:
    body = signed(running, "ven-1")
    assert (await post(running, "ven-1", body))[0] == 200
    status, text = await post(running, "ven-1", body)
    assert status == 400 and "replayed" in text
    assert running.audit()[-1]["reason"] == "replayed"


async def test_a_message_signed_by_another_certificate_is_refused(running: Running) -> None:
    running.store.add_ven("ven-2", running.pki.fingerprint("ven-2"))
    status, text = await post(running, "ven-2", signed(running, "ven-1"))
    assert status == 400 and "bad_signature" in text


async def test_registration_gives_the_registrys_ven_id_and_is_audited(running: Running) -> None:
    status, text = await post(running, "ven-1", signed(
        running, "ven-1", "oadrCreatePartyRegistration", request_id="r1", ven_id=None,
        ven_name="tokyo RA", http_pull_model=True, xml_signature=True, report_only=False,
        profile_name="2.0b", transport_name="simpleHttp", transport_address=None,
        registration_id=None), "EiRegisterParty")  # fmt: skip
    assert status == 200 and "<ei:venID>ven-1</ei:venID>" in text
    ven = running.store.ven("ven-1")
    assert ven.registration_id and ven.registration_id in text and ven.ven_name == "tokyo RA"
    assert running.audit()[-1]["event"] == "openadr_registered"


async def test_another_vens_id_in_a_message_is_not_served(running: Running) -> None:
    running.store.add_ven("ven-2", running.pki.fingerprint("ven-2"))
    running.store.registered("ven-1", "one")
    status, text = await post(running, "ven-2", signed(running, "ven-2", ven_id="ven-1"))
    # openleadr compares the connection's fingerprint with ven-1's: not authorised
    assert status == 200 and "<ei:responseCode>200</ei:responseCode>" not in text


def test_a_vtn_without_client_certificates_is_refused(pki: Pki, store: AcStore) -> None:
    context = pki.server_context()
    context.verify_mode = ssl.CERT_NONE
    with pytest.raises(ValueError, match="client certificates"):
        build_vtn(store, config(free_port()), context)


# -- fuzzing a live server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def threaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext]]:
    """A VTN in its own thread and loop, for hypothesis to call synchronously."""
    from tests.openadr.conftest import make_pki

    root: Path = tmp_path_factory.mktemp("fuzz")
    pki = make_pki(root)
    store = AcStore(root / "ac.sqlite")
    store.add_ven("ven-1", pki.fingerprint("ven-1"))
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()

    async def serve() -> None:
        vtn = build_vtn(store, config(port), pki.server_context())
        began = asyncio.Event()
        task = asyncio.create_task(run_vtn(vtn, stop, ready=began))
        await began.wait()
        ready.set()
        await task

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b", pki.client_context("ven-1")
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        store.close()


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=3000),
    st.sampled_from([BILLION_LAUGHS, b"<a>" * 3000, b"<oadrPayload/>"]),
    st.builds(lambda cut, junk: create_message("oadrPoll", ven_id="ven-1").encode()[:cut] + junk,
              st.integers(0, 400), st.binary(max_size=50)),
))  # fmt: skip
def test_any_body_gets_an_answer_and_the_server_stays_up(
    threaded: tuple[str, ssl.SSLContext], body: bytes
) -> None:
    url, context = threaded
    with httpx.Client(verify=context, timeout=10) as client:
        response = client.post(f"{url}/OadrPoll", content=body,
                               headers={"content-type": "application/xml"})  # fmt: skip
        assert response.status_code in (200, 400, 413), response.text
        if response.status_code != 200:
            assert response.text.startswith("refused: ")
        ok = client.post(f"{url}/OadrPoll", content=create_message(
            "oadrPoll", ven_id="ven-1").encode(), headers={"content-type": "application/xml"})
        assert ok.status_code == 200


async def test_an_event_past_its_end_completes_and_leaves_openleadrs_queue(
    running: Running,
) -> None:
    from datetime import UTC, datetime, timedelta

    event = running.store.create_event("ven-1", -5, datetime.now(UTC), timedelta(seconds=1.5))
    for _ in range(50):
        if running.store.event(event.event_id).state == "queued":
            break
        await asyncio.sleep(0.1)
    assert [e.event_descriptor.event_id for e in running.vtn.server.events["ven-1"]] == [
        event.event_id]
    for _ in range(50):
        if running.store.event(event.event_id).state == "completed":
            break
        await asyncio.sleep(0.1)
    assert running.store.event(event.event_id).state == "completed"
    assert running.vtn.server.events["ven-1"] == []


async def test_a_removed_ven_is_refused_within_a_second(running: Running) -> None:
    assert (await post(running, "ven-1", signed(running, "ven-1")))[0] == 200
    other = AcStore(running.store.path)  # as 'erab ac ven remove' does, from its own process
    other.remove_ven("ven-1")
    other.close()
    await asyncio.sleep(1.2)
    status, text = await post(running, "ven-1", signed(running, "ven-1"))
    assert status == 403 and "unknown_ven" in text


async def test_a_flood_of_refused_messages_is_audited_once_with_its_count(
    running: Running,
) -> None:
    for _ in range(5):
        assert (await post(running, "ven-1", BILLION_LAUGHS))[0] == 400
    assert running.vtn.refusals == {"entity_declaration": 5}
    records = [r for r in running.audit() if r.get("reason") == "entity_declaration"]
    assert len(records) == 1


async def test_an_eiopt_opt_out_is_recorded_as_the_vens_answer_with_its_reason(
    running: Running,
) -> None:
    from datetime import UTC, datetime, timedelta

    running.store.registered("ven-1", "one")
    event = running.store.create_event("ven-1", -5, datetime.now(UTC) + timedelta(hours=1),
                                       timedelta(hours=1))  # fmt: skip
    status, text = await post(running, "ven-1", signed(
        running, "ven-1", "oadrCreateOpt", request_id="r1", opt_id="opt-1", opt_type="optOut",
        opt_reason="mustRun", event_id=event.event_id, modification_number=0,
        targets=[{"ven_id": "ven-1"}], vavailability=None, market_context=None,
        signal_target_mrid=None, created_date_time=datetime.now(UTC)), "EiOpt")  # fmt: skip
    assert status == 200 and "oadrCreatedOpt" in text and "opt-1" in text
    answered = running.store.event(event.event_id)
    assert (answered.opt, answered.opt_detail) == ("optOut", "EiOpt optOut: mustRun")
