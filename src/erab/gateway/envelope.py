"""The site's safety envelope: what the gateway does with a command, decided without I/O.

A verified command (its signature, addressee, sequence and validity checked by
:class:`erab.security.EnvelopeVerifier`) is still only a request: the gateway applies it,
clips it to what the site's limits allow, or refuses it, from the device's present state and
the site configuration.  Every function here is pure; docs/gateway.md lists the rules and
their defaults.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from erab.gateway.allowlist import DeviceKey

Outcome = Literal["applied", "clipped", "refused"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    value: float | None = None  # what will be set (power_w, setpoint_c, limit_pct)
    reason: str | None = None

    @classmethod
    def refused(cls, reason: str) -> Decision:
        return cls("refused", None, reason)


# --- commands --------------------------------------------------------------------------------


class CommandInvalid(ValueError):
    """A command body the gateway does not understand (refused as ``malformed``)."""


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    max_delay_s: float = 0.0  # the RA allows the start to be spread over this much


@dataclass(frozen=True)
class BatteryPower:
    """Charge (``power_w`` > 0) or discharge (< 0) at a power for the window; 0: standby."""

    device_id: str
    power_w: float
    window: Window


@dataclass(frozen=True)
class AirconOffset:
    """Move the set temperature by ``offset_c`` (positive: warmer) for the window."""

    device_id: str
    offset_c: float
    window: Window


@dataclass(frozen=True)
class PvLimit:
    """Limit the PV inverter's output to ``limit_pct`` of its rating for the window."""

    device_id: str
    limit_pct: float
    window: Window


@dataclass(frozen=True)
class AirconPowerLimit:
    """Cap the air conditioner's power consumption at ``limit_w`` for the window (EPC 0x99,
    where the unit offers it)."""

    device_id: str
    limit_w: float
    window: Window


@dataclass(frozen=True)
class WaterHeaterShift:
    """Start (``heating`` True) or stop boiling water for the window (heat-pump water heater
    0x026B, EPC 0xB0)."""

    device_id: str
    heating: bool
    window: Window


@dataclass(frozen=True)
class EvPower:
    """Charge the car (``power_w`` > 0), discharge it to the home (< 0) or stop (0) for the
    window (EV charger/discharger 0x027E)."""

    device_id: str
    power_w: float
    window: Window


@dataclass(frozen=True)
class Cancel:
    """End the command in force on ``device_id`` now (restore its previous state)."""

    device_id: str


Command = (
    BatteryPower | AirconOffset | AirconPowerLimit | PvLimit | WaterHeaterShift | EvPower | Cancel
)


def _number(body: Mapping[str, Any], name: str) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CommandInvalid(f"{name} must be a number, got {value!r}")
    return float(value)


def _time(body: Mapping[str, Any], name: str) -> datetime:
    value = body.get(name)
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise CommandInvalid(f"{name} must be an RFC 3339 time, got {value!r}") from None
    if parsed.tzinfo is None:
        raise CommandInvalid(f"{name} needs a time zone, got {value!r}")
    return parsed


def _window(body: Mapping[str, Any]) -> Window:
    start, end = _time(body, "start"), _time(body, "end")
    if end <= start:
        raise CommandInvalid(f"window ends ({end.isoformat()}) before it starts")
    delay = _number(body, "max_delay_s") if "max_delay_s" in body else 0.0
    if delay < 0:
        raise CommandInvalid(f"max_delay_s must be >= 0, got {delay}")
    return Window(start, end, delay)


