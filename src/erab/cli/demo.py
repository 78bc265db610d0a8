"""``erab demo``: the whole virtual power plant on one machine, a scripted day, a dashboard.

docs/demo.md walks through what it starts and what to look at; :mod:`erab.sim.demo` does it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run a whole VPP town on this machine: a DR event, its settlement, a dashboard",
        description="One command on embedded defaults: a deployment (erab pki init), the "
        "broker, an emulated town, one gateway per site, the RA, an operator account and the "
        "console on http://127.0.0.1:8080; then a scripted day at an accelerated clock: the "
        "coordinator sends a tertiary-1 event (3 h), the RA dispatches it, gateways act, "
        "meters measure, the settlement is made and the report written. Ctrl-C stops "
        "everything. docs/demo.md.",
        epilog="example: erab demo --homes 20 --speed 600 --no-browser",
    )
    p.add_argument("--homes", type=int, default=50, help="homes in the town (default 50)")
    p.add_argument("--stores", type=int, default=3, help="stores in the town (default 3)")
    p.add_argument("--speed", type=float, default=120.0, metavar="X",
                   help="simulated seconds per real second (default 120: the 3-hour event "
                   "takes 90 s)")  # fmt: skip
    p.add_argument("--event", type=float, default=None, metavar="KW",
                   help="the event's target in kW, negative reduces demand (default: half "
                   "the fleet's down flexibility for the window, downwards)")  # fmt: skip
    p.add_argument("--home", type=Path, default=None,
                   help="deployment home to create (default: a fresh temporary folder)")
    p.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                   help="where the console and REST API listen (default 127.0.0.1:8080; port "
                   "0: any free port)")  # fmt: skip
    p.add_argument("--base", default="127.1.0.1",
                   help="loopback address of the town's first site (default 127.1.0.1)")
    p.add_argument("--bind-base", default="127.3.0.1",
                   help="loopback address of the first gateway (default 127.3.0.1)")
    p.add_argument("--start", default="23:30", metavar="HH:MM",
                   help="JST time of day the simulated day starts at, its next occurrence "
                   "(default 23:30: batteries charge at night and can give it up), or now")
    p.add_argument("--coordinator", choices=("openadr", "direct"), default="openadr",
                   help="how the aggregation coordinator sends the event: over OpenADR 2.0b "
                   "(its VTN, the RA's VEN; default) or by calling the RA directly")
    p.add_argument("--no-browser", action="store_true",
                   help="do not open the console in a browser")  # fmt: skip
    p.add_argument("--keep", action="store_true",
                   help="after the day, keep everything running for exploration until Ctrl-C")
    p.add_argument("--json", action="store_true",
                   help="print progress and the result as JSON lines instead of a live view")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import logging
    import signal
    import webbrowser

    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from erab.cli import CliError
    from erab.cli.web import parse_listen
    from erab.sim.coordinator import CoordinatorError
    from erab.sim.demo import DEMO_OPERATOR, Demo, DemoError, DemoProgress, DemoSettings

    try:
        settings = DemoSettings(
            homes=args.homes, stores=args.stores, speed=args.speed, event_kw=args.event,
            home=args.home, listen=parse_listen(args.listen), base=args.base,
            bind_base=args.bind_base, coordinator=args.coordinator, start_at=args.start,
        )  # fmt: skip
        settings.check()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.home is not None and args.home.exists() and any(args.home.iterdir()):
        raise CliError(f"--home {args.home} is not empty: the demo makes a fresh deployment")
    # asyncio's note about TLS connections closed at shutdown is no news to the user
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    err = Console(stderr=True)
    out = Console()

    def phase(name: str, detail: str) -> None:
        if args.json:
            print(json.dumps({"phase": name, "detail": detail}), flush=True)
        else:
            err.print(f"[bold]{name}[/bold] {detail}")

    demo = Demo(settings, on_phase=phase)

    def view(p: DemoProgress) -> Table:
        table = Table(title="erab demo", show_header=False, box=None)
        table.add_row("phase", p.phase)
        table.add_row("simulated time", p.sim_time)
        table.add_row("resources online", str(p.resources_online))
        table.add_row("fleet kW", f"{p.fleet_kw:.1f}" if p.fleet_kw is not None else "—")
        if p.event_id is not None:
            table.add_row("event", f"{p.event_id} ({p.stage})")
            table.add_row("target kW", f"{p.target_kw:+.1f}")
            table.add_row("delivered kW",
                          "—" if p.delivered_kw is None else f"{p.delivered_kw:.1f}")
            table.add_row("acknowledged", f"{p.acknowledged} / {p.commands}, refused "
                          f"{p.refused}")  # fmt: skip
        return table

    async def main() -> dict[str, Any] | None:
        loop = asyncio.get_running_loop()
        interrupted = asyncio.Event()

        def on_signal() -> None:
            interrupted.set()
            if demo.parts is not None:
                demo.parts.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        result = None
        try:
            starting = asyncio.create_task(demo.start())
            waiter = asyncio.create_task(interrupted.wait())
            await asyncio.wait([starting, waiter], return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if interrupted.is_set():
                starting.cancel()
                await asyncio.gather(starting, return_exceptions=True)
                return None
            starting.result()
            url = demo.console_url
            if args.json:
                print(json.dumps({"console": url, "login": DEMO_OPERATOR,
                                  "password": demo.password, "home": str(demo.parts.home
                                                                          if demo.parts else "")}),
                      flush=True)  # fmt: skip
            else:
                err.print(f"\n[bold green]console[/] {url}  login [bold]{DEMO_OPERATOR}[/] "
                          f"password [bold]{demo.password}[/] (admin, one-time: the console "
                          "asks you to choose your own at the first login)\n")
            if not args.no_browser:
                await asyncio.to_thread(webbrowser.open, url)
            if args.json or not err.is_terminal:
                last = [0.0]

                def report(p: DemoProgress) -> None:
                    now = loop.time()
                    if args.json and now - last[0] >= 1.0:
                        print(json.dumps(p.__dict__), flush=True)
                        last[0] = now
                    elif not args.json and now - last[0] >= 5.0:
                        err.print(f"{p.sim_time} {p.phase}: fleet {p.fleet_kw} kW"
                                  + (f", target {p.target_kw:+g}, delivered {p.delivered_kw}, "
                                     f"acks {p.acknowledged}/{p.commands}"
                                     if p.event_id else ""))  # fmt: skip
                        last[0] = now

                result = await demo.run_day(report)
            else:
                with Live(console=err, refresh_per_second=4) as live:
                    result = await demo.run_day(lambda p: live.update(view(p)))
            if result is not None and args.keep and not interrupted.is_set():
                err.print(f"--keep: still running on {url}; Ctrl-C stops everything")
                assert demo.parts is not None
                await demo.parts.stop.wait()
            return result
        finally:
            await demo.close()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        result = asyncio.run(main())
    except CoordinatorError as exc:
        raise CliError(f"{exc} (the event's time of day: --start; its size: --event)") from None
    except (DemoError, OSError) as exc:
        raise CliError(str(exc)) from None
    if result is None:
        print("erab: demo stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"result": result}), flush=True)
    else:
        ratio = result.get("ratio")
        out.print(f"event {result['event_id']}: target {result['target_kw']:+g} kW, delivered "
                  f"{result['delivered_kw']} kW"
                  + (f" ({ratio * 100:.0f} % of the target)" if ratio is not None else "")
                  + f"; report {result['report']}")  # fmt: skip
        engine = result.get("settlement_engine")
        if engine is None:
            out.print("(the settlement engine is not installed: the report holds erab demo's own "
                      "target-against-delivered summary)")
        elif "error" in engine:
            out.print(f"the settlement engine could not settle it: {engine['error']}")
        else:
            s = engine["summary"]
            out.print(f"settlement (meter data, {s.get('customers')} customers): delivered "
                      f"{s.get('delivered_kwh', 0):.2f} kWh of {s.get('committed_kwh', 0):.2f} "
                      f"committed; product checks "
                      f"{'passed' if s.get('checks_passed') else 'failed'}; report "
                      f"{Path(engine['files'][0]).parent}")
    return 0
