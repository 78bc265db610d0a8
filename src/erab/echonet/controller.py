"""The controller side of ECHONET Lite: discovery, get / set / setget, notifications.

Two layers, as elsewhere in erab:

* :class:`RequestTracker` is sans-IO: it numbers requests (TID), builds their frames and
  sorts received datagrams into answers to a pending request, notifications (INF / INFC) and
  requests addressed to the controller's own node.
* :class:`Controller` is the asyncio adapter: one UDP endpoint, per-host serialisation (one
  outstanding request per host, as devices expect), timeouts, bounded retries of reads (a Set
  is never repeated automatically), discovery and a device inventory keyed by identification
  number (node profile 0x83) and EOJ rather than by IP address.

Values are typed through the class database (:mod:`erab.echonet.classdb`): ``get`` decodes,
``set`` encodes, and properties may be named by EPC or short name.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from erab.echonet.classdb import DeviceClass, get_class, property_spec
from erab.echonet.describe import apply_coefficient, coefficient_of
from erab.echonet.frame import (
    EOJ,
    ESV,
    NODE_PROFILE,
    Frame,
    FrameError,
    Property,
    decode_frame,
    infc_response,
)
from erab.echonet.node import ECHONET_PORT, Address, DeviceObject, LocalNode
from erab.echonet.propmap import PropertyMapError, decode_instance_list, decode_property_map
from erab.echonet.transport import UdpEndpoint

CONTROLLER_EOJ = EOJ(0x05, 0xFF, 0x01)
"""The controller object (class group 0x05 management and operation, class 0xFF)."""

PropertyKey = int | str
"""A property named by its EPC (0xB0) or its short name in the class database."""

_MAP_EPCS = (0x9F, 0x9E, 0x9D)


class NoResponse(TimeoutError):
    """A device did not answer within the timeout (after the allowed retries)."""


class UnknownDevice(LookupError):
    """A host or identification number the controller has not discovered."""


# -- values and events ------------------------------------------------------------------


OK = "ok"
NO_ANSWER = "no answer"
NO_PROPERTY_MAP = "no property map"


@dataclass(frozen=True)
class RemoteObject:
    """A device object on another node, as its property maps describe it.

    ``status`` is ``"ok"``, ``"no answer"`` (the object did not answer when described:
    its maps are unknown) or ``"no property map"`` (its Get map 0x9F was missing or
    malformed, so every property is asked for)."""

    eoj: EOJ
    get_map: frozenset[int]
    set_map: frozenset[int]
    announce_map: frozenset[int]
    status: str = OK

    @property
    def class_name(self) -> str:
        return class_name(self.eoj.class_code)


@dataclass
class RemoteNode:
    """A node found on the network.  ``key`` (the identification number in hex) stays the
    same when the node's address changes."""

    host: str
    identification: bytes | None = None
    manufacturer_code: int | None = None
    objects: dict[EOJ, RemoteObject] = field(default_factory=dict)
    profile_answered: bool = True
    """False when the node profile (identification, maker, instance list) went unanswered."""

    @property
    def key(self) -> str:
        if self.identification is not None:
            return self.identification.hex()
        return f"host:{self.host}"


@dataclass(frozen=True)
class Notification:
    """An INF or INFC received from a device (``node`` is its identification, if known)."""

    host: str
    seoj: EOJ
    esv: ESV
    props: tuple[Property, ...]
    node: str | None = None
    tid: int = 0


@dataclass(frozen=True)
class SetResult:
    """What a device did with a Set: EPCs accepted and refused, and, after
    :meth:`Controller.set_and_verify`, whether each read-back matched."""

    accepted: tuple[int, ...]
    rejected: tuple[int, ...]
    verified: Mapping[int, bool] | None = None

    @property
    def ok(self) -> bool:
        if self.rejected:
            return False
        return self.verified is None or all(self.verified.values())


@dataclass(frozen=True)
class Answer:
    """A received frame that answers request ``tid``."""

    source: Address
    frame: Frame


def class_name(class_code: int) -> str:
    """English class name from the class database, or a code where it is unknown."""
    try:
        return get_class(class_code).name_en
    except KeyError:
        return f"class 0x{class_code:04X}"


def _class(eoj: EOJ) -> DeviceClass | None:
    try:
        return get_class(eoj.class_code)
    except KeyError:
        return None


def resolve_epc(eoj: EOJ, key: PropertyKey) -> int:
    """EPC of a property given as 0xB0, "0xB0", "b0" or a short name ("operationMode")."""
    if isinstance(key, int):
        if not 0x80 <= key <= 0xFF:
            raise ValueError(f"EPC {key:#x} is out of range 0x80-0xFF")
        return key
    text = key.strip()
    try:
        digits = text.lower().removeprefix("0x")
        value = int(digits, 16)
        if len(digits) == 2 and 0x80 <= value <= 0xFF:
            return value
    except ValueError:
        pass
    device_class = _class(eoj)
    if device_class is None:
        raise ValueError(
            f"property {key!r}: class 0x{eoj.class_code:04X} is not in the "
            "class database, so name properties by EPC (e.g. 0x80)"
        )
    try:
        return int(device_class.property(text).epc)
    except KeyError:
        raise ValueError(
            f"property {key!r} is not a property of {class_name(eoj.class_code)} "
            f"(0x{eoj.class_code:04X}); see `erab el class 0x{eoj.class_code:04X}`"
        ) from None


def decode_property(eoj: EOJ, epc: int, edt: bytes) -> object:
    """Typed value of an EDT via the class database; the raw bytes where it has no codec."""
    device_class = _class(eoj)
    spec = None if device_class is None else device_class.properties.get(epc)
    if spec is None:
        return bytes(edt)
    try:
        return spec.decode(edt)
    except ValueError:
        return bytes(edt)


