"""ECHONET Lite device objects over the town's fleets.

Each object is one unit of a fleet (``fleet``, ``index``): a Get reads the model's state
right now, a Set writes the fleet's arrays (so the next step of the physics acts on it),
and :meth:`FleetObject.refresh` pushes the announced properties after each step so the
node sends an INF when one changes (Appendix: status change announcement).  EDT layouts
follow the Appendix for each class (sizes, signedness, units noted beside each EPC).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import numpy as np

from erab.devices.aircon import (
    MODE_AIR_CIRCULATION,
    MODE_AUTO,
    MODE_COOLING,
    MODE_DEHUMIDIFICATION,
    MODE_HEATING,
)
from erab.devices.battery import BATTERY_MODES, MODE_RAPID_CHARGING, MODE_STANDBY, BatteryFleet
from erab.devices.ev import EV_MODES
from erab.devices.fuelcell import STATUS_STOPPED
from erab.devices.town import DeviceRef, Town
from erab.devices.waterheater import HEATING_AUTO, HEATING_MANUAL_OFF, HEATING_MANUAL_ON
from erab.echonet.classdb import get_class
from erab.echonet.frame import EOJ
from erab.echonet.node import DeviceObject, SetRejected

Getter = Callable[[], bytes]
Setter = Callable[[bytes], None]

ON = b"\x30"
OFF = b"\x31"
AC_MODES = frozenset(
    {MODE_AUTO, MODE_COOLING, MODE_HEATING, MODE_DEHUMIDIFICATION, MODE_AIR_CIRCULATION}
)


EV_MIN_POWER_W = 500.0
"""Smallest charging / discharging power of the emulated CHAdeMO V2H charger."""
EV_PACK_V = 360.0
"""Nominal DC voltage of the emulated cars' packs (for 0xCA / 0xCB currents)."""


def u8(v: float) -> bytes:
    return bytes((int(np.clip(round(float(v)), 0, 0xFD)),))


def s8(v: float) -> bytes:
    return struct.pack(">b", int(np.clip(round(float(v)), -127, 125)))


def u16(v: float) -> bytes:
    return struct.pack(">H", int(np.clip(round(float(v)), 0, 0xFFFD)))


def u32(v: float) -> bytes:
    return struct.pack(">I", int(np.clip(round(float(v)), 0, 999_999_999)))


def s32(v: float) -> bytes:
    return struct.pack(">i", int(np.clip(round(float(v)), -999_999_999, 999_999_999)))


def kwh_milli(energy_wh: float) -> bytes:
    """Cumulative energy in 0.001 kWh units, 4 bytes (wraps at 999,999.999 kWh)."""
    return struct.pack(">I", round(float(energy_wh)) % 1_000_000_000)


def onoff(flag: object) -> bytes:
    return ON if bool(flag) else OFF


class FleetObject(DeviceObject):
    """A device object whose properties are live views of ``fleet[index]``."""

    def __init__(
        self,
        eoj: EOJ,
        fleet: Any,
        index: int,
        getters: dict[int, Getter],
        setters: dict[int, Setter],
        fixed: dict[int, bytes] | None = None,
    ) -> None:
        self.fleet = fleet
        self.index = index
        self._getters = getters
        self._setters = setters
        values = dict(fixed or {})
        for epc, get in getters.items():
            values[epc] = get()
        super().__init__(eoj, values, settable=None)
        self._announced_live = tuple(e for e in getters if self.is_announced(e))

    def is_settable(self, epc: int) -> bool:
        # Model-backed properties are set through their setters; other properties the
        # class allows to be set (e.g. air flow) are simply stored.
        if epc in self._setters:
            return True
        return epc not in self._getters and super().is_settable(epc)

    def on_get(self, epc: int) -> bytes | None:
        get = self._getters.get(epc)
        return None if get is None else get()

    def on_set(self, epc: int, edt: bytes) -> None:
        setter = self._setters.get(epc)
        if setter is not None:
            setter(edt)

    def refresh(self) -> None:
        """Push announced live properties; changed ones go out as INF."""
        for epc in self._announced_live:
            self.update(epc, self._getters[epc]())


