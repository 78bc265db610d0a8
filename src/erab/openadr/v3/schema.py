"""JSON checked against the published OpenADR 3 OpenAPI definitions (3.0.1 and 3.1.0) erab ships.

The definitions (``data/openadr3-<version>.yaml``, copyright the OpenADR Alliance, Apache-2.0,
see ``data/NOTICE``) are shipped verbatim, each with ``data/openadr3-<version>.json``: the same
document as JSON, made by ``python -m erab.openadr.v3.schema`` (which needs PyYAML; the server
does not).

The validator covers the OpenAPI 3.0 schema object as the definitions use it: ``$ref``,
``type``, ``nullable``, ``properties``/``required``, ``items``, ``enum``, string lengths and
``pattern``, ``format`` (``date-time``, ``uri``, ``int32``), ``minimum``/``maximum`` (with 3.0's
boolean ``exclusiveMaximum``), ``allOf``/``anyOf``/``oneOf``.  A generic JSON Schema library
would not do: OpenAPI 3.0's ``nullable`` and boolean exclusives are not JSON Schema.

One correction is applied to 3.1.0, as published (:data:`CORRECTIONS`): its ``ven`` and
``resource`` answers are ``allOf`` ``objectMetadata`` (whose ``objectType`` must be one of the
object types, ``VEN`` / ``RESOURCE``) and ``BlVenRequest`` / ``BlResourceRequest`` (whose
``objectType`` must be ``BL_VEN_REQUEST`` / ``BL_RESOURCE_REQUEST``): no answer can meet both.
erab drops the request-form discriminator from the answer's second part, so an answer's
``objectType`` is ``VEN`` or ``RESOURCE`` as ``objectMetadata`` says; everything else of the
BL form (``clientID``, ``venName``, ``targets`` …) is still checked.

Every error names where in the document it is (``body.intervals[0].payloads``) and what was
wrong, so that a 400 tells the client what to fix.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

SPEC_VERSION = "3.0.1"  # the default API: served at the root, as before 3.1
SPEC_VERSIONS = ("3.0.1", "3.1.0")
SPEC_YAML = f"openadr3-{SPEC_VERSION}.yaml"
SPEC_JSON = f"openadr3-{SPEC_VERSION}.json"
_INT32 = (-(2**31), 2**31 - 1)
MAX_ERRORS = 10

# (version, component, what was relaxed): see the module text; tests/openadr/v3 show that the
# published schema refuses every answer and the corrected one accepts a right one
CORRECTIONS: tuple[tuple[str, str, str], ...] = (
    ("3.1.0", "ven", "objectType of BlVenRequest (BL_VEN_REQUEST) not required of an answer"),
    (
        "3.1.0",
        "resource",
        "objectType of BlResourceRequest (BL_RESOURCE_REQUEST) not required of an answer",
    ),
)


def yaml_name(version: str) -> str:
    return f"openadr3-{version}.yaml"


def json_name(version: str) -> str:
    return f"openadr3-{version}.json"


@cache
def published(version: str = SPEC_VERSION) -> dict[str, Any]:
    """The shipped OpenAPI document of ``version`` as published, parsed once."""
    if version not in SPEC_VERSIONS:
        raise KeyError(f"erab ships OpenADR {', '.join(SPEC_VERSIONS)}, not {version!r}")
    data = resources.files("erab.openadr.v3").joinpath("data", json_name(version))
    text = data.read_text("utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


@cache
def spec(version: str = SPEC_VERSION) -> dict[str, Any]:
    """The definition of ``version`` that erab validates against: the published one with
    :data:`CORRECTIONS` applied (3.0.1 has none)."""
    doc = published(version)
    fixes = [name for v, name, _ in CORRECTIONS if v == version]
    if not fixes:
        return doc
    doc = copy.deepcopy(doc)
    schemas = doc["components"]["schemas"]
    for name in fixes:
        parts = schemas[name]["allOf"]
        for i, part in enumerate(parts):
            ref = part.get("$ref", "")
            if ref.endswith(("/BlVenRequest", "/BlResourceRequest")):
                form = copy.deepcopy(schemas[ref.rsplit("/", 1)[1]])
                form["properties"].pop("objectType", None)
                form["required"] = [r for r in form["required"] if r != "objectType"]
                parts[i] = form
    return doc


def component(name: str, version: str = SPEC_VERSION) -> dict[str, Any]:
    """The schema ``#/components/schemas/<name>``."""
    schemas: dict[str, Any] = spec(version)["components"]["schemas"]
    if name not in schemas:
        raise KeyError(f"the OpenADR {version} definition has no schema {name!r}")
    return dict(schemas[name])


