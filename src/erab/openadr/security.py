"""The OpenADR 2.0b security profile's checks, as erab applies them at both ends.

OpenADR 2.0b profile specification, §10 "Security": TLS 1.2 with client and server
certificates; a VEN is known by its certificate's fingerprint, given to the VTN out of band;
XML signatures (XMLDSig, detached, with a ReplayProtect timestamp and nonce) where the
deployment asks for them.  The TLS contexts come from the caller (the CLI builds them from the
deployment's PKI with :mod:`erab.security`); here they are held to TLS 1.2, the version the
profile names.  erab keeps the full SHA-256 fingerprint; openleadr (like the profile) shows
the last ten bytes of it, which :func:`short_fingerprint` derives.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from erab.openadr.xmlguard import DSIG_NS, Refusal, XmlRefused

# (what happened, subject, details): the CLI points this at the deployment's audit log
AuditHook = Callable[[str, str, dict[str, Any]], None]
_HEX = re.compile(r"^[0-9a-f]{64}$")


def hold_to_tls12(context: ssl.SSLContext) -> ssl.SSLContext:
    """The 2.0b profile's TLS version: 1.2 and nothing else (§10.1)."""
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def fingerprint_of_der(der: bytes) -> str:
    """Lower-case hex SHA-256 over a certificate's DER bytes (the VEN registry's key)."""
    return hashlib.sha256(der).hexdigest()


def fingerprint_of_pem(pem: str | bytes) -> str:
    text = pem.decode("ascii", "replace") if isinstance(pem, bytes) else pem
    try:
        return fingerprint_of_der(ssl.PEM_cert_to_DER_cert(text.strip() + "\n"))
    except ValueError as exc:
        raise ValueError(f"not a PEM certificate ({exc})") from None


def fingerprint_of_file(path: Path) -> str:
    try:
        return fingerprint_of_pem(Path(path).read_text(encoding="ascii", errors="replace"))
    except OSError as exc:
        raise ValueError(f"cannot read certificate {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def normalise_fingerprint(text: str) -> str:
    """A full SHA-256 fingerprint as 64 lower-case hex digits (colons and case ignored)."""
    value = text.replace(":", "").strip().lower()
    if not _HEX.match(value):
        raise ValueError(f"fingerprint {text!r} is not a SHA-256 fingerprint (64 hex digits, "
                         "colons allowed); 'erab ac ven add --cert FILE' computes it")  # fmt: skip
    return value


def short_fingerprint(sha256_hex: str) -> str:
    """openleadr's (and the profile's displayed) form: the last 10 bytes, ``AB:CD:...``."""
    tail = sha256_hex[-20:].upper()
    return ":".join(tail[i : i + 2] for i in range(0, 20, 2))


class ReplayGuard:
    """Refuses a signed message whose ReplayProtect is older than ``window`` (or further in
    the future than ``skew``), or whose nonce was seen inside the window (§10.3)."""

    def __init__(self, window: timedelta = timedelta(minutes=5),
                 skew: timedelta = timedelta(seconds=30),
                 now: Callable[[], datetime] | None = None) -> None:  # fmt: skip
        self.window, self.skew = window, skew
        self.now = now or (lambda: datetime.now(UTC))
        self._seen: OrderedDict[str, datetime] = OrderedDict()

    def check(self, nonce: str | None, timestamp: str | None) -> None:
        if not nonce or not timestamp:
            raise XmlRefused(Refusal.UNSIGNED, "signature without a ReplayProtect nonce and "
                                               "timestamp")  # fmt: skip
        try:
            at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            raise XmlRefused(Refusal.MALFORMED,
                             f"ReplayProtect timestamp {timestamp[:40]!r} is not a time") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        now = self.now()
        while self._seen and next(iter(self._seen.values())) < now - self.window:
            self._seen.popitem(last=False)
        if at < now - self.window:
            raise XmlRefused(Refusal.STALE, f"signed at {at.isoformat()}, more than "
                                            f"{self.window} ago")  # fmt: skip
        if at > now + self.skew:
            raise XmlRefused(Refusal.STALE, f"signed at {at.isoformat()}, in the future")
        if nonce in self._seen:
            raise XmlRefused(Refusal.REPLAYED, f"nonce {nonce[:40]} was already used")
        self._seen[nonce] = max(at, now)


def verify_signature(body: bytes, expected_fingerprint: str) -> None:
    """Check a message's XMLDSig signature, and that it was made with the certificate whose
    SHA-256 fingerprint is ``expected_fingerprint`` (the one the TLS peer presented).

    Call only after :func:`~erab.openadr.xmlguard.inspect_xml` accepted ``body``.
    """
    from lxml import etree  # type: ignore[import-untyped]
    from signxml.exceptions import InvalidInput, InvalidSignature
    from signxml.verifier import XMLVerifier

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        tree = etree.fromstring(body, parser)
    except etree.XMLSyntaxError as exc:
        raise XmlRefused(Refusal.MALFORMED, f"not well-formed XML ({exc})") from None
    cert = tree.findtext(f".//{{{DSIG_NS}}}X509Certificate")
    if not cert:
        raise XmlRefused(Refusal.BAD_SIGNATURE, "the signature carries no X509Certificate")
    pem = "-----BEGIN CERTIFICATE-----\n" + cert.strip() + "\n-----END CERTIFICATE-----\n"
    try:
        signer = fingerprint_of_pem(pem)
    except ValueError:
        raise XmlRefused(Refusal.BAD_SIGNATURE,
                         "the signature's certificate is unreadable") from None
    if signer != expected_fingerprint:
        raise XmlRefused(Refusal.BAD_SIGNATURE,
                         f"signed with certificate {short_fingerprint(signer)}, not the "
                         f"connection's {short_fingerprint(expected_fingerprint)}")  # fmt: skip
    try:
        XMLVerifier().verify(tree, x509_cert=pem, expect_references=2)
    except (InvalidSignature, InvalidInput, ValueError) as exc:
        raise XmlRefused(Refusal.BAD_SIGNATURE, f"the signature does not verify ({exc})") from None
