"""Ed25519 keys: files (the RA's command key, the audit checkpoint key), ids and text form."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from erab.security._common import (
    atomic_write,
    b64url,
    b64url_decode,
    parse_utc_iso,
    sha256_hex,
    utc_iso,
)


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """Short id of an Ed25519 public key: first 16 hex digits of SHA-256 of its raw bytes."""
    return sha256_hex(_raw_public(public_key))[:16]


def public_key_text(public_key: Ed25519PublicKey) -> str:
    """base64url of the raw 32-byte public key (how keys appear in announcements and files)."""
    return b64url(_raw_public(public_key))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    raw = b64url_decode(text)
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def write_ed25519_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` as PKCS#8 PEM, mode 0600; refuses to replace an existing key file."""
    if path.exists():
        raise ValueError(f"{path} already exists; refusing to overwrite a key")
    atomic_write(path, _private_pem(key), private=True)


def _private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_ed25519_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ValueError(f"key file {path} not found") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, expected an Ed25519 key")
    return key


def load_or_create_ed25519_key(path: Path) -> Ed25519PrivateKey:
    if path.exists():
        return load_ed25519_key(path)
    key = Ed25519PrivateKey.generate()
    write_ed25519_key(path, key)
    return key


@dataclass(frozen=True)
class RetiredKey:
    """A command key taken out of service: kept (public part) to verify what it signed."""

    key_id: str
    public_key: str  # base64url raw public key
    retired_at: datetime
    verify_until: datetime

    def to_dict(self) -> dict[str, str]:
        return {
            "key_id": self.key_id,
            "public_key": self.public_key,
            "retired_at": utc_iso(self.retired_at),
            "verify_until": utc_iso(self.verify_until),
        }


def retired_keys(path: Path) -> list[RetiredKey]:
    """The retired keys listed in ``path`` (none if the file does not exist)."""
    if not path.exists():
        return []
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        keys = [
            RetiredKey(
                str(k["key_id"]),
                str(k["public_key"]),
                parse_utc_iso(k["retired_at"]),
                parse_utc_iso(k["verify_until"]),
            )
            for k in raw
        ]
        for key in keys:
            public_key_from_text(key.public_key)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a valid list of retired keys ({exc})") from None
    return keys


def rotate_ed25519_key(
    key_path: Path,
    public_path: Path,
    retired_path: Path,
    now: datetime,
    *,
    keep_for: timedelta,
    previous_key_path: Path | None = None,
) -> tuple[RetiredKey, Ed25519PrivateKey]:
    """Replace the key in ``key_path`` with a new one; the old one's public key is listed in
    ``retired_path`` until ``now + keep_for`` so commands it signed still verify until they
    expire.  With ``previous_key_path`` the old private key is also kept there (0600), for
    signing the announcement of the new key (``EnvelopeSigner.announce_next_key``) to gateways
    that trust only the old one; without it the old private key is gone.

    Each file is replaced atomically and the retired list is written first, so a crash part
    way leaves the old key usable or the new key in place, never neither.
    """
    if keep_for < timedelta(0):
        raise ValueError(f"keep_for must not be negative, got {keep_for}")
    old = load_ed25519_key(key_path)
    new = Ed25519PrivateKey.generate()
    retired = RetiredKey(
        key_id_of(old.public_key()), public_key_text(old.public_key()), now, now + keep_for
    )
    still_valid = [k for k in retired_keys(retired_path) if k.verify_until > now]
    listed = [k.to_dict() for k in [*still_valid, retired]]
    atomic_write(retired_path, (json.dumps(listed, indent=2) + "\n").encode("utf-8"))
    if previous_key_path is not None:
        atomic_write(previous_key_path, key_path.read_bytes(), private=True)
    atomic_write(key_path, _private_pem(new), private=True)
    atomic_write(public_path, (public_key_text(new.public_key()) + "\n").encode("ascii"))
    return retired, new


def verification_keys(
    key_path: Path, retired_path: Path, now: datetime
) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key of every command key whose signatures are still to be trusted:
    the current key and retired keys before their ``verify_until``."""
    keys = {k.key_id: public_key_from_text(k.public_key) for k in retired_keys(retired_path)
            if k.verify_until > now}  # fmt: skip
    current = load_ed25519_key(key_path).public_key()
    keys[key_id_of(current)] = current
    return keys
