"""Whatever arrives from the network or a scenario file, the emulator answers or refuses
cleanly and its models stay valid."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erab.clock import JST
from erab.devices import Scenario, ScenarioError, SiteSpec, Town, scenario_from_dict, site_objects
from erab.devices.aircon import MODE_AUTO
from erab.devices.battery import BATTERY_MODES
from erab.devices.ev import EV_MODES
from erab.devices.town import Environment
from erab.meter.smartmeter import MeterFleet, SmartMeter

START = datetime(2026, 8, 3, 12, tzinfo=JST)
HOME = SiteSpec("home", pv_w=4000.0, battery_wh=9800.0, ev=True, water_heater=True, fuel_cell=True)
STORE = SiteSpec("store", kind="store", showcases=1, battery_wh=5000.0)


@dataclass
class Rig:
    town: Town
    objects: list[Any]
    env: Environment


@pytest.fixture(scope="module")
def rig() -> Rig:
    town = Town(Scenario((HOME, STORE), seed=1), START)
    meters = MeterFleet(town.n_sites, START)
    town.observers.append(meters.observe)
    objects: list[Any] = [*site_objects(town, 0), *site_objects(town, 1), SmartMeter(meters, 0)]
    env = town.environment(np.array([START.timestamp() + 30.0]))[0]  # one sky for all steps
    return Rig(town, objects, env)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.data(), st.integers(0x80, 0xFF), st.binary(max_size=12))
def test_any_set_is_applied_or_refused_and_the_models_stay_valid(
    rig: Rig, data: st.DataObject, epc: int, edt: bytes
) -> None:
    obj = data.draw(st.sampled_from(rig.objects))
    accepted = obj.write(epc, edt)
    assert isinstance(accepted, bool)
    if accepted:
        assert obj.read(epc) is not None
    town = rig.town
    town.step(60.0, rig.env)
    assert set(town.battery.mode.tolist()) <= BATTERY_MODES
    assert set(town.ev.mode.tolist()) <= EV_MODES
    assert np.all((town.home_ac.mode >= MODE_AUTO) & (town.home_ac.mode <= 0x45))
    assert np.all((town.battery.soc_pct >= 0) & (town.battery.soc_pct <= 100 + 1e-9))
    assert np.all(np.isfinite(town.site_net_w))
    assert np.all((town.home_ac.set_temp_c >= 0) & (town.home_ac.set_temp_c <= 50))


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-10, 40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "count",
                    "pv",
                    "homes",
                    "stores",
                    "sites",
                    "name",
                    "kind",
                    "seed",
                    "battery",
                    "aircons",
                    "showcases",
                    "open_hour",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(JSON)
def test_any_scenario_document_is_accepted_or_refused_with_a_scenario_error(doc: Any) -> None:
    try:
        scenario = scenario_from_dict(doc, homes=None if not isinstance(doc, dict) else 2)
    except ScenarioError as exc:
        assert str(exc)
    else:
        assert all(s.kind in ("home", "store") for s in scenario.sites)
