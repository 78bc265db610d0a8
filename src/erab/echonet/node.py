"""The device side of ECHONET Lite: device objects hosted by a node, sans-IO.

A :class:`LocalNode` hosts :class:`DeviceObject` instances plus the node profile (0x0EF001)
and answers requests as ECHONET Lite Part 2 §4.2.3 ("Basic sequences for service content")
says.  :meth:`LocalNode.handle` takes one datagram and its source address and returns the
datagrams to send; it never touches a socket, so a Wi-SUN dongle emulator can feed it frames
directly.  :meth:`LocalNode.start` puts it on UDP through :mod:`erab.echonet.transport`.

Behaviour for an emulated or real appliance comes from subclassing :class:`DeviceObject`:
override :meth:`~DeviceObject.on_get` for live values, :meth:`~DeviceObject.on_set` to act on
a Set (raise :class:`SetRejected` to refuse), and call :meth:`~DeviceObject.update` when the
model changes a value (the node then announces it if the property's rule says so).
"""

from __future__ import annotations

import functools
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from erab.echonet.classdb import DeviceClass, PropertySpec, get_class
from erab.echonet.defaults import PLAUSIBLE_EDT, default_edt
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
from erab.echonet.propmap import encode_class_list, encode_instance_list, encode_property_map

if TYPE_CHECKING:
    from erab.echonet.transport import NodeEndpoint

Address = tuple[Any, ...]
"""A socket address as asyncio gives it: (host, port) for IPv4, (host, port, flow, scope) v6."""

ECHONET_PORT = 3610
MULTICAST_V4 = "224.0.23.0"
MULTICAST_V6 = "ff02::1"
ALL_NODES: Address = (MULTICAST_V4, ECHONET_PORT)
"""Destination that means "multicast to every node"; the transport maps it to the group of
its address family (224.0.23.0 or ff02::1)."""

DEFAULT_MANUFACTURER_CODE = 0xFFFFFF
"""Used when no maker code is given: outside the codes the ECHONET Consortium assigns."""

#: Super class properties every device object carries (Appendix, device object super class).
_SUPER_DEFAULTS: dict[int, bytes] = {
    0x80: b"\x30",  # operation status: ON
    0x81: b"\x00",  # installation location: not specified
    0x88: b"\x42",  # fault status: no fault
}
_MAP_EPCS = (0x9D, 0x9E, 0x9F)
_NOT_APPLICABLE = "notApplicable"
_ANNOUNCE_RULES = frozenset({"required", "required_c"})


class SetRejected(Exception):
    """Raised by :meth:`DeviceObject.on_set` to refuse a Set; the EPC goes back in the SNA."""


def _release_letter(release: str | None) -> int:
    if release is None or release.strip().lower() == "latest":
        return ord("R")  # the newest Appendix release the class database describes
    text = release.strip().upper().removeprefix("RELEASE").strip()
    if len(text) != 1 or not "A" <= text <= "Z":
        raise ValueError(f"release {release!r} must be one letter A-Z, e.g. 'R'")
    return ord(text)


def _class_rules(class_code: int) -> DeviceClass | None:
    """The class database entry, or None where the database does not know the class."""
    try:
        return get_class(class_code)
    except KeyError:
        return None


def _spec_of(device_class: DeviceClass | None, epc: int) -> PropertySpec | None:
    return None if device_class is None else device_class.properties.get(epc)


@functools.cache
def _requires_identification(class_code: int, release: str | None) -> bool:
    device_class = _class_rules(class_code)
    if device_class is None:
        return False
    return any(spec.epc == 0x83 for spec in device_class.mandatory("get", release))


_DEFAULTS_CACHE: dict[tuple[int, str | None], dict[int, bytes]] = {}


def mandatory_defaults(class_code: int, release: str | None = None) -> dict[int, bytes]:
    """Default EDTs for the properties a class requires (get, set or announce), from the
    class database, plus the super class ones every device object has."""
    key = (class_code, release)
    cached = _DEFAULTS_CACHE.get(key)
    if cached is not None:
        return dict(cached)
    values = dict(_SUPER_DEFAULTS)
    device_class = _class_rules(class_code)
    if device_class is not None:
        specs: dict[int, PropertySpec] = {}
        for access in ("get", "set", "inf"):
            for spec in device_class.mandatory(access, release):
                specs[spec.epc] = spec
        for epc, spec in specs.items():
            if epc in values or epc in _MAP_EPCS or epc in (0x82, 0x8A, 0x83):
                continue
            try:
                edt = default_edt(spec.schema)
                spec.decode(edt)
            except Exception:  # a schema we cannot fill: leave it to the caller
                continue
            values[epc] = edt
        for epc, edt in PLAUSIBLE_EDT.get(class_code, {}).items():
            plausible = _spec_of(device_class, epc)
            if epc in values and plausible is not None:
                try:
                    plausible.decode(edt)
                except Exception:  # the table disagrees with the database: keep the default
                    continue
                values[epc] = edt
    _DEFAULTS_CACHE[key] = values
    return dict(values)


