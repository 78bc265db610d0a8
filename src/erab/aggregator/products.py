"""Balancing-market products as data, and the verification of an event against its product.

The products ship in ``erab/aggregator/data/products.toml`` (primary, secondary-1,
secondary-2, tertiary-1, tertiary-2, capacity-dr); :func:`load_products` reads that file or
another with the same layout.  Each product says how fast the fleet must respond, how long
it must hold, its block length, minimum offer and how delivery is assessed:

- ``instantaneous-kw`` (the fast products): fleet kW from telemetry sampled every
  ``telemetry_interval_s`` (1 s) or faster; :func:`verify_telemetry`;
- ``slot-kwh`` (the slow ones): delivered kWh per 30-minute slot from route A meters
  against a baseline; :func:`verify_slots`.

Each check is a :class:`Check` with the measured value and the limit, so a report can say
not only pass or fail but by how much.  The response time counts from the dispatch
instruction; where it comes ``notice_s`` before the start (the capacity market's
dispatchable DR, about 3 h), the fleet must deliver from the start.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ASSESSMENTS = ("instantaneous-kw", "slot-kwh")
SLOT_S = 1800


class ProductError(ValueError):
    """A product file or a product name that cannot be used; the message says which."""


@dataclass(frozen=True)
class Product:
    name: str
    label: str
    response_time_s: float
    min_duration_s: float
    block_minutes: int
    min_offer_kw: float
    assessment: str
    telemetry_interval_s: float
    notice_s: float
    tolerance_pct: float
    price_yen_per_kwh: float
    penalty_yen_per_kwh: float

    @property
    def grace_s(self) -> float:
        """How long after the event start delivery may still be ramping."""
        return max(self.response_time_s - self.notice_s, 0.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_NUMBERS = {f.name for f in fields(Product)} - {"name", "label", "assessment", "block_minutes"}


def _product(row: Any, where: str) -> Product:
    if not isinstance(row, dict):
        raise ProductError(f"{where}: a [[product]] must be a table")
    names = {f.name for f in fields(Product)}
    missing = sorted(names - set(row))
    unknown = sorted(set(row) - names)
    if missing or unknown:
        raise ProductError(
            f"{where} ({row.get('name', '?')}): "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unknown {', '.join(unknown)}" if unknown else "",
                )
                if part
            )
        )
    for key in _NUMBERS:
        value = row[key]
        if (isinstance(value, bool) or not isinstance(value, int | float)
                or not math.isfinite(value) or value < 0):  # fmt: skip
            raise ProductError(f"{where} ({row['name']}): {key} must be a finite number >= 0, got "
                               f"{value!r}")  # fmt: skip
    block = row["block_minutes"]
    if isinstance(block, bool) or not isinstance(block, int) or block <= 0:
        raise ProductError(f"{where} ({row['name']}): block_minutes must be a positive integer")
    if row["assessment"] not in ASSESSMENTS:
        raise ProductError(f"{where} ({row['name']}): assessment {row['assessment']!r} is not "
                           f"one of {ASSESSMENTS}")  # fmt: skip
    if row["tolerance_pct"] >= 100:
        raise ProductError(f"{where} ({row['name']}): tolerance_pct must be below 100")
    numbers = {k: float(row[k]) for k in _NUMBERS}
    return Product(name=str(row["name"]), label=str(row["label"]),
                   assessment=str(row["assessment"]), block_minutes=int(row["block_minutes"]),
                   **numbers)  # fmt: skip


def load_products(path: Path | str | None = None) -> dict[str, Product]:
    """The products of ``path`` (default: the file shipped with erab), by name, file order."""
    if path is None:
        text = resources.files("erab.aggregator").joinpath("data/products.toml").read_text()
        where = "products.toml (shipped)"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ProductError(f"cannot read products file {path}: {exc.strerror}") from None
        where = str(path)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProductError(f"{where} is not valid TOML: {exc}") from None
    rows = doc.get("product")
    if not isinstance(rows, list) or not rows:
        raise ProductError(f"{where} has no [[product]] tables")
    out: dict[str, Product] = {}
    for i, row in enumerate(rows):
        product = _product(row, f"{where}, product {i + 1}")
        if product.name in out:
            raise ProductError(f"{where}: product {product.name!r} appears twice")
        out[product.name] = product
    return out


def get_product(name: str, products: dict[str, Product] | None = None) -> Product:
    table = load_products() if products is None else products
    try:
        return table[name]
    except KeyError:
        raise ProductError(f"unknown product {name!r}; known: {', '.join(table)}") from None


def dashboard_products() -> list[dict[str, Any]]:
    """The products as the operator's console shows them (erab.web.settlement)."""
    return [p.as_dict() for p in load_products().values()]


