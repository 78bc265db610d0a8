"""Carrying out signed commands: verify → safety envelope → ECHONET Lite Set → read-back → ack,
and restoring each device's previous state at the window's end, on cancel, or when the uplink
has been lost longer than the grace (fail-safe).

The decisions are the pure functions of :mod:`erab.gateway.envelope`; this is the thin
asyncio shell around them.  Every transition of :mod:`erab.gateway.lifecycle` goes to the
site's audit log (kind ``command``, actor the gateway).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from erab.bus import Acknowledgement, DeviceOutcome
from erab.clock import Clock
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.gateway.envelope import (
    AirconOffset,
    AirconState,
    BatteryLimits,
    BatteryPower,
    BatteryState,
    Cancel,
    ComfortBand,
    CommandInvalid,
    Decision,
    PvLimit,
    PvLimits,
    decide_aircon,
    decide_battery,
    decide_pv,
    decide_window,
    parse_command,
    start_delay_s,
)
from erab.gateway.lifecycle import CommandLife, Stage, Trigger
from erab.security import AuditKind, AuditLog, EnvelopeRejected, EnvelopeVerifier

DeviceKind = Literal["battery", "aircon", "pv"]

# ECHONET Lite Appendix (Release R): storage battery 0x027D, home air conditioner 0x0130,
# household solar power generation 0x0279.
BATTERY_MODE = 0xDA  # operation mode setting
BATTERY_CHARGE_W = 0xEB  # charging power setting
BATTERY_DISCHARGE_W = 0xEC  # discharging power setting
BATTERY_POWER_W = 0xD3  # measured instantaneous charging/discharging power (signed)
BATTERY_SOC_PCT = 0xE4  # remaining stored electricity 3 (%)
CHARGING, DISCHARGING, STANDBY = 0x42, 0x43, 0x44
AIRCON_MODE = 0xB0
AIRCON_SETPOINT_C = 0xB3
AIRCON_MODES = {0x40: "other", 0x41: "auto", 0x42: "cooling", 0x43: "heating",
                0x44: "dehumidifying", 0x45: "fan"}  # fmt: skip
PV_LIMIT_PCT = 0xA0  # output control setting 1 (%)

# what is saved before a Set, to be written back on restore
SAVED: dict[DeviceKind, tuple[int, ...]] = {
    "battery": (BATTERY_MODE, BATTERY_CHARGE_W, BATTERY_DISCHARGE_W),
    "aircon": (AIRCON_SETPOINT_C,),
    "pv": (PV_LIMIT_PCT,),
}


@dataclass(frozen=True)
class ControlledDevice:
    """An allow-listed device, where it is now, and its limits from the site config."""

    device_id: str
    kind: DeviceKind
    host: str
    eoj: EOJ
    battery: BatteryLimits | None = None
    comfort: ComfortBand = field(default_factory=ComfortBand)
    pv: PvLimits = field(default_factory=PvLimits)


@dataclass
class ActiveCommand:
    life: CommandLife
    device: ControlledDevice
    end: datetime
    saved: dict[int, bytes] = field(default_factory=dict)


class AckSequence(Protocol):
    """Numbers acknowledgements: the outbox's ``next_seq``."""

    def next_seq(self) -> int: ...


class DeviceSilent(Exception):
    """The device did not answer (or refused the Set)."""


