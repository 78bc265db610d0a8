"""``erab ra``: the resource aggregator's registry (sites, gateways, resources, imports).

The registry commands (``site``, ``gateway``, ``resource``, ``import``) are clients of the
running RA's REST API when given an operator's token (``--token-file`` or
``$ERAB_TOKEN_FILE``): the RA checks the role and audits each change under the operator's
name.  With ``--offline``, ``--store``, or no token, they work on the RA's store directly
(``HOME/ra/ra.sqlite``; ``--home``, default ``$ERAB_HOME`` or ``./erab-data``): to set up
before ``erab ra serve`` first runs.  docs/aggregator-registry.md describes the records.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erab.cli import CliError

if TYPE_CHECKING:
    from erab.aggregator.registry import Inventory, Registry
    from erab.devices.scenario import Scenario


def store_path(home: Path) -> Path:
    """Where the RA keeps its store under a deployment home."""
    return home / "ra" / "ra.sqlite"


def _home(args: argparse.Namespace) -> Path:
    from erab.settings import Settings

    home: Path = args.home if args.home is not None else Settings.from_env().home
    return home


def _registry(args: argparse.Namespace, *, create: bool) -> Registry:
    from erab.aggregator.registry import (
        Registry,
        default_store_url,
        open_aggregator_store,
        redact_url,
    )
    from erab.store import StoreError, StoreNotFound

    url = getattr(args, "store", None) or default_store_url(_home(args))
    try:
        return Registry(open_aggregator_store(url, create=create))
    except StoreNotFound:
        raise CliError(
            f"no RA store at {redact_url(url)}: add a site or run 'erab ra import' with this "
            f"{'--store' if getattr(args, 'store', None) else '--home'} first"
        ) from None
    except StoreError as exc:
        raise CliError(str(exc).replace(url, redact_url(url))) from None


def _add_store(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--store",
        default=None,
        metavar="URL",
        help="the RA's store: sqlite:///PATH or postgresql://USER@HOST/DB (default: the "
        "SQLite file HOME/ra/ra.sqlite)",
    )


def _add_home(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--home",
        type=Path,
        default=None,
        help="deployment home (default: $ERAB_HOME or ./erab-data); the RA's store "
        "is HOME/ra/ra.sqlite unless --store says otherwise",
    )
    _add_store(p)


def _add_registry_options(p: argparse.ArgumentParser) -> None:
    """Where a registry command goes: the running RA's API with a token, or the store."""
    import os

    from erab.cli.ra_event import DEFAULT_API

    _add_home(p)
    p.add_argument("--api", default=os.environ.get("ERAB_API", DEFAULT_API),
                   help=f"the RA's API, used when a token is given (default $ERAB_API or "
                   f"{DEFAULT_API}); https:// for one served with --api-tls")  # fmt: skip
    p.add_argument("--token-file", type=Path, default=None,
                   help="your API token (default $ERAB_TOKEN_FILE): with one, the command "
                   "goes through the running RA, which checks your role and audits the "
                   "change under your name; without one, it works on the store (as "
                   "--offline)")  # fmt: skip
    p.add_argument("--ca-file", type=Path, default=None,
                   help="CA bundle that verifies an https:// API (default $ERAB_CA_FILE or "
                   "HOME/security/pki/ca-bundle.pem of $ERAB_HOME)")  # fmt: skip
    p.add_argument("--offline", action="store_true",
                   help="work on the RA's store directly (--home, or --store, which implies "
                   "it), even with a token: for setting up before 'erab ra serve' runs, or "
                   "repairs; not "
                   "role-checked, and a running RA's live state does not see the change "
                   "until it restarts")  # fmt: skip


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(subparsers: Any) -> None:
    group: argparse.ArgumentParser = subparsers.add_parser(
        "ra",
        help="the resource aggregator: registry of sites, gateways and resources",
        description="The resource aggregator (RA). Its registry: sites, their gateways and the "
        "resources (ECHONET Lite devices) each gateway may control. docs/aggregator.md.",
    )
    group.set_defaults(group_parser=group)
    sub = group.add_subparsers(dest="ra_command", metavar="SUBCOMMAND")

    from erab.cli.ra_event import register_event
    from erab.cli.ra_serve import register_serve

    register_serve(sub)
    register_event(sub)
    _register_flex_and_alerts(sub)
    _register_status(sub)

    # sites
    site = sub.add_parser("site", help="sites (homes, stores) of the fleet")
    site.set_defaults(group_parser=site)
    ssub = site.add_subparsers(dest="site_command", metavar="ACTION")
    p = ssub.add_parser("add", help="register a site")
    p.add_argument("site_id", help="the site's id (letters, digits, '.', '_', ':', '-')")
    p.add_argument("--name", default="", help="a readable name (default: the id)")
    p.add_argument("--kind", default="home", help="home, store, office, factory or other")
    p.add_argument("--customer", default=None, help="the customer id it belongs to")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_site_add)
    p = ssub.add_parser("list", help="list the sites")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_site_list)
    p = ssub.add_parser("show", help="one site with its gateways and resources")
    p.add_argument("site_id", help="the site's id")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_site_show)
    p = ssub.add_parser("meter", help="set the route A smart meter that measures a site",
                        description="Settlement reads each site's delivery from this meter.")
    p.add_argument("site_id", help="the site's id")
    p.add_argument("meter_id", help="the meter's id as the route A head-end names it")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_site_meter)

    # gateways
    gw = sub.add_parser("gateway", help="site gateways (HEMS) and their status")
    gw.set_defaults(group_parser=gw)
    gsub = gw.add_subparsers(dest="gateway_command", metavar="ACTION")
    p = gsub.add_parser("add", help="register a gateway at a site")
    p.add_argument("gateway_id", help="the gateway's id (as in its certificate)")
    p.add_argument("--site", required=True, help="the site it serves")
    p.add_argument("--cert-serial", default=None, help="serial (hex) of its certificate")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_gateway_add)
    p = gsub.add_parser("list", help="list the gateways with status and last seen")
    p.add_argument("--site", default=None, help="only the gateways of this site")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_gateway_list)
    p = gsub.add_parser("show", help="one gateway with its allow-list and pending devices")
    p.add_argument("gateway_id", help="the gateway's id")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_gateway_show)

    # resources
    res = sub.add_parser("resource", help="controllable devices (batteries, air conditioners...)")
    res.set_defaults(group_parser=res)
    rsub = res.add_subparsers(dest="resource_command", metavar="ACTION")
    p = rsub.add_parser("add", help="register a device as a resource of a gateway")
    p.add_argument("resource_id", help="the resource's id (the gateway's device id for it)")
    p.add_argument("--site", required=True, help="the site it is at")
    p.add_argument("--gateway", required=True, help="the gateway that controls it")
    p.add_argument("--node-id", required=True, help="its node's identification (EPC 0x83), hex")
    p.add_argument("--eoj", required=True, help="its object: 6 hex digits, e.g. 027d01")
    p.add_argument(
        "--class", dest="device_class", default="", help="device class (default: from the EOJ)"
    )
    p.add_argument("--rated-kw", type=float, default=None, help="rated power, kW")
    p.add_argument("--rated-kwh", type=float, default=None, help="rated energy, kWh")
    p.add_argument("--comfort-min-c", type=float, default=None, help="comfort band low, °C")
    p.add_argument("--comfort-max-c", type=float, default=None, help="comfort band high, °C")
    p.add_argument("--soc-reserve-pct", type=float, default=None, help="SOC kept in reserve, %%")
    p.add_argument("--soc-max-pct", type=float, default=None, help="highest SOC to charge to, %%")
    p.add_argument(
        "--available",
        action="append",
        default=[],
        metavar="HH:MM-HH:MM",
        help="an availability window (JST); repeat for more",
    )
    p.add_argument(
        "--not-allowed",
        action="store_true",
        help="register it, but do not let the gateway control it yet",
    )
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_resource_add)
    p = rsub.add_parser("list", help="list the resources")
    p.add_argument("--site", default=None, help="only the resources of this site")
    p.add_argument("--gateway", default=None, help="only the resources of this gateway")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_resource_list)
    p = rsub.add_parser("show", help="one resource")
    p.add_argument("resource_id", help="the resource's id")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_resource_show)

    # import
    p = sub.add_parser(
        "import",
        help="register records from a CSV or TOML file, or an 'erab emulate' scenario",
        description="FILE.csv (a 'type' column, then fields) or FILE.toml ([[site]], "
        "[[gateway]], [[resource]], [[customer]], [[contract]]); with --scenario, FILE is an "
        "'erab emulate' scenario (.json/.toml); without FILE, --homes/--stores/--seed build "
        "the town as 'erab emulate' does. Records already registered are left as they are.",
    )
    p.add_argument("file", nargs="?", default=None, help="the file to import")
    p.add_argument(
        "--scenario",
        action="store_true",
        help="FILE is an 'erab emulate' scenario: one site and gateway per town site",
    )
    p.add_argument("--homes", type=int, default=None, help="homes of the town (default 5)")
    p.add_argument("--stores", type=int, default=None, help="stores of the town (default 1)")
    p.add_argument("--seed", type=int, default=None, help="the town's seed (default 0)")
    _add_registry_options(p)
    _add_json(p)
    p.set_defaults(handler=cmd_import)


