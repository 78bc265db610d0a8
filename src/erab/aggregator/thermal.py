"""A first-order thermal model per site, fitted from the site's own telemetry.

The room temperature ``T`` (°C) of a site with an air conditioner drawing ``P`` kW
(electric) follows

    dT/dt = a (T_out − T) − b P + c        (K/h)

``a`` (1/h) is how fast the room leaks towards outdoors, ``b`` (K/h per kW) how fast the air
conditioner moves it per electric kW (positive when cooling, negative when heating), ``c``
(K/h) the steady gains (sun, people, appliances).  This is the 1R1C room the devices use,
seen from the meter: the heat pump's COP and the latent load are folded into ``b``.

:func:`fit_thermal` finds ``a, b, c`` for every site at once by least squares on the
finite-difference slopes of its samples.  The predictions assume what a dispatcher
faces: the air conditioner is holding the room (dT/dt = 0) when it is curtailed, so only
``a`` and ``b`` matter and the gains cancel.  Curtailing ``X`` kW for ``t`` hours moves the
room by ``(b X / a)(1 − e^{−a t})``; bringing it back afterwards costs ``X (1 − e^{−a t}) / a``
kWh, the rebound, a share ``(1 − e^{−a t}) / (a t)`` of the energy curtailed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

MAX_CONDITION = 1e8
"""A site whose normal equations are worse conditioned than this has too little excitation
(e.g. the air conditioner never changed power) and gets no model."""


@dataclass(frozen=True)
class ThermalModel:
    """``dT/dt = a (T_out − T) − b P + c`` per site (index = site)."""

    a_per_h: FloatArray
    b_k_per_kwh: FloatArray
    """K/h per electric kW (equivalently K per kWh); > 0 cooling, < 0 heating."""
    c_k_per_h: FloatArray
    rmse_k_per_h: FloatArray
    """Root-mean-square residual of the fitted slope."""
    samples: IntArray
    """Slopes the fit used per site."""
    valid: BoolArray
    """Enough samples, well conditioned, a > 0 and b ≠ 0: safe to plan with."""

    def __len__(self) -> int:
        return len(self.a_per_h)

    def for_sites(self, site: IntArray) -> ThermalModel:
        """The model of each entry of ``site`` (one row per resource)."""
        site = np.asarray(site, dtype=np.int64)
        if len(site) and (site.min() < 0 or site.max() >= len(self)):
            raise ValueError(f"site index out of range: the thermal model has {len(self)} sites")
        return ThermalModel(
            a_per_h=self.a_per_h[site],
            b_k_per_kwh=self.b_k_per_kwh[site],
            c_k_per_h=self.c_k_per_h[site],
            rmse_k_per_h=self.rmse_k_per_h[site],
            samples=self.samples[site],
            valid=self.valid[site],
        )

    @classmethod
    def of(
        cls, a_per_h: npt.ArrayLike, b_k_per_kwh: npt.ArrayLike, c_k_per_h: npt.ArrayLike = 0.0
    ) -> ThermalModel:
        """A model from known parameters (e.g. from a registry), marked valid where sane."""
        a = np.atleast_1d(np.asarray(a_per_h, dtype=np.float64))
        b = np.broadcast_to(np.asarray(b_k_per_kwh, dtype=np.float64), a.shape).copy()
        c = np.broadcast_to(np.asarray(c_k_per_h, dtype=np.float64), a.shape).copy()
        valid = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b != 0)
        return cls(a, b, c, np.zeros_like(a), np.zeros(len(a), dtype=np.int64), valid)


def _as_2d(name: str, value: npt.ArrayLike, shape: tuple[int, ...] | None) -> FloatArray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be (sites, samples) or (samples,), got shape {array.shape}")
    if shape is not None:
        try:
            array = np.broadcast_to(array, shape)
        except ValueError:
            raise ValueError(f"{name} has shape {array.shape}; expected {shape}") from None
    return array


def fit_thermal(
    times_s: npt.ArrayLike,
    room_temp_c: npt.ArrayLike,
    outdoor_temp_c: npt.ArrayLike,
    ac_power_kw: npt.ArrayLike,
    *,
    min_samples: int = 12,
) -> ThermalModel:
    """Fit ``a, b, c`` for every site by least squares, vectorised over sites.

    Each argument is ``(sites, samples)`` (or ``(samples,)``, shared by all sites);
    NaN marks a missing sample.  Slopes are taken between consecutive samples and the
    regressors averaged over each interval (the trapezoid rule), which is accurate while
    the interval is short against ``1/a`` (minutes against hours).  The air conditioner
    must have changed power during the data (on/off, setpoint changes), or ``b`` is not
    identifiable and the site is marked invalid.
    """
    room = _as_2d("room_temp_c", room_temp_c, None)
    shape = room.shape
    t = _as_2d("times_s", times_s, shape)
    t_out = _as_2d("outdoor_temp_c", outdoor_temp_c, shape)
    power = _as_2d("ac_power_kw", ac_power_kw, shape)
    if shape[1] < 2:
        raise ValueError("fit_thermal needs at least two samples per site")
    dt_h = np.diff(t, axis=1) / 3600.0
    slope = np.diff(room, axis=1) / np.where(dt_h > 0, dt_h, np.nan)
    mid = 0.5 * (room[:, 1:] + room[:, :-1])
    x = np.stack(
        [
            0.5 * (t_out[:, 1:] + t_out[:, :-1]) - mid,
            -0.5 * (power[:, 1:] + power[:, :-1]),
            np.ones_like(mid),
        ],
        axis=-1,
    )
    use = np.isfinite(slope) & np.isfinite(x).all(axis=-1)
    w = use.astype(np.float64)
    x = np.where(use[..., None], x, 0.0)
    y = np.where(use, slope, 0.0)
    xtx = np.einsum("sm,smi,smj->sij", w, x, x)
    xty = np.einsum("sm,smi,sm->si", w, x, y)
    count = use.sum(axis=1).astype(np.int64)
    # A tiny ridge keeps singular sites from raising; they are marked invalid below.
    ridge = 1e-12 * np.trace(xtx, axis1=1, axis2=2)[:, None, None] * np.eye(3) + 1e-300
    theta = np.linalg.solve(xtx + ridge, xty[..., None])[..., 0]
    residual = np.where(use, y - np.einsum("smi,si->sm", x, theta), 0.0)
    rmse = np.sqrt((residual**2).sum(axis=1) / np.maximum(count, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        condition = np.linalg.cond(xtx)
    a, b, c = theta[:, 0], theta[:, 1], theta[:, 2]
    valid = (
        (count >= max(min_samples, 4))
        & np.isfinite(condition)
        & (condition < MAX_CONDITION)
        & (a > 0)
        & (b != 0)
        & np.isfinite(theta).all(axis=1)
    )
    return ThermalModel(a, b, c, rmse, count, valid)


def _decay_integral_h(a_per_h: FloatArray, hours: FloatArray | float) -> FloatArray:
    """(1 − e^{−a t}) / a, exact also for a → 0 (where it tends to t)."""
    hours_array = np.asarray(hours, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = -np.expm1(-a_per_h * hours_array) / a_per_h
    return np.asarray(np.where(np.abs(a_per_h) < 1e-12, hours_array, value), dtype=np.float64)


def comfort_margin_k(
    model: ThermalModel, room_temp_c: FloatArray, low_c: FloatArray, high_c: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """How far the room may drift (K, ≥ 0) when curtailed and when boosted.

    Curtailing a cooling unit (b > 0) warms the room towards ``high_c``; curtailing a
    heating unit (b < 0) cools it towards ``low_c``; boosting does the opposite.
    """
    to_high = np.maximum(high_c - room_temp_c, 0.0)
    to_low = np.maximum(room_temp_c - low_c, 0.0)
    cooling = model.b_k_per_kwh > 0
    return np.where(cooling, to_high, to_low), np.where(cooling, to_low, to_high)


def curtailment_time_h(
    model: ThermalModel, curtail_kw: FloatArray, margin_k: FloatArray
) -> FloatArray:
    """Hours until a room held in equilibrium drifts ``margin_k`` when curtailed by ``curtail_kw``.

    ``inf`` when the room settles inside the margin (``|b| X / a ≤ margin``); NaN where the
    model is not valid.  ``model`` has one row per entry of ``curtail_kw``.
    """
    a, b = model.a_per_h, np.abs(model.b_k_per_kwh)
    drift_k = b * np.asarray(curtail_kw, dtype=np.float64) / a  # where the room would settle
    with np.errstate(divide="ignore", invalid="ignore"):
        hours = -np.log1p(-margin_k / drift_k) / a
    hours = np.where(drift_k <= margin_k, np.inf, hours)
    return np.asarray(np.where(model.valid, hours, np.nan), dtype=np.float64)


def max_held_kw(
    model: ThermalModel, margin_k: FloatArray, hold_h: float | FloatArray
) -> FloatArray:
    """The most kW the unit can be moved for ``hold_h`` hours and stay within ``margin_k``.

    The inverse of :func:`curtailment_time_h`: ``X = margin / (|b| (1 − e^{−a h}) / a)``;
    0 where the model is not valid.
    """
    spread = np.abs(model.b_k_per_kwh) * _decay_integral_h(model.a_per_h, hold_h)
    with np.errstate(divide="ignore", invalid="ignore"):
        kw = np.where(spread > 0, margin_k / spread, np.inf)
    return np.asarray(np.where(model.valid, kw, 0.0), dtype=np.float64)


def rebound_share(model: ThermalModel, duration_h: float | FloatArray) -> FloatArray:
    """Share of the energy curtailed over ``duration_h`` that comes back afterwards (0–1).

    Restoring the room costs ``X (1 − e^{−a t}) / a`` kWh against ``X t`` curtailed, an upper
    bound: the warmer room also gains less from outdoors while it recovers.
    """
    hours = np.asarray(duration_h, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = _decay_integral_h(model.a_per_h, hours) / hours
    share = np.where(hours > 0, share, 1.0)
    return np.asarray(np.where(model.valid, np.clip(share, 0.0, 1.0), 0.0), dtype=np.float64)


def rebound_kwh(
    model: ThermalModel, curtail_kw: FloatArray, duration_h: float | FloatArray
) -> FloatArray:
    """Energy (kWh) the unit spends after a curtailment of ``curtail_kw`` for ``duration_h``."""
    hours = np.asarray(duration_h, dtype=np.float64)
    return np.asarray(rebound_share(model, hours) * curtail_kw * hours, dtype=np.float64)


def holding_power_kw(
    model: ThermalModel, room_temp_c: FloatArray, outdoor_temp_c: FloatArray
) -> FloatArray:
    """Electric kW that holds the room at ``room_temp_c`` (dT/dt = 0), before any rating cap."""
    with np.errstate(divide="ignore", invalid="ignore"):
        kw = (model.a_per_h * (outdoor_temp_c - room_temp_c) + model.c_k_per_h) / model.b_k_per_kwh
    return np.asarray(np.where(model.valid, kw, np.nan), dtype=np.float64)