class CommandExecutor:
    """One site's command handling.  ``ack_seq`` numbers acknowledgements (the outbox's
    ``next_seq``); the caller publishes or stores the returned acknowledgement."""

    def __init__(
        self,
        gateway_id: str,
        *,
        verifier: EnvelopeVerifier,
        controller: Controller,
        devices: Mapping[str, ControlledDevice],
        audit: AuditLog,
        clock: Clock,
        ack_seq: AckSequence,
        uplink_grace: timedelta = timedelta(minutes=5),
    ) -> None:
        self.gateway_id = gateway_id
        self.verifier = verifier
        self.controller = controller
        self.devices = dict(devices)
        self.audit = audit
        self.clock = clock
        self.ack_seq = ack_seq
        self.uplink_grace = uplink_grace
        self.active: dict[str, ActiveCommand] = {}  # by device_id
        self.lives: dict[int, CommandLife] = {}
        self.uplink_lost_since: datetime | None = None

    # -- the lifecycle, audited --------------------------------------------------------------
    def _advance(self, life: CommandLife, trigger: Trigger, **details: object) -> Stage:
        stage = life.advance(trigger, self.clock.now())
        self.audit.append(
            AuditKind.COMMAND,
            self.gateway_id,
            f"command {life.command_seq}",
            {"action": stage.value, "trigger": trigger.value,
             **{k: v for k, v in details.items() if v is not None}},
        )  # fmt: skip
        return stage

    def _ack(self, command_seq: int, received_at: datetime, *, rejected: str | None = None,
             outcomes: list[DeviceOutcome] | None = None) -> Acknowledgement:  # fmt: skip
        return Acknowledgement(
            gateway_id=self.gateway_id,
            seq=self.ack_seq.next_seq(),
            sent_at=self.clock.now(),
            command_seq=command_seq,
            received_at=received_at,
            rejected=rejected,
            outcomes=outcomes or [],
        )

    # -- handling one command ----------------------------------------------------------------
    async def handle(self, wire: bytes) -> Acknowledgement:
        received_at = self.clock.now()
        try:
            envelope = self.verifier.verify(wire)
        except EnvelopeRejected as exc:
            seq = _claimed_sequence(wire)
            life = CommandLife(seq)
            self._advance(life, Trigger.REJECTED, reason=exc.reason.value)
            return self._ack(seq, received_at, rejected=exc.reason.value)
        life = CommandLife(envelope.sequence)
        self.lives[envelope.sequence] = life
        self._advance(life, Trigger.VERIFIED, body=envelope.body)
        outcome = await self._execute(life, envelope.body)
        return self._ack(envelope.sequence, received_at, outcomes=[outcome])

    async def _execute(self, life: CommandLife, body: Mapping[str, object]) -> DeviceOutcome:
        device_id = str(body.get("device_id") or "-")[:64]

        def refuse(reason: str) -> DeviceOutcome:
            self._advance(life, Trigger.OUT_OF_ENVELOPE, device_id=device_id, reason=reason)
            return DeviceOutcome(device_id=device_id, outcome="refused", reason=reason[:200])

        try:
            command = parse_command(body)
        except CommandInvalid as exc:
            return refuse(f"malformed: {exc}")
        device = self.devices.get(command.device_id)
        if device is None:
            return refuse(f"{command.device_id!r} is not an allow-listed device of this site")
        if isinstance(command, Cancel):
            active = self.active.get(device.device_id)
            if active is None:
                return refuse("no command in force to cancel")
            self._advance(life, Trigger.IN_ENVELOPE, device_id=device.device_id)
            await self._restore(active, Trigger.CANCEL)
            self._advance(life, Trigger.CANCELLED, device_id=device.device_id)
            return DeviceOutcome(device_id=device.device_id, outcome="applied",
                                 reason=f"cancelled command {active.life.command_seq}")  # fmt: skip
        expected: dict[type, DeviceKind] = {BatteryPower: "battery", AirconOffset: "aircon",
                                            PvLimit: "pv"}  # fmt: skip
        if expected[type(command)] != device.kind:
            return refuse(f"{device.device_id} is a {device.kind}, not a {expected[type(command)]}")
        late = decide_window(command.window, self.clock.now())
        if late is not None:
            return refuse(late.reason or "window over")
        try:
            decision, values = await self._decide(device, command)
        except DeviceSilent as exc:
            return refuse(f"could not read the device's state: {exc}")
        if decision.outcome == "refused":
            return refuse(decision.reason or "refused")
        self._advance(life, Trigger.IN_ENVELOPE, device_id=device.device_id,
                      decision=decision.outcome, value=decision.value)  # fmt: skip
        delay = start_delay_s(self.gateway_id, life.command_seq, command.window, self.clock.now())
        if delay > 0:
            await self.clock.sleep(delay)
        try:
            saved = await self._read(device, SAVED[device.kind])
            await self._set(device, values)
            readback = await self._readback(device)
        except DeviceSilent as exc:
            self._advance(life, Trigger.DEVICE_SILENT, device_id=device.device_id, reason=str(exc))
            return DeviceOutcome(device_id=device.device_id, outcome="not_answering",
                                 reason=str(exc)[:200])  # fmt: skip
        previous = self.active.pop(device.device_id, None)
        if previous is not None:  # a newer command replaces the one in force: keep the
            saved = previous.saved  # state from before the first, so restore goes all the way
            self._advance(previous.life, Trigger.CANCEL, device_id=device.device_id,
                          reason=f"replaced by command {life.command_seq}")  # fmt: skip
        self.active[device.device_id] = ActiveCommand(life, device, command.window.end, saved)
        self._advance(life, Trigger.SET, device_id=device.device_id, readback=readback)
        return DeviceOutcome(
            device_id=device.device_id,
            outcome="clipped" if decision.outcome == "clipped" else "applied",
            reason=decision.reason,
            readback=readback,
            measured_at=self.clock.now(),
        )

    async def _decide(
        self, device: ControlledDevice, command: BatteryPower | AirconOffset | PvLimit
    ) -> tuple[Decision, dict[int, bytes]]:
        if isinstance(command, BatteryPower):
            raw = await self._read(device, (BATTERY_SOC_PCT, BATTERY_POWER_W))
            state = BatteryState(float(raw[BATTERY_SOC_PCT][0]), _signed(raw[BATTERY_POWER_W]))
            limits = device.battery or BatteryLimits(rated_power_w=0.0)
            decision = decide_battery(command.power_w, state, limits)
            power = round(decision.value or 0.0)
            if power > 0:
                values = {
                    BATTERY_CHARGE_W: struct.pack(">I", power),
                    BATTERY_MODE: bytes([CHARGING]),
                }
            elif power < 0:
                values = {BATTERY_DISCHARGE_W: struct.pack(">I", -power),
                          BATTERY_MODE: bytes([DISCHARGING])}  # fmt: skip
            else:
                values = {BATTERY_MODE: bytes([STANDBY])}
            return decision, values
        if isinstance(command, AirconOffset):
            raw = await self._read(device, (AIRCON_MODE, AIRCON_SETPOINT_C))
            mode = AIRCON_MODES.get(raw[AIRCON_MODE][0], f"mode 0x{raw[AIRCON_MODE][0]:02x}")
            aircon = AirconState(mode, float(raw[AIRCON_SETPOINT_C][0]))
            decision = decide_aircon(command.offset_c, aircon, device.comfort)
            return decision, {AIRCON_SETPOINT_C: bytes([round(decision.value or 0.0)])}
        decision = decide_pv(command.limit_pct, device.pv)
        return decision, {PV_LIMIT_PCT: bytes([round(decision.value or 0.0)])}

    # -- ECHONET Lite ------------------------------------------------------------------------
    async def _read(self, device: ControlledDevice, epcs: tuple[int, ...]) -> dict[int, bytes]:
        try:
            raw = await self.controller.get_raw(device.host, device.eoj, epcs)
        except TimeoutError as exc:
            raise DeviceSilent(f"no answer from {device.host}: {exc}") from None
        missing = [f"0x{e:02X}" for e in epcs if not raw.get(e)]
        if missing:
            raise DeviceSilent(f"{device.device_id} did not give {', '.join(missing)}")
        return raw

    async def _set(self, device: ControlledDevice, values: Mapping[int, bytes]) -> None:
        try:
            result = await self.controller.set_raw(device.host, device.eoj, values)
        except TimeoutError as exc:
            raise DeviceSilent(f"no answer from {device.host}: {exc}") from None
        if result.rejected:
            refused = ", ".join(f"0x{e:02X}" for e in result.rejected)
            raise DeviceSilent(f"{device.device_id} refused the Set of {refused}")

    async def _readback(self, device: ControlledDevice) -> dict[str, float]:
        if device.kind == "battery":
            raw = await self._read(device, (BATTERY_MODE, BATTERY_CHARGE_W, BATTERY_DISCHARGE_W,
                                            BATTERY_SOC_PCT))  # fmt: skip
            return {
                "mode_code": float(raw[BATTERY_MODE][0]),
                "charge_setting_w": float(int.from_bytes(raw[BATTERY_CHARGE_W])),
                "discharge_setting_w": float(int.from_bytes(raw[BATTERY_DISCHARGE_W])),
                "soc_pct": float(raw[BATTERY_SOC_PCT][0]),
            }
        if device.kind == "aircon":
            raw = await self._read(device, (AIRCON_SETPOINT_C,))
            return {"setpoint_c": float(raw[AIRCON_SETPOINT_C][0])}
        raw = await self._read(device, (PV_LIMIT_PCT,))
        return {"limit_pct": float(raw[PV_LIMIT_PCT][0])}

    # -- restoring ---------------------------------------------------------------------------
    async def _restore(self, active: ActiveCommand, trigger: Trigger) -> bool:
        """Write the saved state back; True when the device took it."""
        self.active.pop(active.device.device_id, None)
        try:
            await self._set(active.device, active.saved)
            ok, problem = True, None
        except DeviceSilent as exc:
            ok, problem = False, str(exc)
        self._advance(active.life, trigger, device_id=active.device.device_id,
                      restored=ok, problem=problem)  # fmt: skip
        return ok

    async def restore_due(self) -> list[int]:
        """Restore every command whose window has ended; their sequence numbers."""
        now = self.clock.now()
        due = [a for a in self.active.values() if a.end <= now]
        for active in due:
            await self._restore(active, Trigger.WINDOW_END)
        return [a.life.command_seq for a in due]

    async def uplink_state(self, up: bool) -> list[int]:
        """Tell the executor whether the link to the RA is up; past ``uplink_grace`` without
        it, every command in force is ended (fail-safe).  Returns those restored."""
        now = self.clock.now()
        if up:
            self.uplink_lost_since = None
            return []
        if self.uplink_lost_since is None:
            self.uplink_lost_since = now
        if now - self.uplink_lost_since < self.uplink_grace:
            return []
        restored = list(self.active.values())
        for active in restored:
            await self._restore(active, Trigger.UPLINK_LOST)
        return [a.life.command_seq for a in restored]


def _signed(edt: bytes) -> float:
    return float(int.from_bytes(edt, "big", signed=True))


def _claimed_sequence(wire: bytes) -> int:
    """The sequence a rejected envelope claims (for the ack), 1 if it has none usable."""
    try:
        value = json.loads(wire)["envelope"]["sequence"]
    except (ValueError, KeyError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value < 2**63 else 1
