"""Property value codecs: EDT bytes <-> typed Python values, driven by a data schema.

The schemas are the data forms of the ECHONET Consortium's Machine Readable Appendix (MRA),
as stored in erab's class database with every ``$ref`` inlined (see
:mod:`erab.echonet.classdb`).  Decoded values take these shapes:

========================  =====================================================================
schema                    Python value
========================  =====================================================================
number                    ``int``; ``float`` when scaled by a fractional ``multiple``
                          (0.1 A steps decode to ``12.3``); overflow / underflow codes ->
                          :class:`Special`
state                     ``str``: the state's short name (``"cooling"``); a code inside a
                          ranged state (``0x000A...0x0013``) -> :class:`StateInRange`
numericValue              the number the code stands for (``0x04`` -> ``0.0001``)
level                     ``int`` level, 1 = ``base`` (or the code itself without a base)
bitmap                    ``dict`` field name -> field value (state name or level)
date / time / date-time   ``datetime.date`` / ``datetime.time`` / naive ``datetime.datetime``;
                          a time whose hour may exceed 23 -> ``datetime.timedelta``
raw                       ``bytes``
object                    ``dict`` field short name -> value
array                     ``list``
oneOf                     whichever alternative matched; a state offered beside a number,
                          level, time or object (``noData``, ``undefined``, ``auto`` ...) ->
                          :class:`Special`; a level beside another int-valued alternative
                          -> :class:`Level` (which scale it is on)
========================  =====================================================================

:func:`encode_value` takes the same shapes back (and, where a state is expected, a state name
or a :class:`Special`).  Every failure raises :class:`ValueCodecError` naming where (class and
property, passed in as ``where``), what was wrong, and the allowed form.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "NUMBER_FORMATS",
    "Decoder",
    "Level",
    "Special",
    "StateInRange",
    "ValueCodecError",
    "decode_value",
    "decoder_for",
    "describe_schema",
    "encode_value",
    "fixed_size",
    "format_value",
    "from_jsonable",
    "parse_value",
    "to_jsonable",
    "unit_symbol",
]

Schema = Mapping[str, Any]


class ValueCodecError(ValueError):
    """A value or EDT that does not fit its property's data form.

    The message names where (class and property), the problem and the allowed form;
    ``problem`` holds the problem alone.
    """

    def __init__(
        self,
        message: str = "",
        problem: str = "",
        *,
        where: str = "",
        schema: Schema | None = None,
    ) -> None:
        super().__init__(message or problem)
        self.problem = problem or message
        self.where = where
        self.schema = schema
        self._message = message or None

    def __str__(self) -> str:
        # built on demand: a oneOf tries alternatives and discards most errors unread
        if self._message is None:
            prefix = f"{self.where}: " if self.where else ""
            allowed = "" if self.schema is None else f"; allowed: {describe_schema(self.schema)}"
            self._message = f"{prefix}{self.problem}{allowed}"
        return self._message


@dataclass(frozen=True)
class Special:
    """An in-band special value: a named code in place of a measurement or setting.

    ``noData`` (e.g. 0xFFFFFFFE), ``overflow`` / ``underflow`` (the type's reserved top codes,
    MRA ``overflowCode`` / ``underflowCode``) and the named states the MRA offers beside a
    number (``undefined``, ``auto``, ``noSetting`` ...).  ``code`` is the unsigned EDT code.
    """

    name: str
    code: int

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class StateInRange:
    """A code inside a state defined as a range of codes (e.g. fault codes 0x000A...0x0013)."""

    name: str
    code: int

    def __str__(self) -> str:
        return f"{self.name} (0x{self.code:X})"


@dataclass(frozen=True)
class Level:
    """A level from one of several level scales a property offers side by side.

    Where a oneOf has a level beside a number or another level (0x03D3 0xE8: minutes
    0..59, or a level counted from 0xA0, or one from 0xC0), a plain ``int`` would not say
    which scale it belongs to; ``base`` is that scale's first code (None for a scale
    without a base, whose codes are the levels themselves).
    """

    level: int
    base: int | None

    def __str__(self) -> str:
        return f"level {self.level}" + (f" (from 0x{self.base:02X})" if self.base else "")


NUMBER_FORMATS: dict[str, tuple[int, bool]] = {
    "int8": (1, True),
    "int16": (2, True),
    "int32": (4, True),
    "uint8": (1, False),
    "uint16": (2, False),
    "uint32": (4, False),
}
"""A number schema's ``format`` -> (EDT size in bytes, signed)."""
_FORMATS = NUMBER_FORMATS


def _fail(where: str, problem: str, schema: Schema) -> ValueCodecError:
    return ValueCodecError(problem=problem, where=where, schema=schema)


# --------------------------------------------------------------------------------------------
# sizes and descriptions


def _level_size(schema: Schema) -> int:
    base = schema.get("base")
    return (len(base) - 2) // 2 if isinstance(base, str) else 1


