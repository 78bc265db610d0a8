"""erab.gateway: the site HEMS (docs/gateway.md).

- :class:`Outbox`: store and forward in one SQLite file; owns the uplink sequence.
- :class:`AllowList`: the devices (node id 0x83 + EOJ) the gateway may control.
- :mod:`erab.gateway.envelope`: the pure safety envelope (``decide_battery``,
  ``decide_aircon``, ``decide_pv``, ``start_delay_s``).
- :class:`CommandExecutor`: signed command → envelope → ECHONET Lite Set → read-back → ack,
  and restore (window end, cancel, uplink lost); its lifecycle is the table in
  :mod:`erab.gateway.lifecycle`.
- :mod:`erab.gateway.ems`: the local EMS as a pure decision (``decide_ems``: readings in,
  a battery setpoint out; :class:`EmsPolicy` from the site config's ``[ems]``).
- :mod:`erab.gateway.meter`: the site's smart meter by route B or on the LAN
  (``meter_values``: the meter's EDTs to W and kWh).
- :class:`Gateway`: the run loop for one site (discovery, telemetry, meter, state, the link,
  commands, the local EMS, timers), configured by :func:`load_site_config`
  (:class:`SiteConfig`, TOML); :func:`check_status` reads its status file and tells whether
  it really runs.
"""

from erab.gateway.allowlist import AllowList, DeviceKey, Finding, Review, SeenDevice
from erab.gateway.config import SiteConfig, SiteConfigError, load_site_config
from erab.gateway.ems import EmsInputs, EmsPolicy, EmsSetpoint, decide_ems
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
from erab.gateway.meter import MeterValues, meter_values
from erab.gateway.outbox import Outbox, OutboxError, OutboxStatus
from erab.gateway.service import Gateway, check_status, read_status

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
    "EmsInputs",
    "EmsPolicy",
    "EmsSetpoint",
    "Finding",
    "Gateway",
    "LifecycleError",
    "MeterValues",
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
    "check_status",
    "decide_ems",
    "load_site_config",
    "meter_values",
    "parse_command",
    "read_status",
]
