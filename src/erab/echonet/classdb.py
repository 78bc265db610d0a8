"""The ECHONET Lite class database: every device class, its properties and their data forms.

Generated from the MRA 1.3.0 and Sony CSL's tables by :mod:`erab.echonet.generate` into
``data/classes.json``; loaded once, on first use.  Look classes up by class code, EOJ or
short name, and properties by EPC or short name::

    aircon = get_class(0x013001)                 # EOJ: the instance code is ignored
    mode = aircon.property("operationMode")      # or aircon.property(0xB0)
    mode.decode(b"\\x42")                         # -> "cooling"
    mode.encode("heating")                       # -> b"\\x43"
    aircon.mandatory("set")                      # required Set properties, latest release

A device class's ``properties`` hold its own properties merged over the super class
(0x0000) ones; the node profile (0x0EF0) has its own complete table.  Where a property was
redefined between releases, ``properties`` holds the newest definition and
:meth:`DeviceClass.mandatory` with a ``release`` picks the definition valid in that release.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any

from erab.echonet.codecs import (
    Decoder,
    decoder_for,
    encode_value,
    format_value,
    parse_value,
)
from erab.echonet.frame import EOJ

__all__ = [
    "ACCESS_RULES",
    "DeviceClass",
    "PropertySpec",
    "UnknownClass",
    "UnknownProperty",
    "all_classes",
    "database_info",
    "get_class",
    "property_spec",
]

DATA_FILE = Path(__file__).resolve().parent / "data" / "classes.json"
SUPER_CLASS = 0x0000
NODE_PROFILE = 0x0EF0
ACCESS_RULES = ("required", "optional", "required_c", "optional_c", "required_o", "notApplicable")
"""Access rules as the MRA writes them; ``_c`` / ``_o`` mark conditional requirements."""


class UnknownClass(KeyError):
    """No class with that code or name in the database."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown class"


class UnknownProperty(KeyError):
    """The class has no property with that EPC or name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown property"


def _release_index(release: str) -> int:
    """Releases are letters A, B, … (the MRA skips O); ``latest`` sorts after all of them."""
    if release == "latest":
        return 99
    if len(release) != 1 or not release.isalpha():
        raise ValueError(f"release {release!r}: give a release letter such as 'J', or 'latest'")
    return ord(release.upper()) - ord("A")


@dataclass(frozen=True)
class PropertySpec:
    """One property of a class (one definition, valid from ``valid_from`` to ``valid_to``)."""

    epc: int
    name_en: str
    name_ja: str
    short_name: str
    get: str
    set: str
    inf: str
    schema: Mapping[str, Any] = field(hash=False, repr=False)
    unit: str | None
    valid_from: str
    valid_to: str
    where: str = field(default="", compare=False, repr=False)
    """Who the property belongs to, for error messages: ``homeAirConditioner (0x0130) …``."""

    @cached_property
    def _decoder(self) -> Decoder:
        return decoder_for(self.schema)

    def decode(self, edt: bytes) -> object:
        """EDT bytes -> value (shapes in :mod:`erab.echonet.codecs`)."""
        return self._decoder(edt, self.where)

    def encode(self, value: object) -> bytes:
        """Value -> EDT bytes, validated against the property's range, size and states."""
        return encode_value(self.schema, value, where=self.where)

    def parse(self, text: str) -> object:
        """A value from a person's text: ``"cooling"``, ``"26"``, ``"0x42"``, ``"ON"``."""
        return parse_value(self.schema, text, where=self.where)

    def format(self, value: object) -> str:
        """A value for people: ``"cooling"``, ``"26 °C"``, ``"1154620 m3 (× EPC 0xE1)"``."""
        return format_value(self.schema, value)

    def valid_in(self, release: str) -> bool:
        """Whether this definition belongs to ``release`` (a letter, or ``latest``)."""
        index = _release_index(release)
        return _release_index(self.valid_from) <= index <= _release_index(self.valid_to)

    def rule(self, access: str) -> str:
        """The access rule for ``get``, ``set`` or ``inf``."""
        if access not in ("get", "set", "inf"):
            raise ValueError(f"access {access!r}: give 'get', 'set' or 'inf'")
        rule: str = getattr(self, access)
        return rule


