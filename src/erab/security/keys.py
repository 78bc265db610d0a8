"""Ed25519 key files (the RA's command key, the audit checkpoint key)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.security._common import atomic_write


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
