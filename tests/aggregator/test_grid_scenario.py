"""The grid-service quality scenario of issue 11 at 200 sites (tests/aggregator/grid_scenario.py):
a 200-home town with its smart meters, 200 real gateways in this process, the real broker and
the RA, one 3-hour down event of 60 % of the fleet's flexibility for its window, run on a
stepped simulated clock (about half a minute on this machine)."""

from __future__ import annotations

import logging

import pytest

from erab.bus import RunningBroker
from tests.aggregator.grid_scenario import run_grid_scenario
from tests.bus.conftest import Deployment, broker, deployment  # noqa: F401
from tests.gateway.test_fleet import with_command_key

pytestmark = pytest.mark.timeout(240)


async def test_200_sites_deliver_a_3_hour_event_within_10_percent_by_their_meters(
    deployment: Deployment, broker: RunningBroker, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:  # fmt: skip
    caplog.set_level(logging.ERROR, "erab.ra.alerts")  # the fleet's certificates are new
    with_command_key(deployment)
    result = await run_grid_scenario(deployment.home, broker, 200)
    assert result.target_kw < -10.0, result  # a real event, not a rounding error
    assert result.target_kw == pytest.approx(-0.6 * result.flexibility_kw)
    assert len(result.slots) == 6
    # delivered kW within ±10 % of the target in at least 95 % of the 30-minute slots, as the
    # sites' smart meters measure it against their uncommanded twins
    assert result.share_within(0.10) >= 0.95, "\n" + result.table()
    assert result.commands > 0 and result.refused == 0
    # no commanded battery outside [reserve, max]; no room pushed above its comfort band
    assert result.soc_min_margin_pct >= -0.05, result
    assert result.soc_max_margin_pct >= -0.05, result
    assert result.room_over_band_k <= 0.05, result
