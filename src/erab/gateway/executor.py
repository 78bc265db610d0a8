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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol

from erab.bus import Acknowledgement, DeviceOutcome
from erab.clock import Clock
from erab.echonet.controller import Controller
from erab.echonet.frame import EOJ
from erab.echonet.propmap import PropertyMapError, decode_property_map
from erab.gateway.envelope import (
    ALLOW_LIST_TYPE,
    AirconLimits,
    AirconOffset,
    AirconPowerLimit,
    AirconState,
    BatteryLimits,
    BatteryPower,
    BatteryState,
    Cancel,
    ComfortBand,
    CommandInvalid,
    Decision,
    EvLimits,
    EvPower,
    EvState,
    PvLimit,
    PvLimits,
    RaAllowedDevice,
    WaterHeaterLimits,
    WaterHeaterShift,
    decide_aircon,
    decide_aircon_power,
    decide_battery,
    decide_ev,
    decide_pv,
    decide_water_heater,
    decide_window,
    parse_allow_list,
    parse_command,
    start_delay_s,
)
from erab.gateway.lifecycle import CommandLife, Stage, Trigger
from erab.security import AuditKind, AuditLog, EnvelopeRejected, EnvelopeVerifier

DeviceKind = Literal["battery", "aircon", "pv", "water_heater", "ev"]

# ECHONET Lite Appendix (Release R): storage battery 0x027D, home air conditioner 0x0130,
# household solar power generation 0x0279, electric (heat-pump) water heater 0x026B, EV
# charger/discharger 0x027E.
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
POWER_LIMIT_W = 0x99  # power limit setting (W), a super-class property few units offer
SET_MAP = 0x9E  # Set property map
PV_LIMIT_PCT = 0xA0  # output control setting 1 (%)
WATER_HEATING = 0xB0  # automatic water heating setting: 0x41 auto, 0x42 boil now, 0x43 stop
HEATING_AUTO, HEATING_ON, HEATING_OFF = 0x41, 0x42, 0x43
HOT_WATER_L = 0xE1  # measured amount of hot water remaining in tank (L)
EV_CONNECTION = 0xC7  # vehicle connection and chargeable/dischargeable status
EV_NOT_CONNECTED = (0x30, 0xFF)  # not connected; undefined
EV_CHARGE_RANGE_W = 0xC8  # minimum/maximum charging power (2 x 4 bytes, W)
EV_DISCHARGE_RANGE_W = 0xC9  # minimum/maximum discharging power
# the EV charger shares the battery's mode (0xDA), power settings (0xEB/0xEC), 0xD3 and 0xE4

STORAGE_SAVED = (BATTERY_MODE, BATTERY_CHARGE_W, BATTERY_DISCHARGE_W)
# what is saved before a Set, to be written back on restore, by command kind
SAVED: dict[type, tuple[int, ...]] = {
    BatteryPower: STORAGE_SAVED,
    EvPower: STORAGE_SAVED,
    AirconOffset: (AIRCON_SETPOINT_C,),
    AirconPowerLimit: (POWER_LIMIT_W,),
    PvLimit: (PV_LIMIT_PCT,),
    WaterHeaterShift: (WATER_HEATING,),
}
# commands whose decision Get may carry the saved properties too (not the power limit: a
# unit that lacks 0x99 must be refused for that, not found silent)
MERGED_READ: dict[type, bool] = {
    BatteryPower: True, EvPower: True, AirconOffset: True, PvLimit: True,
    WaterHeaterShift: True, AirconPowerLimit: False,
}  # fmt: skip
KIND_OF_COMMAND: dict[type, DeviceKind] = {
    BatteryPower: "battery", AirconOffset: "aircon", AirconPowerLimit: "aircon",
    PvLimit: "pv", WaterHeaterShift: "water_heater", EvPower: "ev",
}  # fmt: skip
DeviceCommand = (
    BatteryPower | AirconOffset | AirconPowerLimit | PvLimit | WaterHeaterShift | EvPower
)


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
    aircon: AirconLimits = field(default_factory=AirconLimits)
    water_heater: WaterHeaterLimits = field(default_factory=WaterHeaterLimits)
    ev: EvLimits = field(default_factory=EvLimits)


