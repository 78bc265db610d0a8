"""Signed command envelopes (Ed25519) with replay protection and key rotation.

Every command the RA sends a gateway travels in an envelope: gateway id, sequence number,
issue time, expiry, the signing key's id and the body, signed over their canonical JSON.
The gateway's :class:`EnvelopeVerifier` rejects, with a distinct :class:`RejectReason`, a
malformed envelope, an unknown key, a bad signature, another gateway's command, a replayed or
older sequence number, and an expired or not-yet-valid command (allowing ``max_skew`` of
clock difference).  Key rotation: a key announcement signed by the current key makes the
verifier accept the next key too; the first command signed with the next key retires the old.

The verifier's state (last sequence, trusted keys) is saved before a command is returned, so
a restart cannot reopen a replay window.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from erab.clock import Clock
from erab.security._common import (
    MAX_JSON_DEPTH,
    atomic_write,
    b64url,
    b64url_decode,
    canonical_json,
    json_too_deep,
    parse_utc_iso,
    utc_iso,
)
from erab.security.audit import AuditKind, AuditLog
from erab.security.identity import check_id
from erab.security.keys import key_id_of, public_key_from_text, public_key_text

ENVELOPE_VERSION = 1
# Domain separation: these signatures can never be mistaken for another erab signature.
_SIGNING_CONTEXT = b"erab-command-envelope-v1\n"
KEY_ANNOUNCEMENT_TYPE = "erab.key_announcement"
DEFAULT_MAX_SKEW = timedelta(seconds=30)
# What the audit log keeps of a command (the body too: commands are small and it is the point).
_AUDITED_FIELDS = ("sequence", "issued_at", "expires_at", "key_id", "body")


class RejectReason(StrEnum):
    """Why a verifier refused an envelope (one code per check)."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    WRONG_GATEWAY = "wrong_gateway"
    REPLAYED = "replayed"  # same sequence number as the last accepted command
    OLD_SEQUENCE = "old_sequence"  # lower than the last accepted sequence number
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"


class EnvelopeRejected(Exception):
    """An envelope failed verification; ``reason`` says which check."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class CommandEnvelope:
    """A verified (or to-be-signed) command with its routing and validity fields."""

    gateway_id: str
    sequence: int
    issued_at: datetime
    expires_at: datetime
    key_id: str
    body: dict[str, Any] = field(hash=False)

    def signed_fields(self) -> dict[str, Any]:
        return {
            "v": ENVELOPE_VERSION,
            "gateway_id": self.gateway_id,
            "sequence": self.sequence,
            "issued_at": utc_iso(self.issued_at),
            "expires_at": utc_iso(self.expires_at),
            "key_id": self.key_id,
            "body": self.body,
        }

    def signing_bytes(self) -> bytes:
        return _SIGNING_CONTEXT + canonical_json(self.signed_fields())

    @property
    def is_key_announcement(self) -> bool:
        return self.body.get("type") == KEY_ANNOUNCEMENT_TYPE


# --- sequence numbers on the signing side ---------------------------------------------------


class SequenceCounter(Protocol):
    """Hands out the next sequence number per gateway (strictly increasing, never reused)."""

    def next(self, gateway_id: str) -> int: ...


class MemorySequenceCounter:
    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def next(self, gateway_id: str) -> int:
        with self._lock:
            value = self._last.get(gateway_id, 0) + 1
            self._last[gateway_id] = value
            return value


class FileSequenceCounter:
    """Sequence numbers kept in a JSON file, written before the number is handed out."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._last: dict[str, int] = {}
        if self.path.exists():
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict) or not all(isinstance(v, int) for v in raw.values()):
                raise ValueError(f"{self.path}: expected a JSON object of gateway id -> int")
            self._last = dict(raw)

    def next(self, gateway_id: str) -> int:
        with self._lock:
            value = self._last.get(gateway_id, 0) + 1
            self._last[gateway_id] = value
            atomic_write(self.path, canonical_json(self._last))
            return value


