"""Loads that follow a daily shape: household other load, lighting (0x0290), store base load.

The household's other load (refrigerator, cooking, washing, TV, standby…) follows an hourly
shape typical of a Japanese home, scaled to a monthly energy (a home's monthly use varies a
little with the season).  A :class:`HouseholdLoad` alone defaults to 249 kWh a month, a
whole Tokyo home's average; in a town each home's other load is
``SiteSpec.household_kwh_month`` (176 kWh by default), so that with its air conditioner
and lights the whole standard home uses the published 248.7 kWh (docs/calibration.md).  Each home
has its own size factor and a day-to-day and minute-to-minute wobble from the seed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from erab.devices.arrays import BoolArray, FloatArray, per_unit

JST_OFFSET_S = 9 * 3600.0
MONTHLY_HOUSEHOLD_KWH = 249.0
"""A Tokyo household's average monthly electricity use, all appliances (TEPCO: 248.7)."""
DAYS_PER_MONTH = 365.25 / 12.0

# Relative household demand by hour of day (00:00-01:00 first), a weekday profile with a
# morning peak and a larger evening peak; normalised below.
_HOURLY_SHAPE = np.array(
    [
        250,
        220,
        200,
        195,
        195,
        215,
        330,
        480,
        420,
        340,
        300,
        310,
        340,
        300,
        280,
        280,
        310,
        420,
        560,
        620,
        600,
        540,
        440,
        330,
    ],
    dtype=np.float64,
)
HOURLY_SHAPE = _HOURLY_SHAPE / _HOURLY_SHAPE.mean()
"""Household power by hour of day as a multiple of the day's mean power."""


def local_hour(times_s: float | FloatArray, utc_offset_s: float = JST_OFFSET_S) -> FloatArray:
    """Hour of the local day in [0, 24) at POSIX seconds ``times_s``."""
    return np.asarray((np.asarray(times_s, dtype=np.float64) + utc_offset_s) % 86_400.0 / 3600.0)


def _smooth_shape(hour: FloatArray) -> FloatArray:
    """The hourly shape interpolated linearly between hour centres (periodic, same mean)."""
    centres = np.arange(24, dtype=np.float64) + 0.5
    return np.asarray(np.interp(hour, centres, HOURLY_SHAPE, period=24.0), dtype=np.float64)


def seasonal_factor(times_s: float | FloatArray) -> FloatArray:
    """Household use by season, as a multiple of the yearly mean (winter ≈ +8 %)."""
    day_of_year = (np.asarray(times_s, dtype=np.float64) + JST_OFFSET_S) / 86_400.0 % 365.25
    return np.asarray(1.0 + 0.08 * np.cos(2 * np.pi * (day_of_year - 20.0) / 365.25))


class HouseholdLoad:
    """Other load of ``n`` homes: every appliance not modelled as its own device.

    ``monthly_kwh`` (per home) sets the mean; ``power_w`` is the last step's power and
    ``energy_wh`` the cumulative energy.
    """

    def __init__(
        self,
        n: int,
        *,
        monthly_kwh: float | npt.ArrayLike = MONTHLY_HOUSEHOLD_KWH,
        seed: int = 0,
        variability: float = 0.15,
    ) -> None:
        self.n = n
        self.monthly_kwh = per_unit(monthly_kwh, n)
        self.seed = seed
        self.variability = variability
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def mean_power_w(self) -> FloatArray:
        """Each home's yearly mean power (W)."""
        return self.monthly_kwh * 1000.0 / (DAYS_PER_MONTH * 24.0)

    def power_at(self, time_s: float) -> FloatArray:
        """Power (W) of each home at POSIX second ``time_s`` (deterministic from the seed)."""
        shape = float(_smooth_shape(local_hour(time_s)))
        season = float(seasonal_factor(time_s))
        if self.variability > 0:
            # A fresh draw every 10 minutes: appliances switching, with mean 1.
            block = int(time_s // 600)
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 7, block])
            wobble = np.clip(1.0 + self.variability * rng.standard_normal(self.n), 0.3, 2.0)
        else:
            wobble = np.ones(self.n)
        return self.mean_power_w() * shape * season * wobble

    def step(self, dt_s: float, time_s: float) -> FloatArray:
        """Advance ``dt_s`` seconds ending at ``time_s`` (power taken at the step's middle)."""
        power = self.power_at(time_s - dt_s / 2.0)
        self.power_w = power
        if dt_s > 0:
            self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power


