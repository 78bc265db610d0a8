"""erab.gateway: the site HEMS (docs/gateway.md).

- :class:`Outbox`: store and forward in one SQLite file; owns the uplink sequence.
- :class:`AllowList`: the devices (node id 0x83 + EOJ) the gateway may control.
- :mod:`erab.gateway.envelope`: the pure safety envelope (``decide_battery``,
  ``decide_aircon``, ``decide_pv``, ``start_delay_s``).
- :class:`CommandExecutor`: signed command → envelope → ECHONET Lite Set → read-back → ack,
  and restore (window end, cancel, uplink lost); its lifecycle is the table in
  :mod:`erab.gateway.lifecycle`.
- :class:`Gateway`: the run loop for one site (discovery, telemetry, the link, commands,
  timers), configured by :func:`load_site_config` (:class:`SiteConfig`, TOML).
"""

from erab.gateway.allowlist import AllowList, DeviceKey, Finding, Review, SeenDevice
from erab.gateway.config import SiteConfig, SiteConfigError, load_site_config
from erab.gateway.envelope import (
    BatteryLimits,
    ComfortBand,
    CommandInvalid,
    Decision,
    PvLimits,
    parse_command,
)
from erab.gateway.executor import CommandExecutor, ControlledDevice
from erab.gateway.lifecycle import TRANSITIONS, CommandLife, LifecycleError, Stage, Trigger
from erab.gateway.outbox import Outbox, OutboxError, OutboxStatus
from erab.gateway.service import Gateway, read_status

__all__ = [
    "TRANSITIONS",
    "AllowList",
    "BatteryLimits",
    "ComfortBand",
    "CommandExecutor",
    "CommandInvalid",
    "CommandLife",
    "ControlledDevice",
    "Decision",
    "DeviceKey",
    "Finding",
    "Gateway",
    "LifecycleError",
    "Outbox",
    "OutboxError",
    "OutboxStatus",
    "PvLimits",
    "Review",
    "SeenDevice",
    "SiteConfig",
    "SiteConfigError",
    "Stage",
    "Trigger",
    "load_site_config",
    "parse_command",
    "read_status",
]
