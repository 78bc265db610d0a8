"""Controller against erab nodes and scripted peers on real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.echonet.controller import (
    CONTROLLER_EOJ,
    Answer,
    Controller,
    NoResponse,
    Notification,
    RequestTracker,
    expand_hosts,
    resolve_epc,
)
from erab.echonet.frame import EOJ, ESV, NODE_PROFILE, Frame, Property, decode_frame
from erab.echonet.node import Address, DeviceObject, LocalNode
from erab.echonet.transport import random_loopback_address

AIRCON = EOJ(0x01, 0x30, 0x01)


class RecordingNode(LocalNode):
    """A LocalNode that remembers every request it was sent."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.requests: list[Frame] = []

    def handle(self, data: bytes, source: Address) -> list[tuple[bytes, Address]]:
        frame = decode_frame(data)
        if isinstance(frame, Frame) and frame.esv.is_request:
            self.requests.append(frame)
        return super().handle(data, source)


async def started(node: LocalNode) -> str:
    host = random_loopback_address()
    await node.start(host)
    return host


@pytest.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller(random_loopback_address(), timeout_s=0.3, retries=1) as controller:
        yield controller


@pytest.fixture
async def aircon() -> AsyncIterator[tuple[str, RecordingNode]]:
    node = RecordingNode([DeviceObject(AIRCON, {0xB0: b"\x42", 0xB3: b"\x1a"})])
    host = await started(node)
    yield host, node
    await node.close()


# -- discovery ----------------------------------------------------------------------------


async def test_multicast_discovery_finds_node_with_objects_and_maps(ctl, aircon) -> None:
    host, node = aircon
    found = {n.host: n for n in await ctl.discover(wait_s=0.4)}
    assert host in found
    remote = found[host]
    assert remote.identification == node.identification
    assert remote.key == node.identification.hex()
    assert remote.manufacturer_code == node.manufacturer_code
    obj = remote.objects[AIRCON]
    assert obj.class_name == "Home air conditioner"
    assert {0x80, 0xB0, 0xB3} <= obj.get_map
    assert 0xB0 in obj.set_map and 0x82 not in obj.set_map
    assert 0xB0 in obj.announce_map


async def test_unicast_probe_of_a_subnet_finds_node(ctl, aircon) -> None:
    host, _ = aircon
    subnet = host.rsplit(".", 1)[0] + ".0/24"
    found = await ctl.discover(hosts=[subnet], multicast=False, describe=False)
    assert host in {n.host for n in found}


async def test_node_that_moves_address_stays_the_same_device(ctl) -> None:
    ident = bytes(range(13))
    first = LocalNode([DeviceObject(AIRCON)], identification=ident)
    old_host = await started(first)
    [before] = await ctl.discover(hosts=[old_host], multicast=False)
    await first.close()
    second = LocalNode([DeviceObject(AIRCON)], identification=ident)
    new_host = await started(second)
    try:
        [after] = await ctl.discover(hosts=[new_host], multicast=False)
        assert after.key == before.key
        assert ctl.host_of(before.key) == new_host
        assert [n.host for n in ctl.nodes.values() if n.key == before.key] == [new_host]
    finally:
        await second.close()


async def test_node_announcing_itself_is_discovered_without_probing(ctl) -> None:
    node = LocalNode([DeviceObject(0x027D01)])
    host = await started(node)  # announces 0xD5 by multicast at start
    try:
        await asyncio.sleep(0.2)
        found = await ctl.discover(multicast=False)
        assert host in {n.host for n in found}
    finally:
        await node.close()


async def test_a_search_narrowed_to_named_hosts_reports_only_those(ctl) -> None:
    node = LocalNode([DeviceObject(0x027D01)])
    await started(node)  # announces 0xD5 by multicast at start
    try:
        await asyncio.sleep(0.2)
        assert await ctl.discover(hosts=[random_loopback_address()], multicast=False) == []
    finally:
        await node.close()


def test_subnet_expansion_and_bad_host_messages() -> None:
    assert expand_hosts(["127.1.2.0/30", "127.9.9.9"]) == ["127.1.2.1", "127.1.2.2", "127.9.9.9"]
    with pytest.raises(ValueError, match="'nope' is not an IPv4 or IPv6 address"):
        expand_hosts(["nope"])
    with pytest.raises(ValueError, match="at most 65536"):
        expand_hosts(["10.0.0.0/8"])


# -- reading ------------------------------------------------------------------------------


async def test_get_decodes_typed_values_by_name_or_code(ctl, aircon) -> None:
    host, _ = aircon
    values = await ctl.get(host, AIRCON, ["operationMode", 0xB3, "0x80"])
    assert values == {0xB0: "cooling", 0xB3: 26, 0x80: "true"}


