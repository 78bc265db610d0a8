"""The RA's registry: customers, sites, gateways, resources and contracts, with their rules.

:class:`Registry` checks every record before the store sees it (ids, the site and gateway a
resource names, its ECHONET Lite identity, its constraints) and raises
:class:`RegistryError` naming the record, the field and what would fit.  It decides which
devices a gateway may control: :meth:`Registry.propose_inventory` takes a gateway's
:class:`~erab.bus.Hello` and answers its allow-list — devices registered as resources of
that gateway and allowed; any other device it proposes is recorded as pending, never
allowed, for an operator to register.  A gateway whose certificate the PKI revoked is
revoked here too (:meth:`Registry.sync_with_pki`).

Records come one by one, or in bulk from a CSV or TOML file (:func:`read_inventory`).
"""

from __future__ import annotations

import csv
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from erab.bus.schema import Hello
from erab.clock import Clock, RealClock
from erab.security.registry import CertificateKind, CertificateRegistry, normalise_serial
from erab.store import (
    AggregatorStore,
    AllowEntry,
    Contract,
    Customer,
    Gateway,
    GatewayStatus,
    PendingDevice,
    ProposedDevice,
    Resource,
    Site,
    StoreConflict,
    StoreError,
    open_store,
)

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_HEX = re.compile(r"^[0-9a-f]{2,40}$")
_EOJ = re.compile(r"^[0-9a-f]{6}$")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")

SITE_KINDS = ("home", "store", "office", "factory", "other")
BASELINE_METHODS = ("high-4-of-5", "same-day-adjusted", "previous-days-average", "metered")

# ECHONET Lite class (group + class code) -> the registry's device class
DEVICE_CLASSES: dict[str, str] = {
    "0130": "aircon",
    "0156": "aircon",  # package-type commercial air conditioner
    "026b": "water_heater",
    "0279": "pv",
    "027c": "fuel_cell",
    "027d": "battery",
    "027e": "ev",
    "0290": "lighting",
    "03ce": "showcase",
}
KNOWN_CLASSES = tuple(sorted(set(DEVICE_CLASSES.values()) | {"other"}))


def default_store_url(home: Path) -> str:
    """The RA's store on the embedded default: one SQLite file under the deployment home."""
    return f"sqlite:///{Path(home) / 'ra' / 'ra.sqlite'}"


def redact_url(url: str) -> str:
    """``url`` without its password (``postgresql://ra:secret@db/erab`` → ``ra:***@db``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    auth, at, host = rest.partition("@")
    if not at or ":" not in auth:
        return url
    return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"


def open_aggregator_store(url: str, *, create: bool = False) -> AggregatorStore:
    """The RA's store at ``url`` (``sqlite:///PATH``, or what :func:`erab.store.open_store`
    accepts, e.g. ``postgresql://`` once that store lands), with its registry and ingest
    tables.  Raises :class:`erab.store.StoreNotFound` when it does not exist and ``create``
    is False, :class:`erab.store.StoreError` when it cannot be the RA's store."""
    if url.startswith("sqlite:///") and create:
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) != ":memory:":
            path.parent.mkdir(parents=True, exist_ok=True)
    store = open_store(url, create=create)
    lacking = [m for m in ("write_uplink_batch", "resource_keys", "raise_alert", "alerts")
               if not callable(getattr(store, m, None))]  # fmt: skip
    if lacking:
        store.close()
        raise StoreError(f"the store at {redact_url(url)} has no RA tables (it lacks "
                         f"{', '.join(lacking)}): give the RA's store URL")  # fmt: skip
    return store  # type: ignore[return-value]  # checked above: it has the RA's methods


class RegistryError(ValueError):
    """A record that cannot be registered; the message says which and why."""


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise RegistryError(
            f"{kind} {value!r} is not a valid id: use 1-64 letters, digits, '.', '_', ':' or "
            "'-', starting with a letter or digit"
        )
    return value


def _check_number(where: str, name: str, value: float | None, lo: float, hi: float) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RegistryError(f"{where}: {name} must be a number, got {value!r}")
    if not lo <= value <= hi:
        raise RegistryError(f"{where}: {name} must be in [{lo:g}, {hi:g}], got {value:g}")


