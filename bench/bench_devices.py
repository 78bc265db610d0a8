"""Emulated town benchmark: live stepping cost per site, and meter history generation.

    python bench/bench_devices.py [--quick]

1. Live models: one town step (weather, every device, auto-mode batteries, meter
   integration, announced-property refresh) for towns of N sites, as the emulator does on
   every tick.  Baseline in the same run: the same models used one site at a time (a Town
   per site, stepped in a Python loop), on a subset, per site.  Reports µs per site per
   step, the vectorised/baseline ratio and how many sites fit a 1 s tick.
2. Served: N sites bound as real ECHONET Lite nodes on loopback, ticking in real time;
   median tick duration.
3. History: seconds to generate 45 days of 30-minute history for 10,000 meters
   (MeterFleet.synthetic: profile + counters, vectorised).  Baseline: a plain per-meter,
   per-slot Python loop over the same inputs on a subset, scaled to the fleet.
4. Physics history: the town's own physics at 30-minute steps over 45 days, as
   ``erab emulate`` runs it before serving (10,000 sites; 200 with --quick).
5. Announcement cycle: N served sites at 60x with a 60 s cycle, so every site multicasts
   its periodic INFs on every tick; baseline in the same run: the cycle off (0).  Reports
   the tick median of each and the cost per INF frame.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from erab.clock import JST, SimulatedClock
from erab.devices import Scenario, Sky, Town, Weather
from erab.devices.loads import HOURLY_SHAPE, JST_OFFSET_S, seasonal_factor
from erab.devices.objects import periodic_epcs
from erab.devices.server import TownServer
from erab.meter.smartmeter import MeterFleet, SmartMeter

START = datetime(2026, 8, 3, 12, 0, tzinfo=JST)


def _town(n: int, seed: int = 1) -> tuple[Town, SimulatedClock, TownServer]:
    """A town with meters and its server's nodes, not bound to sockets."""
    town = Town(Scenario.generate(n - n // 100, n // 100, seed=seed), START, max_step_s=1.0)
    meters = MeterFleet(town.n_sites, START)
    town.observers.append(meters.observe)
    town.advance_to(START.timestamp())
    clock = SimulatedClock(START, speed=0)
    server = TownServer(town, clock, extra_objects=lambda i: [SmartMeter(meters, i)])
    return town, clock, server


def _tick(clock: SimulatedClock, server: TownServer) -> float:
    """One live tick (1 simulated second) without sockets: step + announcements."""
    t0 = time.perf_counter()
    clock.advance(1.0)
    server.tick()
    for node in server.nodes:
        node.take_announcements()
    return time.perf_counter() - t0


def bench_stepping(sizes: list[int], baseline_sites: int, ticks: int) -> float:
    print("1. live models: one tick (1 s of simulated time) for the whole town")
    per_site_us = math.inf
    medians: list[tuple[int, float]] = []
    for n in sizes:
        town, clock, server = _town(n)
        _tick(clock, server)
        times = [_tick(clock, server) for _ in range(ticks)]
        median = statistics.median(times)
        per_site_us = median / town.n_sites * 1e6
        medians.append((town.n_sites, median))
        print(
            f"   {town.n_sites:6d} sites: tick median {median * 1e3:8.2f} ms, "
            f"{per_site_us:8.2f} µs/site"
        )
    # Baseline: the same models, one site per Town, stepped site by site (sharing one
    # weather/sky computation per tick, so only the per-site work is compared), each
    # object pushing its announced properties.
    singles = [_town(1, seed=k) for k in range(baseline_sites)]
    base_times = []
    for _ in range(max(3, ticks // 3)):
        t0 = time.perf_counter()
        first = singles[0][0]
        env = first.environment(np.array([first.time_s + 0.5]))[0]
        for town, _, server in singles:
            town.step(1.0, env)
            for obj in server.live_objects:
                obj.refresh()
            for node in server.nodes:
                node.take_announcements()
        base_times.append(time.perf_counter() - t0)
    base_us = statistics.median(base_times) / baseline_sites * 1e6
    print(f"   baseline (a Town per site, {baseline_sites} sites): {base_us:8.2f} µs/site")
    print(f"   ratio baseline / vectorised at {sizes[-1]} sites: {base_us / per_site_us:6.1f}x")
    (n1, t1), (n2, t2) = medians[-2], medians[-1]
    marginal_us = max((t2 - t1) / (n2 - n1) * 1e6, 1e-3)
    fixed_ms = max(t2 * 1e3 - marginal_us * n2 / 1e3, 0.0)
    fit = (1e6 - fixed_ms * 1e3) / marginal_us
    print(
        f"   vectorised tick = {fixed_ms:.2f} ms fixed (weather, pvlib) + "
        f"{marginal_us:.2f} µs per site"
    )
    print(
        f"   sites per 1 s tick budget: vectorised ≈ {fit:,.0f} (extrapolated), "
        f"baseline ≈ {1e6 / base_us:,.0f}"
    )
    return per_site_us


async def _served(
    n: int, seconds: float, *, speed: float = 1.0, announce_every_s: float = 60.0
) -> list[float]:
    town = Town(Scenario.generate(n, 0, seed=4), START, max_step_s=60.0)
    meters = MeterFleet(town.n_sites, START)
    town.observers.append(meters.observe)
    clock = SimulatedClock(START, speed=speed)
    # consecutive addresses from a random 127.x.0.1 (room for 65,000 sites after it)
    base = f"127.{random.randint(2, 250)}.0.1"
    server = TownServer(
        town,
        clock,
        base=base,
        extra_objects=lambda i: [SmartMeter(meters, i)],
        announce_every_s=announce_every_s,
    )
    t0 = time.perf_counter()
    await server.start()
    start_s = time.perf_counter() - t0
    durations = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    try:
        while loop.time() < end:
            t1 = time.perf_counter()
            server.tick()
            durations.append(time.perf_counter() - t1)
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t1)))
    finally:
        await server.close()
    print(
        f"   {n} nodes bound in {start_s:.2f} s; real-time tick median "
        f"{statistics.median(durations) * 1e3:.2f} ms over {len(durations)} ticks "
        f"({statistics.median(durations) / n * 1e6:.1f} µs/site; speed {speed:g}x, "
        f"announcement cycle {announce_every_s:g} s)"
    )
    if announce_every_s > 0:
        frames = sum(1 for node in server.nodes for obj in node.objects if periodic_epcs(obj))
        print(f"   {frames} periodic INF frames per cycle ({frames / n:.1f} per site)")
    return durations


def bench_served(n: int, seconds: float) -> None:
    print("2. served: real ECHONET Lite nodes on loopback, models advancing in real time")
    asyncio.run(_served(n, seconds))


def bench_announce(n: int, seconds: float) -> None:
    print(f"5. announcement cycle: {n} served sites at 60x, every site announcing each tick")
    off = statistics.median(asyncio.run(_served(n, seconds, speed=60.0, announce_every_s=0.0)))
    on = statistics.median(asyncio.run(_served(n, seconds, speed=60.0, announce_every_s=60.0)))
    town = Town(Scenario.generate(n, 0, seed=4), START)
    objects = sum(len(town.devices_of(i)) + 1 for i in range(n))  # + the meter
    print(
        f"   tick median: cycle off {off * 1e3:.2f} ms, every site every tick "
        f"{on * 1e3:.2f} ms; periodic INFs cost about {(on - off) / objects * 1e6:.1f} µs "
        f"per frame (≤ {objects} frames)"
    )


def _naive_history(
    n: int, mids: np.ndarray, temp: np.ndarray, ghi: np.ndarray, seed: int
) -> list[list[int]]:
    """Per meter, per slot, in plain Python: the same profile and counting."""
    rnd = random.Random(seed)
    mean_w = 249.0 * 1000.0 / (365.25 / 12 * 24)
    shape = [float(x) for x in HOURLY_SHAPE]
    season = [float(x) for x in seasonal_factor(mids)]
    hours = [((m + JST_OFFSET_S) % 86_400) / 3600.0 for m in mids.tolist()]
    out = []
    for _ in range(n):
        size = rnd.lognormvariate(0.0, 0.25)
        hvac_use = rnd.uniform(0.5, 1.5)
        has_pv = rnd.random() < 0.4
        cumulative = rnd.uniform(0.0, 20_000_000.0)
        counts = []
        for k in range(len(mids)):
            h = hours[k]
            base = mean_w * shape[int(h) % 24] * season[k]
            t = float(temp[k])
            awake = 6.0 <= h < 23.5
            hvac = 45.0 * max(t - 24.0, 0.0) + (35.0 * max(14.0 - t, 0.0) if awake else 0.0)
            load = base * size * rnd.lognormvariate(-0.06125, 0.35) + hvac * hvac_use
            net = load - (4500.0 * 0.8 * float(ghi[k]) / 1000.0 if has_pv else 0.0)
            cumulative += max(net, 0.0) * 0.5
            counts.append(int(cumulative / 100.0) % 1_000_000)
        out.append(counts)
    return out


def bench_history(meters: int, baseline_meters: int) -> None:
    print(f"3. meter history: 45 days of 30-minute points for {meters:,} meters")
    now = datetime(2026, 8, 20, 14, 10, tzinfo=JST)
    MeterFleet.synthetic(10, now, seed=0)  # imports (pandas, pvlib) outside the timing
    t0 = time.perf_counter()
    fleet = MeterFleet.synthetic(meters, now, seed=1)
    vec_s = time.perf_counter() - t0
    print(
        f"   vectorised: {vec_s:.2f} s ({fleet.capacity_points} points/meter kept, "
        f"{vec_s / meters * 1e6:.1f} µs/meter)"
    )
    origin = fleet.origin_s
    slots = int((now.timestamp() - origin) // 1800)
    mids = origin + 1800.0 * (np.arange(slots) + 0.5)
    weather = Weather(seed=1009)
    temp = weather.temperature_c(mids)
    ghi = Sky().at(mids, weather.cloudiness(mids)).ghi_w_m2
    t0 = time.perf_counter()
    _naive_history(baseline_meters, mids, temp, ghi, seed=1)
    naive_s = (time.perf_counter() - t0) / baseline_meters * meters
    print(
        f"   baseline per-meter Python loop: {naive_s:.2f} s (measured on "
        f"{baseline_meters} meters, scaled)"
    )
    print(f"   ratio baseline / vectorised: {naive_s / vec_s:.1f}x")


def bench_physics_history(n: int, days: int) -> None:
    print(f"4. physics history: {days} days at 30-minute steps for a town of {n} sites")
    town = Town(Scenario.generate(n, n // 100, seed=5), START)
    t0 = time.perf_counter()
    town.simulate(START.timestamp() + days * 86_400, 1800.0)
    took = time.perf_counter() - t0
    print(f"   {took:.2f} s ({took / (days * 48) * 1e3:.2f} ms per step of the whole town)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller fleets, shorter runs")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.quick:
        bench_stepping([100, 1000], baseline_sites=20, ticks=9)
        bench_served(100, 4.0)
        bench_history(2000, baseline_meters=5)
        bench_physics_history(200, 3)
        bench_announce(100, 4.0)
    else:
        bench_stepping([100, 1000, 10_000], baseline_sites=50, ticks=21)
        bench_served(1000, 10.0)
        bench_history(10_000, baseline_meters=20)
        bench_physics_history(10_000, 45)  # what erab emulate does for 10,000 meters
        bench_announce(1000, 10.0)


if __name__ == "__main__":
    main()