async def test_get_asks_only_for_offered_properties_once_maps_are_known(ctl, aircon) -> None:
    host, node = aircon
    await ctl.discover(hosts=[host], multicast=False)
    node.requests.clear()
    values = await ctl.get_raw(host, AIRCON, [0x80, 0xC0])
    assert values == {0x80: b"\x30"}
    assert [p.epc for p in node.requests[-1].props] == [0x80]


async def test_property_maps_are_read_first_then_only_offered_epcs_asked(ctl, aircon) -> None:
    host, node = aircon
    values = await ctl.get_raw(host, AIRCON, [0x80, 0xC0])
    assert values == {0x80: b"\x30"}
    asked = [[p.epc for p in r.props] for r in node.requests]
    assert asked == [[0x9F, 0x9E, 0x9D], [0x80]]
    await ctl.get_raw(host, AIRCON, [0xB0])
    assert [p.epc for p in node.requests[-1].props] == [0xB0]  # maps are kept
    assert len(node.requests) == 3


class TerseNode(RecordingNode):
    """Answers at most one property per request, as some small devices do."""

    def handle(self, data: bytes, source: Address) -> list[tuple[bytes, Address]]:
        out = []
        for reply, dest in super().handle(data, source):
            frame = decode_frame(reply)
            assert isinstance(frame, Frame)
            out.append((frame._replace(props=frame.props[:1]).encode(), dest))
        return out


async def test_short_answer_is_completed_by_further_requests(ctl) -> None:
    node = TerseNode([DeviceObject(AIRCON, {0xB0: b"\x43", 0xB3: b"\x14"})])
    host = await started(node)
    try:
        values = await ctl.get_raw(host, AIRCON, [0x80, 0xB0, 0xB3])
        assert values == {0x80: b"\x30", 0xB0: b"\x43", 0xB3: b"\x14"}
        # the maps were read first, in the same three steps; then the properties
        assert [len(r.props) for r in node.requests] == [3, 2, 1, 3, 2, 1]
    finally:
        await node.close()


class SilentPeer:
    """Receives requests and never answers."""

    def __init__(self) -> None:
        self.host = random_loopback_address()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # lets another stack listen on 0.0.0.0:3610 meanwhile, as ECHONET Lite stacks do
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 3610))
        self.sock.setblocking(False)

    def received(self) -> list[Frame]:
        frames = []
        while True:
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return frames
            frame = decode_frame(data)
            assert isinstance(frame, Frame)
            frames.append(frame)


async def test_unanswered_get_is_retried_a_bounded_number_of_times(ctl) -> None:
    peer = SilentPeer()
    try:
        with pytest.raises(NoResponse, match=f"no answer from {peer.host}"):
            await ctl.get_raw(peer.host, AIRCON, [0x80])
        assert [f.esv for f in peer.received()] == [ESV.Get, ESV.Get]  # 1 + retries=1
    finally:
        peer.sock.close()


async def test_unanswered_set_is_never_repeated(ctl) -> None:
    peer = SilentPeer()
    try:
        with pytest.raises(NoResponse):
            await ctl.set_raw(peer.host, AIRCON, {0x80: b"\x30"})
        assert [f.esv for f in peer.received()] == [ESV.SetC]
    finally:
        peer.sock.close()


async def test_requests_to_one_host_are_serialised(ctl) -> None:
    peer = SilentPeer()
    loop = asyncio.get_running_loop()
    in_flight: list[int] = []

    async def answer_slowly() -> None:
        for _ in range(3):
            data, source = await loop.sock_recvfrom(peer.sock, 2048)
            request = decode_frame(data)
            assert isinstance(request, Frame)
            in_flight.append(request.tid)
            await asyncio.sleep(0.05)
            # nothing else may have arrived while this request is open
            assert peer.received() == []
            reply = Frame(
                request.tid, AIRCON, request.seoj, ESV.Get_Res, (Property(0x80, b"\x30"),)
            )
            peer.sock.sendto(reply.encode(), source)

    server = asyncio.create_task(answer_slowly())
    try:
        results = await asyncio.gather(
            *(ctl.get_raw(peer.host, AIRCON, [0x80], maps_first=False) for _ in range(3))
        )
        await server
        assert results == [{0x80: b"\x30"}] * 3
        assert len(set(in_flight)) == 3
    finally:
        peer.sock.close()


# -- writing ------------------------------------------------------------------------------