@dataclass
class ActiveCommand:
    life: CommandLife
    device: ControlledDevice
    end: datetime
    saved: dict[int, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class AllowListChange:
    """What the site made of the RA's allow-list: the devices controllable now, an outcome
    per listed device (refused: not found on the LAN), and the device ids added and removed."""

    devices: dict[str, ControlledDevice]
    outcomes: list[DeviceOutcome]
    added: list[str]
    removed: list[str]


# replaces the site's RA-approved allow-list (and stores it) and says what changed
AllowListHandler = Callable[[tuple[RaAllowedDevice, ...]], AllowListChange]


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
        committed: Callable[[], Awaitable[None]] | None = None,
        on_allow_list: AllowListHandler | None = None,
    ) -> None:
        self.gateway_id = gateway_id
        # the gateway's side of an allow_list command; None: such a command is refused
        self.on_allow_list = on_allow_list
        # where writes are grouped (erab gateway fleet): returns once the verifier's new
        # state and the audit records are on disk, awaited before a command is acted on
        self.committed = committed
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
        self.pending: set[str] = set()  # devices an RA command is being carried out on

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
        if self.committed is not None:  # the replay high-water mark on disk before any Set
            await self.committed()
        if envelope.body.get("type") == ALLOW_LIST_TYPE:
            outcomes = await self._replace_allow_list(life, envelope.body)
        else:
            outcomes = [await self._execute(life, envelope.body)]
        return self._ack(envelope.sequence, received_at, outcomes=outcomes)

    async def _replace_allow_list(
        self, life: CommandLife, body: Mapping[str, object]
    ) -> list[DeviceOutcome]:
        """The RA's allow-list replaces the site's: a command in force on a device that is no
        longer controllable is restored first (as cancel does)."""
        try:
            listed = parse_allow_list(body)
            if self.on_allow_list is None:
                raise CommandInvalid("this gateway does not take an allow-list from the RA")
        except CommandInvalid as exc:
            reason = f"malformed: {exc}"
            self._advance(life, Trigger.OUT_OF_ENVELOPE, device_id="allow_list", reason=reason)
            return [DeviceOutcome(device_id="allow_list", outcome="refused", reason=reason[:200])]
        try:
            change = self.on_allow_list(listed)
        except OSError as exc:  # the list could not be stored: the site's stays as it was
            reason = f"could not store the allow-list: {exc}"
            self._advance(life, Trigger.OUT_OF_ENVELOPE, device_id="allow_list", reason=reason)
            return [DeviceOutcome(device_id="allow_list", outcome="refused", reason=reason[:200])]
        not_found = [o.device_id for o in change.outcomes if o.outcome == "refused"]
        self._advance(life, Trigger.IN_ENVELOPE, device_id="allow_list", added=change.added,
                      removed=change.removed, not_found=not_found)  # fmt: skip
        for device_id, active in list(self.active.items()):
            if device_id not in change.devices:
                await self._restore(active, Trigger.CANCEL)
        self.devices = dict(change.devices)
        self._advance(life, Trigger.SET, device_id="allow_list",
                      devices=sorted(change.devices))  # fmt: skip
        return change.outcomes

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
        wanted = KIND_OF_COMMAND[type(command)]
        if wanted != device.kind:
            return refuse(f"{device.device_id} is a {device.kind}, not a {wanted}")
        late = decide_window(command.window, self.clock.now())
        if late is not None:
            return refuse(late.reason or "window over")
        self.pending.add(device.device_id)
        try:
            return await self._carry_out(life, device, command, refuse)
        finally:
            self.pending.discard(device.device_id)

    async def _carry_out(
        self,
        life: CommandLife,
        device: ControlledDevice,
        command: DeviceCommand,
        refuse: Callable[[str], DeviceOutcome],
    ) -> DeviceOutcome:
        delay = start_delay_s(self.gateway_id, life.command_seq, command.window, self.clock.now())
        # with no start delay, the state to restore later is read with the state the
        # decision needs (one Get less); after a delay it is read again just before the Set
        keep = SAVED[type(command)] if delay <= 0 and MERGED_READ.get(type(command)) else ()
        try:
            decision, values, raw = await self._decide(device, command, keep)
        except DeviceSilent as exc:
            return refuse(f"could not read the device's state: {exc}")
        if decision.outcome == "refused":
            return refuse(decision.reason or "refused")
        self._advance(life, Trigger.IN_ENVELOPE, device_id=device.device_id,
                      decision=decision.outcome, value=decision.value)  # fmt: skip
        if delay > 0:
            await self.clock.sleep(delay)
        try:
            if keep and all(raw.get(e) for e in keep):
                saved = {e: raw[e] for e in keep}
            else:
                saved = await self._read(device, SAVED[type(command)])
            await self._set(device, values)
            readback = await self._readback(device, values)
        except DeviceSilent as exc:
            self._advance(life, Trigger.DEVICE_SILENT, device_id=device.device_id, reason=str(exc))
            return DeviceOutcome(device_id=device.device_id, outcome="not_answering",
                                 reason=str(exc)[:200])  # fmt: skip
        previous = self.active.pop(device.device_id, None)
        if previous is not None:  # a newer command replaces the one in force: keep the
            # state from before the first, so restore goes all the way back
            saved = {**saved, **previous.saved}
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
        self, device: ControlledDevice, command: DeviceCommand, also: tuple[int, ...] = ()
    ) -> tuple[Decision, dict[int, bytes], dict[int, bytes]]:
        """The decision, the values to Set, and what was read (with ``also`` read too)."""
        if isinstance(command, BatteryPower):
            raw = await self._read(device, (BATTERY_SOC_PCT, BATTERY_POWER_W, *also))
            state = BatteryState(float(raw[BATTERY_SOC_PCT][0]), _signed(raw[BATTERY_POWER_W]))
            limits = device.battery or BatteryLimits(rated_power_w=0.0)
            decision = decide_battery(command.power_w, state, limits)
            return decision, storage_values(round(decision.value or 0.0)), raw
        if isinstance(command, EvPower):
            raw = await self._read(device, (EV_CONNECTION, BATTERY_SOC_PCT, BATTERY_POWER_W,
                                            EV_CHARGE_RANGE_W, EV_DISCHARGE_RANGE_W,
                                            *also))  # fmt: skip
            charge, discharge = raw[EV_CHARGE_RANGE_W], raw[EV_DISCHARGE_RANGE_W]
            ev = EvState(
                connected=raw[EV_CONNECTION][0] not in EV_NOT_CONNECTED,
                soc_pct=float(raw[BATTERY_SOC_PCT][0]),
                power_w=_signed(raw[BATTERY_POWER_W]),
                max_charge_w=float(int.from_bytes(charge[4:8])),
                max_discharge_w=float(int.from_bytes(discharge[4:8])),
                min_power_w=float(max(int.from_bytes(charge[0:4]),
                                      int.from_bytes(discharge[0:4]))),
            )  # fmt: skip
            decision = decide_ev(command.power_w, ev, device.ev)
            return decision, storage_values(round(decision.value or 0.0)), raw
        if isinstance(command, WaterHeaterShift):
            raw = await self._read(device, (HOT_WATER_L, *also))
            decision = decide_water_heater(
                command.heating, float(int.from_bytes(raw[HOT_WATER_L])), device.water_heater
            )
            code = HEATING_ON if decision.value else HEATING_OFF
            return decision, {WATER_HEATING: bytes([code])}, raw
        if isinstance(command, AirconPowerLimit):
            # the Appendix lists 0x99 for some classes only, and as optional: ask the unit
            set_map = await self._read(device, (SET_MAP,))
            try:
                settable = decode_property_map(set_map[SET_MAP])
            except PropertyMapError as exc:
                raise DeviceSilent(f"{device.device_id}'s Set map is unreadable: {exc}") from None
            if POWER_LIMIT_W not in settable:
                return Decision.refused(
                    f"{device.device_id} does not offer power limit setting 0x99 (not in its "
                    "Set map); use aircon_offset"
                ), {}, {}
            decision = decide_aircon_power(command.limit_w, device.aircon)
            return decision, {POWER_LIMIT_W: struct.pack(">H", round(decision.value or 0.0))}, {}
        if isinstance(command, AirconOffset):
            raw = await self._read(device, (AIRCON_MODE, AIRCON_SETPOINT_C, *also))
            mode = AIRCON_MODES.get(raw[AIRCON_MODE][0], f"mode 0x{raw[AIRCON_MODE][0]:02x}")
            aircon = AirconState(mode, float(raw[AIRCON_SETPOINT_C][0]))
            decision = decide_aircon(command.offset_c, aircon, device.comfort)
            return decision, {AIRCON_SETPOINT_C: bytes([round(decision.value or 0.0)])}, raw
        raw = await self._read(device, also) if also else {}
        decision = decide_pv(command.limit_pct, device.pv)
        return decision, {PV_LIMIT_PCT: bytes([round(decision.value or 0.0)])}, raw

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

    async def _readback(
        self, device: ControlledDevice, values: Mapping[int, bytes]
    ) -> dict[str, float]:
        if device.kind in ("battery", "ev"):
            raw = await self._read(device, (BATTERY_MODE, BATTERY_CHARGE_W, BATTERY_DISCHARGE_W,
                                            BATTERY_SOC_PCT))  # fmt: skip
            return {
                "mode_code": float(raw[BATTERY_MODE][0]),
                "charge_setting_w": float(int.from_bytes(raw[BATTERY_CHARGE_W])),
                "discharge_setting_w": float(int.from_bytes(raw[BATTERY_DISCHARGE_W])),
                "soc_pct": float(raw[BATTERY_SOC_PCT][0]),
            }
        if device.kind == "aircon" and POWER_LIMIT_W in values:
            raw = await self._read(device, (POWER_LIMIT_W,))
            return {"power_limit_w": float(int.from_bytes(raw[POWER_LIMIT_W]))}
        if device.kind == "aircon":
            raw = await self._read(device, (AIRCON_SETPOINT_C,))
            return {"setpoint_c": float(raw[AIRCON_SETPOINT_C][0])}
        if device.kind == "water_heater":
            raw = await self._read(device, (WATER_HEATING, HOT_WATER_L))
            return {"heating_code": float(raw[WATER_HEATING][0]),
                    "hot_water_l": float(int.from_bytes(raw[HOT_WATER_L]))}  # fmt: skip
        raw = await self._read(device, (PV_LIMIT_PCT,))
        return {"limit_pct": float(raw[PV_LIMIT_PCT][0])}

    # -- the local EMS -------------------------------------------------------------------------
    def ra_controls(self, device_id: str) -> bool:
        """An RA command is in force on the device, or being carried out."""
        return device_id in self.active or device_id in self.pending

    async def apply_local(self, device_id: str, power_w: float, reason: str) -> DeviceOutcome:
        """Set a battery to ``power_w`` for the local EMS, through the same allow-list and
        safety envelope as an RA command; never while an RA command is in force (refused).
        Audited as kind ``command``, subject ``local ems``."""
        device = self.devices.get(device_id)

        def outcome(result: DeviceOutcome, **details: object) -> DeviceOutcome:
            self.audit.append(AuditKind.COMMAND, self.gateway_id, "local ems", {
                "action": result.outcome, "device_id": device_id, "power_w": power_w,
                "why": reason, "reason": result.reason, "readback": result.readback or None,
                **details,
            })  # fmt: skip
            return result

        if device is None or device.kind != "battery":
            return outcome(DeviceOutcome(device_id=device_id[:64], outcome="refused",
                                         reason="not an allow-listed battery of this site"))
        if self.ra_controls(device_id):
            return outcome(DeviceOutcome(device_id=device_id, outcome="refused",
                                         reason="an RA command is in force"))  # fmt: skip
        try:
            raw = await self._read(device, (BATTERY_SOC_PCT, BATTERY_POWER_W))
            state = BatteryState(float(raw[BATTERY_SOC_PCT][0]), _signed(raw[BATTERY_POWER_W]))
            decision = decide_battery(power_w, state, device.battery or BatteryLimits(0.0))
            if decision.outcome == "refused":
                return outcome(DeviceOutcome(device_id=device_id, outcome="refused",
                                             reason=decision.reason))  # fmt: skip
            values = storage_values(round(decision.value or 0.0))
            if self.ra_controls(device_id):  # an RA command arrived while we read: it wins
                return outcome(DeviceOutcome(device_id=device_id, outcome="refused",
                                             reason="an RA command is in force"))  # fmt: skip
            await self._set(device, values)
            readback = await self._readback(device, values)
        except DeviceSilent as exc:
            return outcome(DeviceOutcome(device_id=device_id, outcome="not_answering",
                                         reason=str(exc)[:200]))  # fmt: skip
        return outcome(DeviceOutcome(
            device_id=device_id, outcome=decision.outcome, reason=decision.reason,
            readback=readback, measured_at=self.clock.now(),
        ))  # fmt: skip

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


def storage_values(power_w: int) -> dict[int, bytes]:
    """The Set of a battery or EV charger to a power: + charge (0xEB, 0xDA = 0x42),
    − discharge (0xEC, 0xDA = 0x43), 0 standby (0xDA = 0x44)."""
    if power_w > 0:
        return {BATTERY_CHARGE_W: struct.pack(">I", power_w), BATTERY_MODE: bytes([CHARGING])}
    if power_w < 0:
        return {BATTERY_DISCHARGE_W: struct.pack(">I", -power_w),
                BATTERY_MODE: bytes([DISCHARGING])}  # fmt: skip
    return {BATTERY_MODE: bytes([STANDBY])}


def _signed(edt: bytes) -> float:
    return float(int.from_bytes(edt, "big", signed=True))


def _claimed_sequence(wire: bytes) -> int:
    """The sequence a rejected envelope claims (for the ack), 1 if it has none usable."""
    try:
        value = json.loads(wire)["envelope"]["sequence"]
    except (ValueError, KeyError, TypeError):
        return 1
    return value if isinstance(value, int) and 1 <= value < 2**63 else 1
