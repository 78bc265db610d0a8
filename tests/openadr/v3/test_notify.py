"""Webhook notifications: a real VTN over HTTP on loopback, subscribers as aiohttp servers."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from erab.openadr.v3 import schema
from erab.openadr.v3.app import build_app
from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.models import Kind, Operation
from erab.openadr.v3.notify import Delivery, Notifier, deliveries_for
from erab.openadr.v3.serve import RunningVtn, start_in_thread
from erab.openadr.v3.store import ObjectStore, Stored
from tests.openadr.v3.conftest import event_body


@dataclass
class Receiver:
    """A webhook endpoint on loopback that records what arrives; the first ``fail_first``
    calls are answered 503."""

    fail_first: int = 0
    delay_s: float = 0.0
    calls: int = 0
    received: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        self.received.append((request.headers.get("Authorization"), await request.json()))
        self.arrived.set()
        return web.Response(status=200)

    async def wait_for(self, n: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while len(self.received) < n:
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def receivers() -> AsyncIterator[list[Receiver]]:
    made: list[Receiver] = []
    runners: list[web.AppRunner] = []

    async def make(**kwargs: Any) -> Receiver:
        receiver = Receiver(**kwargs)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        receiver.url = f"http://127.0.0.1:{port}/hook"
        runners.append(runner)
        made.append(receiver)
        return receiver

    made_factory: Any = make
    yield made_factory
    for runner in runners:
        await runner.cleanup()


@dataclass
class LiveVtn:
    running: RunningVtn
    secrets: dict[str, str]
    notifier: Notifier

    async def headers(self, http: httpx.AsyncClient, who: str) -> dict[str, str]:
        r = await http.post(
            "/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": who,
                "client_secret": self.secrets[who],
            },
        )
        return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveVtn]:
    store = ObjectStore(tmp_path / "vtn.sqlite")
    registry = ClientRegistry(store)
    secrets = {
        "bl": registry.register("bl", Role.BL),
        "ven1": registry.register("ven1", Role.VEN, ven_name="ven-one"),
    }
    notifier = Notifier(backoff_s=0.05, timeout_s=2.0)
    running = start_in_thread(build_app(store, TokenIssuer(os.urandom(32)), notifier=notifier))
    yield LiveVtn(running, secrets, notifier)
    running.stop()
    store.close()


def subscription(program_id: str, url: str, objects: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "clientName": "watcher",
        "programID": program_id,
        "objectOperations": [
            {
                "objects": objects,
                "operations": ["CREATE", "UPDATE", "DELETE"],
                "callbackUrl": url,
                "bearerToken": "hook-secret",
            }
        ],
        **extra,
    }


async def test_create_update_and_delete_of_an_event_reach_the_subscriber(
    live: LiveVtn, receivers: Any
) -> None:
    hook = await receivers()
    async with httpx.AsyncClient(base_url=live.running.url) as http:
        bl = await live.headers(http, "bl")
        program = (await http.post("/programs", json={"programName": "p"}, headers=bl)).json()
        r = await http.post(
            "/subscriptions", headers=bl, json=subscription(program["id"], hook.url, ["EVENT"])
        )
        assert r.status_code == 201
        event = (await http.post("/events", json=event_body(program["id"]), headers=bl)).json()
        await http.put(
            f"/events/{event['id']}",
            headers=bl,
            json=event_body(program["id"], eventName="changed"),
        )
        await http.delete(f"/events/{event['id']}", headers=bl)
        await hook.wait_for(3)
    # the notifier works through a pool: the three may arrive in any order
    operations = sorted(body["operation"] for _, body in hook.received)
    assert operations == ["DELETE", "POST", "PUT"]
    for auth, body in hook.received:
        assert auth == "Bearer hook-secret"
        assert body["objectType"] == "EVENT" and body["object"]["id"] == event["id"]
        assert schema.validate(body, schema.component("notification")) == []


async def test_a_subscriber_answering_503_is_retried_until_it_takes_it(
    live: LiveVtn, receivers: Any
) -> None:
    hook = await receivers(fail_first=2)
    async with httpx.AsyncClient(base_url=live.running.url) as http:
        bl = await live.headers(http, "bl")
        program = (await http.post("/programs", json={"programName": "p"}, headers=bl)).json()
        await http.post(
            "/subscriptions", headers=bl, json=subscription(program["id"], hook.url, ["EVENT"])
        )
        await http.post("/events", json=event_body(program["id"]), headers=bl)
        await hook.wait_for(1)
    # the receiver has the body before the notifier has read its answer and counted it
    for _ in range(100):
        if live.notifier.stats.delivered:
            break
        await asyncio.sleep(0.05)
    assert hook.calls == 3
    assert live.notifier.stats.retries == 2 and live.notifier.stats.delivered == 1


async def test_a_ven_subscriber_hears_only_of_events_that_target_it(
    live: LiveVtn, receivers: Any
) -> None:
    ven_hook, bl_hook = await receivers(), await receivers()
    async with httpx.AsyncClient(base_url=live.running.url) as http:
        bl, ven = await live.headers(http, "bl"), await live.headers(http, "ven1")
        program = (await http.post("/programs", json={"programName": "p"}, headers=bl)).json()
        for hook, who in ((ven_hook, ven), (bl_hook, bl)):
            r = await http.post(
                "/subscriptions", headers=who, json=subscription(program["id"], hook.url, ["EVENT"])
            )
            assert r.status_code == 201, r.text
        other = event_body(program["id"], targets=[{"type": "VEN_NAME", "values": ["ven-nine"]}])
        mine = event_body(program["id"], targets=[{"type": "VEN_NAME", "values": ["ven-one"]}])
        await http.post("/events", json=other, headers=bl)
        created = (await http.post("/events", json=mine, headers=bl)).json()
        await bl_hook.wait_for(2)
        await ven_hook.wait_for(1)
        await asyncio.sleep(0.2)  # time for a wrong second delivery to show up
    assert [body["object"]["id"] for _, body in ven_hook.received] == [created["id"]]


async def test_a_subscription_hears_nothing_of_other_programs(
    live: LiveVtn, receivers: Any
) -> None:
    hook = await receivers()
    async with httpx.AsyncClient(base_url=live.running.url) as http:
        bl = await live.headers(http, "bl")
        watched = (await http.post("/programs", json={"programName": "a"}, headers=bl)).json()
        other = (await http.post("/programs", json={"programName": "b"}, headers=bl)).json()
        await http.post(
            "/subscriptions", headers=bl, json=subscription(watched["id"], hook.url, ["EVENT"])
        )
        await http.post("/events", json=event_body(other["id"]), headers=bl)
        last = (await http.post("/events", json=event_body(watched["id"]), headers=bl)).json()
        await hook.wait_for(1)
        await asyncio.sleep(0.2)
    assert [body["object"]["id"] for _, body in hook.received] == [last["id"]]


async def test_a_full_queue_drops_and_counts_instead_of_growing(receivers: Any) -> None:
    hook = await receivers(delay_s=0.3)
    notifier = Notifier(max_queue=2, workers=1, timeout_s=2.0)
    try:
        accepted = [notifier.submit(Delivery("s", hook.url, None, b"{}")) for _ in range(6)]
        await notifier.drain()
    finally:
        await notifier.aclose()
    # one taken by the worker at once or not: at most 3 in flight or queued, the rest dropped
    assert accepted.count(False) == notifier.stats.dropped >= 3
    assert notifier.stats.delivered == accepted.count(True) == len(hook.received)


async def test_an_unreachable_subscriber_is_given_up_on_and_recorded() -> None:
    notifier = Notifier(attempts=2, backoff_s=0.01, timeout_s=1.0)
    try:
        notifier.submit(Delivery("sub-x", "http://127.0.0.1:9/hook", None, b"{}"))
        await notifier.drain()
    finally:
        await notifier.aclose()
    assert notifier.stats.failed == 1 and notifier.stats.retries == 1
    assert "sub-x" in notifier.stats.last_errors[0]


def test_one_notification_per_callback_even_when_two_entries_name_it() -> None:
    sub = Stored(
        Kind.SUBSCRIPTION,
        "sub-1",
        "prg-1",
        "bl",
        {
            "programID": "prg-1",
            "objectOperations": [
                {
                    "objects": ["EVENT"],
                    "operations": ["CREATE"],
                    "callbackUrl": "http://127.0.0.1:1/a",
                },
                {
                    "objects": ["EVENT", "PROGRAM"],
                    "operations": ["CREATE"],
                    "callbackUrl": "http://127.0.0.1:1/a",
                },
                {
                    "objects": ["EVENT"],
                    "operations": ["DELETE"],
                    "callbackUrl": "http://127.0.0.1:1/b",
                },
            ],
        },
    )
    event = {"id": "evt-1", "programID": "prg-1"}
    out = deliveries_for([sub], Kind.EVENT, Operation.CREATE, event, lambda s: True)
    assert [d.url for d in out] == ["http://127.0.0.1:1/a"]
    assert deliveries_for([sub], Kind.EVENT, Operation.CREATE, event, lambda s: False) == []


def test_a_subscription_with_targets_hears_only_of_objects_sharing_one() -> None:
    sub = Stored(
        Kind.SUBSCRIPTION,
        "sub-1",
        "prg-1",
        "bl",
        {
            "programID": "prg-1",
            "targets": [{"type": "GROUP", "values": ["kanto"]}],
            "objectOperations": [
                {
                    "objects": ["EVENT"],
                    "operations": ["CREATE"],
                    "callbackUrl": "http://127.0.0.1:1/a",
                }
            ],
        },
    )

    def heard(targets: Any) -> bool:
        event = {"id": "evt-1", "programID": "prg-1", "targets": targets}
        return bool(deliveries_for([sub], Kind.EVENT, Operation.CREATE, event, lambda s: True))

    assert heard([{"type": "GROUP", "values": ["tohoku", "kanto"]}])
    assert heard(None)  # an event for everyone
    assert not heard([{"type": "GROUP", "values": ["tohoku"]}])
    assert not heard([{"type": "VEN_NAME", "values": ["kanto"]}])


def test_the_notifier_follows_the_app_into_a_new_event_loop() -> None:
    notifier = Notifier(timeout_s=1.0, attempts=1)

    async def once() -> int:
        app = web.Application()
        got: list[bytes] = []

        async def hook(request: web.Request) -> web.Response:
            got.append(await request.read())
            return web.Response()

        app.router.add_post("/h", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/h"
        notifier.submit(Delivery("s", url, None, b"{}"))
        await notifier.drain()
        await runner.cleanup()
        return len(got)

    assert asyncio.run(once()) == 1
    assert asyncio.run(once()) == 1  # a second loop: the notifier starts afresh in it
    assert notifier.stats.delivered == 2
