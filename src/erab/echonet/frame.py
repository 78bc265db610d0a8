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
_MULTICAST = frozenset({ESV.SetI, ESV.SetC, ESV.Get, ESV.INF_REQ, ESV.SetGet, ESV.INF, ESV.INF_SNA})
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
_SETGET_ESVS = frozenset({ESV.SetGet, ESV.SetGet_Res, ESV.SetGet_SNA})


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
                    f"EOJ {value!r} must be 6 hex digits (group, class, instance), e.g. 0x013001"
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


def infc_response(frame: Frame, seoj: EOJ | None = None) -> Frame:
    """The INFC_Res that acknowledges an INFC (Part 2 §4.2.3.6): same TID, the notifying
    object as DEOJ, the notified object as SEOJ (``seoj`` if given — e.g. the one instance
    that answers an INFC addressed to every instance — else the INFC's DEOJ), and the
    notified EPCs echoed with PDC 0."""
    if frame.esv is not ESV.INFC:
        raise ValueError(f"only an INFC is answered with INFC_Res, got {frame.esv.name}")
    return Frame(
        frame.tid,
        frame.deoj if seoj is None else seoj,
        frame.seoj,
        ESV.INFC_Res,
        tuple(Property(p.epc) for p in frame.props),
    )


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
_new = tuple.__new__  # builds NamedTuples without the generated __new__'s extra call


def _eoj(raw: bytes) -> EOJ:
    eoj = _EOJ_CACHE.get(raw)
    if eoj is None:
        eoj = EOJ(raw[0], raw[1], raw[2])
        if len(_EOJ_CACHE) < 65536:
            _EOJ_CACHE[raw] = eoj
    return eoj


def _bytes_left(count: int) -> str:
    return f"{count} byte left" if count == 1 else f"{count} bytes left"


def _walk(data: bytes, pos: int, count: int, end: int) -> tuple[tuple[Property, ...], int]:
    """Read ``count`` EPC/PDC/EDT triples from ``pos``; return them and the next position."""
    props: list[Property] = []
    append = props.append
    for index in range(count):
        start = pos + 2
        if start > end:
            raise FrameError(
                f"property {index + 1} of {count}: EPC/PDC missing, datagram ends", pos
            )
        epc = data[pos]
        if epc < 0x80:
            raise FrameError(f"property {index + 1} of {count}: EPC {epc:#04x} below 0x80", pos)
        pos = start + data[pos + 1]
        if pos > end:
            raise FrameError(
                f"property {index + 1} of {count} (EPC {epc:#04x}): PDC {data[start - 1]} runs "
                f"past the end of the datagram ({_bytes_left(end - start)})",
                start - 1,
            )
        append(_new(Property, (epc, data[start:pos])))
    return tuple(props), pos


_HEADS: dict[bytes, tuple[EOJ, EOJ, ESV, bool]] = {}


def _head(data: bytes) -> tuple[EOJ, EOJ, ESV, bool]:
    """SEOJ, DEOJ, ESV and whether it is a SetGet form, from bytes 4-10 (cached: a LAN has
    few distinct object pairs)."""
    esv = _ESV_BY_CODE.get(data[10])
    if esv is None:
        raise FrameError(f"ESV {data[10]:#04x} is not a defined service code", 10)
    head = (_eoj(data[4:7]), _eoj(data[7:10]), esv, esv in _SETGET_ESVS)
    if len(_HEADS) < 65536:
        _HEADS[data[4:11]] = head
    return head


_PROPERTIES: dict[bytes, Property] = {}
_INTERN_MAX_PDC = 2
_INTERN_MAX_ENTRIES = 1 << 16


def _intern_property(raw: bytes) -> Property:
    """The shared Property for ``raw`` (EPC, PDC, EDT); ``raw`` may be cut short by the end
    of the datagram, in which case the caller's length check rejects the frame."""
    prop: Property = _new(Property, (raw[0], raw[2:]))
    if len(_PROPERTIES) < _INTERN_MAX_ENTRIES:
        _PROPERTIES[raw] = prop
    return prop


