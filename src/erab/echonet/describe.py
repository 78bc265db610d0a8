"""Frames as a person (or a log, or a JSON consumer) wants to read them.

:func:`describe_frame` pairs every property of a decoded frame with its class database entry
and its typed value.  Which object a property belongs to follows the ESV: a request names
properties of its destination (DEOJ), an answer or notification those of its source (SEOJ).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from erab.echonet.classdb import UnknownClass, get_class, property_spec
from erab.echonet.codecs import to_jsonable
from erab.echonet.frame import EOJ, ESV, Format2Frame, Frame, Property
from erab.echonet.propmap import (
    PropertyMapError,
    decode_class_list,
    decode_instance_list,
    decode_property_map,
)

PROPERTY_MAP_EPCS = frozenset({0x9D, 0x9E, 0x9F})
INSTANCE_LIST_EPCS = frozenset({0xD5, 0xD6})
CLASS_LIST_EPC = 0xD7
NODE_PROFILE_CLASS = 0x0EF0

# ESVs whose properties belong to the destination object: the requests, and INFC_Res, which
# acknowledges a notification about the destination's own properties.
_ABOUT_DESTINATION = frozenset({ESV.SetI, ESV.SetC, ESV.Get, ESV.INF_REQ, ESV.SetGet, ESV.INFC_Res})


@dataclass(frozen=True)
class PropertyView:
    """One property of a frame, named and decoded."""

    epc: int
    name: str
    short_name: str
    edt: bytes
    value: object | None
    """Decoded value, or None where there is nothing to decode (empty EDT) or decoding failed."""
    text: str
    """The value for people, with its unit; or why it could not be decoded."""
    status: str
    """``value``, ``request`` (empty EDT in a request), ``accepted`` (Set answer, PDC 0),
    ``unavailable`` (SNA: not readable), ``rejected`` (SNA: Set refused, EDT echoed),
    ``undecodable`` (EDT does not fit the property's schema)."""
    scaled: float | None = None
    """The value times its coefficient properties (e.g. 0xE0 × 0xD3 × 0xE1 of a smart meter)
    when the same frame carries them; None otherwise."""
    scaled_unit: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "epc": f"0x{self.epc:02X}",
            "name": self.name,
            "shortName": self.short_name,
            "pdc": len(self.edt),
            "edt": self.edt.hex().upper(),
            "value": None if self.value is None else to_jsonable(self.value),
            "text": self.text,
            "status": self.status,
            **(
                {"scaledValue": self.scaled, "scaledUnit": self.scaled_unit}
                if self.scaled is not None
                else {}
            ),
        }


@dataclass(frozen=True)
class FrameView:
    """A frame with its objects and properties named."""

    frame: Frame
    seoj_name: str
    deoj_name: str
    props: tuple[PropertyView, ...]
    get_props: tuple[PropertyView, ...]

    def to_json(self) -> dict[str, Any]:
        f = self.frame
        out: dict[str, Any] = {
            "format": 1,
            "tid": f.tid,
            "seoj": str(f.seoj),
            "seojClass": self.seoj_name,
            "deoj": str(f.deoj),
            "deojClass": self.deoj_name,
            "esv": f"0x{int(f.esv):02X}",
            "esvName": f.esv.name,
            "meaning": f.esv.meaning,
            "sna": f.esv.is_sna,
            "properties": [p.to_json() for p in self.props],
        }
        if f.esv.is_setget:
            out["getProperties"] = [p.to_json() for p in self.get_props]
        return out

    def to_text(self) -> str:
        f = self.frame
        lines = [
            f"TID 0x{f.tid:04X}  {f.esv.name} (0x{int(f.esv):02X}, {f.esv.meaning})"
            + ("  ** service not available **" if f.esv.is_sna else ""),
            f"  from {f.seoj} {self.seoj_name}",
            f"  to   {f.deoj} {self.deoj_name}",
        ]
        lists = [("properties", self.props)]
        if f.esv.is_setget:
            lists = [("set properties", self.props), ("get properties", self.get_props)]
        for title, views in lists:
            lines.append(f"  {title} ({len(views)}):")
            for view in views:
                flag = {
                    "unavailable": "  [SNA: not available]",
                    "rejected": "  [SNA: set rejected]",
                    "undecodable": "  [does not fit its schema]",
                }.get(view.status, "")
                edt = view.edt.hex().upper() or "-"
                text = view.text
                if view.scaled is not None:
                    text += " = " + format_scaled(view.scaled, view.scaled_unit)
                lines.append(
                    f"    0x{view.epc:02X} {view.name}: {text}   (PDC {len(view.edt)}, "
                    f"EDT {edt}){flag}"
                )
        return "\n".join(lines)


def class_name(eoj: EOJ) -> str:
    try:
        return get_class(eoj.class_code).name_en
    except UnknownClass:
        return f"unknown class 0x{eoj.class_code:04X}"


