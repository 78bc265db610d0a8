"""The site config: defaults, files from `erab pki enrol --out-dir`, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from erab.echonet.frame import EOJ
from erab.gateway.config import SiteConfigError, load_site_config

MINIMAL = """
gateway_id = "gw-0001"
site_id = "site-0001"
[broker]
host = "broker.example.jp"
[identity]
dir = "gw-0001"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_a_minimal_config_takes_the_documented_defaults(tmp_path: Path) -> None:
    config = load_site_config(write(tmp_path, MINIMAL))
    assert (config.broker_port, config.poll_interval_s, config.heartbeat_interval_s) == (
        8883, 60.0, 60.0)  # fmt: skip
    assert (config.multicast, config.hosts, config.bind) == (True, (), "0.0.0.0")
    assert (config.uplink_grace_s, config.outbox_max_messages, config.outbox_path) == (
        300.0, 10_000, None)  # fmt: skip
    assert config.battery.rated_power_w == 3000.0 and config.battery.soc_reserve_pct == 20.0
    assert config.comfort.cooling_max_c == 28.0 and config.devices == ()


def test_identity_files_come_from_the_enrol_folder_next_to_the_config(tmp_path: Path) -> None:
    identity = load_site_config(write(tmp_path, MINIMAL)).identity
    folder = tmp_path / "gw-0001"
    assert identity.cert == folder / "gw-0001.pem"
    assert identity.key == folder / "gw-0001.key.pem"
    assert identity.ca_bundle == folder / "ca-bundle.pem"
    assert identity.command_key == folder / "ra-command.pub"
    assert len(identity.missing()) == 4


def test_allow_listed_devices_are_read_with_their_eoj(tmp_path: Path) -> None:
    config = load_site_config(write(tmp_path, MINIMAL + """
[[device]]
device_id = "battery-1"
node_id = "FE00AB"
eoj = "027d01"
rated_power_w = 4000
"""))  # fmt: skip
    [device] = config.devices
    assert (device.device_id, device.node_id, device.eoj, device.rated_power_w) == (
        "battery-1", "fe00ab", EOJ(0x02, 0x7D, 0x01), 4000.0)  # fmt: skip


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('host = "broker.example.jp"', ""), "[broker]: host is required"),
        (('site_id = "site-0001"', "site_id = 7"), "site_id has the wrong type"),
        (('dir = "gw-0001"', ""), "give dir (erab pki enrol's --out-dir)"),
        (("[broker]", "poll_interval_s = 0\n[broker]"), "poll_interval_s must be more than 0"),
        (("[identity]", "[lan]\nmulticast = false\n[identity]"), "give hosts to probe"),
    ],
)
def test_a_wrong_config_names_the_file_and_the_key(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    with pytest.raises(SiteConfigError) as info:
        load_site_config(write(tmp_path, MINIMAL.replace(*change)))
    assert message in str(info.value)
    assert str(tmp_path / "site.toml") in str(info.value)


def test_no_meter_table_means_the_lan_meter_and_the_ems_is_off_by_default(
    tmp_path: Path,
) -> None:
    config = load_site_config(write(tmp_path, MINIMAL))
    assert config.meter is None
    assert not config.ems.enabled
    assert (config.ev.soc_reserve_pct, config.water_heater.min_hot_water_l) == (30.0, 100.0)


def test_the_meter_and_ems_tables(tmp_path: Path) -> None:
    text = MINIMAL + """
[meter]
port = "/dev/ttyUSB0"
route_b_id = "00112233445566778899AABBCCDDEEFF"
password = "0123456789AB"
interval_s = 120
[ems]
self_consumption = true
peak_cut_kw = 4.5
"""
    config = load_site_config(write(tmp_path, text))
    assert config.meter is not None
    assert (config.meter.port, config.meter.meter_id, config.meter.interval_s) == (
        "/dev/ttyUSB0", "meter", 120.0)  # fmt: skip
    assert "0123456789AB" not in repr(config)  # the route B password never printed
    assert config.ems.enabled and config.ems.peak_cut_w == 4500.0


@pytest.mark.parametrize(("table", "message"), [
    ('[meter]\nport = "/dev/ttyUSB0"\nroute_b_id = "0011"\npassword = "0123456789AB"\n',
     "[meter]: route B ID"),
    ('[meter]\nroute_b_id = "00112233445566778899AABBCCDDEEFF"\npassword = "0123456789AB"\n',
     "[meter]: port is required"),
    ("[ems]\npeak_cut_kw = 0\n", "[ems]: peak_cut_kw must be more than 0"),
    ('[ems]\nbattery = "battery-9"\n', "[ems]: battery 'battery-9' is not a [[device]]"),
])  # fmt: skip
def test_a_bad_meter_or_ems_table_names_the_key(
    tmp_path: Path, table: str, message: str
) -> None:
    with pytest.raises(SiteConfigError, match=None) as caught:
        load_site_config(write(tmp_path, MINIMAL + table))
    assert message in str(caught.value)
    assert str(tmp_path / "site.toml") in str(caught.value)
