"""Dongle emulator transcripts (sans-IO): what a client sees for each command and fault."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.meter import skstack as sk
from erab.meter.dongle import DongleCore, DongleFaults
from erab.meter.skstack import Dialect
from tests.meter.conftest import PASSWORD, RBID, make_meter

GET_E7 = bytes.fromhex("1081000105FF010288016201E700")  # Get 0xE7 from 0x028801


def core(dialect: Dialect = Dialect.WITH_SIDE, **kw: object) -> DongleCore:
    _, node = make_meter()
    return DongleCore(node, route_b_id=RBID, password=PASSWORD, dialect=dialect, **kw)  # type: ignore[arg-type]


def say(c: DongleCore, text: bytes, now: float = 0.0) -> bytes:
    return b"".join(o.data for o in c.receive(text, now))


def joined(c: DongleCore) -> DongleCore:
    for line in (
        sk.set_rbid(RBID),
        sk.set_password(PASSWORD),
        b"SKSREG S2 21\r\n",
        b"SKSREG S3 8888\r\n",
        sk.command("SKJOIN", c.meter_ip),
    ):
        say(c, line)
    assert c.state.joined
    return c


def test_commands_are_echoed_and_answered_ok() -> None:
    assert say(core(), b"SKRESET\r\n") == b"SKRESET\r\nOK\r\n"


def test_echo_can_be_turned_off_with_register_sfe() -> None:
    c = core()
    say(c, b"SKSREG SFE 1\r\n")
    assert say(c, b"SKVER\r\n") == b"EVER 1.2.10\r\nOK\r\n"


def test_cr_only_output_and_cr_terminated_input() -> None:
    assert say(core(line_ending=b"\r"), b"SKRESET\r") == b"SKRESET\rOK\r"


def test_unknown_command_is_er04() -> None:
    assert say(core(), b"SKFOO\r\n").endswith(b"FAIL ER04\r\n")


def test_wrong_argument_count_is_er05() -> None:
    assert say(core(), b"SKSETRBID\r\n").endswith(b"FAIL ER05\r\n")


def test_bad_argument_is_er06() -> None:
    assert say(core(), b"SKSETRBID tooshort\r\n").endswith(b"FAIL ER06\r\n")


def test_einfo_last_field_differs_by_dialect() -> None:
    assert b" FFFE\r\nOK" in say(core(Dialect.NO_SIDE), b"SKINFO\r\n")
    assert b" 8888 0\r\nOK" in say(core(Dialect.WITH_SIDE), b"SKSREG S3 8888\r\nSKINFO\r\n")


def test_rop_answer_ends_with_a_lone_cr() -> None:
    assert say(core(), b"ROPT\r").endswith(b"OK 01\r")


@pytest.mark.parametrize("dialect", list(Dialect))
def test_scan_with_the_paired_id_reports_the_meter(dialect: Dialect) -> None:
    c = core(dialect)
    say(c, sk.set_rbid(RBID))
    events = sk.SkstackParser().feed(say(c, sk.scan(6, dialect)))
    descs = [e for e in events if isinstance(e, sk.PanDescriptor)]
    assert [d.pair_id for d in descs] == [RBID[-8:]]
    assert [e.code for e in events if isinstance(e, sk.Event)] == [0x20, 0x22]


def test_scan_with_another_id_finds_nothing() -> None:
    c = core()
    say(c, sk.set_rbid("A" * 32))
    events = sk.SkstackParser().feed(say(c, sk.scan(6, Dialect.WITH_SIDE)))
    assert [e.code for e in events if isinstance(e, sk.Event)] == [0x22]


def test_scan_without_side_argument_is_refused_by_a_with_side_dongle() -> None:
    assert say(core(Dialect.WITH_SIDE), sk.scan(6, Dialect.NO_SIDE)).endswith(b"FAIL ER05\r\n")


def test_join_with_right_credentials_ends_with_event_25() -> None:
    c = core()
    for line in (
        sk.set_rbid(RBID),
        sk.set_password(PASSWORD),
        b"SKSREG S2 21\r\n",
        b"SKSREG S3 8888\r\n",
    ):
        say(c, line)
    events = sk.SkstackParser().feed(say(c, sk.command("SKJOIN", c.meter_ip)))
    codes = [e.code for e in events if isinstance(e, sk.Event)]
    assert codes[-1] == 0x25 and 0x21 in codes
    assert any(isinstance(e, sk.RxUdp) and e.lport == sk.PANA_PORT for e in events)


def test_join_with_wrong_password_ends_with_event_24() -> None:
    c = core()
    for line in (
        sk.set_rbid(RBID),
        sk.set_password("XXXXXXXXXXXX"),
        b"SKSREG S2 21\r\n",
        b"SKSREG S3 8888\r\n",
    ):
        say(c, line)
    events = sk.SkstackParser().feed(say(c, sk.command("SKJOIN", c.meter_ip)))
    assert [e.code for e in events if isinstance(e, sk.Event)][-1] == 0x24
    assert not c.state.joined


@pytest.mark.parametrize("dialect", list(Dialect))
def test_sendto_reaches_the_meter_and_its_answer_comes_back_as_erxudp(dialect: Dialect) -> None:
    c = joined(core(dialect))
    out = say(c, sk.sendto(1, c.meter_ip, GET_E7, dialect))
    events = sk.SkstackParser().feed(out)
    rx = [e for e in events if isinstance(e, sk.RxUdp)]
    assert rx and rx[0].data[10] == 0x72 and rx[0].data[-4:] == (1234).to_bytes(4, "big")
    assert sk.Event(0x21, c.meter_ip, 0 if dialect is Dialect.WITH_SIDE else None, 0) in events


def test_binary_mode_after_wopt_00() -> None:
    c = joined(core())
    say(c, b"WOPT 00\r\n")
    out = say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE))
    assert b"\x10\x81" in out  # the frame's raw EHD bytes, not hex text


def test_sendto_without_session_fails_er10() -> None:
    c = core()
    assert say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE)).endswith(b"FAIL ER10\r\n")


def test_skterm_ends_the_session_with_event_27() -> None:
    c = joined(core())
    out = say(c, b"SKTERM\r\n")
    assert b"EVENT 27" in out and not c.state.joined


def test_lost_replies_fault_drops_answers() -> None:
    c = joined(core(faults=DongleFaults(lost_replies=1)))
    first = say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE))
    second = say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE))
    assert b"ERXUDP" not in first and b"ERXUDP" in second


def test_delay_fault_schedules_the_answer_later() -> None:
    c = joined(core(faults=DongleFaults(reply_delay_s=2.5)))
    outs = c.receive(sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE), 10.0)
    [rx] = [o for o in outs if o.data.startswith(b"ERXUDP")]
    assert rx.at >= 12.5


def test_session_expiry_fault_emits_29_then_24() -> None:
    c = joined(core(faults=DongleFaults(session_expiry_s=5)))
    assert c.next_deadline() == 5
    out = b"".join(o.data for o in c.tick(5.0))
    assert out.index(b"EVENT 29") < out.index(b"EVENT 24")
    assert not c.state.joined


def test_transmit_limit_fault_emits_32_refuses_then_33() -> None:
    c = joined(core(faults=DongleFaults(transmit_limit_after=1, transmit_limit_s=3)))
    assert b"EVENT 32" in say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE), 1.0)
    assert say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE), 2.0).endswith(
        b"FAIL ER10\r\n"
    )
    assert b"EVENT 33" in b"".join(o.data for o in c.tick(4.0))


def test_silent_meter_fault_gives_no_answer_but_the_send_succeeds() -> None:
    c = joined(core(faults=DongleFaults(meter_silent=True)))
    out = say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE))
    assert b"OK" in out and b"ERXUDP" not in out


def test_fault_words_parse() -> None:
    f = DongleFaults.parse(
        ["lost-replies=2", "delay=1.5", "transmit-limit=3:10", "silent-meter", "session-expiry=60"]
    )
    assert (
        f.lost_replies,
        f.reply_delay_s,
        f.transmit_limit_after,
        f.transmit_limit_s,
        f.meter_silent,
        f.session_expiry_s,
    ) == (2, 1.5, 3, 10.0, True, 60.0)


def test_unknown_fault_word_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="lost-replies=N"):
        DongleFaults.parse(["explode"])


def test_session_lifetime_fault_renews_with_29_then_25() -> None:
    c = joined(core(faults=DongleFaults(session_lifetime_s=5)))
    out = b"".join(o.data for o in c.tick(5.0))
    assert out.index(b"EVENT 29") < out.index(b"EVENT 25")
    assert c.state.joined and c.next_deadline() == 10


def test_version_commands_answer_ever_and_eappver() -> None:
    c = core()
    assert say(c, b"SKVER\r\n") == b"SKVER\r\nEVER 1.2.10\r\nOK\r\n"
    assert say(c, b"SKAPPVER\r\n").startswith(b"SKAPPVER\r\nEAPPVER ")


def test_wopt_switches_the_payload_mode_and_its_answer_ends_with_a_lone_cr() -> None:
    c = core()
    assert say(c, b"WOPT 00\r").endswith(b"OK\r")
    assert not c.hex_payload
    assert say(c, b"ROPT\r").endswith(b"OK 00\r")
    assert say(c, b"WOPT 02\r").endswith(b"FAIL ER06\r\n")


def test_non_ascii_command_line_is_er09() -> None:
    assert say(core(), b"SK\xffINFO\r\n").endswith(b"FAIL ER09\r\n")


def test_overlong_unterminated_input_is_er09() -> None:
    assert say(core(), b"X" * 600).endswith(b"FAIL ER09\r\n")


def test_channel_and_pan_registers_are_set_and_read_back() -> None:
    c = core()
    say(c, b"SKSREG S2 21\r\nSKSREG S3 8888\r\n")
    assert say(c, b"SKSREG S2\r\n") == b"SKSREG S2\r\nESREG 21\r\nOK\r\n"
    assert say(c, b"SKSREG S3\r\n") == b"SKSREG S3\r\nESREG 8888\r\nOK\r\n"


def test_channel_outside_the_920_mhz_band_is_er06() -> None:
    assert say(core(), b"SKSREG S2 10\r\n").endswith(b"FAIL ER06\r\n")


def test_skll64_answers_the_link_local_address_of_a_mac() -> None:
    out = say(core(), b"SKLL64 C0F945004D3C2A11\r\n")
    assert out == b"SKLL64 C0F945004D3C2A11\r\nFE80:0000:0000:0000:C2F9:4500:4D3C:2A11\r\n"


def test_password_length_must_match_its_declared_length() -> None:
    assert say(core(), b"SKSETPWD B 0123456789AB\r\n").endswith(b"FAIL ER06\r\n")


def test_skterm_without_a_session_is_er10() -> None:
    assert say(core(), b"SKTERM\r\n").endswith(b"FAIL ER10\r\n")


def test_skterm_with_a_silent_meter_ends_with_event_28() -> None:
    c = joined(core(faults=DongleFaults(meter_silent=True)))
    events = sk.SkstackParser().feed(say(c, b"SKTERM\r\n"))
    assert [e.code for e in events if isinstance(e, sk.Event)] == [0x28]
    assert not c.state.joined


def test_joining_twice_is_er10() -> None:
    c = joined(core())
    assert say(c, sk.command("SKJOIN", c.meter_ip)).endswith(b"FAIL ER10\r\n")


def test_rejecting_meter_fault_refuses_the_right_password_with_event_24() -> None:
    c = core(faults=DongleFaults(wrong_credentials=True))
    for line in (
        sk.set_rbid(RBID),
        sk.set_password(PASSWORD),
        b"SKSREG S2 21\r\nSKSREG S3 8888\r\n",
    ):
        say(c, line)
    events = sk.SkstackParser().feed(say(c, sk.command("SKJOIN", c.meter_ip)))
    assert [e.code for e in events if isinstance(e, sk.Event)][-1] == 0x24


@pytest.mark.parametrize("dialect", list(Dialect))
def test_session_end_fault_emits_26_then_27_in_the_dialect(dialect: Dialect) -> None:
    c = joined(core(dialect, faults=DongleFaults(session_end_s=5)))
    parser = sk.SkstackParser()
    events = parser.feed(b"".join(o.data for o in c.tick(5.0)))
    assert [(e.code, e.side) for e in events if isinstance(e, sk.Event)] == (
        [(0x26, 0), (0x27, 0)] if dialect is Dialect.WITH_SIDE else [(0x26, None), (0x27, None)]
    )
    # an EVENT without a parameter shows the dialect only where it carries the side
    assert parser.dialect is (dialect if dialect is Dialect.WITH_SIDE else None)
    assert not c.state.joined


def test_lost_requests_fault_never_reaches_the_meter() -> None:
    c = joined(core(faults=DongleFaults(lost_requests=1)))
    first = say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE))
    second = say(c, sk.sendto(1, c.meter_ip, GET_E7, Dialect.WITH_SIDE))
    assert b"OK" in first and b"ERXUDP" not in first and b"ERXUDP" in second
    assert len(c.frames_received) == 1


def test_every_fault_word_parses() -> None:
    f = DongleFaults.parse(
        [
            "lost-requests=1",
            "session-lifetime=30",
            "session-end=20",
            "wrong-credentials",
            "transmit-limit=5",
        ]
    )
    assert (f.lost_requests, f.session_lifetime_s, f.session_end_s) == (1, 30.0, 20.0)
    assert (f.wrong_credentials, f.transmit_limit_after, f.transmit_limit_s) == (True, 5, 1.0)


@pytest.mark.parametrize("word", ["delay=-1", "lost-replies=-2", "wrong-credentials=yes"])
def test_negative_or_stray_fault_values_are_refused(word: str) -> None:
    with pytest.raises(ValueError, match="malformed fault"):
        DongleFaults.parse([word])


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=300), dialect=st.sampled_from(list(Dialect)))
def test_dongle_answers_any_input_without_raising(data: bytes, dialect: Dialect) -> None:
    c = joined(core(dialect))
    outputs = c.receive(data + b"\r\n", 1.0)
    assert all(isinstance(o.data, bytes) for o in outputs)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(sk.COMMAND_NAMES)),
    tail=st.text(alphabet="0123456789ABCDEFZ:- ", max_size=80),
    dialect=st.sampled_from(list(Dialect)),
)
def test_dongle_answers_any_arguments_of_any_command_without_raising(
    name: str, tail: str, dialect: Dialect
) -> None:
    c = joined(core(dialect))
    out = b"".join(o.data for o in c.receive(f"{name} {tail}\r\n".encode(), 1.0))
    assert out.startswith(name.encode())  # echoed, then answered
