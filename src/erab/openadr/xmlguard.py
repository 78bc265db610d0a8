"""A first look at every OpenADR 2.0b message before any full XML parser sees it.

openleadr hands a received body to lxml (schema validation) and to xmltodict; both are full
parsers with entity support.  erab refuses, before either runs and with a reason an operator
can read, what no 2.0b message needs:

- more than ``max_bytes`` (an oversized body),
- a DOCTYPE, any entity declaration or external entity (entity expansion, "billion laughs",
  XXE: the 2.0b schema has no DTD, so a message carrying one is refused, never expanded),
- nesting deeper than ``max_depth`` or more than ``max_elements`` elements,
- anything that is not well-formed XML, and a root other than ``oadrPayload`` in the 2.0b
  namespace (``http://openadr.org/oadr-2.0b/2012/07``).

It also reads what the security checks need: the message type, whether it carries an XML
signature, and the signature's ReplayProtect nonce and timestamp (OpenADR 2.0b profile
specification, §10 "Security": signed messages carry a ``dsp:ReplayProtect`` property).
The scan uses the standard library's expat, whose handlers stop it at the first DOCTYPE.
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass
from enum import StrEnum

OADR_NS = "http://openadr.org/oadr-2.0b/2012/07"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
DSP_NS = "http://openadr.org/oadr-2.0b/2012/07/xmldsig-properties"
MAX_BYTES = 1 << 20  # 1 MiB: a report of thousands of intervals still fits
MAX_DEPTH = 48  # the deepest 2.0b message (a report with its descriptions) is ~20 deep
MAX_ELEMENTS = 50_000


class Refusal(StrEnum):
    """Why a message was refused, as recorded in the audit log."""

    OVERSIZED = "oversized"
    ENTITY = "entity_declaration"
    TOO_DEEP = "too_deep"
    TOO_MANY_ELEMENTS = "too_many_elements"
    MALFORMED = "malformed"
    WRONG_NAMESPACE = "wrong_namespace"
    UNSIGNED = "unsigned"
    REPLAYED = "replayed"
    STALE = "stale"
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_VEN = "unknown_ven"


class XmlRefused(ValueError):
    """A message refused before parsing; ``reason`` is the :class:`Refusal`."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class XmlFacts:
    """What the scan found in an acceptable message."""

    message_type: str | None  # e.g. oadrPoll, the element inside oadrSignedObject
    signed: bool
    nonce: str | None = None
    timestamp: str | None = None


@dataclass(frozen=True)
class XmlLimits:
    max_bytes: int = MAX_BYTES
    max_depth: int = MAX_DEPTH
    max_elements: int = MAX_ELEMENTS


class _Stop(Exception):
    def __init__(self, reason: Refusal, message: str) -> None:
        self.reason, self.message = reason, message


def inspect_xml(data: bytes, limits: XmlLimits = XmlLimits()) -> XmlFacts:
    """Scan ``data``; raise :class:`XmlRefused` naming what was wrong, else its facts."""
    if len(data) > limits.max_bytes:
        raise XmlRefused(Refusal.OVERSIZED,
                         f"message of {len(data)} bytes is over the limit of "
                         f"{limits.max_bytes}")  # fmt: skip
    parser = xml.parsers.expat.ParserCreate(namespace_separator=" ")
    depth = 0
    count = 0
    path: list[str] = []
    facts: dict[str, str | bool | None] = {"type": None, "signed": False, "nonce": None,
                                           "timestamp": None}  # fmt: skip
    text: list[str] = []

    def refuse_dtd(*_: object) -> None:
        raise _Stop(Refusal.ENTITY, "a DOCTYPE or entity declaration (2.0b messages have none; "
                                    "entities are never expanded)")  # fmt: skip

    def start(name: str, _attrs: object) -> None:
        nonlocal depth, count
        depth += 1
        count += 1
        if depth > limits.max_depth:
            raise _Stop(Refusal.TOO_DEEP, f"nesting deeper than {limits.max_depth} elements")
        if count > limits.max_elements:
            raise _Stop(Refusal.TOO_MANY_ELEMENTS, f"more than {limits.max_elements} elements")
        if depth == 1 and name != f"{OADR_NS} oadrPayload":
            shown = name.replace(" ", "}", 1)
            raise _Stop(Refusal.WRONG_NAMESPACE,
                        f"root element {{{shown} is not {{{OADR_NS}}}oadrPayload"
                        if " " in name else
                        f"root element {name} is not {{{OADR_NS}}}oadrPayload")  # fmt: skip
        if depth == 3 and path[-1] == f"{OADR_NS} oadrSignedObject":
            facts["type"] = name.rpartition(" ")[2]
        if name == f"{DSIG_NS} Signature":
            facts["signed"] = True
        path.append(name)
        text.clear()

    def end(name: str) -> None:
        nonlocal depth
        depth -= 1
        path.pop()
        if name in (f"{DSP_NS} nonce", f"{DSP_NS} timestamp"):
            facts[name.rpartition(" ")[2]] = "".join(text).strip()
        text.clear()

    def chars(data: str) -> None:
        if len(text) < 64:
            text.append(data)

    parser.StartDoctypeDeclHandler = refuse_dtd
    parser.EntityDeclHandler = refuse_dtd
    parser.UnparsedEntityDeclHandler = refuse_dtd
    parser.ExternalEntityRefHandler = refuse_dtd  # type: ignore[assignment]
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except _Stop as stop:
        raise XmlRefused(stop.reason, stop.message) from None
    except xml.parsers.expat.ExpatError as exc:
        raise XmlRefused(Refusal.MALFORMED, f"not well-formed XML ({exc})") from None
    except (ValueError, UnicodeError) as exc:  # e.g. an encoding expat does not know
        raise XmlRefused(Refusal.MALFORMED, f"not readable XML ({exc})") from None
    return XmlFacts(
        message_type=facts["type"] if isinstance(facts["type"], str) else None,
        signed=bool(facts["signed"]),
        nonce=facts["nonce"] if isinstance(facts["nonce"], str) else None,
        timestamp=facts["timestamp"] if isinstance(facts["timestamp"], str) else None,
    )
