"""asyncio UDP adapters for ECHONET Lite (port 3610; 224.0.23.0 and ff02::1).

Layout on one machine (how many nodes share a process):

* every endpoint (a node or a controller) owns one unicast socket bound to its own address,
  e.g. 127.0.0.51:3610; replies and unicast requests go through it, so a peer sees the
  right source address;
* multicast is received by one shared socket per (family, port, group, interface) in the
  process, bound to the group address with SO_REUSEADDR/SO_REUSEPORT and joined on the
  interface; it hands every datagram to every endpoint subscribed to it.  Linux delivers a
  multicast datagram to each socket bound to the group and port, so several processes (an
  emulated town, a controller, pychonet) can all listen on one machine;
* multicast is sent with IP_MULTICAST_IF set to the chosen interface, ``lo`` unless the user
  names another, and IP_MULTICAST_LOOP on, so nothing leaves the machine by default.

Linux routes all of 127.0.0.0/8 to ``lo``, so a process can bind thousands of 127.x.y.z
addresses without configuring them.  IPv6 unicast on ::1 always works; IPv6 multicast needs
a real interface (Linux's ``lo`` does not carry it, even with an ff00::/8 route).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import secrets
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from erab.echonet.node import ALL_NODES, ECHONET_PORT, MULTICAST_V4, MULTICAST_V6, Address

if TYPE_CHECKING:
    from erab.echonet.node import LocalNode

DatagramHandler = Callable[[bytes, Address], None]
_log = logging.getLogger(__name__)
DEFAULT_INTERFACE = "lo"


class TransportError(OSError):
    """A socket could not be set up as asked (address in use, unknown interface, ...).

    The message states what failed, not what to do: the advice depends on the caller (a
    command's option names), so commands add it.  ``errno`` is the socket's error number
    where one caused it (:attr:`address_in_use` tells EADDRINUSE)."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno

    @property
    def address_in_use(self) -> bool:
        """Whether another socket holds the address and port asked for."""
        return self.errno == errno.EADDRINUSE


def family_of(host: str) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for an address literal; raises ValueError naming bad input."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise ValueError(f"{host!r} is not an IPv4 or IPv6 address") from None
    return socket.AF_INET6 if address.version == 6 else socket.AF_INET


def interface_index(interface: str | None) -> int:
    """Index of a network interface named ``interface`` (default ``lo``)."""
    name = interface or DEFAULT_INTERFACE
    try:
        return socket.if_nametoindex(name)
    except OSError:
        known = ", ".join(n for _, n in socket.if_nameindex())
        raise TransportError(
            f"no network interface named {name!r} (this machine has: {known})"
        ) from None


def _multicast_group(family: socket.AddressFamily) -> str:
    return MULTICAST_V6 if family == socket.AF_INET6 else MULTICAST_V4


def _set_multicast_out(sock: socket.socket, family: socket.AddressFamily, index: int) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
    else:
        # struct ip_mreqn: multiaddr, address, ifindex; the index picks the interface
        mreqn = struct.pack("=4s4si", bytes(4), bytes(4), index)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)


_BUFFERS = threading.local()


def _receive_buffer() -> tuple[bytearray, memoryview]:
    """One receive buffer per thread, shared by all its sockets: callbacks of one event
    loop never overlap, and a thousand nodes need not hold 64 KiB each."""
    pair: tuple[bytearray, memoryview] | None = getattr(_BUFFERS, "pair", None)
    if pair is None:
        buffer = bytearray(_DatagramSocket.BUFFER_SIZE)
        pair = (buffer, memoryview(buffer))
        _BUFFERS.pair = pair
    return pair