def class_of_eoj(eoj: str) -> str | None:
    """The registry's device class of an EOJ (6 hex digits), None for a class not listed."""
    return DEVICE_CLASSES.get(eoj[:4].lower())


def check_resource(r: Resource) -> Resource:
    """``r`` with its EOJ and node id in lower case, or :class:`RegistryError`."""
    where = f"resource {r.resource_id!r}"
    _check_id("resource", r.resource_id)
    eoj, node = str(r.eoj).lower().removeprefix("0x"), str(r.node_id).lower().removeprefix("0x")
    if not _EOJ.match(eoj):
        raise RegistryError(
            f"{where}: EOJ {r.eoj!r} must be 6 hex digits (class group, class, instance), "
            "e.g. 027d01 for storage battery 1"
        )
    if eoj[4:] == "00":
        raise RegistryError(f"{where}: EOJ {r.eoj!r} has instance 00 (all instances): give one")
    if not _HEX.match(node):
        raise RegistryError(
            f"{where}: node id {r.node_id!r} must be the node's identification number (EPC "
            "0x83) in hex"
        )
    expected = class_of_eoj(eoj)
    device_class = r.device_class or expected or ""
    if device_class not in KNOWN_CLASSES:
        raise RegistryError(
            f"{where}: device class {device_class!r} is not one of {', '.join(KNOWN_CLASSES)}"
        )
    if expected is not None and device_class != expected:
        raise RegistryError(
            f"{where}: device class {device_class!r} does not match EOJ {eoj} ({expected})"
        )
    _check_number(where, "rated_kw", r.rated_kw, 0.0, 10_000.0)
    _check_number(where, "rated_kwh", r.rated_kwh, 0.0, 100_000.0)
    _check_number(where, "comfort_min_c", r.comfort_min_c, 0.0, 40.0)
    _check_number(where, "comfort_max_c", r.comfort_max_c, 0.0, 40.0)
    _check_number(where, "soc_reserve_pct", r.soc_reserve_pct, 0.0, 100.0)
    _check_number(where, "soc_max_pct", r.soc_max_pct, 0.0, 100.0)
    if (r.comfort_min_c is None) != (r.comfort_max_c is None) or (
        r.comfort_min_c is not None
        and r.comfort_max_c is not None
        and r.comfort_min_c >= r.comfort_max_c
    ):
        raise RegistryError(
            f"{where}: the comfort band needs comfort_min_c < comfort_max_c, got "
            f"{r.comfort_min_c} and {r.comfort_max_c}"
        )
    if (
        r.soc_reserve_pct is not None
        and r.soc_max_pct is not None
        and r.soc_reserve_pct >= r.soc_max_pct
    ):
        raise RegistryError(
            f"{where}: soc_reserve_pct ({r.soc_reserve_pct:g}) must be below soc_max_pct "
            f"({r.soc_max_pct:g})"
        )
    for window in r.availability:
        m = _WINDOW.match(str(window))
        if m is None or (int(m[3]) == 24 and m[4] != "00"):
            raise RegistryError(
                f"{where}: availability window {window!r} must be HH:MM-HH:MM (JST), e.g. "
                "13:00-17:30"
            )
    if not isinstance(r.allowed, bool):
        raise RegistryError(f"{where}: allowed must be true or false, got {r.allowed!r}")
    return replace(r, eoj=eoj, node_id=node, device_class=device_class)


@dataclass
class Inventory:
    """Records to register together (from a file or an emulated town)."""

    customers: list[Customer] = field(default_factory=list)
    sites: list[Site] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    contracts: list[Contract] = field(default_factory=list)


@dataclass(frozen=True)
class ImportReport:
    """How many records of each kind an import added, and how many it found already there."""

    added: dict[str, int]
    unchanged: dict[str, int]

    def describe(self) -> str:
        parts = [f"{n} {kind}" for kind, n in self.added.items() if n]
        same = sum(self.unchanged.values())
        text = "added " + (", ".join(parts) if parts else "nothing")
        return text + (f"; {same} already registered" if same else "")


