"""The payload codec without a network: every message kind round-trips, every bad payload is
refused with its reason, and no input makes the decoder do anything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.bus import (
    Acknowledgement,
    Device,
    DeviceOutcome,
    DeviceState,
    Heartbeat,
    Hello,
    MessageKind,
    MeterReading,
    Offline,
    PayloadRejected,
    RejectReason,
    Sample,
    SignedCommand,
    State,
    TelemetryBatch,
    UplinkDecoder,
    decode_command,
    decode_uplink,
    encode,
)
from erab.bus.schema import UplinkMessage, kind_of
from erab.bus.topics import topic

NOW = datetime(2026, 8, 1, 9, 0, tzinfo=UTC)
T = NOW - timedelta(seconds=5)
GW = "gw-0001"


def examples() -> list[UplinkMessage]:
    return [
        Hello(gateway_id=GW, seq=1, sent_at=T, site_id="site-0001", software="erab 0.1.0",
              devices=[Device(device_id="battery-1", eoj="027d01", node_id="fe00000001",
                              maker_code="000106", rated_power_w=3000.0, name="storage")]),
        TelemetryBatch(gateway_id=GW, seq=2, sent_at=T, samples=[
            Sample(device_id="battery-1", measured_at=T, values={"power_w": -1500.0,
                                                                 "soc_pct": 62.5})]),
        MeterReading(gateway_id=GW, seq=3, sent_at=T, meter_id="meter-1", measured_at=T,
                     power_w=820.0, import_kwh=12345.6, export_kwh=789.0),
        State(gateway_id=GW, seq=4, sent_at=T, devices=[
            DeviceState(device_id="battery-1", measured_at=T, online=True, operating=True,
                        mode="discharging", controlled=True)]),
        Heartbeat(gateway_id=GW, seq=5, sent_at=T, uptime_s=3600.0, backlog=0,
                  last_command_seq=41),
        Offline(gateway_id=GW, seq=6, sent_at=T, connected_at=T),
        Acknowledgement(gateway_id=GW, seq=7, sent_at=T, command_seq=42, received_at=T,
                        outcomes=[DeviceOutcome(device_id="battery-1", outcome="clipped",
                                                reason="above rated power",
                                                readback={"power_w": -3000.0}, measured_at=T)]),
    ]


@pytest.mark.parametrize("message", examples(), ids=lambda m: kind_of(m).value)
def test_every_uplink_kind_round_trips_on_its_topic(message: UplinkMessage) -> None:
    wire = encode(message)
    assert decode_uplink(topic(GW, kind_of(message)), wire, NOW) == message
    assert msgspec.json.decode(wire)["type"] == kind_of(message).value


def test_the_nats_subject_works_as_well_as_the_mqtt_topic() -> None:
    message = examples()[1]
    assert decode_uplink("erab.v1.gw.gw-0001.telemetry", encode(message), NOW) == message


def test_a_command_keeps_the_envelope_bytes_exactly() -> None:
    envelope = b'{"envelope":{"body":{"power_w":-2000}},"signature":"abc"}'
    command = SignedCommand(gateway_id=GW, sent_at=T, envelope=msgspec.Raw(envelope))
    decoded = decode_command(topic(GW, MessageKind.COMMAND), encode(command))
    assert bytes(decoded.envelope) == envelope


def test_a_command_on_another_gateways_topic_is_refused() -> None:
    command = SignedCommand(gateway_id="gw-0002", sent_at=T, envelope=msgspec.Raw(b"{}"))
    with pytest.raises(PayloadRejected) as info:
        decode_command(topic(GW, MessageKind.COMMAND), encode(command))
    assert info.value.reason is RejectReason.WRONG_GATEWAY


def _body(**changes: object) -> bytes:
    raw = msgspec.json.decode(encode(examples()[1]))
    raw.update(changes)
    return msgspec.json.encode(raw)


@pytest.mark.parametrize(
    ("name", "payload", "reason"),
    [
        ("topic", None, RejectReason.BAD_TOPIC),
        ("not json", b"{not json", RejectReason.NOT_JSON),
        ("not utf-8", b'{"type":"telemetry","v":1,"gateway_id":"\xff"}', RejectReason.NOT_JSON),
        ("missing field", b'{"type":"telemetry","v":1,"gateway_id":"gw-0001"}',
         RejectReason.SCHEMA),
        ("unknown field", _body(extra=1), RejectReason.SCHEMA),
        ("naive time", _body(sent_at="2026-08-01T08:59:55"), RejectReason.SCHEMA),
        ("seq zero", _body(seq=0), RejectReason.SCHEMA),
        ("unknown version", _body(v=2), RejectReason.SCHEMA),
        ("out of range float", _body(samples=[{"device_id": "b", "measured_at":
                                              "2026-08-01T08:59:55Z", "values": {"power_w": 1}}]
                                     ).replace(b'"power_w":1', b'"power_w":1e999'),
         RejectReason.SCHEMA),
        ("other kind", encode(examples()[3]), RejectReason.WRONG_KIND),
        ("other gateway", _body(gateway_id="gw-0002"), RejectReason.WRONG_GATEWAY),
        ("future", _body(sent_at="2026-08-01T09:06:00Z"), RejectReason.FUTURE_TIME),
        ("future sample", _body(samples=[{"device_id": "b", "measured_at":
                                          "2030-01-01T00:00:00Z", "values": {}}]),
         RejectReason.FUTURE_TIME),
        ("oversized", b" " * 300_000, RejectReason.OVERSIZED),
    ],
)
def test_bad_payloads_are_refused_with_their_reason(
    name: str, payload: bytes | None, reason: RejectReason
) -> None:
    decoder = UplinkDecoder()
    target = topic(GW, MessageKind.TELEMETRY)
    if payload is None:
        target, payload = "erab/v1/gw/gw-0001/telemetry/extra", _body()
    with pytest.raises(PayloadRejected) as info:
        decoder.decode(target, payload, NOW)
    assert info.value.reason is reason
    assert decoder.rejected == {reason: 1} and decoder.accepted == 0


def test_a_downlink_topic_is_not_an_uplink() -> None:
    with pytest.raises(PayloadRejected) as info:
        decode_uplink(topic(GW, MessageKind.COMMAND), _body(), NOW)
    assert info.value.reason is RejectReason.BAD_TOPIC


def test_counts_add_up_and_a_good_message_after_bad_ones_is_kept() -> None:
    decoder = UplinkDecoder()
    target = topic(GW, MessageKind.TELEMETRY)
    for payload in (b"x", b"[]", _body(gateway_id="gw-9")):
        with pytest.raises(PayloadRejected):
            decoder.decode(target, payload, NOW)
    assert decoder.decode(target, _body(), NOW) == examples()[1]
    assert sum(decoder.rejected.values()) == 3 and decoder.accepted == 1


# --- fuzzing: any bytes, any topic, and mutations of good messages -----------------------

def _decode_or_reason(target: str, payload: bytes) -> UplinkMessage | RejectReason:
    try:
        return decode_uplink(target, payload, NOW)
    except PayloadRejected as exc:
        return exc.reason


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(list(MessageKind)))
def test_fuzz_any_bytes_are_decoded_or_refused(payload: bytes, kind: MessageKind) -> None:
    result = _decode_or_reason(topic(GW, kind), payload)
    assert isinstance(result, RejectReason) or kind_of(result) is kind


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.binary(max_size=64))
def test_fuzz_any_topic_is_parsed_or_refused(target: str, payload: bytes) -> None:
    result = _decode_or_reason(target, payload)
    assert isinstance(result, RejectReason)  # a random topic with a random body never passes


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(examples()), st.data())
def test_fuzz_mutated_messages_are_decoded_checked_or_refused(
    message: UplinkMessage, data: st.DataObject
) -> None:
    raw = msgspec.json.decode(encode(message))
    field = data.draw(st.sampled_from(sorted(raw)))
    raw[field] = data.draw(json_values)
    result = _decode_or_reason(topic(GW, kind_of(message)), msgspec.json.encode(raw))
    if not isinstance(result, RejectReason):
        # Accepted only if it is still a valid message of that kind, for that gateway.
        assert kind_of(result) is kind_of(message) and result.gateway_id == GW
        assert decode_uplink(topic(GW, kind_of(message)), encode(result), NOW) == result


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=2**63 - 1), st.floats(-1e9, 1e9))
def test_fuzz_any_good_sequence_and_value_round_trip(seq: int, power_w: float) -> None:
    message = TelemetryBatch(gateway_id=GW, seq=seq, sent_at=T, samples=[
        Sample(device_id="d", measured_at=T, values={"power_w": power_w})])
    assert decode_uplink(topic(GW, MessageKind.TELEMETRY), encode(message), NOW) == message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=1024))
def test_fuzz_command_decoder_decodes_or_refuses(payload: bytes) -> None:
    try:
        command = decode_command(topic(GW, MessageKind.COMMAND), payload)
    except PayloadRejected:
        return
    assert command.gateway_id == GW