class DeviceObject:
    """One ECHONET Lite object (device or profile) with its property values.

    ``values`` gives EDTs that override the defaults; the class's mandatory properties are
    filled with plausible defaults.  Access rules come from the class database; ``settable``
    and ``announced`` override them (needed for classes the database does not describe).
    """

    def __init__(
        self,
        eoj: EOJ | int | str,
        values: Mapping[int, bytes] | None = None,
        *,
        release: str | None = None,
        settable: Iterable[int] | None = None,
        announced: Iterable[int] | None = None,
    ) -> None:
        self.eoj: EOJ = EOJ.of(eoj)
        self._class = _class_rules(self.eoj.class_code)
        self._release = release
        self._values: dict[int, bytes] = {}
        if not self.eoj.is_node_profile:
            self._values.update(mandatory_defaults(self.eoj.class_code, release))
            # 0x82 for a device object: 0x00, 0x00, release letter, revision (Appendix §2)
            self._values[0x82] = bytes((0, 0, _release_letter(release), 0))
            self._values[0x8A] = DEFAULT_MANUFACTURER_CODE.to_bytes(3, "big")
            if _requires_identification(self.eoj.class_code, release):
                # 0x83 where the class requires it: 0xFE, maker code, 13 unique bytes
                maker = DEFAULT_MANUFACTURER_CODE.to_bytes(3, "big")
                self._values[0x83] = b"\xfe" + maker + secrets.token_bytes(13)
        self._given: frozenset[int] = frozenset(values or ())
        for epc, edt in (values or {}).items():
            self._values[epc] = self._checked(epc, edt)
        self._settable = frozenset(settable) if settable is not None else None
        self._announced = frozenset(announced) if announced is not None else None
        self._node: LocalNode | None = None

    # -- what the object offers -------------------------------------------------------
    @property
    def epcs(self) -> frozenset[int]:
        """Hosted properties (what the Get property map 0x9F lists)."""
        return frozenset(self._values).union(_MAP_EPCS)

    def _rule(self, epc: int, access: str) -> str | None:
        spec = _spec_of(self._class, epc)
        return None if spec is None else str(getattr(spec, access))

    def is_gettable(self, epc: int) -> bool:
        if epc not in self._values and epc not in _MAP_EPCS:
            return False
        return self._rule(epc, "get") != _NOT_APPLICABLE

    def is_settable(self, epc: int) -> bool:
        if epc not in self._values:
            return False
        if self._settable is not None:
            return epc in self._settable
        rule = self._rule(epc, "set")
        return rule is not None and rule != _NOT_APPLICABLE

    def is_announced(self, epc: int) -> bool:
        """Whether a change of ``epc`` is announced (status change announcement map)."""
        if epc not in self._values:
            return False
        if self._announced is not None:
            return epc in self._announced
        if epc == 0x80:
            return True  # operation status is announced by every device (Appendix §2.1)
        return self._rule(epc, "inf") in _ANNOUNCE_RULES

    @property
    def get_map(self) -> frozenset[int]:
        return frozenset(e for e in self.epcs if self.is_gettable(e))

    @property
    def set_map(self) -> frozenset[int]:
        return frozenset(e for e in self._values if self.is_settable(e))

    @property
    def announce_map(self) -> frozenset[int]:
        return frozenset(e for e in self._values if self.is_announced(e))

    # -- values -----------------------------------------------------------------------
    def read(self, epc: int) -> bytes | None:
        """Current EDT of ``epc`` (live value from :meth:`on_get` first), None if not hosted."""
        if epc == 0x9F:
            return encode_property_map(self.get_map)
        if epc == 0x9E:
            return encode_property_map(self.set_map)
        if epc == 0x9D:
            return encode_property_map(self.announce_map)
        live = self.on_get(epc)
        if live is not None:
            return live
        return self._values.get(epc)

    def on_get(self, epc: int) -> bytes | None:
        """Override to give live values from a model; None falls back to the stored value."""
        return None

    def on_set(self, epc: int, edt: bytes) -> None:
        """Override to act on an accepted, valid Set; raise :class:`SetRejected` to refuse.

        Called before the value is stored, so a model can still refuse it."""

    def validate(self, epc: int, edt: bytes) -> bool:
        """Whether ``edt`` is a value the class allows for ``epc`` (value codecs)."""
        spec = _spec_of(self._class, epc)
        if spec is None:
            return len(edt) > 0
        try:
            spec.decode(edt)
        except Exception:  # any codec failure means "not an allowed value"
            return False
        return True

    def write(self, epc: int, edt: bytes) -> bool:
        """Apply a Set from the network: access rule, value check, then :meth:`on_set`.

        Returns whether it was accepted (stored, and announced if it changed)."""
        edt = bytes(edt)
        if not edt or not self.is_settable(epc) or not self.validate(epc, edt):
            return False
        try:
            self.on_set(epc, edt)
        except SetRejected:
            return False
        self.update(epc, edt)
        return True

    def _checked(self, epc: int, edt: bytes) -> bytes:
        if not 0x80 <= epc <= 0xFF:
            raise ValueError(f"{self.eoj}: EPC {epc:#x} is out of range 0x80-0xFF")
        edt = bytes(edt)
        if len(edt) > 255:
            raise ValueError(f"{self.eoj}: EPC 0x{epc:02X} value of {len(edt)} bytes, at most 255")
        return edt

    def update(self, epc: int, edt: bytes) -> None:
        """The model pushes a value; a changed value of an announced property is sent as INF."""
        edt = self._checked(epc, edt)
        before = self._values.get(epc)
        self._values[epc] = edt
        if before != edt and self._node is not None and self.is_announced(epc):
            self._node.announce(self, (epc,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.eoj})"


