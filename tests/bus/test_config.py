"""Broker configuration from the registry, without starting a broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from erab.bus.broker import (
    BrokerHome,
    Ports,
    admitted,
    gateway_user,
    ports_from_log,
    prepare,
    render_accounts,
    render_config,
)
from erab.bus.topics import MessageKind, TopicError, parse, subject, topic
from erab.clock import RealClock
from erab.security import CertificateRegistry
from tests.bus.conftest import make_deployment


def test_a_gateway_may_publish_its_uplink_kinds_and_subscribe_its_commands_only() -> None:
    user = gateway_user("gw.b", "SERIALNUMBER=1f,OU=site-b,CN=gw.b")
    assert user.user == "SERIALNUMBER=1f,OU=site-b,CN=gw.b"
    assert set(user.publish) == {f"erab.v1.gw.gw//b.{k}" for k in
                                 ("hello", "telemetry", "meter", "state", "heartbeat",
                                  "offline", "ack")}
    assert user.subscribe == ("erab.v1.gw.gw//b.cmd",)
    assert not any(">" in s or "*" in s for s in user.publish + user.subscribe)


def test_accounts_list_active_gateways_and_the_ra_and_not_the_revoked(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    registry = CertificateRegistry(deployment.layout.security.registry_db, RealClock())
    gateways, services = admitted(registry, RealClock().now())
    assert [g.gateway_id for g in gateways] == ["gw-a", "gw.b"] and services == ["ra"]
    deployment.ca.revoke_gateway("gw-a")
    gateways, _ = admitted(registry, RealClock().now())
    assert [g.gateway_id for g in gateways] == ["gw.b"]
    text = render_accounts(gateways, services)
    assert '"urn:erab:service:ra", allowed_connection_types: ["STANDARD"]' in text
    assert "CN=gw-a" not in text and "CN=gw.b" in text
    assert 'allowed_connection_types: ["MQTT"]' in text and "jetstream: enabled" in text


def test_a_gateway_whose_certificates_all_expired_is_not_admitted(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    registry = CertificateRegistry(deployment.layout.security.registry_db, RealClock())
    from datetime import timedelta

    later = RealClock().now() + timedelta(days=400)
    gateways, services = admitted(registry, later)
    assert gateways == [] and services == []


def test_the_config_listens_on_loopback_with_mutual_tls_on_both_listeners(
    tmp_path: Path,
) -> None:
    layout = BrokerHome(tmp_path)
    text = render_config(layout, Ports(4222, 8883, 8222))
    assert 'listen: "127.0.0.1:4222"' in text and 'listen: "127.0.0.1:8883"' in text
    assert 'http: "127.0.0.1:8222"' in text
    assert text.count("verify_and_map: true") == 2 and text.count('min_version: "1.3"') == 2
    assert 'include "accounts.conf"' in text
    assert '"127.0.0.1:-1"' in render_config(layout, Ports(0, 0, 0))


def test_prepare_issues_the_broker_and_ra_certificates_once(tmp_path: Path) -> None:
    deployment = make_deployment(tmp_path)
    layout = deployment.layout
    first = layout.server_cert.read_bytes(), layout.ra_cert.read_bytes()
    assert oct(layout.server_key.stat().st_mode & 0o777) == "0o600"
    assert oct(layout.ra_key.stat().st_mode & 0o777) == "0o600"
    prepare(deployment.home, ports=Ports(0, 0, 0))
    assert (layout.server_cert.read_bytes(), layout.ra_cert.read_bytes()) == first


def test_bad_ports_are_refused() -> None:
    with pytest.raises(ValueError, match="nats port must be 0-65535"):
        Ports(nats=70000)


def test_ports_are_read_from_the_servers_log() -> None:
    log = [
        "[1] 2026/08/01 00:00:00.1 [INF] Starting http monitor on 127.0.0.1:33027",
        "[1] 2026/08/01 00:00:00.2 [INF] Listening for MQTT clients on tls://127.0.0.1:38289",
        "[1] 2026/08/01 00:00:00.3 [INF] Listening for client connections on 127.0.0.1:38143",
    ]
    assert ports_from_log(log) == {"monitor": 33027, "mqtt": 38289, "nats": 38143}


def test_topics_and_subjects_parse_back() -> None:
    for kind in MessageKind:
        assert parse(topic("gw.1_x-y", kind)) == ("gw.1_x-y", kind)
        assert parse(subject("gw.1_x-y", kind)) == ("gw.1_x-y", kind)
    for bad in ("erab/v2/gw/a/ack", "erab/v1/gw/a/unknown", "erab/v1/gw//ack",
                "erab/v1/gw/a/b/ack", "erab/v1/gw/-a/ack"):
        with pytest.raises(TopicError):
            parse(bad)
