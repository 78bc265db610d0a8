"""Meter readings as a (meters, days, 48) array of 30-minute energy: what a baseline reads.

Both stores load the cumulative registers of the slot ends of a window into a
(meters, days × 48 + 1) array (NaN where no reading) and hand it to :func:`slot_energy_kwh`,
which differences consecutive slot ends: slot ``k`` of day ``d`` is the energy between
``d 00:00 + 30 k min`` and 30 minutes later, JST (the metering day; JST has no daylight
saving, so every day has 48 slots).  A register that rolled over (smaller than the one
before) is corrected by the meter's ``wrap_kwh``, as the head-end's settlement export does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

import numpy as np

from erab.clock import JST
from erab.store.base import FloatArray

SLOT_S = 1800
SLOTS_PER_DAY = 48
REGISTERS = ("import", "export")


def day_start_s(day: date) -> int:
    """POSIX seconds of 00:00 JST on ``day``."""
    return round(datetime(day.year, day.month, day.day, tzinfo=JST).timestamp())


def check_window(meter_ids: Sequence[str], days: int, register: str) -> None:
    if days < 1:
        raise ValueError(f"meter_matrix: days must be at least 1, got {days}")
    if register not in REGISTERS:
        raise ValueError(f"meter_matrix: register must be 'import' or 'export', got {register!r}")
    for m in meter_ids:
        if not isinstance(m, str) or not m:
            raise ValueError(f"meter ids must be non-empty strings, got {m!r}")


def slot_energy_kwh(cumulative_kwh: FloatArray, wrap_kwh: FloatArray, days: int) -> FloatArray:
    """Energy per slot from cumulative registers at slot ends.

    ``cumulative_kwh`` is (meters, days × 48 + 1): column 0 is the register at 00:00 JST of
    the first day, column ``j`` the register at the end of slot ``j``.  ``wrap_kwh`` (meters,)
    is where each register rolls over (NaN: unknown, a negative difference stays negative).
    Returns (meters, days, 48); NaN where either end of a slot has no reading."""
    n = cumulative_kwh.shape[0]
    delta = np.diff(cumulative_kwh, axis=1)
    rolled = delta < 0
    if rolled.any():
        wraps = np.broadcast_to(wrap_kwh[:, None], delta.shape)
        fix = rolled & ~np.isnan(wraps) & (wraps > 0)
        delta[fix] += wraps[fix]
    return delta.reshape(n, days, SLOTS_PER_DAY)


def fan_out(unique: FloatArray, meter_ids: Sequence[str], order: dict[str, int]) -> FloatArray:
    """Rows of ``unique`` (one per distinct id, in ``order``) for ``meter_ids`` as given."""
    if len(order) == len(meter_ids):
        return unique
    return unique[np.fromiter((order[m] for m in meter_ids), np.int64, len(meter_ids))]
