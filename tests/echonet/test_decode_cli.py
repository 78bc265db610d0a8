"""`erab el decode`: frames named and decoded for people and machines."""

from __future__ import annotations

import io
import json

import pytest

from erab.cli import main
from erab.echonet import EOJ, ESV, Frame, Property, decode_frame
from erab.echonet.describe import FrameView, describe_frame


def test_text_output_names_class_property_and_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["el", "decode", "1081000001300505FF017201B00142"]) == 0
    out = capsys.readouterr().out
    assert "Get_Res" in out
    assert "Home air conditioner" in out
    assert "Operation mode setting: cooling" in out


def test_json_output_gives_typed_values(capsys: pytest.CaptureFixture[str]) -> None:
    hex_frame = "1081001402810105FF017203800130E00400119E3CE10104"
    assert main(["el", "decode", "--json", hex_frame]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["seoj"] == "0x028101"
    values = {p["epc"]: p["value"] for p in data["properties"]}
    assert values["0xE0"] == 1_154_620
    assert data["properties"][1]["shortName"]


def test_several_frames_give_a_json_list(capsys: pytest.CaptureFixture[str]) -> None:
    frames = ["1081000001300505FF017201B00142", "1081099B02720105FF017203D5010CEE0200C8EF0143"]
    assert main(["el", "decode", "--json", *frames]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["tid"] for d in data] == [0, 0x099B]
    assert [p["value"] for p in data[1]["properties"]][1] == 200  # 0xEE: 200 L


def test_malformed_frame_is_reported_with_offset_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["el", "decode", "1081000001300505FF017201B00242"]) == 1
    err = capsys.readouterr().err
    assert "PDC 2 runs past the end" in err
    assert "at byte 13" in err


def test_non_hex_input_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["el", "decode", "10zz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("erab: error: frame 1")
    assert "Traceback" not in err


def test_sna_properties_are_flagged() -> None:
    # SetC_SNA from an air conditioner: 0x80 accepted (PDC 0), 0xB0 rejected (EDT echoed)
    frame = Frame(
        3,
        EOJ.of(0x013001),
        EOJ.of(0x05FF01),
        ESV.SetC_SNA,
        (Property(0x80), Property(0xB0, b"\x45")),
    )
    view = describe_frame(frame)
    assert isinstance(view, FrameView)
    assert [p.status for p in view.props] == ["accepted", "rejected"]
    assert "[SNA: set rejected]" in view.to_text()


def test_get_sna_marks_unreadable_properties() -> None:
    raw = bytes.fromhex("10810004" "013001" "05FF01" "52" "02" "800130" "8600")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    assert [p.status for p in view.props] == ["value", "unavailable"]


def test_request_properties_belong_to_the_destination() -> None:
    raw = bytes.fromhex("10810005" "05FF01" "028801" "62" "01" "E700")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    assert view.props[0].short_name  # named from 0x0288, the destination
    assert view.props[0].status == "request"
    assert "instantaneous electric power" in view.props[0].name.lower()


def test_node_profile_instance_list_is_expanded() -> None:
    raw = bytes.fromhex("108100010EF0010EF0017301D50A03013001027901028801")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    assert view.props[0].value == ["0x013001", "0x027901", "0x028801"]
    assert "Low-voltage smart electric energy meter" in view.props[0].text


def test_format2_frames_are_shown_as_opaque_bodies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["el", "decode", "--json", "10820001ABCD"]) == 0
    assert json.loads(capsys.readouterr().out) == {"format": 2, "tid": 1, "body": "ABCD"}


def test_counts_are_scaled_by_coefficients_in_the_same_frame() -> None:
    # water flow meter: 0xE0 = 1,154,620 with unit 0xE1 = 0x04 (0.0001 m3) -> 115.462 m3
    raw = bytes.fromhex("1081001402810105FF017203800130E00400119E3CE10104")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    flow = view.props[1]
    assert flow.value == 1_154_620
    assert flow.scaled == pytest.approx(115.462)
    assert flow.scaled_unit == "m3"
    assert "= 115.462 m3" in view.to_text()


def test_smart_meter_energy_uses_coefficient_and_unit() -> None:
    # 0xE0 = 0x1234 (4660) × 0xD3 coefficient 2 × 0xE1 unit 0x01 (0.1 kWh) = 932 kWh
    raw = bytes.fromhex("1081000102880105FF017203E00400001234D30400000002E10101")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    assert view.props[0].scaled == pytest.approx(932.0)
    assert view.props[0].to_json()["scaledUnit"] == "kWh"


def test_without_its_unit_in_the_frame_a_count_stays_unscaled() -> None:
    raw = bytes.fromhex("1081000102880105FF017201E00400001234")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    assert view.props[0].scaled is None
    assert "scaledValue" not in view.props[0].to_json()


def test_format2_text_output_shows_the_opaque_body(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["el", "decode", "10820001ABCD"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "TID 0x0001  Format 2 (arbitrary message format, EHD2 0x82)",
        "  body (2 bytes, opaque): ABCD",
    ]


def test_frames_are_read_from_standard_input_one_per_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = (
        "10 81 00 00 01 30 05 05 FF 01 72 01 B0 01 42\n"
        "\n"
        "0x1081099B02720105FF017203D5010CEE0200C8EF0143\n"
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(lines))
    assert main(["el", "decode", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["tid"] for d in data] == [0, 0x099B]
    assert data[0]["properties"][0]["value"] == "cooling"


def test_empty_standard_input_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["el", "decode", "-"]) == 2
    assert capsys.readouterr().err == (
        "erab: error: no frames to decode: standard input had no hex lines\n"
    )


def test_json_reports_a_malformed_frame_with_reason_and_offset(
    capsys: pytest.CaptureFixture[str],
) -> None:
    good, bad = "1081000001300505FF017201B00142", "1081000001300505FF017201B00242"
    assert main(["el", "decode", "--json", good, bad]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data[0]["properties"][0]["value"] == "cooling"
    assert data[1]["frame"] == 2
    assert data[1]["offset"] == 13
    assert data[1]["reason"].startswith("property 1 of 1 (EPC 0xb0): PDC 2 runs past the end")
    assert data[1]["reason"].endswith("(1 byte left)")


def test_text_output_of_the_three_issue_frames(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "el",
                "decode",
                "1081000001300505FF017201B00142",
                "1081099B02720105FF017203D5010CEE0200C8EF0143",
                "1081001402810105FF017203800130E00400119E3CE10104",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "TID 0x099B  Get_Res" in out
    assert "from 0x013005 Home air conditioner" in out
    assert "0xEF Bath operation status monitor: keepingTemperature" in out
    assert "0x80 Operation status: ON" in out
    assert "1154620 m3 (× EPC 0xE1) = 115.462 m3" in out


def test_setget_res_get_list_is_scaled_by_its_coefficients_too() -> None:
    # SetGet_Res from a water flow meter: set list empty, get list 0xE0 with its unit 0xE1
    raw = bytes.fromhex("1081000702810105FF017E0002E00400119E3CE10104")
    view = describe_frame(decode_frame(raw))
    assert isinstance(view, FrameView)
    assert view.props == ()
    assert view.get_props[0].scaled == pytest.approx(115.462)
    assert "get properties (2):" in view.to_text()
