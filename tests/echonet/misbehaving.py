"""A device on a raw UDP socket that answers like an erab node, but badly on purpose.

The answers are the real frames a :class:`~erab.echonet.node.LocalNode` builds for each
request; this wrapper then delays them, repeats them, adds copies with random TIDs, keeps
some objects silent, or spoils a property map, as devices met in the field (or an attacker)
do.  It listens on its own loopback address, port 3610, unicast only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Callable, Iterable, Mapping

from erab.echonet.frame import EOJ, ESV, Frame, Property, decode_frame
from erab.echonet.node import ALL_NODES, DeviceObject, LocalNode
from erab.echonet.transport import random_loopback_address


class MisbehavingDevice:
    def __init__(
        self,
        objects: Iterable[DeviceObject],
        *,
        delay_s: float = 0.0,
        copies: int = 1,
        random_tid_copies: int = 0,
        silent: Iterable[EOJ | int] = (),
        delay_by_object: Mapping[EOJ, float] | None = None,
        rewrite: Callable[[Frame], Frame] | None = None,
        copy_gap_s: float = 0.0,
    ) -> None:
        self.node = LocalNode(list(objects))
        self.host = random_loopback_address()
        self.delay_s = delay_s
        self.copies = copies
        self.random_tid_copies = random_tid_copies
        self.silent = {EOJ.of(e) for e in silent}
        self.delay_by_object = dict(delay_by_object or {})
        self.rewrite = rewrite
        # between an answer and its next copy; random-TID copies are spread over it
        self.copy_gap_s = copy_gap_s
        self.requests: list[Frame] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((self.host, 3610))
        self.sock.setblocking(False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timers: list[asyncio.TimerHandle] = []

    async def __aenter__(self) -> MisbehavingDevice:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._loop is not None
        for timer in self._timers:
            timer.cancel()
        self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    def _readable(self) -> None:
        while True:
            try:
                data, source = self.sock.recvfrom(65536)
            except BlockingIOError:
                return
            request = decode_frame(data)
            if not isinstance(request, Frame) or not request.esv.is_request:
                continue
            self.requests.append(request)
            if request.deoj in self.silent:
                continue
            delay = self.delay_by_object.get(request.deoj, self.delay_s)
            for reply, destination in self.node.handle(data, source):
                if destination == ALL_NODES:
                    continue  # unicast only
                answer = decode_frame(reply)
                assert isinstance(answer, Frame)
                if self.rewrite is not None:
                    answer = self.rewrite(answer)
                for copy in range(self.copies):
                    self._later(delay + copy * self.copy_gap_s, answer.encode(), source)
                for copy in range(self.random_tid_copies):  # spread over copy_gap_s
                    tid = random.randrange(0x10000)
                    spread = self.copy_gap_s * (copy + 1) / self.random_tid_copies
                    self._later(delay + spread, answer._replace(tid=tid).encode(), source)

    def _later(self, delay: float, datagram: bytes, destination: object) -> None:
        assert self._loop is not None
        if delay <= 0:
            self._send(datagram, destination)
        else:
            self._timers.append(self._loop.call_later(delay, self._send, datagram, destination))

    def _send(self, datagram: bytes, destination: object) -> None:
        with contextlib.suppress(OSError):  # the controller went away
            self.sock.sendto(datagram, destination)  # type: ignore[arg-type]


def spoil_get_map(frame: Frame) -> Frame:
    """Replace a 0x9F Get property map by bytes that are not a property map."""
    if frame.esv is not ESV.Get_Res:
        return frame
    props = tuple(Property(0x9F, b"\x05\x80") if p.epc == 0x9F else p for p in frame.props)
    return frame._replace(props=props)
