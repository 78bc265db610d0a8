"""Property values decoded per second: erab's schema-driven codecs against pychonet's
per-class EPC functions, on the same property values in the same run.

erab looks each property up in the class database and checks size, range and defined
states (and names overflow / no-data codes); pychonet's functions convert without checking.
Also times the class database's first load and the 48-slot smart-meter history (0xE2).
Run: ``python bench/bench_value_codecs.py [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pychonet.EchonetInstance import call_epc_function
from pychonet.HomeAirConditioner import HomeAirConditioner
from pychonet.lib.epc_functions import EPC_SUPER_FUNCTIONS
from pychonet.LowVoltageSmartElectricEnergyMeter import LowVoltageSmartElectricEnergyMeter
from pychonet.StorageBattery import StorageBattery

from erab.echonet.classdb import property_spec

PYCHONET_TABLES: dict[int, dict[int, Any]] = {
    0x0130: HomeAirConditioner.EPC_FUNCTIONS,
    0x0288: LowVoltageSmartElectricEnergyMeter.EPC_FUNCTIONS,
    0x027D: StorageBattery.EPC_FUNCTIONS,
}

Value = tuple[int, int, bytes]  # class code, EPC, EDT


def fleet_values(count: int, seed: int = 7) -> list[Value]:
    """Property values as a controller polling homes sees them."""
    rng = random.Random(seed)
    out: list[Value] = []
    while len(out) < count:
        out += [
            (0x0130, 0x80, b"\x30"),
            (0x0130, 0xB0, bytes((rng.choice((0x41, 0x42, 0x43)),))),
            (0x0130, 0xB3, bytes((rng.randrange(18, 30),))),
            (0x0130, 0xBB, rng.randrange(-5, 40).to_bytes(1, "big", signed=True)),
            (0x0288, 0xE7, rng.randrange(0, 6000).to_bytes(4, "big", signed=True)),
            (0x0288, 0xE8, rng.randrange(0, 300).to_bytes(2, "big") + b"\x7f\xfe"),
            (0x027D, 0xDA, b"\x42"),
            (0x027D, 0xE4, bytes((rng.randrange(0, 101),))),
            (0x027D, 0xD3, rng.randrange(-3000, 3000).to_bytes(4, "big", signed=True)),
        ]
    return out[:count]


def decode_erab(values: list[Value]) -> int:
    for class_code, epc, edt in values:
        spec = property_spec(class_code, epc)
        assert spec is not None
        spec.decode(edt)
    return len(values)


def decode_pychonet(values: list[Value]) -> int:
    for class_code, epc, edt in values:
        function = PYCHONET_TABLES[class_code].get(epc) or EPC_SUPER_FUNCTIONS[epc]
        call_epc_function(function, edt)
    return len(values)


def rate(run: Callable[[list[Value]], int], values: list[Value]) -> float:
    start = time.perf_counter()
    done = run(values)
    return done / (time.perf_counter() - start)


def first_load_ms() -> float:
    """The class database's first use, in a fresh interpreter (load JSON, build one class)."""
    code = (
        "import time; t=time.perf_counter(); "
        "from erab.echonet.classdb import property_spec; property_spec(0x0130, 0xB0); "
        "print((time.perf_counter()-t)*1000)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    args = parser.parse_args()
    rounds, count = (5, 5_000) if args.quick else (15, 50_000)
    values = fleet_values(count)
    decode_erab(values[:100])  # load the database outside the timing
    ours, theirs = [], []
    for _ in range(rounds):  # alternate so both see the same machine load
        ours.append(rate(decode_erab, values))
        theirs.append(rate(decode_pychonet, values))
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(f"property values decoded per second ({count} values × {rounds} rounds, medians)")
    print(f"  erab (validating)  {statistics.median(ours):12,.0f}")
    print(f"  pychonet           {statistics.median(theirs):12,.0f}")
    print(f"  erab / pychonet    {statistics.median(ratios):12.2f}")

    history = property_spec(0x0288, 0xE2)
    assert history is not None
    edt = (1).to_bytes(2, "big") + b"".join(i.to_bytes(4, "big") for i in range(48))
    n = 200 if args.quick else 2_000
    start = time.perf_counter()
    for _ in range(n):
        history.decode(edt)
    per_us = (time.perf_counter() - start) / n * 1e6
    print(f"0x0288 0xE2 (48-slot history) decode: {per_us:,.0f} µs each")
    loads = [first_load_ms() for _ in range(1 if args.quick else 3)]
    print(f"class database first use (fresh interpreter): {statistics.median(loads):,.1f} ms")


if __name__ == "__main__":
    main()
