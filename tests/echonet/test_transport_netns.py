"""ECHONET Lite over networks of the test's own: Linux network namespaces.

Each test makes its own namespaces (so nothing it sends can reach the machine's other
programs or leave the machine), runs erab and its peers inside them through
``ip netns exec``, and deletes the namespaces whatever happens.  Needs root and iproute2
(skipped with the reason where either is missing).

* IPv6 multicast: Linux's ``lo`` does not carry IPv6 multicast, even with an ``ff00::/8``
  route added to it (on kernel 6.18 the datagrams are dropped and counted as
  Ip6OutNoRoutes), so two namespaces joined by a veth pair stand for a LAN: a node in one,
  a controller in the other, each bound to its own address and naming its interface, as
  on a real home network.
* pychonet (the library behind Home Assistant's ECHONET Lite integration) listens the way
  Home Assistant runs it, on 0.0.0.0:3610 and the group 224.0.23.0: a namespace gives it
  port 3610 on every address without meeting other programs of this machine.
"""

from __future__ import annotations

import json
import os
import secrets
import selectors
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator

import pytest

from tests.requires import missing, peer

NODE_V6 = "fd00:e7ab::51"
CONTROLLER_V6 = "fd00:e7ab::2"


class NamespaceError(RuntimeError):
    """An ``ip`` command failed (its stderr is the message)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if done.returncode != 0:
        raise NamespaceError(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


def _namespaces_unavailable() -> str | None:
    if not sys.platform.startswith("linux"):
        return "network namespaces are a Linux feature"
    if shutil.which("ip") is None:
        return "iproute2's `ip` command is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces (`ip netns add`) needs root"
    return None


class Namespaces:
    """Namespaces and the processes run in them; :meth:`close` stops and deletes all."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []

    def add(self) -> str:
        name = f"erab-test-{os.getpid()}-{secrets.token_hex(3)}"
        _ip("netns", "add", name)
        self.names.append(name)
        # no duplicate address detection: a fresh link's addresses work at once, instead
        # of after the two seconds DAD keeps its link-local address tentative
        _sysctl = ["ip", "netns", "exec", name, "sysctl", "-qw"]
        for key in ("net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0"):
            subprocess.run([*_sysctl, key], capture_output=True, timeout=20, check=True)
        _ip("-n", name, "link", "set", "lo", "up")
        return name

    def command(self, name: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", name, sys.executable, *argv]

    def start(self, name: str, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.command(name, *argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.processes.append(proc)
        return proc

    def run(self, name: str, *argv: str, timeout_s: float = 60) -> str:
        done = subprocess.run(
            self.command(name, *argv), capture_output=True, text=True, timeout=timeout_s
        )
        assert done.returncode == 0, f"{argv} exited {done.returncode}: {done.stderr}"
        return done.stdout

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        for name in self.names:
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)


@pytest.fixture
def namespaces() -> Iterator[Callable[[], str]]:
    """A factory of fresh namespaces (``lo`` up), all deleted after the test."""
    reason = _namespaces_unavailable()
    if reason is not None:
        missing(reason)
    made = Namespaces()

    def add() -> str:
        try:
            return made.add()
        except NamespaceError as exc:
            missing(f"cannot create a network namespace here: {exc}")

    add.made = made  # type: ignore[attr-defined]
    try:
        yield add
    finally:
        made.close()
        leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        assert not any(n in leftover.stdout for n in made.names), "namespace not deleted"


def _wait_for_multicast_route(name: str, device: str, timeout_s: float = 5) -> None:
    """Wait until the kernel routes ff00::/8 on ``device``: it adds that route once the
    link is operationally up (for veth, up to a second after both ends are set up), and
    multicast sent before then fails with "network is unreachable"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        routes = subprocess.run(
            ["ip", "-n", name, "-6", "route", "show", "table", "local", "dev", device],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        if "ff00::/8" in routes.stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"{device} in {name} got no IPv6 multicast route in {timeout_s} s")


def _first_line(proc: subprocess.Popen[str], timeout_s: float = 30) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout_s):
            raise AssertionError(f"no output within {timeout_s} s from {proc.args}")
    line = proc.stdout.readline()
    assert line, f"{proc.args} ended early: {proc.stderr.read() if proc.stderr else ''}"
    return line


def test_controller_discovers_a_node_by_ipv6_multicast_across_a_link(namespaces) -> None:
    made: Namespaces = namespaces.made
    device_side, controller_side = namespaces(), namespaces()
    # a veth pair is a two-port LAN: erab0 on the device side, erab1 on the controller side
    _ip("-n", device_side, "link", "add", "erab0", "type", "veth", "peer", "name", "erab1",
        "netns", controller_side)  # fmt: skip
    _ip("-n", device_side, "-6", "addr", "add", f"{NODE_V6}/64", "dev", "erab0", "nodad")
    _ip("-n", controller_side, "-6", "addr", "add", f"{CONTROLLER_V6}/64", "dev", "erab1", "nodad")
    _ip("-n", device_side, "link", "set", "erab0", "up")
    _ip("-n", controller_side, "link", "set", "erab1", "up")
    _wait_for_multicast_route(device_side, "erab0")
    _wait_for_multicast_route(controller_side, "erab1")

    serve = made.start(
        device_side, "-m", "erab", "el", "serve", "--bind", NODE_V6, "--iface", "erab0",
        "--class", "0x0130", "--class", "storageBattery", "--json",
    )  # fmt: skip
    served = json.loads(_first_line(serve))
    # no --host: the node can only be found by the multicast Get of 0xD6 to ff02::1
    discover = ["-m", "erab", "el", "discover", "--bind", CONTROLLER_V6, "--iface", "erab1"]
    found = json.loads(made.run(controller_side, *discover, "--wait", "1", "--json"))

    assert [n["host"] for n in found] == [NODE_V6]
    node = found[0]
    assert node["identification"] == served["identification"]
    assert node["manufacturer_code"] == "0xFFFFFF"
    objects = {o["eoj"]: o for o in node["objects"]}
    assert {e: o["class"] for e, o in objects.items()} == {
        "0x013001": "Home air conditioner",
        "0x027D01": "Storage battery",
    }
    assert "0xB0" in objects["0x013001"]["set"]  # the maps were read over IPv6 too
    assert "0xDA" in objects["0x027D01"]["set"]


PYCHONET_LISTENER = textwrap.dedent(
    """
    import asyncio, json
    from pychonet import ECHONETAPIClient
    from pychonet.lib.udpserver import UDPServer
    from erab.echonet.node import DeviceObject, LocalNode

    HOST = "127.0.0.51"

    async def until(condition, what):
        for _ in range(100):
            if condition():
                return
            await asyncio.sleep(0.05)
        raise SystemExit(f"pychonet did not {what} within 5 s")

    async def main():
        # pychonet as Home Assistant runs it: every address, port 3610, group on lo
        server = UDPServer(local_ip="127.0.0.1")
        server.run("0.0.0.0", 3610, loop=asyncio.get_running_loop())
        api = ECHONETAPIClient(server=server)
        api._logger = lambda *args, **kwargs: None
        announced = []

        async def on_new_host(host):
            announced.append(host)

        api._discover_callback = on_new_host
        aircon = DeviceObject(0x013001, {0xB0: b"\\x42"})
        node = LocalNode([aircon])
        await node.start(HOST)  # announces its instance list (0xD5) by multicast
        await until(lambda: HOST in announced, "hear the start-up announcement")
        api._discover_callback = None
        await api.discover(HOST)
        await until(lambda: api._state.get(HOST, {}).get("discovered"), "discover the node")
        pushes = []

        async def on_update(is_push):
            pushes.append(is_push)

        api.register_async_update_callbacks(HOST, 0x01, 0x30, 0x01, on_update)
        aircon.update(0xB0, b"\\x43")  # a status change: INF to all nodes
        await until(lambda: pushes, "hear the status change announcement")
        state = api._state[HOST]["instances"][0x01][0x30][0x01]
        print(json.dumps({"announced": announced, "pushes": pushes, "0xB0": state[0xB0].hex()}))
        await node.close()
        server.close()

    asyncio.run(main())
    """
)


def test_pychonet_hears_erab_announcements_by_multicast(namespaces) -> None:
    peer("pychonet")
    made: Namespaces = namespaces.made
    lan = namespaces()
    heard = json.loads(made.run(lan, "-c", PYCHONET_LISTENER))
    # the instance-list INF at start made pychonet aware of a node it never asked for
    assert heard["announced"] == ["127.0.0.51"]
    # the operation-mode INF reached pychonet as a push and updated its state: heating
    assert heard["pushes"] == [True]
    assert heard["0xB0"] == "43"
