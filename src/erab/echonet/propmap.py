"""Property maps (0x9D, 0x9E, 0x9F), instance lists (0xD5, 0xD6) and class lists (0xD7).

Property map description format (ECHONET Lite Part 2 §Appendix 1 / Appendix "Property map
description format"): the first byte is the number of properties.  Below 16 properties the
EPCs follow as a list.  From 16 up a 16-byte bitmap follows: byte ``i`` (0-15) bit ``j`` (0-7)
stands for EPC ``0x80 + 0x10 * j + i``.
"""

from __future__ import annotations

from collections.abc import Iterable

from erab.echonet.frame import EOJ

MAX_LIST_FORM = 15
MAX_INSTANCES_PER_LIST = 84  # 1 + 84 × 3 = 253 bytes fits one EDT (Part 2 §6.11.1)
MAX_CLASSES_PER_LIST = 8  # 0xD7 self-node class list S


class PropertyMapError(ValueError):
    """A property map, instance list or class list EDT that does not follow the format."""


def encode_property_map(epcs: Iterable[int]) -> bytes:
    codes = sorted(set(epcs))
    for epc in codes:
        if not 0x80 <= epc <= 0xFF:
            raise PropertyMapError(f"EPC {epc:#x} cannot be in a property map (0x80-0xFF)")
    if len(codes) <= MAX_LIST_FORM:
        return bytes((len(codes), *codes))
    bitmap = bytearray(16)
    for epc in codes:
        offset = epc - 0x80
        bitmap[offset & 0x0F] |= 1 << (offset >> 4)
    return bytes((len(codes),)) + bytes(bitmap)


def decode_property_map(edt: bytes) -> frozenset[int]:
    if not edt:
        raise PropertyMapError("property map is empty: the count byte is missing")
    count = edt[0]
    if count <= MAX_LIST_FORM:
        if len(edt) != 1 + count:
            raise PropertyMapError(
                f"property map says {count} properties in list form, so it needs "
                f"{1 + count} bytes; it has {len(edt)}"
            )
        codes = frozenset(edt[1:])
        bad = [c for c in codes if c < 0x80]
        if bad:
            raise PropertyMapError(f"property map lists EPC {bad[0]:#04x}, below 0x80")
        if len(codes) != count:
            raise PropertyMapError(f"property map lists a duplicate EPC: {edt[1:].hex()}")
        return codes
    if len(edt) != 17:
        raise PropertyMapError(
            f"property map says {count} properties (bitmap form), so it needs 17 bytes; "
            f"it has {len(edt)}"
        )
    found = set()
    for index in range(16):
        byte = edt[1 + index]
        for bit in range(8):
            if byte & (1 << bit):
                found.add(0x80 + index + 0x10 * bit)
    if len(found) != count:
        raise PropertyMapError(
            f"property map count byte says {count}, but its bitmap marks {len(found)}"
        )
    return frozenset(found)


def encode_instance_list(eojs: Iterable[EOJ]) -> bytes:
    """0xD5 / 0xD6: count, then 3-byte EOJs (at most 84)."""
    items = list(eojs)
    if len(items) > MAX_INSTANCES_PER_LIST:
        raise PropertyMapError(
            f"{len(items)} instances do not fit one instance list (at most "
            f"{MAX_INSTANCES_PER_LIST})"
        )
    out = bytearray((len(items),))
    for eoj in items:
        out += bytes(EOJ.of(eoj))
    return bytes(out)


def decode_instance_list(edt: bytes) -> tuple[EOJ, ...]:
    if not edt:
        raise PropertyMapError("instance list is empty: the count byte is missing")
    count = edt[0]
    if len(edt) != 1 + 3 * count:
        raise PropertyMapError(
            f"instance list says {count} instances, so it needs {1 + 3 * count} bytes; "
            f"it has {len(edt)}"
        )
    return tuple(EOJ(edt[i], edt[i + 1], edt[i + 2]) for i in range(1, len(edt), 3))


def encode_class_list(class_codes: Iterable[int]) -> bytes:
    """0xD7: count, then 2-byte class codes (0xGGCC); at most 8 listed, the count may be more."""
    codes = list(class_codes)
    listed = codes[:MAX_CLASSES_PER_LIST]
    out = bytearray((min(len(codes), 255),))
    for code in listed:
        if not 0 <= code <= 0xFFFF:
            raise PropertyMapError(f"class code {code:#x} is out of range 0x0000-0xFFFF")
        out += code.to_bytes(2, "big")
    return bytes(out)


def decode_class_list(edt: bytes) -> tuple[int, ...]:
    if not edt:
        raise PropertyMapError("class list is empty: the count byte is missing")
    count = edt[0]
    listed = min(count, MAX_CLASSES_PER_LIST)
    if len(edt) != 1 + 2 * listed:
        raise PropertyMapError(
            f"class list says {count} classes, so it lists {listed} and needs "
            f"{1 + 2 * listed} bytes; it has {len(edt)}"
        )
    return tuple(int.from_bytes(edt[i : i + 2], "big") for i in range(1, len(edt), 2))
