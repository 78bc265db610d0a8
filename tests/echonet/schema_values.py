"""Hypothesis strategies that generate valid values for any class-database data schema."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from erab.echonet.codecs import NUMBER_FORMATS as _FORMATS
from erab.echonet.codecs import Level, Special, StateInRange


def _scaled(count: int, schema: Mapping[str, Any]) -> int | float:
    scale = schema.get("multiple", schema.get("multipleOf", 1))
    if scale == 1:
        return count
    if isinstance(scale, int):
        return count * scale
    decimals = len(repr(scale).split(".")[1]) if "." in repr(scale) else 0
    return round(count * scale, decimals)


def _code(edt: str) -> tuple[int, int]:
    if "..." in edt:
        low, high = edt.split("...")
        return int(low, 16), int(high, 16)
    return int(edt, 16), int(edt, 16)


def _state(schema: Mapping[str, Any], special: bool) -> st.SearchStrategy[object]:
    options: list[st.SearchStrategy[object]] = []
    for item in schema["enum"]:
        low, high = _code(item["edt"])
        if low == high:
            value: object = Special(item["name"], low) if special else item["name"]
            options.append(st.just(value))
        else:
            options.append(st.integers(low, high).map(lambda c, n=item["name"]: StateInRange(n, c)))
    return st.one_of(options)


def values(
    schema: Mapping[str, Any], special_states: bool = False, reserved: frozenset[int] = frozenset()
) -> st.SearchStrategy[object]:
    """Values ``encode_value(schema, v)`` must accept and ``decode_value`` must give back.

    ``reserved``: codes a sibling state alternative claims, which a number must not take.
    """
    if "oneOf" in schema:
        alts = schema["oneOf"]
        mixed = any(alt.get("type") != "state" for alt in alts)
        claimed = frozenset(
            code
            for alt in alts
            if alt.get("type") == "state"
            for item in alt["enum"]
            for code in range(_code(item["edt"])[0], _code(item["edt"])[1] + 1)
        )
        kinds = [alt.get("type") for alt in alts]
        tagged = "level" in kinds and kinds.count("level") + kinds.count("number") > 1
        options = []
        for alt in alts:
            option = values(alt, special_states=mixed, reserved=claimed)
            if tagged and alt.get("type") == "level":
                base = int(alt["base"], 16) if "base" in alt else None
                option = option.map(lambda n, b=base: Level(n, b))
            options.append(option)
        return st.one_of(options)
    kind = schema["type"]
    if kind == "number":
        size, signed = _FORMATS[schema["format"]]
        if "enum" in schema:
            counts: st.SearchStrategy[int] = st.sampled_from(schema["enum"])
        else:
            low = schema.get("minimum", -(1 << (8 * size - 1)) if signed else 0)
            high = schema.get(
                "maximum", (1 << (8 * size - 1)) - 1 if signed else (1 << (8 * size)) - 1
            )
            counts = st.integers(low, high)
        if reserved:
            counts = counts.filter(lambda c: (c % (1 << (8 * size))) not in reserved)
        numbers = counts.map(lambda c: _scaled(c, schema))
        top = (1 << (8 * size)) - 1
        specials = []
        if schema.get("overflowCode", True):
            specials.append(("overflow", (top >> 1) if signed else top))
        if schema.get("underflowCode", True):
            specials.append(("underflow", (1 << (8 * size - 1)) if signed else top - 1))
        outside = (
            [
                Special(name, code)
                for name, code in specials
                if code not in reserved
                and not low
                <= (code - (1 << (8 * size)) if signed and code >> (8 * size - 1) else code)
                <= high
            ]
            if "enum" not in schema
            else []
        )
        return st.one_of(numbers, st.sampled_from(outside)) if outside else numbers
    if kind == "state":
        return _state(schema, special_states)
    if kind == "numericValue":
        return st.sampled_from([item["numericValue"] for item in schema["enum"]])
    if kind == "level":
        if "base" in schema:
            return st.integers(1, schema["maximum"])
        return st.integers(schema.get("minimum", 0), schema["maximum"])
    if kind == "bitmap":
        return st.fixed_dictionaries({f["name"]: values(f["value"]) for f in schema["bitmaps"]})
    if kind == "raw":
        return st.binary(min_size=schema["minSize"], max_size=schema["maxSize"])
    if kind == "date":
        return st.dates(dt.date(1, 1, 1), dt.date(9999, 12, 31))
    if kind == "time":
        size = schema.get("size", 3)
        max_hour = schema.get("maximumOfHour", 23)
        seconds = st.just(0) if size == 2 else st.integers(0, 59)
        parts = st.tuples(st.integers(0, max_hour), st.integers(0, 59), seconds)
        if max_hour > 23:
            return parts.map(lambda p: dt.timedelta(hours=p[0], minutes=p[1], seconds=p[2]))
        return parts.map(lambda p: dt.time(*p))
    if kind == "date-time":
        moments = st.datetimes(dt.datetime(1, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59))
        if schema.get("size", 7) == 6:
            return moments.map(lambda m: m.replace(second=0, microsecond=0))
        return moments.map(lambda m: m.replace(microsecond=0))
    if kind == "object":
        fields = st.fixed_dictionaries(
            {f["shortName"]: values(f["element"]) for f in schema["properties"]}
        )
        names = [f["shortName"] for f in schema["properties"]]
        if (
            "numberOfCollectionSegments" in names
            and schema["properties"][-1]["element"].get("type") == "array"
        ):
            # the count field says how many entries the array holds
            array = names[-1]

            def consistent(value: dict[str, Any]) -> dict[str, Any]:
                count = value["numberOfCollectionSegments"]
                items = (value[array] * (count + 1))[:count] if value[array] else value[array]
                return {**value, array: items} if len(items) == count else value

            counted = fields.filter(lambda v: isinstance(v["numberOfCollectionSegments"], int))
            return counted.map(consistent).filter(
                lambda v: v["numberOfCollectionSegments"] == len(v[array])
            )
        return fields
    if kind == "array":
        return st.lists(
            values(schema["items"]), min_size=schema.get("minItems", 0), max_size=schema["maxItems"]
        )
    raise AssertionError(f"no strategy for {kind!r}")
