"""SKSTACK-IP codec: transcripts of what dongles print, both dialects, both payload modes."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.meter import skstack as sk
from erab.meter.skstack import Dialect

METER_IP = "FE80:0000:0000:0000:021D:1290:1234:5678"
OWN_IP = "FE80:0000:0000:0000:021D:1290:0003:C890"
FRAME = bytes.fromhex("1081000102880105FF017201E704000004D2")


def parse(data: bytes, **kw: object) -> list[sk.DongleEvent]:
    return sk.SkstackParser(**kw).feed(data)  # type: ignore[arg-type]


def test_ok_and_ok_with_detail() -> None:
    assert parse(b"OK\r\nOK 01\r") == [sk.Ok(""), sk.Ok("01")]


@pytest.mark.parametrize("code", [4, 5, 6, 9, 10])
def test_fail_codes_carry_their_meaning(code: int) -> None:
    [event] = parse(f"FAIL ER{code:02d}\r\n".encode())
    assert isinstance(event, sk.Fail) and event.code == code
    assert event.meaning == sk.ERROR_MEANINGS[code]


def test_event_without_side_is_the_no_side_dialect() -> None:
    parser = sk.SkstackParser()
    [event] = parser.feed(f"EVENT 21 {METER_IP} 00\r\n".encode())
    assert event == sk.Event(0x21, METER_IP, None, 0)
    assert parser.dialect is Dialect.NO_SIDE


def test_event_with_side_is_the_with_side_dialect() -> None:
    parser = sk.SkstackParser()
    [event] = parser.feed(f"EVENT 21 {METER_IP} 0 02\r\n".encode())
    assert event == sk.Event(0x21, METER_IP, 0, 2)
    assert parser.dialect is Dialect.WITH_SIDE


@pytest.mark.parametrize(
    "code", [0x01, 0x02, 0x05, 0x1F, 0x20, 0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x32, 0x33]
)
def test_session_and_limit_events_parse_with_their_meaning(code: int) -> None:
    [event] = parse(f"EVENT {code:02X} {METER_IP}\r\n".encode())
    assert isinstance(event, sk.Event) and event.code == code
    assert event.meaning == sk.EVENT_MEANINGS[code]


@pytest.mark.parametrize("dialect", list(Dialect))
def test_epandesc_block_becomes_one_pan_descriptor(dialect: Dialect) -> None:
    desc = sk.PanDescriptor(
        0x21,
        0x09,
        0x8888,
        "C0F945004D3C2A11",
        0xB4,
        "CCDDEEFF",
        0 if dialect is Dialect.WITH_SIDE else None,
    )
    text = sk.iter_lines(
        [
            sk.format_event(0x20, METER_IP, dialect),
            *sk.format_pandesc(desc, dialect),
            sk.format_event(0x22, OWN_IP, dialect),
        ],
        b"\r\n",
    )
    events = parse(text)
    assert events[1] == desc
    assert [type(e) for e in events] == [sk.Event, sk.PanDescriptor, sk.Event]


def test_einfo_tells_the_dialect() -> None:
    a1 = sk.SkstackParser()
    a1.feed(f"EINFO {OWN_IP} 001D129012345678 21 8888 FFFE\r\n".encode())
    c2 = sk.SkstackParser()
    c2.feed(f"EINFO {OWN_IP} 001D129012345678 21 8888 0\r\n".encode())
    assert (a1.dialect, c2.dialect) == (Dialect.NO_SIDE, Dialect.WITH_SIDE)


def test_skll64_answer_is_an_address() -> None:
    assert parse(f"{METER_IP}\r\n".encode()) == [sk.Address(METER_IP)]


def test_echo_of_a_command_is_recognised() -> None:
    assert parse(b"SKINFO\r\n") == [sk.Echo("SKINFO")]


@pytest.mark.parametrize("dialect", list(Dialect))
@pytest.mark.parametrize("hex_payload", [True, False])
def test_erxudp_payload_round_trips(dialect: Dialect, hex_payload: bool) -> None:
    side = 0 if dialect is Dialect.WITH_SIDE else None
    lqi = 0xB4 if dialect is Dialect.WITH_SIDE else None
    rx = sk.RxUdp(METER_IP, OWN_IP, 0x0E1A, 0x0E1A, "C0F945004D3C2A11", 1, FRAME, lqi, side)
    [event] = parse(sk.format_erxudp(rx, dialect, hex_payload=hex_payload) + b"\r\n")
    assert event == rx


def test_binary_erxudp_payload_may_contain_cr_and_lf() -> None:
    payload = b"\x10\x81\r\n\x00\r\r\n\n\x20OK\r\n"
    rx = sk.RxUdp(METER_IP, OWN_IP, 0x0E1A, 0x0E1A, "C0F945004D3C2A11", 1, payload)
    wire = sk.format_erxudp(rx, Dialect.NO_SIDE, hex_payload=False) + b"\r\nOK\r\n"
    assert parse(wire) == [rx, sk.Ok("")]


def test_output_split_byte_by_byte_gives_the_same_events() -> None:
    rx = sk.RxUdp(METER_IP, OWN_IP, 0x0E1A, 0x0E1A, "C0F945004D3C2A11", 1, b"\r\n" + FRAME)
    wire = (
        f"EVENT 21 {METER_IP} 00\r\nOK\r\n".encode()
        + sk.format_erxudp(rx, Dialect.NO_SIDE, hex_payload=False)
        + b"\r\n"
    )
    parser = sk.SkstackParser(hex_payload=False)
    events = [e for i in range(len(wire)) for e in parser.feed(wire[i : i + 1])]
    assert events == [sk.Event(0x21, METER_IP, None, 0), sk.Ok(""), rx]


def test_cr_only_line_endings_are_lines() -> None:
    assert parse(b"OK\rFAIL ER06\rEVER 1.2.10\r") == [
        sk.Ok(""),
        sk.Fail(6),
        sk.Version("EVER", "1.2.10"),
    ]


def test_malformed_lines_are_reported_and_parsing_continues() -> None:
    events = parse(b"EVENT ZZ\r\nFAIL nope\r\nERXUDP 1 2\r\nOK\r\n")
    kinds = [type(e) for e in events]
    assert kinds == [sk.MalformedLine, sk.MalformedLine, sk.MalformedLine, sk.Ok]
    assert "EVENT" in events[0].reason  # type: ignore[union-attr]


def test_erxudp_with_wrong_declared_length_is_malformed() -> None:
    wire = f"ERXUDP {METER_IP} {OWN_IP} 0E1A 0E1A C0F945004D3C2A11 1 0010 ABCD\r\nOK\r\n"
    events = parse(wire.encode(), hex_payload=True)
    assert isinstance(events[0], sk.MalformedLine) and events[1] == sk.Ok("")


def test_set_password_sends_its_length_in_hex() -> None:
    assert sk.set_password("0123456789AB") == b"SKSETPWD C 0123456789AB\r\n"


def test_route_b_id_must_be_32_characters() -> None:
    with pytest.raises(sk.SkstackError, match="32"):
        sk.set_rbid("short")


def test_scan_has_a_side_argument_only_in_the_with_side_dialect() -> None:
    assert sk.scan(6, Dialect.NO_SIDE) == b"SKSCAN 2 FFFFFFFF 6\r\n"
    assert sk.scan(6, Dialect.WITH_SIDE) == b"SKSCAN 2 FFFFFFFF 6 0\r\n"


def test_sendto_header_then_binary_payload() -> None:
    a1 = sk.sendto(1, METER_IP, b"\r\n", Dialect.NO_SIDE)
    c2 = sk.sendto(1, METER_IP, b"\r\n", Dialect.WITH_SIDE)
    assert a1 == f"SKSENDTO 1 {METER_IP} 0E1A 1 0002 ".encode() + b"\r\n"
    assert c2 == f"SKSENDTO 1 {METER_IP} 0E1A 1 0 0002 ".encode() + b"\r\n"


def test_sendto_refuses_short_ipv6_form() -> None:
    with pytest.raises(sk.SkstackError, match="8 groups"):
        sk.sendto(1, "fe80::1", b"x", Dialect.NO_SIDE)


def test_link_local_address_inverts_the_universal_local_bit() -> None:
    assert sk.mac_to_link_local("001D129012345678") == "FE80:0000:0000:0000:021D:1290:1234:5678"


@pytest.mark.parametrize("dialect", list(Dialect))
def test_dongle_reads_sendto_payload_by_its_length(dialect: Dialect) -> None:
    payload = b"\r\n\r" + FRAME
    parser = sk.CommandParser(dialect)
    cmds = parser.feed(sk.sendto(1, METER_IP, payload, dialect) + b"SKINFO\r")
    assert cmds[0].data == payload  # type: ignore[union-attr]
    assert cmds[1] == sk.Command("SKINFO", (), line="SKINFO")


def test_dongle_answers_sendto_with_missing_arguments_with_er05() -> None:
    [err] = sk.CommandParser(Dialect.WITH_SIDE).feed(f"SKSENDTO 1 {METER_IP} 0E1A\r\n".encode())
    assert isinstance(err, sk.CommandError) and err.code == 5


def test_dialect_names_accept_module_names() -> None:
    assert sk.Dialect.parse("BP35A1") is Dialect.NO_SIDE
    with pytest.raises(ValueError, match="no-side"):
        sk.Dialect.parse("bogus")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_parser_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    parser = sk.SkstackParser()
    events = parser.feed(data + b"\r\n")
    assert all(not isinstance(e, Exception) for e in events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_command_parser_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    for dialect in Dialect:
        sk.CommandParser(dialect).feed(data + b"\r\n")


@settings(max_examples=250, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=200),
    dialect=st.sampled_from(list(Dialect)),
    hex_payload=st.booleans(),
    cut=st.integers(min_value=1, max_value=50),
    told=st.booleans(),
)
def test_any_erxudp_payload_survives_any_chunking(
    payload: bytes, dialect: Dialect, hex_payload: bool, cut: int, told: bool
) -> None:
    """Told the payload form (ROPT) or not (older firmware: the form is told by its shape)."""
    with_side = dialect is Dialect.WITH_SIDE
    rx = sk.RxUdp(
        METER_IP,
        OWN_IP,
        0x0E1A,
        0x0E1A,
        "C0F945004D3C2A11",
        1,
        payload,
        0x80 if with_side else None,
        0 if with_side else None,
    )
    wire = sk.format_erxudp(rx, dialect, hex_payload=hex_payload) + b"\r\nOK\r\n"
    parser = sk.SkstackParser(hex_payload=hex_payload if told else None)
    events = [e for i in range(0, len(wire), cut) for e in parser.feed(wire[i : i + cut])]
    assert events == [rx, sk.Ok("")]


def test_scan_time_doubles_with_each_step_of_the_duration() -> None:
    # SKSCAN: each of the 28 channels is listened to for 0.01 s x (2^duration + 1)
    assert sk.scan_time_s(6) == pytest.approx(18.2)
    assert sk.scan_time_s(8) == pytest.approx(71.96)


def test_incomplete_pan_description_is_malformed_and_parsing_continues() -> None:
    wire = b"EPANDESC\r\n  Channel:21\r\n  Pan ID:8888\r\n  PairID:CCDDEEFF\r\nOK\r\n"
    events = parse(wire)
    assert isinstance(events[0], sk.MalformedLine) and "PAN description" in events[0].reason
    assert events[1:] == [sk.Ok("")]


@pytest.mark.parametrize("code", [0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x32, 0x33])
def test_with_side_session_events_carry_the_side(code: int) -> None:
    parser = sk.SkstackParser()
    [event] = parser.feed(f"EVENT {code:02X} {METER_IP} 0\r\n".encode())
    assert event == sk.Event(code, METER_IP, 0, None)
    assert parser.dialect is Dialect.WITH_SIDE


def test_hex_mode_erxudp_payload_with_a_line_break_inside_is_malformed() -> None:
    wire = f"ERXUDP {METER_IP} {OWN_IP} 0E1A 0E1A C0F945004D3C2A11 1 0004 10\r\n81\r\nOK\r\n"
    events = parse(wire.encode(), hex_payload=True)
    assert isinstance(events[0], sk.MalformedLine)
    assert events[-1] == sk.Ok("")


# ------------------------------------------------------------------ hostile dongle output
GOOD_RX = sk.RxUdp(METER_IP, OWN_IP, 0x0E1A, 0x0E1A, "C0F945004D3C2A11", 1, FRAME)
GOOD_LINE = sk.format_erxudp(GOOD_RX, Dialect.NO_SIDE, hex_payload=True) + b"\r\n"


def test_erxudp_declaring_more_than_a_route_b_datagram_is_malformed_not_waited_for() -> None:
    # a binary ERXUDP whose length field was corrupted to FFFF must not swallow what follows
    corrupt = f"ERXUDP {METER_IP} {OWN_IP} 0E1A 0E1A C0F945004D3C2A11 1 FFFF ".encode()
    parser = sk.SkstackParser(hex_payload=False)
    events = parser.feed(corrupt + b"\x10\x81\x00\x01garbage\r\nOK\r\n")
    assert isinstance(events[0], sk.MalformedLine) and "65535" in events[0].reason
    assert events[-1] == sk.Ok("")


def test_a_line_without_end_is_dropped_at_the_cap_and_the_next_line_is_read() -> None:
    parser = sk.SkstackParser()
    events: list[sk.DongleEvent] = []
    chunk = b"A" * 65536
    for _ in range(64):  # 4 MiB without CR or LF
        events += parser.feed(chunk)
        assert parser.buffered <= sk.MAX_LINE
    events += parser.feed(b"AAAA\r\nOK\r\n")
    assert [type(e) for e in events] == [sk.MalformedLine, sk.Ok]
    assert "longer than 4096 bytes" in events[0].reason  # type: ignore[union-attr]


def test_an_erxudp_header_that_never_ends_is_dropped_at_the_cap() -> None:
    parser = sk.SkstackParser()
    events = parser.feed(b"ERXUDP " + b"1" * 10_000)
    events += parser.feed(b"\r\nOK\r\n")
    assert isinstance(events[0], sk.MalformedLine) and events[-1] == sk.Ok("")
    assert parser.buffered == 0


_FRAGMENTS = st.sampled_from(
    [
        b"ERXUDP ", b"EVENT ", b"EPANDESC", b"  Channel:", b"  PairID:", b"EINFO ", b"OK",
        b"FAIL ER", b"FFFF", b"0012", b"0000", b" ", b"\r", b"\n", b"\r\n", METER_IP.encode(),
        b"C0F945004D3C2A11", b"1", b"B4", b"0E1A", FRAME.hex().upper().encode(), FRAME,
    ]
)  # fmt: skip
_GARBAGE = st.lists(st.one_of(st.binary(max_size=40), _FRAGMENTS), max_size=40).map(b"".join)


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=400, deadline=None)
@given(
    garbage=_GARBAGE,
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    hex_payload=st.sampled_from([None, True, False]),
    dialect=st.sampled_from([None, *Dialect]),
)
def test_any_garbage_in_any_chunking_never_breaks_the_parser(
    garbage: bytes, cuts: list[int], hex_payload: bool | None, dialect: Dialect | None
) -> None:
    parser = sk.SkstackParser(dialect, hex_payload=hex_payload)
    for chunk in _chunked(garbage, cuts):
        for event in parser.feed(chunk):
            assert isinstance(event, sk.DongleEvent)  # type: ignore[arg-type]
        assert parser.buffered <= sk.MAX_LINE + len(chunk)


@settings(max_examples=400, deadline=None)
@given(garbage=_GARBAGE, cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_a_good_frame_after_garbage_and_a_line_end_is_still_read(
    garbage: bytes, cuts: list[int]
) -> None:
    # hex payloads (ROPT 01, the reader's usual mode): a binary payload could by design
    # swallow the next line when a garbage header declares just the right length
    parser = sk.SkstackParser(hex_payload=True)
    wire = garbage + b"\r\n" + GOOD_LINE
    events = [e for chunk in _chunked(wire, cuts) for e in parser.feed(chunk)]
    assert events and events[-1] == GOOD_RX
