"""Ed25519 keys: files (the RA's command key, the audit checkpoint key), ids and text form."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from erab.security._common import atomic_write, b64url, b64url_decode, sha256_hex


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
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    atomic_write(path, pem, private=True)


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
