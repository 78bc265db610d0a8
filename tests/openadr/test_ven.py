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