class Registry:
    """Registry operations on an :class:`~erab.store.AggregatorStore`, times from ``clock``."""

    def __init__(self, store: AggregatorStore, clock: Clock | None = None) -> None:
        self.store = store
        self.clock = clock or RealClock()

    # -- customers and contracts ------------------------------------------------------------
    def add_customer(self, customer: Customer) -> Customer:
        _check_id("customer", customer.customer_id)
        if not customer.name:
            raise RegistryError(f"customer {customer.customer_id!r}: name must not be empty")
        if any(c.customer_id == customer.customer_id for c in self.store.customers()):
            raise RegistryError(f"customer {customer.customer_id!r} already exists")
        self.store.add_customer(customer, self.clock.now())
        return customer

    def customer(self, customer_id: str) -> Customer:
        for c in self.store.customers():
            if c.customer_id == customer_id:
                return c
        raise RegistryError(f"unknown customer {customer_id!r}")

    def add_contract(self, contract: Contract) -> Contract:
        where = f"contract {contract.contract_id!r}"
        _check_id("contract", contract.contract_id)
        self.customer(contract.customer_id)
        if not contract.products or not all(isinstance(p, str) and p for p in contract.products):
            raise RegistryError(f"{where}: products must name at least one product")
        _check_number(where, "incentive_yen_per_kwh", contract.incentive_yen_per_kwh, 0, 1e6)
        _check_number(where, "incentive_cap_yen", contract.incentive_cap_yen, 0, 1e9)
        if contract.baseline_method not in BASELINE_METHODS:
            raise RegistryError(
                f"{where}: baseline method {contract.baseline_method!r} is not one of "
                f"{', '.join(BASELINE_METHODS)}"
            )
        if any(c.contract_id == contract.contract_id for c in self.store.contracts()):
            raise RegistryError(f"contract {contract.contract_id!r} already exists")
        self.store.add_contract(contract, self.clock.now())
        return contract

    # -- sites ------------------------------------------------------------------------------
    def add_site(self, site: Site) -> Site:
        _check_id("site", site.site_id)
        if site.kind not in SITE_KINDS:
            raise RegistryError(
                f"site {site.site_id!r}: kind {site.kind!r} is not one of {', '.join(SITE_KINDS)}"
            )
        if site.customer_id is not None:
            self.customer(site.customer_id)
        self._check_meter(site)
        if self._find_site(site.site_id) is not None:
            raise RegistryError(f"site {site.site_id!r} already exists")
        self.store.add_site(replace(site, name=site.name or site.site_id), self.clock.now())
        return site

    def _check_meter(self, site: Site) -> None:
        """A site's route A meter (settlement reads it): a valid id, serving no other site."""
        if site.meter_id is None:
            return
        _check_id("meter", site.meter_id)
        for other in self.store.sites():
            if other.meter_id == site.meter_id and other.site_id != site.site_id:
                raise RegistryError(f"meter {site.meter_id!r} already measures site "
                                    f"{other.site_id!r}: a meter measures one site")  # fmt: skip

    def _find_site(self, site_id: str) -> Site | None:
        return self.store.site(site_id)

    def site(self, site_id: str) -> Site:
        found = self._find_site(site_id)
        if found is None:
            raise RegistryError(f"unknown site {site_id!r}: add it first ('erab ra site add')")
        return found

    def update_site(self, site_id: str, **changes: Any) -> Site:
        site = replace(self.site(site_id), **changes)
        if site.kind not in SITE_KINDS:
            raise RegistryError(
                f"site {site_id!r}: kind {site.kind!r} is not one of {', '.join(SITE_KINDS)}"
            )
        self._check_meter(site)
        self.store.update_site(site)
        return site

    def sites(self) -> list[Site]:
        return self.store.sites()

    # -- gateways ---------------------------------------------------------------------------
    def add_gateway(self, gateway: Gateway) -> Gateway:
        _check_id("gateway", gateway.gateway_id)
        if len(gateway.gateway_id) > 64 or ":" in gateway.gateway_id:
            raise RegistryError(
                f"gateway {gateway.gateway_id!r}: ':' is not allowed in gateway ids"
            )
        self.site(gateway.site_id)
        if self.store.gateway(gateway.gateway_id) is not None:
            raise RegistryError(f"gateway {gateway.gateway_id!r} already exists")
        serial = None if gateway.cert_serial is None else normalise_serial(gateway.cert_serial)
        self.store.add_gateway(replace(gateway, cert_serial=serial), self.clock.now())
        return self.gateway(gateway.gateway_id)

    def gateway(self, gateway_id: str) -> Gateway:
        found = self.store.gateway(gateway_id)
        if found is not None:
            return found
        raise RegistryError(f"unknown gateway {gateway_id!r}: add it first ('erab ra gateway add')")

    def gateways(self, site_id: str | None = None) -> list[Gateway]:
        return self.store.gateways(site_id)

    def update_gateway(self, gateway_id: str, *, cert_serial: str | None) -> Gateway:
        """Record the serial of the certificate a gateway now uses (after a renewal)."""
        gw = self.gateway(gateway_id)
        serial = None if cert_serial is None else normalise_serial(cert_serial)
        self.store.set_gateway(
            gateway_id, status=gw.status, cert_serial=serial, at=self.clock.now()
        )
        return self.gateway(gateway_id)

    def sync_with_pki(self, certificates: CertificateRegistry) -> list[str]:
        """Take each gateway's certificate state from the PKI: a gateway whose certificates
        are all revoked is revoked; its newest good certificate's serial is recorded (and a
        revoked gateway with a new certificate is enrolled again).  Returns the changed ids."""
        now = self.clock.now()
        changed = []
        for gw in self.store.gateways():
            certs = certificates.certificates(
                gateway_id=gw.gateway_id, kind=CertificateKind.GATEWAY
            )
            if not certs:
                continue
            good = [c for c in certs if not c.revoked]
            status, serial = gw.status, gw.cert_serial
            if not good:
                status = GatewayStatus.REVOKED
                serial = certs[-1].serial
            else:
                serial = good[-1].serial
                if gw.status is GatewayStatus.REVOKED:
                    status = GatewayStatus.ENROLLED
            if (status, serial) != (gw.status, gw.cert_serial):
                self.store.set_gateway(gw.gateway_id, status=status, cert_serial=serial, at=now)
                changed.append(gw.gateway_id)
        return changed

    # -- resources --------------------------------------------------------------------------
    def add_resource(self, resource: Resource) -> Resource:
        checked = self._check_placement(check_resource(resource))
        if self.store.resource(checked.resource_id) is not None:
            raise RegistryError(f"resource {checked.resource_id!r} already exists")
        try:
            self.store.add_resource(checked, self.clock.now())
        except StoreConflict:
            raise RegistryError(
                f"resource {checked.resource_id!r}: gateway {checked.gateway_id!r} already has a "
                f"resource at node {checked.node_id} EOJ {checked.eoj}"
            ) from None
        return checked

    def _check_placement(self, r: Resource) -> Resource:
        self.site(r.site_id)
        gw = self.gateway(r.gateway_id)
        if gw.site_id != r.site_id:
            raise RegistryError(
                f"resource {r.resource_id!r}: gateway {r.gateway_id!r} serves site "
                f"{gw.site_id!r}, not {r.site_id!r}"
            )
        return r

    def resource(self, resource_id: str) -> Resource:
        found = self.store.resource(resource_id)
        if found is not None:
            return found
        raise RegistryError(f"unknown resource {resource_id!r}")

    def update_resource(self, resource_id: str, **changes: Any) -> Resource:
        known = {f.name for f in fields(Resource)} - {"resource_id"}
        wrong = sorted(set(changes) - known)
        if wrong:
            raise RegistryError(
                f"resource {resource_id!r}: cannot change {', '.join(wrong)}; "
                f"fields: {', '.join(sorted(known))}"
            )
        updated = self._check_placement(
            check_resource(replace(self.resource(resource_id), **changes))
        )
        try:
            self.store.update_resource(updated)
        except StoreConflict:
            raise RegistryError(
                f"resource {resource_id!r}: another resource of gateway {updated.gateway_id!r} "
                f"is at node {updated.node_id} EOJ {updated.eoj}"
            ) from None
        return updated

    def resources(
        self, *, site_id: str | None = None, gateway_id: str | None = None
    ) -> list[Resource]:
        return self.store.resources(site_id=site_id, gateway_id=gateway_id)

    # -- inventory ----------------------------------------------------------------------------
    def propose_inventory(self, hello: Hello) -> list[AllowEntry]:
        """A gateway's hello proposes its devices; the answer is its allow-list.

        Allowed: resources registered for that gateway with ``allowed`` set.  Devices it
        proposes that are not registered are kept as pending (see :meth:`pending`)."""
        gw = self.gateway(hello.gateway_id)
        if gw.status is GatewayStatus.REVOKED:
            raise RegistryError(f"gateway {gw.gateway_id!r} is revoked: it may control nothing")
        if hello.site_id != gw.site_id:
            raise RegistryError(
                f"gateway {gw.gateway_id!r} said hello for site {hello.site_id!r} but is "
                f"registered at {gw.site_id!r}: inventory ignored"
            )
        return self.store.propose_inventory(gw.gateway_id, proposed(hello), self.clock.now())

    def pending(self, gateway_id: str | None = None) -> list[PendingDevice]:
        return self.store.pending_devices(gateway_id)

    def allow_list(self, gateway_id: str) -> list[AllowEntry]:
        self.gateway(gateway_id)
        return self.store.allow_list(gateway_id)

    # -- bulk ---------------------------------------------------------------------------------
    def import_inventory(self, inventory: Inventory) -> ImportReport:
        """Register everything in ``inventory``; records already registered with the same
        id are left as they are (so an import can be run again).  Every record is checked
        before any is written: one bad record and nothing is added."""
        have_customers = {c.customer_id for c in self.store.customers()}
        have_sites = {s.site_id for s in self.store.sites()}
        have_gateways = {g.gateway_id: g for g in self.store.gateways()}
        have_resources = {r.resource_id for r in self.store.resources()}
        have_contracts = {c.contract_id for c in self.store.contracts()}
        # dry run against the known ids plus this file's, for clear errors up front
        customers = have_customers | {c.customer_id for c in inventory.customers}
        sites = have_sites | {s.site_id for s in inventory.sites}
        gateway_site = {g: gw.site_id for g, gw in have_gateways.items()}
        gateway_site.update({g.gateway_id: g.site_id for g in inventory.gateways})
        for kind, ids in (
            ("customer", [c.customer_id for c in inventory.customers]),
            ("site", [s.site_id for s in inventory.sites]),
            ("gateway", [g.gateway_id for g in inventory.gateways]),
            ("resource", [r.resource_id for r in inventory.resources]),
            ("contract", [c.contract_id for c in inventory.contracts]),
        ):
            seen: set[str] = set()
            for i in ids:
                _check_id(kind, i)
                if i in seen:
                    raise RegistryError(f"{kind} {i!r} appears twice in the import")
                seen.add(i)
        for s in inventory.sites:
            if s.customer_id is not None and s.customer_id not in customers:
                raise RegistryError(f"site {s.site_id!r}: unknown customer {s.customer_id!r}")
            if s.kind not in SITE_KINDS:
                raise RegistryError(
                    f"site {s.site_id!r}: kind {s.kind!r} is not one of {', '.join(SITE_KINDS)}"
                )
        for g in inventory.gateways:
            if g.site_id not in sites:
                raise RegistryError(f"gateway {g.gateway_id!r}: unknown site {g.site_id!r}")
        resources = []
        for r in inventory.resources:
            checked = check_resource(r)
            if checked.site_id not in sites:
                raise RegistryError(f"resource {r.resource_id!r}: unknown site {r.site_id!r}")
            if gateway_site.get(checked.gateway_id) != checked.site_id:
                raise RegistryError(
                    f"resource {r.resource_id!r}: gateway {r.gateway_id!r} "
                    + (
                        "is unknown"
                        if r.gateway_id not in gateway_site
                        else f"serves site {gateway_site[r.gateway_id]!r}, not {r.site_id!r}"
                    )
                )
            resources.append(checked)
        for c in inventory.contracts:
            if c.customer_id not in customers:
                raise RegistryError(
                    f"contract {c.contract_id!r}: unknown customer {c.customer_id!r}"
                )
        added = dict.fromkeys(("customers", "sites", "gateways", "resources", "contracts"), 0)
        same = dict(added)

        def count(kind: str, new: bool) -> bool:
            (added if new else same)[kind] += 1
            return new

        for cu in inventory.customers:
            if count("customers", cu.customer_id not in have_customers):
                self.add_customer(cu)
        for s in inventory.sites:
            if count("sites", s.site_id not in have_sites):
                self.add_site(s)
        for g in inventory.gateways:
            if count("gateways", g.gateway_id not in have_gateways):
                self.add_gateway(g)
        for r in resources:
            if count("resources", r.resource_id not in have_resources):
                self.add_resource(r)
        for k in inventory.contracts:
            if count("contracts", k.contract_id not in have_contracts):
                self.add_contract(k)
        return ImportReport(added, same)