def fixed_size(schema: Schema) -> int | None:
    """The EDT size in bytes a schema always takes, or None if it varies."""
    if "oneOf" in schema:
        sizes = {fixed_size(alt) for alt in schema["oneOf"]}
        return sizes.pop() if len(sizes) == 1 else None
    kind = schema.get("type")
    if kind == "number":
        return _FORMATS[schema["format"]][0]
    if kind in ("state", "numericValue", "bitmap"):
        return int(schema["size"])
    if kind == "level":
        return _level_size(schema)
    if kind == "raw":
        return int(schema["minSize"]) if schema["minSize"] == schema["maxSize"] else None
    if kind == "date":
        return 4
    if kind == "time":
        return int(schema.get("size", 3))
    if kind == "date-time":
        return int(schema.get("size", 7))
    if kind == "array":
        if schema.get("minItems") == schema["maxItems"]:
            return int(schema["itemSize"]) * int(schema["maxItems"])
        return None
    if kind == "object":
        total = 0
        for field in schema["properties"]:
            size = fixed_size(field["element"])
            if size is None:
                return None
            total += size
        return total
    raise ValueCodecError(f"unknown data form {kind!r}")


_UNIT_SYMBOLS = {"Celsius": "°C", "degree": "°", "second": "s", "minute": "min", "minutes": "min"}


def unit_symbol(unit: str) -> str:
    """How a unit is written for people: ``Celsius`` -> ``°C``."""
    return _UNIT_SYMBOLS.get(unit, unit)


def _scale(schema: Schema) -> float | int:
    multiple = schema.get("multiple", schema.get("multipleOf", 1))
    return multiple if isinstance(multiple, int | float) else 1


def _states_text(schema: Schema, limit: int = 8) -> str:
    items = []
    for item in schema["enum"][:limit]:
        items.append(f"{item['name']}={item['edt']}")
    more = len(schema["enum"]) - limit
    return ", ".join(items) + (f", … ({more} more)" if more > 0 else "")


def _bytes(count: int) -> str:
    return "1 byte" if count == 1 else f"{count} bytes"


def describe_schema(schema: Schema) -> str:
    """A one-line description of a data form, for error messages and tables."""
    if "oneOf" in schema:
        return " | ".join(describe_schema(alt) for alt in schema["oneOf"])
    kind = schema.get("type")
    if kind == "number":
        scale = _scale(schema)
        parts = [f"number ({schema['format']}"]
        if "enum" in schema:
            parts.append(f", one of {schema['enum']}")
        if "minimum" in schema or "maximum" in schema:
            low = _scaled(schema.get("minimum", "…"), scale)
            high = _scaled(schema.get("maximum", "…"), scale)
            parts.append(f", {low}..{high}")
        if scale != 1:
            parts.append(f", step {scale}")
        if schema.get("unit"):
            parts.append(f" {unit_symbol(schema['unit'])}")
        return "".join(parts) + ")"
    if kind == "state":
        return f"state ({_states_text(schema)})"
    if kind == "numericValue":
        values = ", ".join(f"{i['numericValue']}={i['edt']}" for i in schema["enum"])
        return f"coded number ({values})"
    if kind == "level":
        if "base" in schema:
            return f"level 1..{schema['maximum']} (codes from {schema['base']})"
        return f"level {schema.get('minimum', 0)}..{schema['maximum']}"
    if kind == "bitmap":
        names = ", ".join(field["name"] for field in schema["bitmaps"])
        return f"bitmap of {_bytes(schema['size'])} ({names})"
    if kind == "raw":
        low, high = schema["minSize"], schema["maxSize"]
        return f"raw {_bytes(low)}" if low == high else f"raw {low}..{high} bytes"
    if kind == "date":
        return "date YYYY-MM-DD (4 bytes)"
    if kind == "time":
        size = schema.get("size", 3)
        hours = schema.get("maximumOfHour", 23)
        return f"time {'hh:mm' if size == 2 else 'hh:mm:ss'} (hours 0..{hours})"
    if kind == "date-time":
        size = schema.get("size", 7)
        return f"date-time {'YYYY-MM-DD hh:mm' if size == 6 else 'YYYY-MM-DD hh:mm:ss'}"
    if kind == "object":
        names = ", ".join(field["shortName"] for field in schema["properties"])
        return f"object ({names})"
    if kind == "array":
        low = schema.get("minItems", 0)
        count = str(low) if low == schema["maxItems"] else f"{low}..{schema['maxItems']}"
        return f"array of {count} × {describe_schema(schema['items'])}"
    return f"unknown form {kind!r}"


def _decimals(scale: float | int) -> int:
    if isinstance(scale, int) or scale >= 1:
        return 0
    return max(0, math.ceil(-math.log10(scale) - 1e-9))


def _scaled(count: Any, scale: float | int) -> Any:
    if not isinstance(count, int) or scale == 1:
        return count
    if isinstance(scale, int):
        return count * scale
    return round(count * scale, _decimals(scale))


# --------------------------------------------------------------------------------------------
# decoding


@functools.cache
def _edt_code(edt: str) -> tuple[int, int]:
    """``"0x41"`` -> (0x41, 0x41); ``"0x000A...0x0013"`` -> (0x0A, 0x13)."""
    if "..." in edt:
        low, high = edt.split("...")
        return int(low, 16), int(high, 16)
    code = int(edt, 16)
    return code, code


# Per-schema facts worked out once (decoding is on every received frame's path).  Keyed by
# the schema's id, holding the schema itself so the id cannot be reused while cached.
_PlanCache = dict[int, tuple[Schema, Any]]
_NUMBER_PLANS: _PlanCache = {}
_DECODER_CACHE: _PlanCache = {}
_PLAN_LIMIT = 20_000


def _planned(cache: _PlanCache, schema: Schema, build: Any) -> Any:
    hit = cache.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    if len(cache) >= _PLAN_LIMIT:
        cache.clear()
    plan = build(schema)
    cache[id(schema)] = (schema, plan)
    return plan