def _structural(class_code: int, epc: int, edt: bytes) -> tuple[object, str] | None:
    """Property maps (every object) and the node profile's instance and class lists, decoded
    by their own formats (Part 2 Appendix 1, property map description format)."""
    try:
        if epc in PROPERTY_MAP_EPCS:
            epcs = sorted(decode_property_map(edt))
            return [f"0x{e:02X}" for e in epcs], " ".join(f"{e:02X}" for e in epcs) or "(none)"
        if class_code != NODE_PROFILE_CLASS:
            return None
        if epc in INSTANCE_LIST_EPCS:
            eojs = decode_instance_list(edt)
            return [str(e) for e in eojs], ", ".join(f"{e} {class_name(e)}" for e in eojs)
        if epc == CLASS_LIST_EPC:
            codes = decode_class_list(edt)
            return [f"0x{c:04X}" for c in codes], ", ".join(f"0x{c:04X}" for c in codes)
    except PropertyMapError as exc:
        return None, f"malformed: {exc}"
    return None


def _view(class_code: int, esv: ESV, prop: Property, *, get_list: bool) -> PropertyView:
    spec = property_spec(class_code, prop.epc)
    name = spec.name_en if spec else "unknown property"
    short = spec.short_name if spec else ""
    edt = prop.edt
    if not edt:
        if esv.is_sna:
            is_set_list = esv in (ESV.SetI_SNA, ESV.SetC_SNA) or (
                esv is ESV.SetGet_SNA and not get_list
            )
            status = "accepted" if is_set_list else "unavailable"
        elif esv in (ESV.Set_Res, ESV.INFC_Res) or (esv is ESV.SetGet_Res and not get_list):
            status = "accepted"
        else:
            status = "request"
        return PropertyView(prop.epc, name, short, edt, None, "-", status)
    status = "value"
    if esv in (ESV.SetI_SNA, ESV.SetC_SNA) or (esv is ESV.SetGet_SNA and not get_list):
        status = "rejected"  # a refused Set echoes the value it was given
    structural = _structural(class_code, prop.epc, edt)
    if structural is not None:
        value, text = structural
        return PropertyView(
            prop.epc, name, short, edt, value, text, status if value is not None else "undecodable"
        )
    if spec is None:
        return PropertyView(prop.epc, name, short, edt, edt, f"0x{edt.hex().upper()}", status)
    try:
        value = spec.decode(edt)
        text = spec.format(value)
    except ValueError as exc:
        return PropertyView(
            prop.epc, name, short, edt, None, f"cannot decode: {exc}", "undecodable"
        )
    return PropertyView(prop.epc, name, short, edt, value, text, status)


def _coefficient_schema(schema: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The number schema that names coefficient properties, directly or inside a oneOf."""
    if "coefficient" in schema:
        return schema
    for alternative in schema.get("oneOf", ()):
        if "coefficient" in alternative:
            found: Mapping[str, Any] = alternative
            return found
    return None


@dataclass(frozen=True)
class Coefficient:
    """The properties a count is multiplied by (MRA ``coefficient``) and the unit of the
    product: a smart meter's 0xE0 × 0xD3 × 0xE1 in kWh."""

    refs: tuple[int, ...]
    unit: str


def coefficient_of(class_code: int, epc: int) -> Coefficient | None:
    """How property ``epc`` of class ``class_code`` is scaled, or None if it is not."""
    spec = property_spec(class_code, epc)
    schema = _coefficient_schema(spec.schema) if spec else None
    if schema is None:
        return None
    return Coefficient(
        tuple(int(ref, 16) for ref in schema["coefficient"]), str(schema.get("unit", ""))
    )


def apply_coefficient(
    value: object, coefficient: Coefficient, numbers: Mapping[int, object]
) -> float | None:
    """``value`` times each coefficient property's number; None when ``value`` is not a
    count or a coefficient is not a number in ``numbers``."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    factor = 1.0
    for ref in coefficient.refs:
        number = numbers.get(ref)
        if not isinstance(number, int | float) or isinstance(number, bool):
            return None
        factor *= float(number)
    return round(value * factor, 9)


def format_scaled(value: float, unit: str) -> str:
    """A scaled value for people: every significant digit a meter has, no exponent."""
    return f"{value:.12g} {unit}".rstrip()


def _apply_coefficients(class_code: int, views: Sequence[PropertyView]) -> tuple[PropertyView, ...]:
    """Scale counts by the coefficient properties the same frame carries (MRA ``coefficient``:
    e.g. a water meter's 0xE0 × unit 0xE1, a smart meter's 0xE0 × 0xD3 × 0xE1)."""
    numbers = {v.epc: v.value for v in views}
    out = []
    for view in views:
        coefficient = coefficient_of(class_code, view.epc)
        if coefficient is not None:
            scaled = apply_coefficient(view.value, coefficient, numbers)
            if scaled is not None:
                view = replace(view, scaled=scaled, scaled_unit=coefficient.unit)
        out.append(view)
    return tuple(out)


def describe_frame(frame: Frame | Format2Frame) -> FrameView | dict[str, Any]:
    """Name and decode a frame.  A Format 2 frame is returned as a small dict (its body is
    opaque by definition)."""
    if isinstance(frame, Format2Frame):
        return {"format": 2, "tid": frame.tid, "body": frame.body.hex().upper()}
    owner = frame.deoj if frame.esv in _ABOUT_DESTINATION else frame.seoj
    code = owner.class_code
    props = _apply_coefficients(
        code, [_view(code, frame.esv, p, get_list=False) for p in frame.props]
    )
    gets = _apply_coefficients(
        code, [_view(code, frame.esv, p, get_list=True) for p in frame.get_props]
    )
    return FrameView(frame, class_name(frame.seoj), class_name(frame.deoj), props, gets)
