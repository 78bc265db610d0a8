"""Generate erab's ECHONET Lite class database from the published machine-readable appendices.

Run as ``python -m erab.echonet.generate [--spec DIR] [--check]``.  It reads

- the ECHONET Consortium's Machine Readable Appendix (MRA, JSON, data version 1.3.0) and
- Sony CSL's ECHONETLite-ObjectDatabase (CSV, Release C, CC0), English and Japanese,

and writes ``src/erab/echonet/data/classes.json``: one sorted, deterministic JSON document
that :mod:`erab.echonet.classdb` loads.  The MRA wins for every class it describes; the CSV
tables fill in the classes only they describe, their free-text "value range", "data type",
"data size" and "unit" columns turned into the MRA's schema forms as far as the text allows
(states from "ON=0x30, OFF=0x31", number ranges from "0x0000-0xFFFD", scale from "0.1 A"),
and raw bytes of the stated size otherwise.  The device list names every class code of the
seven class groups.

``--check`` regenerates in memory and exits 1 if the committed file differs.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import sys
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FORMAT = "erab-classdb/1"
MRA_COPYRIGHT = "(C) 2021-2024 Kanagawa Institute of Technology, ECHONET Consortium"
SONYCSL_NOTE = (
    "Classes with source 'sonycsl' come from Sony CSL's ECHONETLite-ObjectDatabase "
    "(Release C of the APPENDIX, 2014), dedicated to the public domain under CC0 1.0; "
    "their release range is not stated there and is recorded as A..latest."
)

Json = dict[str, Any]


def default_spec_dir() -> Path:
    """``<repo>/../shared/spec``: the repository is three folders above this file's package."""
    repo = Path(__file__).resolve().parents[3]
    return repo.parent / "shared" / "spec"


def default_output() -> Path:
    return Path(__file__).resolve().parent / "data" / "classes.json"


def hex_code(value: int, digits: int) -> str:
    return f"0x{value:0{digits}X}"


def camel_case(text: str) -> str:
    """``"Water flow meter"`` -> ``"waterFlowMeter"`` (ASCII letters and digits only)."""
    words: list[str] = re.findall(r"[A-Za-z0-9]+", text)
    if not words:
        return ""
    first, rest = words[0], words[1:]
    head = first if first.isupper() and len(first) > 1 else first[0].lower() + first[1:]
    return head + "".join(w[0].upper() + w[1:] for w in rest)


# --------------------------------------------------------------------------------------------
# MRA


def _load_json(path: Path) -> Json:
    try:
        with path.open(encoding="utf-8") as f:
            data: Json = json.load(f)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    return data


def _release_key(release: str) -> int:
    return 99 if release == "latest" else ord(release[0].upper()) - ord("A")


def _mra_property(raw: Json) -> Json:
    name_en = raw["propertyName"]["en"].strip()
    short = raw["shortName"]
    if short == "DEL":
        # The MRA marks properties left out of the Web API (the property maps) with "DEL";
        # erab needs a usable short name for them.
        short = camel_case(name_en)
    access = raw["accessRule"]
    return {
        "epc": raw["epc"].upper().replace("0X", "0x"),
        "name": {"en": name_en, "ja": raw["propertyName"]["ja"].strip()},
        "shortName": short,
        "access": {"get": access["get"], "set": access["set"], "inf": access["inf"]},
        "validFrom": raw["validRelease"]["from"],
        "validTo": raw["validRelease"]["to"],
        "data": raw["data"],
    }


def _mra_class(path: Path) -> tuple[int, Json]:
    raw = _load_json(path)
    code = int(raw["eoj"], 16)
    props = [_mra_property(p) for p in raw["elProperties"]]
    props.sort(key=lambda p: (int(p["epc"], 16), _release_key(p["validFrom"])))
    return code, {
        "name": {"en": raw["className"]["en"].strip(), "ja": raw["className"]["ja"].strip()},
        "shortName": raw["shortName"],
        "source": "mra",
        "validFrom": raw["validRelease"]["from"],
        "validTo": raw["validRelease"]["to"],
        "properties": props,
    }


