"""Sites and scenarios: which equipment each home and store has.

A scenario file (JSON, or TOML by its ``.toml`` suffix) describes a town::

    {
      "seed": 7,
      "latitude_deg": 35.68, "longitude_deg": 139.77,
      "homes":  {"count": 20, "pv": 0.4, "battery": 0.3, "ev": 0.2,
                 "water_heater": 0.5, "fuel_cell": 0.1, "aircons": 1, "lighting": 1.0},
      "stores": {"count": 2, "pv": 0.5, "battery": 1.0, "showcases": 4,
                 "store_type": "convenience", "open_hour": 0, "close_hour": 24},
      "sites":  [{"name": "demo", "kind": "home", "pv_w": 5000, "battery_wh": 12000,
                  "ev": true, "battery_export_allowed": false}]
    }

``store_type`` is ``convenience`` (the default: 24 hours, about 165 m², 144,000 kWh a year)
or ``supermarket`` (1,500 m², 09:00-22:00); see :mod:`erab.devices.store`.

Under ``homes`` and ``stores``, a number between 0 and 1 for a piece of equipment is the
share of sites that have it (drawn from the seed); ``aircons`` and ``showcases`` are counts
per site.  ``sites`` adds sites spelt out field by field (see :class:`SiteSpec`).  Every
key is optional; unknown keys are refused with the allowed ones named.

``battery_export_allowed`` (under ``homes``, ``stores`` or a site; default false) lets a
site's battery push power back to the grid.  Usual Japanese contracts allow only PV surplus
to flow back, so by default a discharging battery gives at most the site's own import.
"""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

