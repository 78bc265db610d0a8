"""OpenADR 2.0b event fan-out: erab's VTN to many polling VENs, against the poll interval.

The VTN (``build_vtn``/``run_vtn``, TLS 1.2 with client certificates, every request through
the XML guard) runs in this process; the VENs are plain openleadr clients, each with its own
certificate from erab's CA, spread over a few worker processes.  After every VEN has
registered, one event per VEN is written to the AC's store (as ``erab ac event create``
does) and the clock runs until every VEN has it.  Figures per trial: median, 95th percentile
and maximum time from the store write to a VEN's on_event, and the maximum against the poll
interval (a VEN polls once per interval, so ~1 is the floor; the VTN's store sync adds up to
half a second).  The baseline, measured in the same run with the same clients, is the fan-out
to the first 10 VENs only; the ratio says what 200 cost over 10.  VENs start spread over one
poll interval (their polls are out of phase, as independent RAs' are), and each trial starts at
a random point of the cycle.

    python bench/bench_openadr.py                    # 200 VENs, poll every 5 s, 3 trials
    python bench/bench_openadr.py --quick            # 40 VENs, 2 trials
    python bench/bench_openadr.py --vens 200 --poll 2 --workers 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from erab.clock import RealClock
from erab.openadr import AcStore, VtnConfig, build_vtn, fingerprint_of_pem, hold_to_tls12, run_vtn
from erab.security import CertificateAuthority, SecurityHome, TlsProfile
from erab.security.pki import certificate_pem, private_key_pem
from erab.security.tls import server_context

# the worker: N openleadr VENs in one process; prints registrations and events as JSON lines
WORKER = r'''
import asyncio, json, sys, time, logging
logging.disable(logging.WARNING)
from openleadr import OpenADRClient

url, ca, spec = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
spread = float(sys.argv[4])  # start times spread over one poll interval: phases differ

def say(**kw):
    sys.stdout.write(json.dumps(kw) + "\n"); sys.stdout.flush()

async def one(name, cert, key, delay):
    await asyncio.sleep(delay)  # stagger: no registration herd, polls out of phase
    async def on_event(event):
        say(what="event", ven=name, event_id=event["event_descriptor"]["event_id"],
            t=time.time())
        return "optIn"
    for attempt in range(5):  # openleadr gives up after one failed registration; a VEN retries
        client = OpenADRClient(ven_name=name, vtn_url=url, cert=cert, key=key, ca_file=ca,
                               show_fingerprint=False, disable_signature=True,
                               event_status_log_period=3600, events_clean_up_period=3600)
        client.add_handler("on_event", on_event)
        await client.run()
        if client.registration_id is not None:
            break
        await asyncio.sleep(1 + attempt)
    say(what="registered", ven=name, ok=client.registration_id is not None)

async def main():
    await asyncio.gather(*(one(n, c, k, i * spread / len(spec))
                           for i, (n, c, k) in enumerate(spec)))
    await asyncio.Event().wait()

asyncio.run(main())
'''


class Workers:
    """VEN worker processes and what they print."""

    def __init__(self, url: str, ca: Path, vens: list[tuple[str, str, str]], workers: int,
                 root: Path, spread_s: float) -> None:  # fmt: skip
        script = root / "worker.py"
        script.write_text(WORKER)
        self.registered: set[str] = set()
        self.received: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.processes = []
        for w in range(workers):
            part = vens[w::workers]
            spec = root / f"worker-{w}.json"
            spec.write_text(json.dumps(part))
            process = subprocess.Popen(
                [sys.executable, str(script), url, str(ca), str(spec), str(spread_s)],
                stdout=subprocess.PIPE, stderr=(root / f"worker-{w}.log").open("w"), text=True,
            )  # fmt: skip
            self.processes.append(process)
            threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self.lock:
                if msg["what"] == "registered" and msg["ok"]:
                    self.registered.add(msg["ven"])
                elif msg["what"] == "event":
                    self.received.setdefault((msg["ven"], msg["event_id"]), msg["t"])

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def pki(root: Path, n: int) -> tuple[Path, Path, Path, list[tuple[str, str, str]], list[str]]:
    home = root / "home"
    security = SecurityHome(home)
    ca = CertificateAuthority.initialise(security, RealClock())
    issued = ca.issue_server([], ["127.0.0.1"])
    cert, key = root / "vtn.pem", root / "vtn.key.pem"
    cert.write_bytes(certificate_pem(issued.certificate))
    key.write_bytes(private_key_pem(issued.private_key))
    vens, prints = [], []
    for i in range(n):
        name = f"ven-{i:03d}"
        client = ca.issue_service_client(name)
        c, k = root / f"{name}.pem", root / f"{name}.key.pem"
        pem = certificate_pem(client.certificate)
        c.write_bytes(pem)
        k.write_bytes(private_key_pem(client.private_key))
        vens.append((name, str(c), str(k)))
        prints.append(fingerprint_of_pem(pem))
    return security.ca_bundle, cert, key, vens, prints


async def fan_out(store: AcStore, workers: Workers, names: list[str], timeout_s: float
                  ) -> list[float]:  # fmt: skip
    """Seconds from the store write to each VEN's on_event, for one event per VEN."""
    start = datetime.now(UTC) + timedelta(minutes=5)
    t0 = time.time()
    ids = {name: store.create_event(name, -10, start, timedelta(minutes=30)).event_id
           for name in names}  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with workers.lock:
            got = [workers.received.get((n, ids[n])) for n in names]
        if all(t is not None for t in got):
            return [t - t0 for t in got if t is not None]
        await asyncio.sleep(0.05)
    missing = sum(1 for t in got if t is None)
    raise SystemExit(f"{missing} of {len(names)} VENs did not get the event in {timeout_s} s")


