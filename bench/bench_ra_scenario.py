"""The grid-service quality scenario of issue 11 at 1,000 sites: delivered kW per 30-minute slot.

A town of N homes with their smart meters (``erab emulate`` physics), N real gateways in this
process (``erab gateway fleet`` style), the real broker (nats-server) and the RA, on one
stepped simulated clock (tests/aggregator/grid_scenario.py, the harness the 200-site test
uses): one 3-hour down event of 60 % of the fleet's flexibility for its window, the closed
loop every 5 simulated minutes.  Delivery is what the sites' meters say: the 30-minute
registers of an uncommanded twin town less the town's, summed over sites.

Baseline in the same run: the same town and event without the closed loop (the plan made
at dispatch, left alone).  Printed: the per-slot table of each run (slot, target kW,
delivered kW by the meters, ratio), the share of slots within ±10 %, the mean |ratio − 1|,
and the closed loop's against the baseline's.

    python bench/bench_ra_scenario.py                # 1,000 homes (a few minutes)
    python bench/bench_ra_scenario.py --sites 200    # the test's size
    python bench/bench_ra_scenario.py --sites 200 --season summer   # 14:00-17:00 in August

``--season summer``: the event at 14:00 JST on an August weekday, when the down flexibility
is the air conditioners' (the batteries already cover their homes): the RA fits each site's
room model from a morning's telemetry and raises cooling setpoints; printed besides, the air
conditioners running and commanded, the rooms with a valid fit, and the warmest commanded
room against its comfort band.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.aggregator.grid_scenario import ScenarioResult, run_grid_scenario
from tests.bus.conftest import make_deployment
from tests.gateway.test_fleet import with_command_key

from erab.bus import BrokerProcess


def run_once(sites: int, closed_loop: bool, seed: int, summer: bool = False,
             loop_every_s: float = 300.0) -> ScenarioResult:  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-ra-scenario-") as tmp:
        deployment = make_deployment(Path(tmp))
        with_command_key(deployment)
        process = BrokerProcess(deployment.layout)
        running = process.start()
        try:
            return asyncio.run(run_grid_scenario(deployment.home, running, sites, seed=seed,
                                                 closed_loop=closed_loop,
                                                 summer=summer,
                                                 loop_every_s=loop_every_s))  # fmt: skip
        finally:
            process.stop()


def report(name: str, result: ScenarioResult, wall_s: float) -> float:
    error = sum(abs(s.ratio - 1.0) for s in result.slots) / len(result.slots)
    print(f"\n{name}: {result.homes} sites, {result.resources_online} resources online, "
          f"flexibility {result.flexibility_kw:.1f} kW for the window, target "
          f"{result.target_kw:.1f} kW; {result.commands} commands {result.commands_by_type} "
          f"({result.refused} refused), "
          f"{result.redispatches} closed-loop checks")  # fmt: skip
    print(result.table())
    exact = sum(abs(s.exact_ratio - 1.0) for s in result.slots) / len(result.slots)
    print(f"by the meters' exact energy (no 0.1 kWh counts): slots within ±10 % "
          f"{result.exact_share_within(0.10):.0%}, mean |ratio − 1| {exact:.3f}")
    print(f"slots within ±10 %: {result.share_within(0.10):.0%}; mean |ratio − 1| "
          f"{error:.3f}; commanded batteries' least margin to reserve "
          f"{result.soc_min_margin_pct:.2f} %, to max {result.soc_max_margin_pct:.2f} %; "
          f"rooms above band {max(result.room_over_band_k, 0.0):.2f} K")  # fmt: skip
    if result.aircons_commanded or result.thermal_valid:
        print(f"air conditioners: {result.aircons_on} running at the start, "
              f"{result.thermal_valid} rooms with a valid fitted model, "
              f"{result.aircons_commanded} commanded; warmest commanded room "
              f"{result.room_max_c:.2f} °C against its band's top "
              f"{result.room_band_top_c:.1f} °C")  # fmt: skip
    print("the RA's own measure of its commanded resources per closed-loop check, kW: "
          + " ".join(f"{kw:.1f}" for kw in result.checks_kw))
    print(f"wall: setup {result.setup_s:.1f} s (warm-up {result.warm_up_s:.1f} s), event "
          "(3 simulated hours) "
          f"{result.event_s:.1f} s, whole run {wall_s:.1f} s")  # fmt: skip
    return error


def main() -> None:
    logging.getLogger("erab.ra.alerts").setLevel(logging.ERROR)  # the fleet's 30-day certs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=1000, help="homes in the town (default 1000)")
    parser.add_argument("--seed", type=int, default=11, help="the town's seed (default 11)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the run without the closed loop")  # fmt: skip
    parser.add_argument("--season", choices=("night", "summer"), default="night",
                        help="night: 23:30 JST, batteries (default); summer: 14:00 JST on "
                             "an August weekday, air conditioners")  # fmt: skip
    parser.add_argument("--loop-every-s", type=float, default=None,
                        help="the closed loop's period in simulated seconds (default 300 at "
                             "night, 60 in summer: an air conditioner's idle burst ends "
                             "within minutes)")  # fmt: skip
    args = parser.parse_args()
    if args.loop_every_s is None:
        args.loop_every_s = 60.0 if args.season == "summer" else 300.0
    errors: dict[str, float] = {}
    shares: dict[str, float] = {}
    for name, closed in (("closed loop", True), ("baseline: no closed loop", False)):
        if not closed and args.no_baseline:
            continue
        t = time.monotonic()
        result = run_once(args.sites, closed, args.seed, args.season == "summer",
                          args.loop_every_s)  # fmt: skip
        errors[name] = report(name, result, time.monotonic() - t)
        shares[name] = result.share_within(0.10)
    if len(errors) == 2:
        closed_e, open_e = errors.values()
        closed_s, open_s = shares.values()
        print(f"\nclosed loop / baseline: slots within ±10 % {closed_s:.0%} / {open_s:.0%}; "
              f"mean |ratio − 1| {closed_e:.3f} / {open_e:.3f} = "
              f"{closed_e / open_e if open_e else float('nan'):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
