"""erab.security: the controls the ERAB Cyber Security Guideline asks for.

- PKI and device authorization: :class:`CertificateAuthority` (offline root, issuing CA,
  one-time enrolment codes, renewal, revocation, CRL) and :class:`CertificateRegistry`.
- Encrypted, mutually authenticated links: :func:`server_context`, :func:`client_context`,
  :func:`admit_gateway` (identity from the peer certificate, checked against the registry).
- Command integrity: :class:`EnvelopeSigner`, :class:`EnvelopeVerifier` (Ed25519, replay
  protection, key rotation).
- Accountability: :class:`AuditLog` over :class:`SqliteAuditStore` (hash chain, checkpoints).
- Operators: :class:`OperatorDirectory` (roles, Argon2id, API tokens, login backoff).
- PDCA: :func:`assess`.
"""

from erab.security.assess import Assessment, Check, Requirement, Status, assess, save_assessment
from erab.security.audit import (
    AuditFinding,
    AuditKind,
    AuditLog,
    AuditProblem,
    AuditRecord,
    AuditStore,
    AuditVerification,
    Checkpoint,
    SqliteAuditStore,
)
from erab.security.enrolment import (
    EnrolmentFailed,
    EnrolmentResult,
    EnrolmentServer,
    EnrolmentService,
    request_enrolment,
)
from erab.security.envelope import (
    CommandEnvelope,
    EnvelopeRejected,
    EnvelopeSigner,
    EnvelopeVerifier,
    FileSequenceCounter,
    FileVerifierStateStore,
    MemorySequenceCounter,
    MemoryVerifierStateStore,
    RejectReason,
    VerifierState,
)
from erab.security.home import SecurityConfig, SecurityHome
from erab.security.identity import IdentityMismatch, PeerIdentity
from erab.security.keys import (
    key_id_of,
    load_ed25519_key,
    load_or_create_ed25519_key,
    public_key_from_text,
    public_key_text,
)
from erab.security.operators import (
    ROLE_PERMISSIONS,
    ApiToken,
    Argon2Parameters,
    LoginPolicy,
    LoginRefusal,
    LoginRefused,
    Operator,
    OperatorDirectory,
    Permission,
    PermissionDenied,
    Role,
)
from erab.security.pki import (
    CertificateAuthority,
    EnrolmentRefusal,
    EnrolmentRefused,
    PkiError,
    make_csr,
    new_private_key,
)
from erab.security.registry import (
    CertificateKind,
    CertificateRecord,
    CertificateRegistry,
    CertificateStatus,
)
from erab.security.tls import (
    PeerRejected,
    TlsProfile,
    admit_gateway,
    client_context,
    peer_identity,
    profile_for,
    server_context,
)

__all__ = [
    "ROLE_PERMISSIONS",
    "ApiToken",
    "Argon2Parameters",
    "Assessment",
    "AuditFinding",
    "AuditKind",
    "AuditLog",
    "AuditProblem",
    "AuditRecord",
    "AuditStore",
    "AuditVerification",
    "CertificateAuthority",
    "CertificateKind",
    "CertificateRecord",
    "CertificateRegistry",
    "CertificateStatus",
    "Check",
    "Checkpoint",
    "CommandEnvelope",
    "EnrolmentFailed",
    "EnrolmentRefusal",
    "EnrolmentRefused",
    "EnrolmentResult",
    "EnrolmentServer",
    "EnrolmentService",
    "EnvelopeRejected",
    "EnvelopeSigner",
    "EnvelopeVerifier",
    "FileSequenceCounter",
    "FileVerifierStateStore",
    "IdentityMismatch",
    "LoginPolicy",
    "LoginRefusal",
    "LoginRefused",
    "MemorySequenceCounter",
    "MemoryVerifierStateStore",
    "Operator",
    "OperatorDirectory",
    "PeerIdentity",
    "PeerRejected",
    "Permission",
    "PermissionDenied",
    "PkiError",
    "RejectReason",
    "Requirement",
    "Role",
    "SecurityConfig",
    "SecurityHome",
    "SqliteAuditStore",
    "Status",
    "TlsProfile",
    "VerifierState",
    "admit_gateway",
    "assess",
    "client_context",
    "key_id_of",
    "load_ed25519_key",
    "load_or_create_ed25519_key",
    "make_csr",
    "new_private_key",
    "peer_identity",
    "profile_for",
    "public_key_from_text",
    "public_key_text",
    "request_enrolment",
    "save_assessment",
    "server_context",
]
