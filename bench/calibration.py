"""The emulated town against published Japanese statistics: one table.

    python bench/calibration.py [--seeds 0 1 2] [--year 2025]

Runs the calibration town (erab.devices.calibration) for a year at 15-minute steps per
seed, prints the table of emulated figures (mean over seeds) against published ones with
their sources, the spread over seeds of the headline figures, and the run time.  The
baseline for the run time is the same year of the sky and weather alone (what every step
needs before any device physics), measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from erab.devices.calibration import (
    JST,
    calibration_scenario,
    calibration_table,
    calibration_year,
    format_table,
)
from erab.devices.town import Town


def _weather_only_s(seed: int, year: int) -> float:
    from datetime import datetime

    town = Town(calibration_scenario(seed), datetime(year, 1, 1, tzinfo=JST))
    mids = town.time_s + 900.0 * (np.arange(365 * 96) + 0.5)
    t = time.perf_counter()
    town.environment(np.asarray(mids, dtype=np.float64))
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run")
    parser.add_argument("--year", type=int, default=2025, help="calendar year simulated (JST)")
    args = parser.parse_args()
    runs, times = [], []
    for seed in args.seeds:
        t = time.perf_counter()
        runs.append(calibration_year(seed=seed, year=args.year))
        times.append(time.perf_counter() - t)
    print(format_table(calibration_table(runs)))
    print()
    for label, get in (
        ("PV yield kWh/kW/yr", lambda r: r.pv_kwh_per_kw.sum()),
        ("GHI kWh/m²/yr", lambda r: r.ghi_kwh_m2.sum()),
        ("convenience store kWh/yr", lambda r: r.store_kwh),
        ("standard home kWh/month", lambda r: r.standard_kwh.mean()),
        ("AC share at 14:00 in August %", lambda r: 100 * r.ac_share_14h_august),
    ):
        values = [float(get(r)) for r in runs]
        print(f"{label}: per seed {', '.join(f'{v:,.1f}' for v in values)}")
    base = _weather_only_s(args.seeds[0], args.year)
    median = statistics.median(times)
    print(
        f"\nyear of the calibration town ({len(calibration_scenario().sites)} sites, 15-min "
        f"steps): median {median:.1f} s over {len(times)} seeds; weather and sky alone "
        f"{base:.1f} s; ratio {median / base:.1f}x"
    )


if __name__ == "__main__":
    main()
