"""The controller against devices that answer late, twice, with random TIDs, not at all
for some objects, with a malformed property map, or that flood it with notifications."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator

import pytest

from erab.echonet.controller import (
    NO_ANSWER,
    NO_PROPERTY_MAP,
    OK,
    Answer,
    Controller,
    RequestTracker,
)
from erab.echonet.describe import FrameView, describe_frame
from erab.echonet.frame import EOJ, ESV, NODE_PROFILE, Frame, Property
from erab.echonet.node import DeviceObject
from erab.echonet.transport import random_loopback_address

from .misbehaving import MisbehavingDevice, spoil_get_map

AIRCON = EOJ(0x01, 0x30, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)
METER = EOJ(0x02, 0x88, 0x01)


def aircon() -> DeviceObject:
    return DeviceObject(AIRCON, {0xB0: b"\x42", 0xB3: b"\x1a"})


@pytest.fixture
async def ctl() -> AsyncIterator[Controller]:
    async with Controller(random_loopback_address(), timeout_s=0.6, retries=2) as controller:
        yield controller


# -- matching answers to requests ------------------------------------------------------------


async def test_an_answer_that_comes_after_a_retry_answers_its_own_request(ctl) -> None:
    # every answer comes 1.5 timeouts late: the retry of the map read is answered by the
    # first attempt's answer; the retry's own answer, arriving during the Get, is a duplicate
    async with MisbehavingDevice([aircon()], delay_s=0.9) as device:
        values = await ctl.get(device.host, AIRCON, [0x80, 0xB3, 0xB0])
        await asyncio.sleep(1.0)  # let the remaining late answers arrive
    assert values == {0x80: "true", 0xB3: 26, 0xB0: "cooling"}
    assert ctl.stats.duplicate >= 2
    assert ctl.stats.unmatched == 0


async def test_a_device_that_answers_everything_twice_is_read_and_set_correctly(ctl) -> None:
    # answers take 100 ms, and the second copy comes 50 ms after the first, while the
    # controller's next request is open
    async with MisbehavingDevice([aircon()], delay_s=0.1, copies=2, copy_gap_s=0.05) as device:
        values = await ctl.get(device.host, AIRCON, [0xB3, 0xB0])
        result = await ctl.set_and_verify(device.host, AIRCON, {0xB0: "heating"})
        again = await ctl.get(device.host, AIRCON, [0xB0])
        await asyncio.sleep(0.1)
    assert values == {0xB3: 26, 0xB0: "cooling"}
    assert result.ok and result.verified == {0xB0: True}
    assert again == {0xB0: "heating"}
    assert ctl.stats.duplicate >= 4  # maps, get, set, read-back, get


async def test_copies_with_random_tids_do_not_replace_the_answers(ctl) -> None:
    async with MisbehavingDevice(
        [aircon(), DeviceObject(BATTERY)], delay_s=0.05, random_tid_copies=300, copy_gap_s=0.3
    ) as device:
        [node] = await ctl.discover(hosts=[device.host], multicast=False)
        values = await ctl.get(device.host, AIRCON, [0xB3])
        await asyncio.sleep(0.4)
    assert node.identification == device.node.identification
    assert node.manufacturer_code == device.node.manufacturer_code
    assert {e: o.status for e, o in node.objects.items()} == {AIRCON: OK, BATTERY: OK}
    assert {0x80, 0xB0, 0xB3} <= node.objects[AIRCON].get_map
    assert values == {0xB3: 26}
    assert ctl.stats.unmatched > 300


def _answer(tid: int, seoj: EOJ, *props: Property) -> bytes:
    return Frame(tid, seoj, EOJ(0x05, 0xFF, 0x01), ESV.Get_Res, props).encode()


def test_tracker_counts_late_duplicate_and_unmatched_answers() -> None:
    tracker = RequestTracker()
    host = ("127.0.0.5", 3610)
    first = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80)])
    answer = _answer(first.tid, AIRCON, Property(0x80, b"\x30"))
    assert isinstance(tracker.receive(answer, host), Answer)
    assert tracker.receive(answer, host) is None  # the same answer again
    tracker.finish(first.tid)
    assert tracker.receive(answer, host) is None  # and once more after it is over
    assert (tracker.stats.duplicate, tracker.stats.late) == (2, 0)

    timed_out = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0xB0)])
    tracker.finish(timed_out.tid)
    current = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0xB0)])
    late = _answer(timed_out.tid, AIRCON, Property(0xB0, b"\x41"))
    assert tracker.receive(late, host) is None  # not taken for the current request
    assert tracker.stats.late == 1
    stray = _answer((current.tid + 999) & 0xFFFF, AIRCON, Property(0x9F, b"\x00"))
    assert tracker.receive(stray, host) is None  # EPCs that were not asked
    assert tracker.stats.unmatched == 1


def test_tracker_takes_an_answer_to_any_attempt_of_a_request() -> None:
    tracker = RequestTracker()
    first = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80)])
    retry = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80)], retry_of=first.tid)
    answer = _answer(first.tid, AIRCON, Property(0x80, b"\x30"))
    item = tracker.receive(answer, ("127.0.0.5", 3610))
    assert isinstance(item, Answer) and item.frame.tid == first.tid
    late_retry = _answer(retry.tid, AIRCON, Property(0x80, b"\x30"))
    assert tracker.receive(late_retry, ("127.0.0.5", 3610)) is None
    assert tracker.stats.duplicate == 1


def test_tracker_still_understands_a_device_that_does_not_echo_the_tid() -> None:
    tracker = RequestTracker()
    request = tracker.request("127.0.0.5", AIRCON, ESV.Get, [Property(0x80), Property(0xB0)])
    answer = _answer(0x0000, AIRCON, Property(0x80, b"\x30"))
    item = tracker.receive(answer, ("127.0.0.5", 3610))
    assert isinstance(item, Answer) and item.frame.tid == request.tid


def test_multicast_answers_from_many_hosts_share_the_request_tid() -> None:
    tracker = RequestTracker()
    request = tracker.request(None, NODE_PROFILE, ESV.Get, [Property(0xD6)])
    answer = _answer(request.tid, NODE_PROFILE, Property(0xD6, b"\x01\x01\x30\x01"))
    hosts = [(f"127.0.0.{i}", 3610) for i in range(2, 6)]
    assert all(isinstance(tracker.receive(answer, h), Answer) for h in hosts)
    assert tracker.receive(answer, hosts[0]) is None
    assert tracker.stats.duplicate == 1


# -- discovery --------------------------------------------------------------------------


async def test_discovery_keeps_a_node_whose_battery_object_is_silent(ctl) -> None:
    objects = [aircon(), DeviceObject(BATTERY)]
    async with MisbehavingDevice(objects, silent=[BATTERY]) as device:
        [node] = await ctl.discover(hosts=[device.host], multicast=False)
    assert node.identification == device.node.identification
    assert node.objects[AIRCON].status == OK and 0xB0 in node.objects[AIRCON].set_map
    assert node.objects[BATTERY].status == NO_ANSWER


async def test_discovery_reads_the_objects_of_a_node_at_once() -> None:
    # 40 objects that each take 0.5 s to answer: one after the other would take 20 s
    eojs = [EOJ(0x01, 0x30, i) for i in range(1, 41)]
    slow = {e: 0.5 for e in eojs}
    async with (
        Controller(random_loopback_address(), timeout_s=1.0, retries=0) as ctl,
        MisbehavingDevice([DeviceObject(e) for e in eojs], delay_by_object=slow) as device,
    ):
        started = time.monotonic()
        [node] = await ctl.discover(hosts=[device.host], multicast=False)
        took = time.monotonic() - started
    assert [o.status for o in node.objects.values()] == [OK] * 40
    assert took < 4.0


async def test_discovery_ends_at_its_deadline_and_reports_what_answered() -> None:
    eojs = [EOJ(0x01, 0x30, 1), EOJ(0x01, 0x30, 2)]
    async with (
        Controller(random_loopback_address(), timeout_s=0.5, retries=2) as ctl,
        MisbehavingDevice([DeviceObject(e) for e in eojs], silent=[eojs[1]]) as device,
    ):
        started = time.monotonic()
        [node] = await ctl.discover(hosts=[device.host], multicast=False, describe_s=0.8)
        took = time.monotonic() - started
    assert took < 0.5 * 2 + 0.8 + 0.5  # probe (with its retry) + describing + slack
    assert node.objects[eojs[0]].status == OK
    assert node.objects[eojs[1]].status == NO_ANSWER


async def test_a_malformed_get_map_means_every_property_is_asked_for(ctl) -> None:
    async with MisbehavingDevice([aircon()], rewrite=spoil_get_map) as device:
        values = await ctl.get(device.host, AIRCON, [0xB3, 0xB0])
        [node] = await ctl.discover(hosts=[device.host], multicast=False)
    assert values == {0xB3: 26, 0xB0: "cooling"}
    assert node.objects[AIRCON].status == NO_PROPERTY_MAP


# -- addresses --------------------------------------------------------------------------


async def test_a_host_name_is_refused_before_anything_is_sent(ctl) -> None:
    started = time.monotonic()
    with pytest.raises(ValueError, match=r"'not\.an\.ip' is not an IPv4 or IPv6 address"):
        await ctl.get("not.an.ip", AIRCON, [0x80])
    assert time.monotonic() - started < 0.1


# -- notifications ----------------------------------------------------------------------


async def test_a_subscriber_queue_is_bounded_and_counts_what_it_drops() -> None:
    async with Controller(random_loopback_address(), notification_queue=100) as ctl:
        queue = ctl.subscribe()
        assert ctl.address is not None
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((random_loopback_address(), 0))
        try:
            for i in range(500):
                inf = Frame(i, AIRCON, NODE_PROFILE, ESV.INF, (Property(0xB3, bytes([i % 50])),))
                sender.sendto(inf.encode(), ctl.address)
                if i % 50 == 49:
                    await asyncio.sleep(0.01)
            for _ in range(100):
                if queue.dropped + queue.qsize() >= 500:
                    break
                await asyncio.sleep(0.02)
            host = sender.getsockname()[0]
        finally:
            sender.close()
        # (other programs' multicast INFs on lo may arrive too: they count like ours)
        assert queue.qsize() == 100
        assert queue.dropped >= 400 and ctl.stats.dropped == queue.dropped
        kept = [queue.get_nowait() for _ in range(100)]
        ours = [note.tid for note in kept if note.host == host]
        assert ours == list(range(500 - len(ours), 500))  # the oldest went, the latest stay
        assert len(ours) >= 90


# -- coefficients -----------------------------------------------------------------------


def meter() -> DeviceObject:
    # 140733 counts of 0.1 kWh (0xE1 = 0x01), coefficient 1
    values = {0xE0: (140733).to_bytes(4, "big"), 0xD3: b"\x00\x00\x00\x01", 0xE1: b"\x01"}
    return DeviceObject(METER, values)


async def test_cumulative_energy_is_scaled_by_coefficients_read_once(ctl) -> None:
    async with MisbehavingDevice([meter()]) as device:
        values = await ctl.get(device.host, METER, [0xE0])
        scaled = await ctl.scaled(device.host, METER, values)
        asked = len(device.requests)
        again = await ctl.scaled(device.host, METER, {0xE0: 140734})
        assert len(device.requests) == asked  # 0xD3 and 0xE1 came from the cache
    assert values == {0xE0: 140733}
    assert scaled[0xE0].value == pytest.approx(14073.3) and scaled[0xE0].unit == "kWh"
    assert again[0xE0].value == pytest.approx(14073.4)


async def test_a_meter_without_the_optional_coefficient_counts_it_as_one(ctl) -> None:
    obj = DeviceObject(METER, {0xE0: (5000).to_bytes(4, "big"), 0xE1: b"\x02"})
    async with MisbehavingDevice([obj]) as device:
        scaled = await ctl.scaled(device.host, METER, {0xE0: 5000})
    assert scaled[0xE0].value == pytest.approx(50.0)


def test_a_large_scaled_count_is_written_out_in_full() -> None:
    # 99,999,999 counts of 0.1 kWh: 9,999,999.9 kWh, not "1e+07 kWh"
    props = (
        Property(0xE0, (99_999_999).to_bytes(4, "big")),
        Property(0xD3, b"\x00\x00\x00\x01"),
        Property(0xE1, b"\x01"),
    )
    view = describe_frame(Frame(1, METER, EOJ(0x05, 0xFF, 0x01), ESV.Get_Res, props))
    assert isinstance(view, FrameView)
    assert "= 9999999.9 kWh" in view.to_text()
    assert view.props[0].scaled == pytest.approx(9_999_999.9)