async def test_set_typed_value_changes_the_device(ctl, aircon) -> None:
    host, node = aircon
    result = await ctl.set(host, AIRCON, {"operationMode": "heating", 0xB3: 22})
    assert result.ok and result.accepted == (0xB0, 0xB3)
    assert node.object(AIRCON).read(0xB0) == b"\x43"
    assert node.object(AIRCON).read(0xB3) == b"\x16"


async def test_set_refused_by_device_is_reported_per_property(ctl, aircon) -> None:
    host, _ = aircon
    result = await ctl.set_raw(host, AIRCON, {0xB0: b"\x44", 0x82: b"\x00\x00\x52\x00"})
    assert not result.ok
    assert result.accepted == (0xB0,) and result.rejected == (0x82,)


async def test_set_with_value_outside_the_codec_is_refused_before_sending(ctl, aircon) -> None:
    host, node = aircon
    node.requests.clear()
    with pytest.raises(ValueError):
        await ctl.set(host, AIRCON, {"operationMode": "frying"})
    assert node.requests == []


async def test_read_back_verification_catches_a_device_that_ignores_a_set(ctl) -> None:
    class StubbornAircon(DeviceObject):
        def on_get(self, epc: int) -> bytes | None:
            return b"\x42" if epc == 0xB0 else None  # always reports cooling

    node = LocalNode([StubbornAircon(AIRCON)])
    host = await started(node)
    try:
        result = await ctl.set_and_verify(host, AIRCON, {0xB0: "heating"})
        assert result.accepted == (0xB0,)
        assert result.verified == {0xB0: False}
        assert not result.ok
        good = await ctl.set_and_verify(host, AIRCON, {0xB0: "cooling"})
        assert good.ok and good.verified == {0xB0: True}
    finally:
        await node.close()


async def test_setget_writes_and_reads_in_one_exchange(ctl, aircon) -> None:
    host, node = aircon
    node.requests.clear()
    result, values = await ctl.setget(host, AIRCON, {0xB0: "dehumidification"}, [0xB0, 0x80])
    assert result.ok
    assert values == {0xB0: "dehumidification", 0x80: "true"}
    assert [r.esv for r in node.requests] == [ESV.SetGet]


# -- notifications ------------------------------------------------------------------------


async def test_inf_from_a_device_arrives_as_an_event_with_its_identity(ctl, aircon) -> None:
    host, node = aircon
    await ctl.discover(hosts=[host], multicast=False)
    queue = ctl.subscribe()
    node.object(AIRCON).update(0xB0, b"\x45")
    while True:
        note = await asyncio.wait_for(queue.get(), 2.0)
        if note.host == host and note.seoj == AIRCON:
            break
    assert note.esv is ESV.INF
    assert note.props == (Property(0xB0, b"\x45"),)
    assert note.node == node.identification.hex()
    ctl.unsubscribe(queue)


async def test_inf_req_is_answered_by_multicast_inf_every_controller_sees(ctl, aircon) -> None:
    # Part 2 §4.2.3.5: the INF answering an INF_REQ goes to all nodes; the asker still
    # matches it to its request (same TID, from the host and object asked)
    host, _ = aircon
    async with Controller(random_loopback_address(), timeout_s=0.5) as bystander:
        queue = bystander.subscribe()
        answer = await ctl.request(host, AIRCON, ESV.INF_REQ, [Property(0xB0)])
        assert answer.esv is ESV.INF and answer.props == (Property(0xB0, b"\x42"),)
        while True:
            note = await asyncio.wait_for(queue.get(), 2.0)
            if note.host == host and note.seoj == AIRCON:
                break
        assert note.esv is ESV.INF and note.tid == answer.tid
        assert note.props == (Property(0xB0, b"\x42"),)


async def test_a_controller_without_multicast_hears_no_announcement_but_gets_answers(
    ctl, aircon
) -> None:
    # many gateways on one loopback (erab gateway fleet) must not each hear every site
    host, node = aircon
    async with Controller(random_loopback_address(), timeout_s=0.5, multicast=False) as deaf:
        deaf_queue, queue = deaf.subscribe(), ctl.subscribe()
        assert (await deaf.get(host, AIRCON, [0x80])).get(0x80) is not None  # unicast answers
        node.object(AIRCON).update(0xB0, b"\x44")  # announced to the group
        while True:
            note = await asyncio.wait_for(queue.get(), 2.0)
            if note.host == host and note.seoj == AIRCON:
                break
        await asyncio.sleep(0.2)
        assert deaf_queue.empty()


