"""An event's settlement report: CSV, JSON, two PNG plots and a one-page HTML summary.

:func:`write_report` writes, into one folder:

- ``settlement.json`` and ``settlement.csv``: :meth:`Settlement.to_json` / ``to_csv``, the
  same bytes ``erab settle`` prints;
- ``fleet.png``: the fleet's average kW per 30-minute slot over the event day (over every
  day it touches, for an event crossing midnight) — baseline, metered, and the target
  (baseline minus the commitment for down-DR, plus it for up-DR) — with the event window and
  the same-day adjustment window shaded (the part of it on the plotted days: an event before
  05:00 has its window, or part of it, on the evening before, which the plot names);
- ``customers.png``: how delivery is spread over the customers (kWh per customer over the
  event, a histogram), excluded customers left out and counted in the title;
- ``report.html``: the summary, the product checks with their numbers, the per-slot table
  and the plots, on one page that opens without a server.

Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from erab.aggregator.baseline import window_clock_text
from erab.aggregator.settlement import Settlement, num
from erab.clock import JST

FILES = ("settlement.json", "settlement.csv", "fleet.png", "customers.png", "report.html")


@dataclass(frozen=True)
class ReportFiles:
    out_dir: Path
    files: tuple[Path, ...]


def write_report(settlement: Settlement, out_dir: Path | str) -> ReportFiles:
    """Write the report of ``settlement`` into ``out_dir`` (created if needed)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "settlement.json").write_text(settlement.to_json(), encoding="utf-8")
    (out / "settlement.csv").write_text(settlement.to_csv(), encoding="utf-8")
    plot_fleet(settlement, out / "fleet.png")
    plot_customers(settlement, out / "customers.png")
    (out / "report.html").write_text(summary_html(settlement), encoding="utf-8")
    return ReportFiles(out, tuple(out / f for f in FILES))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_fleet(s: Settlement, path: Path) -> None:
    """Baseline, metered and target kW per slot of the event's day(s), for the fleet."""
    plt = _pyplot()
    included_customers = ~s.excluded_customer
    base_day = np.nansum(s.baseline.kwh[included_customers], axis=0) * 2.0
    have_day = s.day_metered_kwh is not None
    metered_day = (np.nansum(s.day_metered_kwh[included_customers], axis=0) * 2.0
                   if s.day_metered_kwh is not None else None)  # fmt: skip
    day_count = s.baseline.day_count
    span_h = 24 * day_count
    hours = np.arange(base_day.size + 1) / 2.0  # slot edges: a step per slot, to 24:00
    fig, ax = plt.subplots(figsize=(9 if day_count == 1 else 12, 4.5), dpi=110)
    w = s.event_window
    if w is not None:
        ax.axvspan(w.first_slot / 2, (w.first_slot + w.slots) / 2, color="#ffe9a8", alpha=0.6,
                   label="event window")  # fmt: skip
        lo, hi = s.baseline.adjustment_slots
        if hi > max(lo, 0):
            ax.axvspan(max(lo, 0) / 2, hi / 2, color="#d6e6f5", alpha=0.7,
                       label="same-day adjustment window")  # fmt: skip
        if lo < 0 < hi or lo < hi <= 0:  # read on the evening before, left of the plot
            ax.text(0.005, 0.98, f"◀ adjustment window from {window_clock_text(lo, hi)}",
                    transform=ax.transAxes, va="top", fontsize=8, color="#1f4e9c")  # fmt: skip
    ax.step(hours, np.append(base_day, base_day[-1]), where="post", color="#1f4e9c", lw=2,
            label="baseline")  # fmt: skip
    if have_day and metered_day is not None:
        ax.step(hours, np.append(metered_day, metered_day[-1]), where="post", color="#c0392b",
                lw=1.6, label="metered")  # fmt: skip
    if w is not None:
        sign = -1.0 if s.terms.direction == "down" else 1.0
        target = s.fleet_baseline_kwh * 2.0 + sign * s.committed_kwh * 2.0
        ev_hours = np.arange(w.first_slot, w.first_slot + w.slots + 1) / 2.0
        ax.step(ev_hours, np.append(target, target[-1]), where="post", color="#2e8b57", lw=2,
                ls="--", label="target (baseline ∓ commitment)")  # fmt: skip
    ax.set_xlim(0, span_h)
    ticks = range(0, span_h + 1, 3)
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{h % 24:02d}:00" for h in ticks])
    if day_count > 1:  # each midnight marked with the date that starts there
        first = s.terms.start.astimezone(JST).date()
        for j in range(1, day_count):
            ax.axvline(24 * j, color="#555", lw=0.8, ls=":")
            ax.text(24 * j, 1.0, f" {first + timedelta(days=j):%m-%d}",
                    transform=ax.get_xaxis_transform(), va="top", fontsize=8)  # fmt: skip
    ax.set_xlabel("time of day (JST), 30-minute slots")
    ax.set_ylabel("fleet average power per slot (kW)")
    t = s.terms
    ax.set_title(f"{t.event_id}: {t.target_kw:+g} kW {t.product.name}, "
                 f"{_span(s)} — baseline {s.baseline.name}",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_customers(s: Settlement, path: Path) -> None:
    """A histogram of delivered kWh per settled customer."""
    plt = _pyplot()
    included = ~s.excluded_customer
    values = s.customer_delivered_kwh[included]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if values.size:
        ax.hist(values, bins=min(40, max(5, int(np.sqrt(values.size)) + 1)), color="#1f4e9c",
                edgecolor="white")  # fmt: skip
        ax.axvline(float(np.mean(values)), color="#c0392b", lw=1.5,
                   label=f"mean {np.mean(values):.2f} kWh")  # fmt: skip
        if values.min() <= 0.0 <= values.max():  # zero only where it is in range
            ax.axvline(0.0, color="black", lw=0.8)
        ax.legend(fontsize=8)
    ax.set_xlabel("delivered over the event (kWh per customer)")
    ax.set_ylabel("customers")
    ax.set_title(f"{s.terms.event_id}: delivery of {int(included.sum())} customers "
                 f"({int((~included).sum())} excluded)", fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def summary_html(s: Settlement) -> str:
    """The one-page summary (the PNGs are linked by their names beside it)."""
    e = html.escape
    t, sm = s.terms, s.summary()
    ratio = sm["achieved_ratio"]
    # an event crossing midnight names each slot's date too
    when = "%m-%d %H:%M" if s.baseline.day_count > 1 else "%H:%M"
    rows = "".join(
        f"<tr><td>{e(st.strftime(when))}–{e((st + timedelta(minutes=30)).strftime('%H:%M'))}"
        f"</td><td>{num(b, 2)}</td><td>{num(m, 2)}</td><td>{num(d, 2)}</td><td>{num(c, 2)}</td>"
        f"<td class={'fail' if f else 'pass'}>{'failed' if f else 'passed'}</td></tr>"
        for st, b, m, d, c, f in zip(s.slot_starts, s.fleet_baseline_kwh, s.fleet_metered_kwh,
                                     s.fleet_delivered_kwh, s.committed_kwh, s.slot_failed,
                                     strict=True)
    )  # fmt: skip
    checks = "".join(
        f"<tr><td>{e(c.name)}</td><td class={_verdict_class(c.passed)}>"
        f"{_verdict(c.passed)}</td><td class=text>{e(c.detail)}</td></tr>"
        for c in s.checks
    )
    notes = "".join(f"<li>{e(n)}</li>" for n in s.notes)
    b = s.baseline.describe()
    cap = ("no cap" if b["adjustment_cap_pct"] is None
           else f"capped at {num(b['adjustment_cap_pct'], 1)} %")  # fmt: skip
    lo, hi = s.baseline.adjustment_slots
    evening = ""
    if lo < 0 and hi > lo:  # only then: the page of any other event is unchanged
        evening = (f"\nThe same-day adjustment window runs from "
                   f"{e(window_clock_text(lo, hi))}: read on the evening before the event "
                   "and, for the baseline, on the evening before each baseline day.")  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Settlement {e(t.event_id)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 60em; }}
table {{ border-collapse: collapse; margin: .5em 0 1em; }}
td, th {{ border: 1px solid #ccc; padding: .2em .6em; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
td.text {{ text-align: left; }}
.pass {{ color: #1d7a3a; }} .fail {{ color: #b3261e; font-weight: bold; }} .na {{ color: #777; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Settlement of {e(t.event_id)}</h1>
<p>{t.target_kw:+g} kW ({e(t.direction)}-DR), product <b>{e(t.product.name)}</b>
({e(t.product.label)}), {e(t.start.isoformat())} – {e(t.end.isoformat())}.
Baseline <b>{e(s.baseline.name)}</b> (adjustment {e(str(b['adjustment']))},
{cap}, low days below {num(b['low_day_pct'], 0)} %,
lookback {b['lookback_days']} days); missing reads: {e(s.rules.missing_rule)}.{evening}</p>
<table>
<tr><th>committed</th><td>{num(sm['committed_kwh'], 2)} kWh</td></tr>
<tr><th>delivered</th><td>{num(sm['delivered_kwh'], 2)} kWh</td></tr>
<tr><th>achieved / committed</th><td>{'-' if ratio is None else f'{100 * ratio:.1f} %'}</td></tr>
<tr><th>customers settled / excluded</th>
<td>{sm['customers'] - sm['customers_excluded']} / {sm['customers_excluded']}</td></tr>
<tr><th>customer incentives</th><td>{num(sm['incentives_yen'], 2)} yen</td></tr>
<tr><th>revenue ({num(s.price_yen_per_kwh, 2)} yen/kWh)</th>
<td>{num(sm['revenue_yen'], 2)} yen</td></tr>
<tr><th>shortfall penalty ({num(s.penalty_yen_per_kwh, 2)} yen/kWh)</th>
<td>{num(sm['penalty_yen'], 2)} yen</td></tr>
<tr><th>margin</th><td>{num(sm['margin_yen'], 2)} yen</td></tr>
</table>
<h2>Product checks</h2>
<table><tr><th>check</th><th>result</th><th>numbers</th></tr>{checks}</table>
<h2>Fleet per slot (kWh)</h2>
<table><tr><th>slot</th><th>baseline</th><th>metered</th><th>delivered</th><th>committed</th>
<th>slot</th></tr>{rows}</table>
<img src="fleet.png" alt="fleet baseline, metered and target kW per slot">
<img src="customers.png" alt="delivered kWh per customer">
<ul>{notes}</ul>
<p>Data: settlement.json, settlement.csv (per customer and slot).</p>
</body></html>
"""


def _span(s: Settlement) -> str:
    """The event's start and end (JST); the end's date only where it is another day."""
    start, end = s.terms.start.astimezone(JST), s.terms.end.astimezone(JST)
    same_day = (end - timedelta(microseconds=1)).date() == start.date()
    return f"{start:%Y-%m-%d %H:%M}–{end:{'%H:%M' if same_day else '%Y-%m-%d %H:%M'}}"


def _verdict(passed: bool | None) -> str:
    return "not assessed" if passed is None else "passed" if passed else "FAILED"


def _verdict_class(passed: bool | None) -> str:
    return "na" if passed is None else "pass" if passed else "fail"