def encode_property(eoj: EOJ, epc: int, value: object) -> bytes:
    """EDT for a typed value (bytes pass through; str is parsed as on the command line)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    device_class = _class(eoj)
    spec = None if device_class is None else device_class.properties.get(epc)
    if spec is None:
        raise ValueError(
            f"EPC 0x{epc:02X} of {eoj}: no codec in the class database; give the EDT as bytes"
        )
    if isinstance(value, str):
        value = spec.parse(value)
    return bytes(spec.encode(value))


def encode_values(eoj: EOJ, values: Mapping[PropertyKey, object]) -> dict[int, bytes]:
    """EDTs by EPC for typed values keyed by EPC or short name (see :func:`encode_property`)."""
    raw = {}
    for key, value in values.items():
        epc = resolve_epc(eoj, key)
        raw[epc] = encode_property(eoj, epc, value)
    return raw


# -- sans-IO core -------------------------------------------------------------------------


@dataclass
class ControllerStats:
    """Datagrams the controller received but did not take, by kind, since it was made.

    ``late``: an answer to a request of ours that was already over (timed out, or answered
    by another object).  ``duplicate``: a second answer from the same host and object to a
    request that already had one.  ``unmatched``: an answer whose TID is none of ours and
    that could not be anything else's answer either.  ``dropped``: notifications a
    subscriber's full queue could not take (the oldest one waiting was dropped)."""

    late: int = 0
    duplicate: int = 0
    unmatched: int = 0
    dropped: int = 0

    def summary(self) -> str:
        return (
            f"late answers {self.late}, duplicates {self.duplicate}, "
            f"unmatched {self.unmatched}, notifications dropped {self.dropped}"
        )


class PendingRequest:
    """One request and its retries: each attempt has a TID of its own, and an answer to
    any of them answers the request (a device may answer the first attempt late)."""

    __slots__ = ("answered", "deoj", "epcs", "esv", "get_epcs", "host", "last_tid", "open_tids")

    def __init__(
        self,
        host: str | None,
        esv: ESV,
        deoj: EOJ,
        epcs: tuple[int, ...],
        get_epcs: tuple[int, ...] = (),
    ) -> None:
        self.host = host  # None for a multicast request, answered by anyone
        self.esv = esv
        self.deoj = deoj
        self.epcs = epcs
        self.get_epcs = get_epcs
        self.answered: set[tuple[str, EOJ]] = set()
        self.open_tids = 0
        self.last_tid = 0

    def answered_by(self, host: str, frame: Frame) -> bool:
        """Whether ``frame`` from ``host`` is of the kind that answers this request: same
        host, one of the request's answer ESVs (§3.2.5), from the object asked (any
        instance for 0x00)."""
        if self.host is not None and self.host != host:
            return False
        if frame.esv not in (self.esv.answers or ()):
            return False
        seoj = frame.seoj
        if self.deoj.is_node_profile:
            return seoj.is_node_profile  # 0x0EF001 general or 0x0EF002 transmission-only
        if self.deoj.instance == 0:
            return seoj.class_code == self.deoj.class_code
        return seoj == self.deoj

    def fits(self, frame: Frame) -> bool:
        """Whether ``frame``'s properties could answer this request: some of the EPCs
        asked and no others (for a frame that does not carry our TID)."""
        listed = {p.epc for p in frame.props}
        if not listed or not listed <= set(self.epcs):
            return False
        return {p.epc for p in frame.get_props} <= set(self.get_epcs)


_RECENT_TIDS = 4096  # finished requests remembered, to tell late answers and duplicates


