"""The site config: one TOML file per gateway (docs/gateway.md, "Site config").

Relative paths in the file are taken from the file's own folder.  Every problem is a
:class:`SiteConfigError` naming the file and the key, so the command line can print it as
one line.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erab.echonet.frame import EOJ
from erab.gateway.ems import EmsPolicy
from erab.gateway.envelope import (
    AirconLimits,
    BatteryLimits,
    ComfortBand,
    EvLimits,
    PvLimits,
    WaterHeaterLimits,
)
from erab.gateway.executor import DeviceKind
from erab.meter.routeb import RouteBCredentials

KINDS: dict[int, DeviceKind] = {
    0x027D: "battery", 0x0130: "aircon", 0x0279: "pv", 0x026B: "water_heater", 0x027E: "ev",
}  # fmt: skip


class SiteConfigError(ValueError):
    """The site config is missing, unreadable or wrong; the message says where."""


@dataclass(frozen=True)
class AllowedDevice:
    """An installer-confirmed device: its id on the bus, and where to find it."""

    device_id: str
    node_id: str  # EPC 0x83 in hex
    eoj: EOJ
    rated_power_w: float | None = None  # batteries: the safety envelope's rating


@dataclass(frozen=True)
class Identity:
    """The gateway's files from ``erab pki enrol --out-dir DIR``."""

    cert: Path
    key: Path
    ca_bundle: Path
    command_key: Path

    def missing(self) -> list[Path]:
        return [p for p in (self.cert, self.key, self.ca_bundle, self.command_key)
                if not p.is_file()]  # fmt: skip


@dataclass(frozen=True)
class RouteBMeterConfig:
    """``[meter]``: the site's smart meter by route B (Wi-SUN dongle on a serial port)."""

    port: str  # e.g. /dev/ttyUSB0, or the pty of erab's dongle emulator
    route_b_id: str  # the 32-character route B ID from the utility
    password: str  # the 12-character route B password
    meter_id: str = "meter"  # its id on the bus
    interval_s: float | None = None  # default: poll_interval_s
    property_timeout_s: float = 20.0  # the AIF spec's wait per property

    def __repr__(self) -> str:  # never print the password
        return f"RouteBMeterConfig(port={self.port!r}, meter_id={self.meter_id!r})"


@dataclass(frozen=True)
class SiteConfig:
    gateway_id: str
    site_id: str
    broker_host: str
    broker_port: int
    identity: Identity
    hosts: tuple[str, ...] = ()
    multicast: bool = True
    bind: str = "0.0.0.0"  # the controller's own address on the LAN
    poll_interval_s: float = 60.0
    heartbeat_interval_s: float = 60.0
    discover_every_s: float = 3600.0
    outbox_path: Path | None = None  # default: HOME/outbox.sqlite
    outbox_max_messages: int = 10_000
    # False: the outbox and the command verifier's state survive a crash of the process but
    # not a power cut (no fsync per message; for emulated fleets)
    outbox_durable: bool = True
    uplink_grace_s: float = 300.0
    reconnect_max_s: float = 60.0
    battery: BatteryLimits = field(default_factory=lambda: BatteryLimits(rated_power_w=3000.0))
    comfort: ComfortBand = field(default_factory=ComfortBand)
    pv: PvLimits = field(default_factory=PvLimits)
    aircon: AirconLimits = field(default_factory=AirconLimits)
    water_heater: WaterHeaterLimits = field(default_factory=WaterHeaterLimits)
    ev: EvLimits = field(default_factory=EvLimits)
    devices: tuple[AllowedDevice, ...] = ()
    meter: RouteBMeterConfig | None = None  # None: the meter object 0x0288 on the LAN
    ems: EmsPolicy = field(default_factory=EmsPolicy)  # off unless [ems] turns it on