def _operation(path: str, method: str, version: str) -> dict[str, Any]:
    paths: dict[str, Any] = spec(version)["paths"]
    try:
        op: dict[str, Any] = paths[path][method.lower()]
    except KeyError:
        raise KeyError(f"the OpenADR {version} definition has no {method} {path}") from None
    return op


def request_schema(path: str, method: str, version: str = SPEC_VERSION) -> dict[str, Any] | None:
    """The JSON request body's schema of ``method path`` (a path template of the definition,
    e.g. ``/events/{eventID}``), None when the operation takes no JSON body."""
    body = _operation(path, method, version).get("requestBody")
    if body is None:
        return None
    media: dict[str, Any] | None = body.get("content", {}).get("application/json")
    return None if media is None else dict(media["schema"])


def response_schema(
    path: str, method: str, status: int, version: str = SPEC_VERSION
) -> dict[str, Any] | None:
    """The schema of the JSON response ``status`` to ``method path``, None when the definition
    says nothing of that status (erab then answers a ``problem``)."""
    responses: dict[str, Any] = _operation(path, method, version).get("responses", {})
    answer = responses.get(str(status))
    if answer is None:
        return None
    if "$ref" in answer:  # 3.1 style: '#/components/responses/badRequest'
        answer = _resolve(answer["$ref"], spec(version))
    media = answer.get("content", {}).get("application/json")
    return None if media is None else dict(media["schema"])


def _resolve(ref: str, root: Mapping[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise ValueError(f"only local references are supported, not {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return dict(node)


def validate(
    instance: Any, schema: Mapping[str, Any], where: str = "body", *, version: str = SPEC_VERSION
) -> list[str]:
    """Every way ``instance`` breaks ``schema`` (at most :data:`MAX_ERRORS`), as
    ``"<where>: <what>"`` lines; empty when it conforms.  References resolve in the
    definition of ``version``."""
    return validate_in(instance, schema, spec(version), where)


def validate_in(
    instance: Any, schema: Mapping[str, Any], root: Mapping[str, Any], where: str = "body"
) -> list[str]:
    """As :func:`validate`, references resolved in the document ``root``."""
    errors: list[str] = []
    for error in _check(instance, schema, where, root):
        errors.append(error)
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, expected: str) -> bool:
    actual = _type_name(value)
    if expected == "number":
        return actual in ("number", "integer")
    if expected == "integer" and actual == "number":
        return math.isfinite(value) and float(value).is_integer()
    return actual == expected


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def parse_datetime(text: str) -> datetime | None:
    """An RFC 3339 date-time (``format: date-time``), None when ``text`` is not one; a date-time
    without an offset is refused, since the spec's times are instants."""
    if not re.fullmatch(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)", text):
        return None
    try:
        return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))
    except ValueError:
        return None


def _is_uri(text: str) -> bool:
    # RFC 3986 §3: scheme ":" hier-part; no spaces or controls anywhere
    return bool(re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s\x00-\x1f\x7f]+", text))