TOKYO_LATITUDE_DEG = 35.68
TOKYO_LONGITUDE_DEG = 139.77
SITE_KINDS = ("home", "store")
STORE_TYPES = ("convenience", "supermarket")
OTHER_LOAD_KWH_MONTH = 176.0
"""A standard home's appliances other than air conditioning, lighting, water heating and
EV (kWh a month): with the emulated air conditioner and lights the whole home uses the
published 248.7 kWh a month (docs/calibration.md)."""


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message names the file, the key and what fits."""


@dataclass(frozen=True)
class SiteSpec:
    """The equipment of one site.  Powers in W, energies in Wh; 0 means "has none"."""

    name: str
    kind: str = "home"
    latitude_deg: float = TOKYO_LATITUDE_DEG
    longitude_deg: float = TOKYO_LONGITUDE_DEG
    aircons: int = 1
    pv_w: float = 0.0
    battery_wh: float = 0.0
    ev: bool = False
    water_heater: bool = False
    fuel_cell: bool = False
    lighting: bool = True
    showcases: int = 0
    open_hour: float = 7.0
    close_hour: float = 23.0
    household_kwh_month: float = OTHER_LOAD_KWH_MONTH
    """Appliances other than AC, lighting, water heater and EV (kWh a month)."""
    battery_export_allowed: bool = False
    """Whether the battery may export (reverse power flow from storage); PV always may."""
    store_type: str = "convenience"
    """For a store: ``convenience`` or ``supermarket`` (sizes its equipment)."""

    def __post_init__(self) -> None:
        if self.kind not in SITE_KINDS:
            raise ScenarioError(
                f"site {self.name!r}: kind {self.kind!r} is not one of {', '.join(SITE_KINDS)}"
            )
        if self.store_type not in STORE_TYPES:
            raise ScenarioError(
                f"site {self.name!r}: store_type {self.store_type!r} is not one of "
                f"{', '.join(STORE_TYPES)}"
            )
        if not -90 <= self.latitude_deg <= 90 or not -180 <= self.longitude_deg <= 180:
            raise ScenarioError(
                f"site {self.name!r}: latitude must be in [-90, 90] and longitude in [-180, 180]"
            )
        for name in ("aircons", "showcases"):
            if not 0 <= getattr(self, name) <= 9:
                raise ScenarioError(f"site {self.name!r}: {name} must be 0-9")
        for name in ("pv_w", "battery_wh", "household_kwh_month"):
            if getattr(self, name) < 0:
                raise ScenarioError(f"site {self.name!r}: {name} must be >= 0")
        if not (0 <= self.open_hour < 24 and 0 < self.close_hour <= 48):
            raise ScenarioError(
                f"site {self.name!r}: open_hour must be in [0, 24) and close_hour in (0, 48]"
            )

    @property
    def region(self) -> tuple[float, float]:
        """Sites within about 10 km share one weather (0.1° grid cell)."""
        return (round(self.latitude_deg, 1), round(self.longitude_deg, 1))


@dataclass(frozen=True)
class EquipmentMix:
    """Shares of sites having each piece of equipment, and counts per site."""

    pv: float = 0.0
    battery: float = 0.0
    ev: float = 0.0
    water_heater: float = 0.0
    fuel_cell: float = 0.0
    lighting: float = 1.0
    aircons: int = 1
    showcases: int = 0
    pv_w: float = 4500.0
    battery_wh: float = 9800.0
    open_hour: float = 7.0
    close_hour: float = 23.0
    battery_export_allowed: bool = False
    store_type: str = "convenience"


HOME_MIX = EquipmentMix(pv=0.4, battery=0.3, ev=0.2, water_heater=0.5, fuel_cell=0.1)
STORE_MIX = EquipmentMix(
    pv=0.5,
    battery=1.0,
    showcases=4,
    aircons=1,
    pv_w=10_000.0,
    battery_wh=16_400.0,
    open_hour=0.0,
    close_hour=24.0,  # a convenience store: open 24 hours
)


@dataclass(frozen=True)
class Scenario:
    """A town: its sites and the seed that drives weather, occupants and trips."""

    sites: tuple[SiteSpec, ...]
    seed: int = 0
    home_mix: EquipmentMix = field(default=HOME_MIX)
    store_mix: EquipmentMix = field(default=STORE_MIX)

    @classmethod
    def generate(
        cls,
        homes: int,
        stores: int = 0,
        *,
        seed: int = 0,
        home_mix: EquipmentMix = HOME_MIX,
        store_mix: EquipmentMix = STORE_MIX,
        latitude_deg: float = TOKYO_LATITUDE_DEG,
        longitude_deg: float = TOKYO_LONGITUDE_DEG,
        extra: tuple[SiteSpec, ...] = (),
    ) -> Scenario:
        """``homes`` homes and ``stores`` stores with equipment drawn from the mixes."""
        if homes < 0 or stores < 0:
            raise ScenarioError(f"numbers of homes and stores must be >= 0, got {homes}, {stores}")
        if not -90 <= latitude_deg <= 90 or not -180 <= longitude_deg <= 180:
            raise ScenarioError(
                f"latitude must be in [-90, 90] and longitude in [-180, 180], "
                f"got {latitude_deg}, {longitude_deg}"
            )
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 3])
        sites: list[SiteSpec] = []
        for kind, count, mix in (("home", homes, home_mix), ("store", stores, store_mix)):
            draws = rng.random((count, 6))
            scale = rng.lognormal(0.0, 0.25, count) if kind == "home" else np.ones(count)
            for i in range(count):
                has = draws[i] < np.array(
                    [mix.pv, mix.battery, mix.ev, mix.water_heater, mix.fuel_cell, mix.lighting]
                )
                sites.append(
                    SiteSpec(
                        name=f"{kind}-{i + 1}",
                        kind=kind,
                        latitude_deg=latitude_deg,
                        longitude_deg=longitude_deg,
                        aircons=mix.aircons,
                        pv_w=mix.pv_w if has[0] else 0.0,
                        battery_wh=mix.battery_wh if has[1] else 0.0,
                        ev=bool(has[2]) and kind == "home",
                        water_heater=bool(has[3]) and kind == "home",
                        fuel_cell=bool(has[4]) and kind == "home",
                        lighting=bool(has[5]),
                        showcases=mix.showcases if kind == "store" else 0,
                        open_hour=mix.open_hour,
                        close_hour=mix.close_hour,
                        household_kwh_month=round(OTHER_LOAD_KWH_MONTH * float(scale[i]), 1),
                        battery_export_allowed=mix.battery_export_allowed,
                        store_type=mix.store_type,
                    )
                )
        sites.extend(extra)
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ScenarioError(f"site names must be unique; repeated: {', '.join(dup)}")
        return cls(tuple(sites), seed, home_mix, store_mix)


_MIX_KEYS = {f.name for f in fields(EquipmentMix)}
_SITE_KEYS = {f.name for f in fields(SiteSpec)}
_TOP_KEYS = {"seed", "latitude_deg", "longitude_deg", "homes", "stores", "sites"}


_TYPE_WORDS = {"str": "text", "float": "a number", "int": "a whole number", "bool": "true or false"}


def _check_type(where: str, value: Any, type_name: str) -> None:
    if type_name == "bool":
        ok = isinstance(value, bool)
    elif type_name == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif type_name == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ScenarioError(
            f"{where} must be {_TYPE_WORDS.get(type_name, type_name)}, got {value!r}"
        )


def _check_fields(where: str, values: dict[str, Any], cls: type) -> None:
    types = {f.name: str(f.type) for f in fields(cls)}
    for key, value in values.items():
        _check_type(f"{where}.{key}", value, types[key])


def _check_keys(where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ScenarioError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _mix(where: str, table: dict[str, Any], base: EquipmentMix) -> tuple[int, EquipmentMix]:
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: must be a table/object")
    _check_keys(where, table, _MIX_KEYS | {"count"})
    count = table.get("count", 0)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise ScenarioError(f"{where}.count must be a whole number >= 0, got {count!r}")
    values = {k: v for k, v in table.items() if k != "count"}
    for key in ("pv", "battery", "ev", "water_heater", "fuel_cell", "lighting"):
        if key in values:
            v = values[key]
            if isinstance(v, bool):
                values[key] = 1.0 if v else 0.0
            elif not isinstance(v, int | float) or not 0 <= v <= 1:
                raise ScenarioError(f"{where}.{key} must be a share between 0 and 1, got {v!r}")
    _check_fields(where, values, EquipmentMix)
    if values.get("store_type", STORE_TYPES[0]) not in STORE_TYPES:
        raise ScenarioError(
            f"{where}.store_type must be one of {', '.join(STORE_TYPES)}, "
            f"got {values['store_type']!r}"
        )
    try:
        return count, replace(base, **values)
    except TypeError as exc:
        raise ScenarioError(f"{where}: {exc}") from exc


def scenario_from_dict(
    data: dict[str, Any],
    *,
    where: str = "scenario",
    homes: int | None = None,
    stores: int | None = None,
    seed: int | None = None,
) -> Scenario:
    """Build a :class:`Scenario` from parsed JSON/TOML; counts/seed given here win."""
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: the top level must be an object/table")
    _check_keys(where, data, _TOP_KEYS)
    n_homes, home_mix = _mix(f"{where}: homes", data.get("homes", {}), HOME_MIX)
    n_stores, store_mix = _mix(f"{where}: stores", data.get("stores", {}), STORE_MIX)
    extra: list[SiteSpec] = []
    sites = data.get("sites", [])
    if not isinstance(sites, list):
        raise ScenarioError(f"{where}: sites must be a list of tables/objects")
    for i, site in enumerate(sites):
        if not isinstance(site, dict):
            raise ScenarioError(f"{where}: sites[{i}] must be an object/table")
        _check_keys(f"{where}: sites[{i}]", site, _SITE_KEYS)
        if "name" not in site:
            raise ScenarioError(f"{where}: sites[{i}] needs a name")
        _check_fields(f"{where}: sites[{i}]", site, SiteSpec)
        try:
            extra.append(SiteSpec(**site))
        except TypeError as exc:
            raise ScenarioError(f"{where}: sites[{i}]: {exc}") from exc
    lat = data.get("latitude_deg", TOKYO_LATITUDE_DEG)
    lon = data.get("longitude_deg", TOKYO_LONGITUDE_DEG)
    _check_type(f"{where}: latitude_deg", lat, "float")
    _check_type(f"{where}: longitude_deg", lon, "float")
    if seed is None:
        _check_type(f"{where}: seed", data.get("seed", 0), "int")
    return Scenario.generate(
        n_homes if homes is None else homes,
        n_stores if stores is None else stores,
        seed=int(data.get("seed", 0) if seed is None else seed),
        home_mix=home_mix,
        store_mix=store_mix,
        latitude_deg=float(lat),
        longitude_deg=float(lon),
        extra=tuple(extra),
    )


def load_scenario(
    path: str | Path,
    *,
    homes: int | None = None,
    stores: int | None = None,
    seed: int | None = None,
) -> Scenario:
    """Read a scenario file (``.json`` or ``.toml``)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario file {p}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text) if p.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if p.suffix.lower() == ".toml" else "JSON"
        raise ScenarioError(f"scenario file {p} is not valid {kind}: {exc}") from exc
    return scenario_from_dict(data, where=str(p), homes=homes, stores=stores, seed=seed)