class EnvelopeSigner:
    """The RA side: signs commands for gateways with its Ed25519 command key.

    With ``audit``, every signed command is recorded (kind ``command``, actor ``actor``).
    """

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        clock: Clock,
        sequences: SequenceCounter | None = None,
        *,
        audit: AuditLog | None = None,
        actor: str = "ra",
    ) -> None:
        self._key = private_key
        self.clock = clock
        self.sequences: SequenceCounter = sequences or MemorySequenceCounter()
        self.key_id = key_id_of(private_key.public_key())
        self.audit = audit
        self.actor = actor

    def sign(
        self,
        gateway_id: str,
        body: dict[str, Any],
        *,
        valid_for: timedelta = timedelta(minutes=5),
        issued_at: datetime | None = None,
    ) -> bytes:
        """Wire bytes of a signed envelope carrying ``body`` to ``gateway_id``."""
        check_id(gateway_id, "gateway id")
        if valid_for <= timedelta(0):
            raise ValueError(f"a command must be valid for a positive time, got {valid_for}")
        issued = issued_at or self.clock.now()
        envelope = CommandEnvelope(
            gateway_id=gateway_id,
            sequence=self.sequences.next(gateway_id),
            issued_at=issued,
            expires_at=issued + valid_for,
            key_id=self.key_id,
            body=body,
        )
        signature = self._key.sign(envelope.signing_bytes())  # Ed25519, RFC 8032 §5.1.6
        fields = envelope.signed_fields()
        wire = canonical_json({"envelope": fields, "signature": b64url(signature)})
        if self.audit is not None:
            self.audit.append(
                AuditKind.COMMAND,
                self.actor,
                gateway_id,
                {"action": "signed", **{k: fields[k] for k in _AUDITED_FIELDS}},
            )
        return wire

    def announce_next_key(
        self,
        gateway_id: str,
        next_key: Ed25519PublicKey,
        *,
        valid_for: timedelta = timedelta(hours=1),
    ) -> bytes:
        """An announcement, signed by the current key, that ``next_key`` follows it."""
        return self.sign(
            gateway_id,
            {
                "type": KEY_ANNOUNCEMENT_TYPE,
                "next_key": public_key_text(next_key),
                "next_key_id": key_id_of(next_key),
            },
            valid_for=valid_for,
        )

    def switch_to(self, next_key: Ed25519PrivateKey) -> None:
        """Sign with ``next_key`` from now on (after announcing it to every gateway)."""
        self._key = next_key
        self.key_id = key_id_of(next_key.public_key())


# --- verifier state -------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifierState:
    """What a gateway's verifier must remember across restarts."""

    last_sequence: int
    current_key: str  # base64url raw public key
    next_key: str | None = None

    def to_json(self) -> bytes:
        return canonical_json(
            {
                "last_sequence": self.last_sequence,
                "current_key": self.current_key,
                "next_key": self.next_key,
            }
        )

    @classmethod
    def from_json(cls, data: bytes, source: str) -> VerifierState:
        try:
            raw = json.loads(data)
            state = cls(
                last_sequence=int(raw["last_sequence"]),
                current_key=str(raw["current_key"]),
                next_key=None if raw.get("next_key") is None else str(raw["next_key"]),
            )
            public_key_from_text(state.current_key)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{source}: not a valid verifier state ({exc})") from exc
        return state


class VerifierStateStore(Protocol):
    def load(self) -> VerifierState | None: ...

    def save(self, state: VerifierState) -> None: ...


class MemoryVerifierStateStore:
    def __init__(self) -> None:
        self.state: VerifierState | None = None

    def load(self) -> VerifierState | None:
        return self.state

    def save(self, state: VerifierState) -> None:
        self.state = state


class FileVerifierStateStore:
    """Verifier state in a JSON file, replaced atomically on every accepted command.

    ``durable`` (the default) syncs each new state to the disk before the command is
    acted on, so not even a power cut can roll the replay protection back; without it the
    replacement is still atomic (a crash of the process loses nothing) but costs no fsync,
    for many emulated gateways sharing one process (``erab gateway fleet``)."""

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = Path(path)
        self.durable = durable

    def load(self) -> VerifierState | None:
        if not self.path.exists():
            return None
        return VerifierState.from_json(self.path.read_bytes(), str(self.path))

    def save(self, state: VerifierState) -> None:
        atomic_write(self.path, state.to_json(), sync=self.durable)