def _state(edt: bytes, allowed: frozenset[int], what: str) -> int:
    if len(edt) != 1 or edt[0] not in allowed:
        raise SetRejected(
            f"{what}: 0x{edt.hex()} not one of {', '.join(f'0x{a:02X}' for a in sorted(allowed))}"
        )
    return edt[0]


def air_conditioner(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    """Home (0x0130) or commercial indoor unit (0x0156) air conditioner."""
    fleet = town.home_ac if ref.kind == "home_ac" else town.store_ac
    sites = town.home_ac_site if ref.kind == "home_ac" else town.store_ac_site
    i = ref.index
    site = int(sites[i])

    def set_on(edt: bytes) -> None:
        fleet.on[i] = _state(edt, frozenset({0x30, 0x31}), "operation status") == 0x30

    def set_mode(edt: bytes) -> None:
        fleet.mode[i] = _state(edt, AC_MODES, "operation mode")

    def set_temp(edt: bytes) -> None:
        if len(edt) != 1 or edt[0] > 50:
            raise SetRejected("set temperature must be 0-50 °C")
        fleet.set_temp_c[i] = float(edt[0])

    getters: dict[int, Getter] = {
        0x80: lambda: onoff(fleet.on[i]),
        0xB0: lambda: bytes((int(fleet.mode[i]),)),
        0xB3: lambda: u8(fleet.set_temp_c[i]),
        0xBB: lambda: s8(fleet.room_temp_c[i]),
        0x84: lambda: u16(fleet.power_w[i]),  # W
        0x85: lambda: kwh_milli(fleet.energy_wh[i]),  # 0.001 kWh
    }
    fixed: dict[int, bytes] = {}
    if ref.kind == "home_ac":
        getters[0xBE] = lambda: s8(town.site_temperature_c[site])
        code = 0x0130
    else:
        getters[0xAC] = lambda: b"\x41" if abs(fleet.heat_removed_w[i]) > 1 else b"\x42"
        getters[0xAE] = lambda: b"\x42" if fleet.heat_removed_w[i] >= 0 else b"\x43"
        fixed[0xCA] = b"\x00"
        code = 0x0156
    setters: dict[int, Setter] = {0x80: set_on, 0xB0: set_mode, 0xB3: set_temp}
    return FleetObject(EOJ.of(code << 8 | instance), fleet, i, getters, setters, fixed)


def _storage_properties(b: BatteryFleet, i: int) -> tuple[dict[int, Getter], dict[int, Setter]]:
    """What a storage battery (0x027D) and an EV's battery (0x027E) serve alike: power,
    stored energy, SOC, cumulative energy and the power settings 0xEB / 0xEC."""

    def set_power(arr: np.ndarray, limit: np.ndarray, what: str) -> Setter:
        def apply(edt: bytes) -> None:
            (value,) = struct.unpack(">I", edt)
            if value > limit[i]:
                raise SetRejected(f"{what} {value} W is over the rating {limit[i]:.0f} W")
            arr[i] = float(value)

        return apply

    getters: dict[int, Getter] = {
        0xD3: lambda: s32(b.power_w[i]),  # W, + charging / - discharging
        0xE2: lambda: u32(b.stored_wh[i]),  # Wh
        0xE4: lambda: u8(b.soc_pct[i]),  # %
        0xD6: lambda: kwh_milli(b.discharged_wh[i]),
        0xD8: lambda: kwh_milli(b.charged_wh[i]),
        0xEB: lambda: u32(b.charge_setting_w[i]),
        0xEC: lambda: u32(b.discharge_setting_w[i]),
    }
    setters: dict[int, Setter] = {
        0xEB: set_power(b.charge_setting_w, b.max_charge_w, "charging power"),
        0xEC: set_power(b.discharge_setting_w, b.max_discharge_w, "discharging power"),
    }
    return getters, setters


def storage_battery(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    b = town.battery
    i = ref.index

    def set_mode(edt: bytes) -> None:
        b.mode[i] = _state(edt, BATTERY_MODES, "operation mode (0xDA)")
        b.amount_done_wh[i] = 0.0  # a charge / discharge amount counts from here

    def set_amount(arr: np.ndarray) -> Setter:
        def apply(edt: bytes) -> None:
            (arr[i],) = struct.unpack(">I", edt)  # 0 = no setting
            b.amount_done_wh[i] = 0.0

        return apply

    def set_limit(which: str) -> Setter:
        def apply(edt: bytes) -> None:
            if len(edt) != 1 or edt[0] > 100:
                raise SetRejected(f"{which} limit must be 0-100 %")
            try:
                b.set_limits(i, **{f"{which}_pct": float(edt[0])})
            except ValueError as exc:
                raise SetRejected(str(exc)) from exc

        return apply

    def set_on(edt: bytes) -> None:
        if _state(edt, frozenset({0x30, 0x31}), "operation status") == 0x31:
            b.mode[i] = MODE_STANDBY

    getters, setters = _storage_properties(b, i)
    getters |= {
        0x80: lambda: ON,
        0xDA: lambda: bytes((int(b.mode[i]),)),
        0xCF: lambda: bytes((int(b.working[i]),)),
        # AC side (η each way): 0xA0/0xA1 the whole cells, empty to full and back; 0xA2/0xA3
        # "in normal times", between the limits 0xA7 and 0xA6; 0xA4/0xA5 from here.
        0xA0: lambda: u32(b.capacity_wh[i] / b.efficiency[i]),
        0xA1: lambda: u32(b.capacity_wh[i] * b.efficiency[i]),
        0xA2: lambda: u32(b.span_wh()[i] / b.efficiency[i]),
        0xA3: lambda: u32(b.span_wh()[i] * b.efficiency[i]),
        0xA4: lambda: u32(b.chargeable_wh()[i]),
        0xA5: lambda: u32(b.dischargeable_wh()[i]),
        0xA6: lambda: u8(b.upper_limit_pct[i]),  # %
        0xA7: lambda: u8(b.lower_limit_pct[i]),  # %, the reserve discharging stops at
        0xAA: lambda: u32(b.charge_amount_wh[i]),  # Wh, 0 = no setting
        0xAB: lambda: u32(b.discharge_amount_wh[i]),
        0xA8: lambda: kwh_milli(b.charged_wh[i]),
        0xA9: lambda: kwh_milli(b.discharged_wh[i]),
    }
    fixed = {
        0xD0: u32(b.capacity_wh[i]),
        0xE6: b"\x04",  # lithium-ion
        0xC8: u32(100) + u32(b.max_charge_w[i]),
        0xC9: u32(100) + u32(b.max_discharge_w[i]),
        0xC1: b"\x03",  # charging method: designated power (0xEB)
        0xC2: b"\x03",  # discharging method: designated power (0xEC)
    }
    setters |= {
        0x80: set_on,
        0xDA: set_mode,
        0xA6: set_limit("upper"),
        0xA7: set_limit("lower"),
        0xAA: set_amount(b.charge_amount_wh),
        0xAB: set_amount(b.discharge_amount_wh),
    }
    return FleetObject(EOJ(0x02, 0x7D, instance), b, i, getters, setters, fixed)


def pv_system(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    p = town.pv
    i = ref.index

    def set_pct(edt: bytes) -> None:
        if len(edt) != 1 or edt[0] > 100:
            raise SetRejected("output power control 1 must be 0-100 %")
        p.curtail_pct[i] = float(edt[0])

    def set_w(edt: bytes) -> None:
        if len(edt) != 2:
            raise SetRejected("output power control 2 needs 2 bytes (W)")
        p.curtail_w[i] = float(struct.unpack(">H", edt)[0])

    def restrained() -> bytes:
        limited = (
            p.output_limit_w()[i] < p.inverter_limit_w[i]
            and p.power_w[i] >= p.output_limit_w()[i] - 1
        )
        return b"\x41" if limited else b"\x44"

    getters: dict[int, Getter] = {
        0x80: lambda: ON,
        0xE0: lambda: u16(p.power_w[i]),  # W
        0xE1: lambda: kwh_milli(p.energy_wh[i]),  # 0.001 kWh
        0xA0: lambda: u8(p.curtail_pct[i]),
        0xA1: lambda: u16(min(p.curtail_w[i], 0xFFFD)),
        0xD1: restrained,
    }
    fixed = {0xE8: u16(p.rated_w[i])}
    return FleetObject(
        EOJ(0x02, 0x79, instance), p, i, getters, {0xA0: set_pct, 0xA1: set_w}, fixed
    )


def ev_charger(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    ev = town.ev
    b = ev.battery
    i = ref.index

    def set_mode(edt: bytes) -> None:
        mode = _state(edt, EV_MODES, "operation mode (0xDA)")
        ev.mode[i] = 0x42 if mode == MODE_RAPID_CHARGING else mode

    def working() -> bytes:
        if not ev.connected[i]:
            return b"\x47"  # idle
        return bytes((int(b.working[i]),))

    getters, setters = _storage_properties(b, i)
    getters |= {
        0x80: lambda: ON,
        0xDA: lambda: bytes((int(ev.mode[i]),)),
        0xE1: working,
        0xC7: lambda: b"\x43" if ev.connected[i] else b"\x30",
        0xC2: lambda: u32(b.dischargeable_wh()[i] if ev.connected[i] else 0),
        0xC4: lambda: u8(
            100 * b.dischargeable_wh()[i] / b.capacity_wh[i] if ev.connected[i] else 0
        ),  # % of capacity that can still be discharged
        0xCF: lambda: u32(b.chargeable_wh()[i] if ev.connected[i] else 0),
    }
    fixed = {
        0xC0: u32(b.capacity_wh[i]),
        0xCE: u32(b.capacity_wh[i]),
        0xC5: u32(b.max_charge_w[i]),
        0xC6: u32(b.max_discharge_w[i]),
        0xCC: b"\x22",  # DC type AA, charge and discharge (CHAdeMO V2H)
        0xD0: u32(b.capacity_wh[i]),  # used (usable) capacity, Wh
        0xC8: u32(EV_MIN_POWER_W) + u32(b.max_charge_w[i]),
        0xC9: u32(EV_MIN_POWER_W) + u32(b.max_discharge_w[i]),
        # DC currents at the pack's nominal voltage, 0.1 A
        0xCA: u16(EV_MIN_POWER_W / EV_PACK_V * 10) + u16(b.max_charge_w[i] / EV_PACK_V * 10),
        0xCB: u16(EV_MIN_POWER_W / EV_PACK_V * 10) + u16(b.max_discharge_w[i] / EV_PACK_V * 10),
        0xDC: b"\x03",  # charging method: designated power (0xEB)
        0xDD: b"\x03",  # discharging method: designated power (0xEC)
        0xE5: b"\x42",  # maintenance: not necessary
    }
    setters[0xDA] = set_mode
    return FleetObject(EOJ(0x02, 0x7E, instance), ev, i, getters, setters, fixed)


def water_heater(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    w = town.water_heater
    i = ref.index

    def set_mode(edt: bytes) -> None:
        w.mode[i] = _state(
            edt,
            frozenset({HEATING_AUTO, HEATING_MANUAL_ON, HEATING_MANUAL_OFF}),
            "automatic water heating setting (0xB0)",
        )

    getters: dict[int, Getter] = {
        0x80: lambda: ON,
        0xB0: lambda: bytes((int(w.mode[i]),)),
        0xB2: lambda: b"\x41" if w.heating[i] else b"\x42",
        0xC3: lambda: b"\x42",
        0xE1: lambda: u16(w.remaining_hot_water_l()[i]),  # L
        0x84: lambda: u16(w.power_w[i]),
        0x85: lambda: kwh_milli(w.energy_wh[i]),
    }
    fixed = {
        0xE2: u16(w.tank_l[i]),
        0xB3: u8(w.tank_temp_c),
        0xEA: b"\x42",  # bath: no operation (the model has no bath filling)
    }
    return FleetObject(EOJ(0x02, 0x6B, instance), w, i, getters, {0xB0: set_mode}, fixed)


def fuel_cell(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    f = town.fuel_cell
    i = ref.index

    def set_generation(edt: bytes) -> None:
        f.switch(i, _state(edt, frozenset({0x41, 0x42}), "power generation setting") == 0x41)

    getters: dict[int, Getter] = {
        0x80: lambda: ON,
        0xC4: lambda: u16(f.power_w[i]),  # W
        0xC5: lambda: kwh_milli(f.energy_wh[i]),  # 0.001 kWh
        0xC7: lambda: u16(f.gas_m3_per_h()[i] * 1000),  # 0.001 m3/h
        0xC8: lambda: u32(f.gas_m3[i] * 1000),  # 0.001 m3
        0xCB: lambda: bytes((int(f.status[i]),)),
        0xCA: lambda: b"\x42" if f.status[i] == STATUS_STOPPED else b"\x41",
    }
    fixed = {0xC2: u16(f.rated_w[i]), 0xD2: b"\x42"}  # load following
    return FleetObject(EOJ(0x02, 0x7C, instance), f, i, getters, {0xCA: set_generation}, fixed)


def lighting(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    lf = town.lighting
    i = ref.index

    def set_on(edt: bytes) -> None:
        lf.switch(i, _state(edt, frozenset({0x30, 0x31}), "operation status") == 0x30)

    def set_level(edt: bytes) -> None:
        if len(edt) != 1 or edt[0] > 100:
            raise SetRejected("light level must be 0-100 %")
        lf.level_pct[i] = float(edt[0])

    getters: dict[int, Getter] = {
        0x80: lambda: onoff(lf.on[i]),
        0xB0: lambda: u8(lf.level_pct[i]),
        0x84: lambda: u16(lf.power_w[i]),
        0x85: lambda: kwh_milli(lf.energy_wh[i]),
    }
    return FleetObject(
        EOJ(0x02, 0x90, instance), lf, i, getters, {0x80: set_on, 0xB0: set_level}, {0xB6: b"\x42"}
    )


def showcase(town: Town, ref: DeviceRef, instance: int) -> FleetObject:
    s = town.showcase
    i = ref.index

    def set_target(edt: bytes) -> None:
        if len(edt) != 1:
            raise SetRejected("target inside temperature needs 1 byte (°C, signed)")
        value = struct.unpack(">b", edt)[0]
        if not -30 <= value <= 15:
            raise SetRejected(f"target inside temperature {value} °C outside -30..15 °C")
        s.target_temp_c[i] = float(value)

    getters: dict[int, Getter] = {
        0x80: lambda: ON,
        0xB0: lambda: b"\x41",  # cooling
        0xE0: lambda: onoff(s.lighting_on[i]),
        0xE3: lambda: s8(s.inside_temp_c[i]),
        0xE7: lambda: onoff(s.heater_on[i]),
        0xEF: lambda: s8(s.target_temp_c[i]),
        0x84: lambda: u16(s.power_w[i]),
        0x85: lambda: kwh_milli(s.energy_wh[i]),
    }
    fixed = {
        0xD0: b"\x41",
        0xD1: b"\x41",
        0xD2: b"\x41",
        0xD3: b"\x41",
        0xD4: b"\x41",
        0xE4: u16(s.rated_w[i]),
        0xCA: b"\x00",
    }
    return FleetObject(EOJ(0x03, 0xCE, instance), s, i, getters, {0xEF: set_target}, fixed)


def _ac_state(fleet: Any) -> list[Any]:
    return [fleet.on, fleet.mode, fleet.set_temp_c, np.sign(np.round(fleet.heat_removed_w))]


ANNOUNCE_STATE: dict[str, Callable[[Town], list[Any]]] = {
    "home_ac": lambda t: _ac_state(t.home_ac),
    "store_ac": lambda t: _ac_state(t.store_ac),
    "battery": lambda t: [t.battery.mode, t.battery.working],
    "pv": lambda t: [],
    "ev": lambda t: [t.ev.mode, t.ev.connected, t.ev.battery.working],
    "water_heater": lambda t: [t.water_heater.mode, t.water_heater.heating],
    "fuel_cell": lambda t: [t.fuel_cell.status],
    "lighting": lambda t: [t.lighting.on, t.lighting.level_pct],
    "showcase": lambda t: [t.showcase.lighting_on, t.showcase.heater_on],
}
"""Per kind of device, the fleet arrays its announced properties derive from: only units
whose entries changed in a step need their announced properties pushed (one vectorised
comparison per kind instead of a call per object)."""


PERIODIC_EPCS: dict[int, tuple[int, ...]] = {
    0x0130: (0x84,),  # air conditioner: instantaneous power consumption, W
    0x0156: (0x84,),
    0x027D: (0xD3, 0xE4),  # battery: charging (+) / discharging (-) power W, SOC %
    0x0279: (0xE0,),  # PV: instantaneous generation, W
    0x027E: (0xD3, 0xE4),  # EV charger/discharger: power W, car battery SOC %
    0x026B: (0x84,),
    0x027C: (0xC4,),  # fuel cell: instantaneous generation, W
    0x0290: (0x84,),
    0x03CE: (0x84,),
    0x0288: (0xE7,),  # smart meter: instantaneous power, W (import +, export -)
}
"""Per class, what an object announces every announcement cycle (its power, and a
battery's state of charge), as real devices notify their values periodically besides on a
status change.  Only EPCs the class lets be announced and the object lets be read go out
(:func:`periodic_epcs`)."""


def periodic_epcs(obj: DeviceObject) -> tuple[int, ...]:
    """The EPCs of :data:`PERIODIC_EPCS` that ``obj`` serves (in its Get map) and its class
    allows in an INF (announcement rule other than "not applicable" in the class
    database); empty for classes not listed."""
    wanted = PERIODIC_EPCS.get(obj.eoj.class_code, ())
    try:
        rules = get_class(obj.eoj.class_code).properties
    except KeyError:
        return ()
    return tuple(
        epc
        for epc in wanted
        if obj.is_gettable(epc) and epc in rules and rules[epc].inf != "notApplicable"
    )


BUILDERS: dict[str, Callable[[Town, DeviceRef, int], FleetObject]] = {
    "home_ac": air_conditioner,
    "store_ac": air_conditioner,
    "battery": storage_battery,
    "pv": pv_system,
    "ev": ev_charger,
    "water_heater": water_heater,
    "fuel_cell": fuel_cell,
    "lighting": lighting,
    "showcase": showcase,
}


def site_objects(town: Town, site: int) -> list[FleetObject]:
    """The device objects of one site, instance codes numbered per class from 1."""
    out: list[FleetObject] = []
    seen: dict[int, int] = {}
    for ref in town.devices_of(site):
        instance = seen.get(ref.class_code, 0) + 1
        seen[ref.class_code] = instance
        out.append(BUILDERS[ref.kind](town, ref, instance))
    return out
