"""The local EMS: what the site's battery does when no RA command is in force.

A pure decision (readings in, a battery setpoint out), run by the gateway after each meter
reading when the site config's ``[ems]`` table turns a policy on (both are off by default):

- **self-consumption**: charge from PV surplus, discharge against import, so the meter
  reads as close to 0 W as the battery allows;
- **peak cut**: discharge whatever the site would import above the contracted demand.

The setpoint stays inside the battery's rated power, SOC reserve and max (the same limits as
the safety envelope, which the executor applies again before it sets anything).  The run loop
never asks while an RA command is in force on the battery: the RA's command wins, and the
EMS resumes after it ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from erab.gateway.envelope import BatteryLimits


@dataclass(frozen=True)
class EmsPolicy:
    self_consumption: bool = False
    peak_cut_w: float | None = None  # contracted demand; None: no peak cut
    deadband_w: float = 100.0  # a change smaller than this is not worth a Set
    battery_id: str | None = None  # the battery it drives (default: the site's first)

    @property
    def enabled(self) -> bool:
        return self.self_consumption or self.peak_cut_w is not None


@dataclass(frozen=True)
class EmsInputs:
    meter_power_w: float  # the site's import (+) / export (−) now, EPC 0xE7
    battery_power_w: float  # the battery's charging (+) / discharging (−), EPC 0xD3
    soc_pct: float  # EPC 0xE4


@dataclass(frozen=True)
class EmsSetpoint:
    power_w: float  # + charge, − discharge, 0 standby
    reason: str


def decide_ems(
    inputs: EmsInputs, policy: EmsPolicy, limits: BatteryLimits
) -> EmsSetpoint | None:
    """The battery power the policy wants now; None when the battery may stay as it is."""
    if not policy.enabled:
        return None
    # what the site would import with the battery idle
    base_w = inputs.meter_power_w - inputs.battery_power_w
    if policy.self_consumption:
        target, reason = -base_w, (
            "self-consumption: charge from PV surplus" if base_w < 0
            else "self-consumption: discharge against import"
        )  # fmt: skip
    else:
        over = base_w - (policy.peak_cut_w or 0.0)
        target, reason = (-over, "peak cut") if over > 0 else (0.0, "below the contracted demand")
    if policy.self_consumption and policy.peak_cut_w is not None:
        # self-consumption already discharges against every watt of import
        reason += f" (peak cut at {policy.peak_cut_w:g} W)"
    target = max(-limits.rated_power_w, min(limits.rated_power_w, target))
    if target > 0 and inputs.soc_pct >= limits.soc_max_pct:
        target, reason = 0.0, f"full: soc {inputs.soc_pct:g}% at or above {limits.soc_max_pct:g}%"
    if target < 0 and inputs.soc_pct <= limits.soc_reserve_pct:
        target, reason = 0.0, (
            f"at reserve: soc {inputs.soc_pct:g}% at or below {limits.soc_reserve_pct:g}%"
        )
    target = float(round(target))
    if abs(target - inputs.battery_power_w) < policy.deadband_w:
        return None
    return EmsSetpoint(target, reason)
