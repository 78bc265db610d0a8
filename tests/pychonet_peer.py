"""pychonet (PyPI; the library behind Home Assistant's ECHONET Lite integration) as an
independent ECHONET Lite controller for interoperability tests.

pychonet binds one UDP socket to (address, 3610) and sends to port 3610 of each device, so
it gets its own random 127.x.y.z address here; its multicast goes out on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from pychonet import ECHONETAPIClient
from pychonet.lib.udpserver import UDPServer

from erab.echonet.transport import random_loopback_address


@asynccontextmanager
async def pychonet_client() -> AsyncIterator[Any]:
    """A quiet pychonet client on its own loopback address, closed afterwards."""
    server = UDPServer(local_ip="127.0.0.1")  # outgoing multicast on loopback
    server.run(random_loopback_address(), 3610, loop=asyncio.get_running_loop())
    client = ECHONETAPIClient(server=server)
    client._logger = lambda *args, **kwargs: None
    try:
        yield client
    finally:
        server.close()


async def discovered(api: Any, host: str, *, timeout_s: float = 3.0) -> dict[str, Any]:
    """Ask pychonet to discover ``host`` and wait until it has; its state for the host."""
    await api.discover(host)
    for _ in range(int(timeout_s / 0.05)):
        state: dict[str, Any] = api._state.get(host, {})
        if state.get("discovered"):
            return state
        await asyncio.sleep(0.05)
    raise AssertionError(f"pychonet did not discover {host}: {api._state.get(host)}")
