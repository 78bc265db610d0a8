"""The RA service's operations without a broker: its state feed, alerts (flagged readings,
certificates near expiry, silent gateways, under-delivery), the flexibility forecast, the
delivery per site of an event, and the API endpoints and commands that show them."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import uvicorn
from cryptography import x509

from erab.aggregator.alerts import (
    AlertDesk,
    AlertKind,
    AlertSettings,
    expiring,
    subject_of,
    under_delivered,
)
from erab.aggregator.api import api_certificate, create_app
from erab.aggregator.closedloop import DeliveryCheck, SiteSnapshots, site_delivery
from erab.aggregator.events import EventRequest
from erab.aggregator.fanout import Fanout
from erab.aggregator.ingest import to_batch
from erab.aggregator.registry import Registry
from erab.aggregator.service import RaService
from erab.bus import Device, Hello, Sample, TelemetryBatch
from erab.cli import main
from erab.clock import SimulatedClock
from erab.security import OperatorDirectory, Role, SecurityHome
from erab.security.envelope import EnvelopeVerifier, MemoryVerifierStateStore
from erab.security.keys import load_ed25519_key
from erab.security.operators import Argon2Parameters
from erab.store import Gateway, GatewayStatus, Resource, Site, SqliteStore
from tests.bus.conftest import Deployment, make_deployment
from tests.gateway.test_fleet import with_command_key

NOW = datetime.now(UTC).replace(microsecond=0)
SITES = (("site-a", "gw-a"), ("site-b", "gw.b"))  # the deployment's enrolled gateways


class Publisher:
    """Where the fan-out's signed envelopes go instead of a broker (kept for inspection)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    async def send_command(self, gateway_id: str, envelope_wire: bytes) -> None:
        self.sent.append((gateway_id, envelope_wire))


def register(home: Path) -> None:
    store = SqliteStore(home / "ra" / "ra.sqlite")
    reg = Registry(store, SimulatedClock(NOW - timedelta(hours=1), speed=0))
    for i, (site, gw) in enumerate(SITES):
        reg.add_site(Site(site, site))
        reg.add_gateway(Gateway(gw, site))
        reg.add_resource(Resource(f"{site}.bat", site, gw, "", f"0{i + 1}0a", "027d01",
                                  rated_kw=3.0, rated_kwh=10.0, soc_reserve_pct=20.0,
                                  soc_max_pct=95.0))  # fmt: skip
    store.close()


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    d = make_deployment(tmp_path)  # gateway certificates valid for 30 days
    with_command_key(d)
    register(d.home)
    return d


@pytest.fixture
def ra(deployment: Deployment) -> RaService:
    service = RaService(deployment.home, clock=SimulatedClock(NOW, speed=0),
                        alerts=AlertSettings(cert_warn_days=10))  # fmt: skip
    service.fanout = Fanout(Publisher(), service.signer, service.clock)
    return service


Api = tuple[httpx.AsyncClient, dict[str, str]]


def advance(ra: RaService, by: timedelta) -> None:
    clock = ra.clock
    assert isinstance(clock, SimulatedClock)
    clock.advance(by.total_seconds())


def telemetry(gw: str, device: str, seq: int, at: datetime, **values: float) -> TelemetryBatch:
    return TelemetryBatch(gateway_id=gw, seq=seq, sent_at=at,
                          samples=[Sample(device_id=device, measured_at=at, values=values)])


# -- the state feed ------------------------------------------------------------------------
def test_a_sample_counts_only_for_a_resource_of_the_gateway_that_sent_it(ra: RaService) -> None:
    row_a = [r.resource_id for r in ra.resources].index("site-a.bat")
    forged = telemetry("gw.b", "site-a.bat", 1, NOW, soc_pct=5.0, power_w=0.0)
    assert ra.apply_telemetry([forged]) == 0
    assert ra.state.soc_pct[row_a] != ra.state.soc_pct[row_a]  # still NaN
    assert ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 2, NOW, soc_pct=60.0,
                                         power_w=-1500.0)]) == 2  # fmt: skip
    assert (ra.state.soc_pct[row_a], ra.state.power_kw[row_a]) == (60.0, -1.5)