class LightingFleet:
    """``n`` lighting circuits (0x0290) switched by a daily schedule and by Sets.

    A unit is on between ``on_hour`` and ``off_hour`` (local time, may wrap midnight);
    a Set of operation status (0x80) holds until the schedule next switches.  Power is
    ``rated_w × light_level_pct / 100`` while on.
    """

    def __init__(
        self,
        n: int,
        *,
        rated_w: float | npt.ArrayLike = 120.0,
        on_hour: float | npt.ArrayLike = 17.5,
        off_hour: float | npt.ArrayLike = 23.5,
        standby_w: float = 0.3,
    ) -> None:
        self.n = n
        self.rated_w = per_unit(rated_w, n)
        self.on_hour = per_unit(on_hour, n)
        self.off_hour = per_unit(off_hour, n)
        self.standby_w = standby_w
        self.level_pct = per_unit(100.0, n)
        self.override: npt.NDArray[np.int8] = np.full(n, -1, dtype=np.int8)  # -1 none, 0/1
        self._scheduled: BoolArray | None = None
        self.on: BoolArray = np.zeros(n, dtype=np.bool_)
        """Whether each unit is lit (as of the last step)."""
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def scheduled_on(self, time_s: float) -> BoolArray:
        hour = float(local_hour(time_s))
        wraps = self.on_hour > self.off_hour
        inside = (hour >= self.on_hour) & (hour < self.off_hour)
        inside_wrapped = (hour >= self.on_hour) | (hour < self.off_hour)
        return np.asarray(np.where(wraps, inside_wrapped, inside), dtype=np.bool_)

    def is_on(self, time_s: float) -> BoolArray:
        scheduled = self.scheduled_on(time_s)
        return np.asarray(np.where(self.override >= 0, self.override == 1, scheduled))

    def switch(self, index: int, on: bool) -> None:
        """A user or controller switches unit ``index`` (held until the schedule switches)."""
        self.override[index] = 1 if on else 0
        self.on[index] = on

    def step(self, dt_s: float, time_s: float) -> FloatArray:
        scheduled = self.scheduled_on(time_s)
        if self._scheduled is not None:
            # The schedule switching ends a manual override.
            self.override[scheduled != self._scheduled] = -1
        self._scheduled = scheduled
        on = np.where(self.override >= 0, self.override == 1, scheduled)
        self.on = on
        power = np.where(on, self.rated_w * self.level_pct / 100.0, self.standby_w)
        self.power_w = power
        if dt_s > 0:
            self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power


class ScheduledLoad:
    """A load with one power while open and another while closed (a store's base load)."""

    def __init__(
        self,
        n: int,
        *,
        open_w: float | npt.ArrayLike,
        closed_w: float | npt.ArrayLike,
        open_hour: float | npt.ArrayLike = 7.0,
        close_hour: float | npt.ArrayLike = 23.0,
    ) -> None:
        self.n = n
        self.open_w = per_unit(open_w, n)
        self.closed_w = per_unit(closed_w, n)
        self.open_hour = per_unit(open_hour, n)
        self.close_hour = per_unit(close_hour, n)
        self.power_w = np.zeros(n)
        self.energy_wh = np.zeros(n)

    def is_open(self, time_s: float) -> BoolArray:
        hour = float(local_hour(time_s))
        always = (self.close_hour - self.open_hour) >= 24.0
        today = (hour >= self.open_hour) & (hour < self.close_hour)
        after_midnight = hour + 24.0 < self.close_hour  # e.g. open 7:00 to 26:00 (2:00)
        return np.asarray(always | today | after_midnight)

    def step(self, dt_s: float, time_s: float) -> FloatArray:
        power = np.where(self.is_open(time_s - dt_s / 2.0), self.open_w, self.closed_w)
        self.power_w = power
        if dt_s > 0:
            self.energy_wh = self.energy_wh + power * dt_s / 3600.0
        return power
