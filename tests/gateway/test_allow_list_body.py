"""The RA's ``allow_list`` command body: what the gateway takes, what it refuses and why, any
JSON at all without another exception (hypothesis); and the stored list, written atomically,
read back the same and a damaged file named in the error."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erab.clock import JST
from erab.gateway.allowlist import DeviceKey
from erab.gateway.envelope import CommandInvalid, RaAllowedDevice, parse_allow_list
from erab.gateway.service import load_ra_allow_list, save_ra_allow_list

NOW = datetime(2026, 8, 3, 13, 0, tzinfo=JST)


def body(*devices: dict[str, Any]) -> dict[str, Any]:
    return {"type": "allow_list", "devices": list(devices)}


def device(device_id: str = "site.bat", node_id: str = "fe00aa", eoj: str = "027d01",
           rated_power_w: Any = 3000.0) -> dict[str, Any]:  # fmt: skip
    return {"device_id": device_id, "node_id": node_id, "eoj": eoj,
            "rated_power_w": rated_power_w}  # fmt: skip


def test_the_ras_body_gives_each_device_its_id_key_and_rating() -> None:
    parsed = parse_allow_list(body(device(), device("site.ac", "FE00AA", "013001", None)))
    assert parsed == (
        RaAllowedDevice("site.bat", DeviceKey("fe00aa", "027d01"), 3000.0),
        RaAllowedDevice("site.ac", DeviceKey("fe00aa", "013001"), None),
    )
    assert parse_allow_list(body()) == ()  # the RA allows nothing: nothing is controllable


@pytest.mark.parametrize(("bad", "named"), [
    ({"type": "allow_list"}, "devices must be a list"),
    (body("site.bat"), "devices[0] must be an object"),  # type: ignore[arg-type]
    (body(device(device_id="")), "devices[0].device_id must be a string"),
    (body(device(device_id="x" * 65)), "devices[0].device_id must be a string"),
    (body(device(node_id="zz")), "node id must be lower-case hex"),
    (body(device(eoj="027d")), "eoj must be 6 lower-case hex digits"),
    (body(device(node_id=7)), "node_id and eoj must be hex strings"),  # type: ignore[arg-type]
    (body(device(rated_power_w="3 kW")), "rated_power_w must be a number"),
    (body(device(rated_power_w=-1)), "rated_power_w must be >= 0"),
    (body(device(), device()), "device_id 'site.bat' is listed twice"),
    (body(device(), device("other")), "device fe00aa/027d01 is listed twice"),
])  # fmt: skip
def test_a_malformed_body_is_refused_naming_what_is_wrong(bad: dict[str, Any],
                                                          named: str) -> None:  # fmt: skip
    with pytest.raises(CommandInvalid) as raised:
        parse_allow_list(bad)
    assert named in str(raised.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                               max_size=4),
    max_leaves=20,
)  # fmt: skip
entries = st.fixed_dictionaries({}, optional={
    "device_id": st.text(max_size=70) | json_values,
    "node_id": st.text("0123456789abcdefABX", max_size=10) | json_values,
    "eoj": st.text("0123456789abcdef", min_size=5, max_size=7) | json_values,
    "rated_power_w": st.floats() | json_values,
})  # fmt: skip


@given(st.fixed_dictionaries({"type": st.just("allow_list")},
                             optional={"devices": st.lists(entries | json_values, max_size=5)
                                       | json_values}))  # fmt: skip
def test_any_body_is_parsed_or_refused_with_a_reason(candidate: dict[str, Any]) -> None:
    try:
        parsed = parse_allow_list(candidate)
    except CommandInvalid as exc:
        assert str(exc)
        return
    assert len({d.device_id for d in parsed}) == len({d.key for d in parsed}) == len(parsed)
    assert all(d.rated_power_w is None or d.rated_power_w >= 0 for d in parsed)


def test_the_stored_list_reads_back_the_same_and_a_damaged_file_is_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "allow-list.json"
    assert load_ra_allow_list(path) is None  # none received yet: the site config's list
    listed = parse_allow_list(body(device(), device("site.pv", eoj="027901", rated_power_w=None)))
    save_ra_allow_list(path, listed, NOW)
    assert load_ra_allow_list(path) == listed
    assert [p.name for p in tmp_path.iterdir()] == ["allow-list.json"]  # no temporary left
    path.write_text('{"devices": [{"device_id": "x"')
    with pytest.raises(ValueError, match=r"allow-list\.json: not a stored RA allow-list"):
        load_ra_allow_list(path)
