"""Who a peer is, read from its certificate — never from a field it claims in a message.

ERAB Cyber Security Guideline, device authorization and mutual authentication: a system
acts only for the gateway its certificate names.  A gateway certificate names its gateway in
a SAN URI ``urn:erab:gateway:<id>`` (and CN) and its site in ``urn:erab:site:<id>`` (and OU).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

GATEWAY_URI_PREFIX = "urn:erab:gateway:"
SITE_URI_PREFIX = "urn:erab:site:"

_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class IdentityMismatch(ValueError):
    """A message claimed an identity other than the one its connection's certificate proves."""


def check_id(value: str, what: str) -> str:
    """Validate a gateway or site id: 1-64 of letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(value, str) or not _ID_PATTERN.match(value):
        raise ValueError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return value


def fingerprint_sha256(cert: x509.Certificate) -> str:
    """Lower-case hex SHA-256 over the DER certificate."""
    return cert.fingerprint(hashes.SHA256()).hex()


def serial_hex(cert: x509.Certificate) -> str:
    return format(cert.serial_number, "x")


@dataclass(frozen=True)
class PeerIdentity:
    """The identity a certificate proves."""

    fingerprint_sha256: str
    serial: str
    subject: str
    gateway_id: str | None
    site_id: str | None
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PeerIdentity:
        uris: list[str] = []
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
        except x509.ExtensionNotFound:
            pass
        gateway_id = next(
            (u[len(GATEWAY_URI_PREFIX) :] for u in uris if u.startswith(GATEWAY_URI_PREFIX)), None
        )
        site_id = next(
            (u[len(SITE_URI_PREFIX) :] for u in uris if u.startswith(SITE_URI_PREFIX)), None
        )
        if gateway_id is not None:
            # CN and SAN must agree; a certificate where they differ identifies nobody.
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            if cns and cns[0].value != gateway_id:
                raise ValueError(
                    f"certificate {serial_hex(cert)} names gateway {gateway_id!r} in its SAN "
                    f"but {cns[0].value!r} in its CN"
                )
        return cls(
            fingerprint_sha256=fingerprint_sha256(cert),
            serial=serial_hex(cert),
            subject=cert.subject.rfc4514_string(),
            gateway_id=gateway_id,
            site_id=site_id,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def require_gateway(self, claimed_gateway_id: str) -> str:
        """The certificate's gateway id, if a message's claimed id matches it.

        Use this wherever a message names its sender (a topic, a payload field): the claim
        is only accepted when the certificate on the connection says the same.
        """
        if self.gateway_id is None:
            raise IdentityMismatch(f"certificate {self.serial} identifies no gateway")
        if claimed_gateway_id != self.gateway_id:
            raise IdentityMismatch(
                f"message claims gateway {claimed_gateway_id!r} but the connection's "
                f"certificate {self.serial} is gateway {self.gateway_id!r}"
            )
        return self.gateway_id

    @classmethod
    def from_der(cls, der: bytes) -> PeerIdentity:
        return cls.from_certificate(x509.load_der_x509_certificate(der))