@dataclass(frozen=True, slots=True)
class _NumberPlan:
    size: int
    signed: bool
    low: int
    high: int
    enum: frozenset[int] | None
    scale: float | int
    decimals: int
    specials: dict[int, str]


def _build_number_plan(schema: Schema) -> _NumberPlan:
    size, signed = _FORMATS[schema["format"]]
    # ECHONET Lite APPENDIX, "overflow / underflow codes": the top codes of the data type
    specials: dict[int, str] = {}
    top = (1 << (8 * size)) - 1
    if schema.get("overflowCode", True):
        specials[(top >> 1) if signed else top] = "overflow"
    if schema.get("underflowCode", True):
        specials[(1 << (8 * size - 1)) if signed else top - 1] = "underflow"
    scale = _scale(schema)
    return _NumberPlan(
        size=size,
        signed=signed,
        low=schema.get("minimum", -(1 << (8 * size - 1)) if signed else 0),
        high=schema.get("maximum", (1 << (8 * size - 1)) - 1 if signed else top),
        enum=frozenset(schema["enum"]) if "enum" in schema else None,
        scale=scale,
        decimals=_decimals(scale),
        specials=specials,
    )


def _number_plan(schema: Schema) -> _NumberPlan:
    plan: _NumberPlan = _planned(_NUMBER_PLANS, schema, _build_number_plan)
    return plan


def _special_codes(schema: Schema) -> dict[int, str]:
    """Overflow / underflow codes of a number: unsigned code -> name."""
    return _number_plan(schema).specials


def _in_range(schema: Schema, count: int) -> bool:
    plan = _number_plan(schema)
    if plan.enum is not None:
        return count in plan.enum
    return plan.low <= count <= plan.high


def _decode_level(schema: Schema, edt: bytes, where: str) -> int:
    size = _level_size(schema)
    if len(edt) != size:
        raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
    return _level_from_code(schema, int.from_bytes(edt, "big"), where)


def _level_from_code(schema: Schema, code: int, where: str) -> int:
    if "base" in schema:
        level = code - int(schema["base"], 16) + 1
        if 1 <= level <= schema["maximum"]:
            return level
        raise _fail(where, f"level code 0x{code:X} out of range", schema)
    if schema.get("minimum", 0) <= code <= schema["maximum"]:
        return code
    raise _fail(where, f"level {code} out of range", schema)


def _mask_shift(mask_text: str) -> tuple[int, int]:
    mask = int(mask_text, 2) if mask_text.startswith("0b") else int(mask_text, 16)
    shift = (mask & -mask).bit_length() - 1
    return mask, shift


def _decode_bitmap(schema: Schema, edt: bytes, where: str) -> dict[str, object]:
    size = int(schema["size"])
    if len(edt) != size:
        raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
    out: dict[str, object] = {}
    for field in schema["bitmaps"]:
        mask, shift = _mask_shift(field["position"]["bitMask"])
        bits = (edt[field["position"]["index"]] & mask) >> shift
        out[field["name"]] = _decode_field(field["value"], bits, f"{where}.{field['name']}")
    return out


def _decode_field(schema: Schema, bits: int, where: str) -> object:
    kind = schema.get("type")
    if kind == "state":
        for item in schema["enum"]:
            low, high = _edt_code(item["edt"])
            if low <= bits <= high:
                return item["name"]
        raise _fail(where, f"undefined bit value {bits}", schema)
    if kind == "level":
        return _level_from_code(schema, bits, where)
    if kind == "number":
        if not _in_range(schema, bits):
            raise _fail(where, f"bit value {bits} out of range", schema)
        return _scaled(bits, _scale(schema))
    raise _fail(where, f"unsupported bitmap field form {kind!r}", schema)


def _decode_date(schema: Schema, edt: bytes, where: str) -> dt.date:
    if len(edt) != 4:
        raise _fail(where, f"{len(edt)} bytes where 4 expected", schema)
    try:
        return dt.date(int.from_bytes(edt[:2], "big"), edt[2], edt[3])
    except ValueError as exc:
        raise _fail(where, f"invalid date 0x{edt.hex().upper()} ({exc})", schema) from None


def _decode_time(schema: Schema, edt: bytes, where: str) -> dt.time | dt.timedelta:
    size = int(schema.get("size", 3))
    if len(edt) != size or size not in (2, 3):
        raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
    hour, minute, second = edt[0], edt[1], edt[2] if size == 3 else 0
    max_hour = int(schema.get("maximumOfHour", 23))
    if hour > max_hour or minute > 59 or second > 59:
        raise _fail(where, f"invalid time 0x{edt.hex().upper()}", schema)
    if max_hour > 23:
        return dt.timedelta(hours=hour, minutes=minute, seconds=second)
    return dt.time(hour, minute, second)


def _decode_datetime(schema: Schema, edt: bytes, where: str) -> dt.datetime:
    size = int(schema.get("size", 7))
    if len(edt) != size or size not in (6, 7):
        raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
    try:
        return dt.datetime(
            int.from_bytes(edt[:2], "big"),
            edt[2],
            edt[3],
            edt[4],
            edt[5],
            edt[6] if size == 7 else 0,
        )
    except ValueError as exc:
        raise _fail(where, f"invalid date-time 0x{edt.hex().upper()} ({exc})", schema) from None