class RequestTracker:
    """Numbers requests and sorts what comes back; no I/O.

    An answer is matched to a request by its TID (§3.2.3: a response carries the TID of
    the request), host, ESV and object.  An answer to a request that is over is dropped
    and counted as late, a repeated one as a duplicate (:attr:`stats`).  Devices that do
    not echo the TID (the `echonetlite` package) are still understood: an answer whose TID
    is not one of ours is taken when it fits exactly one open, unanswered request to that
    host (same ESV kind and object, only EPCs asked), and counted unmatched otherwise."""

    def __init__(self, seoj: EOJ = CONTROLLER_EOJ) -> None:
        self.seoj = seoj
        self._tid = 0
        self.pending: dict[int, PendingRequest] = {}
        self.stats = ControllerStats()
        self._open_by_host: dict[str, list[PendingRequest]] = {}
        self._multicast: list[PendingRequest] = []
        self._done: dict[int, PendingRequest] = {}
        self._get_bodies: dict[tuple[EOJ, tuple[int, ...]], bytes] = {}

    def request(
        self,
        host: str | None,
        deoj: EOJ,
        esv: ESV,
        props: Iterable[Property],
        get_props: Iterable[Property] = (),
        *,
        retry_of: int | None = None,
    ) -> Frame:
        """A request frame with a new TID; ``retry_of`` (the TID of an earlier attempt,
        still open) makes it another attempt of that request."""
        props = tuple(props)
        get_props = tuple(get_props)
        tid = self._next_tid()
        self._open(
            tid,
            retry_of,
            host,
            lambda: PendingRequest(
                host, esv, deoj, tuple(p.epc for p in props), tuple(p.epc for p in get_props)
            ),
        )
        return Frame(tid, self.seoj, deoj, esv, props, get_props)

    def read_request(
        self, host: str, deoj: EOJ, epcs: tuple[int, ...], *, retry_of: int | None = None
    ) -> tuple[int, bytes]:
        """A Get of ``epcs`` as (TID, datagram): the polling fast path, built from a cached
        body so only the TID changes from one poll to the next."""
        key = (deoj, epcs)
        body = self._get_bodies.get(key)
        if body is None:
            frame = Frame(0, self.seoj, deoj, ESV.Get, tuple(Property(e) for e in epcs))
            body = frame.encode()[4:]
            if len(self._get_bodies) < 4096:
                self._get_bodies[key] = body
        tid = self._next_tid()
        self._open(tid, retry_of, host, lambda: PendingRequest(host, ESV.Get, deoj, epcs))
        return tid, b"\x10\x81" + tid.to_bytes(2, "big") + body

    def _open(
        self,
        tid: int,
        retry_of: int | None,
        host: str | None,
        make: Callable[[], PendingRequest],
    ) -> None:
        pending = None if retry_of is None else self.pending.get(retry_of)
        if pending is None:
            pending = make()
            if host is None:
                self._multicast.append(pending)
            else:
                self._open_by_host.setdefault(host, []).append(pending)
        pending.open_tids += 1
        pending.last_tid = tid
        self.pending[tid] = pending

    def finish(self, tid: int) -> None:
        """The request attempt ``tid`` is over: later answers to it are late or duplicates."""
        pending = self.pending.pop(tid, None)
        if pending is None:
            return
        self._done[tid] = pending
        if len(self._done) > _RECENT_TIDS:
            del self._done[next(iter(self._done))]
        pending.open_tids -= 1
        if pending.open_tids > 0:
            return
        if pending.host is None:
            self._multicast.remove(pending)
        else:
            open_requests = self._open_by_host[pending.host]
            open_requests.remove(pending)
            if not open_requests:
                del self._open_by_host[pending.host]

    def _next_tid(self) -> int:
        for _ in range(0x10000):
            self._tid = (self._tid + 1) & 0xFFFF
            if self._tid not in self.pending:
                self._done.pop(self._tid, None)
                return self._tid
        raise RuntimeError("all 65536 transaction IDs are in use")

    def receive(self, data: bytes, source: Address) -> Answer | Notification | Frame | None:
        """Classify one datagram: an :class:`Answer`, a :class:`Notification`, a request
        :class:`Frame` for this controller's own node, or None (malformed, or an answer
        dropped as late, duplicate or unmatched: see :attr:`stats`)."""
        try:
            frame = decode_frame(data)
        except FrameError:
            return None
        if not isinstance(frame, Frame):
            return None
        host = str(source[0])
        esv = frame.esv
        pending = self.pending.get(frame.tid)
        if pending is not None and pending.answered_by(host, frame):
            # includes the INF that answers an INF_REQ
            return self._answer(pending, host, frame, source)
        if esv is ESV.INF or esv is ESV.INFC:
            return Notification(host, frame.seoj, esv, frame.props, None, frame.tid)
        if esv.is_request:
            return frame
        done = self._done.get(frame.tid)
        if done is not None and done.answered_by(host, frame):
            if (host, frame.seoj) in done.answered:
                self.stats.duplicate += 1
            else:
                self.stats.late += 1
            return None
        # No TID of ours: a device that does not echo TIDs, or a stray
        candidates = [
            p
            for p in self._open_by_host.get(host, ())
            if not p.answered and p.answered_by(host, frame) and p.fits(frame)
        ]
        if not candidates:
            candidates = [
                p
                for p in self._multicast
                if (host, frame.seoj) not in p.answered
                and p.answered_by(host, frame)
                and p.fits(frame)
            ]
        if len(candidates) == 1:
            match = candidates[0]
            return self._answer(match, host, frame._replace(tid=match.last_tid), source)
        self.stats.unmatched += 1
        return None

    def _answer(
        self, pending: PendingRequest, host: str, frame: Frame, source: Address
    ) -> Answer | None:
        key = (host, frame.seoj)
        if key in pending.answered:
            self.stats.duplicate += 1
            return None
        if pending.host is not None and pending.answered:
            self.stats.late += 1  # another instance answered this 0x00 request first
            return None
        pending.answered.add(key)
        return Answer(source, frame)


# -- asyncio adapter ----------------------------------------------------------------------


def _expire(future: asyncio.Future[Frame | None]) -> None:
    if not future.done():
        future.set_result(None)


class NotificationQueue(asyncio.Queue[Notification]):
    """A subscriber's queue of notifications, bounded: when it is full the oldest waiting
    notification is dropped for the new one, and counted in :attr:`dropped`."""

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.dropped = 0

    def offer(self, note: Notification) -> bool:
        """Queue ``note``; False when an older one had to be dropped for it."""
        dropped = False
        if self.full():
            self.get_nowait()
            self.dropped += 1
            dropped = True
        self.put_nowait(note)
        return not dropped


@dataclass(frozen=True)
class Scaled:
    """A count times its coefficient properties (e.g. a smart meter's 0xE0 × 0xD3 × 0xE1)."""

    value: float
    unit: str


DEFAULT_NOTIFICATION_QUEUE = 1024
"""Notifications a subscriber may have waiting before the oldest are dropped."""


