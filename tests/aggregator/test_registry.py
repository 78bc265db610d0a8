"""The RA's registry: validated records, imports, the allow-list decision, PKI status."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.aggregator.registry import Inventory, Registry, RegistryError, read_inventory
from erab.bus.schema import Device, Hello
from erab.clock import RealClock
from erab.security import CertificateAuthority, SecurityHome, make_csr, new_private_key
from erab.store import (
    Contract,
    Customer,
    Gateway,
    GatewayStatus,
    Resource,
    Site,
    SqliteStore,
)

NODE = "fe00000000000000000000000001"


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(SqliteStore(tmp_path / "ra.sqlite"))
    reg.add_site(Site("home-1", "Home 1"))
    reg.add_gateway(Gateway("gw-1", "home-1"))
    return reg


def battery(resource_id: str = "home-1.battery-1", **changes: object) -> Resource:
    values: dict[str, object] = dict(
        resource_id=resource_id,
        site_id="home-1",
        gateway_id="gw-1",
        device_class="",
        node_id=NODE,
        eoj="027d01",
        rated_kw=3.0,
        rated_kwh=9.8,
        soc_reserve_pct=20.0,
        soc_max_pct=95.0,
        availability=("13:00-17:00",),
    )
    values.update(changes)
    return Resource(**values)  # type: ignore[arg-type]


def hello(devices: list[Device], site_id: str = "home-1", gateway_id: str = "gw-1") -> Hello:
    return Hello(
        gateway_id=gateway_id,
        seq=1,
        sent_at=datetime.now(UTC),
        site_id=site_id,
        software="test",
        devices=devices,
    )


def test_a_resource_gets_its_class_from_its_eoj_and_is_listed(registry: Registry) -> None:
    added = registry.add_resource(battery(eoj="027D01", node_id=NODE.upper()))
    assert (added.device_class, added.eoj, added.node_id) == ("battery", "027d01", NODE)
    assert registry.resources(site_id="home-1") == [added]
    assert registry.resource("home-1.battery-1").availability == ("13:00-17:00",)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"site_id": "nowhere"}, "unknown site 'nowhere'"),
        ({"gateway_id": "gw-x"}, "unknown gateway 'gw-x'"),
        ({"eoj": "27d01"}, "EOJ '27d01' must be 6 hex digits"),
        ({"eoj": "027d00"}, "instance 00"),
        ({"node_id": "not-hex"}, "node id 'not-hex' must be"),
        ({"device_class": "aircon"}, "'aircon' does not match EOJ 027d01 \\(battery\\)"),
        ({"soc_reserve_pct": 96.0}, "soc_reserve_pct \\(96\\) must be below soc_max_pct"),
        ({"comfort_min_c": 28.0}, "comfort band needs comfort_min_c < comfort_max_c"),
        ({"availability": ("25:00-26:00",)}, "window '25:00-26:00' must be HH:MM-HH:MM"),
        ({"rated_kw": -1.0}, "rated_kw must be in \\[0, 10000\\]"),
    ],
)
def test_bad_resources_are_refused_with_what_was_wrong(
    registry: Registry, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(RegistryError, match=message):
        registry.add_resource(battery(**changes))
    assert registry.resources() == []


def test_duplicates_are_refused(registry: Registry) -> None:
    registry.add_resource(battery())
    with pytest.raises(RegistryError, match=r"resource 'home-1\.battery-1' already exists"):
        registry.add_resource(battery())
    with pytest.raises(RegistryError, match="already has a resource at node"):
        registry.add_resource(battery("home-1.battery-2"))
    with pytest.raises(RegistryError, match="site 'home-1' already exists"):
        registry.add_site(Site("home-1", "again"))
    with pytest.raises(RegistryError, match="gateway 'gw-1' already exists"):
        registry.add_gateway(Gateway("gw-1", "home-1"))


def test_a_resource_must_sit_at_its_gateways_site(registry: Registry) -> None:
    registry.add_site(Site("home-2", "Home 2"))
    with pytest.raises(RegistryError, match="gateway 'gw-1' serves site 'home-1', not 'home-2'"):
        registry.add_resource(battery(site_id="home-2"))


def test_updates_are_checked_like_additions(registry: Registry) -> None:
    registry.add_resource(battery())
    updated = registry.update_resource("home-1.battery-1", allowed=False, soc_reserve_pct=30.0)
    assert registry.resource("home-1.battery-1") == updated and updated.allowed is False
    with pytest.raises(RegistryError, match="soc_reserve_pct"):
        registry.update_resource("home-1.battery-1", soc_reserve_pct=99.0)
    with pytest.raises(RegistryError, match="cannot change colour"):
        registry.update_resource("home-1.battery-1", colour="red")
    assert registry.resource("home-1.battery-1").soc_reserve_pct == 30.0


def test_contracts_need_a_known_customer_and_method(registry: Registry) -> None:
    registry.add_customer(Customer("c-1", "Tanaka"))
    registry.add_contract(Contract("k-1", "c-1", ("tertiary-1",), 30.0, "high-4-of-5"))
    with pytest.raises(RegistryError, match="unknown customer 'c-9'"):
        registry.add_contract(Contract("k-2", "c-9", ("tertiary-1",), 30.0, "high-4-of-5"))
    with pytest.raises(RegistryError, match="baseline method 'guess' is not one of"):
        registry.add_contract(Contract("k-3", "c-1", ("tertiary-1",), 30.0, "guess"))
    assert [c.contract_id for c in registry.store.contracts()] == ["k-1"]


def test_hello_allows_registered_devices_and_keeps_new_ones_pending(registry: Registry) -> None:
    registry.add_resource(battery())
    registry.add_resource(
        battery(
            "home-1.pv-1",
            eoj="027901",
            rated_kwh=None,
            soc_reserve_pct=None,
            soc_max_pct=None,
            allowed=False,
        )
    )
    devices = [
        Device(device_id=f"{NODE}-027d01", eoj="027d01", node_id=NODE),
        Device(device_id=f"{NODE}-027901", eoj="027901", node_id=NODE),
        Device(device_id=f"{NODE}-013001", eoj="013001", node_id=NODE, rated_power_w=900.0),
    ]
    allow = registry.propose_inventory(hello(devices))
    assert [(a.device_id, a.eoj, a.rated_power_w) for a in allow] == [
        ("home-1.battery-1", "027d01", 3000.0)
    ]
    [pending] = registry.pending("gw-1")
    assert (pending.eoj, pending.device_id, pending.rated_power_w) == (
        "013001",
        f"{NODE}-013001",
        900.0,
    )
    # registering the pending device (allowed) puts it on the next allow-list
    registry.add_resource(
        battery("home-1.ac-1", eoj="013001", rated_kwh=None, soc_reserve_pct=None, soc_max_pct=None)
    )
    assert registry.pending() == []
    assert [a.device_id for a in registry.propose_inventory(hello(devices))] == [
        "home-1.ac-1",
        "home-1.battery-1",
    ]


def test_a_hello_for_another_site_changes_nothing(registry: Registry) -> None:
    registry.add_site(Site("home-2", "Home 2"))
    with pytest.raises(RegistryError, match="said hello for site 'home-2'"):
        registry.propose_inventory(
            hello([Device(device_id="x", eoj="013001", node_id=NODE)], site_id="home-2")
        )
    assert registry.pending() == []


def test_a_gateway_whose_certificate_is_revoked_is_revoked(
    tmp_path: Path, registry: Registry
) -> None:
    ca = CertificateAuthority.initialise(SecurityHome(tmp_path / "home"), RealClock())
    csr = make_csr(new_private_key(), "gw-1").public_bytes(serialization.Encoding.PEM)
    ca.issue_gateway(csr, "gw-1", "home-1", days=30)
    assert registry.sync_with_pki(ca.registry) == ["gw-1"]
    serial = registry.gateway("gw-1").cert_serial
    assert serial is not None and registry.gateway("gw-1").status is GatewayStatus.ENROLLED
    ca.revoke_gateway("gw-1", "keyCompromise")
    assert registry.sync_with_pki(ca.registry) == ["gw-1"]
    assert registry.gateway("gw-1").status is GatewayStatus.REVOKED
    with pytest.raises(RegistryError, match="revoked"):
        registry.propose_inventory(hello([]))


CSV = """type,customer_id,name,site_id,kind,gateway_id,resource_id,node_id,eoj,rated_kw,\
rated_kwh,availability,products,incentive_yen_per_kwh,baseline_method,contract_id
customer,c-1,Tanaka,,,,,,,,,,,,,
site,c-1,Shop,shop-1,store,,,,,,,,,,,
gateway,,,shop-1,,gw-s,,,,,,,,,,
resource,,,shop-1,,gw-s,shop-1.batt,0102,027d01,5.9,16.4,13:00-17:00;18:00-20:00,,,,
contract,c-1,,,,,,,,,,,tertiary-1;tertiary-2,25,high-4-of-5,k-1
"""


def test_import_from_csv_registers_everything_once(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text(CSV)
    report = registry.import_inventory(read_inventory(path))
    assert report.added == {
        "customers": 1,
        "sites": 1,
        "gateways": 1,
        "resources": 1,
        "contracts": 1,
    }
    r = registry.resource("shop-1.batt")
    assert (r.rated_kw, r.availability) == (5.9, ("13:00-17:00", "18:00-20:00"))
    assert registry.store.contracts()[0].products == ("tertiary-1", "tertiary-2")
    again = registry.import_inventory(read_inventory(path))
    assert sum(again.added.values()) == 0 and sum(again.unchanged.values()) == 5


def test_import_from_toml_and_a_bad_record_adds_nothing(tmp_path: Path, registry: Registry) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text(
        '[[site]]\nsite_id = "home-9"\n\n[[gateway]]\ngateway_id = "gw-9"\nsite_id = "home-9"\n'
        '\n[[resource]]\nresource_id = "home-9.ac"\nsite_id = "home-9"\ngateway_id = "gw-9"\n'
        'node_id = "09"\neoj = "013001"\ncomfort_min_c = 20.0\ncomfort_max_c = 28.0\n'
        '\n[[resource]]\nresource_id = "home-9.bad"\nsite_id = "home-9"\ngateway_id = "gw-9"\n'
        'node_id = "09"\neoj = "xyz"\n'
    )
    with pytest.raises(RegistryError, match=r"home-9\.bad.*EOJ 'xyz'"):
        registry.import_inventory(read_inventory(path))
    assert [s.site_id for s in registry.sites()] == ["home-1"]
    path.write_text(path.read_text().split('\n[[resource]]\nresource_id = "home-9.bad"')[0])
    registry.import_inventory(read_inventory(path))
    assert registry.resource("home-9.ac").device_class == "aircon"


def test_unknown_keys_and_kinds_in_files_are_named(tmp_path: Path) -> None:
    path = tmp_path / "x.toml"
    path.write_text('[[site]]\nsite_id = "a"\ncolour = "red"\n')
    with pytest.raises(RegistryError, match=r"x.toml: site\[0\]: unknown key\(s\) colour"):
        read_inventory(path)
    path.write_text('[[shop]]\nid = "a"\n')
    with pytest.raises(RegistryError, match="unknown table"):
        read_inventory(path)
    csv_path = tmp_path / "x.csv"
    csv_path.write_text("type,site_id\nplanet,a\n")
    with pytest.raises(RegistryError, match=r"x\.csv:2: type 'planet'"):
        read_inventory(csv_path)


def test_an_empty_inventory_adds_nothing(registry: Registry) -> None:
    assert registry.import_inventory(Inventory()).describe() == "added nothing"


def test_a_gateways_certificate_serial_can_be_updated(registry: Registry) -> None:
    updated = registry.update_gateway("gw-1", cert_serial="0x00:1F:AB")
    assert updated.cert_serial == "1fab" and updated.status is GatewayStatus.ENROLLED
    with pytest.raises(RegistryError, match="unknown gateway 'gw-9'"):
        registry.update_gateway("gw-9", cert_serial="1")


# -- records from a JSON document (POST /api/v1/import, a TOML file's tables) ---------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=12,
)  # fmt: skip
_kinds = st.sampled_from(["site", "gateway", "resource", "customer", "contract", "other"])
_fields = st.sampled_from(["site_id", "gateway_id", "resource_id", "node_id", "eoj",
                           "rated_kw", "availability", "allowed", "name", "products"])  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_kinds, st.lists(st.dictionaries(_fields, _json, max_size=6)) | _json,
                       max_size=4))  # fmt: skip
def test_any_json_document_is_records_or_a_registry_error(document: dict[str, object]) -> None:
    from erab.aggregator.registry import inventory_document, inventory_from_document

    try:
        inventory = inventory_from_document(document, "the request")
    except RegistryError as exc:
        assert str(exc)  # says what was wrong
        return
    # what it accepted goes back to the same document's records
    again = inventory_from_document(inventory_document(inventory), "again")
    assert again == inventory


def test_an_emulated_towns_records_go_through_a_document_unchanged() -> None:
    from erab.aggregator.registry import inventory_document, inventory_from_document
    from erab.cli.ra import scenario_inventory
    from erab.devices import Scenario

    inventory = scenario_inventory(Scenario.generate(4, 1, seed=3))
    document = inventory_document(inventory)
    assert set(document) == {"site", "gateway", "resource"}
    assert inventory_from_document(json.loads(json.dumps(document))) == inventory
