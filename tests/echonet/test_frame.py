"""Frame codec: ECHONET Lite Part 2 chapter 3 (frame format), rule by rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.echonet import (
    EOJ,
    ESV,
    Format2Frame,
    Frame,
    FrameError,
    Property,
    decode_frame,
    infc_response,
)

# --- frames seen from real devices (issue 2) -------------------------------------------------


def test_air_conditioner_get_res_operation_mode_cooling() -> None:
    frame = decode_frame(bytes.fromhex("1081000001300505FF017201B00142"))
    assert isinstance(frame, Frame)
    assert frame.seoj == EOJ(0x01, 0x30, 0x05)
    assert frame.seoj.class_code == 0x0130
    assert frame.deoj == EOJ(0x05, 0xFF, 0x01)
    assert frame.esv is ESV.Get_Res
    assert frame.props == (Property(0xB0, b"\x42"),)


def test_water_heater_get_res_three_properties() -> None:
    frame = decode_frame(bytes.fromhex("1081099B02720105FF017203D5010CEE0200C8EF0143"))
    assert isinstance(frame, Frame)
    assert frame.tid == 0x099B
    assert frame.seoj == EOJ(0x02, 0x72, 0x01)
    assert [(p.epc, p.edt) for p in frame.props] == [
        (0xD5, b"\x0c"),
        (0xEE, b"\x00\xc8"),
        (0xEF, b"\x43"),
    ]


def test_water_flow_meter_cumulative_flow() -> None:
    frame = decode_frame(bytes.fromhex("1081001402810105FF017203800130E00400119E3CE10104"))
    assert isinstance(frame, Frame)
    values = {p.epc: p.edt for p in frame.props}
    assert values[0x80] == b"\x30"
    assert int.from_bytes(values[0xE0], "big") == 1_154_620
    assert values[0xE1] == b"\x04"


@pytest.mark.parametrize(
    "hex_frame",
    [
        "1081000001300505FF017201B00142",
        "1081099B02720105FF017203D5010CEE0200C8EF0143",
        "1081001402810105FF017203800130E00400119E3CE10104",
    ],
)
def test_real_frames_encode_back_to_the_same_bytes(hex_frame: str) -> None:
    raw = bytes.fromhex(hex_frame)
    frame = decode_frame(raw)
    assert frame.encode() == raw


# --- SetGet carries two lists (§3.2.5) -------------------------------------------------------


def test_setget_has_a_set_list_and_a_get_list() -> None:
    raw = bytes.fromhex("1081000105FF010130016E01800130028000B000")
    frame = decode_frame(raw)
    assert isinstance(frame, Frame)
    assert frame.esv is ESV.SetGet
    assert frame.props == (Property(0x80, b"\x30"),)
    assert frame.get_props == (Property(0x80), Property(0xB0))
    assert frame.encode() == raw


def test_setget_sna_with_empty_lists_round_trips() -> None:
    frame = Frame(7, EOJ(1, 0x30, 1), EOJ(5, 0xFF, 1), ESV.SetGet_SNA, (), ())
    raw = frame.encode()
    assert raw.hex() == "1081000701300105ff015e0000"
    assert decode_frame(raw) == frame


def test_setget_without_opcget_is_rejected_with_its_offset() -> None:
    raw = bytes.fromhex("1081000105FF010130016E01800130")
    with pytest.raises(FrameError) as info:
        decode_frame(raw)
    assert "OPCGet missing" in str(info.value)
    assert info.value.offset == len(raw)


def test_a_one_list_esv_refuses_a_get_list_when_encoding() -> None:
    frame = Frame(
        1, EOJ(5, 0xFF, 1), EOJ(1, 0x30, 1), ESV.Get, (Property(0x80),), (Property(0x81),)
    )
    with pytest.raises(ValueError, match="get_props must be empty"):
        frame.encode()


# --- Format 2 is carried as an opaque body (§3.2.2) -----------------------------------------


def test_format2_body_is_carried_opaquely() -> None:
    raw = bytes.fromhex("10820123") + b"\x00\x01anything"
    frame = decode_frame(raw)
    assert frame == Format2Frame(0x0123, b"\x00\x01anything")
    assert frame.encode() == raw


# --- ESV table (§3.2.5) ---------------------------------------------------------------------


def test_each_request_names_its_answer_and_sna() -> None:
    assert ESV.Get.answers == (ESV.Get_Res, ESV.Get_SNA)
    assert ESV.SetC.answers == (ESV.Set_Res, ESV.SetC_SNA)
    assert ESV.SetI.answers == (ESV.Set_Res, ESV.SetI_SNA)
    assert ESV.INF_REQ.answers == (ESV.INF, ESV.INF_SNA)
    assert ESV.SetGet.answers == (ESV.SetGet_Res, ESV.SetGet_SNA)
    assert ESV.INFC.answers == (ESV.INFC_Res, ESV.INFC_Res)
    assert ESV.Get_Res.answers is None


def test_seti_is_the_request_not_answered_on_success() -> None:
    assert not ESV.SetI.answered_on_success
    assert all(e.answered_on_success for e in ESV if e is not ESV.SetI)


def test_sna_codes_are_0x50_to_0x5f() -> None:
    assert {e for e in ESV if e.is_sna} == {
        ESV.SetI_SNA,
        ESV.SetC_SNA,
        ESV.Get_SNA,
        ESV.INF_SNA,
        ESV.SetGet_SNA,
    }


def test_multicast_is_allowed_for_requests_and_inf_only() -> None:
    assert {e for e in ESV if e.may_multicast} == {
        ESV.SetI,
        ESV.SetC,
        ESV.Get,
        ESV.INF_REQ,
        ESV.SetGet,
        ESV.INF,
        ESV.INF_SNA,
    }
    assert not ESV.Get_Res.may_multicast
    assert not ESV.INFC.may_multicast


def test_every_esv_has_a_meaning() -> None:
    assert ESV.INFC_Res.meaning == "property value notification response"
    assert all(e.meaning for e in ESV)


# --- EOJ ------------------------------------------------------------------------------------


@pytest.mark.parametrize("given_value", [0x013001, "0x013001", "013001", b"\x01\x30\x01"])
def test_eoj_accepts_int_text_and_bytes(given_value: int | str | bytes) -> None:
    eoj = EOJ.of(given_value)
    assert eoj == EOJ(0x01, 0x30, 0x01)
    assert str(eoj) == "0x013001"
    assert int(eoj) == 0x013001


def test_eoj_instance_zero_addresses_all_instances() -> None:
    assert EOJ.of(0x013000).is_all_instances
    assert not EOJ.of(0x013001).is_all_instances


@pytest.mark.parametrize("bad", ["0x0130", "zz3001", 0x1000000, b"\x01\x30"])
def test_eoj_rejects_bad_input_with_a_reason(bad: int | str | bytes) -> None:
    with pytest.raises(ValueError, match="EOJ"):
        EOJ.of(bad)


# --- strict validation: what is wrong and where ----------------------------------------------


@pytest.mark.parametrize(
    ("hex_frame", "reason", "offset"),
    [
        ("108100", "shorter than the 4-byte header", 3),
        ("1181000001300505FF017201B00142", "EHD1 is 0x11", 0),
        ("1083000001300505FF017201B00142", "EHD2 is 0x83", 1),
        ("1081000001300505FF01", "shorter than the 12 bytes", 10),
        ("1081000001300505FF017701B00142", "ESV 0x77 is not a defined service code", 10),
        ("1081000001300505FF017201B00242", "PDC 2 runs past the end", 13),
        ("1081000001300505FF017202B00142", "property 2 of 2: EPC/PDC missing", 15),
        ("1081000001300505FF017201B0014200", "1 trailing byte(s)", 15),
        ("1081000001300505FF0172017F0142", "EPC 0x7f below 0x80", 12),
    ],
)
def test_malformed_frames_say_what_and_where(hex_frame: str, reason: str, offset: int) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(bytes.fromhex(hex_frame))
    assert reason in str(info.value)
    assert info.value.offset == offset


def test_encode_names_the_bad_field() -> None:
    eoj = EOJ(5, 0xFF, 1)
    with pytest.raises(ValueError, match="TID 70000"):
        Frame(70000, eoj, eoj, ESV.Get, ()).encode()
    with pytest.raises(ValueError, match="EPC 0x10 is out of range"):
        Frame(1, eoj, eoj, ESV.Get, (Property(0x10),)).encode()
    with pytest.raises(ValueError, match="EDT of 256 bytes"):
        Frame(1, eoj, eoj, ESV.Get_Res, (Property(0x80, bytes(256)),)).encode()


# --- property-based: round trip and fuzz ------------------------------------------------------

eojs = st.builds(EOJ, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
props = st.lists(
    st.builds(Property, st.integers(0x80, 0xFF), st.binary(max_size=40)), max_size=12
).map(tuple)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    esv = draw(st.sampled_from(list(ESV)))
    get_list = draw(props) if esv.is_setget else ()
    return Frame(draw(st.integers(0, 0xFFFF)), draw(eojs), draw(eojs), esv, draw(props), get_list)


@given(frames())
def test_any_frame_round_trips(frame: Frame) -> None:
    assert decode_frame(frame.encode()) == frame


@given(st.binary(max_size=64))
@settings(max_examples=1500)
def test_random_bytes_decode_or_raise_frame_error_only(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except FrameError as exc:
        assert 0 <= exc.offset <= len(data)
        return
    assert frame.encode() == data


@given(frames(), st.data())
@settings(max_examples=1500)
def test_mutated_frames_decode_or_raise_frame_error_only(frame: Frame, data: st.DataObject) -> None:
    raw = bytearray(frame.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        action = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        index = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if action == "flip" and raw:
            raw[index] ^= data.draw(st.integers(1, 255))
        elif action == "cut":
            del raw[index:]
        else:
            raw.insert(index, data.draw(st.integers(0, 255)))
    try:
        decoded = decode_frame(bytes(raw))
    except FrameError as exc:
        assert 0 <= exc.offset <= len(raw)
        return
    assert decoded.encode() == bytes(raw)


# --- INFC_Res (Part 2 §4.2.3.6) ---------------------------------------------------------------


def test_infc_response_to_a_meter_push_swaps_the_objects_and_echoes_epcs_with_pdc_0() -> None:
    # a smart meter's INFC of its 30-minute reading (0xEA) to a controller, TID 0x0102
    infc = decode_frame(bytes.fromhex("1081010202880105FF017401EA0B07EA0814090000000003E8"))
    assert isinstance(infc, Frame)
    assert infc_response(infc).encode() == bytes.fromhex("1081010205FF010288017A01EA00")


def test_infc_response_answers_from_the_object_given() -> None:
    # an INFC to every controller instance (0x05FF00) is answered by the one that got it
    infc = Frame(9, EOJ(2, 0x88, 1), EOJ(5, 0xFF, 0), ESV.INFC, (Property(0x80, b"\x30"),))
    ack = infc_response(infc, EOJ(5, 0xFF, 1))
    assert (ack.seoj, ack.deoj, ack.tid) == (EOJ(5, 0xFF, 1), EOJ(2, 0x88, 1), 9)


def test_infc_response_refuses_a_frame_that_is_not_an_infc() -> None:
    inf = Frame(1, EOJ(2, 0x88, 1), EOJ(5, 0xFF, 1), ESV.INF, (Property(0x80, b"\x30"),))
    with pytest.raises(ValueError, match="only an INFC is answered with INFC_Res, got INF"):
        infc_response(inf)


@given(st.integers(0, 0xFFFF), eojs, eojs, props)
def test_any_infc_response_keeps_tid_and_epcs_and_round_trips(
    tid: int, seoj: EOJ, deoj: EOJ, properties: tuple[Property, ...]
) -> None:
    ack = infc_response(Frame(tid, seoj, deoj, ESV.INFC, properties))
    assert (ack.tid, ack.seoj, ack.deoj, ack.esv) == (tid, deoj, seoj, ESV.INFC_Res)
    assert [(p.epc, p.pdc) for p in ack.props] == [(p.epc, 0) for p in properties]
    assert decode_frame(ack.encode()) == ack


# --- an independent codec agrees (pychonet, test-only peer) -----------------------------------


def test_esv_codes_and_names_match_pychonets_table() -> None:
    from pychonet.lib.const import ESV_CODES

    assert {e.value: e.name for e in ESV} == {code: v["name"] for code, v in ESV_CODES.items()}


@given(frames().filter(lambda f: not f.esv.is_setget))
@settings(max_examples=300)
def test_pychonet_reads_erab_frames_field_for_field(frame: Frame) -> None:
    from pychonet.lib.functions import decodeEchonetMsg

    msg = decodeEchonetMsg(frame.encode())
    assert (msg["EHD1"], msg["EHD2"], msg["TID"], msg["ESV"]) == (0x10, 0x81, frame.tid, frame.esv)
    assert (msg["SEOJGC"], msg["SEOJCC"], msg["SEOJCI"]) == tuple(frame.seoj)
    assert (msg["DEOJGC"], msg["DEOJCC"], msg["DEOJCI"]) == tuple(frame.deoj)
    assert [(p["EPC"], p["PDC"], p["EDT"]) for p in msg["OPC"]] == [
        (p.epc, p.pdc, p.edt) for p in frame.props
    ]


@pytest.mark.parametrize(
    ("deoj", "esv", "opc"),
    [
        (0x013001, ESV.SetC, [(0xB0, 1, 0x42), (0xB3, 1, 26)]),
        (0x013001, ESV.Get, [(0x80, 0, 0), (0xB0, 0, 0), (0xBB, 0, 0)]),
        (0x028801, ESV.Get, [(0xE7, 0, 0)]),
        (0x027D01, ESV.SetI, [(0xDA, 1, 0x42), (0xAA, 4, 0x000007D0)]),
    ],
)
def test_erab_reads_frames_built_by_pychonet(
    deoj: int, esv: ESV, opc: list[tuple[int, int, int]]
) -> None:
    from pychonet.lib.functions import buildEchonetMsg

    target = EOJ.of(deoj)
    raw = bytes(
        buildEchonetMsg(
            {
                "TID": 0x0102,
                "DEOJGC": target.group,
                "DEOJCC": target.cls,
                "DEOJCI": target.instance,
                "ESV": int(esv),
                "OPC": [{"EPC": epc, "PDC": pdc, "EDT": edt} for epc, pdc, edt in opc],
            }
        )
    )
    frame = decode_frame(raw)
    assert frame == Frame(
        0x0102,
        EOJ(0x05, 0xFF, 0x01),  # pychonet's controller object
        target,
        esv,
        tuple(Property(epc, edt.to_bytes(pdc, "big")) for epc, pdc, edt in opc),
    )