class _DatagramSocket:
    """A non-blocking UDP socket on the event loop.

    Each time the socket is readable every queued datagram is read (up to a bound), not one
    per loop turn as asyncio's datagram transport does: a controller polling a fleet gets
    answers in bursts, and draining them at once is what keeps it fast."""

    MAX_BATCH = 256
    BUFFER_SIZE = 65536  # the largest UDP payload fits

    def __init__(self, sock: socket.socket, deliver: DatagramHandler) -> None:
        self.sock = sock
        self._deliver = deliver
        self._backlog: deque[tuple[bytes, Address]] = deque()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self.closed = False
        self.last_error: OSError | None = None

    def _readable(self) -> None:
        receive = self.sock.recvfrom_into
        buffer, view = _receive_buffer()
        for _ in range(self.MAX_BATCH):
            try:
                size, source = receive(buffer)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP port unreachable from a peer that went away
                self.last_error = exc
                continue
            self._deliver(bytes(view[:size]), source)

    def send(self, data: bytes, destination: Address) -> None:
        if self._backlog:
            self._backlog.append((data, destination))
            return
        try:
            self.sock.sendto(data, destination)
        except (BlockingIOError, InterruptedError):
            self._backlog.append((data, destination))
            self._loop.add_writer(self.sock.fileno(), self._writable)
        except OSError as exc:
            # UDP gives no delivery guarantee; an unreachable peer is a lost datagram
            self.last_error = exc

    def _writable(self) -> None:
        while self._backlog:
            data, destination = self._backlog[0]
            try:
                self.sock.sendto(data, destination)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self.last_error = exc
            self._backlog.popleft()
        self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self.sock.fileno())
        if self._backlog:
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()