def proposed(hello: Hello) -> list[ProposedDevice]:
    """The devices of a hello, as the store records proposals."""
    return [
        ProposedDevice(d.device_id, d.node_id, d.eoj, d.rated_power_w, d.name)
        for d in hello.devices
    ]


# --- files ---------------------------------------------------------------------------------

_KINDS = ("customer", "site", "gateway", "resource", "contract")
_FLOATS = {
    "rated_kw",
    "rated_kwh",
    "comfort_min_c",
    "comfort_max_c",
    "soc_reserve_pct",
    "soc_max_pct",
    "incentive_yen_per_kwh",
    "incentive_cap_yen",
}
_LISTS = {"availability", "products"}
_FIELDS: dict[str, tuple[type, set[str], set[str]]] = {
    # kind -> (record, required keys, optional keys)
    "customer": (Customer, {"customer_id", "name"}, set()),
    "site": (Site, {"site_id"}, {"name", "kind", "customer_id", "meter_id"}),
    "gateway": (Gateway, {"gateway_id", "site_id"}, {"cert_serial"}),
    "resource": (
        Resource,
        {"resource_id", "site_id", "gateway_id", "node_id", "eoj"},
        {
            "device_class",
            "rated_kw",
            "rated_kwh",
            "comfort_min_c",
            "comfort_max_c",
            "soc_reserve_pct",
            "soc_max_pct",
            "availability",
            "allowed",
        },
    ),
    "contract": (
        Contract,
        {"contract_id", "customer_id", "products", "incentive_yen_per_kwh", "baseline_method"},
        {"incentive_cap_yen"},
    ),
}


