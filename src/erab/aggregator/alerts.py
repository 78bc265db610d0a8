"""The RA's alerts: what an operator must look at, each raised once while its cause lasts.

- ``gateway_silent``: an online gateway sent nothing for ``silent_after_s`` (ingest marks it
  offline); ``gateway_offline``: its MQTT last will came.  Both clear when it is online again.
- ``wrong_site``: a hello named another site than the gateway's (ingest).  An operator looks.
- ``under_delivery``: a closed-loop check of an active event delivered below target ×
  (1 − tolerance); clears when a later check is back in the band, or the event ends.
- ``certificate_expiring``: an active gateway or server certificate, not renewed, expires
  within ``cert_warn_days``; clears when it is renewed, revoked or replaced.
- ``reading_flagged``: a resource's reading cannot be true (out of range, a field its kind
  lacks, stamped in the future).  An operator looks.

The store keeps every alert (:class:`erab.store.Alert`); :class:`AlertDesk` decides, from the
open ones, whether a cause already has its alert (its *subject*: the text before the first
``": "`` of the message, e.g. ``event ev-20260803-0001``), writes a log line for each one it
raises, and clears what has ended.  The decisions are pure functions below.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from erab.aggregator.closedloop import DEFAULT_TOLERANCE, DeliveryCheck
from erab.clock import Clock
from erab.store import AggregatorStore, Alert, GatewayStatus, SqliteStore

log = logging.getLogger("erab.ra.alerts")


class AlertKind(StrEnum):
    GATEWAY_SILENT = "gateway_silent"
    GATEWAY_OFFLINE = "gateway_offline"
    WRONG_SITE = "wrong_site"
    UNDER_DELIVERY = "under_delivery"
    CERTIFICATE_EXPIRING = "certificate_expiring"
    READING_FLAGGED = "reading_flagged"


GATEWAY_KINDS = frozenset({AlertKind.GATEWAY_SILENT.value, AlertKind.GATEWAY_OFFLINE.value})


@dataclass(frozen=True)
class AlertSettings:
    """When the RA raises an alert (``erab ra serve`` flags)."""

    silent_after_s: float = 300.0  # a gateway silent this long is offline
    under_delivery: float = DEFAULT_TOLERANCE  # below target × (1 − this) is under-delivery
    cert_warn_days: float = 30.0  # certificates expiring within this many days

    def __post_init__(self) -> None:
        if not self.silent_after_s > 0:
            raise ValueError(f"silent_after_s must be positive, got {self.silent_after_s}")
        if not 0 <= self.under_delivery < 1:
            raise ValueError(f"under_delivery must be in [0, 1), got {self.under_delivery}")
        if not self.cert_warn_days >= 0:
            raise ValueError(f"cert_warn_days must be >= 0, got {self.cert_warn_days}")


@dataclass(frozen=True)
class ExpiringCertificate:
    serial: str
    subject: str  # the gateway id, or the certificate's subject for a server
    gateway_id: str | None
    not_after: datetime

    def message(self, now: datetime) -> str:
        days = (self.not_after - now).total_seconds() / 86400.0
        return (
            f"certificate {self.serial} ({self.subject}): expires "
            f"{self.not_after.isoformat(timespec='seconds')}, in {days:.1f} days; renew it "
            "('erab pki renew')"
        )


def subject_of(message: str) -> str:
    """The cause an alert is about: its message up to the first ``": "``."""
    return message.partition(": ")[0]


def under_delivered(check: DeliveryCheck, tolerance: float = DEFAULT_TOLERANCE) -> bool:
    """True when the fleet delivers less than the target by more than ``tolerance``
    (delivery above the band is corrected by the closed loop, and is no alert)."""
    return check.delivered_kw < abs(check.target_kw) * (1.0 - tolerance)


def under_delivery_message(event_id: str, check: DeliveryCheck) -> str:
    return (
        f"event {event_id}: delivered {check.delivered_kw:.1f} kW of "
        f"{abs(check.target_kw):.1f} kW ({100.0 * check.ratio:.0f} %)"
    )


def expiring(
    records: Iterable[tuple[str, str, str | None, datetime, datetime, bool, str | None]],
    now: datetime,
    within: timedelta,
) -> list[ExpiringCertificate]:
    """Certificates that are valid now, not revoked, not renewed, and expire within
    ``within``; each record ``(serial, subject, gateway_id, not_before, not_after, revoked,
    renewed_by)`` (the fields of :class:`erab.security.registry.CertificateRecord`)."""
    return [
        ExpiringCertificate(serial, gateway_id or subject, gateway_id, not_after)
        for serial, subject, gateway_id, not_before, not_after, revoked, renewed_by in records
        if not revoked and renewed_by is None and not_before <= now < not_after
        and not_after - now < within
    ]  # fmt: skip


def clear_in_store(store: AggregatorStore, alert_id: int, at: datetime) -> bool:
    """Mark one alert cleared.  The store interface has no such call yet (asked for); until
    it does, a SQLite store is updated directly, and any other store keeps the alert open."""
    clear = getattr(store, "clear_alert", None)
    if callable(clear):
        clear(alert_id, at)
        return True
    if isinstance(store, SqliteStore):
        store._write(  # the store's own transaction wrapper (retries, rollback)
            lambda: store._db.execute(
                "UPDATE alerts SET cleared_at = ? WHERE alert_id = ? AND cleared_at IS NULL",
                (round(at.timestamp()), alert_id),
            )
        )
        return True
    return False


class AlertDesk:
    """Raises each alert once while its cause lasts, logs it, and clears it when it ends."""

    def __init__(self, store: AggregatorStore, clock: Clock,
                 settings: AlertSettings | None = None) -> None:  # fmt: skip
        self.store = store
        self.clock = clock
        self.settings = settings or AlertSettings()
        self.raised: Counter[str] = Counter()  # by kind, since start (for /metrics)

    def open_alerts(self) -> list[Alert]:
        return self.store.alerts(open_only=True)

    def _open_subjects(self, kind: AlertKind) -> dict[str, Alert]:
        return {subject_of(a.message): a for a in self.open_alerts() if a.kind == kind.value}

    def raise_once(self, kind: AlertKind, message: str, *, gateway_id: str | None = None,
                   resource_id: str | None = None) -> bool:  # fmt: skip
        """Raise unless an open alert of ``kind`` has the same subject; True if raised."""
        if subject_of(message) in self._open_subjects(kind):
            return False
        self.store.raise_alert(kind.value, message, self.clock.now(),
                               gateway_id=gateway_id, resource_id=resource_id)  # fmt: skip
        self.raised[kind.value] += 1
        log.warning("alert %s: %s", kind.value, message)
        return True

    def clear(self, kind: AlertKind, subject: str) -> bool:
        """Clear the open alert of ``kind`` about ``subject``; True if there was one."""
        alert = self._open_subjects(kind).get(subject)
        if alert is None:
            return False
        cleared = clear_in_store(self.store, alert.alert_id, self.clock.now())
        if cleared:
            log.info("alert %s cleared: %s", kind.value, subject)
        return cleared

    # -- the checks -------------------------------------------------------------------------
    def delivery(self, event_id: str, check: DeliveryCheck) -> bool:
        """After a closed-loop check: raise under-delivery, or clear it when back in band."""
        if under_delivered(check, self.settings.under_delivery):
            message = under_delivery_message(event_id, check)
            return self.raise_once(AlertKind.UNDER_DELIVERY, message)
        self.clear(AlertKind.UNDER_DELIVERY, f"event {event_id}")
        return False

    def event_over(self, event_id: str) -> None:
        self.clear(AlertKind.UNDER_DELIVERY, f"event {event_id}")

    def certificates(self, found: list[ExpiringCertificate]) -> int:
        """Raise for each expiring certificate; clear those no longer in ``found``."""
        now = self.clock.now()
        raised = sum(self.raise_once(AlertKind.CERTIFICATE_EXPIRING, c.message(now),
                                     gateway_id=c.gateway_id) for c in found)  # fmt: skip
        still = {subject_of(c.message(now)) for c in found}
        for subject in set(self._open_subjects(AlertKind.CERTIFICATE_EXPIRING)) - still:
            self.clear(AlertKind.CERTIFICATE_EXPIRING, subject)
        return raised

    def gateways_back(self) -> int:
        """Clear the silent/offline alerts of gateways that are online again."""
        online = {g.gateway_id for g in self.store.gateways() if g.status is GatewayStatus.ONLINE}
        cleared = 0
        for alert in self.open_alerts():
            if alert.kind in GATEWAY_KINDS and alert.gateway_id in online:
                cleared += clear_in_store(self.store, alert.alert_id, self.clock.now())
        return cleared

    def reading(self, resource_id: str, gateway_id: str | None, why: str) -> bool:
        return self.raise_once(AlertKind.READING_FLAGGED,
                               f"resource {resource_id}: reading not taken as truth ({why})",
                               gateway_id=gateway_id, resource_id=resource_id)  # fmt: skip

    def counts(self) -> dict[str, int]:
        """Open alerts by kind."""
        return dict(Counter(a.kind for a in self.open_alerts()))
