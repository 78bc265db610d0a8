"""Frames decoded and encoded per second: erab's codec against pychonet's, same frames, same run.

erab validates every frame fully (ESV known, OPC/PDC walk consumes the datagram exactly);
pychonet's decoder does not.  Run: ``python bench/bench_frames.py [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from pychonet.lib.functions import buildEchonetMsg, decodeEchonetMsg

from erab.echonet import decode_frame

FRAMES_HEX = [
    "1081000001300505FF017201B00142",
    "1081099B02720105FF017203D5010CEE0200C8EF0143",
    "1081001402810105FF017203800130E00400119E3CE10104",
    # smart meter Get_Res: instantaneous power and currents
    "1081000102880105FF017202E70400000226E8040014FFFE",
    # node profile instance list INF
    "108100010EF0010EF0017301D50A03013001027901028801",
    # Get request of 5 properties
    "1081000205FF010130016205800081008800B000B300",
]


def poll_responses(count: int, seed: int = 1) -> list[str]:
    """Get_Res frames as a controller polling a fleet sees them: stable states, varying
    measurements (power, temperatures, SOC), a different TID each time."""
    rng = random.Random(seed)
    frames = []
    for i in range(count):
        tid = i & 0xFFFF
        kind = i % 3
        if kind == 0:  # smart meter: instantaneous power and R/T currents
            power = rng.randrange(0, 6000).to_bytes(4, "big")
            amps = rng.randrange(0, 300).to_bytes(2, "big") + rng.randrange(0, 300).to_bytes(
                2, "big"
            )
            body = "02880105FF017202E704" + power.hex() + "E804" + amps.hex()
        elif kind == 1:  # air conditioner: status, mode, set temperature, room temperature
            body = (
                "013001"
                "05FF01"
                "72"
                "04"
                "800130"
                "B00142"
                f"B301{rng.randrange(20, 29):02X}"
                f"BB01{rng.randrange(18, 36):02X}"
            )
        else:  # storage battery: status, mode, SOC %, instantaneous charge/discharge W
            watts = (rng.randrange(-3000, 3000) & 0xFFFFFFFF).to_bytes(4, "big")
            body = f"027D0105FF017204800130DA0142E401{rng.randrange(0, 101):02X}D304" + watts.hex()
        frames.append(f"1081{tid:04X}" + body)
    return frames


def _pychonet_payload(frame_hex: str) -> dict[str, object]:
    raw = bytes.fromhex(frame_hex)
    msg = decodeEchonetMsg(raw)
    opc = [
        {"EPC": p["EPC"], "PDC": p["PDC"], "EDT": int.from_bytes(p["EDT"], "big")}
        for p in msg["OPC"]
    ]
    return {
        "TID": msg["TID"],
        "DEOJGC": msg["DEOJGC"],
        "DEOJCC": msg["DEOJCC"],
        "DEOJCI": msg["DEOJCI"],
        "ESV": msg["ESV"],
        "OPC": opc,
    }


def timed_rate(fn: Callable[[], None], ops_per_call: int, min_time_s: float) -> float:
    """Operations per second of one timed run of at least ``min_time_s``."""
    calls = 0
    start = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time_s:
            return calls * ops_per_call / elapsed


def paired(
    ours: Callable[[], None], theirs: Callable[[], None], n: int, repeats: int, min_time: float
) -> tuple[float, float, float]:
    """Alternate the two codecs run by run (so machine noise hits both alike); return the
    median rate of each and the median of the per-pair ratios."""
    mine, other, ratios = [], [], []
    for _ in range(repeats):
        a = timed_rate(ours, n, min_time)
        b = timed_rate(theirs, n, min_time)
        mine.append(a)
        other.append(b)
        ratios.append(a / b)
    return statistics.median(mine), statistics.median(other), statistics.median(ratios)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short run")
    args = parser.parse_args()
    repeats, min_time = (3, 0.2) if args.quick else (7, 0.5)

    for label, frame_set in (
        ("real-device frames", FRAMES_HEX),
        ("fleet poll responses (varying values)", poll_responses(3000)),
    ):
        compare(label, frame_set, repeats, min_time)


def compare(label: str, frames_hex: list[str], repeats: int, min_time: float) -> None:
    raws = [bytes.fromhex(h) for h in frames_hex]
    frames = [decode_frame(r) for r in raws]
    payloads = [_pychonet_payload(h) for h in frames_hex]
    for frame, raw in zip(frames, raws, strict=True):
        assert frame.encode() == raw
        # both codecs read the same properties out of every frame (same work compared)
        theirs = [(p["EPC"], p["EDT"]) for p in decodeEchonetMsg(raw)["OPC"]]
        assert theirs == [(p.epc, p.edt) for p in frame.props]
        assert bytes(buildEchonetMsg(_pychonet_payload(raw.hex()))).hex() == raw.hex()[:8] + (
            "05ff01" + raw.hex()[14:]
        )

    def erab_decode() -> None:
        for raw in raws:
            decode_frame(raw)

    def pychonet_decode() -> None:
        for raw in raws:
            decodeEchonetMsg(raw)

    def erab_encode() -> None:
        for frame in frames:
            frame.encode()

    def pychonet_encode() -> None:
        for payload in payloads:
            buildEchonetMsg(dict(payload))

    n = len(raws)
    results = {
        "decode": paired(erab_decode, pychonet_decode, n, repeats, min_time),
        "encode": paired(erab_encode, pychonet_encode, n, repeats, min_time),
    }
    print(f"{label}: {n} frames, median of {repeats} paired runs")
    print(f"  {'operation':<10}{'erab/s':>14}{'pychonet/s':>14}{'ratio':>8}")
    for op, (ours, theirs, ratio) in results.items():
        print(f"  {op:<10}{ours:>14,.0f}{theirs:>14,.0f}{ratio:>7.2f}x")


if __name__ == "__main__":
    main()
