"""erab.openadr: OpenADR between the aggregation coordinator (AC) and the RA (docs/openadr.md).

- The RA's 2.0b VEN: :class:`ErabVen` over a :class:`VenBackend` (:class:`RaBackend` for a
  running RA service); the decisions are pure functions in :mod:`.mapping`
  (:func:`event_to_requests`, :func:`decide_opt`).
- The AC's 2.0b VTN: :func:`build_vtn` and :func:`run_vtn` over an :class:`AcStore` (VENs by
  certificate fingerprint, events, opt responses, reports).
- Security: :func:`inspect_xml` (size, entities, depth, namespace) before any parser, signature
  and replay checks (:mod:`.security`).
"""

from erab.openadr.acstore import AcEvent, AcStore, AcStoreError, Ven
from erab.openadr.mapping import (
    OptDecision,
    SignalMapping,
    VenEvent,
    decide_opt,
    event_to_requests,
)
from erab.openadr.security import (
    ReplayGuard,
    fingerprint_of_file,
    fingerprint_of_pem,
    hold_to_tls12,
    short_fingerprint,
)
from erab.openadr.ven import ErabVen, RaBackend, VenBackend, VenConfig
from erab.openadr.vtn import AcVtn, VtnConfig, build_vtn, run_vtn
from erab.openadr.xmlguard import Refusal, XmlLimits, XmlRefused, inspect_xml

__all__ = [
    "AcEvent",
    "AcStore",
    "AcStoreError",
    "AcVtn",
    "ErabVen",
    "OptDecision",
    "RaBackend",
    "Refusal",
    "ReplayGuard",
    "SignalMapping",
    "Ven",
    "VenBackend",
    "VenConfig",
    "VenEvent",
    "VtnConfig",
    "XmlLimits",
    "XmlRefused",
    "build_vtn",
    "decide_opt",
    "event_to_requests",
    "fingerprint_of_file",
    "fingerprint_of_pem",
    "hold_to_tls12",
    "inspect_xml",
    "run_vtn",
    "short_fingerprint",
]
