"""Seeded weather: outdoor temperature and cloudiness by day and hour, and the sun.

One :class:`Weather` is shared by every site of a region (nearby sites see the same sky).
Values are a pure function of ``(seed, time)``: asking for any instant, in any order,
gives the same answer, so a simulation can jump (history generation) or step (live run).

Temperatures follow a climate's monthly normals (Tokyo by default, JMA 1991-2020 normals)
with a day-to-day anomaly and a diurnal cycle (minimum near sunrise, maximum at 14:00).
Cloudiness (0 = clear, 1 = overcast) is drawn per day around the month's mean and varies
hour to hour.  :class:`Sky` turns position and cloudiness into irradiance with pvlib
(solar position, Ineichen clear sky with the month's Linke turbidity, a cloud attenuation
fitted by month to the observed global irradiance, Erbs split).

Why not Kasten-Czeplak (GHI × (1 − 0.75 N^3.4)) with the observed cloud amount: under
Japan's humid, layered skies it leaves far too much sun (1,450-1,510 kWh/m² a year in Tokyo
against about 1,310 observed), because a sky half covered in Tokyo's summer haze and
stratus passes much less than half the clear-sky beam.  The attenuation here is
``1 − a_month · N^1.5``, with ``a_month`` fitted so that each month's mean global
irradiance over seeds 0-2 matches the JMA normal (docs/calibration.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

SECONDS_PER_DAY = 86_400.0
_JST_OFFSET_S = 9 * 3600.0


@dataclass(frozen=True)
class Climate:
    """Monthly normals of a place (index 0 = January)."""

    name: str
    mean_temp_c: tuple[float, ...]
    daily_range_k: tuple[float, ...]
    mean_cloudiness: tuple[float, ...]
    anomaly_sd_k: float = 2.0
    utc_offset_s: float = _JST_OFFSET_S
    linke_turbidity: tuple[float, ...] = (3.5,) * 12
    """Clear-sky Linke turbidity by month (Ineichen model)."""
    cloud_attenuation: tuple[float, ...] = (0.75,) * 12
    """``a`` of GHI = clear × (1 − a · N^1.5) by month: the share of clear-sky irradiance
    an overcast sky (N = 1) takes away."""
    mean_ghi_kwh_m2_day: tuple[float, ...] | None = None
    """Observed mean daily global horizontal irradiation by month (the fit's target)."""


TOKYO = Climate(
    name="Tokyo",
    # JMA Tokyo normals 1991-2020: monthly mean air temperature (°C)
    mean_temp_c=(5.4, 6.1, 9.4, 14.3, 18.8, 21.9, 25.7, 26.9, 23.3, 18.0, 12.5, 7.7),
    # mean daily maximum minus mean daily minimum (K)
    daily_range_k=(8.8, 8.4, 8.2, 8.3, 7.9, 6.6, 6.7, 7.1, 6.6, 6.8, 7.8, 8.6),
    # cloud amount (tenths / 10)
    mean_cloudiness=(0.38, 0.45, 0.58, 0.63, 0.66, 0.78, 0.74, 0.66, 0.72, 0.66, 0.52, 0.40),
    # Monthly Linke turbidity at Tokyo from the Remund et al. (2003) SoDa climatology
    # (pvlib.clearsky.lookup_linke_turbidity at 35.68 N, 139.77 E): hazy, humid summers.
    linke_turbidity=(2.07, 2.54, 2.95, 3.74, 3.80, 4.39, 4.35, 4.00, 3.26, 2.65, 2.16, 2.10),
    # Fitted (seeds 0-2, 15-minute steps, a whole year) to mean_ghi_kwh_m2_day below;
    # December's fit (1.03) is capped at 0.92 so an overcast sky still passes 8 %.
    cloud_attenuation=(0.91, 0.85, 0.71, 0.77, 0.64, 0.69, 0.68, 0.64, 0.71, 0.83, 0.80, 0.92),
    # JMA Tokyo normals 1991-2020, global solar radiation (MJ/m²/day: 9.1, 11.6, 13.9,
    # 16.3, 17.6, 15.0, 16.2, 16.6, 12.9, 10.0, 8.4, 7.8) in kWh/m²/day; about 1,310
    # kWh/m² a year.
    mean_ghi_kwh_m2_day=(2.53, 3.22, 3.86, 4.53, 4.89, 4.17, 4.50, 4.61, 3.58, 2.78, 2.33, 2.17),
)
CLOUD_EXPONENT = 1.5
"""Exponent of the cloud fraction in the attenuation (Kasten-Czeplak's form, refitted)."""


def _local_day_and_hour(
    times_s: FloatArray, utc_offset_s: float
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    local = np.asarray(times_s, dtype=np.float64) + utc_offset_s
    day = np.floor(local / SECONDS_PER_DAY).astype(np.int64)
    hour = (local - day * SECONDS_PER_DAY) / 3600.0
    return day, hour


def _month_index(days: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    months = days.astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12
    return np.asarray(months, dtype=np.int64)


@dataclass
class Weather:
    """Outdoor temperature and cloudiness for one region, reproducible from ``seed``.

    All methods take POSIX seconds (a float or a numpy array) and return arrays of the
    same shape.  ``temperature_c`` is the outdoor air temperature in °C; ``cloudiness``
    is the cloud fraction in [0, 1].
    """

    seed: int = 0
    climate: Climate = TOKYO
    _day_cache: dict[int, tuple[float, float, FloatArray]] = field(default_factory=dict, repr=False)

    def _noise(self, day: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, stream, day + 1_000_000])

    def _day(self, day: int) -> tuple[float, float, FloatArray]:
        """(temperature anomaly K, day cloudiness, 25 hourly cloudiness knots) of one day."""
        cached = self._day_cache.get(day)
        if cached is not None:
            return cached
        # Day-to-day persistence: the anomaly is a weighted sum over neighbouring days'
        # draws, so consecutive days are correlated without generating a sequence.
        weights = (0.25, 0.5, 1.0, 0.5, 0.25)
        draws = [float(self._noise(day + k, 1).standard_normal()) for k in range(-2, 3)]
        norm = float(np.sqrt(sum(w * w for w in weights)))
        anomaly = (
            self.climate.anomaly_sd_k
            * sum(w * d for w, d in zip(weights, draws, strict=True))
            / norm
        )
        month = int(_month_index(np.array([day], dtype=np.int64))[0])
        mean_cloud = self.climate.mean_cloudiness[month]
        rng = self._noise(day, 2)
        # Beta distribution with the month's mean: many clear and many overcast days.
        concentration = 1.6
        day_cloud = float(rng.beta(mean_cloud * concentration, (1 - mean_cloud) * concentration))
        knots = np.clip(day_cloud + 0.15 * rng.standard_normal(25), 0.0, 1.0)
        value = (anomaly, day_cloud, knots)
        if len(self._day_cache) > 4096:
            self._day_cache.clear()
        self._day_cache[day] = value
        return value

    def _per_day(self, days: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray]:
        unique, inverse = np.unique(days, return_inverse=True)
        anomalies = np.empty(unique.shape, dtype=np.float64)
        clouds = np.empty(unique.shape, dtype=np.float64)
        for i, d in enumerate(unique.tolist()):
            anomalies[i], clouds[i], _ = self._day(d)
        return anomalies[inverse], clouds[inverse]

    def cloudiness(self, times_s: float | FloatArray) -> FloatArray:
        """Cloud fraction in [0, 1] at ``times_s`` (interpolated between hourly knots)."""
        t = np.atleast_1d(np.asarray(times_s, dtype=np.float64))
        days, hours = _local_day_and_hour(t, self.climate.utc_offset_s)
        out = np.empty(t.shape, dtype=np.float64)
        for d in np.unique(days).tolist():
            mask = days == d
            knots = self._day(d)[2]
            out[mask] = np.interp(hours[mask], np.arange(25, dtype=np.float64), knots)
        return out.reshape(np.shape(times_s))

    def temperature_c(self, times_s: float | FloatArray) -> FloatArray:
        """Outdoor air temperature in °C at ``times_s``."""
        t = np.atleast_1d(np.asarray(times_s, dtype=np.float64))
        days, hours = _local_day_and_hour(t, self.climate.utc_offset_s)
        months = _month_index(days)
        mean = np.asarray(self.climate.mean_temp_c)[months]
        day_range = np.asarray(self.climate.daily_range_k)[months]
        anomaly, day_cloud = self._per_day(days)
        # Clear days swing wider than overcast ones.
        swing = day_range * (1.25 - 0.5 * day_cloud)
        # Diurnal cycle: maximum at 14:00, minimum at 05:00 (asymmetric cosine).
        rising = (hours >= 5.0) & (hours < 14.0)
        phase = np.where(
            rising,
            np.pi * (hours - 5.0) / 9.0,
            np.pi + np.pi * ((hours - 14.0) % 24.0) / 15.0,
        )
        diurnal = -0.5 * np.cos(phase)
        temp = mean + anomaly + swing * diurnal
        return temp.reshape(np.shape(times_s))


@dataclass(frozen=True)
class SkyState:
    """The sun and the irradiance it gives, per instant (arrays of one shape)."""

    zenith_deg: FloatArray
    azimuth_deg: FloatArray
    ghi_w_m2: FloatArray
    dni_w_m2: FloatArray
    dhi_w_m2: FloatArray
    clear_ghi_w_m2: FloatArray


@dataclass
class Sky:
    """Solar position and irradiance at a place, under a :class:`Weather`'s clouds."""

    latitude_deg: float = 35.68
    longitude_deg: float = 139.77
    altitude_m: float = 40.0
    linke_turbidity: float | None = None
    """One turbidity for every month; ``None`` takes the climate's monthly values."""
    climate: Climate = TOKYO

    def at(self, times_s: FloatArray, cloudiness: FloatArray) -> SkyState:
        """Irradiance at POSIX seconds ``times_s`` with the given cloud fraction."""
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            # pvlib divides by zero for the sun below the horizon; those values are zeroed.
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._at(times_s, cloudiness)

    def _at(self, times_s: FloatArray, cloudiness: FloatArray) -> SkyState:
        import pandas as pd  # type: ignore[import-untyped]
        import pvlib

        t = np.atleast_1d(np.asarray(times_s, dtype=np.float64))
        cloud = np.broadcast_to(np.asarray(cloudiness, dtype=np.float64), t.shape)
        index = pd.DatetimeIndex(pd.to_datetime(t, unit="s", utc=True))
        position = pvlib.solarposition.get_solarposition(
            index, self.latitude_deg, self.longitude_deg, altitude=self.altitude_m
        )
        zenith = position["apparent_zenith"].to_numpy(dtype=np.float64)
        azimuth = position["azimuth"].to_numpy(dtype=np.float64)
        airmass = pvlib.atmosphere.get_relative_airmass(zenith)
        pressure = pvlib.atmosphere.alt2pres(self.altitude_m)
        am_abs = pvlib.atmosphere.get_absolute_airmass(airmass, pressure)
        doy = index.day_of_year.to_numpy()
        dni_extra = np.asarray(pvlib.irradiance.get_extra_radiation(doy), dtype=np.float64)
        days, _ = _local_day_and_hour(t, self.climate.utc_offset_s)
        month = _month_index(days)
        turbidity = (
            np.asarray(self.climate.linke_turbidity, dtype=np.float64)[month]
            if self.linke_turbidity is None
            else np.full(t.shape, float(self.linke_turbidity))
        )
        clear = pvlib.clearsky.ineichen(
            zenith,
            am_abs,
            turbidity,
            altitude=self.altitude_m,
            dni_extra=dni_extra,
        )
        clear_ghi = np.nan_to_num(np.asarray(clear["ghi"], dtype=np.float64))
        clear_ghi = np.where(zenith < 90.0, clear_ghi, 0.0)
        attenuation = np.asarray(self.climate.cloud_attenuation, dtype=np.float64)[month]
        ghi = clear_ghi * (1.0 - attenuation * cloud**CLOUD_EXPONENT)
        split = pvlib.irradiance.erbs(ghi, zenith, doy)
        dni = np.nan_to_num(np.asarray(split["dni"], dtype=np.float64))
        dhi = np.nan_to_num(np.asarray(split["dhi"], dtype=np.float64))
        return SkyState(
            zenith_deg=zenith,
            azimuth_deg=azimuth,
            ghi_w_m2=ghi,
            dni_w_m2=dni,
            dhi_w_m2=dhi,
            clear_ghi_w_m2=clear_ghi,
        )


def to_seconds(when: datetime) -> float:
    """POSIX seconds of an aware datetime."""
    if when.tzinfo is None:
        raise ValueError(f"need an aware datetime, got naive {when!r}")
    return when.timestamp()
