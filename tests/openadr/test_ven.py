"""erab's VEN refuses hostile answers from a VTN before openleadr parses them, and keeps
trying to register; a VTN that answers well gets it registered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import pytest
from aiohttp import web

from erab.aggregator import EventRequest
from erab.openadr import ErabVen, VenConfig
from erab.openadr.xmlguard import XmlLimits
from tests.openadr.conftest import Pki, free_port
from tests.openadr.test_xmlguard import BILLION_LAUGHS

pytestmark = pytest.mark.timeout(60)


class Idle:
    def fleet_kw(self) -> float:
        return 0.0

    def flexibility_kw(self, direction: str, start: datetime | None,
                       duration: timedelta) -> float:  # fmt: skip
        return 0.0

    async def create_event(self, request: EventRequest) -> str:
        raise AssertionError("no event expected")

    async def cancel_event(self, event_id: str) -> None:
        raise AssertionError("no event expected")


@pytest.fixture
async def hostile_vtn(pki: Pki) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A TLS server that answers every request with the next hostile body."""
    bodies = [BILLION_LAUGHS, b"<" * 10, b"<oadrPayload xmlns='urn:x'/>", b" " * 5000]
    seen: list[bytes] = []

    async def answer(request: web.Request) -> web.Response:
        seen.append(await request.read())
        return web.Response(body=bodies[(len(seen) - 1) % len(bodies)],
                            content_type="application/xml")  # fmt: skip

    app = web.Application()
    app.router.add_post("/OpenADR2/Simple/2.0b/{service}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=pki.server_context())
    await site.start()
    try:
        yield f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b", seen
    finally:
        await runner.cleanup()


async def test_hostile_answers_are_refused_with_reasons_and_the_ven_keeps_trying(
    pki: Pki, hostile_vtn: tuple[str, list[bytes]]
) -> None:
    url, seen = hostile_vtn
    cert, key = pki.ven("ra-1")
    audited: list[tuple[str, str, dict[str, object]]] = []
    ven = ErabVen(VenConfig(vtn_url=url, ven_name="ra-1", cert=str(cert), key=str(key),
                            ca_file=str(pki.ca_bundle), ssl_context=pki.client_context("ra-1"),
                            retry_s=0.2, limits=XmlLimits(max_bytes=4000)),
                  Idle(), audit=lambda *a: audited.append(a))  # fmt: skip
    stop = asyncio.Event()
    task = asyncio.create_task(ven.run(stop))
    try:
        for _ in range(100):
            if len(ven.refusals) >= 4:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    assert set(ven.refusals) == {"entity_declaration", "malformed", "wrong_namespace",
                                 "oversized"}  # fmt: skip
    assert not ven.registered and len(seen) >= 4  # it kept asking, signed, over TLS 1.2
    assert b"oadrQueryRegistration" in seen[0] and b"Signature" in seen[0]
    assert {a[2]["reason"] for a in audited} == set(ven.refusals)


async def run_against_signing_vtn(pki: Pki, fingerprint: str) -> ErabVen:
    from erab.openadr import AcStore, VtnConfig, build_vtn, run_vtn

    store = AcStore(pki.home / "ac.sqlite")
    store.add_ven("ra-1", pki.fingerprint("ra-1"))
    port = free_port()
    vtn = build_vtn(store, VtnConfig(port=port, require_signatures=True,
                                     sign_cert=str(pki.vtn_cert), sign_key=str(pki.vtn_key)),
                    pki.server_context())  # fmt: skip
    cert, key = pki.ven("ra-1")
    ven = ErabVen(VenConfig(vtn_url=VtnConfig(port=port).url, ven_name="ra-1", cert=str(cert),
                            key=str(key), ca_file=str(pki.ca_bundle),
                            ssl_context=pki.client_context("ra-1"), retry_s=0.2,
                            vtn_fingerprint=fingerprint), Idle())  # fmt: skip
    stop, ready = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(run_vtn(vtn, stop, ready=ready))]
    await ready.wait()
    tasks.append(asyncio.create_task(ven.run(stop)))
    try:
        for _ in range(30):
            if ven.registered:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        store.close()
    return ven


async def test_signed_both_ways_the_ven_registers_when_the_vtns_signature_checks(
    pki: Pki,
) -> None:
    from erab.openadr import fingerprint_of_file, short_fingerprint

    ven = await run_against_signing_vtn(pki, short_fingerprint(fingerprint_of_file(pki.vtn_cert)))
    assert ven.registered and ven.client.ven_id == "ra-1"


async def test_a_vtn_signing_with_another_certificate_is_not_believed(pki: Pki) -> None:
    ven = await run_against_signing_vtn(pki, short_fingerprint_of_other(pki))
    assert not ven.registered


def short_fingerprint_of_other(pki: Pki) -> str:
    from erab.openadr import short_fingerprint

    return short_fingerprint(pki.fingerprint("someone-else"))


