"""Which devices the gateway may control: an allow-list keyed by node identity and EOJ.

A device is identified by its node's identification number (node profile EPC 0x83, ECHONET
Lite Part 2 §6.11.1: unique per node) and its object code, not by its IP address: an address
can be reused by another node.  Only allow-listed devices are ever sent a Set.  A device seen
on the LAN that is not on the list (a new one, or another node answering at a known address)
is reported for the installer to confirm, never controlled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class DeviceKey:
    """A device object: its node's identification number (hex) and its EOJ (6 hex digits)."""

    node_id: str
    eoj: str

    def __post_init__(self) -> None:
        if not self.node_id or any(c not in "0123456789abcdef" for c in self.node_id):
            raise ValueError(f"node id must be lower-case hex (EPC 0x83), got {self.node_id!r}")
        if len(self.eoj) != 6 or any(c not in "0123456789abcdef" for c in self.eoj):
            raise ValueError(f"eoj must be 6 lower-case hex digits, got {self.eoj!r}")


@dataclass(frozen=True)
class SeenDevice:
    """A device object found on the LAN."""

    host: str
    key: DeviceKey


@dataclass(frozen=True)
class Finding:
    """A device the gateway will not control, and why."""

    host: str
    key: DeviceKey
    problem: str  # "new" (never allowed) or "changed" (another node at a known address)

    def describe(self) -> str:
        return f"{self.problem} device {self.key.node_id}/{self.key.eoj} at {self.host}"


@dataclass(frozen=True)
class Review:
    controllable: dict[DeviceKey, str]  # allowed device -> its current host
    findings: tuple[Finding, ...]


class AllowList:
    """The devices an installer confirmed for this site (``device_id`` by key)."""

    def __init__(self, devices: Mapping[DeviceKey, str]) -> None:
        self.devices = dict(devices)
        self._ids = {device_id: key for key, device_id in self.devices.items()}
        if len(self._ids) != len(self.devices):
            raise ValueError("two allow-listed devices share one device_id")

    def allows(self, key: DeviceKey) -> bool:
        return key in self.devices

    def key_of(self, device_id: str) -> DeviceKey | None:
        return self._ids.get(device_id)

    def review(
        self, seen: Iterable[SeenDevice], known_hosts: Mapping[str, str] | None = None
    ) -> Review:
        """Sort what discovery found: allowed devices (by their current host) and findings.

        ``known_hosts`` maps an address to the node id last seen there; a different node id
        at that address is a *changed* device (a swapped unit, or a spoofing node).
        """
        known = dict(known_hosts or {})
        controllable: dict[DeviceKey, str] = {}
        findings: list[Finding] = []
        for device in sorted(seen, key=lambda d: (d.host, d.key)):
            before = known.get(device.host)
            if before is not None and before != device.key.node_id:
                findings.append(Finding(device.host, device.key, "changed"))
            elif not self.allows(device.key):
                findings.append(Finding(device.host, device.key, "new"))
            else:
                controllable[device.key] = device.host
        return Review(controllable, tuple(findings))
