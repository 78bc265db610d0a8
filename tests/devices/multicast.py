"""A socket that hears the ECHONET Lite multicast group (224.0.23.0:3610) on loopback."""

from __future__ import annotations

import socket
import struct


def loopback_multicast_listener() -> socket.socket:
    """Non-blocking; shares the port with every node on this machine (SO_REUSEPORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("224.0.23.0", 3610))
    mreq = struct.pack("4s4s", socket.inet_aton("224.0.23.0"), socket.inet_aton("127.0.0.1"))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    sock.setblocking(False)
    return sock
