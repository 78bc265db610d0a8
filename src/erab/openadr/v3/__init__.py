"""erab.openadr.v3: the OpenADR 3 VTN REST API, 3.0.1 and 3.1.0 (docs/openadr3.md).

- :func:`build_app`: the FastAPI app of one API version (programs, events, reports,
  subscriptions with webhooks, VENs and resources, ``/auth/token``; 3.1.0 adds
  ``/auth/server`` and ``/notifiers``), over an :class:`ObjectStore` (SQLite);
- :func:`build_server`: 3.0.1 at the root and 3.1.0 under ``/openadr3/3.1.0``, one store;
- :class:`ClientRegistry` and :class:`TokenIssuer`: OAuth2 client credentials, BL and VEN roles;
- :func:`event_to_requests`: what an OpenADR 3 event asks of the RA, as RA event requests.
"""

from erab.openadr.v3.app import PREFIX_3_1, Change, VtnLimits, build_app, build_server
from erab.openadr.v3.auth import ROLE_SCOPES, AuthError, Client, ClientRegistry, Role, TokenIssuer
from erab.openadr.v3.models import Kind, RaEventPlan, VenIdentity, event_to_requests, targeted_at
from erab.openadr.v3.notify import Notifier
from erab.openadr.v3.store import ObjectStore

__all__ = [
    "PREFIX_3_1",
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
    "build_server",
    "event_to_requests",
    "targeted_at",
]
