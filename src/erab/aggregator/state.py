"""The aggregator's live fleet state: one numpy column per quantity, one row per resource.

Every resource the registry admits gets a row ``i``; ingest feeds telemetry in batches of
``(resource, field, value, time)`` arrays and :meth:`FleetState.apply` updates the rows in
one vectorised step.  Readings that cannot be true (a SOC outside 0–100 %, a power beyond
1.5 × the rating, a room temperature outside −20…60 °C, a time in the future, a field the
resource does not have) are flagged and not stored, so flexibility and dispatch never plan
on them.  A resource silent for longer than ``silence_s`` is marked offline.

Sign convention (as the devices and ECHONET Lite 0xD3 use): ``power_kw`` is seen from the
site, positive when the resource consumes (a battery charging, an air conditioner running),
negative when it gives (a battery discharging, PV generating).

Per site, the state also keeps the site's smart-meter power (``site_meter_kw``, import
positive, EPC 0xE7) when its gateway sends meter readings (:meth:`FleetState.apply_meter`):
flexibility needs a site's import to know how far a battery that may not export can
discharge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, IntFlag

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
CodeArray = npt.NDArray[np.int8]


class ResourceKind(IntEnum):
    """What a resource is; stored as a small int code in :attr:`FleetState.kind`."""

    BATTERY = 0
    AIRCON = 1
    WATER_HEATER = 2
    EV = 3
    PV = 4
    OTHER = 5


class TelemetryField(IntEnum):
    """Which measured column a telemetry reading updates."""

    POWER_KW = 0
    ENERGY_KWH = 1
    SOC_PCT = 2
    SETPOINT_C = 3
    ROOM_TEMP_C = 4
    OUTDOOR_TEMP_C = 5


_FIELD_COLUMNS = tuple(f.name.lower() for f in TelemetryField)
# the columns the registry sets, one value per resource (the live ones come from telemetry)
_STATIC_COLUMNS = (
    "kind", "site", "rated_kw", "capacity_kwh", "comfort_low_c", "comfort_high_c",
    "soc_reserve_pct", "soc_max_pct", "shiftable_kwh", "deadline_s", "available",
    "export_allowed",
)  # fmt: skip

# Which fields each kind can report (rows: ResourceKind, columns: TelemetryField).  A reading
# of a field the kind lacks (a SOC from an air conditioner) is a mapping error upstream.
_APPLICABLE = np.zeros((len(ResourceKind), len(TelemetryField)), dtype=np.bool_)
_APPLICABLE[:, [TelemetryField.POWER_KW, TelemetryField.ENERGY_KWH]] = True
_APPLICABLE[[ResourceKind.BATTERY, ResourceKind.EV], TelemetryField.SOC_PCT] = True
_APPLICABLE[ResourceKind.AIRCON, TelemetryField.SETPOINT_C] = True
_APPLICABLE[ResourceKind.AIRCON, TelemetryField.ROOM_TEMP_C] = True
_APPLICABLE[ResourceKind.AIRCON, TelemetryField.OUTDOOR_TEMP_C] = True
_APPLICABLE[ResourceKind.WATER_HEATER, TelemetryField.SETPOINT_C] = True
_APPLICABLE[ResourceKind.OTHER, :] = True

POWER_RATED_FACTOR = 1.5
"""A power reading beyond this multiple of the rating is flagged, not stored."""
ROOM_TEMP_RANGE_C = (-20.0, 60.0)
"""Room temperatures outside this range (°C) are flagged, not stored."""


class ReadingFlag(IntFlag):
    """Why a telemetry reading was not stored (0 = stored)."""

    OK = 0
    UNKNOWN_RESOURCE = 1
    UNKNOWN_FIELD = 2
    NOT_FINITE = 4
    SOC_OUT_OF_RANGE = 8
    POWER_BEYOND_RATED = 16
    ROOM_TEMP_OUT_OF_RANGE = 32
    TIME_IN_FUTURE = 64
    FIELD_NOT_APPLICABLE = 128
    OUT_OF_ORDER = 256
    """Older than the value already stored for that field (a redelivered message)."""


@dataclass(frozen=True)
class TelemetryBatch:
    """Telemetry readings as four equal-length columns (one row per reading)."""

    resource: IntArray
    field: IntArray
    value: FloatArray
    time_s: FloatArray

    def __post_init__(self) -> None:
        for name in ("resource", "field", "value", "time_s"):
            column = np.asarray(getattr(self, name))
            if column.ndim != 1:
                raise ValueError(f"TelemetryBatch.{name} must be one-dimensional")
        lengths = {len(self.resource), len(self.field), len(self.value), len(self.time_s)}
        if len(lengths) != 1:
            raise ValueError(
                "TelemetryBatch columns differ in length: "
                f"resource {len(self.resource)}, field {len(self.field)}, "
                f"value {len(self.value)}, time_s {len(self.time_s)}"
            )

    @classmethod
    def of(
        cls,
        resource: npt.ArrayLike,
        field: npt.ArrayLike,
        value: npt.ArrayLike,
        time_s: npt.ArrayLike,
    ) -> TelemetryBatch:
        """A batch from array-likes (fields may be :class:`TelemetryField` members)."""
        return cls(
            resource=np.atleast_1d(np.asarray(resource, dtype=np.int64)),
            field=np.atleast_1d(np.asarray(field, dtype=np.int64)),
            value=np.atleast_1d(np.asarray(value, dtype=np.float64)),
            time_s=np.atleast_1d(np.asarray(time_s, dtype=np.float64)),
        )

    def __len__(self) -> int:
        return len(self.resource)


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`FleetState.apply` did with a batch."""

    flags: npt.NDArray[np.int16]
    """Per reading, a :class:`ReadingFlag` value; 0 where the reading was stored."""
    went_offline: IntArray
    """Resources that were online and are now offline (silent past ``silence_s``): alert."""

    @property
    def stored(self) -> int:
        return int(np.count_nonzero(self.flags == 0))

    @property
    def flagged(self) -> int:
        return int(np.count_nonzero(self.flags))


