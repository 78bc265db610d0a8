"""Plausible default EDTs for a property, built from its MRA data schema.

A device emulator needs a value for every property it hosts before any model sets one.  The
value chosen is the least surprising one the schema allows: the first state of a state list,
zero (or the minimum, when zero is out of range) for a number, the first level, all bits clear
for a bitmap, zero bytes for raw data, 2026-01-01 00:00 for dates and times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_FORMAT_SIZE = {
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "uint64": 8,
}
_DEFAULT_DATE = bytes((0x07, 0xEA, 0x01, 0x01))  # 2026-01-01


def _hex(value: object, default: int = 0) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text.startswith("0b"):
            return int(text[2:], 2)
        return int(text, 16) if text.startswith("0x") else int(text)
    return default


def _number(schema: Mapping[str, Any]) -> bytes:
    fmt = str(schema.get("format", "uint8"))
    size = _FORMAT_SIZE.get(fmt, int(schema.get("size", 1)))
    multiple = float(schema.get("multiple", schema.get("multipleOf", 1)) or 1)
    low = schema.get("minimum")
    high = schema.get("maximum")
    value = 0.0
    allowed = [v for v in schema.get("enum", ()) if isinstance(v, int | float)]
    if allowed and value not in allowed:
        value = float(allowed[0])  # a number from a fixed list (e.g. hours 1, 20..24)
    if low is not None and value < float(low):
        value = float(low)
    if high is not None and value > float(high):
        value = float(high)
    raw = round(value / multiple)
    return raw.to_bytes(size, "big", signed=fmt.startswith("int"))


def _state(schema: Mapping[str, Any]) -> bytes:
    size = int(schema.get("size", 1))
    for item in schema.get("enum", ()):
        if "edt" in item:
            return _hex(item["edt"]).to_bytes(size, "big")
    for item in schema.get("range", ()):
        if "from" in item:
            return _hex(item["from"]).to_bytes(size, "big")
    return bytes(size)


def _level(schema: Mapping[str, Any]) -> bytes:
    base = schema.get("base")
    if isinstance(base, str):
        digits = base.lower().removeprefix("0x")
        return int(digits, 16).to_bytes(max(1, len(digits) // 2), "big")
    return _hex(schema.get("minimum", 0)).to_bytes(int(schema.get("size", 1)), "big")


def default_edt(schema: Mapping[str, Any]) -> bytes:
    """A valid-looking EDT for ``schema`` (a resolved MRA data schema, ``$ref`` inlined)."""
    if "oneOf" in schema:
        alternatives = schema["oneOf"]
        return default_edt(alternatives[0]) if alternatives else b"\x00"
    kind = schema.get("type")
    if kind == "number":
        return _number(schema)
    if kind == "state":
        return _state(schema)
    if kind == "level":
        return _level(schema)
    if kind == "numericValue":
        return _state(schema)  # the first coded value (e.g. 0x01 for a 0.1 kWh unit)
    if kind == "bitmap":
        return bytes(int(schema.get("size", 1)))
    if kind == "raw":
        return bytes(int(schema.get("minSize", schema.get("size", 1))))
    if kind == "date":
        size = int(schema.get("size", 4))
        return _DEFAULT_DATE[:size] if size <= 4 else _DEFAULT_DATE + bytes(size - 4)
    if kind == "time":
        return bytes(int(schema.get("size", 2)))
    if kind == "date-time":
        size = int(schema.get("size", 7))
        return (_DEFAULT_DATE + bytes(max(0, size - 4)))[:size]
    if kind == "object":
        return _object(schema)
    if kind == "array":
        count = int(schema.get("minItems", schema.get("maxItems", 0)))
        item = default_edt(schema.get("items", {})) if count else b""
        return item * count
    return bytes(int(schema.get("size", 1)))


def _object(schema: Mapping[str, Any]) -> bytes:
    """Fields one after another; an array of no fixed length that follows a number gets
    as many entries as that number says (a collection-segment count and its segments)."""
    parts = []
    count: int | None = None
    for field in schema.get("properties", ()):
        element = field.get("element", {})
        if element.get("type") == "array" and "minItems" not in element and count is not None:
            part = default_edt(element.get("items", {})) * count
        else:
            part = default_edt(element)
        is_count = element.get("type") == "number" and len(part) <= 2
        count = int.from_bytes(part, "big") if is_count else None
        parts.append(part)
    return b"".join(parts)


PLAUSIBLE_EDT: dict[int, dict[int, bytes]] = {
    # home air conditioner: cooling at 26 °C in a 26 °C room, 30 °C outside
    0x0130: {0x8F: b"\x42", 0xB0: b"\x42", 0xB3: b"\x1a", 0xBB: b"\x1a", 0xBE: b"\x1e"},
    # storage battery: standby, half full
    0x027D: {0xDA: b"\x44", 0xE4: b"\x32"},
    # low-voltage smart electric energy meter: coefficient 1, 0.1 kWh unit, 6 digits
    0x0288: {0xD3: b"\x00\x00\x00\x01", 0xD7: b"\x06", 0xE1: b"\x01"},
    # electric water heater: automatic water heating
    0x026B: {0xB0: b"\x41"},
}
"""Values a device emulator starts from where the schema's first value would look odd
(a set temperature of 0 °C)."""
