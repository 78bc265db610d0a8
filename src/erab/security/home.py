"""Where the security state of one deployment lives on disk (under ``<ERAB_HOME>/security``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from erab.security._common import atomic_write, private_dir

TLS_VERSIONS = ("1.0", "1.1", "1.2", "1.3")


@dataclass(frozen=True)
class SecurityConfig:
    """Deployment security settings (``security/config.json``) that ``assess`` checks."""

    tls_min_version: str = "1.3"
    tls12_profile_enabled: bool = False  # allow TLS 1.2 (ECDHE + AES-GCM) for OpenADR 2.0b
    tls12_allow_openadr_cbc: bool = False  # also ECDHE-ECDSA-AES128-SHA256 (OpenADR mandated)
    require_client_certificate: bool = True
    crl_check: bool = True
    certificate_days: int = 365
    renew_before_days: int = 30
    crl_days: int = 7
    # The audit log signs a checkpoint after this many records or minutes, whichever first.
    checkpoint_every_records: int = 100
    checkpoint_every_minutes: int = 10
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kinds: tuple[tuple[str, type], ...] = (
            ("tls_min_version", str),
            ("tls12_profile_enabled", bool),
            ("tls12_allow_openadr_cbc", bool),
            ("require_client_certificate", bool),
            ("crl_check", bool),
            ("certificate_days", int),
            ("renew_before_days", int),
            ("crl_days", int),
            ("checkpoint_every_records", int),
            ("checkpoint_every_minutes", int),
        )
        for name, kind in kinds:
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(
                    f"security config: {name} must be a {kind.__name__}, got {value!r}"
                )
            if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
                raise ValueError(f"security config: {name} must be positive, got {value}")
        if self.tls_min_version not in TLS_VERSIONS:
            raise ValueError(
                f"security config: tls_min_version {self.tls_min_version!r} is not one of "
                f"{', '.join(TLS_VERSIONS)}"
            )

    @classmethod
    def from_json(cls, text: str, source: str = "security config") -> SecurityConfig:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not valid JSON ({exc})") from exc
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: expected a JSON object")
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        values = {k: v for k, v in raw.items() if k in known}
        extra = {k: v for k, v in raw.items() if k not in known}
        try:
            return cls(**values, extra=extra)
        except TypeError as exc:
            raise ValueError(f"{source}: {exc}") from exc

    def to_json(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        data.update(extra)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


class SecurityHome:
    """Paths of the security state under a deployment's home directory."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.dir = self.home / "security"
        self.pki_dir = self.dir / "pki"
        # The root key is meant to leave this machine after init (offline root).
        self.root_key = self.pki_dir / "offline" / "root-ca.key.pem"
        self.root_cert = self.pki_dir / "root-ca.pem"
        self.issuing_key = self.pki_dir / "issuing-ca.key.pem"
        self.issuing_cert = self.pki_dir / "issuing-ca.pem"
        self.ca_bundle = self.pki_dir / "ca-bundle.pem"  # root + issuing: the trust anchors
        self.crl = self.pki_dir / "crl.pem"
        self.registry_db = self.dir / "registry.sqlite"
        self.audit_db = self.dir / "audit.sqlite"
        self.audit_key = self.dir / "audit-checkpoint.key.pem"
        # The latest signed audit checkpoint, kept outside the database it vouches for.
        self.audit_head = self.dir / "audit-head.json"
        # The RA's Ed25519 command key; gateways are given the .pub text (base64url raw key).
        self.command_key = self.dir / "command-ed25519.key.pem"
        self.command_public_key = self.dir / "command-ed25519.pub"
        # After `pki rotate-command-key`: retired public keys (to verify what they signed) and
        # the previous private key (to announce the new key to gateways).
        self.command_retired_keys = self.dir / "command-ed25519.retired.json"
        self.command_previous_key = self.dir / "command-ed25519.previous.key.pem"
        self.operators_db = self.dir / "operators.sqlite"
        self.config_file = self.dir / "config.json"
        self.assessments_dir = self.dir / "assessments"

    def ensure_dirs(self) -> None:
        """Create ``security/``, ``pki/`` and ``pki/offline/`` mode 0700 whatever the umask,
        and take group/other write off them if they exist (ERAB Cyber Security Guideline:
        nobody else may replace the keys, trust anchors or settings kept there)."""
        for directory in (self.dir, self.pki_dir, self.root_key.parent):
            private_dir(directory, tighten=True)

    def load_config(self) -> SecurityConfig | None:
        if not self.config_file.exists():
            return None
        return SecurityConfig.from_json(
            self.config_file.read_text(encoding="utf-8"), str(self.config_file)
        )

    def save_config(self, config: SecurityConfig) -> None:
        atomic_write(self.config_file, config.to_json().encode("utf-8"))
