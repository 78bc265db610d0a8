"""ECHONET Lite frames: encode and decode, no I/O.

Follows ECHONET Lite Specification Part 2 (ver. 1.14), chapter 3 "Frame format":
EHD1 (0x10) · EHD2 (0x81 Format 1, 0x82 Format 2) · TID (2 bytes) · EDATA.  Format 1 EDATA is
SEOJ (3) · DEOJ (3) · ESV (1) · OPC (1) · OPC × (EPC, PDC, EDT[PDC]); for SetGet and its
answers it is OPCSet · properties · OPCGet · properties (§3.2.5).  Format 2 (arbitrary message
format, §3.2.2) is carried as an opaque body.

Decoding is strict: a datagram must be consumed exactly by its OPC/PDC walk, and anything else
raises :class:`FrameError`, which says what is wrong and at which byte offset.
"""

from __future__ import annotations

from enum import IntEnum
from typing import NamedTuple

EHD1_ECHONET_LITE = 0x10
EHD2_FORMAT1 = 0x81
EHD2_FORMAT2 = 0x82
HEADER_SIZE = 4  # EHD1, EHD2, TID
FORMAT1_MIN_SIZE = 12  # header + SEOJ + DEOJ + ESV + OPC


class FrameError(ValueError):
    """A malformed ECHONET Lite datagram.

    ``offset`` is the byte position (0-based, from EHD1) where decoding found the problem.
    """

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.reason = message
        self.offset = offset


class ESV(IntEnum):
    """ECHONET Lite service codes (Part 2 §3.2.5, Tables 3-9 to 3-11)."""

    # requests
    SetI = 0x60
    SetC = 0x61
    Get = 0x62
    INF_REQ = 0x63
    SetGet = 0x6E
    # responses and notifications
    Set_Res = 0x71
    Get_Res = 0x72
    INF = 0x73
    INFC = 0x74
    INFC_Res = 0x7A
    SetGet_Res = 0x7E
    # "service not available" answers
    SetI_SNA = 0x50
    SetC_SNA = 0x51
    Get_SNA = 0x52
    INF_SNA = 0x53
    SetGet_SNA = 0x5E

    @property
    def is_request(self) -> bool:
        """Requests a node may send to ask something of another (0x60-0x6F), plus INFC,
        which asks for an INFC_Res."""
        return self in _REQUESTS

    @property
    def is_sna(self) -> bool:
        """One of the "service not available" answers (0x50-0x5F)."""
        return 0x50 <= self <= 0x5F

    @property
    def is_setget(self) -> bool:
        """Carries two property lists (set, then get)."""
        return self in (ESV.SetGet, ESV.SetGet_Res, ESV.SetGet_SNA)

    @property
    def may_multicast(self) -> bool:
        """Whether the specification allows this ESV to be sent to all nodes (multicast):
        the five requests, INF, and INF_SNA (answering a multicast INF_REQ)."""
        return self in _MULTICAST

    @property
    def answers(self) -> tuple[ESV, ESV] | None:
        """For a request: (the normal answer, the SNA answer).  SetI's normal answer is
        no answer at all, shown here as Set_Res only for symmetry with SetC; a node must not
        send it (see :attr:`answered_on_success`)."""
        return _ANSWERS.get(self)

    @property
    def answered_on_success(self) -> bool:
        """SetI is the one request that gets no answer when it succeeds (§4.2.3.1)."""
        return self is not ESV.SetI

    @property
    def meaning(self) -> str:
        return _MEANING[self]


_REQUESTS = frozenset({ESV.SetI, ESV.SetC, ESV.Get, ESV.INF_REQ, ESV.SetGet, ESV.INFC})
_MULTICAST = frozenset(
    {ESV.SetI, ESV.SetC, ESV.Get, ESV.INF_REQ, ESV.SetGet, ESV.INF, ESV.INF_SNA}
)
_ANSWERS: dict[ESV, tuple[ESV, ESV]] = {
    ESV.SetI: (ESV.Set_Res, ESV.SetI_SNA),
    ESV.SetC: (ESV.Set_Res, ESV.SetC_SNA),
    ESV.Get: (ESV.Get_Res, ESV.Get_SNA),
    ESV.INF_REQ: (ESV.INF, ESV.INF_SNA),
    ESV.SetGet: (ESV.SetGet_Res, ESV.SetGet_SNA),
    ESV.INFC: (ESV.INFC_Res, ESV.INFC_Res),
}
_MEANING: dict[ESV, str] = {
    ESV.SetI: "property value write request (no response required)",
    ESV.SetC: "property value write request (response required)",
    ESV.Get: "property value read request",
    ESV.INF_REQ: "property value notification request",
    ESV.SetGet: "property value write & read request",
    ESV.Set_Res: "property value write response",
    ESV.Get_Res: "property value read response",
    ESV.INF: "property value notification",
    ESV.INFC: "property value notification (response required)",
    ESV.INFC_Res: "property value notification response",
    ESV.SetGet_Res: "property value write & read response",
    ESV.SetI_SNA: "property value write request (no response required) not possible",
    ESV.SetC_SNA: "property value write request (response required) not possible",
    ESV.Get_SNA: "property value read request not possible",
    ESV.INF_SNA: "property value notification request not possible",
    ESV.SetGet_SNA: "property value write & read request not possible",
}
_ESV_BY_CODE: dict[int, ESV] = {e.value: e for e in ESV}


