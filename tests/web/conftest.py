"""A deployment home with a registry, an RA over it (not connected to a broker) and the
console in front of it, with one operator of each role."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from erab.aggregator import EventBook, Registry, ResourceKind, TelemetryBatch, TelemetryField
from erab.aggregator.service import RaService
from erab.cli.ra import scenario_inventory, store_path
from erab.cli.web import HomeSecurityDesk
from erab.clock import JST, SimulatedClock
from erab.devices import Scenario
from erab.security import Argon2Parameters, Role
from erab.sim.demo import init_home
from erab.store import SqliteStore
from erab.web.app import create_console

PASSWORD = "violet-harbour-lantern-42"
ROLES = {"vera": Role.VIEWER, "olive": Role.OPERATOR, "sam": Role.SECURITY_OFFICER,
         "ada": Role.ADMIN}  # fmt: skip
START = datetime(2026, 8, 3, 10, 0, tzinfo=JST)


class BookOnly:
    """The RA's state and events without its dispatcher: the console then moves the EventBook
    alone (what a test without a broker can check).  The registry is opened per thread: a
    SQLite connection belongs to the thread that opened it, and the test client serves from
    its own."""

    def __init__(self, ra: RaService) -> None:
        self._ra = ra
        self._local = threading.local()
        self.events, self.state = ra.events, ra.state
        self.resources, self.plans = ra.resources, ra.plans
        self.fanout = None

    @property
    def store(self) -> SqliteStore:
        if not hasattr(self._local, "store"):
            self._local.store = SqliteStore(self._ra.store.path, create=False)
        return self._local.store  # type: ignore[no-any-return]

    @property
    def registry(self) -> Registry:
        return Registry(self.store, self._ra.clock)

    def fleet_summary(self) -> dict[str, Any]:
        s = self.state
        return {"resources": len(self.resources), "online": int(np.sum(s.online)),
                "gateways": len(self.registry.gateways()),
                "power_kw": float(np.nansum(s.power_kw)),
                "flexibility_down_kw": self._ra.flexibility_kw("down"),
                "flexibility_up_kw": self._ra.flexibility_kw("up")}  # fmt: skip

    def flexibility_kw(self, direction: str) -> float:
        return self._ra.flexibility_kw(direction)

    def audit_tail(self, n: int) -> list[dict[str, Any]]:
        return self._ra.audit_tail(n)

    def alert_rows(self, *, open_only: bool = True) -> list[dict[str, Any]]:
        return [{"raised_at": a.raised_at.isoformat(), "kind": a.kind, "message": a.message}
                for a in reversed(self.store.alerts(open_only=open_only))]


def make_home(root: Path, homes: int = 4, stores: int = 1) -> Path:
    home = root / "home"
    init_home(home)
    store = SqliteStore(store_path(home), create=True)
    Registry(store).import_inventory(scenario_inventory(Scenario.generate(homes, stores, seed=0)))
    store.close()
    return home


def feed(ra: RaService, now_s: float) -> None:
    """Every resource heard: PV at half its rating, batteries idle at 55 % SOC, the others
    at a fifth of theirs."""
    n = len(ra.resources)
    rows = np.arange(n)
    battery = ra.state.kind == ResourceKind.BATTERY
    pv = ra.state.kind == ResourceKind.PV
    power = np.where(battery, 0.0, np.where(pv, -0.5 * ra.state.rated_kw,
                                            0.2 * ra.state.rated_kw))
    ra.state.apply(TelemetryBatch.of(rows, [TelemetryField.POWER_KW] * n, power, [now_s] * n),
                   now_s)  # fmt: skip
    b = rows[battery]
    ra.state.apply(TelemetryBatch.of(b, [TelemetryField.SOC_PCT] * len(b), [55.0] * len(b),
                                     [now_s] * len(b)), now_s)  # fmt: skip


@dataclass
class Console:
    home: Path
    ra: RaService
    backend: Any
    desk: HomeSecurityDesk
    client: TestClient
    clock: SimulatedClock

    def login(self, name: str, password: str = PASSWORD, client: TestClient | None = None
              ) -> TestClient:
        c = client or self.client
        c.cookies.clear()
        page = c.get("/login")
        token = csrf_of(page.text)
        r = c.post("/login", data={"name": name, "password": password, "csrf_token": token,
                                   "next": "/fleet"}, follow_redirects=False)  # fmt: skip
        assert r.status_code == 303, r.text
        return c


def csrf_of(html: str) -> str:
    marker = 'name="csrf_token" value="'
    at = html.index(marker) + len(marker)
    return html[at : html.index('"', at)]


@pytest.fixture
def console(tmp_path: Path) -> Console:
    home = make_home(tmp_path)
    clock = SimulatedClock(START, speed=0)
    ra = RaService(home, clock=clock)
    ra.events = EventBook(clock, audit=ra.audit)
    feed(ra, clock.timestamp())
    desk = HomeSecurityDesk(home, clock, ra.audit, argon2_parameters=Argon2Parameters(1, 1024, 1))
    for name, role in ROLES.items():
        desk.directory.add(name, role, PASSWORD)
    backend = BookOnly(ra)
    app = create_console(backend, desk)
    return Console(home, ra, backend, desk, TestClient(app, base_url="http://testserver"), clock)
