"""The broker's part of ``erab security assess``: TLS and client certificates on every
listener, permissions that match the registry now, and no revoked gateway still connected,
examined on a real nats-server with a real gateway connection."""

from __future__ import annotations

import json
import subprocess
import sys

from erab.bus import RunningBroker
from erab.bus.broker import assessment
from erab.security import Status
from tests.bus.conftest import Deployment
from tests.bus.test_revocation import link, serial_of


def checks(deployment: Deployment) -> dict[str, Status]:
    result = assessment(deployment.home)
    assert result is not None
    return {c.control.split(" ")[1]: c.status for c in result.checks}


async def test_a_revoked_gateway_left_connected_fails_until_the_broker_reloads(
    deployment: Deployment, broker: RunningBroker
) -> None:
    gl = link(deployment, broker, "gw-a", deployment.gateways["gw-a"])
    async with gl:
        result = assessment(deployment.home)
        assert result is not None and "1 gateway connection(s) open" in result.checks[2].evidence
        assert checks(deployment) == {
            "listeners": Status.PASS, "permissions": Status.PASS, "revoked": Status.PASS}
        # revoked in the registry, but nobody regenerated the broker's permissions
        deployment.ca.revoke(serial_of(deployment.gateways["gw-a"]), "keyCompromise")
        found = checks(deployment)
        assert found["permissions"] is Status.FAIL and found["revoked"] is Status.FAIL
        result = assessment(deployment.home)
        assert result is not None
        assert any("erab broker reload" in c.evidence for c in result.checks)


def test_erab_security_assess_reports_the_broker(deployment: Deployment,
                                                  broker: RunningBroker) -> None:  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "erab", "security", "assess", "--home", str(deployment.home),
         "--json", "--no-save"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(done.stdout)
    [broker_req] = [r for r in report["requirements"] if r["id"] == "broker"]
    assert [c["status"] for c in broker_req["checks"]] == ["pass", "pass", "pass"]


def test_a_home_without_a_broker_has_nothing_to_assess(tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert assessment(tmp_path) is None
