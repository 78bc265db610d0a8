"""Signed command envelopes: every rejection path, its reason, key rotation, persistence."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erab.clock import SimulatedClock
from erab.security import (
    AuditKind,
    AuditLog,
    EnvelopeRejected,
    EnvelopeSigner,
    EnvelopeVerifier,
    FileSequenceCounter,
    FileVerifierStateStore,
    MemoryVerifierStateStore,
    RejectReason,
    SqliteAuditStore,
)
from erab.security._common import b64url, b64url_decode, canonical_json

BODY = {"action": "set_power", "resource": "battery-1", "power_w": -1500}


@pytest.fixture
def ra_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(ra_key: Ed25519PrivateKey, fixed_clock: SimulatedClock) -> EnvelopeSigner:
    return EnvelopeSigner(ra_key, fixed_clock)


@pytest.fixture
def verifier(ra_key: Ed25519PrivateKey, fixed_clock: SimulatedClock) -> EnvelopeVerifier:
    return EnvelopeVerifier(
        "gw-1", fixed_clock, MemoryVerifierStateStore(), trusted_key=ra_key.public_key()
    )


def rejection(verifier: EnvelopeVerifier, wire: bytes) -> RejectReason:
    with pytest.raises(EnvelopeRejected) as err:
        verifier.verify(wire)
    return err.value.reason


def test_good_command_is_accepted_with_its_body(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    envelope = verifier.verify(signer.sign("gw-1", BODY))
    assert envelope.body == BODY
    assert envelope.gateway_id == "gw-1"
    assert envelope.sequence == 1


def test_wire_form_is_canonical_json(signer: EnvelopeSigner) -> None:
    wire = signer.sign("gw-1", BODY)
    assert wire == canonical_json(json.loads(wire))


def test_tampered_body_is_rejected_as_bad_signature(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    raw = json.loads(signer.sign("gw-1", BODY))
    raw["envelope"]["body"]["power_w"] = -9000
    assert rejection(verifier, canonical_json(raw)) is RejectReason.BAD_SIGNATURE


def test_flipped_signature_bit_is_rejected_as_bad_signature(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    raw = json.loads(signer.sign("gw-1", BODY))
    sig = bytearray(b64url_decode(raw["signature"]))
    sig[10] ^= 0x01
    raw["signature"] = b64url(bytes(sig))
    assert rejection(verifier, canonical_json(raw)) is RejectReason.BAD_SIGNATURE


def test_command_signed_by_an_untrusted_key_is_rejected(
    fixed_clock: SimulatedClock, verifier: EnvelopeVerifier
) -> None:
    stranger = EnvelopeSigner(Ed25519PrivateKey.generate(), fixed_clock)
    assert rejection(verifier, stranger.sign("gw-1", BODY)) is RejectReason.UNKNOWN_KEY


def test_untrusted_key_claiming_the_trusted_key_id_is_a_bad_signature(
    ra_key: Ed25519PrivateKey, fixed_clock: SimulatedClock, verifier: EnvelopeVerifier
) -> None:
    forger = EnvelopeSigner(Ed25519PrivateKey.generate(), fixed_clock)
    forger.key_id = EnvelopeSigner(ra_key, fixed_clock).key_id
    assert rejection(verifier, forger.sign("gw-1", BODY)) is RejectReason.BAD_SIGNATURE


def test_command_for_another_gateway_is_rejected(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    assert rejection(verifier, signer.sign("gw-2", BODY)) is RejectReason.WRONG_GATEWAY


def test_replayed_command_is_rejected(signer: EnvelopeSigner, verifier: EnvelopeVerifier) -> None:
    wire = signer.sign("gw-1", BODY)
    verifier.verify(wire)
    assert rejection(verifier, wire) is RejectReason.REPLAYED


def test_older_sequence_is_rejected(signer: EnvelopeSigner, verifier: EnvelopeVerifier) -> None:
    first = signer.sign("gw-1", BODY)
    second = signer.sign("gw-1", BODY)
    verifier.verify(second)
    assert rejection(verifier, first) is RejectReason.OLD_SEQUENCE


def test_a_gap_in_sequence_is_accepted(signer: EnvelopeSigner, verifier: EnvelopeVerifier) -> None:
    signer.sign("gw-1", BODY)  # lost on the way
    assert verifier.verify(signer.sign("gw-1", BODY)).sequence == 2


def test_expired_command_is_rejected(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier, fixed_clock: SimulatedClock
) -> None:
    wire = signer.sign("gw-1", BODY, valid_for=timedelta(minutes=5))
    fixed_clock.advance(5 * 60 + 31)  # past expiry plus the 30 s skew allowance
    assert rejection(verifier, wire) is RejectReason.EXPIRED


def test_command_just_past_expiry_is_accepted_within_skew(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier, fixed_clock: SimulatedClock
) -> None:
    wire = signer.sign("gw-1", BODY, valid_for=timedelta(minutes=5))
    fixed_clock.advance(5 * 60 + 29)
    assert verifier.verify(wire).sequence == 1


def test_command_from_the_future_is_not_yet_valid(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier, fixed_clock: SimulatedClock
) -> None:
    wire = signer.sign("gw-1", BODY, issued_at=fixed_clock.now() + timedelta(seconds=31))
    assert rejection(verifier, wire) is RejectReason.NOT_YET_VALID


def test_small_clock_skew_is_allowed(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier, fixed_clock: SimulatedClock
) -> None:
    wire = signer.sign("gw-1", BODY, issued_at=fixed_clock.now() + timedelta(seconds=29))
    assert verifier.verify(wire).sequence == 1


def test_not_yet_valid_rejection_states_the_skew_allowance(
    ra_key: Ed25519PrivateKey, signer: EnvelopeSigner, fixed_clock: SimulatedClock
) -> None:
    strict = EnvelopeVerifier(
        "gw-1",
        fixed_clock,
        MemoryVerifierStateStore(),
        trusted_key=ra_key.public_key(),
        max_skew=timedelta(seconds=5),
    )
    early = signer.sign("gw-1", BODY, issued_at=fixed_clock.now() + timedelta(seconds=6))
    with pytest.raises(EnvelopeRejected, match=r"^not_yet_valid: .*the 5 s skew allowance"):
        strict.verify(early)
    within = signer.sign("gw-1", BODY, issued_at=fixed_clock.now() + timedelta(seconds=4))
    assert strict.verify(within).sequence == 2


def test_expired_rejection_states_the_expiry_and_skew_allowance(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier, fixed_clock: SimulatedClock
) -> None:
    wire = signer.sign("gw-1", BODY, valid_for=timedelta(minutes=5))
    fixed_clock.advance(5 * 60 + 30)  # exactly expiry plus the allowance: no longer valid
    with pytest.raises(
        EnvelopeRejected,
        match=r"^expired: expired at 2026-08-01T00:05:00\.000000Z, .*skew allowance 30 s",
    ):
        verifier.verify(wire)


def test_rejection_does_not_advance_the_sequence(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    good = signer.sign("gw-1", BODY)
    raw = json.loads(signer.sign("gw-1", BODY))
    raw["envelope"]["body"]["power_w"] = 1
    rejection(verifier, canonical_json(raw))
    assert verifier.verify(good).sequence == 1


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"not json",
        b"[]",
        b'{"envelope": {}, "signature": ""}',
        b'{"envelope": {}, "signature": "", "extra": 1}',
    ],
)
def test_malformed_input_is_rejected_as_malformed(verifier: EnvelopeVerifier, wire: bytes) -> None:
    assert rejection(verifier, wire) is RejectReason.MALFORMED


def test_rejection_message_names_the_check(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    with pytest.raises(EnvelopeRejected, match=r"^wrong_gateway: command is for gateway 'gw-9'"):
        verifier.verify(signer.sign("gw-9", BODY))


def test_verifier_state_survives_a_restart(
    ra_key: Ed25519PrivateKey, signer: EnvelopeSigner, fixed_clock: SimulatedClock, tmp_path: Path
) -> None:
    store = FileVerifierStateStore(tmp_path / "verifier.json")
    first = EnvelopeVerifier("gw-1", fixed_clock, store, trusted_key=ra_key.public_key())
    wire = signer.sign("gw-1", BODY)
    first.verify(wire)
    restarted = EnvelopeVerifier(
        "gw-1", fixed_clock, FileVerifierStateStore(tmp_path / "verifier.json")
    )
    assert rejection(restarted, wire) is RejectReason.REPLAYED


def test_signer_sequence_survives_a_restart(
    ra_key: Ed25519PrivateKey, fixed_clock: SimulatedClock, tmp_path: Path
) -> None:
    path = tmp_path / "sequences.json"
    EnvelopeSigner(ra_key, fixed_clock, FileSequenceCounter(path)).sign("gw-1", BODY)
    again = EnvelopeSigner(ra_key, fixed_clock, FileSequenceCounter(path)).sign("gw-1", BODY)
    assert json.loads(again)["envelope"]["sequence"] == 2


def test_verifier_without_state_or_key_explains_what_is_missing(
    fixed_clock: SimulatedClock,
) -> None:
    with pytest.raises(ValueError, match="command public key"):
        EnvelopeVerifier("gw-1", fixed_clock, MemoryVerifierStateStore())


# --- key rotation ---------------------------------------------------------------------------


def test_next_key_is_refused_before_it_is_announced(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier, fixed_clock: SimulatedClock
) -> None:
    next_key = Ed25519PrivateKey.generate()
    signer.switch_to(next_key)
    assert rejection(verifier, signer.sign("gw-1", BODY)) is RejectReason.UNKNOWN_KEY


def test_announced_next_key_is_accepted_without_downtime(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    next_key = Ed25519PrivateKey.generate()
    verifier.verify(signer.announce_next_key("gw-1", next_key.public_key()))
    # Both keys work until the next key is used...
    verifier.verify(signer.sign("gw-1", BODY))
    signer.switch_to(next_key)
    assert verifier.verify(signer.sign("gw-1", BODY)).key_id == signer.key_id


def test_old_key_is_retired_once_the_next_key_is_used(
    ra_key: Ed25519PrivateKey,
    signer: EnvelopeSigner,
    verifier: EnvelopeVerifier,
    fixed_clock: SimulatedClock,
) -> None:
    next_key = Ed25519PrivateKey.generate()
    verifier.verify(signer.announce_next_key("gw-1", next_key.public_key()))
    old_signer = EnvelopeSigner(ra_key, fixed_clock, signer.sequences)
    signer.switch_to(next_key)
    verifier.verify(signer.sign("gw-1", BODY))
    assert rejection(verifier, old_signer.sign("gw-1", BODY)) is RejectReason.UNKNOWN_KEY


def test_announcement_by_an_untrusted_key_is_ignored(
    fixed_clock: SimulatedClock, verifier: EnvelopeVerifier
) -> None:
    attacker = Ed25519PrivateKey.generate()
    rogue = EnvelopeSigner(attacker, fixed_clock)
    assert rejection(verifier, rogue.announce_next_key("gw-1", attacker.public_key())) is (
        RejectReason.UNKNOWN_KEY
    )
    assert verifier.state.next_key is None


def test_announced_key_survives_a_restart(
    ra_key: Ed25519PrivateKey, signer: EnvelopeSigner, fixed_clock: SimulatedClock, tmp_path: Path
) -> None:
    path = tmp_path / "verifier.json"
    first = EnvelopeVerifier(
        "gw-1", fixed_clock, FileVerifierStateStore(path), trusted_key=ra_key.public_key()
    )
    next_key = Ed25519PrivateKey.generate()
    first.verify(signer.announce_next_key("gw-1", next_key.public_key()))
    restarted = EnvelopeVerifier("gw-1", fixed_clock, FileVerifierStateStore(path))
    signer.switch_to(next_key)
    assert restarted.verify(signer.sign("gw-1", BODY)).sequence == 2


# --- fuzzing --------------------------------------------------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes_are_rejected_cleanly(verifier: EnvelopeVerifier, data: bytes) -> None:
    with pytest.raises(EnvelopeRejected) as err:
        verifier.verify(data)
    assert err.value.reason in {RejectReason.MALFORMED, RejectReason.UNKNOWN_KEY}


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    field=st.sampled_from(
        ["v", "gateway_id", "sequence", "issued_at", "expires_at", "key_id", "body"]
    ),
    value=_json_values,
)
def test_any_changed_field_is_never_accepted(
    ra_key: Ed25519PrivateKey, fixed_clock: SimulatedClock, field: str, value: object
) -> None:
    signer = EnvelopeSigner(ra_key, fixed_clock)
    verifier = EnvelopeVerifier(
        "gw-1", fixed_clock, MemoryVerifierStateStore(), trusted_key=ra_key.public_key()
    )
    raw = json.loads(signer.sign("gw-1", BODY))
    if raw["envelope"][field] == value:
        return
    raw["envelope"][field] = value
    with pytest.raises(EnvelopeRejected):
        verifier.verify(json.dumps(raw).encode())


def test_duplicate_json_keys_are_rejected_as_malformed(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    wire = signer.sign("gw-1", BODY)
    # Smuggle a second power value in front of the signed one.
    doubled = wire.replace(b'"power_w":-1500', b'"power_w":9999,"power_w":-1500')
    assert doubled != wire
    assert rejection(verifier, doubled) is RejectReason.MALFORMED


# --- audit ----------------------------------------------------------------------------------


@pytest.fixture
def audit(tmp_path: Path, fixed_clock: SimulatedClock) -> AuditLog:
    return AuditLog(SqliteAuditStore(tmp_path / "audit.sqlite"), fixed_clock)


def test_signed_commands_are_audited_with_their_body(
    ra_key: Ed25519PrivateKey, fixed_clock: SimulatedClock, audit: AuditLog
) -> None:
    signer = EnvelopeSigner(ra_key, fixed_clock, audit=audit, actor="ra-dispatch")
    signer.sign("gw-1", BODY)
    record = audit.store.head()
    assert record is not None and record.kind is AuditKind.COMMAND
    assert (record.actor, record.subject) == ("ra-dispatch", "gw-1")
    assert record.details["action"] == "signed"
    assert record.details["sequence"] == 1 and record.details["body"] == BODY


def test_verifier_audits_acceptance_and_each_rejection_with_its_reason(
    ra_key: Ed25519PrivateKey, signer: EnvelopeSigner, fixed_clock: SimulatedClock, audit: AuditLog
) -> None:
    verifier = EnvelopeVerifier(
        "gw-1",
        fixed_clock,
        MemoryVerifierStateStore(),
        trusted_key=ra_key.public_key(),
        audit=audit,
    )
    wire = signer.sign("gw-1", BODY)
    verifier.verify(wire)
    for bad in (wire, signer.sign("gw-2", BODY), b"not json"):
        with pytest.raises(EnvelopeRejected):
            verifier.verify(bad)
    seen = [(r.kind, r.details["action"], r.details.get("reason")) for r in audit.store.records()]
    assert seen == [
        (AuditKind.COMMAND, "accepted", None),
        (AuditKind.SECURITY_EVENT, "command_rejected", "replayed"),
        (AuditKind.SECURITY_EVENT, "command_rejected", "wrong_gateway"),
        (AuditKind.SECURITY_EVENT, "command_rejected", "malformed"),
    ]
    assert audit.verify().intact


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deeply_nested_input_is_malformed_not_a_crash(
    verifier: EnvelopeVerifier, opener: bytes
) -> None:
    # 8,000 levels would overflow the JSON parser's recursion (RecursionError).
    with pytest.raises(EnvelopeRejected, match=r"^malformed: nested too deep") as err:
        verifier.verify(opener * 8000)
    assert err.value.reason is RejectReason.MALFORMED
    assert verifier.state.last_sequence == 0


def test_a_signed_body_nested_a_few_levels_is_accepted(
    signer: EnvelopeSigner, verifier: EnvelopeVerifier
) -> None:
    body: dict[str, object] = {"leaf": [1, 2, {"x": "[[[[{{{{"}]}
    for _ in range(20):
        body = {"nested": body}
    assert verifier.verify(signer.sign("gw-1", body)).body == body