class Controller:
    """An ECHONET Lite controller on one UDP address.

    Use as ``async with Controller("127.0.0.1") as ctl:``.  Requests go to port ``port`` of
    the device (3610); multicast leaves on loopback unless ``interface`` names another.
    ``notification_queue`` bounds each subscriber's queue (:meth:`subscribe`)."""

    def __init__(
        self,
        bind: str = "127.0.0.1",
        *,
        port: int = ECHONET_PORT,
        interface: str | None = None,
        timeout_s: float = 2.0,
        retries: int = 2,
        max_in_flight: int = 256,
        answer_requests: bool = True,
        notification_queue: int = DEFAULT_NOTIFICATION_QUEUE,
        multicast: bool = True,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if notification_queue < 1:
            raise ValueError(f"notification_queue must be >= 1, got {notification_queue}")
        self.bind = bind
        self.port = port
        self.interface = interface
        # False: join no multicast group.  Requests may still go to the group (answers come
        # back unicast), but no announcement (INF) is heard; many gateways sharing one
        # loopback would otherwise each get every site's announcements
        self.joins_multicast = multicast
        self.timeout_s = timeout_s
        self.retries = retries
        self.notification_queue = notification_queue
        self.tracker = RequestTracker()
        self.nodes: dict[str, RemoteNode] = {}
        """Discovered nodes by :attr:`RemoteNode.key`."""
        self._by_host: dict[str, RemoteNode] = {}
        self._waiters: dict[int, asyncio.Future[Frame | None]] = {}
        self._collectors: dict[int, list[Answer]] = {}
        self._answer_hooks: dict[int, Callable[[Frame], None]] = {}
        self._locks: dict[str | tuple[str, EOJ], asyncio.Lock] = {}
        # requests open at once over all hosts: bounds the burst of answers to absorb
        self._in_flight = asyncio.Semaphore(max_in_flight)
        self._max_in_flight = max_in_flight
        self._subscribers: list[NotificationQueue] = []
        self._announced_hosts: set[str] = set()
        self._destinations: dict[str, Address] = {}
        self._coefficients: dict[tuple[str, EOJ], dict[int, float | None]] = {}
        self._endpoint = UdpEndpoint(self._received)
        # a controller is a node too: it answers Gets of its node profile (0x0EF001)
        self.node = LocalNode([DeviceObject(CONTROLLER_EOJ)]) if answer_requests else None

    async def __aenter__(self) -> Controller:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        await self._endpoint.open(
            self.bind, port=self.port, interface=self.interface, receive_buffer=4 << 20,
            multicast=self.joins_multicast,
        )  # fmt: skip

    async def close(self) -> None:
        await self._endpoint.close()
        for waiter in self._waiters.values():
            _expire(waiter)

    @property
    def address(self) -> Address | None:
        return self._endpoint.address

    @property
    def stats(self) -> ControllerStats:
        """Answers dropped as late, duplicate or unmatched; notifications dropped."""
        return self.tracker.stats

    # -- receiving ------------------------------------------------------------------------
    def _received(self, data: bytes, source: Address) -> None:
        if source == self._endpoint.address:
            return  # our own multicast, looped back
        item = self.tracker.receive(data, source)
        if isinstance(item, Answer):
            tid = item.frame.tid
            waiter = self._waiters.get(tid)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(item.frame)
            elif tid in self._answer_hooks:
                self._answer_hooks[tid](item.frame)
            else:
                collector = self._collectors.get(tid)
                if collector is not None:
                    collector.append(item)
        elif isinstance(item, Notification):
            self._notified(item, source)
        elif isinstance(item, Frame) and self.node is not None:
            if item.seoj == self.tracker.seoj and item.tid in self.tracker.pending:
                return  # our own multicast request, looped back to a wildcard-bound socket
            for reply, destination in self.node.handle(data, source):
                self._endpoint.send(reply, destination)

    def _notified(self, note: Notification, source: Address) -> None:
        if note.esv is ESV.INFC:
            # §4.2.3.6: acknowledge with INFC_Res, same TID, EPCs with PDC 0
            infc = Frame(note.tid, note.seoj, CONTROLLER_EOJ, ESV.INFC, note.props)  # as received
            self._endpoint.send(infc_response(infc).encode(), source)
        known = self._by_host.get(note.host)
        if known is not None:
            note = Notification(note.host, note.seoj, note.esv, note.props, known.key, note.tid)
        if note.seoj.is_node_profile and any(p.epc == 0xD5 for p in note.props):
            self._announced_hosts.add(note.host)
        for queue in self._subscribers:
            if not queue.offer(note):
                self.tracker.stats.dropped += 1

    # -- requests -------------------------------------------------------------------------
    def _lock(self, key: str | tuple[str, EOJ]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    def _destination(self, host: str) -> Address:
        """(host, port) to send to; ``host`` must be an address literal: a name would be
        looked up in the DNS and the request sent wherever it pointed."""
        destination = self._destinations.get(host)
        if destination is None:
            try:
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                raise ValueError(
                    f"{host!r} is not an IPv4 or IPv6 address (host names are not looked up)"
                ) from None
            v6 = address.version == 6
            destination = (host, self.port, 0, 0) if v6 else (host, self.port)
            if len(self._destinations) < 65536:
                self._destinations[host] = destination
        return destination

    async def request(
        self,
        host: str,
        deoj: EOJ | int | str,
        esv: ESV,
        props: Iterable[Property],
        get_props: Iterable[Property] = (),
        *,
        retries: int | None = None,
        per_object: bool = False,
    ) -> Frame:
        """Send one request to ``host`` and return its answer frame.

        Raises :class:`NoResponse` after ``retries`` further attempts (reads only; a Set
        is sent once); an answer to any attempt counts.  SetI is sent without waiting; the
        return value is then the request.  One request per host is open at a time, or with
        ``per_object`` one per object of the host (discovery reads every object's maps so)."""
        target = EOJ.of(deoj)
        destination = self._destination(host)
        props = tuple(props)
        get_props = tuple(get_props)
        if esv in (ESV.SetI, ESV.SetC, ESV.SetGet):
            attempts = 1  # never repeat a Set on our own: the first may have acted
        else:
            attempts = 1 + (self.retries if retries is None else retries)
        key: str | tuple[str, EOJ] = (host, target) if per_object else host
        async with self._lock(key), self._in_flight:
            plain_get = esv is ESV.Get and not any(p.edt for p in props)
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[Frame | None] = loop.create_future()
            tids: list[int] = []
            try:
                for _ in range(attempts):
                    retry_of = tids[-1] if tids else None
                    if plain_get:
                        tid, datagram = self.tracker.read_request(
                            host, target, tuple(p.epc for p in props), retry_of=retry_of
                        )
                    else:
                        frame = self.tracker.request(
                            host, target, esv, props, get_props, retry_of=retry_of
                        )
                        tid, datagram = frame.tid, frame.encode()
                        if esv is ESV.SetI:
                            self.tracker.finish(tid)
                            self._endpoint.send(datagram, destination)
                            return frame
                    tids.append(tid)
                    self._waiters[tid] = waiter
                    self._endpoint.send(datagram, destination)
                    done, _ = await asyncio.wait((waiter,), timeout=self.timeout_s)
                    if done:
                        answer = waiter.result()
                        if answer is None:
                            break  # the controller was closed
                        return answer
            finally:
                for tid in tids:
                    self._waiters.pop(tid, None)
                    self.tracker.finish(tid)
        raise NoResponse(
            f"no answer from {host} ({target}) to {esv.name} within {self.timeout_s:g} s "
            f"after {attempts} attempt(s)"
        )

    async def multicast(
        self, deoj: EOJ | int | str, esv: ESV, props: Iterable[Property], *, wait_s: float = 1.0
    ) -> list[Answer]:
        """Send a request to every node and collect the answers that arrive in ``wait_s``."""
        frame = self.tracker.request(None, EOJ.of(deoj), esv, tuple(props))
        answers: list[Answer] = []
        self._collectors[frame.tid] = answers
        try:
            self._endpoint.send(frame.encode(), self._endpoint.multicast_destination(self.port))
            await asyncio.sleep(wait_s)
            return list(answers)
        finally:
            self._collectors.pop(frame.tid, None)
            self.tracker.finish(frame.tid)

    # -- reading --------------------------------------------------------------------------
    async def get_raw(
        self,
        host: str,
        eoj: EOJ | int | str,
        epcs: Iterable[int],
        *,
        maps_first: bool = True,
    ) -> dict[int, bytes]:
        """EDTs of ``epcs``; properties the device does not offer are left out.

        The object's property maps are read first (once; discovery reads them too) and only
        offered EPCs are asked for (all of them when the Get map is missing or malformed);
        when a device answers with fewer properties than asked, the rest are asked for
        separately."""
        return await self._get_raw(host, EOJ.of(eoj), epcs, maps_first=maps_first)

    async def _get_raw(
        self,
        host: str,
        target: EOJ,
        epcs: Iterable[int],
        *,
        maps_first: bool = True,
        per_object: bool = False,
    ) -> dict[int, bytes]:
        wanted = list(dict.fromkeys(epcs))
        self._destination(host)  # refuse a host name before reading maps
        if maps_first and not target.is_node_profile and self._known(host, target) is None:
            await self._read_maps(host, target)
        offered = self._offered(host, target, "get")
        if offered is not None:
            wanted = [e for e in wanted if e in offered or e in _MAP_EPCS]
        result: dict[int, bytes] = {}
        first = True
        while wanted:
            try:
                frame = await self.request(
                    host, target, ESV.Get, (Property(e) for e in wanted), per_object=per_object
                )
            except NoResponse:
                if first:
                    raise
                break  # some devices stay silent when they have none of what is asked
            first = False
            answered = {p.epc for p in frame.props}
            for prop in frame.props:
                if prop.edt:
                    result[prop.epc] = prop.edt
            missing = [e for e in wanted if e not in answered]
            if not missing or len(missing) == len(wanted):
                break
            wanted = missing  # the device cut the list short: ask for the rest
        return result

    async def get(
        self, host: str, eoj: EOJ | int | str, props: Iterable[PropertyKey]
    ) -> dict[int, object]:
        """Typed values (decoded via the class database) of ``props``, by EPC."""
        target = EOJ.of(eoj)
        epcs = [resolve_epc(target, p) for p in props]
        raw = await self.get_raw(host, target, epcs)
        return {epc: decode_property(target, epc, edt) for epc, edt in raw.items()}

    async def scaled(
        self, host: str, eoj: EOJ | int | str, values: Mapping[int, object]
    ) -> dict[int, Scaled]:
        """Counts among ``values`` (typed, by EPC) times their coefficient properties, as
        the class database names them (a smart meter's 0xE0/0xE3 × 0xD3 × 0xE1 in kWh).

        Coefficients found in ``values`` are used; the others are read from the device once
        and kept per object.  An optional coefficient the device does not have counts as 1
        (0x0288 0xD3: "1 when not implemented"); a count whose required coefficient cannot
        be read (the device lacks it, or did not answer) is left out."""
        target = EOJ.of(eoj)
        cache = self._coefficients.setdefault((host, target), {})
        plans = {}
        for epc, value in values.items():
            coefficient = coefficient_of(target.class_code, epc)
            if coefficient is not None and _is_number(value):
                plans[epc] = coefficient
        if not plans:
            return {}
        refs = {r for c in plans.values() for r in c.refs}
        for ref in refs:
            if ref in values and _is_number(values[ref]):
                cache[ref] = float(values[ref])  # type: ignore[arg-type]
        missing = sorted(r for r in refs if r not in cache)
        if missing:
            try:
                raw: dict[int, bytes] | None = await self.get_raw(host, target, missing)
            except NoResponse:
                raw = None  # kept as unknown: a silent meter is not asked on every reading
            for ref in missing:
                number = None
                if raw is not None and ref in raw:
                    number = decode_property(target, ref, raw[ref])
                if _is_number(number):
                    cache[ref] = float(number)  # type: ignore[arg-type]
                elif raw is not None and ref not in raw and _optional(target.class_code, ref):
                    cache[ref] = 1.0
                else:
                    cache[ref] = None  # cannot scale by it
        out = {}
        for epc, coefficient in plans.items():
            numbers = {r: cache.get(r) for r in coefficient.refs}
            scaled = apply_coefficient(values[epc], coefficient, numbers)
            if scaled is not None:
                out[epc] = Scaled(scaled, coefficient.unit)
        return out

    def _known(self, host: str, eoj: EOJ) -> RemoteObject | None:
        """The object as last described, if it answered then."""
        node = self._by_host.get(host)
        obj = None if node is None else node.objects.get(eoj)
        if obj is None or obj.status == NO_ANSWER:
            return None
        return obj

    async def _read_maps(self, host: str, eoj: EOJ, *, per_object: bool = False) -> RemoteObject:
        maps = await self._get_raw(host, eoj, _MAP_EPCS, maps_first=False, per_object=per_object)
        get_map = _map(maps.get(0x9F))
        obj = RemoteObject(
            eoj,
            get_map or frozenset(),
            _map(maps.get(0x9E)) or frozenset(),
            _map(maps.get(0x9D)) or frozenset(),
            # a missing and a malformed Get map mean the same: ask for everything
            OK if get_map is not None else NO_PROPERTY_MAP,
        )
        node = self._by_host.get(host)
        if node is None:
            node = self._by_host[host] = RemoteNode(host)
        node.objects[eoj] = obj
        return obj

    async def get_many(
        self, targets: Iterable[tuple[str, EOJ | int | str]], epcs: Iterable[int]
    ) -> dict[tuple[str, EOJ], dict[int, bytes] | NoResponse]:
        """Read ``epcs`` from many objects at once: the way to poll a fleet.

        Same rules as :meth:`get_raw` (only offered properties, short answers completed,
        reads retried with an answer to any attempt counting, one request per host open,
        at most ``max_in_flight`` in all) without a task per object.  Objects whose maps
        are not known yet are described first.  A target that never answers maps to a
        :class:`NoResponse` instead of its values."""
        loop = asyncio.get_running_loop()
        wanted_all = list(dict.fromkeys(epcs))
        pairs = [(host, EOJ.of(eoj)) for host, eoj in targets]
        for host, _ in pairs:
            self._destination(host)
        unknown = [
            (host, target)
            for host, target in pairs
            if self._known(host, target) is None and not target.is_node_profile
        ]
        # a silent target is reported below, when its read goes unanswered too
        await asyncio.gather(*(self._read_maps(h, t) for h, t in unknown), return_exceptions=True)
        jobs: list[_PollJob] = []
        for host, target in pairs:
            offered = self._offered(host, target, "get")
            wanted = [e for e in wanted_all if offered is None or e in offered]
            jobs.append(_PollJob(host, target, wanted, self.retries))
        results: dict[tuple[str, EOJ], dict[int, bytes] | NoResponse] = {
            (job.host, job.eoj): job.values for job in jobs
        }
        queues: dict[str, deque[_PollJob]] = {}
        for job in jobs:
            if job.wanted:
                queues.setdefault(job.host, deque()).append(job)
        ready: deque[str] = deque(queues)
        in_flight: dict[int, _PollJob] = {}  # every open attempt's TID
        active: set[_PollJob] = set()
        finished: asyncio.Future[None] = loop.create_future()
        remaining = sum(len(q) for q in queues.values())
        limit = self._max_in_flight

        def send(job: _PollJob, retry: bool = False) -> None:
            retry_of = job.tids[-1] if retry and job.tids else None
            tid, datagram = self.tracker.read_request(
                job.host, job.eoj, tuple(job.wanted), retry_of=retry_of
            )
            job.deadline = loop.time() + self.timeout_s
            job.tids.append(tid)
            in_flight[tid] = job
            active.add(job)
            self._answer_hooks[tid] = answered
            self._endpoint.send(datagram, self._destination(job.host))

        def pump() -> None:
            while ready and len(active) < limit:
                send(queues[ready.popleft()].popleft())

        def done(job: _PollJob, failure: NoResponse | None = None) -> None:
            nonlocal remaining
            if failure is not None:
                results[(job.host, job.eoj)] = failure
            remaining -= 1
            if queues[job.host]:
                ready.append(job.host)
            pump()
            if remaining == 0 and not finished.done():
                finished.set_result(None)

        def release(job: _PollJob) -> None:
            for tid in job.tids:
                self._answer_hooks.pop(tid, None)
                self.tracker.finish(tid)
                in_flight.pop(tid, None)
            job.tids.clear()
            active.discard(job)

        def answered(frame: Frame) -> None:
            job = in_flight.get(frame.tid)
            if job is None:
                return
            release(job)
            listed = set()
            for prop in frame.props:
                listed.add(prop.epc)
                if prop.edt:
                    job.values[prop.epc] = prop.edt
            missing = [e for e in job.wanted if e not in listed]
            if missing and len(missing) < len(job.wanted):
                job.wanted, job.partial = missing, True  # a short answer: ask for the rest
                job.retries_left = self.retries
                send(job)
            else:
                done(job)

        def sweep() -> None:
            now = loop.time()
            for job in list(active):
                if job.deadline > now:
                    continue
                if job.retries_left > 0:
                    job.retries_left -= 1
                    send(job, retry=True)  # earlier attempts stay open: late answers count
                    continue
                release(job)
                if job.partial:
                    done(job)  # keep what the device gave before going quiet
                else:
                    done(job, NoResponse(f"no answer from {job.host} ({job.eoj}) to Get"))
            if not finished.done():
                timer[0] = loop.call_later(self.timeout_s / 4, sweep)

        timer = [loop.call_later(self.timeout_s / 4, sweep)]
        try:
            pump()
            if remaining:
                await finished
        finally:
            timer[0].cancel()
            for job in list(active):
                release(job)
        return results

    def _offered(self, host: str, eoj: EOJ, which: str) -> frozenset[int] | None:
        """The EPCs an object offers, or None where its maps are not known (ask all)."""
        obj = self._known(host, eoj)
        if obj is None or obj.status != OK:
            return None
        return obj.get_map if which == "get" else obj.set_map

    # -- writing --------------------------------------------------------------------------
    async def set_raw(
        self, host: str, eoj: EOJ | int | str, values: Mapping[int, bytes]
    ) -> SetResult:
        """SetC of raw EDTs; returns which EPCs the device accepted and refused."""
        target = EOJ.of(eoj)
        props = tuple(Property(epc, bytes(edt)) for epc, edt in values.items())
        frame = await self.request(host, target, ESV.SetC, props)
        return _set_result(props, frame.props, frame.esv)

    async def set(
        self, host: str, eoj: EOJ | int | str, values: Mapping[PropertyKey, object]
    ) -> SetResult:
        """SetC of typed values (or strings as on the command line: "cooling", "26")."""
        target = EOJ.of(eoj)
        return await self.set_raw(host, target, encode_values(target, values))

    async def set_and_verify(
        self, host: str, eoj: EOJ | int | str, values: Mapping[PropertyKey, object]
    ) -> SetResult:
        """SetC, then read the accepted properties back and compare with what was sent."""
        target = EOJ.of(eoj)
        raw = encode_values(target, values)
        result = await self.set_raw(host, target, raw)
        back = await self.get_raw(host, target, result.accepted) if result.accepted else {}
        verified = {epc: back.get(epc) == raw[epc] for epc in result.accepted}
        return SetResult(result.accepted, result.rejected, verified)

    async def setget(
        self,
        host: str,
        eoj: EOJ | int | str,
        values: Mapping[PropertyKey, object],
        props: Iterable[PropertyKey],
    ) -> tuple[SetResult, dict[int, object]]:
        """SetGet: write ``values`` and read ``props`` in one exchange."""
        target = EOJ.of(eoj)
        set_props = [Property(epc, edt) for epc, edt in encode_values(target, values).items()]
        get_props = [Property(resolve_epc(target, p)) for p in props]
        frame = await self.request(host, target, ESV.SetGet, set_props, get_props)
        result = _set_result(tuple(set_props), frame.props, frame.esv)
        read = {p.epc: decode_property(target, p.epc, p.edt) for p in frame.get_props if p.edt}
        return result, read

    # -- discovery ------------------------------------------------------------------------
    async def discover(
        self,
        *,
        hosts: Iterable[str] = (),
        multicast: bool = True,
        wait_s: float = 1.0,
        describe: bool = True,
        describe_s: float | None = None,
    ) -> list[RemoteNode]:
        """Find nodes: multicast Get of the instance list (0xD6), hosts that announced
        themselves (INF 0xD5), and unicast probes of ``hosts`` (addresses or subnets such as
        "127.0.0.0/28").  With ``describe``, each node's identification, maker code and
        objects' property maps are read, every object of a node at once.

        Returns the nodes found this time, each with what answered: an object that did not
        answer has status ``"no answer"``.  Describing takes at most ``describe_s`` (default
        2 × timeout × (1 + retries): the node profile, then the objects); whatever has not
        answered by then is reported so."""
        found: dict[str, list[EOJ] | None] = {}
        probes = expand_hosts(hosts)
        tasks = []
        if multicast:
            tasks.append(self.multicast(NODE_PROFILE, ESV.Get, (Property(0xD6),), wait_s=wait_s))
        results = await asyncio.gather(
            *tasks, *(self._probe(h) for h in probes), return_exceptions=True
        )
        if multicast and isinstance(results[0], list):
            for answer in results[0]:
                found[str(answer.source[0])] = _instances(answer.frame)
        for host, result in zip(probes, results[len(tasks) :], strict=True):
            if isinstance(result, Frame):
                found[host] = _instances(result)
        # Nodes that announced themselves (INF 0xD5) join a multicast or passive search; a
        # search narrowed to named hosts reports only those.
        if multicast or not probes:
            for host in self._announced_hosts:
                found.setdefault(host, None)
        self._announced_hosts.clear()
        if describe_s is None:
            describe_s = 2 * self.timeout_s * (1 + self.retries)
        nodes = {host: RemoteNode(host) for host in found}
        jobs = [
            asyncio.create_task(self._describe(nodes[h], eojs, describe))
            for h, eojs in found.items()
        ]
        if jobs:
            _, late = await asyncio.wait(jobs, timeout=describe_s)
            for job in late:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
        for node in nodes.values():
            previous = self.nodes.get(node.key)
            if previous is not None and previous.host != node.host:
                self._by_host.pop(previous.host, None)  # the same device at a new address
            self.nodes[node.key] = node
            self._by_host[node.host] = node
        return list(nodes.values())

    async def _probe(self, host: str) -> Frame:
        return await self.request(host, NODE_PROFILE, ESV.Get, (Property(0xD6),), retries=1)

    async def _describe(self, node: RemoteNode, eojs: list[EOJ] | None, describe: bool) -> None:
        """Fill ``node`` in as answers arrive (so a deadline leaves what did answer)."""
        host = node.host
        for eoj in eojs or []:
            node.objects[eoj] = RemoteObject(eoj, frozenset(), frozenset(), frozenset(), NO_ANSWER)
        if describe or eojs is None:
            try:
                raw = await self.get_raw(host, NODE_PROFILE, (0x83, 0x8A, 0xD6))
            except NoResponse:
                raw = {}
                node.profile_answered = False
            node.identification = raw.get(0x83)
            if 0x8A in raw and len(raw[0x8A]) == 3:
                node.manufacturer_code = int.from_bytes(raw[0x8A], "big")
            listed = _instance_list(raw.get(0xD6))
            if listed is not None:
                eojs = listed
        for eoj in eojs or []:
            node.objects.setdefault(
                eoj, RemoteObject(eoj, frozenset(), frozenset(), frozenset(), NO_ANSWER)
            )
        if not describe:
            for eoj in eojs or []:
                node.objects[eoj] = RemoteObject(eoj, frozenset(), frozenset(), frozenset(), OK)
            return

        async def describe_object(eoj: EOJ) -> None:
            try:
                obj = await self._read_maps(host, eoj, per_object=True)
            except NoResponse:
                return  # stays "no answer"
            node.objects[eoj] = obj

        await asyncio.gather(*(describe_object(e) for e in eojs or []))

    def node_at(self, host: str) -> RemoteNode:
        try:
            return self._by_host[host]
        except KeyError:
            raise UnknownDevice(f"no node discovered at {host}; run discover first") from None

    def host_of(self, identification: str | bytes) -> str:
        """Current address of the node with this identification number (0x83)."""
        key = identification.hex() if isinstance(identification, bytes) else identification
        try:
            return self.nodes[key.lower()].host
        except KeyError:
            raise UnknownDevice(f"no node with identification {key} discovered") from None

    # -- notifications --------------------------------------------------------------------
    async def notifications(self) -> AsyncIterator[Notification]:
        """INF and INFC notifications as they arrive (INFC is acknowledged for you)."""
        queue = self.subscribe()
        try:
            while True:
                yield await queue.get()
        finally:
            self.unsubscribe(queue)

    def subscribe(self, maxsize: int | None = None) -> NotificationQueue:
        """A queue that receives every notification from now on (see :meth:`unsubscribe`).

        It holds at most ``maxsize`` (default ``notification_queue``) waiting notifications;
        beyond that the oldest are dropped and counted (``queue.dropped``,
        ``stats.dropped``), so a slow reader cannot make the controller grow without bound."""
        size = self.notification_queue if maxsize is None else maxsize
        if size < 1:
            raise ValueError(f"maxsize must be >= 1, got {size}")
        queue = NotificationQueue(size)
        self._subscribers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Notification]) -> None:
        if queue in self._subscribers:
            self._subscribers.remove(queue)


