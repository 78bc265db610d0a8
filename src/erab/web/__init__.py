"""erab.web: the operator's console (docs/dashboard.md).

- :func:`create_console` — the FastAPI app of server-rendered pages and their live JSON feeds
  over the RA, with the RA's REST API mounted beside them; :class:`ConsoleHooks` for what the
  RA does not keep (a site's meter history, the gateways' outbox depth, the settlement).
- :class:`SecurityDesk` — what the console needs of the security core (logins, certificates,
  revocation, the assessment, the audit log, operators), given by the command line
  (``erab.cli.web.HomeSecurityDesk``); :class:`Account` is an operator as the console sees one.
"""

from erab.web.app import ConsoleHooks, create_console
from erab.web.auth import Account, ActionRefused, LoginFailed, SecurityDesk
from erab.web.views import FleetHistory

__all__ = [
    "Account",
    "ActionRefused",
    "ConsoleHooks",
    "FleetHistory",
    "LoginFailed",
    "SecurityDesk",
    "create_console",
]
