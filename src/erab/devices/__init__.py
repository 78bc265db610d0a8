"""Emulated homes and stores: appliance physics served as ECHONET Lite device objects.

Models are fleets (numpy arrays over every unit of a kind) driven by the shared clock:
air conditioners with a room thermal model (0x0130, 0x0156), storage batteries (0x027D),
PV (0x0279), EVs with daily sessions (0x027E), heat-pump water heaters (0x026B), fuel cells
(0x027C), lighting (0x0290), refrigerated showcases (0x03CE) and household / store base
load, under a seeded weather.  A :class:`Town` composes them into sites from a
:class:`Scenario`; :class:`TownServer` serves each site as an ECHONET Lite node.
"""

from erab.devices.aircon import AirConditionerFleet, RoomSpec, heat_pump_cop
from erab.devices.battery import BatteryFleet
from erab.devices.ev import EVFleet
from erab.devices.fuelcell import FuelCellFleet
from erab.devices.loads import HouseholdLoad, LightingFleet, ScheduledLoad
from erab.devices.objects import FleetObject, site_objects
from erab.devices.pv import PVFleet
from erab.devices.scenario import (
    EquipmentMix,
    Scenario,
    ScenarioError,
    SiteSpec,
    load_scenario,
    scenario_from_dict,
)
from erab.devices.server import SiteEndpoint, TownServer, site_addresses
from erab.devices.showcase import ShowcaseFleet
from erab.devices.synthetic import synthetic_site_energy
from erab.devices.town import DeviceRef, Town
from erab.devices.waterheater import WaterHeaterFleet
from erab.devices.weather import Climate, Sky, SkyState, Weather

__all__ = [
    "AirConditionerFleet",
    "BatteryFleet",
    "Climate",
    "DeviceRef",
    "EVFleet",
    "EquipmentMix",
    "FleetObject",
    "FuelCellFleet",
    "HouseholdLoad",
    "LightingFleet",
    "PVFleet",
    "RoomSpec",
    "Scenario",
    "ScenarioError",
    "ScheduledLoad",
    "ShowcaseFleet",
    "SiteEndpoint",
    "SiteSpec",
    "Sky",
    "SkyState",
    "Town",
    "TownServer",
    "WaterHeaterFleet",
    "Weather",
    "heat_pump_cop",
    "load_scenario",
    "scenario_from_dict",
    "site_addresses",
    "site_objects",
    "synthetic_site_energy",
]