class _PollJob:
    __slots__ = (
        "deadline",
        "eoj",
        "host",
        "partial",
        "retries_left",
        "tids",
        "values",
        "wanted",
    )

    def __init__(self, host: str, eoj: EOJ, wanted: list[int], retries: int) -> None:
        self.host = host
        self.eoj = eoj
        self.wanted = wanted
        self.retries_left = retries
        self.values: dict[int, bytes] = {}
        self.partial = False
        self.deadline = 0.0
        self.tids: list[int] = []


def _map(edt: bytes | None) -> frozenset[int] | None:
    """A decoded property map; None where it is missing or malformed."""
    if edt is None:
        return None
    try:
        return decode_property_map(edt)
    except PropertyMapError:
        return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _optional(class_code: int, epc: int) -> bool:
    spec = property_spec(class_code, epc)
    return spec is not None and spec.get == "optional"


def _instance_list(edt: bytes | None) -> list[EOJ] | None:
    if edt is None:
        return None
    try:
        return list(decode_instance_list(edt))
    except PropertyMapError:
        return None


def _instances(frame: Frame) -> list[EOJ] | None:
    for prop in frame.props:
        if prop.epc == 0xD6 and prop.edt:
            try:
                return list(decode_instance_list(prop.edt))
            except PropertyMapError:
                return None
    return None