@dataclass(frozen=True)
class Check:
    """One requirement of a product, checked: ``value`` against ``limit`` in ``unit``."""

    name: str
    passed: bool | None  # None: could not be assessed (``detail`` says why)
    value: float | None
    limit: float
    unit: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _offer_checks(product: Product, target_kw: float, duration_s: float) -> list[Check]:
    kw = abs(target_kw)
    blocks = duration_s / (product.block_minutes * 60.0)
    return [
        Check("minimum offer", kw >= product.min_offer_kw, kw, product.min_offer_kw, "kW",
              f"{kw:g} kW committed, the product's minimum is {product.min_offer_kw:g} kW"),
        Check("minimum duration", duration_s >= product.min_duration_s, duration_s,
              product.min_duration_s, "s",
              f"event lasts {duration_s / 60:g} min, the product asks "
              f">= {product.min_duration_s / 60:g} min"),
        Check("block length", abs(blocks - round(blocks)) < 1e-9 and blocks >= 1, blocks, 1.0,
              "blocks", f"{duration_s / 60:g} min is {blocks:g} blocks of "
              f"{product.block_minutes} min"),
    ]  # fmt: skip


def verify_slots(
    product: Product,
    target_kw: float,
    duration_s: float,
    start_offset_s: float,
    delivered_kwh: Sequence[float] | npt.ArrayLike,
    committed_kwh: Sequence[float] | npt.ArrayLike,
) -> list[Check]:
    """Checks of an event assessed on 30-minute kWh.

    ``delivered_kwh`` / ``committed_kwh`` per event slot (the fleet's); ``start_offset_s`` is
    where in its first slot the event starts.  A slot passes when it delivered at least
    (1 − tolerance) × its commitment.  Response: every slot starting at or after the start +
    the product's grace passes; held: the longest run of passing slots from there, in s."""
    d = np.asarray(delivered_kwh, dtype=np.float64)
    c = np.asarray(committed_kwh, dtype=np.float64)
    checks = _offer_checks(product, target_kw, duration_s)
    threshold = (1.0 - product.tolerance_pct / 100.0) * c
    ok = np.nan_to_num(d, nan=-np.inf) >= threshold - 1e-9
    slot_start_s = np.arange(len(d)) * SLOT_S - start_offset_s  # relative to the event start
    assessed = slot_start_s >= product.grace_s - 1e-9
    if not assessed.any():
        checks.append(Check("response", None, None, product.grace_s, "s",
                            "no whole slot starts after the response time"))  # fmt: skip
        checks.append(Check("held for duration", None, None, product.min_duration_s, "s",
                            "no whole slot to assess"))  # fmt: skip
        return checks
    first = int(np.argmax(assessed))
    first_ok = bool(ok[first])
    checks.append(Check(
        "response", first_ok, float(d[first]) if np.isfinite(d[first]) else None,
        float(threshold[first]), "kWh",
        f"first assessed slot (starting {max(slot_start_s[first], 0) / 60:g} min after the "
        f"start, grace {product.grace_s / 60:g} min) delivered "
        f"{_fmt(d[first])} kWh of {c[first]:.3f} committed (pass at >= {threshold[first]:.3f})",
    ))  # fmt: skip
    run = 0
    for k in range(first, len(d)):
        if not ok[k]:
            break
        run += 1
    # held from the start (the ramp inside the grace counts) to the end of the last slot of
    # the unbroken run of passing slots, at most to the event's end
    held_s = min(float(slot_start_s[first] + run * SLOT_S), duration_s) if run else 0.0
    needed = min(product.min_duration_s, duration_s)
    passing = int(ok[first:].sum())
    checks.append(Check(
        "held for duration", held_s >= needed - 1e-9, held_s, needed, "s",
        f"held {held_s / 60:g} min from the start ({run} consecutive passing slots from the "
        f"first assessed one); {passing} of {len(d) - first} assessed slots pass",
    ))  # fmt: skip
    return checks