def _record(kind: str, raw: Mapping[str, Any], where: str, *, text: bool) -> Any:
    """One record from a table row; ``text``: values are strings (CSV) to convert."""
    record_type, required, optional = _FIELDS[kind]
    values = {k: v for k, v in raw.items() if not (text and v in ("", None))}
    missing = sorted(required - set(values))
    if missing:
        raise RegistryError(f"{where}: {kind} needs {', '.join(missing)}")
    unknown = sorted(set(values) - required - optional)
    if unknown:
        raise RegistryError(
            f"{where}: unknown key(s) {', '.join(unknown)} for a {kind}; "
            f"allowed: {', '.join(sorted(required | optional))}"
        )
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _FLOATS:
            try:
                out[key] = float(value) if text or isinstance(value, int | float) else value
            except ValueError:
                raise RegistryError(f"{where}: {key} must be a number, got {value!r}") from None
            if isinstance(value, bool):
                raise RegistryError(f"{where}: {key} must be a number, got {value!r}")
        elif key in _LISTS:
            if text:
                value = [p.strip() for p in str(value).replace(";", " ").split() if p.strip()]
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise RegistryError(f"{where}: {key} must be a list of text, got {value!r}")
            out[key] = tuple(value)
        elif key == "allowed":
            if text:
                if str(value).lower() not in ("true", "false", "yes", "no", "1", "0"):
                    raise RegistryError(f"{where}: allowed must be true or false, got {value!r}")
                value = str(value).lower() in ("true", "yes", "1")
            out[key] = value
        else:
            if not isinstance(value, str):
                raise RegistryError(f"{where}: {key} must be text, got {value!r}")
            out[key] = value
    if kind == "resource":
        out.setdefault("device_class", "")
    if kind == "site":
        out.setdefault("name", out["site_id"])
    return record_type(**out)


