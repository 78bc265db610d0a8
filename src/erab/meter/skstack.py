"""SKSTACK-IP: the command set of route B Wi-SUN dongles, as a sans-IO codec.

SKSTACK-IP is spoken over a serial line (115200 8N1) by ROHM BP35A1 and BP35C0/C2, Tessera
RL7023 and RATOC RS-WSUHA-P.  Two dialects exist:

* **no side** (BP35A1, RL7023 Stick-D/IPS): ``SKSCAN 2 FFFFFFFF 6``,
  ``SKSENDTO h ip port sec len data``, ``EVENT nn ip [param]``,
  ``ERXUDP sender dest rport lport lla secured len data``;
* **with side** (BP35C0/C2, RS-WSUHA-P): a route-selection field ("side", 0 = route B,
  1 = HAN) after the address in EVENT, in EPANDESC (``Side:``), in SKSCAN and SKSENDTO, and
  ERXUDP carries the signal quality byte and the side:
  ``ERXUDP sender dest rport lport lla lqi secured side len data``.

:class:`SkstackParser` turns dongle output (bytes, in any chunking) into events: it splits
lines at CR LF, a lone CR or a lone LF, reads ERXUDP payloads in ASCII hex (``WOPT 01``) or
binary (``WOPT 00``: exactly ``len`` raw bytes, which may contain CR and LF), recognises the
dongle's echo of our own commands, and reports a line it cannot read as
:class:`MalformedLine` and carries on.  It detects the dialect from what the dongle says.

:class:`CommandParser` is the other side (used by the dongle emulator): commands terminated by
CR or CR LF, with SKSENDTO's binary payload read by its declared length.

The ``format_*`` functions write dongle output lines; :func:`command` writes client commands.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

ECHONET_LITE_PORT = 0x0E1A  # UDP 3610
PANA_PORT = 0x02CC  # UDP 716, PANA authentication

# Events (SKSTACK-IP command reference, "EVENT" table), numbers are hexadecimal.
EVENT_NS_RECEIVED = 0x01
EVENT_NA_RECEIVED = 0x02
EVENT_ECHO_REQUEST = 0x05
EVENT_ED_SCAN_DONE = 0x1F
EVENT_BEACON = 0x20
EVENT_UDP_SENT = 0x21
EVENT_SCAN_DONE = 0x22
EVENT_PANA_FAILED = 0x24
EVENT_PANA_OK = 0x25
EVENT_SESSION_END_REQUEST = 0x26
EVENT_SESSION_ENDED = 0x27
EVENT_SESSION_END_TIMEOUT = 0x28
EVENT_SESSION_LIFETIME = 0x29
EVENT_TX_LIMIT_ON = 0x32
EVENT_TX_LIMIT_OFF = 0x33

EVENT_MEANINGS: dict[int, str] = {
    EVENT_NS_RECEIVED: "neighbour solicitation received",
    EVENT_NA_RECEIVED: "neighbour advertisement received",
    EVENT_ECHO_REQUEST: "echo request received",
    EVENT_ED_SCAN_DONE: "energy-detect scan finished",
    EVENT_BEACON: "beacon received (EPANDESC follows)",
    EVENT_UDP_SENT: "UDP transmission finished",
    EVENT_SCAN_DONE: "active scan finished",
    EVENT_PANA_FAILED: "PANA connection failed (wrong credentials or no answer)",
    EVENT_PANA_OK: "PANA connection established",
    EVENT_SESSION_END_REQUEST: "the peer asked to end the session",
    EVENT_SESSION_ENDED: "PANA session ended",
    EVENT_SESSION_END_TIMEOUT: "PANA session end timed out (session gone)",
    EVENT_SESSION_LIFETIME: "session lifetime expired, re-authenticating",
    EVENT_TX_LIMIT_ON: "transmit time limit reached, sending suspended",
    EVENT_TX_LIMIT_OFF: "transmit time limit lifted",
}

# FAIL ERxx codes (SKSTACK-IP command reference, "error codes").
ERROR_MEANINGS: dict[int, str] = {
    4: "unsupported command",
    5: "wrong number of arguments",
    6: "argument out of range or badly formed",
    9: "UART input error",
    10: "command accepted but failed to execute",
}

# EVENT 21 parameter: result of a UDP transmission.
TX_OK = 0x00
TX_FAILED = 0x01
TX_NEIGHBOUR_SOLICITATION = 0x02

COMMAND_NAMES = frozenset(
    {
        "SKRESET", "SKVER", "SKAPPVER", "SKINFO", "SKSREG", "SKSETRBID", "SKSETPWD",
        "SKSCAN", "SKLL64", "SKJOIN", "SKREJOIN", "SKSENDTO", "SKTERM", "SKSETKEY",
        "SKRMKEY", "SKSECENABLE", "SKPING", "SKTABLE", "SKADDNBR", "SKSAVE", "SKLOAD",
        "SKERASE", "SKUDPPORT", "SKSETPSK", "SKTXTIMER", "ROPT", "WOPT", "WUART", "RUART",
    }
)  # fmt: skip

_HEX = frozenset("0123456789ABCDEFabcdef")
_HEX_BYTES = frozenset(b"0123456789ABCDEFabcdef")
_IPV6_RE = re.compile(r"^[0-9A-Fa-f]{4}(:[0-9A-Fa-f]{4}){7}$")


class Dialect(Enum):
    """Which SKSTACK-IP variant a dongle speaks."""

    NO_SIDE = "no-side"  # BP35A1, RL7023 Stick-D/IPS
    WITH_SIDE = "with-side"  # BP35C0/C2, RS-WSUHA-P, RL7023 Stick-D/DSS

    @classmethod
    def parse(cls, text: str) -> Dialect:
        aliases = {
            "no-side": cls.NO_SIDE, "bp35a1": cls.NO_SIDE, "a1": cls.NO_SIDE,
            "with-side": cls.WITH_SIDE, "bp35c0": cls.WITH_SIDE, "bp35c2": cls.WITH_SIDE,
            "c2": cls.WITH_SIDE, "side": cls.WITH_SIDE,
        }  # fmt: skip
        try:
            return aliases[text.strip().lower()]
        except KeyError:
            raise ValueError(
                f"unknown SKSTACK dialect {text!r}: use 'no-side' (BP35A1) or "
                "'with-side' (BP35C0/C2)"
            ) from None


class SkstackError(ValueError):
    """A malformed SKSTACK-IP line or command argument."""


# --------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Ok:
    """``OK`` (with what follows it, e.g. ``OK 01`` from ROPT)."""

    detail: str = ""


@dataclass(frozen=True)
class Fail:
    """``FAIL ERnn``: the last command failed."""

    code: int

    @property
    def meaning(self) -> str:
        return ERROR_MEANINGS.get(self.code, "unknown error")

    def __str__(self) -> str:
        return f"FAIL ER{self.code:02d} ({self.meaning})"


@dataclass(frozen=True)
class Echo:
    """The dongle echoing a command it received (register SFE = 0)."""

    line: str


@dataclass(frozen=True)
class Event:
    """``EVENT nn sender [side] [param]``."""

    code: int
    sender: str
    side: int | None = None
    param: int | None = None

    @property
    def meaning(self) -> str:
        return EVENT_MEANINGS.get(self.code, "unknown event")


@dataclass(frozen=True)
class PanDescriptor:
    """An ``EPANDESC`` block: one PAN found by an active scan."""

    channel: int
    channel_page: int
    pan_id: int
    mac: str  # 16 hex digits, the coordinator's (meter's) MAC address
    lqi: int
    pair_id: str
    side: int | None = None


@dataclass(frozen=True)
class RxUdp:
    """``ERXUDP``: a UDP datagram received over the radio."""

    sender: str
    dest: str
    rport: int
    lport: int
    sender_lla: str
    secured: int
    data: bytes
    lqi: int | None = None  # with-side dialect: the signal byte (RSSI dBm ≈ 0.275·LQI − 104.27)
    side: int | None = None


@dataclass(frozen=True)
class Info:
    """``EINFO ip mac channel panid addr16-or-side``."""

    ipv6: str
    mac: str
    channel: int
    pan_id: int
    last: str  # BP35A1: the 16-bit short address (FFFE); BP35C2: the side (0/1)


@dataclass(frozen=True)
class Version:
    """``EVER`` / ``EAPPVER``."""

    kind: str
    version: str


@dataclass(frozen=True)
class Address:
    """An IPv6 link-local address line (the answer to SKLL64)."""

    ipv6: str


@dataclass(frozen=True)
class OtherLine:
    """Any other line (register values ``ESREG``, ``EADDR`` tables, ...)."""

    text: str


@dataclass(frozen=True)
class MalformedLine:
    """A line that looked like a known message but could not be read; parsing continues."""

    text: str
    reason: str


DongleEvent = (
    Ok | Fail | Echo | Event | PanDescriptor | RxUdp | Info | Version | Address | OtherLine
    | MalformedLine
)  # fmt: skip


# --------------------------------------------------------------------------- client side


_PANDESC_KEYS = {
    "Channel": "channel",
    "Channel Page": "channel_page",
    "Pan ID": "pan_id",
    "Addr": "mac",
    "LQI": "lqi",
    "Side": "side",
    "PairID": "pair_id",
}


# Bounds on what the parser holds.  ECHONET Lite over route B travels in single UDP datagrams
# no larger than IPv6's minimum MTU allows (1280 - 40 IPv6 header - 8 UDP header = 1232 bytes,
# the most SKSENDTO accepts, 0x04D0): a dongle never reports a larger ERXUDP payload, so a
# bigger declared length is corruption, not data to wait for.
MAX_ERXUDP_DATA = 0x04D0
# The longest line a dongle prints is an ERXUDP with a hex payload: a header of about 130
# characters and 2 x 1232 hex digits.  Anything longer without CR/LF is garbage; it is dropped
# up to its line end so that memory and work stay bounded whatever the dongle sends.
MAX_LINE = 4096
_ERXUDP_HEAD_MAX = 160  # "ERXUDP" and its ten fields (with-side dialect) take about 130


class SkstackParser:
    """Dongle output in, :data:`DongleEvent` values out (no I/O).

    ``dialect`` may be given; otherwise it is learnt from the first line that shows it
    (EINFO, an EVENT with a side, an EPANDESC ``Side:`` line, the ERXUDP field count) and
    is then available as :attr:`dialect`.

    Whatever arrives, in whatever chunks, parsing never fails: what cannot be read becomes a
    :class:`MalformedLine` and the parser resynchronises on the next line end.  It holds at
    most :data:`MAX_LINE` bytes of an unfinished line and drops a longer one; an ERXUDP
    declaring more than :data:`MAX_ERXUDP_DATA` bytes is malformed.  Work is linear in the
    input.
    """

    def __init__(self, dialect: Dialect | None = None, *, hex_payload: bool | None = None) -> None:
        self.dialect = dialect
        self.hex_payload = hex_payload  # None: tell hex from binary payloads by their shape
        self._buf = bytearray()
        self._scanned = 0  # bytes at the head of _buf known to hold no CR or LF
        self._discarding = False  # dropping the rest of an overlong line until its line end
        self._pandesc: dict[str, str] | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a line (at most about :data:`MAX_LINE`)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[DongleEvent]:
        """Add bytes read from the dongle; return every event now complete."""
        if self._discarding:
            end = _line_end(data)
            if end < 0:
                return []
            data = data[end:]
            self._discarding = False
        self._buf += data
        events: list[DongleEvent] = []
        while True:
            event = self._next()
            if event is None:
                if len(self._buf) > MAX_LINE:
                    events.append(self._drop_overlong())
                    continue
                break
            if event is not _SKIP:
                events.append(event)  # type: ignore[arg-type]
        return events

    def _consume(self, n: int) -> None:
        del self._buf[:n]
        self._scanned = 0

    # one complete item off the buffer, _SKIP for an empty line, None if incomplete
    def _next(self) -> DongleEvent | object | None:
        buf = self._buf
        blank = 0
        while blank < len(buf) and buf[blank] in (0x0D, 0x0A):
            blank += 1
        if blank:
            self._consume(blank)
        if not buf:
            return None
        if buf.startswith(b"ERXUDP "):
            return self._erxudp()
        end = _line_end(buf, self._scanned)
        if end < 0:
            self._scanned = len(buf)  # the next feed looks only at the new bytes
            return None
        raw = bytes(buf[:end])
        self._consume(end)
        text = raw.decode("ascii", errors="replace").rstrip()
        return self._line(text)

    def _drop_overlong(self) -> MalformedLine:
        """Drop an unfinished item longer than any real one, up to its line end if there
        is one, else everything held (and the rest of the line as it arrives)."""
        text = bytes(self._buf[:80]).decode("ascii", "replace")
        size = len(self._buf)
        end = _line_end(self._buf)
        if end >= 0:
            self._consume(end)
        else:
            self._consume(size)
            self._discarding = True
        return MalformedLine(text, f"unterminated line longer than {MAX_LINE} bytes dropped")

    def _resync(self, start: int) -> None:
        """Drop the buffer up to the first line end at or after ``start`` (or all of it,
        and the rest of the line as it arrives)."""
        end = _line_end(self._buf, start)
        if end >= 0:
            self._consume(end)
        else:
            self._consume(len(self._buf))
            self._discarding = True

    def _erxudp(self) -> DongleEvent | object | None:
        """ERXUDP: hex payload (one line) or binary payload (``len`` raw bytes)."""
        buf = self._buf
        # the header tokens (up to the data length) lie within the first _ERXUDP_HEAD_MAX
        # bytes; a hex payload follows on the same line, a binary one may hold CR and LF
        region = bytes(buf[:_ERXUDP_HEAD_MAX])
        head_end = _line_end(region)
        whole = head_end >= 0 or len(region) >= _ERXUDP_HEAD_MAX  # no more header to come
        tokens_region = region[:head_end] if head_end >= 0 else region
        parts = tokens_region.split(b" ")
        text = tokens_region[:120].decode("ascii", "replace")
        # parts[0] = ERXUDP, 1-5 = sender dest rport lport lla
        if len(parts) < 8:
            if not whole:
                return None
            self._resync(0)
            return MalformedLine(text, "ERXUDP too short")
        with_side = len(parts[6]) == 2  # the signal byte; the no-side dialect has secured (1)
        nfixed = 10 if with_side else 8  # tokens up to and including datalen
        if len(parts) < nfixed + 1:
            if not whole:
                return None
            self._resync(0)
            return MalformedLine(text, "ERXUDP fields missing")
        try:
            head = [p.decode("ascii") for p in parts[:nfixed]]
            datalen = int(head[-1], 16)
            if len(head[-1]) != 4:
                raise ValueError(head[-1])
        except (UnicodeDecodeError, ValueError):
            self._resync(0)
            return MalformedLine(text, "bad ERXUDP data length")
        header_bytes = sum(len(p) + 1 for p in parts[:nfixed])  # tokens plus their spaces
        if datalen > MAX_ERXUDP_DATA:
            self._resync(header_bytes)
            return MalformedLine(
                text,
                f"ERXUDP data length {datalen} exceeds the largest route B datagram "
                f"({MAX_ERXUDP_DATA} bytes)",
            )
        hexlen = 2 * datalen
        rest = bytes(buf[header_bytes : header_bytes + hexlen + 1])
        looks_hex = (
            len(rest) > hexlen
            and rest[hexlen : hexlen + 1] in (b"\r", b"\n")
            and all(c in _HEX_BYTES for c in rest[:hexlen])
        )
        looks_binary = len(rest) > datalen and rest[datalen : datalen + 1] in (b"\r", b"\n")
        if looks_hex and self.hex_payload is not False:
            data = bytes.fromhex(rest[:hexlen].decode("ascii"))
            consumed = header_bytes + hexlen
        elif looks_binary and self.hex_payload is not True:
            data = rest[:datalen]
            consumed = header_bytes + datalen
        elif self.hex_payload and _line_end(rest[:hexlen]) >= 0:
            self._resync(header_bytes)
            return MalformedLine(
                text, f"ERXUDP hex payload shorter than its declared length {datalen}"
            )
        elif len(rest) <= (hexlen if self.hex_payload is not False else datalen):
            return None  # wait for the rest of the payload and its line end
        else:
            self._resync(header_bytes)
            return MalformedLine(
                text, f"ERXUDP payload does not match its declared length {datalen}"
            )
        self._consume(consumed)
        try:
            return self._rxudp(head, data, with_side)
        except (ValueError, IndexError) as exc:
            return MalformedLine(" ".join(head), f"bad ERXUDP field: {exc}")

    def _rxudp(self, head: list[str], data: bytes, with_side: bool) -> RxUdp:
        if with_side:
            self._learn(Dialect.WITH_SIDE)
            _, sender, dest, rport, lport, lla, lqi, secured, side, _len = head
            return RxUdp(
                sender,
                dest,
                int(rport, 16),
                int(lport, 16),
                lla,
                int(secured, 16),
                data,
                lqi=int(lqi, 16),
                side=int(side, 16),
            )
        self._learn(Dialect.NO_SIDE)
        _, sender, dest, rport, lport, lla, secured, _len = head
        return RxUdp(sender, dest, int(rport, 16), int(lport, 16), lla, int(secured, 16), data)

    def _learn(self, dialect: Dialect) -> None:
        if self.dialect is None:
            self.dialect = dialect

    def _line(self, text: str) -> DongleEvent | object:
        if not text.strip():
            return _SKIP
        if self._pandesc is not None:
            if text.startswith(" ") and ":" in text:
                key, _, value = text.strip().partition(":")
                self._pandesc[key.strip()] = value.strip()
                if key.strip() == "PairID":
                    return self._finish_pandesc()
                return _SKIP
            pending = self._finish_pandesc()
            self._buf[:0] = text.encode() + b"\r\n"  # re-read this line afterwards
            self._scanned = 0
            return pending
        word, _, rest = text.partition(" ")
        try:
            if word == "OK":
                return Ok(rest.strip())
            if word == "FAIL":
                code = rest.strip()
                if not (code.startswith("ER") and code[2:].isdigit()):
                    return MalformedLine(text, "FAIL without an ERnn code")
                return Fail(int(code[2:]))
            if word == "EVENT":
                return self._event(text)
            if word == "EPANDESC":
                self._pandesc = {}
                return _SKIP
            if word == "EINFO":
                return self._info(text)
            if word in ("EVER", "EAPPVER"):
                return Version(word, rest.strip())
            if word in COMMAND_NAMES:
                return Echo(text)
            if _IPV6_RE.match(text.strip()):
                return Address(text.strip())
        except (ValueError, IndexError) as exc:
            return MalformedLine(text, str(exc))
        return OtherLine(text)

    def _event(self, text: str) -> Event | MalformedLine:
        parts = text.split()
        if len(parts) < 3 or len(parts[1]) != 2 or not set(parts[1]) <= _HEX:
            return MalformedLine(text, "EVENT needs a 2-digit hex number and a sender address")
        code = int(parts[1], 16)
        extra = parts[3:]
        side: int | None = None
        param: int | None = None
        if extra and len(extra[0]) == 1:  # with-side dialect: side is one digit, param two
            self._learn(Dialect.WITH_SIDE)
            side = int(extra[0], 16)
            extra = extra[1:]
        elif code in (EVENT_UDP_SENT,) and extra:
            self._learn(Dialect.NO_SIDE)
        if extra:
            param = int(extra[0], 16)
        return Event(code, parts[2], side, param)

    def _info(self, text: str) -> Info:
        _, ipv6, mac, channel, pan, last = text.split()[:6]
        self._learn(Dialect.WITH_SIDE if len(last) == 1 else Dialect.NO_SIDE)
        return Info(ipv6, mac, int(channel, 16), int(pan, 16), last)

    def _finish_pandesc(self) -> PanDescriptor | MalformedLine:
        fields = self._pandesc or {}
        self._pandesc = None
        try:
            side = fields.get("Side")
            if side is not None:
                self._learn(Dialect.WITH_SIDE)
            return PanDescriptor(
                channel=int(fields["Channel"], 16),
                channel_page=int(fields["Channel Page"], 16),
                pan_id=int(fields["Pan ID"], 16),
                mac=fields["Addr"],
                lqi=int(fields["LQI"], 16),
                pair_id=fields["PairID"],
                side=None if side is None else int(side, 16),
            )
        except (KeyError, ValueError) as exc:
            return MalformedLine("EPANDESC " + repr(fields), f"incomplete PAN description: {exc}")


_SKIP = object()


def _line_end(buf: bytes | bytearray, start: int = 0) -> int:
    """Index of the first CR or LF at or after ``start``, or -1."""
    cr = buf.find(b"\r", start)
    lf = buf.find(b"\n", start)
    if cr < 0:
        return lf
    if lf < 0:
        return cr
    return min(cr, lf)


# --------------------------------------------------------------------------- commands


def _check_ipv6(ipv6: str) -> str:
    if not _IPV6_RE.match(ipv6):
        raise SkstackError(
            f"IPv6 address {ipv6!r} must be written in full, 8 groups of 4 hex digits "
            "(e.g. FE80:0000:0000:0000:021D:1290:0003:C890)"
        )
    return ipv6.upper()


def check_route_b_id(rbid: str) -> str:
    """The route B authentication ID: 32 ASCII letters/digits (issued by the utility)."""
    if len(rbid) != 32 or not rbid.isascii() or not rbid.isalnum():
        raise SkstackError(
            f"route B ID must be 32 ASCII letters or digits, got {len(rbid)} characters"
        )
    return rbid


def check_route_b_password(password: str) -> str:
    """The route B password: 12 ASCII letters/digits."""
    if len(password) != 12 or not password.isascii() or not password.isalnum():
        raise SkstackError(
            f"route B password must be 12 ASCII letters or digits, got {len(password)} characters"
        )
    return password


def command(name: str, *args: str | int) -> bytes:
    """One command line, CR LF terminated (``command("SKSREG", "S2", "21")``)."""
    words = [name, *(a if isinstance(a, str) else f"{a:X}" for a in args)]
    return (" ".join(words) + "\r\n").encode("ascii")


def set_rbid(rbid: str) -> bytes:
    return command("SKSETRBID", check_route_b_id(rbid))


def set_password(password: str) -> bytes:
    # SKSETPWD <len in hex> <password>
    return command("SKSETPWD", f"{len(check_route_b_password(password)):X}", password)


def scan(duration: int, dialect: Dialect, *, channel_mask: int = 0xFFFFFFFF) -> bytes:
    """Active scan (mode 2) with information element; the side argument only where spoken."""
    if not 0 <= duration <= 14:
        raise SkstackError(f"scan duration must be 0-14, got {duration}")
    args: list[str] = ["2", f"{channel_mask:08X}", f"{duration:X}"]
    if dialect is Dialect.WITH_SIDE:
        args.append("0")
    return command("SKSCAN", *args)


SCAN_CHANNELS = 28  # channel mask FFFFFFFF: the 28 channels 33-60 of the 920 MHz band


def scan_time_s(duration: int, channels: int = SCAN_CHANNELS) -> float:
    """How long an active scan of ``duration`` lasts (SKSCAN: each channel is listened to
    for 0.01 s × (2^duration + 1)); duration 6 takes about 18 s, 8 about 72 s."""
    return channels * 0.01 * float(2**duration + 1)


def ll64(mac: str) -> bytes:
    if len(mac) != 16 or not set(mac) <= _HEX:
        raise SkstackError(f"MAC address {mac!r} must be 16 hex digits")
    return command("SKLL64", mac.upper())


def sendto(
    handle: int,
    ipv6: str,
    data: bytes,
    dialect: Dialect,
    *,
    port: int = ECHONET_LITE_PORT,
    secured: int = 1,
    side: int = 0,
) -> bytes:
    """``SKSENDTO`` header and binary payload (the payload follows one space, no CR LF)."""
    if not 1 <= handle <= 6:
        raise SkstackError(f"UDP handle must be 1-6, got {handle}")
    if not 0 < len(data) <= 0x04D0:
        raise SkstackError(f"SKSENDTO payload must be 1-1232 bytes, got {len(data)}")
    args = [str(handle), _check_ipv6(ipv6), f"{port:04X}", str(secured)]
    if dialect is Dialect.WITH_SIDE:
        args.append(str(side))
    args.append(f"{len(data):04X}")
    return ("SKSENDTO " + " ".join(args) + " ").encode("ascii") + data


def mac_to_link_local(mac: str) -> str:
    """SKLL64's rule: fe80::/64 with the MAC's universal/local bit inverted (RFC 4291 App. A)."""
    raw = bytearray(bytes.fromhex(mac))
    raw[0] ^= 0x02
    groups = [raw[i : i + 2].hex().upper() for i in range(0, 8, 2)]
    return "FE80:0000:0000:0000:" + ":".join(groups)


# --------------------------------------------------------------------------- dongle side


@dataclass(frozen=True)
class Command:
    """A command received by a dongle; ``data`` is SKSENDTO's binary payload."""

    name: str
    args: tuple[str, ...]
    data: bytes = b""
    line: str = ""