def _get(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None) -> Any:  # fmt: skip
    value = table.get(key, default)
    if value is None:
        if default is None:
            raise SiteConfigError(f"{where}: {key} is required")
        return default
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise SiteConfigError(f"{where}: {key} must be a number, not {value!r}")
    if not isinstance(value, kind):
        raise SiteConfigError(f"{where}: {key} has the wrong type ({value!r})")
    return value


def _positive(value: float, key: str, where: str) -> float:
    if not value > 0:
        raise SiteConfigError(f"{where}: {key} must be more than 0, got {value}")
    return float(value)


def load_site_config(path: Path) -> SiteConfig:
    """Read and check ``path``."""
    if not path.is_file():
        raise SiteConfigError(f"site config {path} not found; write one (docs/gateway.md)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SiteConfigError(f"site config {path} is not valid TOML: {exc}") from exc
    where = str(path)
    base = path.parent
    num = (int, float)

    def resolve(text: str) -> Path:
        p = Path(text).expanduser()
        return p if p.is_absolute() else base / p

    gateway_id = _get(data, "gateway_id", str, where)
    site_id = _get(data, "site_id", str, where)
    broker = _get(data, "broker", dict, where, {})
    lan = _get(data, "lan", dict, where, {})
    files = _get(data, "identity", dict, where, {})
    outbox = _get(data, "outbox", dict, where, {})
    envelope = _get(data, "envelope", dict, where, {})

    folder = files.get("dir")
    def identity_file(key: str, name: str) -> Path:
        if key in files:
            return resolve(_get(files, key, str, f"{where} [identity]"))
        if folder is None:
            raise SiteConfigError(f"{where} [identity]: give dir (erab pki enrol's --out-dir) "
                                  f"or {key}")  # fmt: skip
        return resolve(str(folder)) / name

    identity = Identity(
        cert=identity_file("cert", f"{gateway_id}.pem"),
        key=identity_file("key", f"{gateway_id}.key.pem"),
        ca_bundle=identity_file("ca_bundle", "ca-bundle.pem"),
        command_key=identity_file("command_key", "ra-command.pub"),
    )
    hosts = _get(lan, "hosts", list, f"{where} [lan]", [])
    if not all(isinstance(h, str) for h in hosts):
        raise SiteConfigError(f"{where} [lan]: hosts must be a list of addresses or subnets")
    multicast = _get(lan, "multicast", bool, f"{where} [lan]", True)
    if not hosts and not multicast:
        raise SiteConfigError(f"{where} [lan]: with multicast = false, give hosts to probe")

    devices = []
    for i, entry in enumerate(_get(data, "device", list, where, [])):
        w = f"{where} [[device]] #{i + 1}"
        if not isinstance(entry, dict):
            raise SiteConfigError(f"{w}: must be a table")
        try:
            eoj = EOJ.of(_get(entry, "eoj", str, w))
        except ValueError as exc:
            raise SiteConfigError(f"{w}: eoj: {exc}") from exc
        rated = entry.get("rated_power_w")
        devices.append(AllowedDevice(
            device_id=_get(entry, "device_id", str, w),
            node_id=_get(entry, "node_id", str, w).lower(),
            eoj=eoj,
            rated_power_w=None if rated is None else float(_get(entry, "rated_power_w", num, w)),
        ))  # fmt: skip

    ew = f"{where} [envelope]"
    outbox_path = outbox.get("path")

    meter = None
    if "meter" in data:
        mw = f"{where} [meter]"
        table = _get(data, "meter", dict, where)
        route_b_id = _get(table, "route_b_id", str, mw)
        password = _get(table, "password", str, mw)
        try:
            RouteBCredentials(route_b_id, password)
        except ValueError as exc:
            raise SiteConfigError(f"{mw}: {exc}") from None
        interval = table.get("interval_s")
        meter = RouteBMeterConfig(
            port=_get(table, "port", str, mw),
            route_b_id=route_b_id,
            password=password,
            meter_id=_get(table, "meter_id", str, mw, "meter"),
            interval_s=None if interval is None
            else _positive(_get(table, "interval_s", num, mw), "interval_s", mw),
            property_timeout_s=_positive(_get(table, "property_timeout_s", num, mw, 20.0),
                                         "property_timeout_s", mw),
        )  # fmt: skip
    emw = f"{where} [ems]"
    ems_table = _get(data, "ems", dict, where, {})
    peak_kw = ems_table.get("peak_cut_kw")
    ems = EmsPolicy(
        self_consumption=_get(ems_table, "self_consumption", bool, emw, False),
        peak_cut_w=None if peak_kw is None
        else 1000.0 * _positive(_get(ems_table, "peak_cut_kw", num, emw), "peak_cut_kw", emw),
        deadband_w=_positive(_get(ems_table, "deadband_w", num, emw, 100.0), "deadband_w", emw),
        battery_id=_get(ems_table, "battery", str, emw, "") or None,
    )  # fmt: skip
    if ems.battery_id is not None and ems.battery_id not in {d.device_id for d in devices}:
        raise SiteConfigError(f"{emw}: battery {ems.battery_id!r} is not a [[device]] of the site")
    return SiteConfig(
        gateway_id=gateway_id,
        site_id=site_id,
        broker_host=_get(broker, "host", str, f"{where} [broker]"),
        broker_port=int(_get(broker, "port", int, f"{where} [broker]", 8883)),
        identity=identity,
        hosts=tuple(hosts),
        multicast=multicast,
        bind=_get(lan, "bind", str, f"{where} [lan]", "0.0.0.0"),
        poll_interval_s=_positive(_get(data, "poll_interval_s", num, where, 60.0),
                                  "poll_interval_s", where),
        heartbeat_interval_s=_positive(_get(data, "heartbeat_interval_s", num, where, 60.0),
                                       "heartbeat_interval_s", where),
        discover_every_s=_positive(_get(lan, "discover_every_s", num, where, 3600.0),
                                   "discover_every_s", where),
        outbox_path=None if outbox_path is None else resolve(str(outbox_path)),
        outbox_max_messages=int(_positive(_get(outbox, "max_messages", int, where, 10_000),
                                          "max_messages", where)),
        outbox_durable=_get(outbox, "durable", bool, f"{where} [outbox]", True),
        uplink_grace_s=_positive(_get(data, "uplink_grace_s", num, where, 300.0),
                                 "uplink_grace_s", where),
        reconnect_max_s=_positive(_get(broker, "reconnect_max_s", num, where, 60.0),
                                  "reconnect_max_s", where),
        battery=BatteryLimits(
            rated_power_w=float(_get(envelope, "battery_rated_power_w", num, ew, 3000.0)),
            soc_reserve_pct=float(_get(envelope, "soc_reserve_pct", num, ew, 20.0)),
            soc_max_pct=float(_get(envelope, "soc_max_pct", num, ew, 95.0)),
        ),
        comfort=ComfortBand(
            max_offset_c=float(_get(envelope, "max_offset_c", num, ew, 3.0)),
            cooling_max_c=float(_get(envelope, "cooling_max_c", num, ew, 28.0)),
            heating_min_c=float(_get(envelope, "heating_min_c", num, ew, 18.0)),
        ),
        pv=PvLimits(min_limit_pct=float(_get(envelope, "min_limit_pct", num, ew, 0.0))),
        aircon=AirconLimits(
            min_power_w=float(_get(envelope, "aircon_min_power_w", num, ew, 200.0))),
        water_heater=WaterHeaterLimits(
            min_hot_water_l=float(_get(envelope, "min_hot_water_l", num, ew, 100.0))),
        ev=EvLimits(
            soc_reserve_pct=float(_get(envelope, "ev_soc_reserve_pct", num, ew, 30.0)),
            soc_max_pct=float(_get(envelope, "ev_soc_max_pct", num, ew, 100.0)),
            rated_power_w=None if envelope.get("ev_rated_power_w") is None
            else float(_get(envelope, "ev_rated_power_w", num, ew)),
        ),
        devices=tuple(devices),
        meter=meter,
        ems=ems,
    )
