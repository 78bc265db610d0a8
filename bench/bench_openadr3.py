"""OpenADR 3 event fan-out: a new event reaching 200 webhook subscribers.

erab's VTN (uvicorn on loopback, in a thread of this process) has 200 subscriptions to event
creation, each with its own callback URL on one aiohttp receiver (this process's loop, loopback)
that counts arrivals per event.  Timed, per round: from just before the business-logic client's
``POST /events`` until the 200th notification of that event has arrived (the time for every
subscriber to have the event).  The same-run baseline: the same number of plain POSTs of the
same notification body from one aiohttp client to the same receiver, with the same number of
connections as the VTN's notifier workers: the least any fan-out over HTTP could take here.

Run: ``python bench/bench_openadr3.py [--quick] [--subscribers N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from aiohttp import web

from erab.openadr.v3 import ClientRegistry, Notifier, ObjectStore, Role, TokenIssuer, build_app
from erab.openadr.v3.serve import start_in_thread

WORKERS = 32


class Receiver:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.waiting: dict[str, tuple[int, asyncio.Future[float]]] = {}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = str(body["object"]["id"])
        self.counts[key] += 1
        wanted = self.waiting.get(key)
        if wanted and self.counts[key] == wanted[0] and not wanted[1].done():
            wanted[1].set_result(time.perf_counter())
        return web.Response()

    def expect(self, key: str, n: int) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[key] = (n, future)
        return future


async def run(subscribers: int, rounds: int) -> None:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{n}", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    hook = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

    folder = Path(tempfile.mkdtemp(prefix="bench-oadr3-"))
    store = ObjectStore(folder / "vtn.sqlite")
    secret = ClientRegistry(store).register("bl", Role.BL)
    notifier = Notifier(workers=WORKERS)
    vtn = start_in_thread(build_app(store, TokenIssuer(os.urandom(32)), notifier=notifier))
    fanout_s: list[float] = []
    baseline_s: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=vtn.url, timeout=30) as http:
            token = (
                await http.post(
                    "/auth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": "bl",
                        "client_secret": secret,
                    },
                )
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            program = (
                await http.post("/programs", json={"programName": "bench"}, headers=auth)
            ).json()
            for n in range(subscribers):
                r = await http.post(
                    "/subscriptions",
                    headers=auth,
                    json={
                        "clientName": f"sub-{n}",
                        "programID": program["id"],
                        "objectOperations": [
                            {
                                "objects": ["EVENT"],
                                "operations": ["CREATE"],
                                "callbackUrl": f"{hook}/{n}",
                            }
                        ],
                    },
                )
                assert r.status_code == 201, r.text
            event = {
                "programID": program["id"],
                "intervalPeriod": {"start": "2026-08-03T05:00:00Z", "duration": "PT1H"},
                "intervals": [
                    {"id": 0, "payloads": [{"type": "IMPORT_CAPACITY_LIMIT", "values": [120.0]}]}
                ],
            }
            sample: dict[str, Any] = {}
            for _ in range(rounds):
                t0 = time.perf_counter()
                r = await http.post("/events", json=event, headers=auth)
                created = r.json()
                done = receiver.expect(created["id"], subscribers)
                if receiver.counts[created["id"]] >= subscribers:
                    done.set_result(time.perf_counter())
                fanout_s.append(await asyncio.wait_for(done, 60) - t0)
                sample = {"objectType": "EVENT", "operation": "POST", "object": created}

        connector = aiohttp.TCPConnector(limit=WORKERS)
        async with aiohttp.ClientSession(connector=connector) as session:
            for r_ in range(rounds):
                key = f"baseline-{r_}"
                body = json.dumps({**sample, "object": {**sample["object"], "id": key}}).encode()
                done = receiver.expect(key, subscribers)
                t0 = time.perf_counter()

                async def post(n: int, body: bytes = body) -> None:
                    async with session.post(
                        f"{hook}/{n}", data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        await resp.read()

                await asyncio.gather(*(post(n) for n in range(subscribers)))
                baseline_s.append(await asyncio.wait_for(done, 60) - t0)
    finally:
        vtn.stop()
        store.close()
        await runner.cleanup()

    fan, base = statistics.median(fanout_s), statistics.median(baseline_s)
    print(
        f"OpenADR 3 event fan-out to {subscribers} webhook subscribers, {rounds} rounds, "
        f"{WORKERS} notifier workers"
    )
    print(
        f"  erab VTN: POST /events -> all {subscribers} notified   median {fan * 1e3:8.1f} ms "
        f"(min {min(fanout_s) * 1e3:.1f}, max {max(fanout_s) * 1e3:.1f})"
    )
    print(
        f"  baseline: {subscribers} plain POSTs from one client      median {base * 1e3:8.1f} ms "
        f"(min {min(baseline_s) * 1e3:.1f}, max {max(baseline_s) * 1e3:.1f})"
    )
    print(f"  ratio erab / baseline: {fan / base:.2f}")
    print(
        f"  notifier: delivered {notifier.stats.delivered}, failed {notifier.stats.failed}, "
        f"retries {notifier.stats.retries}, dropped {notifier.stats.dropped}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--subscribers", type=int, default=200, help="webhook subscribers")
    parser.add_argument("--rounds", type=int, default=None, help="events timed (default 15)")
    args = parser.parse_args()
    rounds = args.rounds or (5 if args.quick else 15)
    asyncio.run(run(args.subscribers, rounds))


if __name__ == "__main__":
    main()