def test_nothing_of_a_revoked_gateway_reaches_the_state(ra: RaService) -> None:
    ra.store.set_gateway("gw-a", status=GatewayStatus.REVOKED, cert_serial=None, at=NOW)
    ra.check_gateways()
    assert ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 1, NOW, soc_pct=60.0)]) == 0


def test_readings_that_cannot_be_true_are_counted_and_alerted_once_per_resource(
    ra: RaService,
) -> None:
    bad = [telemetry("gw-a", "site-a.bat", s, NOW, soc_pct=150.0) for s in (1, 2)]
    assert ra.apply_telemetry(bad) == 0
    flagged = [a for a in ra.store.alerts(open_only=True) if a.kind == "reading_flagged"]
    assert [(a.resource_id, a.gateway_id) for a in flagged] == [("site-a.bat", "gw-a")]
    assert "soc_out_of_range" in flagged[0].message
    assert 'erab_readings_refused_total{reason="soc_out_of_range"} 2' in ra.metrics_text()
    assert 'erab_alerts_open{kind="reading_flagged"} 1' in ra.metrics_text()


# -- alerts --------------------------------------------------------------------------------
def test_certificates_near_expiry_raise_an_alert_each_and_clear_when_out_of_the_warning(
    ra: RaService,
) -> None:
    ra.check_alerts()  # the gateways' 30-day certificates are not within 10 days
    assert not [a for a in ra.store.alerts() if a.kind == "certificate_expiring"]
    advance(ra, timedelta(days=25))
    ra.check_alerts()
    ra.check_alerts()  # raised once, not again
    found = [a for a in ra.store.alerts(open_only=True) if a.kind == "certificate_expiring"]
    assert sorted(a.gateway_id or "" for a in found) == ["gw-a", "gw.b"]
    assert all("renew" in a.message for a in found)
    ra.alert_settings = ra.alerts.settings = AlertSettings(cert_warn_days=1)
    ra.check_alerts()
    assert not [a for a in ra.store.alerts(open_only=True) if a.kind == "certificate_expiring"]


def test_expiring_leaves_out_revoked_renewed_expired_and_far_certificates() -> None:
    day = timedelta(days=1)
    records = [
        ("01", "gw-1", "gw-1", NOW - day, NOW + 3 * day, False, None),  # due
        ("02", "gw-2", "gw-2", NOW - day, NOW + 3 * day, True, None),  # revoked
        ("03", "gw-3", "gw-3", NOW - day, NOW + 3 * day, False, "0f"),  # renewed
        ("04", "gw-4", "gw-4", NOW - 9 * day, NOW - day, False, None),  # already expired
        ("05", "broker", None, NOW - day, NOW + 60 * day, False, None),  # far
    ]
    assert [c.serial for c in expiring(records, NOW, 30 * day)] == ["01"]


