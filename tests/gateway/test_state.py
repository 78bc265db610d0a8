"""State messages: every device's online / operating / mode / controlled, sent on connect
and again when one changes — here a home whose devices stop answering (real UDP, real
nats-server, the RA's JetStream consumer)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import RaLink, RunningBroker, State, Stream
from erab.gateway.config import load_site_config
from erab.gateway.service import Gateway
from tests.bus.conftest import Deployment
from tests.gateway.conftest import Home
from tests.gateway.test_service import collect, command_key_file, running, write_site_config

pytestmark = pytest.mark.timeout(120)


async def test_a_state_goes_out_on_connect_and_again_when_the_devices_stop_answering(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = load_site_config(
        write_site_config(tmp_path / "site.toml", deployment, broker, home, key)
    )
    gateway = Gateway(config, tmp_path / "gw-home")
    telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")

    def battery(message: State) -> dict[str, object] | None:
        found = [d for d in message.devices if d.device_id == "battery-1"]
        return None if not found else {"online": found[0].online, "mode": found[0].mode,
                                       "operating": found[0].operating}  # fmt: skip

    async with running(gateway):
        got = await collect(telemetry, lambda got: any(
            isinstance(m, State) and battery(m) for m in got))  # fmt: skip
        first = next(m for m in got if isinstance(m, State) and battery(m))
        assert battery(first) == {"online": True, "mode": "auto", "operating": True}
        sent = gateway.states_sent
        polls = gateway.polls
        while gateway.polls < polls + 3:  # the state stands still: no more state messages
            await collect(telemetry, lambda _: False, timeout_s=0.3)
        assert gateway.states_sent == sent

        await home.server.close()  # the home's devices go quiet
        got = await collect(telemetry, lambda got: any(
            isinstance(m, State) and battery(m) and not battery(m)["online"]  # type: ignore[index]
            for m in got), timeout_s=20)  # fmt: skip
    offline = next(m for m in got if isinstance(m, State) and battery(m)
                   and not battery(m)["online"])  # type: ignore[index]  # fmt: skip
    assert not any(d.online for d in offline.devices)
    assert offline.seq > first.seq
