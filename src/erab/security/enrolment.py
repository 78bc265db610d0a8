"""Enrolment over the network: a gateway sends its CSR and one-time code to the RA over HTTPS.

The gateway has no certificate yet, so this is the one link where only the server
authenticates in TLS; the enrolment code authenticates the gateway.  The exchange is one
JSON request and one JSON response:

``POST /enrol`` with ``{"gateway_id": ..., "code": ..., "csr_pem": ...}`` returns 200
``{"certificate_pem", "ca_bundle_pem", "command_public_key"}`` or an error
``{"error": <reason>, "message": <text>}`` (400 bad request, 403 refused code, 404 other path,
405 other method, 411 no length, 413 too large).  Every outcome, refusals included, is
audited with the client's address (ERAB Cyber Security Guideline, logging).

:class:`EnrolmentService` is the protocol without I/O (bytes in, status and bytes out);
:class:`EnrolmentServer` serves it over HTTPS with the stdlib; :func:`request_enrolment` is the
gateway's client.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from erab.security._common import MAX_JSON_DEPTH, json_too_deep
from erab.security.audit import AuditKind, AuditLog
from erab.security.identity import PeerIdentity, check_id
from erab.security.pki import (
    CertificateAuthority,
    EnrolmentRefusal,
    EnrolmentRefused,
    PkiError,
    certificate_pem,
    make_csr,
)
from erab.security.tls import client_context

ENROL_PATH = "/enrol"
MAX_REQUEST_BYTES = 16 * 1024  # a P-256 CSR is under 1 KiB


@dataclass(frozen=True)
class EnrolmentResult:
    """What a gateway receives when its code is accepted."""

    certificate_pem: bytes
    ca_bundle_pem: bytes
    command_public_key: str | None


class EnrolmentFailed(ValueError):
    """The RA refused or could not process an enrolment; ``reason`` is its code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"enrolment refused ({reason}): {message}")
        self.reason = reason


class EnrolmentService:
    """The RA side of enrolment, without I/O: request bytes in, (status, response bytes) out."""

    def __init__(
        self,
        ca: CertificateAuthority,
        audit: AuditLog | None = None,
        *,
        days: int = 365,
    ) -> None:
        self.ca = ca
        self.audit = audit
        self.days = days

    def handle(self, body: bytes, *, source: str = "unknown") -> tuple[int, bytes]:
        claimed: str | None = None
        try:
            if json_too_deep(body):
                raise ValueError(f"JSON nested too deep (over {MAX_JSON_DEPTH} levels)")
            request = json.loads(body)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            claimed = _well_formed_id(request.get("gateway_id"))
            fields = {k: request.get(k) for k in ("gateway_id", "code", "csr_pem")}
            missing = [k for k, v in fields.items() if not isinstance(v, str)]
            if missing:
                raise ValueError(f"{', '.join(missing)} must be given as strings")
            gateway_id, code, csr_pem = (str(v) for v in fields.values())
            check_id(gateway_id, "gateway id")
        except (ValueError, UnicodeDecodeError) as exc:
            return self.refuse(400, "bad_request", str(exc), source=source, gateway_id=claimed)
        try:
            cert = self.enrol(gateway_id, code, csr_pem.encode("utf-8"), source=source)
        except EnrolmentRefused as exc:
            # enrol() has audited the refusal with its reason already.
            status = 400 if exc.reason is EnrolmentRefusal.BAD_CSR else 403
            return _error(status, exc.reason.value, str(exc))
        except PkiError as exc:
            return self.refuse(500, "ca_error", str(exc), source=source, gateway_id=gateway_id)
        home = self.ca.home
        command_key = (
            home.command_public_key.read_text(encoding="utf-8").strip()
            if home.command_public_key.exists()
            else None
        )
        response = {
            "certificate_pem": certificate_pem(cert).decode("ascii"),
            "ca_bundle_pem": home.ca_bundle.read_text(encoding="ascii"),
            "command_public_key": command_key,
        }
        return 200, json.dumps(response).encode("utf-8")

    def enrol(
        self, gateway_id: str, code: str, csr_pem: bytes, *, source: str = "unknown"
    ) -> x509.Certificate:
        """Redeem ``code`` for ``gateway_id``'s CSR and audit the outcome either way.

        Raises :class:`EnrolmentRefused` (after auditing it) when the CA refuses.
        """
        try:
            cert = self.ca.enrol(code, csr_pem, days=self.days)
        except EnrolmentRefused as exc:
            self._audit(gateway_id, source, outcome="refused", reason=exc.reason.value)
            raise
        identity = PeerIdentity.from_certificate(cert)
        self._audit(
            gateway_id,
            source,
            outcome="enrolled",
            serial=identity.serial,
            site_id=identity.site_id,
            fingerprint_sha256=identity.fingerprint_sha256,
            not_after=identity.not_after.isoformat(),
        )
        return cert

    def refuse(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        source: str = "unknown",
        gateway_id: str | None = None,
    ) -> tuple[int, bytes]:
        """Audit a request refused before it reached the CA, and the answer to send."""
        self._audit(
            gateway_id, source, outcome="refused", reason=reason, status=status, message=message
        )
        return _error(status, reason, message)

    def _audit(self, gateway_id: str | None, source: str, **details: Any) -> None:
        if self.audit is not None:
            # A request without a well-formed gateway id is recorded under "unidentified".
            actor = gateway_id or "unidentified"
            self.audit.append(AuditKind.ENROLMENT, actor, actor, {"source": source, **details})


