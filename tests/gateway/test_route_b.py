"""The site meter by route B: a gateway whose site config has a ``[meter]`` table reads the
meter through a Wi-SUN dongle — here erab's dongle emulator on a real pty, with the route B
tests' emulated meter behind it — and sends ``meter`` messages with its power, its scaled
cumulative energies and its newest 30-minute readings; the meter object on the LAN is then
not used for readings."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from erab.bus import MeterReading, RaLink, RunningBroker, Stream, TelemetryBatch
from erab.gateway.config import load_site_config
from erab.gateway.service import Gateway, read_status
from erab.meter.dongle import DongleCore, PtyDongle
from tests.bus.conftest import Deployment
from tests.gateway.conftest import Home
from tests.gateway.test_service import (
    collect,
    command_key_file,
    running,
    wait_for,
    write_site_config,
)
from tests.meter.conftest import PASSWORD, RBID, make_meter

pytestmark = pytest.mark.timeout(120)


async def test_meter_readings_come_by_route_b_when_the_site_has_a_meter_table(
    deployment: Deployment, broker: RunningBroker, ra: RaLink, home: Home, tmp_path: Path
) -> None:
    # 10 x 0.01 kWh per count: the gateway must use the meter's own coefficient and unit
    meter, node = make_meter(coefficient=10, unit_code=0x02)
    async with PtyDongle(DongleCore(node, route_b_id=RBID, password=PASSWORD)) as dongle:
        extra = (f'[meter]\nport = "{dongle.path}"\nroute_b_id = "{RBID}"\n'
                 f'password = "{PASSWORD}"\nmeter_id = "meter-b"\nproperty_timeout_s = 2\n')
        key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
        config = load_site_config(write_site_config(
            tmp_path / "site.toml", deployment, broker, home, key, extra=extra))  # fmt: skip
        assert config.meter is not None and PASSWORD not in repr(config.meter)
        telemetry = await ra.consumer(Stream.TELEMETRY, "ingest")
        gateway = Gateway(config, tmp_path / "gw-home")
        async with running(gateway):
            got = await collect(telemetry, lambda got: sum(
                isinstance(m, MeterReading) for m in got) >= 2 and any(
                isinstance(m, TelemetryBatch) for m in got), timeout_s=30)  # fmt: skip
            status = read_status(tmp_path / "gw-home")
    readings = [m for m in got if isinstance(m, MeterReading)]
    assert {m.meter_id for m in readings} == {"meter-b"}  # none from the LAN meter
    first = readings[0]
    assert first.power_w == pytest.approx(meter.power_w)  # 1234 W in the emulated history
    assert first.import_kwh == pytest.approx(meter.import_kwh, abs=0.1)
    assert first.export_kwh == pytest.approx(meter.export_kwh, abs=0.1)
    newest = meter.latest_reading()
    assert (first.fixed_at, first.fixed_import_kwh) == (newest.point, newest.import_kwh)
    assert first.fixed_export_kwh == pytest.approx(newest.export_kwh)
    assert all(m.fixed_at is None for m in readings[1:])  # not new again
    assert status["meter"]["source"] == "route_b" and status["meter"]["error"] is None


async def test_a_route_b_port_that_is_missing_is_reported_and_polling_goes_on(
    deployment: Deployment, broker: RunningBroker, home: Home, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-tty"
    extra = (f'[meter]\nport = "{missing}"\nroute_b_id = "{RBID}"\n'
             f'password = "{PASSWORD}"\ninterval_s = 0.2\n')  # fmt: skip
    key = command_key_file(tmp_path, Ed25519PrivateKey.generate())
    config = load_site_config(write_site_config(
        tmp_path / "site.toml", deployment, broker, home, key, extra=extra))  # fmt: skip
    gateway = Gateway(config, tmp_path / "gw-home")
    async with running(gateway):
        await wait_for(lambda: gateway.meter_error is not None and gateway.batches >= 3)
        status = read_status(tmp_path / "gw-home")
    assert gateway.meter_readings == 0
    assert f"cannot open the route B port {missing}" in status["meter"]["error"]
