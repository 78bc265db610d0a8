"""Where the settlement engine plugs into the console (issue 12), and what shows without it.

The console reads products and settlements through a :class:`SettlementSource`.  The default,
:class:`GuardedSettlement`, imports ``erab.aggregator.products`` and
``erab.aggregator.settlement`` when they exist and calls these module-level functions:

- ``products.dashboard_products() -> list[dict]``: one dict per product (name, response time,
  duration, ...), the columns shown as they come;
- ``settlement.dashboard_settlement(ra, event_id) -> dict | None``: ``{"rows": [per-customer
  dicts], "totals": dict, "baseline_kw": {slot ISO: kW}}``, None when not settled yet;
- ``settlement.dashboard_csv(ra, event_id) -> str``: the same as CSV.

Until those exist the pages say "not available" with the reason (:attr:`missing`).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from datetime import datetime
from types import ModuleType
from typing import Any, Protocol


class SettlementSource(Protocol):
    missing: str | None
    """Why products and settlements are not available (None: they are)."""

    def products(self) -> list[dict[str, Any]] | None: ...

    def settlement(self, ra: Any, event_id: str) -> dict[str, Any] | None: ...

    def csv(self, ra: Any, event_id: str) -> str | None: ...

    def baseline(self, ra: Any, event_id: str) -> Mapping[float, float] | None:
        """The fleet's baseline per slot: slot start (POSIX seconds) → kW."""
        ...


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


class GuardedSettlement:
    """The settlement engine's modules if they are installed, nothing otherwise."""

    def __init__(self, products_module: str = "erab.aggregator.products",
                 settlement_module: str = "erab.aggregator.settlement") -> None:  # fmt: skip
        self._products = _module(products_module)
        self._settlement = _module(settlement_module)
        reasons = []
        if self._products is None or not hasattr(self._products, "dashboard_products"):
            reasons.append(f"{products_module}.dashboard_products is not built yet")
        if self._settlement is None or not hasattr(self._settlement, "dashboard_settlement"):
            reasons.append(f"{settlement_module}.dashboard_settlement is not built yet")
        self.missing: str | None = "; ".join(reasons) or None

    def products(self) -> list[dict[str, Any]] | None:
        make = getattr(self._products, "dashboard_products", None)
        if make is None:
            return None
        return [dict(p) for p in make()]

    def settlement(self, ra: Any, event_id: str) -> dict[str, Any] | None:
        make = getattr(self._settlement, "dashboard_settlement", None)
        if make is None:
            return None
        result = make(ra, event_id)
        return None if result is None else dict(result)

    def csv(self, ra: Any, event_id: str) -> str | None:
        """The settlement as CSV; None without the engine; ValueError (the engine's reason)
        when the event cannot be settled."""
        make = getattr(self._settlement, "dashboard_csv", None)
        if make is None:
            return None
        try:
            return str(make(ra, event_id))
        except (ValueError, OSError) as exc:
            raise ValueError(str(exc)) from None

    def baseline(self, ra: Any, event_id: str) -> Mapping[float, float] | None:
        try:
            settled = self.settlement(ra, event_id)
        except Exception:  # a settlement that cannot be made yet is no baseline
            return None
        if not settled:
            return None
        baseline = settled.get("baseline_kw")
        if not isinstance(baseline, Mapping):
            return None
        return {datetime.fromisoformat(str(k)).timestamp(): float(v) for k, v in baseline.items()}