async def test_infc_is_acknowledged_and_delivered(ctl) -> None:
    peer = SilentPeer()
    queue = ctl.subscribe()
    try:
        infc = Frame(0x77, AIRCON, NODE_PROFILE, ESV.INFC, (Property(0x80, b"\x31"),))
        assert ctl.address is not None
        peer.sock.sendto(infc.encode(), ctl.address)
        note = await asyncio.wait_for(queue.get(), 2.0)
        assert note.esv is ESV.INFC and note.props == (Property(0x80, b"\x31"),)
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(peer.sock, 2048), 2.0)
        ack = decode_frame(data)
        assert isinstance(ack, Frame)
        assert ack.esv is ESV.INFC_Res and ack.tid == 0x77
        assert ack.props == (Property(0x80),)
    finally:
        peer.sock.close()


async def test_controller_answers_get_of_its_own_node_profile(ctl) -> None:
    async with Controller(random_loopback_address(), timeout_s=0.5) as other:
        assert ctl.address is not None
        values = await other.get_raw(ctl.address[0], NODE_PROFILE, [0xD6])
        assert values[0xD6] == b"\x01\x05\xff\x01"


# -- sans-IO core -------------------------------------------------------------------------


def test_tracker_matches_answer_only_from_the_host_asked() -> None:
    tracker = RequestTracker()
    request = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80)])
    answer = Frame(request.tid, AIRCON, request.seoj, ESV.Get_Res, (Property(0x80, b"\x30"),))
    assert tracker.receive(answer.encode(), ("127.0.0.6", 3610)) is None
    assert tracker.receive(answer.encode(), ("127.0.0.5", 3610)) is not None


def test_tracker_treats_inf_with_a_colliding_tid_as_a_notification() -> None:
    tracker = RequestTracker()
    request = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80)])
    # a device's own announcement that happens to reuse our TID is not the answer
    inf = Frame(request.tid, NODE_PROFILE, NODE_PROFILE, ESV.INF, (Property(0xD5, b"\x00"),))
    assert isinstance(tracker.receive(inf.encode(), ("127.0.0.5", 3610)), Notification)


def test_cached_poll_request_is_the_same_frame_with_a_new_tid() -> None:
    tracker = RequestTracker()
    first_tid, _ = tracker.read_request("127.0.0.5", AIRCON, (0x80, 0xB0))
    second_tid, second = tracker.read_request("127.0.0.5", AIRCON, (0x80, 0xB0))
    assert second_tid != first_tid
    expected = Frame(second_tid, CONTROLLER_EOJ, AIRCON, ESV.Get, (Property(0x80), Property(0xB0)))
    assert decode_frame(second) == expected
    answer = Frame(second_tid, AIRCON, CONTROLLER_EOJ, ESV.Get_Res, (Property(0x80, b"\x30"),))
    assert isinstance(tracker.receive(answer.encode(), ("127.0.0.5", 3610)), Answer)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_tracker_never_raises_on_arbitrary_datagrams(data: bytes) -> None:
    tracker = RequestTracker()
    tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80)])
    item = tracker.receive(data, ("127.0.0.5", 3610))
    assert item is None or isinstance(item, Answer | Notification | Frame)


def test_property_names_resolve_and_unknown_names_are_explained() -> None:
    assert resolve_epc(AIRCON, "operationMode") == 0xB0
    assert resolve_epc(AIRCON, "b0") == 0xB0
    with pytest.raises(ValueError, match="not a property of Home air conditioner"):
        resolve_epc(AIRCON, "warpDrive")


# -- polling a fleet ----------------------------------------------------------------------


async def test_get_many_polls_every_object_and_reports_silent_ones(ctl) -> None:
    nodes = [
        LocalNode([DeviceObject(AIRCON, {0xB0: bytes([0x41 + i])}), DeviceObject(0x013002)])
        for i in range(3)
    ]
    hosts = [await started(node) for node in nodes]
    silent = SilentPeer()
    try:
        targets = [(h, AIRCON) for h in hosts] + [(hosts[0], 0x013002), (silent.host, AIRCON)]
        results = await ctl.get_many(targets, [0x80, 0xB0, 0xC0])
        for i, host in enumerate(hosts):
            assert results[(host, AIRCON)] == {0x80: b"\x30", 0xB0: bytes([0x41 + i])}
        assert results[(hosts[0], EOJ.of(0x013002))] == {0x80: b"\x30", 0xB0: b"\x42"}
        assert isinstance(results[(silent.host, AIRCON)], NoResponse)
    finally:
        silent.sock.close()
        for node in nodes:
            await node.close()


async def test_get_many_completes_short_answers(ctl) -> None:
    node = TerseNode([DeviceObject(AIRCON, {0xB0: b"\x43"})])
    host = await started(node)
    try:
        results = await ctl.get_many([(host, AIRCON)], [0x80, 0xB0])
        assert results == {(host, AIRCON): {0x80: b"\x30", 0xB0: b"\x43"}}
    finally:
        await node.close()