def parse_command(body: Mapping[str, Any]) -> Command:
    """The typed command in an envelope's ``body``; :class:`CommandInvalid` otherwise."""
    kind = body.get("type")
    device_id = body.get("device_id")
    if not isinstance(device_id, str) or not device_id:
        raise CommandInvalid(f"device_id must be a non-empty string, got {device_id!r}")
    if kind == "battery_power":
        return BatteryPower(device_id, _number(body, "power_w"), _window(body))
    if kind == "aircon_offset":
        return AirconOffset(device_id, _number(body, "offset_c"), _window(body))
    if kind == "pv_limit":
        return PvLimit(device_id, _number(body, "limit_pct"), _window(body))
    if kind == "aircon_power_limit":
        return AirconPowerLimit(device_id, _number(body, "limit_w"), _window(body))
    if kind == "water_heater_shift":
        heating = body.get("heating")
        if not isinstance(heating, bool):
            raise CommandInvalid(f"heating must be true (boil) or false (stop), got {heating!r}")
        return WaterHeaterShift(device_id, heating, _window(body))
    if kind == "ev_power":
        return EvPower(device_id, _number(body, "power_w"), _window(body))
    if kind == "cancel":
        return Cancel(device_id)
    raise CommandInvalid(
        f"unknown command type {kind!r} (battery_power, aircon_offset, aircon_power_limit, "
        "pv_limit, water_heater_shift, ev_power, cancel, allow_list)"
    )


ALLOW_LIST_TYPE = "allow_list"


@dataclass(frozen=True)
class RaAllowedDevice:
    """One device of the RA's allow-list: its id on the bus, its key on the LAN, and the
    rating the registry holds for it (batteries: the safety envelope's rating)."""

    device_id: str
    key: DeviceKey
    rated_power_w: float | None = None


def parse_allow_list(body: Mapping[str, Any]) -> tuple[RaAllowedDevice, ...]:
    """The devices of an ``allow_list`` command body (the RA's registry decides which of a
    site's resources the gateway may control: docs/aggregator-registry.md);
    :class:`CommandInvalid` naming the first thing wrong otherwise."""
    if body.get("type") != ALLOW_LIST_TYPE:
        raise CommandInvalid(f"type must be {ALLOW_LIST_TYPE!r}, got {body.get('type')!r}")
    devices = body.get("devices")
    if not isinstance(devices, list):
        raise CommandInvalid(f"devices must be a list, got {type(devices).__name__}")
    out: list[RaAllowedDevice] = []
    ids: set[str] = set()
    keys: set[DeviceKey] = set()
    for i, entry in enumerate(devices):
        if not isinstance(entry, Mapping):
            raise CommandInvalid(f"devices[{i}] must be an object, got {type(entry).__name__}")
        device_id = entry.get("device_id")
        if not isinstance(device_id, str) or not 1 <= len(device_id) <= 64:
            raise CommandInvalid(
                f"devices[{i}].device_id must be a string of 1-64 characters, got {device_id!r}"
            )
        node_id, eoj = entry.get("node_id"), entry.get("eoj")
        if not isinstance(node_id, str) or not isinstance(eoj, str):
            raise CommandInvalid(
                f"devices[{i}] ({device_id}): node_id and eoj must be hex strings, "
                f"got {node_id!r} and {eoj!r}"
            )
        try:
            key = DeviceKey(node_id.lower(), eoj.lower())
        except ValueError as exc:
            raise CommandInvalid(f"devices[{i}] ({device_id}): {exc}") from None
        rated = entry.get("rated_power_w")
        if rated is not None:
            rated = _number(entry, "rated_power_w")
            if not 0 <= rated < float("inf"):
                raise CommandInvalid(
                    f"devices[{i}] ({device_id}): rated_power_w must be >= 0, got {rated}"
                )
        if device_id in ids:
            raise CommandInvalid(f"devices[{i}]: device_id {device_id!r} is listed twice")
        if key in keys:
            raise CommandInvalid(
                f"devices[{i}] ({device_id}): device {key.node_id}/{key.eoj} is listed twice"
            )
        ids.add(device_id)
        keys.add(key)
        out.append(RaAllowedDevice(device_id, key, rated))
    return tuple(out)


# --- limits and states -----------------------------------------------------------------------


