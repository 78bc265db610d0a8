"""OAuth 2.0 client credentials for the OpenADR 3 VTN: the client registry and erab's tokens.

OpenADR 3.0.1 secures every call with an OAuth2 client-credentials token (RFC 6749 §4.4) and
names the scopes each needs (``components.securitySchemes``).  erab is its own authorisation
server here: ``POST /auth/token`` (the definition's optional endpoint) exchanges a registered
client's id and secret for a token that erab signs with HMAC-SHA256, so checking one needs no
store lookup beyond "is the client still registered".

Two roles, as the definition's scope descriptions assign them:

- business logic (BL): reads everything, writes programs, events, subscriptions and VENs;
- VEN: reads what targets it, writes its reports, subscriptions, and its own VEN and
  resources.

Secrets are kept as scrypt hashes (RFC 7914), compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from erab.clock import Clock, RealClock
from erab.openadr.v3.store import ClientRow, ObjectStore


class Role(StrEnum):
    BL = "bl"
    VEN = "ven"


# OpenADR 3.0.1, securitySchemes.oAuth2ClientCredentials.flows.clientCredentials.scopes
READ_ALL = "read_all"
WRITE_PROGRAMS = "write_programs"
WRITE_EVENTS = "write_events"
WRITE_REPORTS = "write_reports"
WRITE_SUBSCRIPTIONS = "write_subscriptions"
WRITE_VENS = "write_vens"
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.BL: frozenset({READ_ALL, WRITE_PROGRAMS, WRITE_EVENTS, WRITE_SUBSCRIPTIONS, WRITE_VENS}),
    Role.VEN: frozenset({READ_ALL, WRITE_REPORTS, WRITE_SUBSCRIPTIONS, WRITE_VENS}),
}
# OpenADR 3.1.0 splits reading: read_targets (programs, events: what targets the VEN),
# read_ven_objects (the VEN's own reports, subscriptions, VENs, resources), read_bl (BL-only
# notifier topics); read_all stays business logic's and covers the other three
READ_TARGETS = "read_targets"
READ_VEN_OBJECTS = "read_ven_objects"
READ_BL = "read_bl"
ROLE_SCOPES_3_1: dict[Role, frozenset[str]] = {
    Role.BL: frozenset(
        {READ_ALL, READ_BL, WRITE_PROGRAMS, WRITE_EVENTS, WRITE_SUBSCRIPTIONS, WRITE_VENS}
    ),
    Role.VEN: frozenset(
        {READ_TARGETS, READ_VEN_OBJECTS, WRITE_REPORTS, WRITE_SUBSCRIPTIONS, WRITE_VENS}
    ),
}
SCOPES_BY_API: dict[str, dict[Role, frozenset[str]]] = {
    "3.0.1": ROLE_SCOPES,
    "3.1.0": ROLE_SCOPES_3_1,
}
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
TOKEN_PREFIX = "oadr3"


class AuthError(Exception):
    """A refused credential or token.  ``error`` is the RFC 6749 §5.2 / RFC 6750 §3.1 code,
    the message says what was wrong."""

    def __init__(self, error: str, message: str) -> None:
        super().__init__(message)
        self.error = error


@dataclass(frozen=True)
class Client:
    """A registered client: BL, or a VEN acting for ``ven_name``."""

    client_id: str
    role: Role
    ven_name: str | None = None


@dataclass(frozen=True)
class Grant:
    """What a valid token says: who, in which role, with which scopes, until when."""

    client: Client
    scopes: frozenset[str]
    expires_at: float


class ClientRegistry:
    """The clients allowed to obtain tokens, in the VTN's store."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def register(
        self, client_id: str, role: Role, *, ven_name: str | None = None, secret: str | None = None
    ) -> str:
        """Add (or replace) a client and return its secret (a new random one unless given).
        A VEN client needs the ``ven_name`` it acts for."""
        if not client_id or len(client_id) > 128:
            raise ValueError("client_id: give 1 to 128 characters")
        if role is Role.VEN and not ven_name:
            raise ValueError(f"client {client_id!r}: a VEN client needs the venName it acts for")
        secret = secret or secrets.token_urlsafe(32)
        salt = os.urandom(16)
        digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)
        self.store.put_client(
            ClientRow(client_id, role.value, ven_name if role is Role.VEN else None, salt, digest)
        )
        return secret

    def remove(self, client_id: str) -> bool:
        """Remove a client; its tokens stop working at once."""
        return self.store.remove_client(client_id)

    def get(self, client_id: str) -> Client | None:
        row = self.store.client(client_id)
        return None if row is None else Client(row.client_id, Role(row.role), row.ven_name)

    def authenticate(self, client_id: str, secret: str) -> Client:
        """The client whose id and secret these are; :class:`AuthError` ``invalid_client``
        otherwise (the same message for an unknown id and a wrong secret)."""
        row = self.store.client(client_id)
        salt, expected = (row.secret_salt, row.secret_hash) if row else (b"\0" * 16, b"")
        digest = hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)  # also for unknown ids
        if row is None or not hmac.compare_digest(digest, expected):
            raise AuthError("invalid_client", "unknown client_id or wrong client_secret")
        return Client(row.client_id, Role(row.role), row.ven_name)


