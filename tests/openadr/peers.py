"""Independent OpenADR 2.0b peers for the interop tests: plain openleadr programs, each run with
the venv's python in its own process; they print what happens as JSON lines on stdout."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

# A plain openleadr VTN: registers VEN "ven-1" by fingerprint, asks for every reported point
# each second, sends a LOAD_DISPATCH event, modifies it after the first answer, cancels it after
# the second, then sends a SIMPLE level 3 event. Prints registrations, opts, raw responses and
# reports.
OPENLEADR_VTN = r'''
import asyncio, json, sys, re
from datetime import datetime, timedelta, timezone
from functools import partial
from openleadr import OpenADRServer, enums, objects, hooks, utils

port, cert, key, ca, ven_fp = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
registered = {}

def say(**kw):
    print(json.dumps(kw, default=str), flush=True)

def ven_lookup(ven_id):
    if ven_id != "ven-1":
        return None
    return {"ven_id": "ven-1", "ven_name": "erab-ra", "fingerprint": ven_fp,
            "registration_id": registered.get("ven-1")}

def on_create_party_registration(info):
    if info.get("fingerprint") != ven_fp:
        say(what="refused", fingerprint=info.get("fingerprint"))
        return False
    registered["ven-1"] = "reg-1"
    say(what="registered", ven_name=info["ven_name"])
    asyncio.get_event_loop().call_later(0.5, send_first)
    return "ven-1", "reg-1"

def on_register_report(report):
    return [(rd["r_id"], partial(on_values, rd["r_id"]), timedelta(seconds=1))
            for rd in report["report_descriptions"]]

def on_values(r_id, values):
    say(what="report", r_id=r_id, values=[v for _, v in values])

async def raw(content):
    text = content.decode() if isinstance(content, bytes) else content
    if "oadrCreatedEvent" in text:
        for desc, event_id in re.findall(
                r"<ei:eventResponse>.*?<ei:responseDescription>([^<]*)</ei:responseDescription>"
                r".*?<ei:eventID>([^<]*)</ei:eventID>", text, re.S):
            say(what="description", event_id=event_id, description=desc)

hooks.register("before_parse", raw)
server = OpenADRServer(vtn_id="PLAIN-VTN", http_port=int(port), http_host="127.0.0.1",
                       http_cert=cert, http_key=key, http_ca_file=ca, ven_lookup=ven_lookup,
                       requested_poll_freq=timedelta(seconds=1), show_fingerprint=False,
                       verify_message_signatures=True)
server.add_handler("on_create_party_registration", on_create_party_registration)
server.add_handler("on_register_report", on_register_report)
answers = []

def signal(name, kind, value, measurement=None):
    start = datetime.now(timezone.utc) + timedelta(minutes=2)
    return start, objects.EventSignal(
        intervals=[objects.Interval(dtstart=start, duration=timedelta(minutes=30),
                                    signal_payload=value, uid=0)],
        signal_name=name, signal_type=kind, signal_id=utils.generate_id(),
        measurement=measurement)

def make_event(event_id, name, kind, value, measurement=None, modification=0):
    start, sig = signal(name, kind, value, measurement)
    return objects.Event(
        event_descriptor=objects.EventDescriptor(
            event_id=event_id, modification_number=modification, market_context="oadr://test",
            event_status="far", created_date_time=datetime.now(timezone.utc)),
        active_period=objects.ActivePeriod(dtstart=start, duration=timedelta(minutes=30)),
        event_signals=[sig], targets=[{"ven_id": "ven-1"}], response_required="always")

KW = objects.Measurement(name="powerReal", description="RealPower", unit="W", scale="k",
                         power_attributes=objects.PowerAttributes(hertz=50, voltage=100, ac=True))

def on_opt(ven_id, event_id, opt_type):
    answers.append((event_id, opt_type))
    say(what="opt", event_id=event_id, opt=opt_type, n=len(answers))
    loop = asyncio.get_event_loop()
    if len(answers) == 1:
        loop.call_later(0.3, modify)
    elif len(answers) == 2:
        loop.call_later(0.3, cancel)
    elif len(answers) == 3:
        loop.call_later(0.3, send_simple)

def send_first():
    server.add_raw_event("ven-1", make_event("evt-1", "LOAD_DISPATCH", "delta", -30.0, KW),
                         callback=on_opt)

def modify():
    # a modification: same event id, next modification number, new kW
    event = server.events["ven-1"][0]
    event.event_signals[0].intervals[0].signal_payload = -45.0
    event.event_descriptor.modification_number = 1
    server.event_callbacks["evt-1"] = (event, on_opt)
    server.events_updated["ven-1"] = True
    say(what="modified")

def cancel():
    server.cancel_event("ven-1", "evt-1")
    server.event_callbacks["evt-1"] = (server.events["ven-1"][0], on_opt)
    say(what="cancelled")

def send_simple():
    server.add_raw_event("ven-1", make_event("evt-2", "SIMPLE", "level", 3.0), callback=on_opt)

async def main():
    await server.run()
    say(what="ready")
    await asyncio.Event().wait()

asyncio.run(main())
'''

# A plain openleadr VEN: registers, opts in to every event, reports a constant 42 kW each
# second; prints every event it receives.
OPENLEADR_VEN = r'''
import asyncio, json, sys
from datetime import timedelta
from openleadr import OpenADRClient

url, cert, key, ca, name = sys.argv[1:6]

def say(**kw):
    print(json.dumps(kw, default=str), flush=True)

async def on_event(event):
    d = event["event_descriptor"]
    signal = event["event_signals"][0]
    say(what="event", event_id=d["event_id"], status=d["event_status"],
        modification=d["modification_number"], signal=signal["signal_name"],
        value=signal["intervals"][0]["signal_payload"])
    return "optIn"

async def main():
    client = OpenADRClient(ven_name=name, vtn_url=url, cert=cert, key=key, ca_file=ca,
                           show_fingerprint=False)
    client.add_handler("on_event", on_event)
    client.add_handler("on_update_event", on_event)
    client.add_report(callback=lambda: 42.0, resource_id="site", measurement="REAL_POWER",
                      unit="W", scale="k", r_id="fleet_kw", report_duration=timedelta(hours=1),
                      sampling_rate=timedelta(seconds=1))
    await client.run()
    say(what="registered", ven_id=client.ven_id, registration_id=client.registration_id)
    await asyncio.Event().wait()

asyncio.run(main())
'''


class Peer:
    """A peer program in its own process; its JSON lines arrive on a queue."""

    def __init__(self, name: str, source: str, args: list[str], workdir: Path) -> None:
        script = workdir / f"{name}.py"
        script.write_text(source)
        self.log = workdir / f"{name}.log"
        self.process = subprocess.Popen(
            [sys.executable, str(script), *args], stdout=subprocess.PIPE,
            stderr=self.log.open("w"), text=True)  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self.lines.put(json.loads(line))
            except ValueError:
                continue

    def wait_for(self, timeout_s: float = 20.0, **match: Any) -> dict[str, Any]:
        """The first line (seen or to come) whose fields include ``match``."""
        return self.wait_until(lambda line: match.items() <= line.items(), timeout_s, match)

    def wait_until(self, test: Any, timeout_s: float = 20.0,
                   what: Any = "a line") -> dict[str, Any]:  # fmt: skip
        """The first line (seen or to come) that passes ``test``."""
        for line in self.seen:
            if test(line):
                return line
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (self.process.poll() is not None and self.lines.empty()):
                tail = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise AssertionError(f"no {what} from the peer within {timeout_s} s; "
                                     f"saw {self.seen[-8:]}; its log ends:\n{tail}")
            try:
                line = self.lines.get(timeout=min(left, 0.2))
            except queue.Empty:
                continue
            self.seen.append(line)
            if test(line):
                return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
