"""``erab ra serve``: run the resource aggregator on a deployment home.

Ingest from the broker into the registry's store and the live fleet state, events planned in
merit order from that state's flexibility, signed commands to the gateways until acknowledged.
Until the REST API lands (issue 11), an event is given on the command line (``--event-kw``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any


def register_serve(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the RA: ingest, live state, events, dispatch, signed commands",
        description="Run the resource aggregator on a deployment home (erab pki init; a broker "
        "from erab broker run; a registry from erab ra import). Prints the fleet every 10 s; "
        "Ctrl-C stops. docs/aggregator.md.",
        epilog="example: erab ra serve --home H --event-kw -5 --event-minutes 60",
    )
    p.add_argument("--home", type=Path, default=None,
                   help="deployment home (default: $ERAB_HOME or ./erab-data)")  # fmt: skip
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop after this many seconds (default: run until Ctrl-C)")  # fmt: skip
    p.add_argument("--event-kw", type=float, default=None, metavar="KW",
                   help="create one event once telemetry has come in: negative reduces the "
                   "fleet's demand, positive raises it")  # fmt: skip
    p.add_argument("--event-start", default=None, metavar="TIME",
                   help="the event's start, ISO 8601 with a zone (default: at once)")
    p.add_argument("--event-minutes", type=float, default=60.0, metavar="MINUTES",
                   help="the event's duration (default 60)")  # fmt: skip
    p.add_argument("--settle", type=float, default=20.0, metavar="SECONDS",
                   help="wait at least this long, and for telemetry, before the event "
                   "(default 20)")  # fmt: skip
    p.add_argument("--api", default="127.0.0.1:8090", metavar="HOST:PORT",
                   help="serve the REST API here (operator tokens; OpenAPI at /docs; default "
                   "127.0.0.1:8090, loopback only); 'off' serves none")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print status lines as JSON")
    from erab.cli.ra import add_serve_options

    add_serve_options(p)  # --worker, --store, alert thresholds, --api-tls
    from erab.cli.ac import add_ven_flags

    add_ven_flags(p)  # --vtn URL: the RA's OpenADR 2.0b VEN (docs/openadr.md)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from erab.aggregator.events import EventError, EventRequest
    from erab.aggregator.service import RaService, RaServiceError
    from erab.cli import CliError
    from erab.settings import Settings

    home: Path = args.home if args.home is not None else Settings.from_env().home
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be more than 0 seconds, got {args.duration:g}")
    start = None
    if args.event_start is not None:
        try:
            start = datetime.fromisoformat(args.event_start)
        except ValueError:
            raise CliError(f"--event-start {args.event_start!r} is not an ISO 8601 time") from None
        if start.tzinfo is None:
            raise CliError(f"--event-start {args.event_start!r} needs a zone, e.g. +09:00")
    from erab.cli.ra import api_tls_files, cmd_worker, service_options

    if args.worker:
        return cmd_worker(args, home)
    try:
        ra = RaService(home, **service_options(args))
    except RaServiceError as exc:
        raise CliError(str(exc)) from None
    api: tuple[str, int] | None = None
    if args.api != "off":
        host, sep, port = str(args.api).rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise CliError(f"--api {args.api!r}: give HOST:PORT, e.g. 127.0.0.1:8090, or off")
        api = (host, int(port))
    tls = api_tls_files(home, api[0]) if api is not None and args.api_tls else None

    def report(extra: dict[str, Any]) -> None:
        status = {**ra.fleet_summary(), **extra}
        if ra.fanout is not None:
            status["commands"] = ra.fanout.summary()
        if args.json:
            print(json.dumps(status), flush=True)
        else:
            print(", ".join(f"{k} {v}" for k, v in status.items()), file=sys.stderr, flush=True)

    async def main() -> None:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        task = asyncio.create_task(ra.run(stop, ready=ready))
        from erab.cli.ac import start_ven

        ven_task = start_ven(ra, args, home, stop) if args.vtn else None
        server = None
        if api is not None:
            import uvicorn

            from erab.aggregator.api import create_app
            from erab.security import SecurityHome
            from erab.security.operators import OperatorDirectory

            security = SecurityHome(home)
            operators = OperatorDirectory(security.operators_db, ra.clock, ra.audit)
            server = uvicorn.Server(uvicorn.Config(
                create_app(ra, operators, audit=ra.audit), host=api[0], port=api[1],
                log_level="warning", lifespan="off",
                ssl_certfile=None if tls is None else str(tls[0]),
                ssl_keyfile=None if tls is None else str(tls[1]),
            ))  # fmt: skip
            api_task = asyncio.create_task(server.serve())
            scheme = "http" if tls is None else "https"
            print(f"REST API on {scheme}://{api[0]}:{api[1]} (OpenAPI at /docs)", file=sys.stderr)
        began = loop.time()
        event_done = args.event_kw is None
        try:
            while not stop.is_set() and not task.done():
                await asyncio.wait([task], timeout=min(10.0, args.settle, args.duration or 10.0))
                report({})
                settled = loop.time() - began >= args.settle and bool(ra.state.online.any())
                if not event_done and ready.is_set() and settled:
                    event_done = True
                    request = EventRequest(args.event_kw, start or ra.clock.now(),
                                           timedelta(minutes=args.event_minutes),
                                           source="cli", requested_by="cli")  # fmt: skip
                    try:
                        event = await ra.create_event(request)
                    except EventError as exc:
                        print(f"erab: event refused: {exc}", file=sys.stderr)
                    else:
                        print(json.dumps(event.as_dict()) if args.json else
                              f"event {event.event_id}: {args.event_kw:+g} kW, "
                              f"{len(ra.plans[event.event_id].commands)} commands, shortfall "
                              f"{event.shortfall_kw:g} kW" + "".join(
                                  f"; {w}" for w in event.warnings), flush=True)  # fmt: skip
                if args.duration is not None and loop.time() - began >= args.duration:
                    stop.set()
        finally:
            stop.set()
            if server is not None:
                server.should_exit = True
                await asyncio.gather(api_task, return_exceptions=True)
            await asyncio.gather(task, *[t for t in (ven_task,) if t is not None],
                                 return_exceptions=True)
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise CliError(f"the RA stopped: {task.exception()}")

    asyncio.run(main())
    return 0