def _decode_raw(schema: Schema, edt: bytes, where: str) -> bytes:
    if not schema["minSize"] <= len(edt) <= schema["maxSize"]:
        raise _fail(where, f"{len(edt)} bytes", schema)
    return bytes(edt)


def _decode_numeric(schema: Schema, edt: bytes, where: str) -> object:
    size = int(schema["size"])
    if len(edt) != size:
        raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
    code = int.from_bytes(edt, "big")
    for item in schema["enum"]:
        if int(item["edt"], 16) == code:
            value: object = item["numericValue"]
            return value
    raise _fail(where, f"undefined code 0x{edt.hex().upper()}", schema)


def _is_state(schema: Schema) -> bool:
    return schema.get("type") == "state"


def _level_base(schema: Schema) -> int | None:
    base = schema.get("base")
    return int(base, 16) if isinstance(base, str) else None


def _levels_tagged(schema: Schema) -> bool:
    """Whether a oneOf's levels decode to :class:`Level`: when another alternative also
    decodes to an int (a number or a second level scale)."""
    kinds = [alt.get("type") for alt in schema["oneOf"]]
    return "level" in kinds and kinds.count("level") + kinds.count("number") > 1


@dataclass(frozen=True, slots=True)
class _OneOfPlan:
    states: tuple[Schema, ...]
    others: tuple[Schema, ...]
    mixed: bool
    tagged: bool


def _build_one_of_plan(schema: Schema) -> _OneOfPlan:
    alternatives = schema["oneOf"]
    states = tuple(alt for alt in alternatives if _is_state(alt))
    others = tuple(alt for alt in alternatives if not _is_state(alt))
    return _OneOfPlan(states, others, bool(others), _levels_tagged(schema))


_DECODERS: dict[str, Any] = {
    "numericValue": _decode_numeric,
    "level": _decode_level,
    "bitmap": _decode_bitmap,
    "date": _decode_date,
    "time": _decode_time,
    "date-time": _decode_datetime,
    "raw": _decode_raw,
}


Decoder = Callable[[bytes, str], object]


def _state_table(schema: Schema) -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    single: dict[int, str] = {}
    ranges: list[tuple[int, int, str]] = []
    for item in schema["enum"]:
        low, high = _edt_code(item["edt"])
        if low == high:
            single.setdefault(low, item["name"])
        else:
            ranges.append((low, high, item["name"]))
    return single, ranges


def _compile_number(schema: Schema) -> Decoder:
    plan = _number_plan(schema)
    size, signed, low, high, enum = plan.size, plan.signed, plan.low, plan.high, plan.enum
    scale, decimals, specials = plan.scale, plan.decimals, plan.specials

    def decode_number(edt: bytes, where: str) -> object:
        if len(edt) != size:
            raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
        count = int.from_bytes(edt, "big", signed=signed)
        if not (count in enum if enum is not None else low <= count <= high):
            code = int.from_bytes(edt, "big")
            special = specials.get(code)
            if special is not None:
                return Special(special, code)
            raise _fail(where, f"value {count} (0x{edt.hex().upper()}) out of range", schema)
        if scale == 1:
            return count
        if isinstance(scale, int):
            return count * scale
        return round(count * scale, decimals)

    return decode_number


def _compile_state(schema: Schema) -> Decoder:
    size = int(schema["size"])
    single, ranges = _state_table(schema)

    def decode_state(edt: bytes, where: str) -> object:
        if len(edt) != size:
            raise _fail(where, f"{len(edt)} bytes where {size} expected", schema)
        code = int.from_bytes(edt, "big")
        name = single.get(code)
        if name is not None:
            return name
        for low, high, ranged in ranges:
            if low <= code <= high:
                return StateInRange(ranged, code)
        raise _fail(where, f"undefined state 0x{edt.hex().upper()}", schema)

    return decode_state


def _compile_one_of(schema: Schema) -> Decoder:
    plan = _build_one_of_plan(schema)
    states = [(int(alt["size"]), *_state_table(alt)) for alt in plan.states]
    others = [
        (_decoder(alt), plan.tagged and alt.get("type") == "level", _level_base(alt))
        for alt in plan.others
    ]
    mixed = plan.mixed

    def decode_one_of(edt: bytes, where: str) -> object:
        # The named codes come first: they are carved out of the other alternatives' ranges.
        for size, single, ranges in states:
            if len(edt) == size:
                code = int.from_bytes(edt, "big")
                name = single.get(code)
                if name is not None:
                    return Special(name, code) if mixed else name
                for low, high, ranged in ranges:
                    if low <= code <= high:
                        return StateInRange(ranged, code)
        fallback: Special | None = None
        for decode, tagged, base in others:
            try:
                value = decode(edt, where)
            except ValueCodecError:
                continue
            if tagged and isinstance(value, int):
                return Level(value, base)
            if isinstance(value, Special):
                # an overflow code of one alternative may be a plain value of the next
                # (0xFFFFFFFF: uint32 overflow, or int32 -1)
                fallback = fallback or value
                continue
            return value
        if fallback is not None:
            return fallback
        raise _fail(where, f"0x{edt.hex().upper()} matches no alternative", schema)

    return decode_one_of


