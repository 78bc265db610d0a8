"""Small helpers shared by the security modules (not public)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import accumulate
from pathlib import Path
from typing import Any


def canonical_json(value: Any) -> bytes:
    """The one byte form of a JSON value that gets signed or hashed.

    Keys sorted, no insignificant whitespace, UTF-8, NaN/Infinity refused: the same value
    always gives the same bytes, so a signature or hash over them is reproducible.
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


# Deeper JSON is refused before parsing: erab's messages nest a few levels, and the stdlib
# parser recurses per level (thousands of '[' end in RecursionError, not a clean refusal).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_too_deep(data: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests arrays/objects deeper than ``limit`` (a scan, no parsing).

    Cheap enough to run before every parse: brackets are counted in C first, and only text
    with more than ``limit`` opening brackets has its strings removed and depth traced.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(_STEP[b] for b in brackets), default=0) > limit


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected a base64url string")
    padded = text + "=" * (-len(text) % 4)
    return base64.urlsafe_b64decode(padded.encode("ascii"))


def utc_iso(when: datetime) -> str:
    """RFC 3339 UTC text with microseconds (e.g. ``2026-08-01T00:00:00.000000Z``)."""
    if when.tzinfo is None:
        raise ValueError(f"need an aware datetime, got naive {when!r}")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_utc_iso(text: str) -> datetime:
    if not isinstance(text, str) or not text.endswith("Z"):
        raise ValueError(f"expected RFC 3339 UTC time ending in Z, got {text!r}")
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


PRIVATE_DIR_MODE = 0o700


def private_dir(path: Path, mode: int = PRIVATE_DIR_MODE, *, tighten: bool = False) -> Path:
    """Create ``path`` (and any missing parents) with ``mode``, whatever the umask.

    ERAB Cyber Security Guideline, device authorization: whoever can write a folder that
    holds keys, the trust anchors or ``config.json`` can replace them, so folders erab creates
    are 0700 (``mode`` 0o750 where a service group must read them).  mkdir's mode is masked
    by the umask, so it is set with chmod after mkdir.  An existing folder is left as it is,
    unless ``tighten`` (for folders erab owns): then group/other write, and any bit not in
    ``mode``, is removed.
    """
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            continue  # created by someone else in between; judged below like any other
        os.chmod(directory, mode)
    if not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a directory")
    if tighten:
        info = path.stat()
        current = stat.S_IMODE(info.st_mode)
        # Only the owner may chmod; a folder of another user is that user's to fix.
        if current & ~mode and info.st_uid == os.geteuid():
            os.chmod(path, current & mode)
    return path


def atomic_write(path: Path, data: bytes, *, private: bool = False, sync: bool = True) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, never half.

    ``private`` files (keys, secrets) are created with mode 0600.  Missing folders are
    created 0700 (:func:`private_dir`).  ``sync=False`` skips the fsync: still atomic for a
    crash of the process, not for a power cut.
    """
    private_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        if private:
            os.fchmod(fd, 0o600)
        else:
            os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


@contextmanager
def sqlite_connection(path: Path, *, wal: bool = False) -> Iterator[sqlite3.Connection]:
    """A short-lived autocommit connection that waits up to 10 s for another writer's lock."""
    db = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    try:
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        yield db
    finally:
        db.close()