def decode_frame(data: bytes | bytearray | memoryview) -> Frame | Format2Frame:
    """Decode one datagram.  Raises :class:`FrameError` if it is not a well-formed frame."""
    if type(data) is not bytes:
        data = bytes(data)
    end = len(data)
    if end < FORMAT1_MIN_SIZE or data[0] != EHD1_ECHONET_LITE or data[1] != EHD2_FORMAT1:
        return _decode_unusual(data)
    head = _HEADS.get(data[4:11]) or _head(data)
    seoj, deoj, esv, setget = head
    count = data[11]
    if count <= 2 and not setget and end > 13:
        # Fast paths for the most common frames on a polled LAN: one or two properties,
        # each checked as strictly as the walk below (EPC >= 0x80, PDCs end at the datagram).
        second = 14 + data[13]  # where the second property starts, or the datagram ends
        if count == 1:
            if second == end and data[12] >= 0x80:
                prop = _new(Property, (data[12], data[14:]))
                return _new(Frame, ((data[2] << 8) | data[3], seoj, deoj, esv, (prop,), ()))
        elif (
            count == 2
            and second + 2 <= end
            and second + 2 + data[second + 1] == end
            and data[12] >= 0x80
            and data[second] >= 0x80
        ):
            first = _new(Property, (data[12], data[14:second]))
            prop = _new(Property, (data[second], data[second + 2 :]))
            return _new(Frame, ((data[2] << 8) | data[3], seoj, deoj, esv, (first, prop), ()))
    # Otherwise one property list is walked inline (the hot path of a controller polling
    # several properties per device); errors are re-found by _walk, which names them.
    pos = 12
    props_list: list[Property] = []
    append = props_list.append
    try:
        for _ in range(count):
            epc = data[pos]  # IndexError past the end: reported precisely by _walk below
            if epc < 0x80:
                break
            start = pos + 2
            pdc = data[pos + 1]
            if pdc <= _INTERN_MAX_PDC:
                # states, modes and requests repeat endlessly on a polled LAN: share them
                raw = data[pos : start + pdc]
                append(_PROPERTIES.get(raw) or _intern_property(raw))
                pos = start + pdc
            else:
                pos = start + pdc
                append(_new(Property, (epc, data[start:pos])))
        else:
            if pos <= end:
                props = tuple(props_list)
                get_props: tuple[Property, ...] = ()
                if setget:
                    if pos >= end:
                        raise FrameError(
                            f"{esv.name}: OPCGet missing after the set properties", pos
                        )
                    get_props, pos = _walk(data, pos + 1, data[pos], end)
                if pos != end:
                    raise FrameError(
                        f"{end - pos} trailing byte(s) after the last property (OPC says {count})",
                        pos,
                    )
                return _new(Frame, ((data[2] << 8) | data[3], seoj, deoj, esv, props, get_props))
    except IndexError:
        pass
    _walk(data, 12, count, end)  # re-walk to raise the precise error
    raise AssertionError("unreachable: the walk above raises")  # pragma: no cover


def _decode_unusual(data: bytes) -> Format2Frame:
    """Format 2 frames and every header error (kept off the hot path)."""
    end = len(data)
    if end < HEADER_SIZE:
        raise FrameError(f"datagram of {end} bytes is shorter than the 4-byte header", end)
    if data[0] != EHD1_ECHONET_LITE:
        raise FrameError(f"EHD1 is {data[0]:#04x}, ECHONET Lite requires 0x10", 0)
    ehd2 = data[1]
    if ehd2 == EHD2_FORMAT2:
        return Format2Frame((data[2] << 8) | data[3], data[4:])
    if ehd2 != EHD2_FORMAT1:
        raise FrameError(f"EHD2 is {ehd2:#04x}, expected 0x81 (Format 1) or 0x82 (Format 2)", 1)
    raise FrameError(
        f"Format 1 frame of {end} bytes is shorter than the 12 bytes of header, "
        "SEOJ, DEOJ, ESV and OPC",
        end,
    )


def _encode_props(out: bytearray, props: tuple[Property, ...], what: str) -> None:
    if len(props) > 255:
        raise ValueError(f"{what}: {len(props)} properties, at most 255 fit in OPC")
    out.append(len(props))
    for epc, edt in props:
        if not isinstance(epc, int) or not 0x80 <= epc <= 0xFF:
            raise ValueError(f"{what}: EPC {epc:#x} is out of range 0x80-0xFF")
        pdc = len(edt)
        if pdc > 255:
            raise ValueError(f"{what}: EPC {epc:#04x} EDT of {pdc} bytes, at most 255")
        out.append(epc)
        out.append(pdc)
        out += edt


def encode_frame(frame: Frame) -> bytes:
    """Encode a Format 1 frame; raises ValueError naming the field that cannot be encoded."""
    tid, seoj, deoj, esv, props, get_props = frame
    if get_props or esv in _SETGET_ESVS:
        return _encode_checked(frame)
    try:
        out = bytearray(b"\x10\x81")
        out += tid.to_bytes(2, "big")
        out += bytes(seoj)
        out += bytes(deoj)
        out.append(esv)
        out.append(len(props))
        for epc, edt in props:
            if epc < 0x80:
                raise ValueError
            out.append(epc)
            out.append(len(edt))  # ValueError above 255
            out += edt
    except (ValueError, OverflowError, TypeError):
        return _encode_checked(frame)  # finds and names the bad field
    return bytes(out)


def _encode_checked(frame: Frame) -> bytes:
    tid, seoj, deoj, esv, props, get_props = frame
    if not isinstance(tid, int) or not 0 <= tid <= 0xFFFF:
        raise ValueError(f"TID {tid!r} is out of range 0-65535")
    for name, eoj in (("SEOJ", seoj), ("DEOJ", deoj)):
        if len(eoj) != 3 or not all(isinstance(b, int) and 0 <= b <= 0xFF for b in eoj):
            raise ValueError(f"{name} {eoj!r} is not three bytes (group, class, instance)")
    out = bytearray((EHD1_ECHONET_LITE, EHD2_FORMAT1, tid >> 8, tid & 0xFF, *seoj, *deoj, esv))
    _encode_props(out, props, esv.name)
    if esv in _SETGET_ESVS:
        _encode_props(out, get_props, f"{esv.name} (get list)")
    elif get_props:
        raise ValueError(f"{esv.name} carries one property list; get_props must be empty")
    return bytes(out)
