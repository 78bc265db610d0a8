"""``erab settle``, ``erab report``, ``erab products``: an event's settlement from meter data.

``erab settle EVENT --home H`` finds the event in the deployment's audit log (where the RA
records every event), the sites, customers and contracts in the RA's store
(``HOME/ra/ra.sqlite``, or ``--store URL`` as ``erab ra`` takes it), each site's meter
(``HOME/ra/meters.csv``, else the emulated town's names) and the route A readings in
``HOME/erab.sqlite`` (``erab meter ami``) or ``--meter-store URL``; it prints the
settlement (``--json``/``--csv``: byte-identical for the same inputs).  ``erab report
EVENT --out-dir DIR`` writes CSV, JSON, PNG plots and an HTML page.
docs/settlement.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erab.cli import CliError

if TYPE_CHECKING:
    from erab.aggregator.settlement import Settlement


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", type=Path, default=None,
                   help="deployment home (default: $ERAB_HOME or ./erab-data): its audit log "
                        "(events), HOME/ra/ra.sqlite (registry) and HOME/erab.sqlite "
                        "(meter readings)")  # fmt: skip


def _add_settle_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("event", metavar="EVENT", help="the event's id (as 'erab ra event list' shows)")
    _add_home(p)
    p.add_argument("--store", default=None, metavar="URL",
                   help="the RA's store (registry): sqlite:///PATH or postgresql://... "
                        "(default: HOME/ra/ra.sqlite)")  # fmt: skip
    p.add_argument("--meter-store", default=None, metavar="URL",
                   help="store with the route A readings (default: HOME/erab.sqlite when it "
                        "exists, else the RA's store)")  # fmt: skip
    p.add_argument("--event-file", default=None, metavar="FILE",
                   help="take the event from this JSON file ('erab ra event show --json' "
                        "output) instead of the audit log")  # fmt: skip
    p.add_argument("--products", default=None, metavar="FILE",
                   help="products TOML (default: the one shipped with erab)")
    p.add_argument("--baseline", default="high-x-of-y", choices=("high-x-of-y", "average-of-y"),
                   help="baseline for sites without a contract: High 4 of 5 / 2 of 3 "
                        "(default) or the average of the 5 / 3 days")  # fmt: skip
    p.add_argument("--adjustment", default="5h-2h", choices=("5h-2h", "4h-1h", "none"),
                   help="same-day adjustment window for sites without a contract "
                        "(default 5h-2h: 6 slots ending 2 h before the start)")  # fmt: skip
    p.add_argument("--adjustment-cap-pct", type=float, default=None, metavar="PCT",
                   help="cap the same-day adjustment at this %% of the baseline (default: none)")
    p.add_argument("--missing", default="exclude-slot",
                   choices=("exclude-slot", "exclude-customer"),
                   help="what a missing or estimated read in the event does (default: leave "
                        "that slot out)")  # fmt: skip
    p.add_argument("--accept-estimated", action="store_true",
                   help="count estimated reads as measured")
    p.add_argument("--incentive-yen-per-kwh", type=float, default=0.0, metavar="YEN",
                   help="incentive for sites without a contract (default 0)")
    p.add_argument("--incentive-cap-yen", type=float, default=None, metavar="YEN",
                   help="most a customer is paid for the event where its contract sets no "
                        "cap of its own (default: no cap)")
    p.add_argument("--price-yen-per-kwh", type=float, default=None, metavar="YEN",
                   help="what the coordinator or market pays per kWh (default: the product's)")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "settle", help="settle a DR event: baseline, delivered kWh per customer and slot, money",
        description="Settle one DR event from route A meter data: baseline per customer "
        "(contract's method), delivered kWh per slot, the product's checks, incentives, "
        "revenue and penalties. docs/settlement.md.",
    )  # fmt: skip
    _add_settle_options(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the whole settlement as JSON")
    fmt.add_argument("--csv", action="store_true", help="one CSV row per customer and slot")
    p.set_defaults(handler=cmd_settle)

    p = subparsers.add_parser(
        "report", help="write an event's settlement report (CSV, JSON, PNG plots, HTML)",
        description="Settle the event as 'erab settle' does and write settlement.json, "
        "settlement.csv, fleet.png, customers.png and report.html into --out-dir.",
    )  # fmt: skip
    _add_settle_options(p)
    p.add_argument("--out-dir", type=Path, required=True, metavar="DIR",
                   help="folder to write the report into (created if needed)")  # fmt: skip
    p.set_defaults(handler=cmd_report)

    group = subparsers.add_parser(
        "products", help="balancing-market products (response time, duration, assessment)",
        description="The balancing-market and capacity-market products erab verifies events "
        "against.",
    )  # fmt: skip
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="products_command", metavar="ACTION")
    p = sub.add_parser("list", help="list the products and their requirements")
    p.add_argument("--products", default=None, metavar="FILE",
                   help="products TOML (default: the one shipped with erab)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(handler=cmd_products_list)


def _settle(args: argparse.Namespace) -> Settlement:
    from erab.aggregator.baseline import BaselineError, BaselineParams
    from erab.aggregator.products import ProductError, load_products
    from erab.aggregator.settlement import (
        HomeSources,
        SettlementError,
        SettlementRules,
        event_from_file,
        find_event,
        settle_home,
    )
    from erab.settings import Settings
    from erab.store import StoreError

    home: Path = args.home if args.home is not None else Settings.from_env().home
    try:
        products = load_products(args.products)
        sources = HomeSources.of(home, args.meter_store, args.store)
        if args.event_file is not None:
            event = event_from_file(args.event_file)
            if event.event_id != args.event:
                raise CliError(f"{args.event_file} holds event {event.event_id!r}, not "
                               f"{args.event!r}")  # fmt: skip
            events = {**sources.events(), event.event_id: event}
        else:
            event, events = find_event(sources, args.event)
        params = BaselineParams(
            method=args.baseline,
            adjustment=None if args.adjustment == "none" else args.adjustment,
            adjustment_cap_pct=args.adjustment_cap_pct,
        )
        return settle_home(
            sources, event, all_events=events.values(), products=products,
            default_params=params, default_incentive_yen_per_kwh=args.incentive_yen_per_kwh,
            rules=SettlementRules(args.missing, args.accept_estimated),
            price_yen_per_kwh=args.price_yen_per_kwh, incentive_cap_yen=args.incentive_cap_yen,
        )  # fmt: skip
    except (SettlementError, BaselineError, ProductError, StoreError) as exc:
        raise CliError(str(exc)) from None


def cmd_settle(args: argparse.Namespace) -> int:
    s = _settle(args)
    if args.json:
        sys.stdout.write(s.to_json())
        return 0
    if args.csv:
        sys.stdout.write(s.to_csv())
        return 0
    from erab.aggregator.baseline import window_clock_text
    from erab.aggregator.settlement import num

    t, sm = s.terms, s.summary()
    ratio = sm["achieved_ratio"]
    print(f"event {t.event_id}: {t.target_kw:+g} kW {t.direction}-DR, {t.product.name}, "
          f"{t.start.isoformat()} – {t.end.isoformat()}")  # fmt: skip
    print(f"baseline: {s.baseline.name}; missing reads: {s.rules.missing_rule}")
    lo, hi = s.baseline.adjustment_slots
    if lo < 0 and hi > lo:  # an early-morning event (only then: other output unchanged)
        print(f"same-day adjustment window: {window_clock_text(lo, hi)} (the evening before "
              "the event and before each baseline day)")  # fmt: skip
    print(f"delivered {num(sm['delivered_kwh'], 2)} kWh of {num(sm['committed_kwh'], 2)} "
          f"committed ({'-' if ratio is None else f'{100 * ratio:.1f} %'}); customers "
          f"{sm['customers'] - sm['customers_excluded']} settled, "
          f"{sm['customers_excluded']} excluded")  # fmt: skip
    print(f"incentives {num(sm['incentives_yen'], 2)} yen, revenue {num(sm['revenue_yen'], 2)} "
          f"yen, penalty {num(sm['penalty_yen'], 2)} yen, margin {num(sm['margin_yen'], 2)} "
          "yen")  # fmt: skip
    # an event crossing midnight names each slot's date too
    when = "%m-%d %H:%M" if s.baseline.day_count > 1 else "%H:%M"
    width = len(s.slot_starts[0].strftime(when))
    print(f"{'slot':<{width}}  {'baseline':>10} {'metered':>10} {'delivered':>10} "
          f"{'committed':>10}")  # fmt: skip
    for k, st in enumerate(s.slot_starts):
        failed = "  failed" if s.slot_failed[k] else ""
        print(f"{st.strftime(when)}  {num(s.fleet_baseline_kwh[k], 2):>10} "
              f"{num(s.fleet_metered_kwh[k], 2):>10} {num(s.fleet_delivered_kwh[k], 2):>10} "
              f"{num(s.committed_kwh[k], 2):>10}{failed}")  # fmt: skip
    for c in s.checks:
        verdict = "n/a " if c.passed is None else "PASS" if c.passed else "FAIL"
        print(f"[{verdict}] {c.name}: {c.detail}")
    for note in s.notes:
        print(f"note: {note}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from erab.aggregator.report import write_report

    s = _settle(args)
    files = write_report(s, args.out_dir)
    for f in files.files:
        print(f)
    return 0


def cmd_products_list(args: argparse.Namespace) -> int:
    from erab.aggregator.products import ProductError, load_products

    try:
        products = load_products(args.products)
    except ProductError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump([p.as_dict() for p in products.values()], sys.stdout, indent=2,
                  sort_keys=True, ensure_ascii=False)  # fmt: skip
        sys.stdout.write("\n")
        return 0
    print(f"{'product':<12} {'response':>9} {'duration':>9} {'block':>6} {'min offer':>10} "
          f"{'notice':>7}  assessment")  # fmt: skip
    for p in products.values():
        print(f"{p.name:<12} {_dur(p.response_time_s):>9} {_dur(p.min_duration_s):>9} "
              f"{p.block_minutes:>4}m {p.min_offer_kw:>7g} kW {_dur(p.notice_s):>7}  "
              f"{p.assessment}")  # fmt: skip
    return 0


def _dur(seconds: float) -> str:
    if seconds == 0:
        return "-"
    if seconds < 60:
        return f"{seconds:g} s"
    if seconds < 3600:
        return f"{seconds / 60:g} min"
    return f"{seconds / 3600:g} h"
