"""``erab el classes`` and ``erab el class``: browse the ECHONET Lite class database."""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Sequence
from typing import Any

GROUPS: dict[int, str] = {
    0x00: "sensor",
    0x01: "air conditioner",
    0x02: "housing and facilities",
    0x03: "cooking and household",
    0x04: "health",
    0x05: "management and operation",
    0x06: "audiovisual",
    0x0E: "profile",
}
_RULES = {
    "required": "req",
    "optional": "opt",
    "required_c": "req(c)",
    "optional_c": "opt(c)",
    "required_o": "req(o)",
    "notApplicable": "-",
}


def register(subparsers: Any) -> None:
    classes = subparsers.add_parser(
        "classes",
        help="list ECHONET Lite classes (filter by class group)",
        description="List the classes of the class database: code, short name, names, source "
        "of the property table and number of properties.",
    )
    classes.add_argument(
        "--group",
        metavar="GROUP",
        help="class group code, e.g. 0x02 (housing and facilities); "
        + ", ".join(f"0x{g:02X} {n}" for g, n in GROUPS.items()),
    )
    classes.add_argument("--json", action="store_true", help="print JSON")
    classes.set_defaults(handler=list_classes)

    one = subparsers.add_parser(
        "class",
        help="show one class's property table",
        description="Show a class's properties: EPC, short name, access rules "
        "(Get/Set/INF: req, opt, (c) conditional, - not applicable), unit and data form.",
    )
    one.add_argument(
        "key", metavar="CLASS", help="class code (0x0288), EOJ (0x028801) or short name"
    )
    one.add_argument(
        "property",
        metavar="PROPERTY",
        nargs="?",
        help="show one property in full: EPC (0xB0) or short name (operationMode)",
    )
    one.add_argument("--json", action="store_true", help="print JSON (with full data schemas)")
    one.set_defaults(handler=show_class)


def _group(text: str) -> int:
    from erab.cli import CliError

    try:
        group = int(text, 0) if text.lower().startswith("0x") else int(text, 16)
    except ValueError:
        raise CliError(f"--group {text!r} is not a class group code such as 0x02") from None
    if group not in GROUPS:
        allowed = ", ".join(f"0x{g:02X}" for g in GROUPS)
        raise CliError(f"--group 0x{group:02X} is not a class group; allowed: {allowed}")
    return group