class MulticastReceiver:
    """One socket per (event loop, family, port, interface) in the process, receiving the
    ECHONET Lite group and handing each datagram to every subscriber."""

    _shared: ClassVar[dict[tuple[int, int, int, int], MulticastReceiver]] = {}

    def __init__(self, family: socket.AddressFamily, port: int, index: int) -> None:
        self.family = family
        self.port = port
        self.index = index
        self.group = _multicast_group(family)
        # handler -> whether it wants requests only (device nodes) or everything (controllers)
        self._subscribers: dict[DatagramHandler, bool] = {}
        self._socket: _DatagramSocket | None = None
        self._key: tuple[int, int, int, int] = (0, int(family), port, index)

    @classmethod
    async def subscribe(
        cls,
        family: socket.AddressFamily,
        port: int,
        index: int,
        handler: DatagramHandler,
        *,
        requests_only: bool = False,
    ) -> MulticastReceiver:
        key = (id(asyncio.get_running_loop()), int(family), port, index)
        receiver = cls._shared.get(key)
        if receiver is None or receiver._socket is None or receiver._socket.closed:
            receiver = cls(family, port, index)
            receiver._key = key
            await receiver._open()
            cls._shared[key] = receiver
        receiver._subscribers[handler] = requests_only
        return receiver

    def unsubscribe(self, handler: DatagramHandler) -> None:
        self._subscribers.pop(handler, None)
        if not self._subscribers and self._socket is not None:
            self._socket.close()
            self._socket = None
            if self._shared.get(self._key) is self:
                del self._shared[self._key]

    async def _open(self) -> None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            group = socket.inet_pton(self.family, self.group)
            if self.family == socket.AF_INET6:
                sock.bind((self.group, self.port, 0, self.index))
                mreq = group + struct.pack("@I", self.index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            else:
                sock.bind((self.group, self.port))
                mreqn = struct.pack("=4s4si", group, bytes(4), self.index)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TransportError(
                f"cannot receive multicast {self.group} port {self.port} on interface index "
                f"{self.index}: {exc.strerror or exc}"
            ) from exc
        self._socket = _DatagramSocket(sock, self._dispatch)

    def _dispatch(self, data: bytes, addr: Address) -> None:
        # A node has nothing to do with another node's INF; with a thousand nodes in one
        # process, handing every announcement to every node would cost a million decodes.
        esv = data[10] if len(data) > 10 else 0
        request = 0x60 <= esv <= 0x6F or esv == 0x74  # requests and INFC (§3.2.5)
        for handler, requests_only in list(self._subscribers.items()):
            if request or not requests_only:
                handler(data, addr)


class UdpEndpoint:
    """A unicast socket on (bind, port) plus, optionally, the shared multicast receiver.

    ``on_datagram(data, source)`` gets unicast and multicast datagrams alike."""

    def __init__(self, on_datagram: DatagramHandler) -> None:
        self._on_datagram = on_datagram
        self._socket: _DatagramSocket | None = None
        self._receiver: MulticastReceiver | None = None
        self._family = socket.AF_INET
        self._index = 0
        self.address: Address | None = None

    async def open(
        self,
        bind: str = "127.0.0.1",
        *,
        port: int = ECHONET_PORT,
        interface: str | None = None,
        multicast: bool = True,
        receive_buffer: int = 0,
        requests_only: bool = False,
    ) -> None:
        """Bind (``bind``, ``port``); ``receive_buffer`` asks for a larger socket receive
        buffer in bytes (the kernel caps it at net.core.rmem_max); ``requests_only`` skips
        multicast datagrams other than requests (what a device node needs)."""
        family = family_of(bind)
        index = interface_index(interface)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET:
                # a wildcard-bound socket would otherwise also get every joined group's
                # traffic, doubling what the shared receiver delivers
                sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MULTICAST_ALL", 49), 0)
            _set_multicast_out(sock, family, index)
            if receive_buffer:
                # a controller polling a fleet gets a burst of answers at once
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            _bind_unicast(sock, _socket_address(family, bind, port))
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise _bind_error(bind, port, exc) from exc
        self._socket = _DatagramSocket(sock, self._on_datagram)
        self._family = family
        self._index = index
        self.address = sock.getsockname()
        if multicast:
            try:
                self._receiver = await MulticastReceiver.subscribe(
                    family, port, index, self._on_datagram, requests_only=requests_only
                )
            except TransportError:
                self._socket.close()
                self._socket = None
                raise

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    def multicast_destination(self, port: int = ECHONET_PORT) -> Address:
        if self._family == socket.AF_INET6:
            return (MULTICAST_V6, port, 0, self._index)
        return (MULTICAST_V4, port)

    def send(self, data: bytes, destination: Address) -> None:
        """Send one datagram; :data:`~erab.echonet.node.ALL_NODES` means the group."""
        if self._socket is None:
            raise RuntimeError("endpoint is not open")
        if destination[0] == ALL_NODES[0]:
            destination = self.multicast_destination(int(destination[1]))
        self._socket.send(data, destination)

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.unsubscribe(self._on_datagram)
            self._receiver = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        await asyncio.sleep(0)


class NodeEndpoint(UdpEndpoint):
    """Puts a :class:`~erab.echonet.node.LocalNode` on UDP."""

    def __init__(self, node: LocalNode) -> None:
        super().__init__(self._received)
        self.node = node

    def _received(self, data: bytes, source: Address) -> None:
        if source == self.address:
            return  # our own multicast, looped back
        try:
            replies = self.node.handle(data, source)
        except Exception:
            # a fault in a device model must not take the node (or its neighbours) down
            _log.exception("node %s failed on a datagram from %s", self.address, source)
            return
        for reply, destination in replies:
            self.send(reply, destination)

    async def open(self, bind: str = "127.0.0.1", **options: Any) -> None:
        """As :meth:`UdpEndpoint.open`, with ``requests_only`` on unless told otherwise."""
        options.setdefault("requests_only", True)
        await super().open(bind, **options)
        self.node.on_announce = self.send

    async def close(self) -> None:
        self.node.on_announce = None
        await super().close()


def _socket_address(family: socket.AddressFamily, host: str, port: int) -> Address:
    return (host, port, 0, 0) if family == socket.AF_INET6 else (host, port)


def _bind_error(host: str, port: int, exc: OSError) -> TransportError:
    """The error for a unicast bind that failed: which address and port, and why."""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        reason += " (another socket is bound to that address and port)"
    return TransportError(f"cannot bind UDP {host} port {port}: {reason}", errno=exc.errno)


def check_bindable(address: str, port: int = ECHONET_PORT) -> None:
    """Check now that an endpoint could bind UDP (``address``, ``port``); raise
    :class:`TransportError` saying which address and port and why not otherwise
    (``address_in_use`` for a taken one).

    The check binds a socket exactly as :meth:`UdpEndpoint.open` will (so a wildcard
    listener on the port, which an endpoint lives beside, does not count) and closes it at
    once: for refusing a taken address before slow work, not a reservation."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"UDP port must be 0-65535, got {port}")
    family = family_of(address)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        _bind_unicast(sock, _socket_address(family, address, port))
    except OSError as exc:
        raise _bind_error(address, port, exc) from exc
    finally:
        sock.close()


def _bind_unicast(sock: socket.socket, address: Address) -> None:
    """Bind an endpoint's own socket so that a second endpoint on the same address and
    port is refused, while a wildcard listener on the port is lived beside.

    Linux lets two UDP sockets that both set SO_REUSEADDR bind the very same address and
    port, and then hands each unicast datagram to one of them: a second emulator started
    on a taken address would seem to run while the first one answers.  So the first try
    is without SO_REUSEADDR; only if the address clashes with a socket bound to another
    address (0.0.0.0:3610 of another ECHONET Lite stack, such as Home Assistant's) is it
    bound with SO_REUSEADDR beside it.  SO_REUSEADDR is set afterwards in any case, so
    that such a listener started later can bind beside this socket."""
    try:
        sock.bind(address)
    except OSError as exc:
        taken = _bound(sock.family, int(address[1]))
        if exc.errno != errno.EADDRINUSE or taken is None or _same_host(address[0], taken):
            raise
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def _same_host(host: str, bound: set[str]) -> bool:
    return ipaddress.ip_address(host.split("%", 1)[0]).compressed in bound


def _bound(family: socket.AddressFamily, port: int) -> set[str] | None:
    """Addresses with a UDP socket of ``family`` bound on ``port`` (from /proc/net/udp or
    udp6), or None where the table cannot be read."""
    path = "/proc/net/udp6" if family == socket.AF_INET6 else "/proc/net/udp"
    try:
        with open(path) as table:
            lines = table.read().splitlines()[1:]
    except OSError:
        return None
    bound = set()
    for line in lines:
        local = line.split()[1]  # "0100007F:0E1A": address (32-bit little-endian words), port
        address_hex, port_hex = local.split(":")
        if int(port_hex, 16) != port:
            continue
        raw = bytes.fromhex(address_hex)
        packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
        bound.add(ipaddress.ip_address(packed).compressed)
    return bound


def random_loopback_address(port: int = ECHONET_PORT, *, attempts: int = 64) -> str:
    """A 127.x.y.z address whose UDP ``port`` is free right now (for emulators and tests).

    Linux answers on all of 127.0.0.0/8 without configuration; 127.0.0.0/16 is left alone
    because other programs favour it.  An address is free when no socket is bound to it on
    ``port`` (a wildcard socket on the port, e.g. pychonet's, does not count: endpoints bind
    with SO_REUSEADDR beside it)."""
    rng = secrets.SystemRandom()
    for _ in range(attempts):
        host = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
        bound = _bound(socket.AF_INET, port)
        if bound is not None and host in bound:
            continue
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            if bound is not None:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
        except OSError:
            continue
        finally:
            probe.close()
        return host
    raise TransportError(
        f"no free loopback address for UDP port {port} after {attempts} tries (does a "
        f"program hold 0.0.0.0:{port} without SO_REUSEADDR?)"
    )