class EOJ(NamedTuple):
    """An ECHONET object: class group code, class code, instance code (Part 2 §3.2.4)."""

    group: int
    cls: int
    instance: int

    @classmethod
    def of(cls, value: int | str | bytes | EOJ) -> EOJ:
        """Build from 0xGGCCII (int), "0x013001" / "013001" (str) or 3 bytes."""
        if isinstance(value, EOJ):
            return value
        if isinstance(value, bytes | bytearray):
            if len(value) != 3:
                raise ValueError(f"an EOJ is 3 bytes, got {len(value)}: {bytes(value).hex()}")
            return cls(value[0], value[1], value[2])
        if isinstance(value, str):
            text = value.strip().lower().removeprefix("0x")
            if len(text) != 6:
                raise ValueError(
                    f"EOJ {value!r} must be 6 hex digits (group, class, instance), "
                    "e.g. 0x013001"
                )
            try:
                value = int(text, 16)
            except ValueError:
                raise ValueError(f"EOJ {value!r} is not hexadecimal") from None
        if not 0 <= value <= 0xFFFFFF:
            raise ValueError(f"EOJ {value:#x} is out of range 0x000000-0xFFFFFF")
        return cls(value >> 16, (value >> 8) & 0xFF, value & 0xFF)

    @property
    def class_code(self) -> int:
        """Class group and class as one number, 0xGGCC."""
        return (self.group << 8) | self.cls

    @property
    def is_node_profile(self) -> bool:
        return self.group == 0x0E and self.cls == 0xF0

    @property
    def is_all_instances(self) -> bool:
        """Instance code 0x00 addresses every instance of the class (§3.2.4)."""
        return self.instance == 0

    def to_bytes(self) -> bytes:
        return bytes((self.group, self.cls, self.instance))

    def __int__(self) -> int:
        return (self.group << 16) | (self.cls << 8) | self.instance

    def __str__(self) -> str:
        return f"0x{self.group:02X}{self.cls:02X}{self.instance:02X}"


NODE_PROFILE = EOJ(0x0E, 0xF0, 0x01)
"""The general node profile object (0x0EF001)."""


class Property(NamedTuple):
    """One property in a frame: EPC and its EDT (empty for a Get or an accepted Set)."""

    epc: int
    edt: bytes = b""

    @property
    def pdc(self) -> int:
        return len(self.edt)


class Frame(NamedTuple):
    """A Format 1 ECHONET Lite frame.

    ``props`` is the property list; for SetGet, SetGet_Res and SetGet_SNA it is the *set*
    list and ``get_props`` the *get* list.
    """

    tid: int
    seoj: EOJ
    deoj: EOJ
    esv: ESV
    props: tuple[Property, ...]
    get_props: tuple[Property, ...] = ()

    def encode(self) -> bytes:
        return encode_frame(self)


class Format2Frame(NamedTuple):
    """A Format 2 (arbitrary message format) frame: header plus an opaque body."""

    tid: int
    body: bytes

    def encode(self) -> bytes:
        if not 0 <= self.tid <= 0xFFFF:
            raise ValueError(f"TID {self.tid} is out of range 0-65535")
        return bytes((EHD1_ECHONET_LITE, EHD2_FORMAT2, self.tid >> 8, self.tid & 0xFF)) + bytes(
            self.body
        )


_EOJ_CACHE: dict[bytes, EOJ] = {}