@dataclass(frozen=True)
class BatteryLimits:
    rated_power_w: float
    soc_reserve_pct: float = 20.0  # never discharge at or below
    soc_max_pct: float = 95.0  # never charge at or above
    max_step_w: float | None = None  # ramp: largest change from the present power at once


@dataclass(frozen=True)
class ComfortBand:
    cooling_max_c: float = 28.0  # a cooling set point never above
    heating_min_c: float = 18.0  # a heating set point never below
    max_offset_c: float = 3.0  # the largest move one command may ask


@dataclass(frozen=True)
class PvLimits:
    min_limit_pct: float = 0.0


@dataclass(frozen=True)
class WaterHeaterLimits:
    min_hot_water_l: float = 100.0  # never stop boiling with less hot water left (EPC 0xE1)


@dataclass(frozen=True)
class EvLimits:
    soc_reserve_pct: float = 30.0  # the car must still be able to drive
    soc_max_pct: float = 100.0
    rated_power_w: float | None = None  # the site's cap; else the charger's own rating


@dataclass(frozen=True)
class AirconLimits:
    min_power_w: float = 200.0  # a power limit below this would stop the unit in all but name


@dataclass(frozen=True)
class BatteryState:
    soc_pct: float
    power_w: float  # EPC 0xD3: charging positive, discharging negative


@dataclass(frozen=True)
class AirconState:
    mode: str  # "cooling", "heating", ... (EPC 0xB0)
    setpoint_c: float  # EPC 0xB3


# --- the rules -------------------------------------------------------------------------------


def decide_battery(power_w: float, state: BatteryState, limits: BatteryLimits) -> Decision:
    """Charge or discharge inside rated power, SOC reserve and max, and the ramp."""
    if power_w > 0 and state.soc_pct >= limits.soc_max_pct:
        return Decision.refused(
            f"battery full: soc {state.soc_pct:g}% at or above max {limits.soc_max_pct:g}%"
        )
    if power_w < 0 and state.soc_pct <= limits.soc_reserve_pct:
        return Decision.refused(
            f"battery at reserve: soc {state.soc_pct:g}% at or below {limits.soc_reserve_pct:g}%"
        )
    target, reasons = power_w, []
    if abs(target) > limits.rated_power_w:
        target = limits.rated_power_w if target > 0 else -limits.rated_power_w
        reasons.append(f"above rated power {limits.rated_power_w:g} W")
    if limits.max_step_w is not None and abs(target - state.power_w) > limits.max_step_w:
        step = limits.max_step_w if target > state.power_w else -limits.max_step_w
        target = state.power_w + step
        reasons.append(f"ramp limit {limits.max_step_w:g} W per step")
    if reasons:
        return Decision("clipped", target, "; ".join(reasons))
    return Decision("applied", target)


def decide_aircon(offset_c: float, state: AirconState, band: ComfortBand) -> Decision:
    """Move the set point by ``offset_c``, never outside the comfort band."""
    if state.mode not in ("cooling", "heating"):
        return Decision.refused(f"air conditioner is {state.mode}, not cooling or heating")
    offset, reasons = offset_c, []
    if abs(offset) > band.max_offset_c:
        offset = band.max_offset_c if offset > 0 else -band.max_offset_c
        reasons.append(f"offset beyond {band.max_offset_c:g} °C")
    target = float(round(state.setpoint_c + offset))  # EPC 0xB3 is whole degrees
    if state.mode == "cooling" and target > band.cooling_max_c:
        target = band.cooling_max_c
        reasons.append(f"cooling never above {band.cooling_max_c:g} °C")
    if state.mode == "heating" and target < band.heating_min_c:
        target = band.heating_min_c
        reasons.append(f"heating never below {band.heating_min_c:g} °C")
    if reasons and target == state.setpoint_c:
        return Decision.refused("; ".join(reasons) + ": already at the limit")
    if reasons:
        return Decision("clipped", target, "; ".join(reasons))
    return Decision("applied", target)