@dataclass(frozen=True)
class CommandError:
    """Input the dongle could not take: answered with ``FAIL ERnn``."""

    code: int
    line: str
    reason: str


class CommandParser:
    """Client input in, :class:`Command` values out (the dongle's side, no I/O).

    SKSENDTO's payload is read by its declared length; the argument count before it
    depends on the dongle's ``dialect``.
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Command | CommandError]:
        self._buf += data
        out: list[Command | CommandError] = []
        while True:
            item = self._next()
            if item is None:
                return out
            out.append(item)

    def _next(self) -> Command | CommandError | None:
        buf = self._buf
        while buf and buf[0] in (0x0D, 0x0A):
            del buf[0]
        if not buf:
            return None
        if buf.startswith(b"SKSENDTO "):
            return self._sendto()
        end = _line_end(buf)
        if end < 0:
            if len(buf) > 512:
                line = bytes(buf[:40]).decode("ascii", "replace")
                buf.clear()
                return CommandError(9, line, "input line longer than 512 bytes")
            return None
        raw = bytes(buf[:end])
        del buf[:end]
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            return CommandError(9, raw.decode("ascii", "replace"), "non-ASCII command line")
        parts = text.split()
        return Command(parts[0], tuple(parts[1:]), line=text) if parts else self._next()

    def _sendto(self) -> Command | CommandError | None:
        buf = self._buf
        nargs = 6 if self.dialect is Dialect.WITH_SIDE else 5
        # header: "SKSENDTO" + nargs tokens, each followed by one space
        pos = 0
        for _ in range(nargs + 1):
            nxt = buf.find(b" ", pos)
            if nxt < 0:
                end = _line_end(buf)
                if end >= 0:  # line ended before the payload: wrong argument count
                    line = bytes(buf[:end]).decode("ascii", "replace")
                    del buf[:end]
                    return CommandError(5, line, f"SKSENDTO needs {nargs} arguments")
                return None
            early = _line_end(buf[:nxt])
            if early >= 0:
                line = bytes(buf[:early]).decode("ascii", "replace")
                del buf[:early]
                return CommandError(5, line, f"SKSENDTO needs {nargs} arguments")
            pos = nxt + 1
        header = bytes(buf[: pos - 1]).decode("ascii", "replace")
        parts = header.split(" ")
        try:
            length = int(parts[-1], 16)
            if len(parts[-1]) != 4:
                raise ValueError
        except ValueError:
            del buf[:pos]
            return CommandError(
                6, header, f"SKSENDTO data length {parts[-1]!r} is not 4 hex digits"
            )
        if len(buf) < pos + length:
            return None
        data = bytes(buf[pos : pos + length])
        del buf[: pos + length]
        return Command("SKSENDTO", tuple(parts[1:]), data, header)


def format_event(
    code: int, sender: str, dialect: Dialect, *, side: int = 0, param: int | None = None
) -> str:
    words = [f"EVENT {code:02X}", sender]
    if dialect is Dialect.WITH_SIDE:
        words.append(f"{side:X}")
    if param is not None:
        words.append(f"{param:02X}")
    return " ".join(words)


def format_pandesc(desc: PanDescriptor, dialect: Dialect) -> list[str]:
    lines = [
        "EPANDESC",
        f"  Channel:{desc.channel:02X}",
        f"  Channel Page:{desc.channel_page:02X}",
        f"  Pan ID:{desc.pan_id:04X}",
        f"  Addr:{desc.mac}",
        f"  LQI:{desc.lqi:02X}",
    ]
    if dialect is Dialect.WITH_SIDE:
        lines.append(f"  Side:{desc.side or 0:X}")
    lines.append(f"  PairID:{desc.pair_id}")
    return lines


def format_erxudp(rx: RxUdp, dialect: Dialect, *, hex_payload: bool) -> bytes:
    """One ERXUDP line; the payload in ASCII hex (``WOPT 01``) or raw (``WOPT 00``)."""
    words = [
        "ERXUDP",
        rx.sender,
        rx.dest,
        f"{rx.rport:04X}",
        f"{rx.lport:04X}",
        rx.sender_lla,
    ]
    if dialect is Dialect.WITH_SIDE:
        words += [f"{rx.lqi or 0:02X}", f"{rx.secured:X}", f"{rx.side or 0:X}"]
    else:
        words.append(f"{rx.secured:X}")
    words.append(f"{len(rx.data):04X}")
    head = (" ".join(words) + " ").encode("ascii")
    return head + (rx.data.hex().upper().encode("ascii") if hex_payload else rx.data)


def iter_lines(lines: Iterable[str], ending: bytes) -> bytes:
    # a line echoing garbled input may hold U+FFFD: it goes out as "?"
    return b"".join(line.encode("ascii", "replace") + ending for line in lines)