@dataclass(frozen=True)
class DeviceClass:
    """One ECHONET Lite class (device class, super class or node profile)."""

    class_code: int
    group_code: int
    name_en: str
    name_ja: str
    short_name: str
    source: str
    """Where its table comes from: ``mra``, ``sonycsl`` (CSV tables), or ``names`` (name only)."""
    properties: Mapping[int, PropertySpec] = field(hash=False, repr=False)
    versions: Mapping[int, tuple[PropertySpec, ...]] = field(
        hash=False, repr=False, compare=False, default_factory=dict
    )
    """Every definition of each EPC across releases, oldest first."""
    valid_from: str = "A"
    valid_to: str = "latest"
    """The releases the class is defined in (e.g. 0x0288 from release F)."""

    @property
    def code_text(self) -> str:
        return f"0x{self.class_code:04X}"

    def property(self, key: int | str) -> PropertySpec:
        """A property by EPC (``0xB0`` or ``"0xB0"``) or short name (``"operationMode"``)."""
        if isinstance(key, str) and key.lower().startswith("0x"):
            with contextlib.suppress(ValueError):
                key = int(key, 16)
        if isinstance(key, int):
            spec = self.properties.get(key)
            if spec is not None:
                return spec
            raise UnknownProperty(
                f"class {self.short_name} ({self.code_text}) has no property 0x{key:02X}"
            )
        wanted = key.lower()
        for spec in self.properties.values():
            if spec.short_name == key:
                return spec
        for spec in self.properties.values():
            if wanted in (spec.short_name.lower(), spec.name_en.lower()):
                return spec
        raise UnknownProperty(
            f"class {self.short_name} ({self.code_text}) has no property {key!r}; "
            f"`erab el class {self.code_text}` lists them"
        )

    def mandatory(self, access: str = "get", release: str | None = None) -> list[PropertySpec]:
        """Properties whose ``access`` rule is ``required``, by EPC.

        ``release`` (a letter such as ``"J"``) takes the definitions valid in that release
        (none if the class did not exist yet); without it the newest definitions are used.
        Conditional requirements (``required_c``, ``required_o``) are not included.
        """
        if access not in ("get", "set", "inf"):
            raise ValueError(f"access {access!r}: give 'get', 'set' or 'inf'")
        if release is None:
            chosen = list(self.properties.values())
        else:
            index = _release_index(release)
            if not _release_index(self.valid_from) <= index <= _release_index(self.valid_to):
                return []
            chosen = []
            for epc in sorted(self.versions):
                valid = [v for v in self.versions[epc] if v.valid_in(release)]
                if valid:
                    chosen.append(valid[-1])
        return sorted((s for s in chosen if s.rule(access) == "required"), key=lambda s: s.epc)


# --------------------------------------------------------------------------------------------
# loading


@cache
def _raw() -> dict[str, Any]:
    try:
        with DATA_FILE.open(encoding="utf-8") as f:
            data: dict[str, Any] = json.load(f)
    except FileNotFoundError:
        raise RuntimeError(
            f"class database {DATA_FILE} is missing; run `python -m erab.echonet.generate`"
        ) from None
    return data


