"""Array types and the one constructor every fleet uses for its per-unit parameters."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def per_unit(value: float | npt.ArrayLike, n: int) -> FloatArray:
    """A fresh float array of ``n`` units from a scalar (same for all) or ``n`` values."""
    out = np.empty(n, dtype=np.float64)
    out[:] = value
    return out
