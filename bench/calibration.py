"""The emulated town against published Japanese statistics: one table.

    python bench/calibration.py [--seeds 0 1 2] [--year 2025] [--write-docs docs/calibration.md]

Runs the calibration town (erab.devices.calibration) for a year at 15-minute steps per
seed, prints the table of emulated figures (mean over seeds) against published ones with
their sources, the modelled PV yield by month, the spread over seeds of the headline
figures, and the run time.  The baseline for the run time is the same year of the sky and
weather alone (what every step needs before any device physics), measured in the same run.
With --write-docs the table and the figures under it replace the block between the
``<!-- calibration table: begin -->`` and ``<!-- calibration table: end -->`` markers of
that page, so the page is this script's output (tests/devices/test_calibration.py checks
the page's rows, published figures and sources against the code).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from erab.devices.calibration import (
    JST,
    MONTHS,
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


BEGIN = "<!-- calibration table: begin -->"
END = "<!-- calibration table: end -->"


def write_docs(page: Path, block: str) -> None:
    """Replace the marked block of ``page`` with ``block`` (the page must have both markers)."""
    text = page.read_text(encoding="utf-8")
    pattern = re.compile(re.escape(BEGIN) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{page}: no '{BEGIN}' ... '{END}' block to replace")
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n{block}\n{END}", text), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run")
    parser.add_argument("--year", type=int, default=2025, help="calendar year simulated (JST)")
    parser.add_argument(
        "--write-docs", type=Path, metavar="PAGE",
        help="also write the table and per-seed figures into PAGE's marked block",
    )  # fmt: skip
    args = parser.parse_args()
    runs, times = [], []
    for seed in args.seeds:
        t = time.perf_counter()
        runs.append(calibration_year(seed=seed, year=args.year))
        times.append(time.perf_counter() - t)
    lines = [format_table(calibration_table(runs)), ""]
    pv = [float(statistics.mean(float(r.pv_kwh_per_kw[m]) for r in runs)) for m in range(12)]
    lines.append(
        "Modelled PV yield by month (kWh/kW, mean of the seeds): "
        + ", ".join(f"{name} {v:.0f}" for name, v in zip(MONTHS, pv, strict=True))
        + "."
    )
    lines.append("")
    for label, get in (
        ("PV yield kWh/kW/yr", lambda r: r.pv_kwh_per_kw.sum()),
        ("GHI kWh/m²/yr", lambda r: r.ghi_kwh_m2.sum()),
        ("convenience store kWh/yr", lambda r: r.store_kwh),
        ("standard home kWh/month", lambda r: r.standard_kwh.mean()),
        ("all-electric home kWh/month", lambda r: r.all_electric_kwh.mean()),
        ("AC share at 14:00 in August %", lambda r: 100 * r.ac_share_14h_august),
    ):
        values = [float(get(r)) for r in runs]
        lines.append(f"- {label}: per seed {', '.join(f'{v:,.1f}' for v in values)}")
    print("\n".join(lines))
    base = _weather_only_s(args.seeds[0], args.year)
    median = statistics.median(times)
    print(
        f"\nyear of the calibration town ({len(calibration_scenario().sites)} sites, 15-min "
        f"steps): median {median:.1f} s over {len(times)} seeds; weather and sky alone "
        f"{base:.1f} s; ratio {median / base:.1f}x"
    )
    if args.write_docs:
        seeds = " ".join(str(s) for s in args.seeds)
        head = f"`python bench/calibration.py --seeds {seeds}` (mean of the seeds):\n"
        write_docs(args.write_docs, head + "\n" + "\n".join(lines))
        print(f"wrote the table into {args.write_docs}", file=sys.stderr)


if __name__ == "__main__":
    main()
