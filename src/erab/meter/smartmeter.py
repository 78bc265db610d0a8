"""Low-voltage smart electric energy meter (0x0288): counters, 30-minute history, remote actions.

A :class:`MeterFleet` holds the meters of many sites as arrays: true energy in each
direction, and the cumulative counts at every 30-minute time point (xx:00 and xx:30, JST)
for at least 45 days back, as the smart-meter AIF specification asks of route B.  It is
filled at start in one vectorised pass (:meth:`MeterFleet.load_history` from per-slot
energies, e.g. a town's physics run, or :meth:`MeterFleet.synthetic`) and then follows
live net power (:meth:`MeterFleet.observe`, a :class:`erab.devices.Town` observer).

:class:`SmartMeter` is one meter of the fleet as an ECHONET Lite device object
(0x028801), the class route B readers, a Wi-SUN dongle emulator and the route A head-end
use.  Counts follow the Appendix (0x0288): energy in kWh = count × coefficient (0xD3) ×
unit (0xE1); counts wrap at 10^digits (0xD7); 0xFFFFFFFE where there is no data.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np
import numpy.typing as npt

from erab.clock import JST
from erab.echonet import meterdata
from erab.echonet.frame import EOJ
from erab.echonet.node import DeviceObject, SetRejected

FloatArray = npt.NDArray[np.float64]
CountArray = npt.NDArray[np.uint32]

SLOT_S = 1800
"""30 minutes: the metering slot of Japanese settlement and of the meter's history."""
POINTS_PER_DAY = 48
HISTORY_DAYS = 45
NO_DATA = 0xFFFFFFFE
"""In-band "no data" for cumulative values (Appendix 0x0288, 0xE0/0xE2/0xEA…)."""
MINUTES_KEPT = 120
"""One-minute points kept for 0xD0 and the 1-minute history 0xEE (up to 10 segments)."""
LIVE_EPCS = (0x80, 0xD0, 0xE0, 0xE2, 0xE3, 0xE4, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xEE, 0x97, 0x98)
NO_DATA_CURRENT = 0x7FFE
NO_DATA_POWER = 0x7FFFFFFE

UNIT_KWH = meterdata.ENERGY_UNITS_KWH
"""EPC 0xE1 unit codes -> kWh per count unit (Appendix 0x0288)."""
_JST_OFFSET_S = 9 * 3600