def _print(args: argparse.Namespace, data: Any, lines: list[str]) -> int:
    if args.json:
        json.dump(data, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        for line in lines:
            print(line)
    return 0


def _rows(records: Any) -> list[dict[str, Any]]:
    from erab.aggregator.registry import inventory_rows

    return inventory_rows(records)


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.isoformat(timespec="seconds")


# --- the registry commands: the RA's API, or the store with --offline -------------------------


class _StoreRegistry:
    """The registry commands' offline path: the RA's store, read and written directly."""

    def __init__(self, args: argparse.Namespace, *, create: bool) -> None:
        self.registry = _registry(args, create=create)

    def get(self, what: str, key: str | None = None, **query: str | None) -> Any:
        reg = self.registry
        if what == "sites":
            return _rows(reg.sites()) if key is None else {
                **_rows([reg.site(key)])[0], "gateways": _rows(reg.gateways(key)),
                "resources": _rows(reg.resources(site_id=key))}  # fmt: skip
        if what == "gateways":
            if key is not None:
                gw = reg.gateway(key)
                return {**_rows([gw])[0], "allow_list": _rows(reg.allow_list(key)),
                        "pending": _rows(reg.pending(key))}  # fmt: skip
            if query.get("site") is not None:
                reg.site(str(query["site"]))
            return _rows(reg.gateways(query.get("site")))
        if key is not None:
            return _rows([reg.resource(key)])[0]
        return _rows(reg.resources(site_id=query.get("site"), gateway_id=query.get("gateway")))

    def add(self, kind: str, row: dict[str, Any]) -> dict[str, Any]:
        from erab.aggregator.registry import inventory_from_document

        record = getattr(inventory_from_document({kind: [row]}, "the record"), f"{kind}s")[0]
        added = getattr(self.registry, f"add_{kind}")(record)
        return _rows([added])[0]

    def set_meter(self, site_id: str, meter_id: str) -> dict[str, Any]:
        return _rows([self.registry.update_site(site_id, meter_id=meter_id)])[0]

    def import_inventory(self, inventory: Inventory) -> dict[str, Any]:
        report = self.registry.import_inventory(inventory)
        return {"added": report.added, "unchanged": report.unchanged,
                "summary": report.describe()}  # fmt: skip


class _ApiRegistry:
    """The registry commands as clients of the running RA's REST API: the RA checks the
    operator's role and audits each change under the operator's name."""

    def __init__(self, args: argparse.Namespace, token: str) -> None:
        from erab.cli.ra_event import tls_context

        self.api, self.token = args.api, token
        self.context = tls_context(args.api, args.ca_file)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        from erab.cli.ra_event import call

        try:
            return call(self.api, self.token, method, path, body, context=self.context)
        except RuntimeError as exc:
            raise CliError(str(exc)) from None

    def get(self, what: str, key: str | None = None, **query: str | None) -> Any:
        from urllib.parse import quote, urlencode

        path = f"/{what}" + ("" if key is None else f"/{quote(key, safe='')}")
        params = {k: v for k, v in query.items() if v is not None}
        return self._call("GET", path + (f"?{urlencode(params)}" if params else ""))

    def add(self, kind: str, row: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"/{kind}s", row))

    def set_meter(self, site_id: str, meter_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        return dict(self._call("PUT", f"/sites/{quote(site_id, safe='')}/meter",
                               {"meter_id": meter_id}))  # fmt: skip

    def import_inventory(self, inventory: Inventory) -> dict[str, Any]:
        from erab.aggregator.registry import inventory_document

        return dict(self._call("POST", "/import", inventory_document(inventory)))


def _backend(args: argparse.Namespace, *, create: bool = False) -> _StoreRegistry | _ApiRegistry:
    """The API when a token is given (``--token-file`` or ``$ERAB_TOKEN_FILE``) and neither
    ``--offline`` nor ``--store``; the store otherwise.  Never the one for the other: a
    change an operator meant to make through the RA (role-checked, audited under their
    name) must not land in the store unaudited because the RA did not answer."""
    import os

    token_file = args.token_file or (Path(os.environ["ERAB_TOKEN_FILE"])
                                     if os.environ.get("ERAB_TOKEN_FILE") else None)  # fmt: skip
    if args.offline or args.store is not None or token_file is None:
        return _StoreRegistry(args, create=create)
    from erab.cli.ra_event import read_token

    args.token_file = token_file
    return _ApiRegistry(args, read_token(args))


def _seen(value: Any) -> str:
    return "-" if value is None else str(value)


def _no_none(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}


def cmd_site_add(args: argparse.Namespace) -> int:
    site = _backend(args, create=True).add("site", _no_none({
        "site_id": args.site_id, "name": args.name or args.site_id, "kind": args.kind,
        "customer_id": args.customer}))  # fmt: skip
    return _print(args, site, [f"site {site['site_id']} added ({site['kind']})"])


def cmd_site_list(args: argparse.Namespace) -> int:
    sites = _backend(args).get("sites")
    return _print(args, sites,
                  [f"{s['site_id']:<24} {s['kind']:<8} {s['name']}" for s in sites]
                  or ["no sites"])  # fmt: skip


def cmd_site_meter(args: argparse.Namespace) -> int:
    site = _backend(args).set_meter(args.site_id, args.meter_id)
    return _print(args, site, [f"site {site['site_id']}: meter {site['meter_id']}"])


def cmd_site_show(args: argparse.Namespace) -> int:
    data = _backend(args).get("sites", args.site_id)
    lines = [
        f"site {data['site_id']} ({data['kind']}): {data['name']}",
        f"customer: {data.get('customer_id') or '-'}",
        f"meter: {data.get('meter_id') or '-'}",
    ]
    lines += [f"gateway {g['gateway_id']}: {g['status']}, last seen {_seen(g['last_seen'])}"
              for g in data["gateways"]]  # fmt: skip
    lines += [f"resource {r['resource_id']}: {r['device_class']} {r['eoj']}"
              for r in data["resources"]]  # fmt: skip
    return _print(args, data, lines)


def cmd_gateway_add(args: argparse.Namespace) -> int:
    gw = _backend(args).add("gateway", _no_none({
        "gateway_id": args.gateway_id, "site_id": args.site, "cert_serial": args.cert_serial}))
    return _print(args, gw, [f"gateway {gw['gateway_id']} added at site {gw['site_id']}"])


def cmd_gateway_list(args: argparse.Namespace) -> int:
    gws = _backend(args).get("gateways", site=args.site)
    lines = [f"{g['gateway_id']:<24} {g['site_id']:<20} {g['status']:<9} last seen "
             f"{_seen(g['last_seen'])}" for g in gws]  # fmt: skip
    return _print(args, gws, lines or ["no gateways"])


def cmd_gateway_show(args: argparse.Namespace) -> int:
    data = _backend(args).get("gateways", args.gateway_id)
    allow, pending = data["allow_list"], data["pending"]
    lines = [
        f"gateway {data['gateway_id']} at site {data['site_id']}",
        f"status: {data['status']} since {_seen(data['status_since'])}; last seen "
        f"{_seen(data['last_seen'])}",
        f"certificate serial: {data.get('cert_serial') or '-'}",
        f"allow-list ({len(allow)}):",
        *[f"  {a['device_id']}: node {a['node_id']} EOJ {a['eoj']}" for a in allow],
        f"pending devices ({len(pending)}):",
        *[f"  node {p['node_id']} EOJ {p['eoj']} ({p['device_id']})" for p in pending],
    ]
    return _print(args, data, lines)


def cmd_resource_add(args: argparse.Namespace) -> int:
    r = _backend(args).add("resource", _no_none({
        "resource_id": args.resource_id, "site_id": args.site, "gateway_id": args.gateway,
        "device_class": args.device_class, "node_id": args.node_id, "eoj": args.eoj,
        "rated_kw": args.rated_kw, "rated_kwh": args.rated_kwh,
        "comfort_min_c": args.comfort_min_c, "comfort_max_c": args.comfort_max_c,
        "soc_reserve_pct": args.soc_reserve_pct, "soc_max_pct": args.soc_max_pct,
        "availability": list(args.available), "allowed": not args.not_allowed}))  # fmt: skip
    return _print(args, r, [f"resource {r['resource_id']} added ({r['device_class']} {r['eoj']} "
                            f"at {r['gateway_id']}{'' if r['allowed'] else ', not allowed'})"])


def cmd_resource_list(args: argparse.Namespace) -> int:
    rs = _backend(args).get("resources", site=args.site, gateway=args.gateway)
    lines = [f"{r['resource_id']:<28} {r['device_class']:<12} {r['eoj']} {r['gateway_id']:<20} "
             f"{'allowed' if r['allowed'] else 'not allowed'}" for r in rs]  # fmt: skip
    return _print(args, rs, lines or ["no resources"])


def cmd_resource_show(args: argparse.Namespace) -> int:
    row = _backend(args).get("resources", args.resource_id)
    return _print(args, row, [f"{k}: {'-' if v is None else v}" for k, v in row.items()])


def cmd_import(args: argparse.Namespace) -> int:
    from erab.aggregator.registry import read_inventory

    if args.file is None and args.scenario:
        raise CliError("--scenario needs FILE (an 'erab emulate' scenario file)")
    if args.file is not None and not args.scenario:
        if any(v is not None for v in (args.homes, args.stores, args.seed)):
            raise CliError("--homes/--stores/--seed go with --scenario or without FILE")
        if not Path(args.file).is_file():
            raise CliError(f"no such file: {args.file}")
        inventory = read_inventory(args.file)
    else:
        inventory = scenario_inventory(_town_scenario(args))
    report = _backend(args, create=True).import_inventory(inventory)
    return _print(args, {"added": report["added"], "unchanged": report["unchanged"]},
                  [report["summary"]])  # fmt: skip


def _town_scenario(args: argparse.Namespace) -> Scenario:
    from erab.devices import Scenario, load_scenario

    for name in ("homes", "stores"):
        value = getattr(args, name)
        if value is not None and value < 0:
            raise CliError(f"--{name} must be >= 0, got {value}")
    if args.file is not None:
        return load_scenario(args.file, homes=args.homes, stores=args.stores, seed=args.seed)
    homes = 5 if args.homes is None else args.homes
    stores = 1 if args.stores is None else args.stores
    return Scenario.generate(homes, stores, seed=args.seed or 0)


# device kind in the town -> the registry's device class
_TOWN_CLASSES = {
    "home_ac": "aircon",
    "store_ac": "aircon",
    "pv": "pv",
    "battery": "battery",
    "ev": "ev",
    "water_heater": "water_heater",
    "fuel_cell": "fuel_cell",
    "lighting": "lighting",
    "showcase": "showcase",
}
NOMINAL_COP = 3.0  # heat pumps' rated electric input is about their heat output / 3


def scenario_inventory(scenario: Scenario) -> Inventory:
    """One site and one gateway (``gw-<site>``) per site of an emulated town, each of its
    devices a resource with the ratings the emulation gives it.  Node ids and EOJs are the
    ones ``erab emulate`` serves (node id: the site's stable 0x83 identification; instances
    numbered per class from 1), so the town's gateways propose exactly these devices."""
    from erab.aggregator.registry import Inventory
    from erab.devices.town import Town
    from erab.echonet.node import DEFAULT_MANUFACTURER_CODE
    from erab.store import Gateway, Resource, Site

    town = Town(scenario, datetime(2026, 8, 1, tzinfo=UTC))
    inv = Inventory()
    for i, spec in enumerate(town.sites):
        site_id, gw_id = spec.name, f"gw-{spec.name}"
        # the head-end names the town's meters in site order (erab.meter.headend.meter_names)
        inv.sites.append(Site(site_id, spec.name, spec.kind, meter_id=f"M{i:06d}"))
        inv.gateways.append(Gateway(gw_id, site_id))
        # the same identification erab.devices.server gives the site's node
        # (0x83 = 0xFE, the maker code, 13 bytes: ECHONET Lite Part 2 §6.11.1)
        unique = hashlib.sha256(f"erab-site:{scenario.seed}:{spec.name}".encode()).digest()[:13]
        node = b"\xfe" + DEFAULT_MANUFACTURER_CODE.to_bytes(3, "big") + unique
        seen: dict[int, int] = {}
        for ref in town.devices_of(i):
            instance = seen.get(ref.class_code, 0) + 1
            seen[ref.class_code] = instance
            rated_kw, rated_kwh, extra = _ratings(town, ref.kind, ref.index)
            inv.resources.append(
                Resource(
                    f"{site_id}.{_TOWN_CLASSES[ref.kind]}-{instance}",
                    site_id,
                    gw_id,
                    _TOWN_CLASSES[ref.kind],
                    node.hex(),
                    f"{ref.class_code:04x}{instance:02x}",
                    rated_kw,
                    rated_kwh,
                    **extra,
                )
            )
    return inv


def _ratings(town: Any, kind: str, i: int) -> tuple[float | None, float | None, dict[str, Any]]:
    def kw(watts: float) -> float:
        return round(float(watts) / 1000.0, 3)

    if kind == "battery":
        b = town.battery
        return (
            kw(max(b.max_charge_w[i], b.max_discharge_w[i])),
            kw(b.capacity_wh[i]),
            {"soc_reserve_pct": 20.0, "soc_max_pct": 95.0},
        )
    if kind == "ev":
        b = town.ev.battery
        return (
            kw(b.max_charge_w[i]),
            kw(b.capacity_wh[i]),
            {"soc_reserve_pct": 30.0, "soc_max_pct": 90.0},
        )
    if kind == "pv":
        return kw(town.pv.rated_w[i]), None, {}
    if kind in ("home_ac", "store_ac"):
        fleet = town.home_ac if kind == "home_ac" else town.store_ac
        electric = fleet.rated_cooling_w[i] / NOMINAL_COP + fleet.fan_w[i]
        return kw(electric), None, {"comfort_min_c": 20.0, "comfort_max_c": 28.0}
    if kind == "water_heater":
        wh = town.water_heater
        return kw(wh.heat_output_w[i] / NOMINAL_COP), round(float(wh.capacity_kwh[i]), 3), {}
    if kind in ("fuel_cell", "lighting", "showcase"):
        return kw(getattr(town, kind).rated_w[i]), None, {}
    return None, None, {}


# --- erab ra serve: the options beside the service's own (cli/ra_serve.py) ------------------


def add_serve_options(p: argparse.ArgumentParser) -> None:
    """``erab ra serve``'s worker, store, alert and TLS options."""
    p.add_argument("--worker", action="store_true",
                   help="run only ingest, sharing the broker's durable consumers with the RA "
                   "and any other worker (no events, no API); for more throughput")  # fmt: skip
    _add_store(p)
    p.add_argument("--silent-after", type=float, default=300.0, metavar="SECONDS",
                   help="a gateway silent this long is marked offline, with an alert "
                   "(default 300)")  # fmt: skip
    p.add_argument("--cert-warn-days", type=float, default=30.0, metavar="DAYS",
                   help="alert for certificates expiring within this many days (default 30)")
    p.add_argument("--push-allow-lists", action=argparse.BooleanOptionalAction, default=None,
                   help="answer each gateway's hello with its allow-list as a signed command, "
                   "which the gateway executes (on by default; --no-push-allow-lists leaves "
                   "each gateway on its site config's allow-list)")  # fmt: skip
    p.add_argument("--api-tls", action="store_true",
                   help="serve the API over HTTPS with the RA's certificate from the "
                   "deployment's CA (HOME/ra/api.pem, issued on first use); clients verify "
                   "it with HOME/security/pki/ca-bundle.pem")  # fmt: skip


def alert_settings(args: argparse.Namespace) -> Any:
    from erab.aggregator.alerts import AlertSettings

    try:
        return AlertSettings(silent_after_s=args.silent_after, cert_warn_days=args.cert_warn_days)
    except ValueError as exc:
        raise CliError(f"--silent-after/--cert-warn-days: {exc}") from None


def service_options(args: argparse.Namespace) -> dict[str, Any]:
    """The RaService keywords ``erab ra serve``'s options give."""
    return {"store_url": args.store, "alerts": alert_settings(args),
            "push_allow_lists": args.push_allow_lists is not False}  # fmt: skip


def api_tls_files(home: Path, host: str) -> tuple[Path, Path]:
    from erab.aggregator.api import api_certificate

    try:
        return api_certificate(home, [host])
    except (OSError, ValueError) as exc:
        raise CliError(f"--api-tls: no certificate for the API ({exc})") from None


def cmd_worker(args: argparse.Namespace, home: Path) -> int:
    """``erab ra serve --worker``: ingest until stopped; prints its counters on exit."""
    import asyncio
    import signal

    from erab.aggregator.service import RaServiceError, run_worker

    settings = alert_settings(args)
    if (args.event_kw is not None or args.api_tls or args.push_allow_lists is True
            or getattr(args, "vtn", None)):  # fmt: skip
        raise CliError("--worker runs ingest only: --event-kw, --api-tls, --push-allow-lists "
                       "and --vtn belong to the RA ('erab ra serve' without --worker)")
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be more than 0 seconds, got {args.duration:g}")

    async def main() -> Any:
        stop, ready = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if args.duration is not None:
            loop.call_later(args.duration, stop.set)
        task = asyncio.create_task(run_worker(home, stop, store_url=args.store, ready=ready,
                                              silent_after_s=settings.silent_after_s))  # fmt: skip
        await asyncio.wait([task, asyncio.create_task(ready.wait())],
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        if ready.is_set():
            print(json.dumps({"worker": "ready"}) if args.json else "ingest worker ready",
                  flush=True)  # fmt: skip
        return await task

    try:
        ingest = asyncio.run(main())
    except RaServiceError as exc:
        raise CliError(str(exc)) from None
    s = ingest.stats
    counts = {"messages": s.messages, "duplicates": s.duplicates, "readings": s.readings,
              "flagged": s.flagged, "rejected": dict(ingest.rejected)}  # fmt: skip
    print(json.dumps(counts) if args.json else
          ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)  # fmt: skip
    return 0


# --- erab ra flex, erab ra alerts ----------------------------------------------------------


def _register_flex_and_alerts(sub: Any) -> None:
    from erab.cli.ra_event import add_client_options

    p = sub.add_parser(
        "flex",
        help="the fleet's flexibility for the next 24 h, per 30-minute slot and kind",
        description="Asks the running RA (its REST API, GET /api/v1/flexibility): flexibility "
        "depends on the live state (SOC, rooms, who is online) that only the RA holds.",
    )
    p.add_argument("--at", default=None, metavar="TIME",
                   help="start of the 24 h: HH:MM (JST, today), now, or ISO 8601 with a zone "
                   "(default now)")  # fmt: skip
    add_client_options(p)
    p.set_defaults(handler=cmd_flex)
    p = sub.add_parser(
        "alerts",
        help="open alerts: silent gateways, under-delivery, certificates near expiry, readings",
        description="Reads the RA's store (--home or --store), so it works with the RA "
        "stopped too.",
    )
    p.add_argument("--all", action="store_true", help="cleared alerts too")
    _add_home(p)
    _add_json(p)
    p.set_defaults(handler=cmd_alerts)


def cmd_flex(args: argparse.Namespace) -> int:
    from urllib.parse import quote

    from erab.cli.ra_event import call, parse_start, read_token, tls_context
    from erab.clock import JST

    token = read_token(args)
    context = tls_context(args.api, args.ca_file)
    path = "/flexibility"
    if args.at is not None:
        try:
            at = parse_start(args.at, datetime.now(JST))
        except ValueError as exc:
            raise CliError(str(exc).replace("start", "--at", 1)) from None
        path += f"?at={quote(at.isoformat())}"
    try:
        forecast = call(args.api, token, "GET", path, context=context)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    slots = forecast["slots"]
    kinds = sorted({k for s in slots for k in s["by_kind"]})
    lines = [f"flexibility from {forecast['at']} ({forecast['online']} of "
             f"{forecast['resources']} resources online; each slot's kW held "
             f"{forecast['hold_s'] / 3600:g} h)",
             f"{'slot':<6} {'down kW':>9} {'up kW':>9}  " + "  ".join(
                 f"{k + ' down/up':>22}" for k in kinds)]  # fmt: skip
    for s in slots:
        by = s["by_kind"]
        lines.append(f"{s['start'][11:16]:<6} {s['down_kw']:>9.2f} {s['up_kw']:>9.2f}  "
                     + "  ".join(f"{by[k]['down_kw']:>10.2f}/{by[k]['up_kw']:<11.2f}"
                                 if k in by else f"{'-':>22}" for k in kinds))  # fmt: skip
    return _print(args, forecast, lines)


def cmd_alerts(args: argparse.Namespace) -> int:
    store = _registry(args, create=False).store
    alerts = list(reversed(store.alerts(open_only=not args.all)))
    rows = [{"alert_id": a.alert_id, "raised_at": a.raised_at.isoformat(), "kind": a.kind,
             "message": a.message, "gateway": a.gateway_id, "resource": a.resource_id,
             "cleared_at": None if a.cleared_at is None else a.cleared_at.isoformat()}
            for a in alerts]  # fmt: skip
    lines = [f"{_when(a.raised_at)}  {a.kind:<20} {a.message}"
             + ("" if a.cleared_at is None else f"  (cleared {_when(a.cleared_at)})")
             for a in alerts]  # fmt: skip
    return _print(args, rows, lines or ["no open alerts" if not args.all else "no alerts"])


# --- erab ra status ------------------------------------------------------------------------

NEWEST_ALERTS = 3


def _register_status(sub: Any) -> None:
    from erab.cli.ra_event import add_client_options

    p = sub.add_parser(
        "status",
        help="what an operator on call wants first: gateways, fleet kW, events, commands, alerts",
        description="Asks the running RA (its REST API: /fleet, /gateways, /events, /commands, "
        "/alerts) and prints, in a few lines, whether it answers, gateways by status, the "
        "fleet's kW and next hour's flexibility, events by stage with the active one's "
        "delivery, commands pending and refused, and the open alerts. Exits 2 when the RA "
        "does not answer or refuses the token.",
    )
    add_client_options(p)
    p.set_defaults(handler=cmd_status)


def ra_status(api: str, fleet: dict[str, Any], gateways: list[dict[str, Any]],
              events: list[dict[str, Any]], active: dict[str, Any] | None,
              commands: list[dict[str, Any]], alerts: list[dict[str, Any]],
              answered_in_ms: float) -> dict[str, Any]:  # fmt: skip
    """``erab ra status --json`` from what the API's endpoints gave.  A gateway counts once:
    ``silent`` is an offline one with an open ``gateway_silent`` alert (it stopped sending),
    ``offline`` the others offline (its last will came), ``enrolled`` one never heard."""
    from erab.aggregator.events import EventStage
    from erab.aggregator.fanout import CommandStage
    from erab.store import GatewayStatus

    silent = {a["gateway"] for a in alerts if a["kind"] == "gateway_silent"}
    by_status = dict.fromkeys(["online", "offline", "silent", "revoked", "enrolled"], 0)
    for g in gateways:
        status = g["status"]
        if status == GatewayStatus.OFFLINE.value and g["gateway_id"] in silent:
            status = "silent"
        by_status[status] = by_status.get(status, 0) + 1
    event_stages = {s.value: 0 for s in EventStage}
    for e in events:
        event_stages[e["stage"]] = event_stages.get(e["stage"], 0) + 1
    command_stages = {s.value: 0 for s in CommandStage}
    for c in commands:
        command_stages[c["stage"]] = command_stages.get(c["stage"], 0) + 1
    now = None
    if active is not None:
        delivery = active.get("delivery") or {}
        now = {
            "event_id": active["event_id"],
            "target_kw": active["target_kw"],
            "start": active["start"],
            "end": active["end"],
            "delivered_kw": delivery.get("delivered_kw"),
            "ratio": delivery.get("ratio"),
        }
    return {
        "api": api, "answers": True, "answered_in_ms": round(answered_in_ms, 1),
        "gateways": {"total": len(gateways), **by_status},
        "resources": {"total": fleet["resources"], "online": fleet["online"]},
        "fleet": {"power_kw": fleet["power_kw"],
                  "flexibility_down_kw": fleet["flexibility_down_kw"],
                  "flexibility_up_kw": fleet["flexibility_up_kw"]},
        "events": {"total": len(events), "by_stage": event_stages, "active": now},
        "commands": {"total": len(commands),
                     "pending": command_stages["signed"] + command_stages["sent"],
                     "refused": command_stages["refused"], "by_stage": command_stages},
        "alerts": {"open": len(alerts), "newest": alerts[:NEWEST_ALERTS]},
    }  # fmt: skip


def _kw_or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} kW"


def ra_status_lines(s: dict[str, Any]) -> list[str]:
    """``erab ra status``'s text: one line per topic, then the newest open alerts."""
    g, r, f, ev, c, al = (s["gateways"], s["resources"], s["fleet"], s["events"],
                          s["commands"], s["alerts"])  # fmt: skip
    lines = [
        f"RA at {s['api']}: answers ({s['answered_in_ms']:.0f} ms)",
        f"gateways: {g['online']} online, {g['offline']} offline, {g['silent']} silent, "
        f"{g['revoked']} revoked"
        + (f", {g['enrolled']} never heard" if g["enrolled"] else "")
        + f" (of {g['total']}); resources: {r['online']} of {r['total']} online",
        f"fleet: {_kw_or_dash(f['power_kw'])} now; flexibility next hour "
        f"{_kw_or_dash(f['flexibility_down_kw'])} down, {_kw_or_dash(f['flexibility_up_kw'])} up",
    ]
    stages = ", ".join(f"{n} {stage}" for stage, n in ev["by_stage"].items() if n)
    lines.append(f"events: {stages or 'none'}")
    a = ev["active"]
    if a is not None:
        delivered = (
            "not measured yet"
            if a["delivered_kw"] is None
            else f"{a['delivered_kw']:.2f} kW ({100 * a['ratio']:.0f} % of the target)"
        )
        lines.append(f"  active {a['event_id']}: target {a['target_kw']:+g} kW until "
                     f"{a['end']}, delivered {delivered}")  # fmt: skip
    lines.append(f"commands: {c['pending']} pending, {c['refused']} refused (of {c['total']})")
    lines.append(f"alerts: {al['open']} open" + (", newest:" if al["open"] else ""))
    lines += [f"  {a['raised_at']}  {a['kind']:<20} {a['message']}" for a in al["newest"]]
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    import time

    from erab.cli.ra_event import call, read_token, tls_context

    token = read_token(args)
    context = tls_context(args.api, args.ca_file)

    def get(path: str) -> Any:
        return call(args.api, token, "GET", path, context=context)

    try:
        started = time.monotonic()
        fleet = get("/fleet")
        answered_in_ms = 1000 * (time.monotonic() - started)
        gateways, events, commands = get("/gateways"), get("/events"), get("/commands")
        alerts = get("/alerts")
        active = next((e for e in events if e["stage"] == "active"), None)
        if active is not None:  # the closed loop's last check is in the event's detail
            active = get(f"/events/{active['event_id']}")
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    status = ra_status(args.api, fleet, gateways, events, active, commands, alerts,
                       answered_in_ms)  # fmt: skip
    return _print(args, status, ra_status_lines(status))
