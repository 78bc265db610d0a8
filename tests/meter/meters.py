"""The meter the route B tests read: helper C's emulated low-voltage smart meter (0x0288).

A one-meter fleet with a known history: from 2026-11-25 00:00 JST, 100 Wh imported and
10 Wh exported every 30 minutes, except the last slot before 2026-11-27 12:00 JST, which
imports 617 Wh (so the meter shows 1234 W) and exports nothing.  Unit 0.1 kWh.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from erab.clock import JST
from erab.meter.smartmeter import MeterFleet, SmartMeter

ORIGIN = datetime(2026, 11, 25, tzinfo=JST)
NOW = datetime(2026, 11, 27, 12, 0, tzinfo=JST)
SLOTS = 2 * 48 + 24


def emulated_meter(*, coefficient: int = 1, unit_code: int = 0x01) -> SmartMeter:
    """The meter above; ``coefficient`` (0xD3) and ``unit_code`` (0xE1) change its counting
    (the default 1 x 0.1 kWh, or e.g. 10 x 0.01 kWh: the same 0.1 kWh per count)."""
    fleet = MeterFleet(1, ORIGIN, coefficient=coefficient, unit_code=unit_code)
    imp = np.full((SLOTS, 1), 100.0)
    exp = np.full((SLOTS, 1), 10.0)
    imp[-1], exp[-1] = 617.0, 0.0
    fleet.load_history(imp, exp)
    return SmartMeter(fleet, 0)