def test_under_delivery_is_raised_once_and_cleared_back_in_band(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ra.sqlite")
    desk = AlertDesk(store, SimulatedClock(NOW, speed=0))
    short = DeliveryCheck(-100.0, 500.0, 420.0, 80.0, 20.0)  # 80 % delivered
    assert under_delivered(short) and not under_delivered(DeliveryCheck(-100, 500, 405, 95, 0))
    assert desk.delivery("ev-1", short) is True
    assert desk.delivery("ev-1", short) is False  # one alert while it lasts
    [alert] = store.alerts(open_only=True)
    assert (alert.kind, subject_of(alert.message)) == ("under_delivery", "event ev-1")
    assert "80 %" in alert.message
    desk.delivery("ev-1", DeliveryCheck(-100.0, 500.0, 402.0, 98.0, 0.0))
    assert store.alerts(open_only=True) == [] and len(store.alerts()) == 1


def test_a_silent_gateway_is_offline_with_an_alert_that_clears_when_it_is_back(
    ra: RaService,
) -> None:
    ra.store.write_uplink_batch(to_batch([telemetry("gw-a", "site-a.bat", 1, NOW,
                                                    soc_pct=50.0)]), NOW)  # fmt: skip
    advance(ra, timedelta(minutes=10))
    assert ra.store.mark_silent_gateways(ra.clock.now() - timedelta(minutes=5),
                                         ra.clock.now()) == ["gw-a"]  # fmt: skip
    assert [a.kind for a in ra.store.alerts(open_only=True)] == ["gateway_silent"]
    back = ra.clock.now()
    ra.store.write_uplink_batch(to_batch([telemetry("gw-a", "site-a.bat", 2, back,
                                                    soc_pct=51.0)]), back)  # fmt: skip
    ra.check_gateways()
    assert ra.store.alerts(open_only=True) == []


# -- per-site delivery ---------------------------------------------------------------------
def test_site_snapshots_give_the_mean_before_the_event() -> None:
    snaps = SiteSnapshots()
    for t, kw in ((0.0, [1.0, float("nan")]), (60.0, [3.0, 2.0]), (2000.0, [9.0, 9.0])):
        snaps.add(t, kw)  # type: ignore[arg-type]
    assert snaps.baseline(120.0).tolist() == [2.0, 2.0]  # type: ignore[union-attr]
    assert snaps.baseline(-5.0) is None
    d = site_delivery(-2.0, ["a"], snaps.baseline(120.0)[:1], [0.5], [1.0])  # type: ignore[index, arg-type]
    assert (d.delivered_kw.tolist(), d.ratio.tolist()) == ([1.5], [1.5])


async def test_an_events_delivery_is_measured_per_site_against_its_pre_event_mean(
    ra: RaService,
) -> None:
    ra.apply_telemetry([telemetry(gw, f"{site}.bat", 1, NOW - timedelta(minutes=2),
                                  soc_pct=80.0, power_w=200.0) for site, gw in SITES])
    ra.snapshot()
    ra.apply_telemetry([telemetry(gw, f"{site}.bat", 2, NOW, soc_pct=80.0, power_w=400.0)
                        for site, gw in SITES])  # fmt: skip
    ra.snapshot()  # each site's baseline: (0.2 + 0.4) / 2 = 0.3 kW
    event = await ra.create_event(EventRequest(-4.0, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    commands = ra.plans[event.event_id].commands
    assert {c.body["device_id"] for c in commands} == {"site-a.bat", "site-b.bat"}
    advance(ra, timedelta(minutes=5))
    later = ra.clock.now()
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 3, later, power_w=-1700.0),
                        telemetry("gw.b", "site-b.bat", 3, later, power_w=100.0)])
    sites = ra.delivery_by_site(event.event_id)
    assert sites is not None and sites.site_ids == ("site-a", "site-b")
    assert sites.baseline_kw.round(3).tolist() == [0.3, 0.3]
    assert sites.delivered_kw.round(3).tolist() == [2.0, 0.2]
    assert sites.commanded_kw.sum() == pytest.approx(
        sum(ra.plans[event.event_id].kw_of.values()))
    detail = ra.event_detail(event.event_id)
    assert [r["site"] for r in detail["sites"]] == ["site-a", "site-b"]
    assert detail["sites"][0]["delivered_kw"] == 2.0
    assert detail["commands"]["sent"] == len(commands)


# -- the API and the commands --------------------------------------------------------------
@pytest.fixture
async def api(ra: RaService, deployment: Deployment) -> AsyncIterator[Api]:
    operators = OperatorDirectory(SecurityHome(deployment.home).operators_db, ra.clock,
                                  argon2_parameters=Argon2Parameters(1, 1024, 1))  # fmt: skip
    operators.add("vera", Role.VIEWER, "correct horse battery")
    token = operators.issue_token("vera", "test")
    transport = httpx.ASGITransport(app=create_app(ra, operators))  # same thread as the store
    async with httpx.AsyncClient(transport=transport, base_url="http://ra") as client:
        yield client, {"Authorization": f"Bearer {token}"}