class EnvelopeVerifier:
    """The gateway side: accepts only good, fresh, in-order commands addressed to it.

    With ``audit``, each accepted command is recorded (kind ``command``) and each rejection
    is recorded as a security event with its reason.
    """

    def __init__(
        self,
        gateway_id: str,
        clock: Clock,
        store: VerifierStateStore,
        *,
        trusted_key: Ed25519PublicKey | None = None,
        max_skew: timedelta = DEFAULT_MAX_SKEW,
        audit: AuditLog | None = None,
    ) -> None:
        self.gateway_id = check_id(gateway_id, "gateway id")
        self.clock = clock
        self.store = store
        self.max_skew = max_skew
        self.audit = audit
        self._lock = threading.Lock()
        state = store.load()
        if state is None:
            if trusted_key is None:
                raise ValueError(
                    "the verifier has no saved state: give the RA's command public key"
                )
            state = VerifierState(last_sequence=0, current_key=public_key_text(trusted_key))
            store.save(state)
        self._state = state
        self._trusted_cache: tuple[VerifierState, dict[str, Ed25519PublicKey]] | None = None

    @property
    def state(self) -> VerifierState:
        return self._state

    def _trusted(self) -> dict[str, Ed25519PublicKey]:
        cached = self._trusted_cache
        if cached is not None and cached[0] is self._state:
            return cached[1]
        keys = {self._state.current_key}
        if self._state.next_key is not None:
            keys.add(self._state.next_key)
        result = {}
        for text in keys:
            key = public_key_from_text(text)
            result[key_id_of(key)] = key
        self._trusted_cache = (self._state, result)
        return result

    def verify(self, wire: bytes) -> CommandEnvelope:
        """The envelope in ``wire`` if every check passes; else :class:`EnvelopeRejected`."""
        if self.audit is None:
            return self._verify(wire)
        try:
            envelope = self._verify(wire)
        except EnvelopeRejected as exc:
            self.audit.append(
                AuditKind.SECURITY_EVENT,
                self.gateway_id,
                "command",
                {"action": "command_rejected", "reason": exc.reason.value, "message": str(exc)},
            )
            raise
        fields = envelope.signed_fields()
        self.audit.append(
            AuditKind.COMMAND,
            self.gateway_id,
            self.gateway_id,
            {"action": "accepted", **{k: fields[k] for k in _AUDITED_FIELDS}},
        )
        return envelope

    def _verify(self, wire: bytes) -> CommandEnvelope:
        envelope, signature, signed = _parse(wire)
        with self._lock:
            trusted = self._trusted()
            key = trusted.get(envelope.key_id)
            if key is None:
                raise EnvelopeRejected(
                    RejectReason.UNKNOWN_KEY,
                    f"signed with key {envelope.key_id}, which this gateway does not trust",
                )
            try:
                key.verify(signature, signed)
            except InvalidSignature:
                raise EnvelopeRejected(
                    RejectReason.BAD_SIGNATURE,
                    f"signature of command {envelope.sequence} does not verify "
                    f"with key {envelope.key_id}",
                ) from None
            if envelope.gateway_id != self.gateway_id:
                raise EnvelopeRejected(
                    RejectReason.WRONG_GATEWAY,
                    f"command is for gateway {envelope.gateway_id!r}, this is {self.gateway_id!r}",
                )
            now = self.clock.now()
            if envelope.issued_at - self.max_skew > now:
                raise EnvelopeRejected(
                    RejectReason.NOT_YET_VALID,
                    f"issued at {utc_iso(envelope.issued_at)}, later than now "
                    f"({utc_iso(now)}) plus the {self.max_skew.total_seconds():g} s skew allowance",
                )
            if envelope.expires_at + self.max_skew <= now:
                raise EnvelopeRejected(
                    RejectReason.EXPIRED,
                    f"expired at {utc_iso(envelope.expires_at)}, now is {utc_iso(now)} "
                    f"(skew allowance {self.max_skew.total_seconds():g} s)",
                )
            last = self._state.last_sequence
            if envelope.sequence == last:
                raise EnvelopeRejected(
                    RejectReason.REPLAYED, f"sequence {envelope.sequence} was already accepted"
                )
            if envelope.sequence < last:
                raise EnvelopeRejected(
                    RejectReason.OLD_SEQUENCE,
                    f"sequence {envelope.sequence} is older than the last accepted ({last})",
                )
            self._state = self._advance(envelope, key)
            self.store.save(self._state)
            return envelope

    def _advance(self, envelope: CommandEnvelope, key: Ed25519PublicKey) -> VerifierState:
        current, next_key = self._state.current_key, self._state.next_key
        used = public_key_text(key)
        if used != current:
            # First command under the announced key: it becomes current, the old one retires.
            current, next_key = used, None
        if envelope.is_key_announcement:
            announced = envelope.body.get("next_key")
            try:
                announced_key = public_key_from_text(str(announced))
            except ValueError as exc:
                raise EnvelopeRejected(
                    RejectReason.MALFORMED, f"key announcement carries no valid key ({exc})"
                ) from exc
            if envelope.body.get("next_key_id") != key_id_of(announced_key):
                raise EnvelopeRejected(
                    RejectReason.MALFORMED, "key announcement's next_key_id does not match its key"
                )
            next_key = public_key_text(announced_key)
        return VerifierState(envelope.sequence, current, next_key)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers could disagree on which duplicate wins; refuse the ambiguity outright.
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse(wire: bytes) -> tuple[CommandEnvelope, bytes, bytes]:
    """The envelope, its signature, and the exact bytes the signature covers."""

    def bad(why: str) -> EnvelopeRejected:
        return EnvelopeRejected(RejectReason.MALFORMED, why)

    if json_too_deep(wire):
        raise bad(f"nested too deep (over {MAX_JSON_DEPTH} levels of arrays/objects)")
    try:
        raw = json.loads(wire, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"not JSON ({exc})") from None
    if not isinstance(raw, dict) or set(raw) != {"envelope", "signature"}:
        raise bad("expected an object with exactly 'envelope' and 'signature'")
    env = raw["envelope"]
    expected = {"v", "gateway_id", "sequence", "issued_at", "expires_at", "key_id", "body"}
    if not isinstance(env, dict) or set(env) != expected:
        raise bad(f"envelope must have exactly the fields {sorted(expected)}")
    if env["v"] != ENVELOPE_VERSION:
        raise bad(f"envelope version {env['v']!r} is not supported (expected {ENVELOPE_VERSION})")
    if not isinstance(env["gateway_id"], str) or not isinstance(env["key_id"], str):
        raise bad("gateway_id and key_id must be strings")
    seq = env["sequence"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise bad(f"sequence must be a positive integer, got {seq!r}")
    if not isinstance(env["body"], dict):
        raise bad("body must be a JSON object")
    try:
        issued = parse_utc_iso(env["issued_at"])
        expires = parse_utc_iso(env["expires_at"])
    except (ValueError, TypeError) as exc:
        raise bad(f"bad time: {exc}") from None
    if expires <= issued:
        raise bad("expires_at must be after issued_at")
    try:
        signature = b64url_decode(raw["signature"])
    except (ValueError, TypeError) as exc:
        raise bad(f"signature is not base64url ({exc})") from None
    if len(signature) != 64:
        raise bad(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    envelope = CommandEnvelope(
        gateway_id=env["gateway_id"],
        sequence=seq,
        issued_at=issued,
        expires_at=expires,
        key_id=env["key_id"],
        body=env["body"],
    )
    try:
        signed = _SIGNING_CONTEXT + canonical_json(env)
    except ValueError as exc:  # NaN/Infinity in the body
        raise bad(f"body is not canonical JSON ({exc})") from None
    return envelope, signature, signed
