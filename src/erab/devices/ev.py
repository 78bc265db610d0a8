"""EV chargers/dischargers (0x027E) with the car's daily sessions.

Each car leaves in the morning and comes back in the evening (times drawn per day from the
seed; about 40 % of weekend days it stays home).  The energy a trip used is taken from the
car's battery when it arrives: ``distance_km × consumption``, 145 Wh/km from the battery,
which with the charger's losses is 155 Wh/km at the socket (a Nissan Leaf 40 kWh's WLTC
AC electricity consumption rate in its Japanese catalogue).  While plugged in, the charger
charges (0xDA = 0x42), discharges to the home (V2H, 0x43) down to a reserve, or stands by
(0x44).  Power sign as EPC 0xD3: + charging.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from erab.devices.battery import (
    MODE_CHARGING,
    MODE_DISCHARGING,
    MODE_RAPID_CHARGING,
    MODE_STANDBY,
    BatteryFleet,
)
from erab.devices.loads import JST_OFFSET_S

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

CONSUMPTION_WH_PER_KM = 145.0
"""Battery energy per km driven: 155 Wh/km at the socket × √0.88 (charging losses)."""

# JAMA's passenger-car market survey (FY2019 and FY2021): a private car is used on about
# 5.1 days a week and drives 370 km a month on average.  Cars go out on 78 % of weekdays
# and 60 % of weekend days (5 × 0.78 + 2 × 0.60 = 5.1 days a week), and a driving day
# averages 370 km ÷ (5.1 × 52.18 / 12) days = 16.7 km.
WEEKDAY_DRIVE_P = 0.78
WEEKEND_DRIVE_P = 0.60
MEAN_TRIP_KM = 16.7
MONTHLY_KM_PUBLISHED = 370.0

# EPC 0xC7 vehicle connection and chargeable/dischargeable status (Appendix 0x027E)
STATUS_NOT_CONNECTED = 0x30
STATUS_CHARGEABLE_DISCHARGEABLE = 0x43
EV_MODES = frozenset({MODE_RAPID_CHARGING, MODE_CHARGING, MODE_DISCHARGING, MODE_STANDBY})


@dataclass(frozen=True)
class DaySessions:
    """One day's trips of every car: leave and return hour (local), distance driven."""

    depart_hour: FloatArray
    arrive_hour: FloatArray
    distance_km: FloatArray

    @property
    def energy_need_wh(self) -> FloatArray:
        return np.asarray(self.distance_km * CONSUMPTION_WH_PER_KM)


class EVFleet:
    """``n`` EVs on V2H-capable chargers.

    Arrays: ``connected``, ``mode`` (0xDA setting), ``power_w`` (AC side, + charging),
    and the car batteries in ``battery`` (a :class:`BatteryFleet`: ``stored_wh``,
    ``soc_pct``, ``charged_wh``, ``discharged_wh``).
    """

    def __init__(
        self,
        n: int,
        *,
        capacity_wh: float | npt.ArrayLike = 40_000.0,
        max_charge_w: float | npt.ArrayLike = 6000.0,
        max_discharge_w: float | npt.ArrayLike = 6000.0,
        reserve_pct: float | npt.ArrayLike = 30.0,
        soc_pct: float | npt.ArrayLike = 60.0,
        mean_distance_km: float = MEAN_TRIP_KM,
        seed: int = 0,
        export_allowed: bool | npt.ArrayLike = True,
    ) -> None:
        self.n = n
        # V2H follows the stationary battery's rule: where the site may not export from
        # storage, the car gives at most what the house would import without it.
        self.battery = BatteryFleet(
            n,
            capacity_wh=capacity_wh,
            max_charge_w=max_charge_w,
            max_discharge_w=max_discharge_w,
            round_trip_efficiency=0.88,
            soc_pct=soc_pct,
            mode=MODE_STANDBY,
            lower_limit_pct=reserve_pct,
            upper_limit_pct=100.0,
            export_allowed=export_allowed,
        )
        self.mode = np.full(n, MODE_CHARGING, dtype=np.int64)
        self.mean_distance_km = mean_distance_km
        self.seed = seed
        self.connected: BoolArray = np.ones(n, dtype=np.bool_)
        self.driven_wh = np.zeros(n)
        self._sessions: dict[int, DaySessions] = {}

    @property
    def power_w(self) -> FloatArray:
        return self.battery.power_w

    def sessions(self, day: int) -> DaySessions:
        """The trips of local day number ``day`` (days since 1970-01-01, JST)."""
        found = self._sessions.get(day)
        if found is None:
            rng = np.random.default_rng([self.seed & 0xFFFFFFFF, 11, day])
            weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 0 = Monday
            drives = rng.random(self.n) < (
                WEEKEND_DRIVE_P if weekday >= 5 else WEEKDAY_DRIVE_P
            )
            depart = np.clip(rng.normal(8.0, 1.0, self.n), 5.0, 12.0)
            arrive = np.clip(depart + rng.normal(10.0, 1.5, self.n), depart + 1.0, 23.5)
            sigma = 0.6
            distance = self.mean_distance_km * np.exp(
                sigma * rng.standard_normal(self.n) - sigma**2 / 2
            )
            found = DaySessions(
                depart_hour=np.where(drives, depart, 24.0),
                arrive_hour=np.where(drives, arrive, 24.0),
                distance_km=np.where(drives, distance, 0.0),
            )
            if len(self._sessions) > 64:
                self._sessions.clear()
            self._sessions[day] = found
        return found

    def at_home(self, time_s: float) -> BoolArray:
        local = time_s + JST_OFFSET_S
        day = int(local // 86_400)
        hour = (local % 86_400) / 3600.0
        s = self.sessions(day)
        return np.asarray(~((hour >= s.depart_hour) & (hour < s.arrive_hour)))

    def step(self, dt_s: float, time_s: float, site_net_w: FloatArray | float = 0.0) -> FloatArray:
        """Advance ``dt_s`` ending at ``time_s``; returns AC power (+ charging).

        ``site_net_w``: each car's site import (+) / export (−) without the car, which bounds
        discharging where the site may not export from storage."""
        home = self.at_home(time_s)
        arrived = home & ~self.connected
        if np.any(arrived):
            local_day = int((time_s + JST_OFFSET_S) // 86_400)
            need = self.sessions(local_day).energy_need_wh
            # The trip's energy leaves the car; a car never comes home below 5 %
            # (its driver charged on the road).
            floor = 0.05 * self.battery.capacity_wh
            used = np.where(
                arrived, np.minimum(need, np.maximum(self.battery.stored_wh - floor, 0.0)), 0.0
            )
            self.battery.stored_wh = self.battery.stored_wh - used
            self.driven_wh = self.driven_wh + used
        self.connected = home
        self.battery.mode = np.where(home, self.mode, MODE_STANDBY)
        return self.battery.step(dt_s, site_net_w)

    def status(self) -> npt.NDArray[np.int64]:
        """EPC 0xC7 codes: not connected, or connected and able to charge and discharge."""
        return np.where(self.connected, STATUS_CHARGEABLE_DISCHARGEABLE, STATUS_NOT_CONNECTED)