def _add(inventory: Inventory, kind: str, record: Any) -> None:
    getattr(
        inventory,
        {
            "customer": "customers",
            "site": "sites",
            "gateway": "gateways",
            "resource": "resources",
            "contract": "contracts",
        }[kind],
    ).append(record)


def read_inventory(path: str | Path) -> Inventory:
    """Records from a CSV file (a ``type`` column naming each row's kind, then that kind's
    fields; lists space- or ';'-separated) or a TOML file (``[[site]]``, ``[[gateway]]``,
    ``[[resource]]``, ``[[customer]]``, ``[[contract]]`` tables)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegistryError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from None
    inventory = Inventory()
    if p.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RegistryError(f"{p} is not valid TOML: {exc}") from None
        return inventory_from_document(data, str(p))
    if p.suffix.lower() != ".csv":
        raise RegistryError(
            f"{p}: give a .csv or .toml file (or an 'erab emulate' scenario with --scenario)"
        )
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "type" not in reader.fieldnames:
        raise RegistryError(f"{p}: the first line must be a header with a 'type' column")
    for line, row in enumerate(reader, start=2):
        kind = (row.pop("type") or "").strip()
        if kind not in _KINDS:
            raise RegistryError(f"{p}:{line}: type {kind!r} is not one of {', '.join(_KINDS)}")
        if None in row:
            raise RegistryError(f"{p}:{line}: more values than header columns")
        _add(inventory, kind, _record(kind, row, f"{p}:{line}", text=True))
    return inventory


def inventory_from_document(data: Mapping[str, Any], where: str = "the records") -> Inventory:
    """Records from a document of lists by kind (``{"site": [{...}], "resource": [...]}``):
    a TOML file's tables, or the body of ``POST /api/v1/import``."""
    unknown = sorted(set(data) - set(_KINDS))
    if unknown:
        raise RegistryError(
            f"{where}: unknown table(s) {', '.join(unknown)}; use "
            + ", ".join(f"[[{k}]]" for k in _KINDS)
        )
    inventory = Inventory()
    for kind in _KINDS:
        rows = data.get(kind, [])
        if not isinstance(rows, list):
            raise RegistryError(f"{where}: {kind} must be an array of tables ([[{kind}]])")
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise RegistryError(f"{where}: {kind}[{i}] must be a table of fields")
            _add(inventory, kind, _record(kind, row, f"{where}: {kind}[{i}]", text=False))
    return inventory


def inventory_document(inventory: Inventory) -> dict[str, list[dict[str, Any]]]:
    """The inverse of :func:`inventory_from_document`: each record's importable fields,
    unset ones left out (what ``erab ra import`` sends to the API)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind in _KINDS:
        _, required, optional = _FIELDS[kind]
        records = getattr(inventory, {"customer": "customers", "site": "sites",
                                      "gateway": "gateways", "resource": "resources",
                                      "contract": "contracts"}[kind])  # fmt: skip
        rows = []
        for row in inventory_rows(records):
            rows.append({k: v for k, v in row.items()
                         if k in required | optional and v is not None})  # fmt: skip
        if rows:
            out[kind] = rows
    return out


def inventory_rows(records: Iterable[Any]) -> list[dict[str, Any]]:
    """Records as plain dicts (for ``--json``)."""
    out = []
    for r in records:
        row = {}
        for f in fields(r):
            v = getattr(r, f.name)
            row[f.name] = (
                v.isoformat()
                if hasattr(v, "isoformat")
                else list(v)
                if isinstance(v, tuple)
                else v.value
                if isinstance(v, GatewayStatus)
                else v
            )
        out.append(row)
    return out