def summary(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    return (statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))], ordered[-1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vens", type=int, default=200, help="VENs polling (default 200)")
    parser.add_argument("--poll", type=float, default=5.0, help="poll interval, s (default 5)")
    parser.add_argument("--workers", type=int, default=2, help="VEN processes (default 2)")
    parser.add_argument("--trials", type=int, default=3, help="trials each (default 3)")
    parser.add_argument("--quick", action="store_true", help="40 VENs, 2 trials")
    args = parser.parse_args()
    if args.quick:
        args.vens, args.trials = 40, 2
    baseline_n = min(10, args.vens)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        began = time.perf_counter()
        ca, cert, key, vens, prints = pki(root, args.vens)
        print(f"PKI: {args.vens} VEN certificates in {time.perf_counter() - began:.1f} s")
        store = AcStore(root / "ac.sqlite")
        for (name, _, _), fp in zip(vens, prints, strict=True):
            store.add_ven(name, fp)
        port = int(os.environ.get("BENCH_PORT", "0")) or _free_port()
        context = hold_to_tls12(server_context(cert, key, ca, profile=TlsProfile.OPENADR_TLS12))
        vtn = build_vtn(store, VtnConfig(port=port, poll_interval_s=args.poll), context)
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(run_vtn(vtn, stop, ready=ready, sync_every_s=0.5))
        await ready.wait()
        workers = Workers(VtnConfig(port=port).url, ca, vens, args.workers, root, args.poll)
        try:
            began = time.perf_counter()
            while len(workers.registered) < args.vens:
                if time.perf_counter() - began > 60 + args.vens * 0.5:
                    raise SystemExit(f"only {len(workers.registered)} of {args.vens} VENs "
                                     "registered; see the worker logs")  # fmt: skip
                await asyncio.sleep(0.2)
            print(f"{args.vens} VENs registered in {time.perf_counter() - began:.1f} s, "
                  f"polling every {args.poll:g} s from {args.workers} processes")
            await asyncio.sleep(args.poll)  # let the first polls settle
            names = [name for name, _, _ in vens]
            base, full = [], []
            draw = random.Random(7)
            for trial in range(args.trials):
                # baseline and measured alternate, so machine load hits both alike; each
                # starts at a random point of the poll cycle, not just after a poll
                await asyncio.sleep(draw.uniform(0, args.poll))
                b = summary(await fan_out(store, workers, names[:baseline_n], 10 * args.poll))
                await asyncio.sleep(draw.uniform(0, args.poll))
                f = summary(await fan_out(store, workers, names, 10 * args.poll + 30))
                base.append(b)
                full.append(f)
                print(f"trial {trial + 1}: {baseline_n} VENs all by {b[2]:.2f} s; "
                      f"{args.vens} VENs median {f[0]:.2f} s, p95 {f[1]:.2f} s, all by "
                      f"{f[2]:.2f} s")
        finally:
            workers.stop()
            stop.set()
            await task
            store.close()
    med = [statistics.median(x[i] for x in full) for i in range(3)]
    base_all = statistics.median(x[2] for x in base)
    print()
    print(f"fan-out to {args.vens} VENs polling every {args.poll:g} s "
          f"(median of {args.trials} trials):")
    print(f"  median {med[0]:.2f} s, p95 {med[1]:.2f} s, all VENs by {med[2]:.2f} s")
    print(f"  all-by / poll interval: {med[2] / args.poll:.2f} (at most 1 + 0.5 s sync/poll "
          "if the VTN keeps up)")
    print(f"  baseline, {baseline_n} VENs all by {base_all:.2f} s: ratio "
          f"{med[2] / base_all:.2f}")
    print(f"  refusals at the VTN: {vtn.refusals or 'none'}")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    asyncio.run(main())
