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
