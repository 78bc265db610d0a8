"""UDP transport on real loopback sockets: unicast, multicast, many nodes, IPv6."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from erab.echonet.frame import EOJ, ESV, NODE_PROFILE, Frame, Property, decode_frame
from erab.echonet.node import MULTICAST_V4, DeviceObject, LocalNode
from erab.echonet.propmap import decode_instance_list
from erab.echonet.transport import (
    TransportError,
    UdpEndpoint,
    check_bindable,
    interface_index,
    random_loopback_address,
)

CONTROLLER = EOJ(0x05, 0xFF, 0x01)


class Peer:
    """A plain UDP socket standing in for another node, bound to its own loopback address."""

    def __init__(self, *, multicast: bool = False) -> None:
        self.host = random_loopback_address()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # as any ECHONET Lite stack does: lets another one listen on 0.0.0.0:3610 meanwhile
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 3610))
        self.sock.setblocking(False)
        lo = struct.pack("=4s4si", bytes(4), bytes(4), socket.if_nametoindex("lo"))
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, lo)
        self.multicast_listener: socket.socket | None = None
        if multicast:
            listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((MULTICAST_V4, 3610))
            mreq = struct.pack(
                "=4s4si", socket.inet_aton(MULTICAST_V4), bytes(4), socket.if_nametoindex("lo")
            )
            listener.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            listener.setblocking(False)
            self.multicast_listener = listener

    def send(self, frame: Frame, destination: tuple[str, int]) -> None:
        self.sock.sendto(frame.encode(), destination)

    async def receive(self, timeout_s: float = 2.0, sock: socket.socket | None = None):
        loop = asyncio.get_running_loop()
        data, source = await asyncio.wait_for(
            loop.sock_recvfrom(sock or self.sock, 2048), timeout_s
        )
        return decode_frame(data), source

    async def receive_all(self, wait_s: float) -> list[tuple[Frame, tuple[str, int]]]:
        out = []
        try:
            while True:
                out.append(await self.receive(wait_s))
        except TimeoutError:
            return out

    def close(self) -> None:
        self.sock.close()
        if self.multicast_listener is not None:
            self.multicast_listener.close()


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


async def test_node_answers_unicast_get_from_its_own_address(peer: Peer) -> None:
    host = random_loopback_address()
    node = LocalNode([DeviceObject(0x013001, {0xB0: b"\x42"})])
    await node.start(host)
    try:
        peer.send(Frame(5, CONTROLLER, EOJ.of(0x013001), ESV.Get, (Property(0xB0),)), (host, 3610))
        frame, source = await peer.receive()
        assert source == (host, 3610)
        assert frame.esv is ESV.Get_Res and frame.tid == 5
        assert frame.props == (Property(0xB0, b"\x42"),)
    finally:
        await node.close()


async def test_node_announces_instance_list_by_multicast_at_start() -> None:
    listener = Peer(multicast=True)
    host = random_loopback_address()
    node = LocalNode([DeviceObject(0x027D01)])
    try:
        await node.start(host)
        deadline = asyncio.get_running_loop().time() + 2.0
        while True:  # other programs on this machine may multicast too: find ours
            frame, source = await listener.receive(sock=listener.multicast_listener)
            if source[0] == host:
                break
            assert asyncio.get_running_loop().time() < deadline
        assert frame.esv is ESV.INF and frame.seoj == NODE_PROFILE
        assert frame.props[0].epc == 0xD5
        assert decode_instance_list(frame.props[0].edt) == (EOJ(2, 0x7D, 1),)
    finally:
        await node.close()
        listener.close()


async def test_multicast_get_reaches_every_node_in_the_process(peer: Peer) -> None:
    hosts = [random_loopback_address() for _ in range(5)]
    nodes = [LocalNode([DeviceObject(0x013001)]) for _ in hosts]
    for node, host in zip(nodes, hosts, strict=True):
        await node.start(host)
    try:
        request = Frame(0x4242, CONTROLLER, NODE_PROFILE, ESV.Get, (Property(0xD6),))
        peer.send(request, (MULTICAST_V4, 3610))
        answers = await peer.receive_all(0.5)
        ours = {src[0] for frame, src in answers if frame.tid == 0x4242 and src[0] in hosts}
        assert ours == set(hosts)  # each node answered once, unicast, from its own address
        assert len([1 for f, s in answers if f.tid == 0x4242 and s[0] in hosts]) == len(hosts)
    finally:
        for node in nodes:
            await node.close()


async def test_announcement_of_a_change_is_multicast() -> None:
    listener = Peer(multicast=True)
    host = random_loopback_address()
    aircon = DeviceObject(0x013001, {0xB0: b"\x42"})
    node = LocalNode([aircon])
    await node.start(host)
    try:
        aircon.update(0xB0, b"\x43")
        seen = [
            frame
            for frame, source in await _drain(listener, listener.multicast_listener, 0.5)
            if source[0] == host and frame.seoj == EOJ(1, 0x30, 1)
        ]
        assert [f.props for f in seen] == [(Property(0xB0, b"\x43"),)]
    finally:
        await node.close()
        listener.close()


async def _drain(peer: Peer, sock, wait_s: float):
    out = []
    try:
        while True:
            out.append(await peer.receive(wait_s, sock=sock))
    except TimeoutError:
        return out


async def test_two_hundred_nodes_in_one_process_each_answer_at_own_address(peer: Peer) -> None:
    base = random_loopback_address().rsplit(".", 1)[0]
    hosts = [f"{base}.{i}" for i in range(1, 201)]
    nodes = []
    try:
        for host in hosts:
            node = LocalNode([DeviceObject(0x013001)])
            await node.start(host)
            nodes.append(node)
        for tid, host in enumerate(hosts):
            peer.send(
                Frame(tid, CONTROLLER, EOJ.of(0x013001), ESV.Get, (Property(0x80),)), (host, 3610)
            )
        answers = await peer.receive_all(0.5)
        assert {src[0] for _, src in answers} == set(hosts)
        assert all(f.esv is ESV.Get_Res for f, _ in answers)
    finally:
        for node in nodes:
            await node.close()


async def test_binding_an_address_in_use_says_so() -> None:
    host = random_loopback_address()
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    blocker.bind((host, 3610))
    try:
        with pytest.raises(TransportError, match=f"cannot bind UDP {host} port 3610.*in use"):
            await LocalNode().start(host)
    finally:
        blocker.close()


async def test_second_node_on_a_taken_address_is_refused() -> None:
    # both would set SO_REUSEADDR; Linux would then let both bind and give each unicast
    # datagram to only one of them
    host = random_loopback_address()
    first = LocalNode([DeviceObject(0x013001)])
    await first.start(host)
    try:
        with pytest.raises(TransportError, match=f"cannot bind UDP {host} port 3610.*in use"):
            await LocalNode([DeviceObject(0x027D01)]).start(host)
    finally:
        await first.close()


async def test_the_address_in_use_error_states_the_fact_and_gives_no_command_advice() -> None:
    host = random_loopback_address()
    first = LocalNode([DeviceObject(0x013001)])
    await first.start(host)
    try:
        with pytest.raises(TransportError) as info:
            await LocalNode([DeviceObject(0x027D01)]).start(host)
    finally:
        await first.close()
    assert info.value.address_in_use
    assert str(info.value) == (
        f"cannot bind UDP {host} port 3610: Address already in use "
        "(another socket is bound to that address and port)"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_check_bindable_refuses_an_address_a_node_holds() -> None:
    host = random_loopback_address()
    node = LocalNode([DeviceObject(0x013001)])
    await node.start(host)
    try:
        with pytest.raises(
            TransportError, match=f"cannot bind UDP {host} port 3610.*in use"
        ) as info:
            check_bindable(host, 3610)
    finally:
        await node.close()
    assert info.value.address_in_use


async def test_check_bindable_passes_a_free_address_and_does_not_hold_it() -> None:
    host = random_loopback_address()
    check_bindable(host, 3610)
    node = LocalNode([DeviceObject(0x013001)])
    await node.start(host)  # the check left nothing bound
    await node.close()


async def test_check_bindable_agrees_with_a_node_beside_a_wildcard_listener() -> None:
    port = _free_port()
    wildcard = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    wildcard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as other stacks do
    wildcard.bind(("0.0.0.0", port))
    host = random_loopback_address()
    endpoint = UdpEndpoint(lambda data, source: None)
    try:
        check_bindable(host, port)
        await endpoint.open(host, port=port, multicast=False)
        assert endpoint.address == (host, port)
    finally:
        await endpoint.close()
        wildcard.close()


def test_check_bindable_names_a_bad_port_and_a_bad_address() -> None:
    with pytest.raises(ValueError, match="UDP port must be 0-65535, got 70000"):
        check_bindable("127.0.0.1", 70000)
    with pytest.raises(ValueError, match="'localhost' is not an IPv4 or IPv6 address"):
        check_bindable("localhost", 3610)


def test_unknown_interface_is_named_in_the_error() -> None:
    with pytest.raises(TransportError, match="no network interface named 'nope0'"):
        interface_index("nope0")


def test_bind_address_must_be_an_ip_literal() -> None:
    async def open_bad() -> None:
        await UdpEndpoint(lambda d, s: None).open("not-an-address")

    with pytest.raises(ValueError, match="not an IPv4 or IPv6 address"):
        asyncio.run(open_bad())


def _ipv6_loopback_multicast_works() -> bool:
    """Whether a datagram sent to ff02::1 on lo comes back to a socket that joined the
    group there.  A successful sendto proves nothing: with an ff00::/8 route added to lo,
    Linux still drops the datagram (counted as Ip6OutNoRoutes)."""
    try:
        index = socket.if_nametoindex("lo")
        listener = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sender = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    except OSError:
        return False
    try:
        listener.bind(("ff02::1", 0, 0, index))
        group = socket.inet_pton(socket.AF_INET6, "ff02::1") + struct.pack("@I", index)
        listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group)
        listener.settimeout(0.2)
        sender.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sender.sendto(b"probe", ("ff02::1", listener.getsockname()[1], 0, index))
        return listener.recv(16) == b"probe"
    except OSError:
        return False
    finally:
        listener.close()
        sender.close()


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="this machine has no IPv6 loopback (::1)")
async def test_second_ipv6_node_on_a_taken_address_is_refused() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]  # ::1 is the only IPv6 loopback address: a free port
    first = LocalNode([DeviceObject(0x013001)])
    await first.start("::1", port=port)
    try:
        with pytest.raises(TransportError, match=f"cannot bind UDP ::1 port {port}.*in use"):
            await LocalNode([DeviceObject(0x027D01)]).start("::1", port=port)
    finally:
        await first.close()


@pytest.mark.skipif(not _ipv6_loopback_works(), reason="this machine has no IPv6 loopback (::1)")
async def test_ipv6_node_answers_get_over_loopback() -> None:
    node = LocalNode([DeviceObject(0x013001, {0xB0: b"\x41"})])
    # ::1 is the only IPv6 loopback address; a free port stands in for 3610 here
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    endpoint_multicast = _ipv6_loopback_multicast_works()
    from erab.echonet.transport import NodeEndpoint

    endpoint = NodeEndpoint(node)
    await endpoint.open("::1", port=port, multicast=endpoint_multicast)
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.bind(("::1", 0))
    client.setblocking(False)
    try:
        request = Frame(9, CONTROLLER, EOJ.of(0x013001), ESV.Get, (Property(0xB0),))
        client.sendto(request.encode(), ("::1", port))
        loop = asyncio.get_running_loop()
        data, source = await asyncio.wait_for(loop.sock_recvfrom(client, 2048), 2.0)
        assert source[0] == "::1" and source[1] == port
        assert decode_frame(data).props == (Property(0xB0, b"\x41"),)
    finally:
        client.close()
        await endpoint.close()


@pytest.mark.skipif(
    not _ipv6_loopback_multicast_works(),
    reason="lo does not carry IPv6 multicast here (Linux's lo does not, even with an ff00::/8 "
    "route; test_transport_netns.py covers ff02::1 over a veth link instead)",
)
async def test_ipv6_multicast_get_is_answered() -> None:
    node = LocalNode([DeviceObject(0x013001)])
    endpoint_port = 3610
    from erab.echonet.transport import NodeEndpoint

    endpoint = NodeEndpoint(node)
    await endpoint.open("::1", port=endpoint_port)
    client = UdpEndpoint(lambda d, s: received.append((d, s)))
    received: list = []
    await client.open("::1", port=0, multicast=False)
    try:
        request = Frame(3, CONTROLLER, NODE_PROFILE, ESV.Get, (Property(0xD6),))
        client.send(request.encode(), client.multicast_destination(endpoint_port))
        await asyncio.sleep(0.3)
        assert any(decode_frame(d).tid == 3 for d, _ in received)
    finally:
        await client.close()
        await endpoint.close()


async def test_a_failing_device_model_does_not_stop_the_node(peer: Peer) -> None:
    class Broken(DeviceObject):
        def on_get(self, epc: int) -> bytes | None:
            if epc == 0xB0:
                raise RuntimeError("model bug")
            return None

    host = random_loopback_address()
    node = LocalNode([Broken(0x013001)])
    await node.start(host)
    try:
        bad = Frame(1, CONTROLLER, EOJ.of(0x013001), ESV.Get, (Property(0xB0),))
        good = Frame(2, CONTROLLER, EOJ.of(0x013001), ESV.Get, (Property(0x80),))
        peer.send(bad, (host, 3610))
        peer.send(good, (host, 3610))
        frame, _ = await peer.receive()
        assert frame.tid == 2 and frame.props == (Property(0x80, b"\x30"),)
    finally:
        await node.close()