def verify_telemetry(
    product: Product,
    target_kw: float,
    duration_s: float,
    times_s: npt.ArrayLike,
    delivered_kw: npt.ArrayLike,
    *,
    interval_s: float | None = None,
) -> list[Check]:
    """Checks of an event assessed on instantaneous kW: ``times_s`` since the event start
    (ascending) and the fleet's delivered kW at each (its reduction for down-DR, increase
    for up-DR).  Response: the first sample at >= (1 − tolerance) × target; held: how long
    from there every sample stayed there (a sampling gap beyond the product's telemetry
    interval ends the run)."""
    t = np.asarray(times_s, dtype=np.float64)
    kw = np.asarray(delivered_kw, dtype=np.float64)
    if t.shape != kw.shape or t.ndim != 1:
        raise ProductError(f"times and kW must be two 1-D arrays of one length, got "
                           f"{t.shape} and {kw.shape}")  # fmt: skip
    checks = _offer_checks(product, target_kw, duration_s)
    gaps = np.diff(t)
    # the sensors' own spacing where the samples were put on a grid (telemetry_delivery)
    interval = (interval_s if interval_s is not None
                else float(np.median(gaps)) if len(gaps) else float("inf"))  # fmt: skip
    checks.append(Check("telemetry interval", interval <= product.telemetry_interval_s + 1e-9,
                        interval, product.telemetry_interval_s, "s",
                        f"median sample spacing {interval:g} s"))  # fmt: skip
    threshold = (1.0 - product.tolerance_pct / 100.0) * abs(target_kw)
    ok = np.nan_to_num(kw, nan=-np.inf) >= threshold - 1e-9
    if not ok.any():
        best = float(np.nanmax(kw)) if kw.size and np.isfinite(kw).any() else None
        checks.append(Check("response", False, None, product.grace_s, "s",
                            f"never reached {threshold:g} kW (best {_fmt(best)} kW)"))  # fmt: skip
        checks.append(Check("held for duration", False, 0.0, product.min_duration_s, "s",
                            "no response to hold"))  # fmt: skip
        return checks
    k = int(np.argmax(ok))
    response_s = float(max(t[k], 0.0))
    checks.append(Check("response", response_s <= product.grace_s + 1e-9, response_s,
                        product.grace_s, "s",
                        f"reached {kw[k]:.3f} kW (>= {threshold:g}) {response_s:g} s after "
                        f"the start"))  # fmt: skip
    end = k
    while end + 1 < len(t) and ok[end + 1] and gaps[end] <= product.telemetry_interval_s + 1e-9:
        end += 1
    held = float(t[end] - t[k])
    needed = min(product.min_duration_s, duration_s - response_s)
    checks.append(Check("held for duration", held >= needed - 1e-9, held, needed, "s",
                        f"held >= {threshold:g} kW for {held:g} s from the response"))  # fmt: skip
    return checks


def _fmt(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.3f}"


@dataclass(frozen=True)
class TelemetryDelivery:
    """The fleet's delivered kW from resource telemetry: ``times_s`` since the event start
    (a regular grid), ``delivered_kw`` at each, the reference level it is measured from and
    the resources' median sampling interval."""

    times_s: npt.NDArray[np.float64]
    delivered_kw: npt.NDArray[np.float64]
    reference_kw: float
    interval_s: float
    resources: int
    dropped: int = 0  # resources left out: their telemetry went stale within the window


def telemetry_delivery(
    samples: Sequence[tuple[str, float, float]],
    start_s: float,
    end_s: float,
    direction: str,
    *,
    step_s: float = 1.0,
    reference_s: float = 300.0,
    stale_s: float = 60.0,
) -> TelemetryDelivery:
    """Delivered kW of the fleet at every ``step_s`` of the event from resource samples
    ``(resource_id, measured_at POSIX s, power kW, consumption positive)``.

    Each resource holds its last sample for at most ``stale_s``; a resource without a fresh
    sample somewhere in the window (reference and event) is left out entirely, so that lost
    telemetry never reads as delivery.  The fleet's kW is the sum of the others; the
    reference is its mean over the ``reference_s`` before the start; delivered is
    reference − fleet (down) or fleet − reference (up)."""
    by_resource: dict[str, list[tuple[float, float]]] = {}
    for rid, at_s, kw in samples:
        by_resource.setdefault(rid, []).append((float(at_s), float(kw)))
    if not by_resource:
        raise ProductError("no telemetry of the event's resources: the fast products are "
                           "assessed on it")  # fmt: skip
    grid = np.arange(start_s - reference_s, end_s + step_s / 2, step_s)
    fleet = np.zeros(len(grid))
    spacings = []
    dropped = 0
    for points in by_resource.values():
        points.sort()
        t = np.array([p[0] for p in points])
        v = np.array([p[1] for p in points])
        if len(t) > 1:
            spacings.append(float(np.median(np.diff(t))))
        idx = np.searchsorted(t, grid, side="right") - 1
        held = (idx >= 0) & (grid - t[np.maximum(idx, 0)] <= stale_s)
        if not held.all():
            dropped += 1
            continue
        fleet += v[idx]
    before = grid < start_s
    reference = float(fleet[before].mean()) if before.any() else float("nan")
    during = ~before
    sign = 1.0 if direction == "down" else -1.0
    delivered = sign * (reference - fleet[during])
    interval = float(np.median(spacings)) if spacings else float("inf")
    if dropped == len(by_resource):
        raise ProductError(f"the telemetry of all {dropped} resources has gaps longer than "
                           f"{stale_s:g} s in the event window: it cannot be assessed")  # fmt: skip
    return TelemetryDelivery(grid[during] - start_s, delivered, reference, interval,
                             len(by_resource) - dropped, dropped)  # fmt: skip