def _compile_array(schema: Schema) -> Decoder:
    item_size = int(schema["itemSize"])
    low, high = int(schema.get("minItems", 0)), int(schema["maxItems"])
    decode_item = _decoder(schema["items"])

    def decode_array(edt: bytes, where: str) -> object:
        count, rest = divmod(len(edt), item_size)
        if rest or not low <= count <= high:
            raise _fail(where, f"{len(edt)} bytes is not a whole number of items", schema)
        out = []
        for n in range(count):
            try:
                out.append(decode_item(edt[n * item_size : (n + 1) * item_size], where))
            except ValueCodecError as exc:
                if exc.where.startswith(where):  # name the entry: "….electricEnergy[5]"
                    exc.where = f"{where}[{n}]{exc.where[len(where) :]}"
                raise
        return out

    return decode_array


# Object fields that count the entries of the variable-length array after them.  (Not the
# node profile's numberOfInstances / numberOfClasses: those count all instances or classes,
# of which the list may hold only some.)
COUNT_FIELDS = frozenset({"numberOfCollectionSegments"})


def _counted_array(schema: Schema) -> tuple[str, str] | None:
    """(count field, array field) where an object's count field says how long its array is."""
    names = [f["shortName"] for f in schema["properties"]]
    last = schema["properties"][-1]
    if last["element"].get("type") != "array":
        return None
    for name in names[:-1]:
        if name in COUNT_FIELDS:
            return name, last["shortName"]
    return None


def _check_count(schema: Schema, value: Mapping[str, Any], where: str) -> None:
    counted = _counted_array(schema)
    if counted is not None:
        count, array = counted
        if value[count] != len(value[array]):
            raise _fail(
                where, f"{count} is {value[count]} but {len(value[array])} entries follow", schema
            )


def _compile_object(schema: Schema) -> Decoder:
    fields = [
        (f["shortName"], fixed_size(f["element"]), _decoder(f["element"]))
        for f in schema["properties"]
    ]
    if any(size is None for _, size, _ in fields[:-1]):
        raise ValueCodecError(
            problem="variable-size field before the last field of an object", schema=schema
        )
    counted = _counted_array(schema) is not None

    def decode_object(edt: bytes, where: str) -> object:
        out: dict[str, object] = {}
        offset = 0
        for name, fixed, decode in fields:
            size = len(edt) - offset if fixed is None else fixed
            if offset + size > len(edt):
                raise _fail(where, f"{len(edt)} bytes, too short for field {name}", schema)
            out[name] = decode(edt[offset : offset + size], f"{where}.{name}")
            offset += size
        if offset != len(edt):
            raise _fail(where, f"{len(edt) - offset} bytes left over after the last field", schema)
        if counted:
            _check_count(schema, out, where)
        return out

    return decode_object


def _compile(schema: Schema) -> Decoder:
    if "oneOf" in schema:
        return _compile_one_of(schema)
    kind = schema.get("type", "")
    if kind == "number":
        return _compile_number(schema)
    if kind == "state":
        return _compile_state(schema)
    if kind == "array":
        return _compile_array(schema)
    if kind == "object":
        return _compile_object(schema)
    generic = _DECODERS.get(kind)
    if generic is None:

        def unknown(edt: bytes, where: str) -> object:
            raise _fail(where, f"unknown data form {kind!r}", schema)

        return unknown
    return lambda edt, where: generic(schema, edt, where)


def decoder_for(schema: Schema) -> Decoder:
    """A decoding function ``(edt, where) -> value`` for ``schema``, built once per schema:
    what :func:`decode_value` calls; hold on to it on hot paths."""
    decoder: Decoder = _planned(_DECODER_CACHE, schema, _compile)
    return decoder


_decoder = decoder_for


def decode_value(schema: Schema, edt: bytes, *, where: str = "") -> object:
    """Decode EDT bytes by their data schema (shapes: see the module docstring)."""
    return _decoder(schema)(edt, where)


# --------------------------------------------------------------------------------------------
# encoding


def _encode_number(schema: Schema, value: object, where: str) -> bytes:
    size, signed = _FORMATS[schema["format"]]
    if isinstance(value, Special):
        if _special_codes(schema).get(value.code) == value.name:
            return value.code.to_bytes(size, "big")
        raise _fail(where, f"{value.name} is not a special value of this number", schema)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(where, f"{value!r} is not a number", schema)
    scale = _scale(schema)
    exact = value / scale
    count = round(exact)
    # off the step by more than float rounding (3 × 0.1 / 0.1 = 2.9999999999999996)
    if not math.isfinite(exact) or abs(count - exact) > max(1e-6, 1e-12 * abs(exact)):
        step = f"a multiple of {scale}" if scale != 1 else "a whole number"
        raise _fail(where, f"{value!r} is not {step}", schema)
    if not _in_range(schema, count):
        raise _fail(where, f"{value!r} out of range", schema)
    return count.to_bytes(size, "big", signed=signed)


def _state_code(schema: Schema, value: object, where: str) -> int:
    if isinstance(value, StateInRange | Special):
        name, code = value.name, value.code
        for item in schema["enum"]:
            low, high = _edt_code(item["edt"])
            if item["name"] == name and low <= code <= high:
                return code
        raise _fail(where, f"{value} is not a defined state", schema)
    if isinstance(value, str):
        for item in schema["enum"]:
            low, high = _edt_code(item["edt"])
            if item["name"] == value:
                if low != high:
                    raise _fail(
                        where, f"state {value!r} is a range of codes; give StateInRange", schema
                    )
                return low
        raise _fail(where, f"{value!r} is not a defined state", schema)
    raise _fail(where, f"{value!r} is not a state name", schema)