def _midnight_jst_s(time_s: float) -> float:
    return float((time_s + _JST_OFFSET_S) // 86_400 * 86_400 - _JST_OFFSET_S)


@dataclass(frozen=True)
class MeterReading:
    """One 30-minute time point of one meter: cumulative energy in each direction (kWh).

    ``None`` where the meter has no data for that point (0xFFFFFFFE)."""

    point: datetime
    import_kwh: float | None
    export_kwh: float | None


class MeterFleet:
    """``n`` smart meters sharing one time base.

    ``origin`` is the first 30-minute time point kept (midnight JST); points are kept for
    ``capacity_days`` days from there, and the oldest day is dropped when time runs past.
    ``coefficient`` (0xD3), ``unit_code`` (0xE1) and ``digits`` (0xD7) set the counting.
    """

    def __init__(
        self,
        n: int,
        origin: datetime,
        *,
        coefficient: int = 1,
        unit_code: int = 0x01,
        digits: int = 6,
        capacity_days: int = HISTORY_DAYS + 2,
        initial_import_kwh: float | npt.ArrayLike = 0.0,
        voltage_v: float = 100.0,
    ) -> None:
        if unit_code not in UNIT_KWH:
            raise ValueError(
                f"meter unit code 0x{unit_code:02X} is not one of "
                f"{', '.join(f'0x{c:02X}' for c in UNIT_KWH)} (EPC 0xE1)"
            )
        if not 1 <= digits <= 8:
            raise ValueError(f"meter digits must be 1-8 (EPC 0xD7), got {digits}")
        if not 1 <= coefficient <= 999_999:
            raise ValueError(f"meter coefficient must be 1-999999 (EPC 0xD3), got {coefficient}")
        self.n = n
        self.origin_s = _midnight_jst_s(origin.timestamp())
        self.coefficient = coefficient
        self.unit_code = unit_code
        self.digits = digits
        self.kwh_per_count = coefficient * UNIT_KWH[unit_code]
        self.voltage_v = voltage_v
        self.capacity_points = capacity_days * POINTS_PER_DAY
        self.import_wh = np.zeros(n)
        self.export_wh = np.zeros(n)
        self.import_wh[:] = np.asarray(initial_import_kwh, dtype=np.float64) * 1000.0
        self.site_net_w = np.zeros(n)  # the site's net power behind the meter (W, import +)
        self.net_w = np.zeros(n)  # what the meter measures: site_net_w while supplied, else 0
        self.connected = np.ones(n, dtype=np.bool_)  # remote switch closed, breaker not tripped
        self.breaker_a = np.full(n, np.inf)  # no remote breaker limit until one is set
        self.demand_limit_w = np.full(n, np.inf)  # no remote demand limit until one is set
        self.demand_cut = np.zeros(n, dtype=np.bool_)  # supply cut by the demand limit
        self.time_s = self.origin_s
        self._import_points: CountArray = np.full((n, self.capacity_points), NO_DATA, np.uint32)
        self._export_points: CountArray = np.full((n, self.capacity_points), NO_DATA, np.uint32)
        # The last MINUTES_KEPT one-minute points (0xD0, 0xEE), a ring by minute number.
        self._minute_import: CountArray = np.full((n, MINUTES_KEPT), NO_DATA, np.uint32)
        self._minute_export: CountArray = np.full((n, MINUTES_KEPT), NO_DATA, np.uint32)
        self._minute_number = np.full(MINUTES_KEPT, -1, dtype=np.int64)
        self._record_point(self.origin_s)

    # -- counting ---------------------------------------------------------------------
    def counts(self, energy_wh: FloatArray) -> CountArray:
        """Register counts for true energies: floor(kWh / (coef × unit)) mod 10^digits."""
        raw = np.floor(
            np.asarray(energy_wh, dtype=np.float64) * (1.0 / (1000.0 * self.kwh_per_count)) + 1e-9
        )
        limit = 10**self.digits
        if raw.size and float(raw.max()) >= limit:  # the register wraps (0xD7 digits)
            raw = np.mod(raw, limit)
        return np.asarray(raw, dtype=np.uint32)

    def count_to_kwh(self, count: int) -> float | None:
        """A count as kWh (coefficient × unit applied); None for no data."""
        if count == NO_DATA:
            return None
        return meterdata.scale(count, self.coefficient, UNIT_KWH[self.unit_code])

    def _point_index(self, point_s: float) -> int:
        return round((point_s - self.origin_s) / SLOT_S)

    def _newest_index(self) -> int:
        """Index of the newest time point already measured."""
        return int((self.time_s - self.origin_s + 1e-6) // SLOT_S)

    def newest_point_s(self) -> float:
        """POSIX seconds of the newest measured 30-minute time point."""
        return self.origin_s + self._newest_index() * SLOT_S

    def _drop_oldest_day(self) -> None:
        for arr in (self._import_points, self._export_points):
            arr[:, :-POINTS_PER_DAY] = arr[:, POINTS_PER_DAY:]
            arr[:, -POINTS_PER_DAY:] = NO_DATA
        self.origin_s += 86_400

    def _record_point(
        self,
        point_s: float,
        import_wh: FloatArray | None = None,
        export_wh: FloatArray | None = None,
    ) -> None:
        k = self._point_index(point_s)
        while k >= self.capacity_points:
            self._drop_oldest_day()
            k -= POINTS_PER_DAY
        if k < 0:
            return
        self._import_points[:, k] = self.counts(self.import_wh if import_wh is None else import_wh)
        self._export_points[:, k] = self.counts(self.export_wh if export_wh is None else export_wh)

    # -- filling ------------------------------------------------------------------------
    def load_history(self, slot_import_wh: npt.ArrayLike, slot_export_wh: npt.ArrayLike) -> None:
        """Take per-slot energies, shape (slots, n), from the origin on, in one pass.

        Cumulative counts at every time point are computed vectorised (cumsum); the fleet's
        clock moves to the end of the last slot."""
        imp = np.asarray(slot_import_wh)
        exp = np.asarray(slot_export_wh)
        if imp.shape != exp.shape or imp.ndim != 2 or imp.shape[1] != self.n:
            raise ValueError(
                f"history arrays must both have shape (slots, {self.n}); got "
                f"{imp.shape} and {exp.shape}"
            )
        if np.any(imp < 0) or np.any(exp < 0):
            raise ValueError("slot energies must be >= 0 (import and export are separate)")
        slots = imp.shape[0]
        if slots == 0:  # no history (erab emulate --history-days 0): nothing moves
            return
        start = self._point_index(self.time_s)
        while start + slots >= self.capacity_points:
            # keep the newest points: move the origin forward by whole days
            drop_days = (start + slots - self.capacity_points) // POINTS_PER_DAY + 1
            self._import_points[:] = NO_DATA
            self._export_points[:] = NO_DATA
            self.origin_s += drop_days * 86_400
            start -= drop_days * POINTS_PER_DAY
        first = max(start + 1, 0)
        skip = first - (start + 1)
        chunk = 2048  # meters per pass: bounds the temporaries for large fleets
        for lo in range(0, self.n, chunk):
            hi = min(lo + chunk, self.n)
            cum_imp = self.import_wh[lo:hi, None] + np.cumsum(imp[:, lo:hi].T, axis=1)
            cum_exp = self.export_wh[lo:hi, None] + np.cumsum(exp[:, lo:hi].T, axis=1)
            if skip < slots:
                self._import_points[lo:hi, first : start + 1 + slots] = self.counts(
                    cum_imp[:, skip:]
                )
                self._export_points[lo:hi, first : start + 1 + slots] = self.counts(
                    cum_exp[:, skip:]
                )
            self.import_wh[lo:hi] = cum_imp[:, -1]
            self.export_wh[lo:hi] = cum_exp[:, -1]
        self.time_s = self.origin_s + (start + slots) * SLOT_S
        self.site_net_w = (imp[-1].astype(np.float64) - exp[-1]) * 3600.0 / SLOT_S
        self.enforce_limits()

    def observe(self, t0: float, t1: float, net_w: FloatArray) -> None:
        """Integrate net power (W, import +) held from ``t0`` to ``t1`` (a Town observer).

        ``net_w`` is what each site behind its meter draws (+) or feeds (−); meters whose
        supply is off (disconnected, breaker tripped, cut by the demand limit) count nothing
        and read 0 W.  The remote limits are checked at ``t1`` (:meth:`enforce_limits`)."""
        site = np.asarray(net_w, dtype=np.float64)
        net = np.where(self.supplied, site, 0.0)
        # Every minute boundary in (t0, t1] is a one-minute point; every 30th is a slot point.
        minute = (np.floor(t0 / 60.0 + 1e-9) + 1) * 60.0
        done = t0
        while minute <= t1 + 1e-6:
            # A boundary within 1 µs after t1 (float rounding of t1) is recorded at t1's
            # energy: integrating past t1 would count time that is not over yet.
            upto = min(minute, t1)
            self._integrate(net, upto - done)
            self._record_minute(minute)
            if round(minute - self.origin_s) % SLOT_S == 0:
                self._record_point(minute)
            done = upto
            minute += 60.0
        self._integrate(net, t1 - done)
        self.site_net_w = site.copy() if site.shape else np.full(self.n, float(site))
        self.time_s = t1
        self.enforce_limits()

    @property
    def supplied(self) -> npt.NDArray[np.bool_]:
        """Whether power flows through each meter: switch closed, breaker not tripped and
        not cut by the demand limit."""
        return self.connected & ~self.demand_cut

    def enforce_limits(self, index: int | None = None) -> None:
        """Check the remote limits against the site's power now (every meter, or one).

        A supplied meter whose import current exceeds its breaker setting trips (switch
        open until :meth:`SmartMeter.connect`); one whose import power exceeds its demand
        limit is cut (until connect or a new limit the load does not exceed).  What the
        meter measures (``net_w``) is then the site's power where supplied, else 0 W."""
        sel = slice(None) if index is None else slice(index, index + 1)
        import_w = np.maximum(self.site_net_w[sel], 0.0)
        supplied = self.connected[sel] & ~self.demand_cut[sel]
        self.connected[sel] &= ~(supplied & (import_w / self.voltage_v > self.breaker_a[sel]))
        still = self.connected[sel] & ~self.demand_cut[sel]
        self.demand_cut[sel] |= still & (import_w > self.demand_limit_w[sel])
        self.net_w[sel] = np.where(
            self.connected[sel] & ~self.demand_cut[sel], self.site_net_w[sel], 0.0
        )

    def _record_minute(self, minute_s: float) -> None:
        number = round(minute_s / 60.0)
        slot = number % MINUTES_KEPT
        self._minute_number[slot] = number
        self._minute_import[:, slot] = self.counts(self.import_wh)
        self._minute_export[:, slot] = self.counts(self.export_wh)

    def minute_points(
        self, index: int, newest_minute_s: float, count: int
    ) -> tuple[list[int], list[int]]:
        """Counts (import, export) of meter ``index`` at ``count`` one-minute points going
        back from ``newest_minute_s`` (newest first); NO_DATA where none is kept."""
        imp: list[int] = []
        exp: list[int] = []
        newest = round(newest_minute_s / 60.0)
        for k in range(count):
            number = newest - k
            slot = number % MINUTES_KEPT
            if self._minute_number[slot] == number:
                imp.append(int(self._minute_import[index, slot]))
                exp.append(int(self._minute_export[index, slot]))
            else:
                imp.append(NO_DATA)
                exp.append(NO_DATA)
        return imp, exp

    def _integrate(self, net: FloatArray, dt_s: float) -> None:
        if dt_s <= 0:
            return
        self.import_wh += np.maximum(net, 0.0) * dt_s / 3600.0
        self.export_wh += np.maximum(-net, 0.0) * dt_s / 3600.0

    def currents_a(self) -> FloatArray:
        """(R, T) phase currents (A), shape (2, n), of a single-phase three-wire 100/200 V
        service: the load splits 55/45 between the two 100 V legs."""
        total = self.net_w / self.voltage_v
        return np.vstack([0.55 * total, 0.45 * total])

    # -- reading ------------------------------------------------------------------------
    def points(self, index: int, first_point_s: float, count: int) -> tuple[list[int], list[int]]:
        """Counts (import, export) of meter ``index`` at ``count`` points from
        ``first_point_s`` on; NO_DATA outside what is kept or not yet measured."""
        k0 = self._point_index(first_point_s)
        newest = self._newest_index()
        imp: list[int] = []
        exp: list[int] = []
        for k in range(k0, k0 + count):
            if 0 <= k < self.capacity_points and k <= newest:
                imp.append(int(self._import_points[index, k]))
                exp.append(int(self._export_points[index, k]))
            else:
                imp.append(NO_DATA)
                exp.append(NO_DATA)
        return imp, exp

    def readings_at(self, point: datetime) -> tuple[CountArray, CountArray]:
        """Counts of every meter at one time point (route A collection), NO_DATA if absent."""
        k = self._point_index(point.timestamp())
        newest = self._newest_index()
        if not 0 <= k < self.capacity_points or k > newest:
            none = np.full(self.n, NO_DATA, dtype=np.uint32)
            return none, none.copy()
        return self._import_points[:, k].copy(), self._export_points[:, k].copy()

    # -- construction helpers -----------------------------------------------------------
    @classmethod
    def synthetic(
        cls,
        n: int,
        now: datetime,
        *,
        days: int = HISTORY_DAYS,
        seed: int = 0,
        pv_share: float = 0.4,
        coefficient: int = 1,
        unit_code: int = 0x01,
        digits: int = 6,
    ) -> MeterFleet:
        """``n`` meters with ``days`` of past history up to ``now``, generated vectorised
        from household load shapes, the seeded weather and clear-sky PV (no per-device
        physics: fast enough for fleets of tens of thousands)."""
        from erab.devices import synthetic_site_energy

        now_s = now.timestamp()
        origin_s = _midnight_jst_s(now_s) - days * 86_400
        slots = int((now_s - origin_s) // SLOT_S)
        imp, exp = synthetic_site_energy(n, origin_s, slots, seed=seed, pv_share=pv_share)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 17])
        fleet = cls(
            n,
            datetime.fromtimestamp(origin_s, JST),
            coefficient=coefficient,
            unit_code=unit_code,
            digits=digits,
            initial_import_kwh=rng.uniform(0.0, 20_000.0, n),
        )
        fleet.load_history(imp, exp)
        return fleet


def _checked_breaker_a(amperes: float) -> float:
    if not 5 <= amperes <= 200:  # also refuses NaN
        raise ValueError(f"breaker setting must be 5-200 A, got {amperes}")
    return float(amperes)


def _checked_demand_limit_w(limit_w: float) -> float:
    if not (math.isfinite(limit_w) and limit_w > 0):
        raise ValueError(f"demand limit must be a positive number of W, got {limit_w}")
    return float(limit_w)


def _date_time7(when: datetime) -> bytes:
    """YYYY MM DD hh mm ss in JST (Appendix date-time)."""
    t = when.astimezone(JST)
    return struct.pack(">HBBBBB", t.year, t.month, t.day, t.hour, t.minute, t.second)


class SmartMeter(DeviceObject):
    """One meter of a :class:`MeterFleet` as ECHONET Lite object 0x0288.

    Public methods (for route B, a dongle emulator and the route A head-end):

    - ``import_kwh`` / ``export_kwh``: true cumulative energy (kWh), ``power_w``: net now.
    - ``history(day)``: the 48 :class:`MeterReading` of day ``day`` (0 = today, 1 =
      yesterday, … 99), None values where there is no data (as 0xE2/0xE4 answer).
    - ``reading_at(point)``: the :class:`MeterReading` at one 30-minute time point.
    - ``latest_reading()``: the newest time point (what 0xEA/0xEB give).
    - ``disconnect()`` / ``connect()``: remote switch (route A); ``set_breaker(amperes)``:
      remote contract-breaker setting; ``set_demand_limit(limit_w)``: remote demand limit;
      ``configure(...)``: both at once, checked before either is applied; ``connected``:
      whether power flows; ``demand_cut``: whether the demand limit has cut the supply.
    - EPCs served: 0x80, 0xD0, 0xD3, 0xD7, 0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5 (set), 0xE7,
      0xE8, 0xEA, 0xEB, 0xEC, 0xED (set), 0xEE, 0xEF (set), 0x97, 0x98, plus the node's
      usual ones.
    """

    def __init__(
        self, fleet: MeterFleet, index: int, *, instance: int = 1, route_b_id: bytes | None = None
    ) -> None:
        self.fleet = fleet
        self.index = index
        self.history_day = 0  # 0xE5
        self.log2_point: datetime | None = None  # 0xED
        self.log2_segments = 6
        self.log3_point: datetime | None = None  # 0xEF
        self.log3_segments = 10
        values = {
            0xD3: struct.pack(">I", fleet.coefficient),
            0xD7: bytes((fleet.digits,)),
            0xE1: bytes((fleet.unit_code,)),
            0xE5: b"\x00",
            0xED: b"\xff\xff\xff\xff\xff\xff\x06",
            0xEF: b"\xff\xff\xff\xff\xff\xff\x0a",
        }
        if route_b_id is not None:
            values[0xC0] = bytes(route_b_id)
        for epc in LIVE_EPCS:
            live = self.on_get(epc)
            if live is not None:
                values[epc] = live
        super().__init__(EOJ(0x02, 0x88, instance), values)

    # -- the model's view ------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.fleet.time_s, JST)

    @property
    def import_kwh(self) -> float:
        return float(self.fleet.import_wh[self.index]) / 1000.0

    @property
    def export_kwh(self) -> float:
        return float(self.fleet.export_wh[self.index]) / 1000.0

    @property
    def power_w(self) -> float:
        return float(self.fleet.net_w[self.index])

    @property
    def connected(self) -> bool:
        """Whether power flows: switch closed, breaker not tripped, not cut by the demand
        limit."""
        return bool(self.fleet.connected[self.index] and not self.fleet.demand_cut[self.index])

    @property
    def demand_cut(self) -> bool:
        """Whether the demand limit has cut the supply (restored by :meth:`connect` or a
        new limit the site's load does not exceed)."""
        return bool(self.fleet.demand_cut[self.index])

    @property
    def demand_limit_w(self) -> float | None:
        """The remote demand limit (W), None when none is set."""
        limit = float(self.fleet.demand_limit_w[self.index])
        return None if math.isinf(limit) else limit

    @property
    def breaker_a(self) -> float | None:
        """The remote breaker setting (A), None when none is set."""
        amperes = float(self.fleet.breaker_a[self.index])
        return None if math.isinf(amperes) else amperes

    def _supply_changed(self) -> None:
        self.fleet.enforce_limits(self.index)
        self.update(0x80, b"\x30" if self.connected else b"\x31")

    def disconnect(self) -> None:
        """Remote switch off (route A): the site draws and feeds nothing."""
        self.fleet.connected[self.index] = False
        self._supply_changed()

    def connect(self) -> None:
        """Remote switch on (route A), also after a breaker trip or a demand-limit cut.

        The switch closes onto the site's present load: if that still exceeds the breaker
        setting or the demand limit, the supply is cut again at once."""
        self.fleet.connected[self.index] = True
        self.fleet.demand_cut[self.index] = False
        self._supply_changed()

    def set_breaker(self, amperes: float) -> None:
        """Remote contract-breaker setting (route A): over this import current the supply
        trips (checked now and at every observation; cut until :meth:`connect`)."""
        self.fleet.breaker_a[self.index] = _checked_breaker_a(amperes)
        self._supply_changed()

    def set_demand_limit(self, limit_w: float | None) -> None:
        """Remote demand limit (route A), W of import power; ``None`` removes it.

        While the site imports more than the limit the supply is cut (checked now and at
        every observation).  Setting a limit, or removing it, re-closes a supply the old
        limit had cut, and the site's present load is checked against the new one: raising
        the limit above the load restores the supply.  Export is never limited."""
        limit = math.inf if limit_w is None else _checked_demand_limit_w(limit_w)
        self.fleet.demand_limit_w[self.index] = limit
        self.fleet.demand_cut[self.index] = False
        self._supply_changed()

    def configure(
        self, *, breaker_a: float | None = None, demand_limit_w: float | None = None
    ) -> None:
        """Set the breaker and/or the demand limit; both are checked before either is
        applied, so a bad value changes nothing (``None`` leaves a setting as it is)."""
        if breaker_a is not None:
            _checked_breaker_a(breaker_a)
        if demand_limit_w is not None:
            _checked_demand_limit_w(demand_limit_w)
        if breaker_a is not None:
            self.set_breaker(breaker_a)
        if demand_limit_w is not None:
            self.set_demand_limit(demand_limit_w)

    def _day_start(self, day: int) -> datetime:
        today = self.now.date()
        d = today - timedelta(days=day)
        return datetime(d.year, d.month, d.day, tzinfo=JST)

    def history(self, day: int = 0) -> list[MeterReading]:
        """The 48 readings (00:00 … 23:30) of ``day`` days ago (0xE2/0xE4 content)."""
        if not 0 <= day <= 99:
            raise ValueError(f"history day must be 0-99 (EPC 0xE5), got {day}")
        start = self._day_start(day)
        imp, exp = self.fleet.points(self.index, start.timestamp(), POINTS_PER_DAY)
        f = self.fleet.count_to_kwh
        return [
            MeterReading(start + timedelta(seconds=SLOT_S * k), f(i), f(e))
            for k, (i, e) in enumerate(zip(imp, exp, strict=True))
        ]

    def reading_at(self, point: datetime) -> MeterReading:
        """The reading at one 30-minute time point (aware datetime on :00 or :30)."""
        if point.tzinfo is None:
            raise ValueError(f"reading_at needs an aware datetime, got {point!r}")
        if point.second or point.microsecond or point.minute not in (0, 30):
            raise ValueError(f"{point.isoformat()} is not a 30-minute time point (:00 or :30)")
        imp, exp = self.fleet.points(self.index, point.timestamp(), 1)
        f = self.fleet.count_to_kwh
        return MeterReading(point.astimezone(JST), f(imp[0]), f(exp[0]))

    def latest_reading(self) -> MeterReading:
        """The newest time point's reading (0xEA/0xEB)."""
        return self.reading_at(datetime.fromtimestamp(self.fleet.newest_point_s(), JST))

    # -- ECHONET Lite -------------------------------------------------------------------------
    def _scaling(self) -> dict[str, int]:
        return {"coefficient": self.fleet.coefficient, "unit_code": self.fleet.unit_code}

    def _count_now(self, energy_wh: float) -> int:
        return int(self.fleet.counts(np.array([energy_wh]))[0])

    def on_get(self, epc: int) -> bytes | None:
        fleet, i = self.fleet, self.index
        if epc == 0xE0:
            return struct.pack(">I", self._count_now(fleet.import_wh[i]))
        if epc == 0xE3:
            return struct.pack(">I", self._count_now(fleet.export_wh[i]))
        if epc == 0xE7:
            return struct.pack(">i", round(self.power_w))
        if epc == 0xE8:
            r, t = fleet.currents_a()[:, i]
            return struct.pack(">hh", round(r * 10), round(t * 10))
        if epc in (0xE2, 0xE4):
            # Appendix 0x0288 EPC 0xE2/0xE4: day (2 bytes) + 48 cumulative values, 00:00 first
            readings = self.history(self.history_day)
            values = [r.import_kwh if epc == 0xE2 else r.export_kwh for r in readings]
            return meterdata.encode_daily_history(self.history_day, values, **self._scaling())
        if epc in (0xEA, 0xEB):
            # EPC 0xEA/0xEB: date and time of the newest 30-minute point + its value
            r = self.latest_reading()
            value = r.import_kwh if epc == 0xEA else r.export_kwh
            return meterdata.encode_fixed_time_reading(
                meterdata.Reading(r.point, value), **self._scaling()
            )
        if epc == 0xEC:
            # EPC 0xEC: from the 0xED point back in time, N pairs (normal, reverse)
            point = self.log2_point or datetime.fromtimestamp(fleet.newest_point_s(), JST)
            segments = []
            for k in range(self.log2_segments):
                r = self.reading_at(point - timedelta(seconds=SLOT_S * k))
                segments.append(meterdata.SegmentReading(r.point, r.import_kwh, r.export_kwh))
            return meterdata.encode_segment_history(segments, **self._scaling())
        if epc == 0xD0:
            # EPC 0xD0 (Release R): date-time of the newest one-minute point + both counts
            minute_s = fleet.time_s // 60 * 60
            imp1, exp1 = fleet.minute_points(i, minute_s, 1)
            if imp1[0] == NO_DATA:  # no minute observed yet: the registers now
                imp1 = [self._count_now(fleet.import_wh[i])]
                exp1 = [self._count_now(fleet.export_wh[i])]
            stamp = datetime.fromtimestamp(minute_s, JST)
            return _date_time7(stamp) + struct.pack(">II", imp1[0], exp1[0])
        if epc == 0xEE:
            # EPC 0xEE: from the 0xEF minute back in time, N pairs (normal, reverse)
            minute_s = (
                fleet.time_s // 60 * 60 if self.log3_point is None else self.log3_point.timestamp()
            )
            n = self.log3_segments
            imp, exp = fleet.minute_points(i, minute_s, n)
            pairs = b"".join(struct.pack(">II", a, b) for a, b in zip(imp, exp, strict=True))
            head = _date_time7(datetime.fromtimestamp(minute_s, JST))[:6]
            return head + bytes((n,)) + pairs
        if epc == 0x97:
            t = self.now
            return bytes((t.hour, t.minute))
        if epc == 0x98:
            d: date = self.now.date()
            return struct.pack(">HBB", d.year, d.month, d.day)
        if epc == 0x80:
            return b"\x30" if self.connected else b"\x31"
        return None

    def on_set(self, epc: int, edt: bytes) -> None:
        if epc == 0xE5:
            day = edt[0]
            if day == 0xFF:
                day = 0  # default value: today
            if day > 99:
                raise SetRejected(f"0xE5 day {day} is over 99")
            self.history_day = day
        elif epc == 0xED:
            # 0xED: a 30-minute point (minute 0 or 30) + 1-12 segments; all-FF = newest
            self.log2_point, self.log2_segments = _history_request(
                edt, epc, max_segments=12, half_hours=True
            )
        elif epc == 0xEF:
            # 0xEF: a minute + 1-10 segments; all-FF = newest
            self.log3_point, self.log3_segments = _history_request(
                edt, epc, max_segments=10, half_hours=False
            )


def _history_request(
    edt: bytes, epc: int, *, max_segments: int, half_hours: bool
) -> tuple[datetime | None, int]:
    """Parse a history request (YYYY MM DD hh mm + segments): the point (None = newest)
    and the number of segments; SetRejected names what is wrong."""
    if len(edt) != 7:
        raise SetRejected(f"0x{epc:02X} needs 7 bytes: YYYY MM DD hh mm + segments")
    year, month, day, hour, minute, segments = struct.unpack(">HBBBBB", edt)
    if not 1 <= segments <= max_segments:
        raise SetRejected(f"0x{epc:02X} segments {segments} not in 1-{max_segments}")
    if edt[:6] == b"\xff" * 6:
        return None, segments
    if half_hours and minute not in (0, 30):
        raise SetRejected(f"0x{epc:02X} minute must be 0 or 30")
    try:
        return datetime(year, month, day, hour, minute, tzinfo=JST), segments
    except ValueError as exc:
        raise SetRejected(f"0x{epc:02X} date is not a date: {exc}") from exc