async def test_the_api_gives_the_flexibility_forecast_per_slot_and_kind(
    ra: RaService, api: Api,
) -> None:  # fmt: skip
    client, headers = api
    ra.apply_telemetry([telemetry(gw, f"{site}.bat", 1, NOW, soc_pct=60.0, power_w=0.0)
                        for site, gw in SITES])  # fmt: skip
    got = await client.get("/api/v1/flexibility", headers=headers)
    assert got.status_code == 200, got.text
    forecast = got.json()
    assert len(forecast["slots"]) == 48 and forecast["slot_s"] == 1800
    first, second = forecast["slots"][:2]
    step = datetime.fromisoformat(second["start"]) - datetime.fromisoformat(first["start"])
    assert step == timedelta(minutes=30)
    # each battery: 3 kW rated, 4 kWh above its reserve, held 1 h -> 3 kW down
    assert first["down_kw"] == 6.0 and first["by_kind"]["battery"]["down_kw"] == 6.0
    # up: to 95 % is 3.5 kWh in 1 h, more than its 3 kW rating
    assert first["up_kw"] == 6.0
    at = (NOW + timedelta(hours=2)).isoformat()
    later = (await client.get("/api/v1/flexibility", params={"at": at}, headers=headers)).json()
    assert later["at"] == at
    bad = await client.get("/api/v1/flexibility", params={"at": "14:00"}, headers=headers)
    assert bad.status_code == 422 and "RFC 3339" in bad.json()["detail"]
    assert (await client.get("/api/v1/flexibility")).status_code == 401


async def test_the_api_lists_open_alerts_newest_first_and_cleared_ones_on_request(
    ra: RaService, api: Api,
) -> None:  # fmt: skip
    client, headers = api
    ra.alerts.delivery("ev-9", DeliveryCheck(-10.0, 0.0, -5.0, 5.0, 5.0))
    ra.alerts.raise_once(AlertKind.WRONG_SITE, "gateway gw-a: said hello for site x",
                         gateway_id="gw-a")  # fmt: skip
    rows = (await client.get("/api/v1/alerts", headers=headers)).json()
    assert [r["kind"] for r in rows] == ["wrong_site", "under_delivery"]
    ra.alerts.delivery("ev-9", DeliveryCheck(-10.0, 0.0, -10.0, 10.0, 0.0))
    assert len((await client.get("/api/v1/alerts", headers=headers)).json()) == 1
    every = (await client.get("/api/v1/alerts", params={"cleared": "true"},
                              headers=headers)).json()  # fmt: skip
    assert [r["cleared_at"] is None for r in every] == [True, False]