def _set_result(sent: tuple[Property, ...], answered: tuple[Property, ...], esv: ESV) -> SetResult:
    # §4.2.3.2: in an SNA, accepted EPCs come back with PDC 0 and refused ones with their EDT
    if not esv.is_sna:
        return SetResult(tuple(p.epc for p in sent), ())
    refused = {p.epc for p in answered if p.edt}
    listed = {p.epc for p in answered}
    accepted = tuple(p.epc for p in sent if p.epc in listed and p.epc not in refused)
    rejected = tuple(p.epc for p in sent if p.epc not in accepted)
    return SetResult(accepted, rejected)


def expand_hosts(hosts: Iterable[str]) -> list[str]:
    """Addresses from a list of addresses and subnets ("127.0.0.0/29" -> its hosts)."""
    out: list[str] = []
    for item in hosts:
        text = item.strip()
        if "/" in text:
            try:
                network = ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(
                    f"{item!r} is not an address or subnet (e.g. 127.0.0.0/28)"
                ) from None
            if network.num_addresses > 65536:
                raise ValueError(
                    f"subnet {item} has {network.num_addresses} addresses; "
                    "probe at most 65536 (a /16)"
                )
            out.extend(str(a) for a in network.hosts())
        else:
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise ValueError(f"{item!r} is not an IPv4 or IPv6 address") from None
            out.append(text)
    return list(dict.fromkeys(out))