class NodeProfile(DeviceObject):
    """The node profile object 0x0EF001, whose properties follow the node's contents."""

    _FIXED: ClassVar[frozenset[int]] = frozenset(
        {0x80, 0x82, 0x83, 0x8A, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7}
    )

    def __init__(self, node: LocalNode, *, version: tuple[int, int] = (1, 14)) -> None:
        super().__init__(NODE_PROFILE)
        self._owner = node
        self._values.update(
            {
                0x80: b"\x30",
                # version: major, minor, message formats (bit0: Format 1), reserved (§6.11.1)
                0x82: bytes((version[0], version[1], 0x01, 0x00)),
                0x88: b"\x42",
            }
        )

    def is_gettable(self, epc: int) -> bool:
        if epc == 0xD5:
            return False  # announced only, not readable (node profile, 0xD5)
        return epc in self._FIXED or epc in _MAP_EPCS or epc in self._values

    def is_settable(self, epc: int) -> bool:
        return False

    def is_announced(self, epc: int) -> bool:
        return epc in (0x80, 0xD5)

    @property
    def epcs(self) -> frozenset[int]:
        return frozenset(self._values).union(self._FIXED, _MAP_EPCS)

    @property
    def announce_map(self) -> frozenset[int]:
        return frozenset((0x80, 0xD5))

    def on_get(self, epc: int) -> bytes | None:
        node = self._owner
        if epc == 0x83:
            return node.identification
        if epc == 0x8A:
            return node.manufacturer_code.to_bytes(3, "big")
        devices = node.objects
        if epc == 0xD3:
            return len(devices).to_bytes(3, "big")
        if epc == 0xD4:
            # classes of the node including the node profile class (§ node profile 0xD4)
            return (len({d.eoj.class_code for d in devices}) + 1).to_bytes(2, "big")
        if epc in (0xD5, 0xD6):
            return encode_instance_list([d.eoj for d in devices][:84])
        if epc == 0xD7:
            return encode_class_list(sorted({d.eoj.class_code for d in devices}))
        return None


Announce = Callable[[bytes, Address], None]