def _eoj(raw: bytes) -> EOJ:
    eoj = _EOJ_CACHE.get(raw)
    if eoj is None:
        eoj = EOJ(raw[0], raw[1], raw[2])
        if len(_EOJ_CACHE) < 65536:
            _EOJ_CACHE[raw] = eoj
    return eoj


def _walk(data: bytes, pos: int, count: int, end: int) -> tuple[tuple[Property, ...], int]:
    props = []
    append = props.append
    for index in range(count):
        if pos + 2 > end:
            raise FrameError(
                f"property {index + 1} of {count}: EPC/PDC missing, datagram ends", pos
            )
        epc = data[pos]
        pdc = data[pos + 1]
        if epc < 0x80:
            raise FrameError(f"property {index + 1} of {count}: EPC {epc:#04x} below 0x80", pos)
        start = pos + 2
        pos = start + pdc
        if pos > end:
            raise FrameError(
                f"property {index + 1} of {count} (EPC {epc:#04x}): PDC {pdc} runs past the "
                f"end of the datagram ({end - start} bytes left)",
                start - 1,
            )
        append(Property(epc, data[start:pos]))
    return tuple(props), pos


def decode_frame(data: bytes | bytearray | memoryview) -> Frame | Format2Frame:
    """Decode one datagram.  Raises :class:`FrameError` if it is not a well-formed frame."""
    data = bytes(data)
    end = len(data)
    if end < HEADER_SIZE:
        raise FrameError(f"datagram of {end} bytes is shorter than the 4-byte header", end)
    if data[0] != EHD1_ECHONET_LITE:
        raise FrameError(f"EHD1 is {data[0]:#04x}, ECHONET Lite requires 0x10", 0)
    ehd2 = data[1]
    tid = (data[2] << 8) | data[3]
    if ehd2 == EHD2_FORMAT2:
        return Format2Frame(tid, data[4:])
    if ehd2 != EHD2_FORMAT1:
        raise FrameError(f"EHD2 is {ehd2:#04x}, expected 0x81 (Format 1) or 0x82 (Format 2)", 1)
    if end < FORMAT1_MIN_SIZE:
        raise FrameError(
            f"Format 1 frame of {end} bytes is shorter than the 12 bytes of header, "
            "SEOJ, DEOJ, ESV and OPC",
            end,
        )
    esv = _ESV_BY_CODE.get(data[10])
    if esv is None:
        raise FrameError(f"ESV {data[10]:#04x} is not a defined service code", 10)
    props, pos = _walk(data, 12, data[11], end)
    get_props: tuple[Property, ...] = ()
    if esv is ESV.SetGet or esv is ESV.SetGet_Res or esv is ESV.SetGet_SNA:
        if pos >= end:
            raise FrameError(f"{esv.name}: OPCGet missing after the set properties", pos)
        get_props, pos = _walk(data, pos + 1, data[pos], end)
    if pos != end:
        raise FrameError(
            f"{end - pos} trailing byte(s) after the last property (OPC says {data[11]})", pos
        )
    return Frame(tid, _eoj(data[4:7]), _eoj(data[7:10]), esv, props, get_props)


def _encode_props(props: tuple[Property, ...], what: str) -> bytearray:
    if len(props) > 255:
        raise ValueError(f"{what}: {len(props)} properties, at most 255 fit in OPC")
    out = bytearray((len(props),))
    for prop in props:
        epc, edt = prop
        if not 0x80 <= epc <= 0xFF:
            raise ValueError(f"{what}: EPC {epc:#x} is out of range 0x80-0xFF")
        if len(edt) > 255:
            raise ValueError(f"{what}: EPC {epc:#04x} EDT of {len(edt)} bytes, at most 255")
        out.append(epc)
        out.append(len(edt))
        out += edt
    return out


def encode_frame(frame: Frame) -> bytes:
    """Encode a Format 1 frame; raises ValueError naming the field that cannot be encoded."""
    tid = frame.tid
    if not 0 <= tid <= 0xFFFF:
        raise ValueError(f"TID {tid} is out of range 0-65535")
    out = bytearray((EHD1_ECHONET_LITE, EHD2_FORMAT1, tid >> 8, tid & 0xFF))
    out += bytes(frame.seoj)
    out += bytes(frame.deoj)
    out.append(frame.esv)
    out += _encode_props(frame.props, frame.esv.name)
    if frame.esv.is_setget:
        out += _encode_props(frame.get_props, f"{frame.esv.name} (get list)")
    elif frame.get_props:
        raise ValueError(f"{frame.esv.name} carries one property list; get_props must be empty")
    return bytes(out)