def _column(value: npt.ArrayLike | None, n: int, default: float, name: str) -> FloatArray:
    out = np.full(n, default, dtype=np.float64)
    if value is not None:
        array = np.asarray(value, dtype=np.float64)
        if array.ndim > 1 or (array.ndim == 1 and len(array) != n):
            raise ValueError(f"{name} has shape {array.shape}; expected a scalar or {n} values")
        out[:] = array
    return out


@dataclass(eq=False)
class FleetState:
    """Columns over all resources; row ``i`` is resource ``i`` of the registry.

    Static columns (from the registry): ``kind`` (:class:`ResourceKind` codes), ``site``
    (site index, used by the per-site thermal models), ``rated_kw``, ``capacity_kwh``; the
    constraints ``comfort_low_c``/``comfort_high_c`` (air conditioners), ``soc_reserve_pct``
    and ``soc_max_pct`` (batteries, EVs), ``shiftable_kwh`` and ``deadline_s`` (water heaters
    and EVs: energy still to deliver, and the POSIX time by which), ``available``.

    Live columns (from telemetry; NaN until first heard): ``power_kw``, ``energy_kwh``
    (cumulative meter), ``soc_pct``, ``setpoint_c``, ``room_temp_c``, ``outdoor_temp_c``,
    ``online``, ``last_seen_s`` (POSIX seconds, −inf until first heard).

    ``export_allowed`` (per resource, False by default): whether a battery's site lets
    storage flow back to the grid; under the usual Japanese low-voltage contracts it may
    not, so a battery discharges at most what its site imports.

    Per site (index ``0 … max(site)``): ``site_meter_kw`` (the smart meter's power, import
    positive; NaN until heard or once silent past ``silence_s``) and ``site_meter_time_s``.
    """

    kind: CodeArray
    site: IntArray
    rated_kw: FloatArray
    capacity_kwh: FloatArray
    comfort_low_c: FloatArray
    comfort_high_c: FloatArray
    soc_reserve_pct: FloatArray
    soc_max_pct: FloatArray
    shiftable_kwh: FloatArray
    deadline_s: FloatArray
    available: BoolArray
    export_allowed: BoolArray = field(default_factory=lambda: np.zeros(0, dtype=np.bool_))
    """Empty: none may export (the default)."""
    silence_s: float = 300.0
    future_tolerance_s: float = 5.0
    """Readings stamped this far ahead of ``now`` are accepted (clock skew between sites)."""
    power_kw: FloatArray = field(init=False)
    energy_kwh: FloatArray = field(init=False)
    soc_pct: FloatArray = field(init=False)
    setpoint_c: FloatArray = field(init=False)
    room_temp_c: FloatArray = field(init=False)
    outdoor_temp_c: FloatArray = field(init=False)
    online: BoolArray = field(init=False)
    last_seen_s: FloatArray = field(init=False)
    site_meter_kw: FloatArray = field(init=False)
    site_meter_time_s: FloatArray = field(init=False)
    _field_time_s: FloatArray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.kind)
        if not np.isin(self.kind, [k.value for k in ResourceKind]).all():
            bad = sorted(set(np.asarray(self.kind).tolist()) - {k.value for k in ResourceKind})
            raise ValueError(f"unknown resource kind codes {bad}; see ResourceKind")
        if not self.silence_s > 0:
            raise ValueError(f"silence_s must be positive, got {self.silence_s}")
        for name in _STATIC_COLUMNS[1:-1]:  # export_allowed may be empty (none may)
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows; kind has {n}")
        if (self.comfort_low_c > self.comfort_high_c).any():
            i = int(np.argmax(self.comfort_low_c > self.comfort_high_c))
            raise ValueError(f"resource {i}: comfort_low_c is above comfort_high_c")
        if ((self.soc_reserve_pct < 0) | (self.soc_max_pct > 100)).any() or (
            self.soc_reserve_pct > self.soc_max_pct
        ).any():
            raise ValueError("SOC limits must satisfy 0 <= soc_reserve_pct <= soc_max_pct <= 100")
        if (self.rated_kw < 0).any() or (self.capacity_kwh < 0).any():
            raise ValueError("rated_kw and capacity_kwh must not be negative")
        for name in _FIELD_COLUMNS:
            setattr(self, name, np.full(n, np.nan))
        self.online = np.zeros(n, dtype=np.bool_)
        self.last_seen_s = np.full(n, -np.inf)
        self._field_time_s = np.full((n, len(TelemetryField)), -np.inf)
        allowed = np.zeros(n, dtype=np.bool_)
        if len(self.export_allowed):
            allowed[:] = self.export_allowed
        self.export_allowed = allowed
        sites = int(self.site.max()) + 1 if n else 0
        self.site_meter_kw = np.full(sites, np.nan)
        self.site_meter_time_s = np.full(sites, -np.inf)

    @classmethod
    def create(
        cls,
        kind: npt.ArrayLike,
        *,
        site: npt.ArrayLike | None = None,
        rated_kw: npt.ArrayLike | None = None,
        capacity_kwh: npt.ArrayLike | None = None,
        comfort_low_c: npt.ArrayLike | None = None,
        comfort_high_c: npt.ArrayLike | None = None,
        soc_reserve_pct: npt.ArrayLike | None = None,
        soc_max_pct: npt.ArrayLike | None = None,
        shiftable_kwh: npt.ArrayLike | None = None,
        deadline_s: npt.ArrayLike | None = None,
        available: npt.ArrayLike | None = None,
        export_allowed: npt.ArrayLike | None = None,
        silence_s: float = 300.0,
        future_tolerance_s: float = 5.0,
    ) -> FleetState:
        """A fleet from its static columns; each may be a scalar (all rows) or ``n`` values.

        Defaults: site ``i`` for resource ``i``, comfort band 20–28 °C, SOC reserve 20 % and
        maximum 95 %, nothing shiftable, every resource available, no export from storage.
        """
        kinds = np.atleast_1d(np.asarray(kind, dtype=np.int64))
        n = len(kinds)
        sites = np.arange(n) if site is None else np.asarray(site, dtype=np.int64)
        return cls(
            kind=kinds.astype(np.int8),
            site=np.broadcast_to(sites, (n,)).astype(np.int64),
            rated_kw=_column(rated_kw, n, 0.0, "rated_kw"),
            capacity_kwh=_column(capacity_kwh, n, 0.0, "capacity_kwh"),
            comfort_low_c=_column(comfort_low_c, n, 20.0, "comfort_low_c"),
            comfort_high_c=_column(comfort_high_c, n, 28.0, "comfort_high_c"),
            soc_reserve_pct=_column(soc_reserve_pct, n, 20.0, "soc_reserve_pct"),
            soc_max_pct=_column(soc_max_pct, n, 95.0, "soc_max_pct"),
            shiftable_kwh=_column(shiftable_kwh, n, 0.0, "shiftable_kwh"),
            deadline_s=_column(deadline_s, n, np.nan, "deadline_s"),
            available=_column(available, n, 1.0, "available").astype(np.bool_),
            export_allowed=_column(export_allowed, n, 0.0, "export_allowed").astype(np.bool_),
            silence_s=silence_s,
            future_tolerance_s=future_tolerance_s,
        )

    def __len__(self) -> int:
        return len(self.kind)

    def extend(self, more: FleetState) -> None:
        """Append ``more``'s rows after these, in place: the new rows take ``more``'s static
        columns and start unheard (live columns NaN, offline, never seen), as a fresh fleet's
        rows do; every row already here keeps its row number and all its values.

        ``more.site`` indexes this fleet's sites: a new site is the next index up, and the
        per-site meter columns grow to cover it (unheard).  Nothing moves, so whatever holds
        a row or site index (an event's commands, the thermal models) stays right."""
        if len(more) and int(more.site.min()) < 0:
            raise ValueError(f"site index {int(more.site.min())} is negative")
        for name in _STATIC_COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(more, name)]))
        for name in _FIELD_COLUMNS:
            setattr(self, name, np.concatenate([getattr(self, name), getattr(more, name)]))
        self.online = np.concatenate([self.online, more.online])
        self.last_seen_s = np.concatenate([self.last_seen_s, more.last_seen_s])
        self._field_time_s = np.concatenate([self._field_time_s, more._field_time_s])
        sites = max(self.sites, int(self.site.max()) + 1 if len(self) else 0)
        grow = sites - self.sites
        self.site_meter_kw = np.concatenate([self.site_meter_kw, np.full(grow, np.nan)])
        self.site_meter_time_s = np.concatenate([self.site_meter_time_s, np.full(grow, -np.inf)])

    def restate(self, rows: npt.ArrayLike, more: FleetState) -> None:
        """Set the static columns of ``rows`` (a registry edit: comfort band, SOC limits,
        rating) from ``more``'s rows, one each in order; their live values stay.  A row's
        kind and site cannot change here: the resource would need a row of its own."""
        idx = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        if len(idx) != len(more):
            raise ValueError(f"{len(idx)} rows to restate but {len(more)} rows of values")
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise ValueError(f"row out of range: the fleet has {len(self)} rows")
        moved = (self.kind[idx] != more.kind) | (self.site[idx] != more.site)
        if moved.any():
            row = int(idx[np.argmax(moved)])
            raise ValueError(f"resource {row}: its kind or site differs; append it instead")
        for name in _STATIC_COLUMNS:
            if name not in ("kind", "site"):
                getattr(self, name)[idx] = getattr(more, name)

    def column(self, telemetry_field: TelemetryField) -> FloatArray:
        """The live column a :class:`TelemetryField` updates."""
        column: FloatArray = getattr(self, _FIELD_COLUMNS[telemetry_field])
        return column

    def reading_time_s(self, telemetry_field: TelemetryField) -> FloatArray:
        """Per resource, the time of its newest stored reading of ``telemetry_field`` (POSIX
        s, −inf until heard)."""
        return np.asarray(self._field_time_s[:, int(telemetry_field)], dtype=np.float64)

    def check(self, batch: TelemetryBatch, now_s: float) -> npt.NDArray[np.int16]:
        """The :class:`ReadingFlag` of each reading of ``batch``, without storing anything."""
        n = len(self)
        res, fld, value, t = batch.resource, batch.field, batch.value, batch.time_s
        flags = np.zeros(len(batch), dtype=np.int16)
        known = (res >= 0) & (res < n)
        flags[~known] |= ReadingFlag.UNKNOWN_RESOURCE
        field_ok = (fld >= 0) & (fld < len(TelemetryField))
        flags[~field_ok] |= ReadingFlag.UNKNOWN_FIELD
        flags[~(np.isfinite(value) & np.isfinite(t))] |= ReadingFlag.NOT_FINITE
        flags[t > now_s + self.future_tolerance_s] |= ReadingFlag.TIME_IN_FUTURE
        # The remaining checks need a valid row and field; index with safe stand-ins.
        ok = known & field_ok
        r = np.where(ok, res, 0)
        f = np.where(ok, fld, 0)
        applicable = _APPLICABLE[self.kind[r], f]
        flags[ok & ~applicable] |= ReadingFlag.FIELD_NOT_APPLICABLE
        soc = ok & (f == TelemetryField.SOC_PCT) & ((value < 0) | (value > 100))
        flags[soc] |= ReadingFlag.SOC_OUT_OF_RANGE
        rated = self.rated_kw[r]
        too_much = (rated > 0) & (np.abs(value) > POWER_RATED_FACTOR * rated)
        flags[ok & (f == TelemetryField.POWER_KW) & too_much] |= ReadingFlag.POWER_BEYOND_RATED
        low, high = ROOM_TEMP_RANGE_C
        room = ok & (f == TelemetryField.ROOM_TEMP_C) & ((value < low) | (value > high))
        flags[room] |= ReadingFlag.ROOM_TEMP_OUT_OF_RANGE
        stale = ok & (t < self._field_time_s[r, f])
        flags[stale & (flags == 0)] |= ReadingFlag.OUT_OF_ORDER
        return flags

    def apply(self, batch: TelemetryBatch, now_s: float) -> ApplyResult:
        """Store the batch's valid readings, flag the rest, and mark silent resources offline.

        Within a batch the latest reading of each (resource, field) wins; a reading older
        than the stored one for its field is flagged ``OUT_OF_ORDER`` (JetStream redelivers).
        """
        flags = self.check(batch, now_s)
        good = np.flatnonzero(flags == 0)
        nfields = len(TelemetryField)
        key = batch.resource[good] * nfields + batch.field[good]
        t = batch.time_s[good]
        order = np.lexsort((t, key))  # by key, then time: the last of each key run is newest
        key_sorted = key[order]
        last = np.ones(len(order), dtype=np.bool_)
        last[:-1] = key_sorted[1:] != key_sorted[:-1]
        rows = good[order[last]]
        res, fld = batch.resource[rows], batch.field[rows]
        times = batch.time_s[rows]
        for f in TelemetryField:
            sel = fld == f
            self.column(f)[res[sel]] = batch.value[rows[sel]]
        self._field_time_s[res, fld] = times
        # A resource's newest stored reading of any field makes it seen.
        np.maximum.at(self.last_seen_s, res, times)
        return ApplyResult(flags=flags, went_offline=self.mark_silent(now_s))

    def mark_silent(self, now_s: float) -> IntArray:
        """Mark resources silent past ``silence_s`` offline (and forget site meters silent as
        long); returns the resources that just went."""
        was_online = self.online.copy()
        self.online = (now_s - self.last_seen_s) <= self.silence_s
        self.site_meter_kw[(now_s - self.site_meter_time_s) > self.silence_s] = np.nan
        return np.flatnonzero(was_online & ~self.online)

    @property
    def sites(self) -> int:
        """How many sites the columns index (``max(site) + 1``)."""
        return len(self.site_meter_kw)

    def apply_meter(
        self, site: npt.ArrayLike, power_kw: npt.ArrayLike, time_s: npt.ArrayLike, now_s: float
    ) -> int:
        """Store sites' smart-meter power (kW, import positive); the newest reading of each
        site wins, and one older than the stored one, stamped in the future, not finite or
        of an unknown site is dropped.  Returns the readings stored."""
        sites = np.atleast_1d(np.asarray(site, dtype=np.int64))
        kw = np.atleast_1d(np.asarray(power_kw, dtype=np.float64))
        t = np.atleast_1d(np.asarray(time_s, dtype=np.float64))
        known = (sites >= 0) & (sites < self.sites)
        ok = known & np.isfinite(kw) & np.isfinite(t) & (t <= now_s + self.future_tolerance_s)
        ok[known] &= t[known] >= self.site_meter_time_s[sites[known]]
        good = np.flatnonzero(ok)
        order = good[np.lexsort((t[good], sites[good]))]
        last = np.ones(len(order), dtype=np.bool_)
        last[:-1] = sites[order][1:] != sites[order][:-1]
        newest = order[last]
        self.site_meter_kw[sites[newest]] = kw[newest]
        self.site_meter_time_s[sites[newest]] = t[newest]
        return len(newest)

    def soc_kwh(self) -> FloatArray:
        """Stored energy (kWh) from SOC and capacity; NaN where the SOC is unknown."""
        return np.asarray(self.soc_pct * self.capacity_kwh / 100.0, dtype=np.float64)