def _resolve(node: Any, definitions: Mapping[str, Any], cache_: dict[str, Any]) -> Any:
    """Inline every ``$ref`` (``#/definitions/NAME``), keeping keys given beside the ref."""
    if isinstance(node, list):
        return [_resolve(item, definitions, cache_) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        target = cache_.get(name)
        if target is None:
            target = cache_[name] = _resolve(definitions[name], definitions, cache_)
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return {**target, **extra} if extra else target
    return {k: _resolve(v, definitions, cache_) for k, v in node.items()}


@cache
def _resolved_definitions() -> dict[str, Any]:
    return {}


@cache
def _index() -> tuple[dict[int, dict[str, Any]], dict[str, int]]:
    classes = {int(code, 16): entry for code, entry in _raw()["classes"].items()}
    names: dict[str, int] = {}
    # MRA classes first, so an English name shared with an older table finds the MRA class
    for code, entry in sorted(classes.items(), key=lambda item: item[1]["source"] != "mra"):
        names.setdefault(entry["shortName"].lower(), code)
        names.setdefault(entry["name"]["en"].lower(), code)
        names.setdefault(entry["name"]["ja"], code)
    return classes, names


def _specs(entry: dict[str, Any], where_class: str) -> dict[int, list[PropertySpec]]:
    """PropertySpecs of a class table; ``where_class`` names the class they serve in errors."""
    definitions = _raw()["definitions"]
    cache_ = _resolved_definitions()
    out: dict[int, list[PropertySpec]] = {}
    for prop in entry["properties"]:
        epc = int(prop["epc"], 16)
        out.setdefault(epc, []).append(
            PropertySpec(
                epc=epc,
                name_en=prop["name"]["en"],
                name_ja=prop["name"]["ja"],
                short_name=prop["shortName"],
                get=prop["access"]["get"],
                set=prop["access"]["set"],
                inf=prop["access"]["inf"],
                schema=_resolve(prop["data"], definitions, cache_),
                unit=prop["unit"],
                valid_from=prop["validFrom"],
                valid_to=prop["validTo"],
                where=f"{where_class} {prop['shortName']} (0x{epc:02X})",
            )
        )
    return out


def _is_device_class(code: int) -> bool:
    return code != SUPER_CLASS and (code >> 8) <= 0x06


@cache
def _build(code: int) -> DeviceClass:
    classes, _ = _index()
    entry = classes[code]
    where_class = f"{entry['shortName']} (0x{code:04X})"
    own = _specs(entry, where_class)
    versions: dict[int, list[PropertySpec]] = {}
    if _is_device_class(code):
        versions.update(_specs(classes[SUPER_CLASS], where_class))
    versions.update(own)
    frozen = {epc: tuple(v) for epc, v in sorted(versions.items())}
    return DeviceClass(
        class_code=code,
        group_code=code >> 8,
        name_en=entry["name"]["en"],
        name_ja=entry["name"]["ja"],
        short_name=entry["shortName"],
        source=entry["source"],
        properties=MappingProxyType({epc: v[-1] for epc, v in frozen.items()}),
        versions=MappingProxyType(frozen),
        valid_from=entry["validFrom"],
        valid_to=entry["validTo"],
    )


def _class_code(key: int | str | EOJ) -> int:
    if isinstance(key, EOJ):
        return key.class_code
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise UnknownClass(f"class {key!r}: give a class code such as 0x0130 or a short name")
    if isinstance(key, str):
        text = key.strip()
        if text.lower().startswith("0x"):
            try:
                key = int(text, 16)
            except ValueError:
                raise UnknownClass(f"class {key!r} is not a hexadecimal class code") from None
        else:
            code = _index()[1].get(text.lower())
            if code is None:
                raise UnknownClass(
                    f"no class named {key!r}; `erab el classes` lists class codes and names"
                )
            return code
    if 0xFFFF < key <= 0xFFFFFF:
        key >>= 8  # an EOJ: class group, class, instance
    if not 0 <= key <= 0xFFFF:
        shown = f"0x{key:X}" if key >= 0 else str(key)
        raise UnknownClass(f"class code {shown} is not a 2-byte class code or 3-byte EOJ")
    return key


def get_class(key: int | str | EOJ) -> DeviceClass:
    """A class by code (``0x0130``, ``"0x0130"``), EOJ (``0x013001``, ``EOJ(1, 0x30, 1)``),
    short name (``"homeAirConditioner"``) or English or Japanese name (``"家庭用エアコン"``).

    Raises :class:`UnknownClass` naming what was asked.
    """
    code = _class_code(key)
    if code not in _index()[0]:
        raise UnknownClass(
            f"class 0x{code:04X} is not in the class database "
            "(`erab el classes` lists the known ones)"
        )
    return _build(code)


def all_classes(group: int | None = None) -> list[DeviceClass]:
    """Every class, by code; with ``group`` (0x00-0x06, 0x0E) only that class group's classes
    (the super class 0x0000 is listed only without a group)."""
    codes = sorted(_index()[0])
    if group is not None:
        codes = [c for c in codes if c >> 8 == group and c != SUPER_CLASS]
    return [_build(c) for c in codes]


_SPECS: dict[tuple[int, int], PropertySpec | None] = {}


def property_spec(class_code: int, epc: int) -> PropertySpec | None:
    """The property EPC of a class, or None.  For a device class missing from the database
    the super class properties (0x80-0x9F) still resolve.  Used by the frame decoder."""
    key = (class_code, epc)
    try:
        return _SPECS[key]
    except KeyError:
        pass
    classes = _index()[0]
    spec: PropertySpec | None = None
    if class_code in classes:
        spec = _build(class_code).properties.get(epc)
    elif _is_device_class(class_code):
        spec = _build(SUPER_CLASS).properties.get(epc)
    if len(_SPECS) < 100_000:  # bounded: class codes and EPCs come off the network
        _SPECS[key] = spec
    return spec


def database_info() -> dict[str, Any]:
    """The database's sources and notice (MRA version and copyright, Sony CSL release)."""
    raw = _raw()
    return {"format": raw["format"], "notice": raw["notice"], "sources": raw["sources"]}