def _well_formed_id(value: object) -> str | None:
    try:
        return check_id(value, "gateway id") if isinstance(value, str) else None
    except ValueError:
        return None


def _error(status: int, reason: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": reason, "message": message}).encode("utf-8")


class EnrolmentServer:
    """Serves an :class:`EnrolmentService` over HTTPS (server-authenticated TLS)."""

    def __init__(
        self,
        service: EnrolmentService,
        context: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.service = service
        handler = _make_handler(service)
        self._httpd = _QuietServer((host, port), handler)
        # Handshakes happen in each request's thread, so a slow client cannot stall accept().
        self._httpd.socket = context.wrap_socket(
            self._httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def start(self) -> None:
        """Serve from a background thread (for embedding and tests)."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that fails the TLS handshake or hangs up is routine, not a crash.
        pass


def _make_handler(service: EnrolmentService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "erab-enrolment/1"
        timeout = 10

        def do_POST(self) -> None:
            try:
                self._post()
            except Exception as exc:  # every outcome gets an answer and an audit record
                self.close_connection = True
                self._refuse(500, "internal_error", f"the RA could not process it ({exc})")

        def _post(self) -> None:
            if self.path != ENROL_PATH:
                self._refuse(404, "not_found", f"POST {ENROL_PATH} is the only endpoint")
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self._refuse(411, "length_required", "send a Content-Length header")
                return
            if length < 0 or length > MAX_REQUEST_BYTES:
                # Read (and drop) a moderately oversized body first, so the client is not
                # reset mid-send and gets to read the answer.
                remaining = min(max(length, 0), 64 * MAX_REQUEST_BYTES)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self.close_connection = True
                self._refuse(413, "too_large", f"request body over {MAX_REQUEST_BYTES} bytes")
                return
            body = self.rfile.read(length)
            self._send(*service.handle(body, source=self.client_address[0]))

        def _not_allowed(self) -> None:
            self.close_connection = True
            self._refuse(405, "method_not_allowed", f"only POST {ENROL_PATH} is served")

        do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed

        def _refuse(self, status: int, reason: str, message: str) -> None:
            self._send(*service.refuse(status, reason, message, source=self.client_address[0]))

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # outcomes go to the audit log, not stderr

    return Handler


def request_enrolment(
    host: str,
    port: int,
    ca_bundle: Path,
    gateway_id: str,
    code: str,
    key: ec.EllipticCurvePrivateKey,
    *,
    timeout_s: float = 30.0,
) -> EnrolmentResult:
    """The gateway side: send a CSR for ``key`` with ``code``; the RA's certificate is checked
    against ``ca_bundle`` and ``host``."""
    csr = make_csr(key, gateway_id).public_bytes(serialization.Encoding.PEM).decode("ascii")
    body = json.dumps({"gateway_id": gateway_id, "code": code.strip(), "csr_pem": csr})
    connection = http.client.HTTPSConnection(
        host, port, timeout=timeout_s, context=client_context(ca_bundle)
    )
    try:
        connection.request(
            "POST", ENROL_PATH, body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        payload = response.read(1024 * 1024)
    finally:
        connection.close()
    try:
        data = json.loads(payload)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise EnrolmentFailed(
            "bad_response", f"RA answered HTTP {response.status} without a JSON object"
        )
    if response.status != 200:
        raise EnrolmentFailed(
            str(data.get("error", "unknown")), str(data.get("message", response.reason))
        )
    try:
        result = EnrolmentResult(
            certificate_pem=str(data["certificate_pem"]).encode("ascii"),
            ca_bundle_pem=str(data["ca_bundle_pem"]).encode("ascii"),
            command_public_key=data.get("command_public_key"),
        )
        cert = x509.load_pem_x509_certificate(result.certificate_pem)
        issued_to = PeerIdentity.from_certificate(cert).gateway_id
    except (KeyError, ValueError) as exc:
        raise EnrolmentFailed(
            "bad_response", f"RA's answer has no usable certificate ({exc})"
        ) from None
    # The gateway keeps a certificate only if it is for its own key and its own id.
    if cert.public_key() != key.public_key():
        raise EnrolmentFailed("bad_response", "the RA's certificate is not for this gateway's key")
    if issued_to != gateway_id:
        raise EnrolmentFailed(
            "bad_response", f"the RA's certificate names gateway {issued_to!r}, not {gateway_id!r}"
        )
    return result