def _width(text: str) -> int:
    """Terminal columns: East Asian wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _fit(text: str, limit: int) -> str:
    if _width(text) <= limit:
        return text
    out = ""
    for ch in text:
        if _width(out + ch) > limit - 1:
            break
        out += ch
    return out + "…"


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [_width(h) for h in headers]
    for row in rows:
        widths = [max(w, _width(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(_pad(h, w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def list_classes(args: argparse.Namespace) -> int:
    from erab.echonet.classdb import all_classes

    group = _group(args.group) if args.group is not None else None
    classes = all_classes(group)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "class_code": f"0x{c.class_code:04X}",
                        "group_code": f"0x{c.group_code:02X}",
                        "short_name": c.short_name,
                        "name_en": c.name_en,
                        "name_ja": c.name_ja,
                        "source": c.source,
                        "properties": len(c.properties),
                    }
                    for c in classes
                ],
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    rows = [
        (
            f"0x{c.class_code:04X}",
            c.short_name,
            _fit(c.name_en, 48),
            _fit(c.name_ja, 28),
            c.source,
            str(len(c.properties)),
        )
        for c in classes
    ]
    print(_table(("code", "short name", "name", "名称", "source", "props"), rows))
    title = f"group 0x{group:02X} ({GROUPS[group]})" if group is not None else "all groups"
    print(f"\n{len(classes)} classes, {title}")
    return 0


def _property_json(p: Any) -> dict[str, Any]:
    return {
        "epc": f"0x{p.epc:02X}",
        "short_name": p.short_name,
        "name_en": p.name_en,
        "name_ja": p.name_ja,
        "get": p.get,
        "set": p.set,
        "inf": p.inf,
        "unit": p.unit,
        "valid_from": p.valid_from,
        "valid_to": p.valid_to,
        "schema": p.schema,
    }


def _form_lines(schema: Any, indent: str) -> list[str]:
    """A data form in full: each alternative, each state with its descriptions, each field."""
    from erab.echonet.codecs import describe_schema

    if "oneOf" in schema:
        lines = [f"{indent}one of:"]
        for alt in schema["oneOf"]:
            lines += _form_lines(alt, indent + "  ")
        return lines
    kind = schema.get("type")
    if kind == "state":
        size = int(schema["size"])
        head = "bit values" if size == 0 else f"state ({size} byte{'s' if size > 1 else ''})"
        lines = [f"{indent}{head}:"]
        for item in schema["enum"]:
            text = item.get("descriptions", {})
            lines.append(
                f"{indent}  {item['edt']:<8} {item['name']:<24} "
                f"{text.get('en', '')} / {text.get('ja', '')}".rstrip(" /")
            )
        return lines
    if kind == "object":
        lines = [f"{indent}object:"]
        for field in schema["properties"]:
            lines.append(f"{indent}  {field['shortName']}:")
            lines += _form_lines(field["element"], indent + "    ")
        return lines
    if kind == "array":
        low = schema.get("minItems", 0)
        lines = [f"{indent}array of {low}..{schema['maxItems']} items:"]
        return lines + _form_lines(schema["items"], indent + "  ")
    if kind == "bitmap":
        size = int(schema["size"])
        lines = [f"{indent}bitmap ({size} byte{'s' if size > 1 else ''}):"]
        for field in schema["bitmaps"]:
            where = f"byte {field['position']['index']} mask {field['position']['bitMask']}"
            lines.append(f"{indent}  {field['name']} ({where}):")
            lines += _form_lines(field["value"], indent + "    ")
        return lines
    return [f"{indent}{describe_schema(schema)}"]


def _show_property(cls: Any, key: str, *, as_json: bool) -> int:
    from erab.cli import CliError
    from erab.echonet.classdb import UnknownProperty

    try:
        spec = cls.property(key)
    except UnknownProperty as exc:
        raise CliError(str(exc)) from None
    versions = cls.versions.get(spec.epc, (spec,))
    if as_json:
        data = _property_json(spec)
        data["class_code"] = f"0x{cls.class_code:04X}"
        data["versions"] = [_property_json(v) for v in versions]
        print(json.dumps(data, ensure_ascii=False, indent=1))
        return 0
    print(f"0x{cls.class_code:04X} {cls.short_name}  0x{spec.epc:02X} {spec.short_name}")
    print(f"  name:     {spec.name_en} / {spec.name_ja}")
    print(f"  access:   get {spec.get}, set {spec.set}, inf {spec.inf}")
    print(f"  releases: {', '.join(f'{v.valid_from}-{v.valid_to}' for v in versions)}")
    if spec.unit:
        print(f"  unit:     {spec.unit}")
    print("  data:")
    for line in _form_lines(spec.schema, "    "):
        print(line)
    return 0


def show_class(args: argparse.Namespace) -> int:
    from erab.cli import CliError
    from erab.echonet.classdb import UnknownClass, get_class
    from erab.echonet.codecs import describe_schema, unit_symbol

    try:
        cls = get_class(args.key)
    except UnknownClass as exc:
        raise CliError(str(exc)) from None
    if args.property is not None:
        return _show_property(cls, args.property, as_json=args.json)
    props = list(cls.properties.values())
    if args.json:
        print(
            json.dumps(
                {
                    "class_code": f"0x{cls.class_code:04X}",
                    "group_code": f"0x{cls.group_code:02X}",
                    "short_name": cls.short_name,
                    "name_en": cls.name_en,
                    "name_ja": cls.name_ja,
                    "source": cls.source,
                    "properties": [_property_json(p) for p in props],
                },
                ensure_ascii=False,
                indent=1,
            )
        )
        return 0
    print(f"0x{cls.class_code:04X} {cls.short_name}: {cls.name_en} / {cls.name_ja}")
    merged = " (super class 0x0000 merged)" if cls.class_code not in (0x0000, 0x0EF0) else ""
    print(f"source: {cls.source}; {len(props)} properties{merged}\n")
    rows = []
    for p in props:
        form = describe_schema(p.schema)
        rows.append(
            (
                f"0x{p.epc:02X}",
                p.short_name,
                _fit(p.name_en, 48),
                "/".join(_RULES.get(r, r) for r in (p.get, p.set, p.inf)),
                unit_symbol(p.unit) if p.unit else "",
                _fit(form, 70),
                f"{p.valid_from}-{p.valid_to}",
            )
        )
    print(_table(("EPC", "short name", "name", "get/set/inf", "unit", "data", "release"), rows))
    return 0