def _encode_state(schema: Schema, value: object, where: str) -> bytes:
    return _state_code(schema, value, where).to_bytes(int(schema["size"]), "big")


def _encode_numeric(schema: Schema, value: object, where: str) -> bytes:
    if not isinstance(value, bool) and isinstance(value, int | float):
        for item in schema["enum"]:
            if item["numericValue"] == value:
                return int(item["edt"], 16).to_bytes(int(schema["size"]), "big")
    raise _fail(where, f"{value!r} is not one of the coded numbers", schema)


def _level_code(schema: Schema, value: object, where: str) -> int:
    if isinstance(value, Level):
        if value.base != _level_base(schema):
            raise _fail(where, f"{value} belongs to another level scale", schema)
        value = value.level
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(where, f"{value!r} is not a level number", schema)
    if "base" in schema:
        if not 1 <= value <= schema["maximum"]:
            raise _fail(where, f"level {value} out of range", schema)
        return int(schema["base"], 16) + value - 1
    if not schema.get("minimum", 0) <= value <= schema["maximum"]:
        raise _fail(where, f"level {value} out of range", schema)
    return value


def _encode_level(schema: Schema, value: object, where: str) -> bytes:
    return _level_code(schema, value, where).to_bytes(_level_size(schema), "big")


def _encode_bitmap(schema: Schema, value: object, where: str) -> bytes:
    if not isinstance(value, Mapping):
        raise _fail(where, f"{value!r} is not a mapping of bitmap fields", schema)
    fields = {field["name"]: field for field in schema["bitmaps"]}
    unknown = set(value) - set(fields)
    if unknown:
        raise _fail(where, f"unknown bitmap fields {sorted(unknown)}", schema)
    out = bytearray(int(schema["size"]))
    for name, item in value.items():
        field = fields[name]
        mask, shift = _mask_shift(field["position"]["bitMask"])
        bits = _encode_field(field["value"], item, f"{where}.{name}")
        if (bits << shift) & ~mask:
            raise _fail(where, f"field {name} value {item!r} does not fit its bits", schema)
        out[field["position"]["index"]] |= bits << shift
    return bytes(out)


def _encode_field(schema: Schema, value: object, where: str) -> int:
    kind = schema.get("type")
    if kind == "state":
        return _state_code(schema, value, where)
    if kind == "level":
        return _level_code(schema, value, where)
    if kind == "number":
        return int.from_bytes(_encode_number({**schema, "format": "uint8"}, value, where), "big")
    raise _fail(where, f"unsupported bitmap field form {kind!r}", schema)


def _encode_date(schema: Schema, value: object, where: str) -> bytes:
    if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
        raise _fail(where, f"{value!r} is not a datetime.date", schema)
    return value.year.to_bytes(2, "big") + bytes((value.month, value.day))


def _encode_time(schema: Schema, value: object, where: str) -> bytes:
    size = int(schema.get("size", 3))
    max_hour = int(schema.get("maximumOfHour", 23))
    if isinstance(value, dt.timedelta):
        total = int(value.total_seconds())
        if value.total_seconds() != total or total < 0:
            raise _fail(where, f"{value!r} is not a whole number of seconds", schema)
        hour, minute, second = total // 3600, total // 60 % 60, total % 60
    elif isinstance(value, dt.time):
        if value.microsecond or value.tzinfo is not None:
            raise _fail(where, f"{value!r} has microseconds or a time zone", schema)
        hour, minute, second = value.hour, value.minute, value.second
    else:
        raise _fail(where, f"{value!r} is not a datetime.time", schema)
    if hour > max_hour:
        raise _fail(where, f"hour {hour} out of range", schema)
    if size == 2:
        if second:
            raise _fail(where, f"{value} has seconds; this time has hours and minutes only", schema)
        return bytes((hour, minute))
    return bytes((hour, minute, second))


def _encode_datetime(schema: Schema, value: object, where: str) -> bytes:
    size = int(schema.get("size", 7))
    if not isinstance(value, dt.datetime):
        raise _fail(where, f"{value!r} is not a datetime.datetime", schema)
    if value.tzinfo is not None or value.microsecond:
        raise _fail(where, f"{value} must be naive (local time) without microseconds", schema)
    head = value.year.to_bytes(2, "big") + bytes((value.month, value.day, value.hour, value.minute))
    if size == 6:
        if value.second:
            raise _fail(where, f"{value} has seconds; this date-time has none", schema)
        return head
    return head + bytes((value.second,))


