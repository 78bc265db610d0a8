"""Scenario files (JSON / TOML) and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from erab.devices import Scenario, ScenarioError, SiteSpec, load_scenario


def test_generate_gives_the_asked_numbers_of_homes_and_stores() -> None:
    s = Scenario.generate(12, 3, seed=1)
    assert [x.kind for x in s.sites].count("home") == 12
    assert [x.kind for x in s.sites].count("store") == 3
    assert Scenario.generate(12, 3, seed=1) == s


def test_json_scenario_sets_the_equipment_mix(tmp_path: Path) -> None:
    path = tmp_path / "town.json"
    path.write_text(
        json.dumps(
            {
                "seed": 4,
                "homes": {"count": 10, "pv": 1.0, "battery": 0.0, "ev": 1},
                "stores": {"count": 1, "showcases": 2},
                "sites": [{"name": "demo", "kind": "home", "battery_wh": 12000, "ev": True}],
            }
        )
    )
    s = load_scenario(path)
    homes = [x for x in s.sites if x.kind == "home" and x.name != "demo"]
    assert len(homes) == 10 and all(h.pv_w > 0 and h.battery_wh == 0 and h.ev for h in homes)
    assert [x.showcases for x in s.sites if x.kind == "store"] == [2]
    assert s.sites[-1].name == "demo" and s.sites[-1].battery_wh == 12000


def test_toml_scenario_and_command_line_counts_win(tmp_path: Path) -> None:
    path = tmp_path / "town.toml"
    path.write_text("seed = 2\n[homes]\ncount = 3\nwater_heater = 1.0\n")
    s = load_scenario(path, homes=5, stores=0)
    assert len(s.sites) == 5 and all(x.water_heater for x in s.sites)


def test_unknown_key_is_named_with_the_allowed_ones(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"homes": {"count": 2, "solar": 0.5}}))
    with pytest.raises(ScenarioError, match=r"unknown key\(s\) solar; allowed: .*pv"):
        load_scenario(path)


def test_share_outside_0_to_1_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"homes": {"count": 2, "pv": 1.5}}))
    with pytest.raises(ScenarioError, match=r"homes\.pv must be a share between 0 and 1"):
        load_scenario(path)


def test_broken_file_and_missing_file_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ScenarioError, match="is not valid JSON"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        load_scenario(tmp_path / "missing.toml")


def test_bad_site_kind_and_duplicate_names_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"sites": [{"name": "x", "kind": "factory"}]}))
    with pytest.raises(ScenarioError, match="kind 'factory' is not one of home, store"):
        load_scenario(path)
    path.write_text(json.dumps({"homes": {"count": 1}, "sites": [{"name": "home-1"}]}))
    with pytest.raises(ScenarioError, match="repeated: home-1"):
        load_scenario(path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"seed": "a"}, "seed must be a whole number, got 'a'"),
        ({"latitude_deg": "x"}, "latitude_deg must be a number"),
        ({"sites": [{"name": "a", "aircons": "2"}]}, r"sites\[0\]\.aircons must be a whole number"),
        ({"sites": [{"name": "a", "ev": "yes"}]}, r"sites\[0\]\.ev must be true or false"),
        ({"homes": {"count": 1, "open_hour": "x"}}, r"homes\.open_hour must be a number"),
        ({"sites": {}}, "sites must be a list"),
        ({"homes": {"count": 1}, "latitude_deg": 95}, r"latitude must be in \[-90, 90\]"),
    ],
)
def test_wrong_value_types_are_named(doc: dict[str, object], message: str) -> None:
    from erab.devices import scenario_from_dict

    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(doc)


def test_stores_default_to_24_hour_convenience_stores_and_may_be_supermarkets(
    tmp_path: Path,
) -> None:
    stores = list(Scenario.generate(0, 2, seed=1).sites)
    assert all(x.store_type == "convenience" for x in stores)
    assert all((x.open_hour, x.close_hour) == (0.0, 24.0) for x in stores)
    path = tmp_path / "market.toml"
    path.write_text(
        '[stores]\ncount = 1\nstore_type = "supermarket"\nopen_hour = 9\nclose_hour = 22\n'
    )
    (market,) = load_scenario(path).sites
    assert market.store_type == "supermarket" and market.open_hour == 9.0


def test_an_unknown_store_type_is_refused_with_the_known_ones_named(tmp_path: Path) -> None:
    path = tmp_path / "bakery.toml"
    path.write_text('[stores]\ncount = 1\nstore_type = "bakery"\n')
    with pytest.raises(ScenarioError, match="store_type must be one of convenience, supermarket"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="store_type 'bakery' is not one of"):
        SiteSpec("s", kind="store", store_type="bakery")