async def test_after_a_vtn_restart_the_ven_registers_again_and_reports_resume(
    pki: Pki,
) -> None:
    from erab.openadr import AcStore, VtnConfig, build_vtn, run_vtn

    class Steady(Idle):
        def fleet_kw(self) -> float:
            return 7.0

    store = AcStore(pki.home / "ac.sqlite")
    store.add_ven("ra-1", pki.fingerprint("ra-1"))
    port = free_port()
    config = VtnConfig(port=port, poll_interval_s=0.5, report_interval_s=1)
    cert, key = pki.ven("ra-1")
    ven = ErabVen(VenConfig(vtn_url=config.url, ven_name="ra-1", cert=str(cert), key=str(key),
                            ca_file=str(pki.ca_bundle), ssl_context=pki.client_context("ra-1")),
                  Steady())  # fmt: skip

    async def until(test: object, what: str) -> None:
        for _ in range(150):
            if test():  # type: ignore[operator]
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    ven_stop = asyncio.Event()
    first_stop, first_ready = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(run_vtn(build_vtn(store, config, pki.server_context()),
                                        first_stop, ready=first_ready))  # fmt: skip
    await first_ready.wait()
    ven_task = asyncio.create_task(ven.run(ven_stop))
    try:
        await until(lambda: store.ven("ra-1").registration_id is not None, "registration")
        before = store.ven("ra-1").registration_id
        first_stop.set()
        await first
        second_stop, second_ready = asyncio.Event(), asyncio.Event()
        second = asyncio.create_task(run_vtn(build_vtn(store, config, pki.server_context()),
                                             second_stop, ready=second_ready))  # fmt: skip
        await second_ready.wait()
        count = len(store.reports("ra-1", "fleet_kw"))
        await until(lambda: store.ven("ra-1").registration_id not in (None, before),
                    "registration with the new VTN")  # fmt: skip
        await until(lambda: len(store.reports("ra-1", "fleet_kw")) > count + 1,
                    "reports to the new VTN")  # fmt: skip
        second_stop.set()
        await second
    finally:
        ven_stop.set()
        await ven_task
        store.close()


class Recording(Idle):
    def __init__(self, down_kw: float = 100.0, refuse: str | None = None) -> None:
        self.down_kw, self.refuse = down_kw, refuse
        self.created: list[EventRequest] = []
        self.cancelled: list[str] = []

    def fleet_kw(self) -> float:
        return 200.0

    def flexibility_kw(self, direction: str, start: datetime | None,
                       duration: timedelta) -> float:  # fmt: skip
        return self.down_kw if direction == "down" else 0.0

    async def create_event(self, request: EventRequest) -> str:
        from erab.aggregator import EventError

        if self.refuse:
            raise EventError(self.refuse)
        self.created.append(request)
        return f"ra-{len(self.created)}"

    async def cancel_event(self, event_id: str) -> None:
        self.cancelled.append(event_id)


def vtn_event(kw: float, modification: int = 0, status: str = "far",
              start: datetime | None = None) -> dict[str, object]:  # fmt: skip
    from datetime import UTC

    at = start or datetime.now(UTC) + timedelta(minutes=10)
    return {"event_descriptor": {"event_id": "e1", "modification_number": modification,
                                 "event_status": status},
            "active_period": {"dtstart": at, "duration": timedelta(minutes=30)},
            "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "delta",
                               "intervals": [{"dtstart": at, "duration": timedelta(minutes=30),
                                              "signal_payload": kw}]}]}  # fmt: skip


def offline_ven(backend: Recording) -> ErabVen:
    return ErabVen(VenConfig(vtn_url="https://127.0.0.1:9/x", ven_name="ra-1"), backend,
                   draw=lambda: 0.0)  # fmt: skip


async def test_an_event_its_modification_and_cancellation_drive_the_ra() -> None:
    backend = Recording()
    ven = offline_ven(backend)
    assert await ven.on_event(vtn_event(-30)) == "optIn"
    assert [r.target_kw for r in backend.created] == [-30]
    assert await ven.on_event(vtn_event(-60, modification=1)) == "optIn"
    assert backend.cancelled == ["ra-1"] and backend.created[-1].target_kw == -60
    assert await ven.on_event(vtn_event(-60, modification=2, status="cancelled")) == "optIn"
    assert backend.cancelled == ["ra-1", "ra-2"] and len(backend.created) == 2
    assert "every site returns to normal" in ven.tracked["e1"].decision.detail


async def test_an_event_the_ra_refuses_is_opted_out_with_the_ras_reason() -> None:
    ven = offline_ven(Recording(refuse="overlaps event ev-1"))
    assert await ven.on_event(vtn_event(-30)) == "optOut"
    assert ven.tracked["e1"].decision.detail == "the RA refused the event: overlaps event ev-1"


async def test_events_over_for_a_day_are_forgotten() -> None:
    from datetime import UTC

    ven = offline_ven(Recording())
    await ven.on_event(vtn_event(-30, start=datetime.now(UTC) - timedelta(days=2)))
    assert "e1" in ven.tracked
    other = vtn_event(-10)
    other["event_descriptor"] = {"event_id": "e2", "modification_number": 0,  # type: ignore[index]
                                 "event_status": "far"}
    await ven.on_event(other)
    assert list(ven.tracked) == ["e2"]
