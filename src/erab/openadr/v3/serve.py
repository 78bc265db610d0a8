"""Run the OpenADR 3 VTN on its own: in a thread of this process (tests, benchmarks) or as
``python -m erab.openadr.v3`` (loopback by default).  ``erab ac serve`` mounts the same app.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from erab.openadr.v3.app import PREFIX_3_1, build_server
from erab.openadr.v3.auth import ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.store import ObjectStore


@dataclass
class RunningVtn:
    """A VTN served by uvicorn on ``url`` from a background thread; :meth:`stop` ends it."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            raise RuntimeError(f"the VTN at {self.url} did not stop within {timeout_s} s")


def start_in_thread(app: FastAPI, *, host: str = "127.0.0.1", port: int = 0) -> RunningVtn:
    """Serve ``app`` on ``host:port`` (an ephemeral port by default) until stopped."""
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the VTN could not start on {host}:{port}")
        threading.Event().wait(0.01)
    bound = server.servers[0].sockets[0].getsockname()
    return RunningVtn(f"http://{host}:{bound[1]}", server, thread)


STORE_FILE = "openadr3.sqlite"
KEY_FILE = "openadr3-token.key"


def app_for_home(home: Path, **kwargs: Any) -> FastAPI:
    """The VTN app of a state folder: its store ``openadr3.sqlite`` and token key
    ``openadr3-token.key`` (made on first use, owner-only), ``kwargs`` as for
    :func:`~erab.openadr.v3.app.build_server`: 3.0.1 at the root, 3.1.0 under
    ``/openadr3/3.1.0``.  What ``erab ac serve`` serves."""
    home.mkdir(parents=True, exist_ok=True)
    store = ObjectStore(home / STORE_FILE)
    (home / STORE_FILE).chmod(0o600)  # it holds the clients' secret hashes
    return build_server(store, TokenIssuer.from_key_file(home / KEY_FILE), **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m erab.openadr.v3",
        description="Serve the OpenADR 3 VTN REST API: 3.0.1 at the root, 3.1.0 under "
        f"{PREFIX_3_1}.",
    )
    parser.add_argument("--home", type=Path, required=True, help="state folder (store, token key)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (loopback default)")
    parser.add_argument("--port", type=int, default=8093, help="TCP port (default 8093)")
    parser.add_argument(
        "--add-client",
        action="append",
        default=[],
        metavar="ID:ROLE[:VEN]",
        help="register a client (ROLE bl or ven; a ven client names its venName) and print "
        "its secret; repeatable",
    )
    args = parser.parse_args(argv)
    os.umask(0o077)  # the store holds the clients' secret hashes, the key signs tokens
    app = app_for_home(args.home)
    registry: ClientRegistry = app.state.clients
    for spec in args.add_client:
        client_id, _, rest = spec.partition(":")
        role, _, ven = rest.partition(":")
        try:
            secret = registry.register(client_id, Role(role), ven_name=ven or None)
        except ValueError as exc:
            parser.error(f"--add-client {spec}: {exc} (roles: bl, ven)")
        print(f"{client_id} {secret}")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