class LocalNode:
    """An ECHONET Lite node: device objects plus the node profile, answering requests.

    ``identification`` is the node's unique identification number (node profile 0x83):
    17 bytes starting 0xFE, or the 13 unique bytes after the maker code; random if None.
    """

    def __init__(
        self,
        objects: Sequence[DeviceObject] = (),
        *,
        manufacturer_code: int = DEFAULT_MANUFACTURER_CODE,
        identification: bytes | None = None,
        version: tuple[int, int] = (1, 14),
    ) -> None:
        if not 0 <= manufacturer_code <= 0xFFFFFF:
            raise ValueError(f"manufacturer code {manufacturer_code:#x} must fit 3 bytes")
        self.manufacturer_code = manufacturer_code
        maker = manufacturer_code.to_bytes(3, "big")
        if identification is None:
            identification = b"\xfe" + maker + secrets.token_bytes(13)
        elif len(identification) == 13:
            identification = b"\xfe" + maker + bytes(identification)
        elif len(identification) != 17 or identification[0] != 0xFE:
            raise ValueError(
                "identification must be 17 bytes starting 0xFE, or the 13 unique bytes; got "
                f"{bytes(identification).hex()}"
            )
        self.identification = bytes(identification)
        self.profile = NodeProfile(self, version=version)
        self._objects: dict[EOJ, DeviceObject] = {}
        self._outbox: list[tuple[bytes, Address]] = []
        self._tid = 0
        self.on_announce: Announce | None = None
        """Set by the transport: called with each announcement as it is made."""
        self._endpoint: NodeEndpoint | None = None
        for obj in objects:
            self.add(obj)

    # -- contents ---------------------------------------------------------------------
    @property
    def objects(self) -> tuple[DeviceObject, ...]:
        """Hosted device objects (not the node profile), in the order added."""
        return tuple(self._objects.values())

    def add(self, obj: DeviceObject) -> None:
        """Host ``obj``; a running node announces its new instance list (0xD5)."""
        if obj.eoj.is_node_profile or obj.eoj.instance == 0:
            raise ValueError(f"cannot host {obj.eoj}: node profile or instance code 0x00")
        if obj.eoj in self._objects:
            raise ValueError(f"this node already hosts an object {obj.eoj}")
        maker = self.manufacturer_code.to_bytes(3, "big")
        if 0x8A not in obj._given:
            obj._values[0x8A] = maker
        if 0x83 not in obj._given and 0x83 in obj._values:
            obj._values[0x83] = b"\xfe" + maker + obj._values[0x83][4:]
        obj._node = self
        self._objects[obj.eoj] = obj
        if self._endpoint is not None:
            self.announce_instance_list()

    def remove(self, obj: DeviceObject) -> None:
        if self._objects.get(obj.eoj) is not obj:
            raise ValueError(f"this node does not host {obj!r}")
        del self._objects[obj.eoj]
        obj._node = None
        if self._endpoint is not None:
            self.announce_instance_list()

    def object(self, eoj: EOJ | int | str) -> DeviceObject:
        key = EOJ.of(eoj)
        if key == NODE_PROFILE:
            return self.profile
        try:
            return self._objects[key]
        except KeyError:
            raise KeyError(f"this node does not host {key}") from None

    def _targets(self, deoj: EOJ) -> list[DeviceObject]:
        # §3.2.4: instance code 0x00 addresses every instance of the class
        if deoj.is_node_profile:
            return [self.profile] if deoj.instance in (0x00, 0x01) else []
        if deoj.instance == 0:
            return [o for e, o in self._objects.items() if e.class_code == deoj.class_code]
        obj = self._objects.get(deoj)
        return [obj] if obj is not None else []

    # -- announcements ----------------------------------------------------------------
    def _next_tid(self) -> int:
        self._tid = (self._tid + 1) & 0xFFFF
        return self._tid

    def announce(self, obj: DeviceObject, epcs: Iterable[int]) -> None:
        """Queue an INF of ``epcs`` of ``obj`` to all nodes (status change announcement)."""
        props = tuple(Property(e, obj.read(e) or b"") for e in epcs)
        frame = Frame(self._next_tid(), obj.eoj, EOJ(0x0E, 0xF0, 0x01), ESV.INF, props)
        self._emit(frame.encode(), ALL_NODES)

    def announce_instance_list(self) -> None:
        """INF of the instance list (0xD5) to all nodes, as a node does at start (§4.3.1)."""
        edt = self.profile.read(0xD5) or b"\x00"
        frame = Frame(self._next_tid(), NODE_PROFILE, NODE_PROFILE, ESV.INF, (Property(0xD5, edt),))
        self._emit(frame.encode(), ALL_NODES)

    def _emit(self, data: bytes, destination: Address) -> None:
        if self.on_announce is not None:
            self.on_announce(data, destination)
        else:
            self._outbox.append((data, destination))

    def take_announcements(self) -> list[tuple[bytes, Address]]:
        """Announcements queued while no transport was attached (sans-IO use)."""
        out, self._outbox = self._outbox, []
        return out

    # -- request processing (Part 2 §4.2.3) -------------------------------------------
    def handle(self, data: bytes, source: Address) -> list[tuple[bytes, Address]]:
        """Process one received datagram; return the datagrams to send, with destinations.

        Malformed frames, Format 2 frames, answers and requests to objects this node does
        not host produce nothing (§4.2.3: a request to an absent object is discarded).

        Every answer goes back to ``source`` except the INF that answers an INF_REQ: that
        is a property value notification (§4.2.3.5) and goes to all nodes
        (:data:`ALL_NODES`), as OpenECHO, uecho, echonet-lite.js and the TOPPERS ECHONET
        Lite stack send it; an INF_SNA goes back to the requester only."""
        try:
            frame = decode_frame(data)
        except FrameError:
            return []
        if not isinstance(frame, Frame):
            return []
        return [(f.encode(), ALL_NODES if f.esv is ESV.INF else source) for f in self.answer(frame)]

    def answer(self, request: Frame) -> list[Frame]:
        """The answer frames for one decoded request (empty where none is due)."""
        esv = request.esv
        if not esv.is_request or (not request.props and esv is not ESV.SetGet):
            return []
        replies = []
        for target in self._targets(request.deoj):
            reply = self._answer_one(target, request)
            if reply is not None:
                replies.append(reply)
        return replies

    def _answer_one(self, obj: DeviceObject, request: Frame) -> Frame | None:
        esv = request.esv

        def reply(
            answer: ESV, props: list[Property], get_props: tuple[Property, ...] = ()
        ) -> Frame:
            return Frame(request.tid, obj.eoj, request.seoj, answer, tuple(props), get_props)

        if esv is ESV.SetI or esv is ESV.SetC:
            results, ok = self._apply_sets(obj, request.props)
            if ok:
                # §4.2.3.1: a SetI that succeeds is not answered; §4.2.3.2: SetC gets Set_Res
                return None if esv is ESV.SetI else reply(ESV.Set_Res, results)
            return reply(ESV.SetI_SNA if esv is ESV.SetI else ESV.SetC_SNA, results)
        if esv is ESV.Get:
            results, ok = self._read_all(obj, request.props)
            return reply(ESV.Get_Res if ok else ESV.Get_SNA, results)
        if esv is ESV.INF_REQ:
            # §4.2.3.5: answered with INF or INF_SNA (handle() multicasts the INF)
            results, ok = self._read_all(obj, request.props)
            return reply(ESV.INF if ok else ESV.INF_SNA, results)
        if esv is ESV.SetGet:
            # §4.2.3.4: sets first, then reads; one SNA covers both lists
            set_results, set_ok = self._apply_sets(obj, request.props)
            get_results, get_ok = self._read_all(obj, request.get_props)
            answer = ESV.SetGet_Res if set_ok and get_ok else ESV.SetGet_SNA
            return reply(answer, set_results, tuple(get_results))
        if esv is ESV.INFC:
            # §4.2.3.6: acknowledge a notification with the EPCs, PDC 0
            return infc_response(request, obj.eoj)
        return None

    @staticmethod
    def _apply_sets(obj: DeviceObject, props: tuple[Property, ...]) -> tuple[list[Property], bool]:
        # §4.2.3.1/2: accepted EPCs come back with PDC 0, refused ones echo their EDT
        results = []
        ok = True
        for prop in props:
            if obj.write(prop.epc, prop.edt):
                results.append(Property(prop.epc))
            else:
                ok = False
                results.append(prop)
        return results, ok

    @staticmethod
    def _read_all(obj: DeviceObject, props: tuple[Property, ...]) -> tuple[list[Property], bool]:
        # §4.2.3.3: readable EPCs with their EDT, unavailable ones with PDC 0
        results = []
        ok = True
        for prop in props:
            edt = obj.read(prop.epc) if obj.is_gettable(prop.epc) else None
            if edt is None:
                ok = False
                results.append(Property(prop.epc))
            else:
                results.append(Property(prop.epc, edt))
        return results, ok

    # -- network ----------------------------------------------------------------------
    async def start(
        self,
        bind: str = "127.0.0.1",
        *,
        port: int = ECHONET_PORT,
        interface: str | None = None,
    ) -> None:
        """Serve on UDP ``bind``:``port`` and announce the instance list (0xD5).

        Multicast goes out on loopback unless ``interface`` names another one."""
        from erab.echonet.transport import NodeEndpoint

        if self._endpoint is not None:
            raise RuntimeError("node already started")
        endpoint = NodeEndpoint(self)
        await endpoint.open(bind, port=port, interface=interface)
        self._endpoint = endpoint
        for data, destination in self.take_announcements():
            endpoint.send(data, destination)
        self.announce_instance_list()

    @property
    def address(self) -> Address | None:
        """The local socket address while started."""
        return None if self._endpoint is None else self._endpoint.address

    async def close(self) -> None:
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await endpoint.close()
