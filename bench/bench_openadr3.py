"""OpenADR 3 event fan-out: a new event reaching 200 webhook subscribers.

erab's VTN (uvicorn on loopback, in a thread of this process) has 200 subscriptions to event
creation, each with its own callback URL on one aiohttp receiver in its own process (loopback),
which counts arrivals per event and notes when the last one came (``time.monotonic``, one clock
for every process of the machine).  Timed, per round: from just before the business-logic
client's ``POST /events`` until the 200th notification of that event has arrived: the time for
every subscriber to have the event.  The same-run baseline: the same number of plain POSTs of
the same notification body from one aiohttp client in this process to the same receiver, with
as many connections as the VTN's notifier has workers: the least any fan-out over HTTP could
take here.

Run: ``python bench/bench_openadr3.py [--quick] [--subscribers N] [--rounds R]
[--api 3.0.1|3.1.0]`` (the API version whose app is timed; the notification body differs only
in its ``operation``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
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


def receiver_main() -> None:
    """The subscribers' side: POST /hook/N counts, GET /done/KEY?n=N waits for N arrivals of
    KEY and answers the monotonic time of the last."""
    counts: Counter[str] = Counter()
    last: dict[str, float] = {}
    changed = asyncio.Condition()

    async def hook(request: web.Request) -> web.Response:
        key = str((await request.json())["object"]["id"])
        counts[key] += 1
        last[key] = time.monotonic()
        async with changed:
            changed.notify_all()
        return web.Response()

    async def done(request: web.Request) -> web.Response:
        key, n = request.match_info["key"], int(request.query["n"])
        async with changed:
            await asyncio.wait_for(changed.wait_for(lambda: counts[key] >= n), 60)
        return web.json_response({"at": last[key], "count": counts[key]})

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook/{n}", hook)
        app.router.add_get("/done/{key}", done)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


async def run(subscribers: int, rounds: int, api: str = "3.0.1") -> None:
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver"], stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None
    base_url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}"
    hook = f"{base_url}/hook"

    folder = Path(tempfile.mkdtemp(prefix="bench-oadr3-"))
    store = ObjectStore(folder / "vtn.sqlite")
    secret = ClientRegistry(store).register("bl", Role.BL)
    notifier = Notifier(workers=WORKERS)
    vtn = start_in_thread(build_app(store, TokenIssuer(os.urandom(32)), notifier=notifier, api=api))
    fanout_s: list[float] = []
    baseline_s: list[float] = []
    sample: dict[str, Any] = {}
    try:
        async with (
            httpx.AsyncClient(base_url=vtn.url, timeout=30) as http,
            httpx.AsyncClient(base_url=base_url, timeout=90) as watch,
        ):
            form = {"grant_type": "client_credentials", "client_id": "bl", "client_secret": secret}
            token = (await http.post("/auth/token", data=form)).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            program = (
                await http.post("/programs", json={"programName": "bench"}, headers=auth)
            ).json()
            for n in range(subscribers):
                operations = {"objects": ["EVENT"], "operations": ["CREATE"]}
                body = {
                    "clientName": f"sub-{n}",
                    "programID": program["id"],
                    "objectOperations": [{**operations, "callbackUrl": f"{hook}/{n}"}],
                }
                r = await http.post("/subscriptions", headers=auth, json=body)
                assert r.status_code == 201, r.text
            payload = {"type": "IMPORT_CAPACITY_LIMIT", "values": [120.0]}
            event = {
                "programID": program["id"],
                "intervalPeriod": {"start": "2026-08-03T05:00:00Z", "duration": "PT1H"},
                "intervals": [{"id": 0, "payloads": [payload]}],
            }
            for r_ in range(rounds + 1):  # round 0 warms up connections, not timed
                t0 = time.monotonic()
                created = (await http.post("/events", json=event, headers=auth)).json()
                done = await watch.get(f"/done/{created['id']}", params={"n": subscribers})
                if r_:
                    fanout_s.append(done.json()["at"] - t0)
                operation = "POST" if api == "3.0.1" else "CREATE"
                sample = {"objectType": "EVENT", "operation": operation, "object": created}

            connector = aiohttp.TCPConnector(limit=WORKERS)
            async with aiohttp.ClientSession(connector=connector) as session:
                for r_ in range(rounds + 1):
                    key = f"baseline-{r_}"
                    data = json.dumps({**sample, "object": {**sample["object"], "id": key}})

                    async def post(n: int, data: str = data) -> None:
                        headers = {"Content-Type": "application/json"}
                        async with session.post(f"{hook}/{n}", data=data, headers=headers) as resp:
                            await resp.read()

                    t0 = time.monotonic()
                    await asyncio.gather(*(post(n) for n in range(subscribers)))
                    done = await watch.get(f"/done/{key}", params={"n": subscribers})
                    if r_:
                        baseline_s.append(done.json()["at"] - t0)
    finally:
        vtn.stop()
        store.close()
        receiver.terminate()
        receiver.wait(10)

    fan, base = statistics.median(fanout_s), statistics.median(baseline_s)
    print(
        f"OpenADR {api} event fan-out to {subscribers} webhook subscribers, {rounds} rounds, "
        f"{WORKERS} notifier workers (receiver in its own process; a warm-up round each)"
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
        f"  notifier (incl. warm-up): delivered {notifier.stats.delivered}, "
        f"failed {notifier.stats.failed}, retries {notifier.stats.retries}, "
        f"dropped {notifier.stats.dropped}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--subscribers", type=int, default=200, help="webhook subscribers")
    parser.add_argument("--rounds", type=int, default=None, help="events timed (default 15)")
    parser.add_argument(
        "--api", choices=("3.0.1", "3.1.0"), default="3.0.1", help="the API version timed"
    )
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main()
        return
    rounds = args.rounds or (5 if args.quick else 15)
    asyncio.run(run(args.subscribers, rounds, args.api))


if __name__ == "__main__":
    main()
