"""erab demo's coordinator: an event made at the AC reaches the RA only through erab's OpenADR
2.0b VTN and VEN (real TLS 1.2 with client certificates from the deployment's CA).  The RA is
a stand-in recording what it is asked (the whole RA behind the VEN is tested in
tests/openadr/test_ven_ra.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from erab.aggregator.events import DrEvent, EventRequest
from erab.clock import JST, RealClock
from erab.security import CertificateAuthority, SecurityHome
from erab.sim.coordinator import CoordinatorError, OpenAdrCoordinator

pytestmark = pytest.mark.timeout(90)


class Events:
    def __init__(self) -> None:
        self.events: dict[str, DrEvent] = {}


class StandInRa:
    """What the VEN's backend calls on a RaService, and the RA's event table."""

    def __init__(self, down_kw: float) -> None:
        self.down_kw = down_kw
        self.events = Events()
        self.fanout = object()  # "connected to its broker"
        self.requests: list[EventRequest] = []

    def fleet_kw(self) -> float:
        return 42.0

    def flexibility_kw(self, direction: str, start: Any, duration: Any) -> float:
        return self.down_kw if direction == "down" else 0.0

    async def create_event(self, request: EventRequest) -> DrEvent:
        self.requests.append(request)
        event = DrEvent(f"ra-{len(self.requests)}", request, datetime.now(JST))
        self.events.events[event.event_id] = event
        return event

    async def cancel_event(self, event_id: str, by: str) -> None:
        pass


@pytest.fixture
def home(tmp_path: Path) -> Path:
    CertificateAuthority.initialise(SecurityHome(tmp_path), RealClock())
    return tmp_path


async def test_an_event_reaches_the_ra_over_openadr(home: Path) -> None:
    ra = StandInRa(down_kw=20.0)
    coordinator = OpenAdrCoordinator(home, ra, poll_interval_s=0.5)
    await coordinator.start()
    try:
        start = datetime.now(JST).replace(microsecond=0) + timedelta(minutes=5)
        event = await coordinator.send_event(-8.0, start, timedelta(hours=3), "tertiary-1")
    finally:
        await coordinator.close()
    [request] = ra.requests
    assert event.request is request
    assert request.source == "openadr" and request.external_id is not None
    assert request.product == "tertiary-1"  # named by the VTN's market context
    assert request.target_kw == pytest.approx(-8.0)
    assert request.start == start and request.end - request.start == timedelta(hours=3)


async def test_an_opt_out_is_raised_with_the_vens_reason(home: Path) -> None:
    ra = StandInRa(down_kw=0.0)  # nothing to give
    coordinator = OpenAdrCoordinator(home, ra, poll_interval_s=0.5, timeout_s=20)
    await coordinator.start()
    try:
        start = datetime.now(JST) + timedelta(minutes=5)
        with pytest.raises(CoordinatorError, match="opted out") as raised:
            await coordinator.send_event(-8.0, start, timedelta(hours=1), "tertiary-1")
    finally:
        await coordinator.close()
    assert "0.0 kW down" in str(raised.value)
    assert ra.requests == []
