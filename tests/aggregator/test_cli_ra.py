"""``erab ra``: registry commands on a deployment home, and import from an emulated town."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from erab.cli import main
from erab.cli.ra import scenario_inventory, store_path
from erab.clock import SimulatedClock
from erab.devices import Scenario
from erab.devices.server import TownServer
from erab.devices.town import Town


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_site_gateway_and_resource_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = str(tmp_path / "home")
    assert run(capsys, "ra", "site", "add", "home-1", "--home", home)[0] == 0
    assert run(capsys, "ra", "gateway", "add", "gw-1", "--site", "home-1", "--home", home)[0] == 0
    code, out, _ = run(
        capsys,
        "ra",
        "resource",
        "add",
        "home-1.bat",
        "--site",
        "home-1",
        "--gateway",
        "gw-1",
        "--node-id",
        "0A0B",
        "--eoj",
        "027d01",
        "--rated-kw",
        "3",
        "--soc-reserve-pct",
        "20",
        "--available",
        "13:00-17:00",
        "--home",
        home,
    )
    assert code == 0 and "battery 027d01" in out
    code, out, _ = run(capsys, "ra", "resource", "list", "--json", "--home", home)
    [row] = json.loads(out)
    assert (row["resource_id"], row["node_id"], row["availability"], row["allowed"]) == (
        "home-1.bat",
        "0a0b",
        ["13:00-17:00"],
        True,
    )
    code, out, _ = run(capsys, "ra", "gateway", "show", "gw-1", "--json", "--home", home)
    shown = json.loads(out)
    assert shown["status"] == "enrolled"
    assert [a["device_id"] for a in shown["allow_list"]] == ["home-1.bat"]
    code, out, _ = run(capsys, "ra", "site", "show", "home-1", "--home", home)
    assert "gateway gw-1: enrolled" in out and "resource home-1.bat: battery 027d01" in out
    assert store_path(Path(home)).is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gateway", "add", "gw-2", "--site", "nowhere"], "unknown site 'nowhere'"),
        (["site", "add", "home-1"], "site 'home-1' already exists"),
        (
            [
                "resource",
                "add",
                "r",
                "--site",
                "home-1",
                "--gateway",
                "gw-1",
                "--node-id",
                "01",
                "--eoj",
                "zz",
            ],
            "EOJ 'zz' must be 6 hex digits",
        ),
        (["resource", "show", "nothing"], "unknown resource 'nothing'"),
    ],
)
def test_bad_input_is_one_line_naming_what_was_wrong(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    home = str(tmp_path / "home")
    run(capsys, "ra", "site", "add", "home-1", "--home", home)
    run(capsys, "ra", "gateway", "add", "gw-1", "--site", "home-1", "--home", home)
    code, _, err = run(capsys, "ra", *argv, "--home", home)
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_listing_a_home_without_a_store_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "ra", "site", "list", "--home", str(tmp_path / "empty"))
    assert code == 2 and "no RA store at" in err
    assert not (tmp_path / "empty").exists()


def test_import_of_a_town_registers_what_erab_emulate_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = Scenario.generate(4, 1, seed=3)
    inv = scenario_inventory(scenario)
    server = TownServer(
        Town(scenario, datetime(2026, 8, 1, tzinfo=UTC)),
        SimulatedClock(datetime(2026, 8, 1, tzinfo=UTC)),
    )
    served = {
        (e.identification, obj[2:].lower())
        for e in server.endpoints()
        for obj in e.objects
        if not obj.startswith("0x0EF0")
    }
    assert {(r.node_id, r.eoj) for r in inv.resources} == served
    batteries = [r for r in inv.resources if r.device_class == "battery"]
    assert batteries and all(r.rated_kwh and r.rated_kw for r in batteries)
    home = str(tmp_path / "home")
    code, out, _ = run(
        capsys,
        "ra",
        "import",
        "--homes",
        "4",
        "--stores",
        "1",
        "--seed",
        "3",
        "--json",
        "--home",
        home,
    )
    assert code == 0
    report = json.loads(out)
    assert report["added"]["sites"] == 5 and report["added"]["resources"] == len(inv.resources)
    code, out, _ = run(
        capsys, "ra", "import", "--homes", "4", "--stores", "1", "--seed", "3", "--home", home
    )
    assert out.startswith("added nothing")


def test_import_from_a_csv_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text("type,site_id,gateway_id,kind\nsite,shop-1,,store\ngateway,shop-1,gw-s,\n")
    code, out, _ = run(capsys, "ra", "import", str(path), "--home", str(tmp_path / "h"))
    assert code == 0 and out.strip() == "added 1 sites, 1 gateways"
    code, _, err = run(
        capsys, "ra", "import", str(tmp_path / "missing.csv"), "--home", str(tmp_path / "h")
    )
    assert code == 2 and "no such file" in err