def _refs(node: object, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref.rsplit("/", 1)[-1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


# --------------------------------------------------------------------------------------------
# Sony CSL CSV tables


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def _table_rows(path: Path) -> list[list[str]]:
    rows = _read_csv(path)
    start = next(i for i, r in enumerate(rows) if r and r[0].strip() == "EPC")
    return [r for r in rows[start + 1 :] if r and re.fullmatch(r"0x[0-9A-Fa-f]{2}", r[0].strip())]


_SCALARS = {"char": 1, "short": 2, "long": 4}
_HEX = r"0x[0-9A-Fa-f]+"
_RANGE_RE = re.compile(rf"({_HEX}|\b0)\s*(?:\.|–|-|~|～|to)\s*({_HEX})")
_UNIT_NAMES = {
    "°c": "Celsius",
    "℃": "Celsius",
    "c": "Celsius",
    "deg": "degree",
    "degree": "degree",
    "liter": "L",
    "liters": "L",
    "l": "L",
    "sec": "second",
    "second": "second",
    "min": "minute",
    "msec": "ms",
    "day": "day",
    "hour": "hour",
}


def _parse_unit(text: str) -> tuple[float | int | None, str | None]:
    """``"0.1 A"`` -> (0.1, "A"); ``"°C"`` -> (None, "Celsius"); dashes and blanks -> no unit."""
    t = unicodedata.normalize("NFKC", text).strip()
    if t in ("", "-", ".", "0") or "+" in t or " or " in t.lower() or "," in t:
        return None, None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(.*)", t)
    multiple: float | int | None = None
    if m:
        number = m.group(1)
        multiple = float(number) if "." in number else int(number)
        t = m.group(2).replace(" ", "")
        if multiple == 1:
            multiple = None
    t = t.replace(" ", "")
    if not t:
        return multiple, None
    return multiple, _UNIT_NAMES.get(t.lower(), t)


def _parse_type(text: str) -> tuple[str, int] | None:
    """A scalar C type (``unsigned short``) -> (signedness, byte size); composites -> None."""
    t = re.sub(r"\s+", "", text.lower())
    m = re.fullmatch(r"(unsigned|signed)(char|short|long|cha)", t)
    if not m:
        return None
    return m.group(1), _SCALARS.get(m.group(2), 1)


def _parse_size(text: str) -> tuple[int, int] | None:
    t = text.strip()
    if re.fullmatch(r"\d+", t):
        return int(t), int(t)
    m = re.search(r"(\d+)\s*$", t)
    if m and ("max" in t.lower() or "<=" in t):
        return 1, int(m.group(1))
    m = re.fullmatch(r"or\s+(\d+)\s+(\d+)", t)
    if m:
        return int(m.group(1)), int(m.group(2))
    return None


def _clean_desc(text: str) -> str:
    t = text.strip(" \t\n,;:=/.、，：＝")
    t = re.sub(r"\((?:initial value|初期値)[^)]*\)", "", t, flags=re.IGNORECASE).strip()
    return re.sub(r"\s+", " ", t)


def _states_from_text(text: str, size: int) -> list[tuple[int, int, str]]:
    """Coded values in a value-range text: [(first code, last code, description)].

    Two writing styles appear in the tables: code first (``0x30: running water 0x31: ...``)
    and name first (``ON=0x30, OFF=0x31``).  Codes that start or end a numeric range such
    as ``0x00.0xFD`` are not states, except a range followed by its own description
    (``0x41-0x45: minimum to maximum levels``), which becomes a state range.
    """
    t = unicodedata.normalize("NFKC", text)
    codes = [(m.start(), m.end(), int(m.group(), 16)) for m in re.finditer(_HEX, t)]
    if not codes:
        return []
    limit = 1 << (8 * size)
    code_first = re.match(rf"\s*{_HEX}\s*(?:[-–.]\s*{_HEX}\s*)?[:=]", t) is not None
    if not code_first and not re.search(rf"[=:]\s*{_HEX}", t):
        if re.fullmatch(rf"\s*{_HEX}(\s*/\s*{_HEX})+\s*", t):
            return [(c, c, "") for _, _, c in codes if c < limit]
        return []
    states: list[tuple[int, int, str]] = []
    i = 0
    while i < len(codes):
        start, end, code = codes[i]
        last = code
        # "0x41-0x45" (a range of codes) in code-first text
        if i + 1 < len(codes) and re.fullmatch(
            r"\s*(?:-|–|\.|\.\.\.|~)\s*", t[end : codes[i + 1][0]]
        ):
            if not code_first:
                i += 2
                continue
            last = codes[i + 1][2]
            end = codes[i + 1][1]
            i += 1
        if code_first:
            stop = codes[i + 1][0] if i + 1 < len(codes) else len(t)
            desc = t[end:stop]
            if not re.match(r"\s*[:=]", desc):
                i += 1
                continue
        else:
            begin = codes[i - 1][1] if i > 0 else 0
            desc = t[begin:start]
            if not re.search(r"[=:]\s*$", desc):
                i += 1
                continue
            desc = desc.rstrip(" =:")
            if ":" in desc:  # "The following values shall be used: Cooling: 0x42"
                desc = desc.rsplit(":", 1)[-1]
        desc = _clean_desc(desc)
        if code < limit and last < limit and "reserved" not in desc.lower():
            states.append((code, last, desc))
        i += 1
    return states


def _state_name(desc: str, code: int, taken: set[str]) -> str:
    name = camel_case(desc)[:48] or f"code{code:02X}"
    if not name[0].isalpha():
        name = "v" + name
    base, n = name, 2
    while name in taken:
        name = f"{base}{n}"
        n += 1
    taken.add(name)
    return name


def _csv_state(
    states: list[tuple[int, int, str]], size: int, ja: dict[int, str], on_off: bool
) -> Json:
    if on_off:
        return {"$ref": "#/definitions/state_ON-OFF_3031"}
    taken: set[str] = set()
    enum = []
    for first, last, desc in states:
        edt = hex_code(first, 2 * size)
        if last != first:
            edt = f"{edt}...{hex_code(last, 2 * size)}"
        en = desc or hex_code(first, 2 * size)
        enum.append(
            {
                "edt": edt,
                "name": _state_name(desc, first, taken),
                "descriptions": {"en": en, "ja": ja.get(first, en)},
            }
        )
    return {"type": "state", "size": size, "enum": enum}


def _coded_numbers(states: list[tuple[int, int, str]], size: int) -> Json | None:
    """Codes that each stand for a number ("0x00: 1m3 0x01: 0.1m3", "0x00 : ×1") become the
    MRA's numericValue form."""
    enum = []
    for first, last, desc in states:
        m = re.fullmatch(r"[×x]?\s*(\d+(?:\.\d+)?)\s*(?:[A-Za-z][A-Za-z0-9/]*)?", desc)
        if m is None or first != last:
            return None
        number = m.group(1)
        value: float | int = float(number) if "." in number else int(number)
        enum.append({"edt": hex_code(first, 2 * size), "numericValue": value})
    return {"type": "numericValue", "size": size, "enum": enum}


def _signed(value: int, size: int) -> int:
    bits = 8 * size
    return value - (1 << bits) if value >= 1 << (bits - 1) else value


def _csv_number(
    signed: bool,
    size: int,
    rng: tuple[int, int] | None,
    unit: str | None,
    multiple: float | int | None,
) -> Json:
    fmt = ("int" if signed else "uint") + str(8 * size)
    schema: Json = {"type": "number", "format": fmt}
    if rng is not None:
        low, high = rng
        if signed:
            low, high = _signed(low, size), _signed(high, size)
        elif low > high:
            # an "unsigned" column whose range only makes sense in two's complement
            schema["format"] = f"int{8 * size}"
            low, high = _signed(low, size), _signed(high, size)
        if low <= high:
            schema["minimum"], schema["maximum"] = low, high
    if unit:
        schema["unit"] = unit
    if multiple is not None:
        schema["multiple"] = multiple
    return schema


def _csv_data(row_en: list[str], ja_range: str) -> tuple[Json, str | None]:
    """Turn one CSV row's free-text columns into an MRA-style data schema."""
    name = row_en[1]
    range_text = unicodedata.normalize("NFKC", row_en[3])
    multiple, unit = _parse_unit(row_en[4])
    scalar = _parse_type(row_en[5])
    sizes = _parse_size(row_en[6])
    mistyped = scalar is not None and sizes is not None and sizes[0] == sizes[1] != scalar[1]
    if scalar is not None and sizes is not None and mistyped and sizes[0] in (1, 2, 4):
        scalar = (scalar[0], sizes[0])  # the size column wins over a mistyped type column
    if scalar is not None and (sizes is None or sizes == (scalar[1], scalar[1])):
        signedness, size = scalar
        ja_states = {c: d for c, _, d in _states_from_text(ja_range, size) if d}
        states = _states_from_text(range_text, size)
        rng_match = _RANGE_RE.search(range_text)
        rng = (int(rng_match.group(1), 16), int(rng_match.group(2), 16)) if rng_match else None
        if rng is not None and (rng[0] >= 1 << (8 * size) or rng[1] >= 1 << (8 * size)):
            rng = None
        if rng is not None:
            states = [s for s in states if not (rng[0] <= s[0] <= rng[1] and s[0] == s[1])]
            states = [s for s in states if (s[0], s[1]) != rng]
        on_off = [(s[0], s[2].upper()) for s in states] == [(0x30, "ON"), (0x31, "OFF")]
        if (
            rng is not None
            and not states
            and size == 1
            and "level" in name.lower()
            and rng[0] in (0x21, 0x31, 0x41)
            and rng[1] > rng[0]
        ):
            level: Json = {
                "type": "level",
                "base": hex_code(rng[0], 2),
                "maximum": rng[1] - rng[0] + 1,
            }
            return level, None
        if states and rng is None:
            coded = _coded_numbers(states, size)
            if coded is not None:
                return coded, None
            return _csv_state(states, size, ja_states, on_off), None
        number = _csv_number(signedness == "signed", size, rng, unit, multiple)
        if states:
            return {"oneOf": [number, _csv_state(states, size, ja_states, False)]}, unit
        return number, unit
    # composite values: a pair of hours and minutes is a time; anything else stays raw bytes
    type_text = re.sub(r"\s+", "", row_en[5].lower())
    if sizes == (2, 2) and re.fullmatch(r"unsignedchar[×x]2", type_text):
        to = r"\s*(?:\.|to|-|–)\s*"
        if re.match(rf"\s*0{to}0x17\s*:\s*0{to}0x3B", range_text, re.IGNORECASE):
            return {"type": "time", "size": 2}, None
        if re.match(rf"\s*0{to}0xFF\s*:\s*0{to}0x3B", range_text, re.IGNORECASE):
            return {"type": "time", "size": 2, "maximumOfHour": 255}, None
    if sizes is None:
        return {"type": "raw", "minSize": 0, "maxSize": 253}, None
    return {"type": "raw", "minSize": sizes[0], "maxSize": sizes[1]}, None


_CSV_ACCESS = {
    "mandatory": "required",
    "optional": "optional",
    "-": "notApplicable",
    "": "notApplicable",
}


def _csv_access(text: str, inf: bool = False) -> str:
    t = text.strip().lower()
    if inf and t in ("-", ""):
        # any property may be announced; the tables mark only the mandatory announcements
        return "optional"
    return _CSV_ACCESS.get(t, "optional")


def _csv_class(code: int, en_path: Path, ja_path: Path, names: tuple[str, str]) -> Json:
    ja_rows = {r[0].strip().upper(): r for r in _table_rows(ja_path)} if ja_path.exists() else {}
    props: list[Json] = []
    seen: set[str] = set()
    taken: set[str] = set()
    for row in _table_rows(en_path):
        row = row + [""] * (12 - len(row))
        epc = "0x" + row[0].strip()[2:].upper()
        if epc in seen:
            continue
        seen.add(epc)
        ja = ja_rows.get(row[0].strip().upper(), [])
        ja_name = ja[1].strip() if len(ja) > 1 and ja[1].strip() else row[1].strip()
        ja_range = ja[3] if len(ja) > 3 else ""
        data, _ = _csv_data(row, ja_range)
        short = camel_case(row[1]) or f"property{epc[2:]}"
        base, n = short, 2
        while short in taken:
            short = f"{base}{n}"
            n += 1
        taken.add(short)
        props.append(
            {
                "epc": epc,
                "name": {"en": re.sub(r"\s+", " ", row[1].strip()), "ja": ja_name},
                "shortName": short,
                "access": {
                    "get": _csv_access(row[9]),
                    "set": _csv_access(row[8]),
                    "inf": _csv_access(row[10], inf=True),
                },
                "validFrom": "A",
                "validTo": "latest",
                "data": data,
            }
        )
    props.sort(key=lambda p: int(p["epc"], 16))
    return {
        "name": {"en": names[0], "ja": names[1]},
        "shortName": camel_case(names[0]),
        "source": "sonycsl",
        "validFrom": "A",
        "validTo": "latest",
        "properties": props,
    }


def _device_list(spec: Path) -> dict[int, tuple[str, str]]:
    en = _read_csv(spec / "sonycsl-objectdb" / "en" / "DeviceList.csv")[1:]
    ja = _read_csv(spec / "sonycsl-objectdb" / "ja" / "DeviceList.csv")[1:]
    if len(en) != len(ja):
        raise ValueError(
            "sonycsl-objectdb DeviceList.csv: English and Japanese lists differ in length"
        )
    names: dict[int, tuple[str, str]] = {}
    for row_en, row_ja in zip(en, ja, strict=True):
        if len(row_en) < 4 or not row_en[2].strip():
            continue
        code = (int(row_en[2], 16) << 8) | int(row_en[3], 16)
        name_en = re.sub(r"\s+", " ", row_en[0]).strip().rstrip(".")
        names[code] = (name_en, row_ja[0].strip())
    return names


# --------------------------------------------------------------------------------------------


def _unit_of(data: Json, definitions: Json) -> str | None:
    """The unit a property's number is in, looking through ``$ref`` and ``oneOf``."""
    node = data
    if "$ref" in node:
        node = {**definitions[node["$ref"].rsplit("/", 1)[-1]], **node}
    if node.get("type") == "number":
        unit = node.get("unit")
        return unit if isinstance(unit, str) else None
    for alternative in node.get("oneOf", ()):
        unit = _unit_of(alternative, definitions)
        if unit:
            return unit
    return None


def _unique_state_names(node: object) -> None:
    """Give a state that repeats an earlier state's name in the same enum (0x0000 0x93 has
    two "true" codes) its own name, the name plus its code: a decoded name must say the code.
    """
    if isinstance(node, dict):
        if node.get("type") == "state":
            seen: set[str] = set()
            for item in node["enum"]:
                if item["name"] in seen:
                    item["name"] = f"{item['name']}{item['edt'].split('...')[0][2:]}"
                seen.add(item["name"])
        for value in node.values():
            _unique_state_names(value)
    elif isinstance(node, list):
        for value in node:
            _unique_state_names(value)


def build_database(spec: Path) -> Json:
    """Read the spec folder and return erab's class database as one JSON-ready document."""
    mra = spec / "mra"
    if not (mra / "metaData.json").exists():
        raise FileNotFoundError(
            f"no MRA metaData.json under {mra}; pass --spec with the folder holding mra/ and "
            "sonycsl-objectdb/"
        )
    meta = _load_json(mra / "metaData.json")["metaData"]
    if meta.get("Copyright") != MRA_COPYRIGHT:
        raise ValueError(f"unexpected MRA copyright line: {meta.get('Copyright')!r}")
    definitions: Json = _load_json(mra / "definitions" / "definitions.json")["definitions"]
    names = _device_list(spec)

    classes: dict[int, Json] = {}
    for path in [
        mra / "superClass" / "0x0000.json",
        mra / "nodeProfile" / "0x0EF0.json",
        *sorted((mra / "devices").glob("0x*.json")),
    ]:
        code, entry = _mra_class(path)
        classes[code] = entry

    csv_dir = spec / "sonycsl-objectdb"
    for path in sorted((csv_dir / "en").glob("0x*.csv")):
        code = int(path.stem, 16)
        if code in classes:
            continue  # the MRA is newer and more precise
        listed = names.get(code)
        if listed is None:
            header = _read_csv(path)[1]
            listed = (header[0].strip(), header[0].strip())
        classes[code] = _csv_class(code, path, csv_dir / "ja" / path.name, listed)

    for code, (name_en, name_ja) in names.items():
        if code not in classes:
            classes[code] = {
                "name": {"en": name_en, "ja": name_ja},
                "shortName": camel_case(name_en),
                "source": "names",
                "validFrom": "A",
                "validTo": "latest",
                "properties": [],
            }

    # class short names must be unique: a CSV or name-only class yields to an MRA class
    taken = {c["shortName"] for c in classes.values() if c["source"] == "mra"}
    for code in sorted(classes):
        entry = classes[code]
        if entry["source"] != "mra":
            if entry["shortName"] in taken:
                entry["shortName"] = f"{entry['shortName']}{code:04X}"
            taken.add(entry["shortName"])

    used: set[str] = set()
    out_classes: Json = {}
    for code in sorted(classes):
        entry = classes[code]
        entry["group"] = hex_code(code >> 8, 2)
        for prop in entry["properties"]:
            prop["unit"] = _unit_of(prop["data"], definitions)
            _refs(prop["data"], used)
        out_classes[hex_code(code, 4)] = entry
    # definitions referenced from definitions
    pending = list(used)
    while pending:
        found: set[str] = set()
        _refs(definitions[pending.pop()], found)
        pending.extend(found - used)
        used |= found
    if "state_ON-OFF_3031" not in definitions:
        raise ValueError("MRA definitions lack state_ON-OFF_3031")

    out_definitions = {name: definitions[name] for name in sorted(used)}
    _unique_state_names(out_definitions)
    _unique_state_names(out_classes)
    return {
        "format": FORMAT,
        "notice": [
            "Generated by `python -m erab.echonet.generate` from ../shared/spec; do not edit.",
            "ECHONET Lite Machine Readable Appendix data: "
            + MRA_COPYRIGHT
            + ", distributed under its MIT-style permission notice.",
            SONYCSL_NOTE,
        ],
        "sources": {
            "mra": {
                "copyright": MRA_COPYRIGHT,
                "dataVersion": meta["dataVersion"],
                "date": meta["date"],
                "release": meta["release"],
            },
            "sonycsl": {
                "license": "CC0 1.0",
                "name": "ECHONETLite-ObjectDatabase",
                "release": "C",
            },
        },
        "definitions": out_definitions,
        "classes": out_classes,
    }


_HEAD = ("notice", "format", "sources", "definitions", "classes")


def _sorted(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _sorted(node[key]) for key in sorted(node)}
    if isinstance(node, list):
        return [_sorted(item) for item in node]
    return node


def render(database: Json) -> str:
    """The file text: the notice first, then every mapping sorted by key, one-space indent."""
    ordered = {key: _sorted(database[key]) for key in _HEAD if key in database}
    ordered.update({key: _sorted(database[key]) for key in sorted(database) if key not in _HEAD})
    return json.dumps(ordered, ensure_ascii=False, indent=1) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m erab.echonet.generate",
        description="Generate erab's ECHONET Lite class database from the MRA and Sony CSL tables.",
    )
    parser.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="spec folder holding mra/ and sonycsl-objectdb/ (default: <repo>/../shared/spec)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="where to write (default: the package's data/classes.json)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the committed file is out of date",
    )
    args = parser.parse_args(argv)
    spec = args.spec or default_spec_dir()
    output = args.output or default_output()
    try:
        text = render(build_database(spec))
    except (OSError, ValueError, KeyError) as exc:
        print(f"generate: error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else ""
        if current != text:
            print(
                f"generate: {output} is out of date; run python -m erab.echonet.generate",
                file=sys.stderr,
            )
            return 1
        print(f"generate: {output} is up to date")
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    # write beside the target and rename: an interrupted run never leaves a truncated database
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, output)
    classes = json.loads(text)["classes"]
    with_props = sum(1 for c in classes.values() if c["properties"])
    print(f"generate: wrote {output}: {len(classes)} classes, {with_props} with property tables")
    return 0


if __name__ == "__main__":
    sys.exit(main())