def decide_aircon_power(limit_w: float, limits: AirconLimits) -> Decision:
    """Cap the air conditioner's power; a cap so low it would stop the unit is clipped."""
    if limit_w <= 0:
        return Decision.refused(f"power limit {limit_w:g} W is not above 0 W")
    if limit_w < limits.min_power_w:
        return Decision(
            "clipped", limits.min_power_w, f"below the comfort minimum {limits.min_power_w:g} W"
        )
    return Decision("applied", float(round(limit_w)))


def decide_water_heater(heating: bool, remaining_l: float, limits: WaterHeaterLimits) -> Decision:
    """Boil now (1) or stop boiling (0); stopping is refused when the tank is nearly empty,
    so the customer is never left without hot water."""
    if not heating and remaining_l < limits.min_hot_water_l:
        return Decision.refused(
            f"only {remaining_l:g} L of hot water left, below the minimum "
            f"{limits.min_hot_water_l:g} L: boiling not stopped"
        )
    return Decision("applied", 1.0 if heating else 0.0)


@dataclass(frozen=True)
class EvState:
    connected: bool  # EPC 0xC7 not 0x30 (not connected) / 0xFF (undefined)
    soc_pct: float  # EPC 0xE4
    power_w: float  # EPC 0xD3, charging +
    max_charge_w: float  # EPC 0xC8: (min, max)
    max_discharge_w: float  # EPC 0xC9
    min_power_w: float = 0.0  # the charger's smallest power either way


def decide_ev(power_w: float, state: EvState, limits: EvLimits) -> Decision:
    """Charge or discharge the car inside the charger's ratings, the site's cap, the car's
    SOC reserve and max; a non-zero power below the charger's minimum is raised to it."""
    if power_w != 0 and not state.connected:
        return Decision.refused("no car connected to the charger")
    rated = state.max_charge_w if power_w > 0 else state.max_discharge_w
    if limits.rated_power_w is not None:
        rated = min(rated, limits.rated_power_w)
    battery = BatteryLimits(rated_power_w=rated, soc_reserve_pct=limits.soc_reserve_pct,
                            soc_max_pct=limits.soc_max_pct)  # fmt: skip
    decision = decide_battery(power_w, BatteryState(state.soc_pct, state.power_w), battery)
    value = decision.value or 0.0
    if decision.outcome != "refused" and 0 < abs(value) < state.min_power_w:
        value = state.min_power_w if value > 0 else -state.min_power_w
        reason = f"below the charger's minimum {state.min_power_w:g} W"
        return Decision("clipped", value, f"{decision.reason}; {reason}" if decision.reason
                        else reason)  # fmt: skip
    return decision


def decide_pv(limit_pct: float, limits: PvLimits) -> Decision:
    if not 0.0 <= limit_pct <= 100.0:
        return Decision.refused(f"limit {limit_pct:g}% is not within 0-100%")
    if limit_pct < limits.min_limit_pct:
        return Decision(
            "clipped", limits.min_limit_pct, f"below the site's minimum {limits.min_limit_pct:g}%"
        )
    return Decision("applied", limit_pct)


def decide_window(window: Window, now: datetime) -> Decision | None:
    """A refusal when the window is already over; None when the command may go ahead."""
    if now >= window.end:
        return Decision.refused(f"window ended at {window.end.isoformat()}")
    return None


def start_delay_s(gateway_id: str, command_seq: int, window: Window, now: datetime) -> float:
    """A delay in [0, max_delay_s) before acting, the same for the same gateway and command,
    different across gateways (so thousands of sites do not switch in the same second);
    never past the window's end."""
    spread = 0.0
    if window.max_delay_s > 0:  # (seeding a generator costs more than the rest together)
        seed = hashlib.sha256(f"{gateway_id}\n{command_seq}".encode()).digest()
        spread = random.Random(seed).random() * window.max_delay_s
    earliest = max(0.0, (window.start - now).total_seconds())
    latest = (window.end - now).total_seconds()
    return max(0.0, min(earliest + spread, latest))