def test_erab_ra_alerts_reads_the_store(
    ra: RaService, deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    ra.alerts.raise_once(AlertKind.UNDER_DELIVERY, "event ev-3: delivered 1.0 kW of 5.0 kW")
    assert main(["ra", "alerts", "--home", str(deployment.home), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert (row["kind"], row["message"]) == ("under_delivery",
                                             "event ev-3: delivered 1.0 kW of 5.0 kW")
    assert main(["ra", "alerts", "--home", str(deployment.home)]) == 0
    assert "under_delivery" in capsys.readouterr().out


# -- TLS on the API ------------------------------------------------------------------------
@pytest.fixture
def https_api(ra: RaService, deployment: Deployment) -> Iterator[tuple[str, Path]]:
    """The RA's app served as ``erab ra serve --api-tls`` serves it: uvicorn with the API
    certificate the deployment's CA issues; yields its URL and a viewer's token file."""
    operators = OperatorDirectory(SecurityHome(deployment.home).operators_db, ra.clock,
                                  argon2_parameters=Argon2Parameters(1, 1024, 1))  # fmt: skip
    operators.add("vera", Role.VIEWER, "correct horse battery")
    token = deployment.home / "vera.token"
    token.write_text(operators.issue_token("vera", "test") + "\n")
    cert, key = api_certificate(deployment.home, ["127.0.0.1"])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        server = uvicorn.Server(uvicorn.Config(
            create_app(ra, operators), log_level="warning", lifespan="off",
            ssl_certfile=str(cert), ssl_keyfile=str(key)))  # fmt: skip
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            yield f"https://127.0.0.1:{sock.getsockname()[1]}", token
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_clients_verify_the_https_api_with_the_deployments_ca(
    ra: RaService, deployment: Deployment, https_api: tuple[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    url, token = https_api
    bundle = SecurityHome(deployment.home).ca_bundle
    assert main(["ra", "flex", "--api", url, "--token-file", str(token), "--ca-file",
                 str(bundle), "--json"]) == 0  # fmt: skip
    assert len(json.loads(capsys.readouterr().out)["slots"]) == 48
    assert main(["ra", "event", "list", "--api", url, "--token-file", str(token),
                 "--ca-file", str(bundle)]) == 0  # fmt: skip
    assert "no events" in capsys.readouterr().out
    other = make_deployment(tmp_path / "other")  # another deployment's CA: not trusted
    assert main(["ra", "flex", "--api", url, "--token-file", str(token), "--ca-file",
                 str(SecurityHome(other.home).ca_bundle)]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "not verified by the CA bundle" in err and "Traceback" not in err
    assert main(["ra", "flex", "--api", url, "--token-file", str(token), "--ca-file",
                 str(tmp_path / "missing.pem")]) != 0  # fmt: skip
    assert "no CA bundle at" in capsys.readouterr().err


def test_the_api_certificate_is_issued_once_and_again_for_a_new_host(
    deployment: Deployment,
) -> None:
    cert, _ = api_certificate(deployment.home, ["127.0.0.1"])
    first = cert.read_bytes()
    assert api_certificate(deployment.home, ["localhost"])[0].read_bytes() == first
    api_certificate(deployment.home, ["10.1.2.3"])
    names = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value  # fmt: skip
    assert "10.1.2.3" in {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    assert (cert.parent / "api.key.pem").stat().st_mode & 0o077 == 0


# -- the allow-list pushed to gateways -----------------------------------------------------
def hello(gw: str, site: str, seq: int = 1) -> Hello:
    return Hello(gateway_id=gw, seq=seq, sent_at=NOW, site_id=site, software="test",
                 devices=[Device(device_id="d1", eoj="027d01", node_id="010a"),
                          Device(device_id="d2", eoj="013001", node_id="010a")])  # fmt: skip


async def test_a_hello_is_answered_with_the_registrys_allow_list_signed(
    ra: RaService, deployment: Deployment,
) -> None:  # fmt: skip
    ra.store.set_gateway("gw.b", status=GatewayStatus.REVOKED, cert_serial=None, at=NOW)
    answered = await ra.answer_hellos([
        hello("gw-a", "site-a"), hello("gw-a", "site-a", 2),  # once per batch
        hello("gw.b", "site-b"),  # revoked
        hello("gw-x", "site-a"),  # unknown
    ])  # fmt: skip
    assert answered == ["gw-a"]
    assert ra.fanout is not None
    publisher = ra.fanout.publisher
    assert isinstance(publisher, Publisher) and [g for g, _ in publisher.sent] == ["gw-a"]
    public = load_ed25519_key(SecurityHome(deployment.home).command_key).public_key()
    verifier = EnvelopeVerifier("gw-a", ra.clock, MemoryVerifierStateStore(),
                                trusted_key=public)  # fmt: skip
    body = verifier.verify(publisher.sent[0][1]).body
    # the registered, allowed battery; the proposed air conditioner is not registered
    assert body == {"type": "allow_list", "devices": [
        {"device_id": "site-a.bat", "node_id": "010a", "eoj": "027d01", "rated_power_w": 3000.0}]}


async def test_a_hello_naming_another_site_gets_no_allow_list(ra: RaService) -> None:
    assert await ra.answer_hellos([hello("gw-a", "site-b")]) == []


# -- battery setpoints and the closed loop on the commanded resources -----------------------
def acknowledge(ra: RaService) -> None:
    """Every command still in flight acknowledged as applied, at the RA's clock now."""
    from erab.aggregator.fanout import CommandStage
    from erab.bus import Acknowledgement, DeviceOutcome

    assert ra.fanout is not None
    at = ra.clock.now()
    for c in list(ra.fanout.commands.values()):
        if c.stage is CommandStage.SENT:
            ra.fanout.acknowledged(Acknowledgement(
                gateway_id=c.gateway_id, seq=c.sequence, sent_at=at, command_seq=c.sequence,
                received_at=at, outcomes=[DeviceOutcome(device_id=str(c.body["device_id"]),
                                                        outcome="applied")]))  # fmt: skip


def battery_power(ra: RaService, at: datetime, seq: int, a_w: float, b_w: float) -> None:
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", seq, at, soc_pct=80.0, power_w=a_w),
                        telemetry("gw.b", "site-b.bat", seq, at, soc_pct=80.0, power_w=b_w)])


async def test_a_battery_is_commanded_its_own_power_moved_by_the_planned_kw(
    ra: RaService,
) -> None:
    # site-a's battery charges at 2 kW: asked 4 kW down it discharges 2 kW (not 4)
    battery_power(ra, NOW, 1, 2000.0, 0.0)
    event = await ra.create_event(EventRequest(-4.0, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    [command] = plan.commands  # the merit order's margin stays headroom: one battery
    assert (command.body["device_id"], command.body["power_w"]) == ("site-a.bat", -2000)
    assert plan.kw_of[(command.gateway_id, command.sequence)] == pytest.approx(4.0)
    # a setpoint stays within the rating: 6 kW asked of a battery at +2 kW of 3 kW is 5 kW
    body, asked = ra._command(0, 6.0, plan.plan.direction, event.request, 2.0)  # type: ignore[misc]
    assert (body["power_w"], asked) == (-3000, pytest.approx(5.0))


async def test_the_closed_loop_measures_the_commanded_batteries_not_the_rest_of_the_fleet(
    ra: RaService,
) -> None:
    battery_power(ra, NOW, 1, 2000.0, 0.0)
    event = await ra.create_event(EventRequest(-4.0, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    # before the command shows in telemetry it counts what it was asked: nothing to correct
    check = await ra.correct(event.event_id)
    assert (check.delivered_kw, check.adjust_kw) == (pytest.approx(4.0), 0.0)
    acknowledge(ra)
    advance(ra, timedelta(minutes=5))
    # site-a's battery follows (-2 kW); site-b's, not commanded, starts charging 3 kW: the
    # fleet moved 1 kW, the commanded battery 4 kW, which is what counts
    battery_power(ra, ra.clock.now(), 2, -2000.0, 3000.0)
    sent = len(ra.fanout.commands)  # type: ignore[union-attr]
    check = await ra.correct(event.event_id)
    assert (check.delivered_kw, check.adjust_kw) == (pytest.approx(4.0), 0.0)
    assert len(ra.fanout.commands) == sent  # type: ignore[union-attr]
    assert ra.commanded_check(event.event_id).reference_kw == pytest.approx(2.0)
    # now it gives only 3 kW (-1 kW): the loop asks it 1 kW more, from its setpoint (-3 kW)
    advance(ra, timedelta(minutes=5))
    battery_power(ra, ra.clock.now(), 3, -1000.0, 3000.0)
    check = await ra.correct(event.event_id)
    assert (check.delivered_kw, check.adjust_kw) == (pytest.approx(3.0), pytest.approx(1.0))
    deeper = plan.in_force(0)
    assert deeper is not None and deeper.body["power_w"] == -3000
    # too much (the battery at -3 kW while site-b's charging does not count): 5 kW against
    # 4; the loop eases the battery to 4 kW rather than cancel it
    acknowledge(ra)
    advance(ra, timedelta(minutes=5))
    battery_power(ra, ra.clock.now(), 4, -3000.0, 3000.0)
    check = await ra.correct(event.event_id)
    assert (check.delivered_kw, check.adjust_kw) == (pytest.approx(5.0), pytest.approx(-1.0))
    eased = plan.in_force(0)
    assert eased is not None and eased.body["power_w"] == -2000
    assert not [c for c in ra.fanout.commands.values()  # type: ignore[union-attr]
                if c.body["type"] == "cancel"]  # fmt: skip


async def test_a_sites_meter_reading_reaches_the_state(ra: RaService) -> None:
    from erab.bus import MeterReading

    site = ra.site_ids.index("site-b")
    reading = MeterReading(gateway_id="gw.b", seq=9, sent_at=NOW, meter_id="meter",
                           measured_at=NOW, power_w=1234.0)  # fmt: skip
    forged = MeterReading(gateway_id="gw-a", seq=9, sent_at=NOW, meter_id="meter",
                          measured_at=NOW + timedelta(seconds=1), power_w=9.0)  # fmt: skip
    ra.apply_telemetry([reading])
    assert ra.state.site_meter_kw[site] == pytest.approx(1.234)
    ra.apply_telemetry([forged])  # gw-a's meter is site-a's, never site-b's
    assert ra.state.site_meter_kw[site] == pytest.approx(1.234)


async def test_a_battery_the_event_would_take_below_its_reserve_is_eased_then_released(
    ra: RaService,
) -> None:
    # site-a's battery at 80 % discharges 2 kW for a 1-hour event; half an hour later its
    # reading says 24 %: 3 points above its 20 % reserve and the 1 % reading margin, 0.3
    # kWh, 0.285 kWh through the converter, over the half hour left: 0.57 kW
    battery_power(ra, NOW, 1, 0.0, 0.0)
    event = await ra.create_event(EventRequest(-2.0, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    [command] = plan.commands
    assert command.body["power_w"] == -2000
    acknowledge(ra)
    advance(ra, timedelta(minutes=30))
    at = ra.clock.now()
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 2, at, soc_pct=24.0, power_w=-2000.0),
                        telemetry("gw.b", "site-b.bat", 2, at, soc_pct=80.0, power_w=0.0)])
    await ra.correct(event.event_id)
    eased = plan.in_force(0)
    assert eased is not None and eased is not command
    assert eased.body["power_w"] == -570
    # at its reserve plus the margin it has nothing left: its command is cancelled
    acknowledge(ra)
    advance(ra, timedelta(minutes=10))
    at = ra.clock.now()
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 3, at, soc_pct=21.0, power_w=-570.0)])
    check = await ra.correct(event.event_id)
    assert plan.in_force(0) is None
    assert check.adjust_kw == pytest.approx(2.0 - 0.57)  # a shortfall the loop now sees
    cancels = [c for c in ra.fanout.commands.values()  # type: ignore[union-attr]
               if c.body["type"] == "cancel"]  # fmt: skip
    assert [c.body["device_id"] for c in cancels] == ["site-a.bat"]


async def test_with_its_reserve_spent_the_loop_calls_a_resource_the_event_never_commanded(
    ra: RaService,
) -> None:
    # both batteries charge (2 and 3 kW): stopping is down flexibility, whatever the import
    battery_power(ra, NOW, 1, 2000.0, 3000.0)
    event = await ra.create_event(EventRequest(-2.0, NOW, timedelta(hours=1),
                                               requested_by="test"))  # fmt: skip
    plan = ra.plans[event.event_id]
    [first] = plan.commands
    assert first.body["device_id"] == "site-a.bat"  # its 2 kW are enough
    plan.reserve.clear()  # spent (on refusals, say)
    acknowledge(ra)
    advance(ra, timedelta(minutes=5))
    # site-a's battery only slowed its charging (1 kW of 2), and the meters say each home
    # imports just what its battery charges: neither may discharge (no export)
    at = ra.clock.now()
    ra.apply_telemetry([telemetry("gw-a", "site-a.bat", 2, at, soc_pct=80.0, power_w=1000.0),
                        telemetry("gw.b", "site-b.bat", 2, at, soc_pct=80.0, power_w=3000.0)])
    ra.state.apply_meter([0, 1], [1.0, 3.0], [at.timestamp()] * 2, at.timestamp())
    check = await ra.correct(event.event_id)
    assert check.adjust_kw == pytest.approx(1.0)
    # site-a has no room left; the reserve is empty; site-b, never commanded, is called
    [called] = [c for c in plan.commands if c.body["device_id"] == "site-b.bat"]
    assert plan.kw_of[(called.gateway_id, called.sequence)] == pytest.approx(1.0)
    assert called.body["power_w"] == 2000  # charging 1 kW less