def _encode_raw(schema: Schema, value: object, where: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _fail(where, f"{value!r} is not bytes", schema)
    data = bytes(value)
    if not schema["minSize"] <= len(data) <= schema["maxSize"]:
        raise _fail(where, f"{len(data)} bytes", schema)
    return data


def _encode_object(schema: Schema, value: object, where: str) -> bytes:
    if not isinstance(value, Mapping):
        raise _fail(where, f"{value!r} is not a mapping of fields", schema)
    names = [field["shortName"] for field in schema["properties"]]
    missing = [n for n in names if n not in value]
    unknown = sorted(set(value) - set(names))
    if missing or unknown:
        raise _fail(where, f"fields missing {missing} / unknown {unknown}", schema)
    _check_count(schema, value, where)
    parts = []
    for field in schema["properties"]:
        name = field["shortName"]
        part = encode_value(field["element"], value[name], where=f"{where}.{name}")
        size = fixed_size(field["element"])
        if size is not None and len(part) != size:
            raise _fail(where, f"field {name} encodes to {len(part)} bytes, not {size}", schema)
        parts.append(part)
    return b"".join(parts)


def _encode_array(schema: Schema, value: object, where: str) -> bytes:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise _fail(where, f"{value!r} is not a list", schema)
    if not schema.get("minItems", 0) <= len(value) <= schema["maxItems"]:
        raise _fail(where, f"{len(value)} items", schema)
    item_size = int(schema["itemSize"])
    parts = []
    for n, item in enumerate(value):
        part = encode_value(schema["items"], item, where=f"{where}[{n}]")
        if len(part) != item_size:
            raise _fail(where, f"item {n} encodes to {len(part)} bytes, not {item_size}", schema)
        parts.append(part)
    return b"".join(parts)


def _same(decoded: object, value: object) -> bool:
    if isinstance(decoded, int | float) and isinstance(value, int | float):
        if isinstance(decoded, bool) or isinstance(value, bool):
            return decoded == value
        return abs(decoded - value) <= 1e-6 * max(1.0, abs(value))
    return decoded == value


def _encode_one_of(schema: Schema, value: object, where: str) -> bytes:
    alternatives = schema["oneOf"]
    if isinstance(value, str | Special | StateInRange):
        ordered = [a for a in alternatives if _is_state(a)]
        ordered += [a for a in alternatives if not _is_state(a)]
    else:
        ordered = [a for a in alternatives if not _is_state(a)]
    tagged = _levels_tagged(schema)
    problems: list[str] = []
    for alt in ordered:
        is_level = alt.get("type") == "level"
        if isinstance(value, Level) != (tagged and is_level):
            continue
        if isinstance(value, Level) and value.base != _level_base(alt):
            continue
        try:
            data = encode_value(alt, value, where=where)
        except ValueCodecError as exc:
            problems.append(exc.problem)
            continue
        # The EDT must read back as the same value: a number whose code is reserved for a
        # named state (0xFD "undefined") or that another alternative claims is refused.
        back = _decoder(schema)(data, where)
        if _same(back, value):
            return data
        raise _fail(
            where, f"{value!r} encodes to 0x{data.hex().upper()}, which reads as {back!r}", schema
        )
    if len(problems) == 1:
        raise _fail(where, problems[0], schema)
    reasons = f" ({'; '.join(problems)})" if problems else ""
    raise _fail(where, f"{value!r} fits no alternative{reasons}", schema)


_ENCODERS: dict[str, Any] = {
    "number": _encode_number,
    "state": _encode_state,
    "numericValue": _encode_numeric,
    "level": _encode_level,
    "bitmap": _encode_bitmap,
    "date": _encode_date,
    "time": _encode_time,
    "date-time": _encode_datetime,
    "raw": _encode_raw,
    "object": _encode_object,
    "array": _encode_array,
}


def encode_value(schema: Schema, value: object, *, where: str = "") -> bytes:
    """Encode a value (shapes: see the module docstring) into EDT bytes, validating it."""
    if "oneOf" in schema:
        return _encode_one_of(schema, value, where)
    encoder = _ENCODERS.get(schema.get("type", ""))
    if encoder is None:
        raise _fail(where, f"unknown data form {schema.get('type')!r}", schema)
    data: bytes = encoder(schema, value, where)
    return data


# --------------------------------------------------------------------------------------------
# JSON and text forms


def to_jsonable(value: object) -> object:
    """A decoded value as plain JSON data.

    Special -> ``{"special": name, "code": "0x…"}``, StateInRange -> ``{"state": name,
    "code": "0x…"}``, bytes -> hex string, date/time/datetime -> ISO 8601 text, timedelta ->
    ``"hhh:mm:ss"``; dicts and lists element-wise.  :func:`from_jsonable` reverses it.
    """
    if isinstance(value, Special):
        return {"special": value.name, "code": f"0x{value.code:X}"}
    if isinstance(value, StateInRange):
        return {"state": value.name, "code": f"0x{value.code:X}"}
    if isinstance(value, Level):
        base = None if value.base is None else f"0x{value.base:02X}"
        return {"level": value.level, "base": base}
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex().upper()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        total = int(value.total_seconds())
        return f"{total // 3600}:{total // 60 % 60:02d}:{total % 60:02d}"
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def _special_from(schema: Schema, obj: object) -> object | None:
    if isinstance(obj, Mapping) and set(obj) == {"level", "base"}:
        base = obj["base"]
        return Level(int(obj["level"]), None if base is None else int(str(base), 16))
    if isinstance(obj, Mapping) and "code" in obj and ("special" in obj or "state" in obj):
        code = int(str(obj["code"]), 16)
        if "special" in obj:
            return Special(str(obj["special"]), code)
        return StateInRange(str(obj["state"]), code)
    return None


def from_jsonable(schema: Schema, obj: object) -> object:
    """Turn plain JSON data (as :func:`to_jsonable` writes it) back into a value for ``schema``."""
    special = _special_from(schema, obj)
    if special is not None:
        return special
    if "oneOf" in schema:
        for alt in schema["oneOf"]:
            try:
                value = from_jsonable(alt, obj)
                encode_value(alt, value)
            except (ValueCodecError, ValueError, TypeError, KeyError):
                continue
            return value
        return obj
    kind = schema.get("type")
    if kind == "raw" and isinstance(obj, str):
        return bytes.fromhex(obj.removeprefix("0x"))
    if kind == "date" and isinstance(obj, str):
        return dt.date.fromisoformat(obj)
    if kind == "date-time" and isinstance(obj, str):
        return dt.datetime.fromisoformat(obj)
    if kind == "time" and isinstance(obj, str):
        if int(schema.get("maximumOfHour", 23)) > 23:
            parts = [int(p) for p in obj.split(":")] + [0, 0]
            return dt.timedelta(hours=parts[0], minutes=parts[1], seconds=parts[2])
        return dt.time.fromisoformat(obj)
    if kind == "object" and isinstance(obj, Mapping):
        fields = {f["shortName"]: f["element"] for f in schema["properties"]}
        return {k: from_jsonable(fields[k], v) if k in fields else v for k, v in obj.items()}
    if kind == "bitmap" and isinstance(obj, Mapping):
        return dict(obj)
    if kind == "array" and isinstance(obj, list):
        return [from_jsonable(schema["items"], item) for item in obj]
    return obj


def _parse_scalar(schema: Schema, text: str) -> object:
    kind = schema.get("type")
    t = text.strip()
    if kind == "state":
        for item in schema["enum"]:
            low, high = _edt_code(item["edt"])
            names = {item["name"].lower(), str(item.get("descriptions", {}).get("en", "")).lower()}
            if t.lower() in names and low == high:
                return item["name"]
        if t.lower().startswith("0x"):
            code = int(t, 16)
            for item in schema["enum"]:
                low, high = _edt_code(item["edt"])
                if low <= code <= high:
                    return item["name"] if low == high else StateInRange(item["name"], code)
        raise ValueError(f"{text!r} is not a state")
    if kind in ("number", "numericValue"):
        if t.lower().startswith("0x"):
            edt = bytes.fromhex(t[2:].rjust(2 * (fixed_size(schema) or 1), "0"))
            return decode_value(schema, edt)
        if kind == "number":
            for code, name in _special_codes(schema).items():
                if t.lower() == name:
                    return Special(name, code)
        number = float(t)
        return int(number) if number.is_integer() and "." not in t else number
    if kind == "level":
        if t.lower().startswith("0x"):
            return _level_from_code(schema, int(t, 16), "")
        return int(t)
    if kind == "raw":
        return bytes.fromhex(t.removeprefix("0x").removeprefix("0X").replace(" ", ""))
    if kind == "date":
        return dt.date.fromisoformat(t)
    if kind == "date-time":
        return dt.datetime.fromisoformat(t)
    if kind == "time":
        return from_jsonable(schema, t)
    return from_jsonable(schema, json.loads(t))


def parse_value(schema: Schema, text: str, *, where: str = "") -> object:
    """A value from a person's text: ``"cooling"``, ``"26"``, ``"0x42"``, ``"ON"``, JSON for
    objects, arrays and bitmaps.  The result is validated by encoding it."""
    candidates = schema.get("oneOf", [schema])
    mixed = "oneOf" in schema and any(not _is_state(alt) for alt in candidates)
    ordered = [alt for alt in candidates if _is_state(alt)] + [
        alt for alt in candidates if not _is_state(alt)
    ]
    for alt in ordered:
        try:
            value = _parse_scalar(alt, text)
            if "oneOf" in schema and alt.get("type") == "level" and _levels_tagged(schema):
                value = Level(int(str(value)), _level_base(alt))
            if mixed and _is_state(alt) and isinstance(value, str):
                value = Special(value, _state_code(alt, value, where))
            encode_value(schema, value, where=where)
        except (ValueError, TypeError, KeyError):
            continue
        return value
    raise _fail(where, f"cannot read {text!r}", schema)


def _unit_text(schema: Schema) -> str:
    unit = schema.get("unit")
    text = f" {unit_symbol(unit)}" if isinstance(unit, str) and unit else ""
    coefficient = schema.get("coefficient")
    if coefficient:
        text += f" (× EPC {', '.join(coefficient)})"
    return text


def format_value(schema: Schema, value: object) -> str:
    """A decoded value as a person reads it: ``"cooling"``, ``"26 °C"``, ``"noData"``;
    a two-state property's ``"true"`` / ``"false"`` as its description (``"On"``)."""
    if isinstance(value, Special | StateInRange | Level):
        return str(value)
    if "oneOf" in schema:
        for alt in schema["oneOf"]:
            try:
                encode_value(alt, value)
            except ValueCodecError:
                continue
            return format_value(alt, value)
        return str(value)
    kind = schema.get("type")
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and kind == "state" and value in ("true", "false"):
        # the MRA names two-state properties true/false; its description says what they mean
        for item in schema["enum"]:
            if item["name"] == value:
                return str(item.get("descriptions", {}).get("en") or value).rstrip(".")
    if isinstance(value, int | float) and kind == "number":
        return f"{value}{_unit_text(schema)}"
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex().upper() if value else "(empty)"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return str(to_jsonable(value))
    if isinstance(value, Mapping):
        if kind == "object":
            fields = {f["shortName"]: f["element"] for f in schema["properties"]}
        elif kind == "bitmap":
            fields = {f["name"]: f["value"] for f in schema["bitmaps"]}
        else:
            fields = {}
        return ", ".join(f"{k}={format_value(fields.get(k, {}), v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        items = schema.get("items", {}) if kind == "array" else {}
        return "[" + ", ".join(format_value(items, v) for v in value) + "]"
    return str(value)