class TokenIssuer:
    """Signs and checks erab's bearer tokens: ``oadr3.<claims>.<HMAC-SHA256>`` (base64url)."""

    def __init__(
        self,
        key: bytes,
        *,
        lifetime_s: int = 3600,
        clock: Clock | None = None,
        api: str = "3.0.1",
    ) -> None:
        if len(key) < 32:
            raise ValueError("the token key must be at least 32 bytes")
        if api not in SCOPES_BY_API:
            raise ValueError(f"api {api!r}: give one of {', '.join(SCOPES_BY_API)}")
        self._key = key
        self.lifetime_s = lifetime_s
        self.clock: Clock = clock or RealClock()
        self.api = api
        self.role_scopes = SCOPES_BY_API[api]

    def for_api(self, api: str) -> TokenIssuer:
        """An issuer with the same key for API version ``api``: its tokens carry the version
        and are refused by the other API (their scopes mean different things)."""
        return TokenIssuer(self._key, lifetime_s=self.lifetime_s, clock=self.clock, api=api)

    @classmethod
    def from_key_file(
        cls, path: Path, *, lifetime_s: int = 3600, clock: Clock | None = None
    ) -> TokenIssuer:
        """The issuer whose key is in ``path``, made (readable by its owner only) if absent."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(os.urandom(32))
        return cls(path.read_bytes(), lifetime_s=lifetime_s, clock=clock)

    def issue(self, client: Client, requested: str | None = None) -> tuple[str, Grant]:
        """A token for ``client`` with the scopes ``requested`` (space-separated, RFC 6749
        §3.3), or all its role's scopes when none are asked for."""
        allowed = self.role_scopes[client.role]
        scopes = frozenset(requested.split()) if requested and requested.strip() else allowed
        refused = sorted(scopes - allowed)
        if refused:
            raise AuthError(
                "invalid_scope",
                f"a {client.role.value} client may not have scope {', '.join(refused)}; "
                f"its scopes are {' '.join(sorted(allowed))}",
            )
        expires_at = self.clock.timestamp() + self.lifetime_s
        claims = {
            "sub": client.client_id,
            "role": client.role.value,
            "ven": client.ven_name,
            "scope": " ".join(sorted(scopes)),
            "exp": int(expires_at),
            "jti": secrets.token_hex(8),
            "api": self.api,
        }
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"{TOKEN_PREFIX}.{payload}.{signature}", Grant(
            client, scopes, float(int(expires_at))
        )

    def verify(self, token: str, registry: ClientRegistry) -> Grant:
        """The grant ``token`` carries; :class:`AuthError` ``invalid_token`` saying why not
        (malformed, bad signature, expired, client no longer registered)."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise AuthError("invalid_token", "the bearer token is not one this VTN issued")
        expected = _b64(hmac.new(self._key, parts[1].encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            raise AuthError("invalid_token", "the bearer token's signature is wrong")
        try:
            claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            client_id, exp, scope = str(claims["sub"]), float(claims["exp"]), str(claims["scope"])
            api = str(claims.get("api", "3.0.1"))  # tokens from before 3.1 was served
        except (ValueError, KeyError, TypeError):
            raise AuthError("invalid_token", "the bearer token's claims cannot be read") from None
        if api != self.api:
            raise AuthError(
                "invalid_token",
                f"the bearer token was issued for OpenADR {api}, not {self.api}; fetch one at "
                "this API's auth/token",
            )
        if exp <= self.clock.timestamp():
            raise AuthError(
                "invalid_token", "the bearer token has expired; fetch a new one at /auth/token"
            )
        client = registry.get(client_id)
        if client is None:
            raise AuthError("invalid_token", f"client {client_id!r} is no longer registered")
        # the role's scopes now: a client moved to a narrower role loses the rest at once
        return Grant(client, frozenset(scope.split()) & self.role_scopes[client.role], exp)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
