"""SKSTACK-IP parser time on hostile input: linear, not quadratic, in the bytes received.

A dongle (or a line fault) sending one endless line without CR/LF, or an ERXUDP whose length
was corrupted to FFFF, used to make the parser hold everything and rescan it on every chunk.
This feeds such input in 4 KiB chunks (what a serial port hands over) at two sizes and
compares the time per MB with a baseline measured in the same run: the same number of bytes
of ordinary dongle output (EVENT, OK and ERXUDP lines).  Linear parsing keeps the per-MB time
flat as the size grows.  Run: ``python bench/bench_skstack.py [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from erab.meter import skstack as sk
from erab.meter.skstack import Dialect

CHUNK = 4096
METER_IP = "FE80:0000:0000:0000:021D:1290:1234:5678"
OWN_IP = "FE80:0000:0000:0000:021D:1290:0003:C890"
FRAME = bytes.fromhex("1081000102880105FF017202E70400000226E8040014FFFE")


def ordinary(size: int) -> bytes:
    rx = sk.RxUdp(METER_IP, OWN_IP, 0x0E1A, 0x0E1A, "C0F945004D3C2A11", 1, FRAME)
    block = (
        f"EVENT 21 {METER_IP} 00\r\nOK\r\n".encode()
        + sk.format_erxudp(rx, Dialect.NO_SIDE, hex_payload=True)
        + b"\r\n"
    )
    return (block * (size // len(block) + 1))[:size]


def endless_line(size: int) -> bytes:
    return b"A" * size


def corrupted_length(size: int) -> bytes:
    head = f"ERXUDP {METER_IP} {OWN_IP} 0E1A 0E1A C0F945004D3C2A11 1 FFFF ".encode()
    return (head + b"\x10\x81" * size)[:size]


def seconds(data: bytes, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        parser = sk.SkstackParser()
        start = time.perf_counter()
        for i in range(0, len(data), CHUNK):
            parser.feed(data[i : i + CHUNK])
        times.append(time.perf_counter() - start)
        assert parser.buffered <= sk.MAX_LINE + CHUNK
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller inputs, one repeat")
    args = ap.parse_args()
    sizes = (2 << 20, 8 << 20) if args.quick else (8 << 20, 32 << 20)
    repeats = 1 if args.quick else 3
    print(f"{'input':<22}{'MB':>6}{'seconds':>10}{'s per MB':>10}")
    per_mb: dict[str, list[float]] = {}
    for name, make in (
        ("ordinary output", ordinary),
        ("endless line", endless_line),
        ("ERXUDP length FFFF", corrupted_length),
    ):
        for size in sizes:
            t = seconds(make(size), repeats)
            mb = size / (1 << 20)
            per_mb.setdefault(name, []).append(t / mb)
            print(f"{name:<22}{mb:>6.0f}{t:>10.3f}{t / mb:>10.4f}")
    base = per_mb["ordinary output"]
    for name in ("endless line", "ERXUDP length FFFF"):
        small, large = per_mb[name]
        print(
            f"{name}: per-MB time x{large / small:.2f} from {sizes[0] >> 20} to "
            f"{sizes[1] >> 20} MB (1.0 = linear; quadratic would be x4), "
            f"{large / base[1]:.2f} x the ordinary-output baseline"
        )


if __name__ == "__main__":
    main()
