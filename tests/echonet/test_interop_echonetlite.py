"""erab's Controller against an independent device implementation: `echonetlite` (PyPI,
Keiichi Shima, Twisted-based).

The device runs in a subprocess (Twisted's reactor owns its process) on a random loopback
address.  Two settings keep it on loopback: its sender socket is bound to the node's own
address (through the adapter hook ``Monitor.start`` offers), and its debug shell (TCP 3611 on
every interface, by default) is put on an ephemeral port of that address.

Found while writing this: echonetlite 0.1.1 does not echo the request's TID in its answers
and stays silent when it has none of the properties asked; the Controller copes with both.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import AsyncIterator

import pytest

from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.echonet.transport import random_loopback_address
from tests.requires import peer

peer("echonetlite")
peer("twisted")

THERMOMETER = EOJ(0x00, 0x11, 0x01)

DEVICE = textwrap.dedent(
    """
    import sys, types
    from twisted.internet import reactor
    from echonetlite import ipv4adapter, middleware
    from echonetlite.interfaces import monitor
    from echonetlite.protocol import EOJ

    HOST = sys.argv[1]

    class BoundSender(ipv4adapter.Sender):
        def __init__(self, local_addr):
            super().__init__(local_addr)
            self.socket.bind((local_addr, 0))

    _listen_tcp = reactor.listenTCP
    reactor.listenTCP = lambda port, factory, **kw: _listen_tcp(0, factory, interface=HOST)

    class Thermometer(middleware.NodeSuperObject):
        def __init__(self, eoj):
            super().__init__(eoj=eoj)
            self._add_property(0xE0, [0x00, 0xEA])  # 23.4 degC
            self.get_property_map += [0xE0]
            self.set_property_map += [0x81]

    adapter = types.SimpleNamespace(
        Sender=BoundSender, Receiver=ipv4adapter.Receiver, echonet_lite_port=3610
    )
    profile = middleware.NodeProfile()
    thermometer = Thermometer(EOJ(0x00, 0x11, 0x01))
    reactor.callWhenRunning(lambda: print("ready", flush=True))
    monitor.start(HOST, {str(profile.eoj): profile, str(thermometer.eoj): thermometer},
                  adapter=adapter)
    """
)


@pytest.fixture
async def echonetlite_device() -> AsyncIterator[str]:
    host = random_loopback_address()
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", DEVICE, host], stdout=subprocess.PIPE, stderr=errors, text=True
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
            if line.strip() != "ready":
                proc.wait(10)
                errors.seek(0)
                raise AssertionError(f"echonetlite device did not start: {errors.read()[-2000:]}")
            yield host
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller(random_loopback_address(), timeout_s=0.5, retries=1) as controller:
        yield controller


async def test_controller_discovers_echonetlite_node_by_multicast(ctl, echonetlite_device) -> None:
    found = {n.host: n for n in await ctl.discover(wait_s=0.6)}
    assert echonetlite_device in found
    node = found[echonetlite_device]
    assert node.identification is not None and node.identification[0] == 0xFE
    thermometer = node.objects[THERMOMETER]
    assert thermometer.class_name == "Temperature sensor"
    assert 0xE0 in thermometer.get_map and thermometer.set_map == {0x81}


async def test_controller_reads_typed_temperature_from_echonetlite(ctl, echonetlite_device) -> None:
    values = await ctl.get(echonetlite_device, THERMOMETER, ["0xE0", 0x80])
    assert values[0xE0] == pytest.approx(23.4)
    assert 0x80 in values


async def test_controller_sets_and_verifies_on_echonetlite(ctl, echonetlite_device) -> None:
    result = await ctl.set_and_verify(echonetlite_device, THERMOMETER, {0x81: b"\x08"})
    assert result.ok and result.verified == {0x81: True}


async def test_partial_answer_from_echonetlite_keeps_what_it_gave(ctl, echonetlite_device) -> None:
    # 0xE1 is not hosted: echonetlite leaves it out, then stays silent when asked again
    values = await ctl.get_raw(echonetlite_device, THERMOMETER, [0xE0, 0xE1])
    assert values == {0xE0: b"\x00\xea"}