def _check(
    value: Any, schema: Mapping[str, Any], where: str, root: Mapping[str, Any]
) -> Iterator[str]:
    if "$ref" in schema:
        yield from _check(value, _resolve(schema["$ref"], root), where, root)
        return
    if value is None and schema.get("nullable"):
        return
    for sub in schema.get("allOf", ()):
        yield from _check(value, sub, where, root)
    for key in ("anyOf", "oneOf"):
        if key in schema:
            yield from _alternatives(value, schema[key], where, root, exactly_one=key == "oneOf")
    expected = schema.get("type")
    if expected is not None and not _is_type(value, expected):
        yield f"{where}: expected {expected}, got {_type_name(value)}"
        return
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(map(str, schema["enum"]))
        yield f"{where}: {_short(value)} is not one of {choices}"
    if isinstance(value, str):
        yield from _check_string(value, schema, where)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield from _check_number(value, schema, where)
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            yield f"{where}: needs at least {schema['minItems']} items, has {len(value)}"
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"{where}: allows at most {schema['maxItems']} items, has {len(value)}"
        items = schema.get("items")
        if items is not None:
            for i, item in enumerate(value):
                yield from _check(item, items, f"{where}[{i}]", root)
    elif isinstance(value, dict):
        for name in schema.get("required", ()):
            if name not in value:
                yield f"{where}: required property {name!r} is missing"
        props: Mapping[str, Any] = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                yield from _check(item, props[name], f"{where}.{name}", root)
            elif extra is False:
                yield f"{where}: property {name!r} is not allowed here"
            elif isinstance(extra, dict):
                yield from _check(item, extra, f"{where}.{name}", root)


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_string(value: str, schema: Mapping[str, Any], where: str) -> Iterator[str]:
    if "minLength" in schema and len(value) < schema["minLength"]:
        yield f"{where}: must be at least {schema['minLength']} characters, is {len(value)}"
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        yield f"{where}: must be at most {schema['maxLength']} characters, is {len(value)}"
    if "pattern" in schema and not _regex(schema["pattern"]).search(value):
        yield f"{where}: {_short(value)} does not match the pattern {schema['pattern']}"
    fmt = schema.get("format")
    if fmt == "date-time" and parse_datetime(value) is None:
        yield f"{where}: {_short(value)} is not an RFC 3339 date-time with an offset"
    elif fmt == "uri" and not _is_uri(value):
        yield f"{where}: {_short(value)} is not a URI"


def _check_number(value: float, schema: Mapping[str, Any], where: str) -> Iterator[str]:
    if isinstance(value, float) and not math.isfinite(value):
        yield f"{where}: {value} is not a finite number"
        return
    if schema.get("format") == "int32" and not _INT32[0] <= value <= _INT32[1]:
        yield f"{where}: {value} does not fit a 32-bit integer"
    if "minimum" in schema:
        low = schema["minimum"]
        if value < low or (schema.get("exclusiveMinimum") is True and value == low):
            yield f"{where}: {value} is below the minimum {low}"
    if "maximum" in schema:
        high = schema["maximum"]
        if value > high or (schema.get("exclusiveMaximum") is True and value == high):
            yield f"{where}: {value} is above the maximum {high}"


def _alternatives(
    value: Any,
    options: list[Mapping[str, Any]],
    where: str,
    root: Mapping[str, Any],
    *,
    exactly_one: bool,
) -> Iterator[str]:
    outcomes = [list(_check(value, option, where, root)) for option in options]
    matching = sum(1 for errors in outcomes if not errors)
    if matching == 0:
        # nearest: an alternative whose enums (a discriminator such as objectType) the value
        # meets, then the fewest faults; so a BL form missing clientID is told that
        best = min(
            outcomes, key=lambda errs: (any(" is not one of " in e for e in errs), len(errs))
        )
        yield f"{where}: matches none of the {len(options)} allowed forms; nearest: " + "; ".join(
            best[:3]
        )
    elif exactly_one and matching > 1:
        yield f"{where}: matches {matching} of the allowed forms, exactly one is allowed"


def convert(yaml_path: Path, json_path: Path) -> None:
    """Write the YAML definition ``yaml_path`` as JSON to ``json_path`` (needs PyYAML)."""
    import importlib

    yaml = importlib.import_module("yaml")
    doc = yaml.safe_load(yaml_path.read_text("utf-8"))
    json_path.write_text(render_json(doc), "utf-8")


def render_json(doc: Any) -> str:
    """The JSON text erab ships for a parsed definition (YAML timestamps in examples as ISO
    strings), stable so that regeneration can be compared byte for byte."""
    return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False, default=_iso) + "\n"


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot render {type(value).__name__} as JSON")


if __name__ == "__main__":
    data = Path(__file__).with_name("data")
    for v in SPEC_VERSIONS:
        convert(data / yaml_name(v), data / json_name(v))
        print(f"wrote {data / json_name(v)}")
