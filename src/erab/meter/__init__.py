"""Smart meters: the 0x0288 meter model, route B over a Wi-SUN dongle, the route A head-end.

Entry points:

- :class:`RouteBReader` — a HEMS reading its meter through a Wi-SUN dongle (SKSTACK-IP)
  on a :class:`SerialPort`;
- :class:`DongleCore` / :class:`PtyDongle` — a dongle plus meter emulated on a pty;
- :class:`HeadEnd` with :class:`EmulatedAmi` — route A collection, storage and remote actions;
- :class:`MeterFleet` / :class:`SmartMeter` — the emulated meters themselves.
"""

from erab.meter.dongle import DongleCore, DongleFaults, PtyDongle
from erab.meter.headend import (
    AmiNetwork,
    EmulatedAmi,
    HeadEnd,
    HeadEndError,
    MeterUnreachable,
    OnDemandReading,
    SettlementRow,
)
from erab.meter.routeb import (
    CumulativeReading,
    DongleCommandFailed,
    InstantReading,
    MeterNotFound,
    MeterScaling,
    MeterTimeout,
    RouteBAuthError,
    RouteBCredentials,
    RouteBError,
    RouteBReader,
    SetUnconfirmed,
)
from erab.meter.serialport import SerialPort
from erab.meter.skstack import Dialect, SkstackParser
from erab.meter.smartmeter import MeterFleet, MeterReading, SmartMeter

__all__ = [
    "AmiNetwork",
    "CumulativeReading",
    "Dialect",
    "DongleCommandFailed",
    "DongleCore",
    "DongleFaults",
    "EmulatedAmi",
    "HeadEnd",
    "HeadEndError",
    "InstantReading",
    "MeterFleet",
    "MeterNotFound",
    "MeterReading",
    "MeterScaling",
    "MeterTimeout",
    "MeterUnreachable",
    "OnDemandReading",
    "PtyDongle",
    "RouteBAuthError",
    "RouteBCredentials",
    "RouteBError",
    "RouteBReader",
    "SerialPort",
    "SetUnconfirmed",
    "SettlementRow",
    "SkstackParser",
    "SmartMeter",
]
