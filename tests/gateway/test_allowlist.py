"""The allow-list: only confirmed devices (node id 0x83 + EOJ) are controllable."""

from __future__ import annotations

import pytest

from erab.gateway.allowlist import AllowList, DeviceKey, SeenDevice

BATTERY = DeviceKey("fe0000000102", "027d01")
AIRCON = DeviceKey("fe0000000102", "013001")
ALLOWED = AllowList({BATTERY: "battery-1", AIRCON: "aircon-1"})


def test_an_allow_listed_device_is_controllable_at_the_host_where_it_was_seen() -> None:
    review = ALLOWED.review([SeenDevice("127.0.0.5", BATTERY)])
    assert review.controllable == {BATTERY: "127.0.0.5"}
    assert review.findings == ()


def test_a_new_device_is_reported_not_controlled() -> None:
    stranger = DeviceKey("fe00000009ff", "027d01")
    review = ALLOWED.review([SeenDevice("127.0.0.9", stranger)])
    assert review.controllable == {}
    assert [f.describe() for f in review.findings] == [
        "new device fe00000009ff/027d01 at 127.0.0.9"
    ]


def test_the_same_eoj_on_another_node_is_not_the_allowed_device() -> None:
    assert not ALLOWED.allows(DeviceKey("fe0000000103", "027d01"))
    assert ALLOWED.allows(BATTERY)


def test_another_node_at_a_known_address_is_reported_as_changed() -> None:
    swapped = DeviceKey("fe00000000aa", "027d01")
    review = ALLOWED.review(
        [SeenDevice("127.0.0.5", swapped), SeenDevice("127.0.0.6", AIRCON)],
        known_hosts={"127.0.0.5": BATTERY.node_id},
    )
    assert review.controllable == {AIRCON: "127.0.0.6"}
    assert [(f.problem, f.key) for f in review.findings] == [("changed", swapped)]


def test_device_ids_look_up_their_key_and_must_be_unique() -> None:
    assert ALLOWED.key_of("battery-1") == BATTERY
    assert ALLOWED.key_of("nope") is None
    with pytest.raises(ValueError, match="share one device_id"):
        AllowList({BATTERY: "x", AIRCON: "x"})
    with pytest.raises(ValueError, match="6 lower-case hex"):
        DeviceKey("fe01", "27d01")
