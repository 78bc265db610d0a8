"""erab.openadr.v3: the OpenADR 3.0.1 VTN REST API (docs/openadr3.md).

- :func:`build_app`: the FastAPI app (programs, events, reports, subscriptions with webhooks,
  VENs and resources, ``/auth/token``), over an :class:`ObjectStore` (SQLite);
- :class:`ClientRegistry` and :class:`TokenIssuer`: OAuth2 client credentials, BL and VEN roles;
- :func:`event_to_requests`: what an OpenADR 3 event asks of the RA, as RA event requests.
"""

from erab.openadr.v3.app import Change, VtnLimits, build_app
from erab.openadr.v3.auth import ROLE_SCOPES, AuthError, Client, ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.models import Kind, RaEventPlan, VenIdentity, event_to_requests, targeted_at
from erab.openadr.v3.notify import Notifier
from erab.openadr.v3.store import ObjectStore

__all__ = [
    "ROLE_SCOPES",
    "AuthError",
    "Change",
    "Client",
    "ClientRegistry",
    "Kind",
    "Notifier",
    "ObjectStore",
    "RaEventPlan",
    "Role",
    "TokenIssuer",
    "VenIdentity",
    "VtnLimits",
    "build_app",
    "event_to_requests",
    "targeted_at",
]
