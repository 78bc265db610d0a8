"""Device-side processing rules (ECHONET Lite Part 2 §4.2.3), sans-IO: bytes in, bytes out."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from erab.echonet.classdb import all_classes
from erab.echonet.frame import EOJ, ESV, NODE_PROFILE, Frame, Property, decode_frame
from erab.echonet.node import ALL_NODES, DeviceObject, LocalNode, SetRejected
from erab.echonet.propmap import (
    decode_class_list,
    decode_instance_list,
    decode_property_map,
)

CONTROLLER = EOJ(0x05, 0xFF, 0x01)
PEER = ("127.9.9.9", 3610)
AIRCON = EOJ(0x01, 0x30, 0x01)


def ask(node: LocalNode, deoj: EOJ | int, esv: ESV, props, get_props=(), tid: int = 7):
    """Send one request; return the decoded answers (with destinations)."""
    frame = Frame(tid, CONTROLLER, EOJ.of(deoj), esv, tuple(props), tuple(get_props))
    out = node.handle(frame.encode(), PEER)
    return [(decode_frame(data), dest) for data, dest in out]


def one(node: LocalNode, deoj, esv, props, get_props=()) -> Frame:
    answers = ask(node, deoj, esv, props, get_props)
    assert len(answers) == 1, answers
    frame, dest = answers[0]
    assert dest == PEER
    return frame


@pytest.fixture
def aircon_node() -> LocalNode:
    return LocalNode([DeviceObject(AIRCON, {0xB0: b"\x42", 0xB3: b"\x1a"})])


# -- Get ----------------------------------------------------------------------------------


def test_get_answers_get_res_with_values_and_same_tid(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.Get, [Property(0x80), Property(0xB0)])
    assert frame.esv is ESV.Get_Res
    assert frame.tid == 7
    assert frame.seoj == AIRCON and frame.deoj == CONTROLLER
    assert frame.props == (Property(0x80, b"\x30"), Property(0xB0, b"\x42"))


def test_get_of_unavailable_property_is_get_sna_with_pdc_zero(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.Get, [Property(0xB0), Property(0xC0)])
    assert frame.esv is ESV.Get_SNA
    assert frame.props == (Property(0xB0, b"\x42"), Property(0xC0, b""))


def test_get_property_map_lists_hosted_properties(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.Get, [Property(0x9F), Property(0x9E)])
    get_map = decode_property_map(frame.props[0].edt)
    set_map = decode_property_map(frame.props[1].edt)
    assert {0x80, 0x82, 0x8A, 0x9D, 0x9E, 0x9F, 0xB0, 0xB3} <= get_map
    assert 0xB0 in set_map and 0x82 not in set_map


def test_live_value_from_on_get_overrides_stored_value() -> None:
    class Thermometer(DeviceObject):
        def on_get(self, epc: int) -> bytes | None:
            return b"\x00\xea" if epc == 0xE0 else None

    node = LocalNode([Thermometer(0x001101, {0xE0: b"\x00\x00"})])
    frame = one(node, 0x001101, ESV.Get, [Property(0xE0)])
    assert frame.props == (Property(0xE0, b"\x00\xea"),)


# -- SetC / SetI --------------------------------------------------------------------------


def test_setc_accepted_answers_set_res_with_pdc_zero_and_stores(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetC, [Property(0xB0, b"\x43")])
    assert frame.esv is ESV.Set_Res
    assert frame.props == (Property(0xB0),)
    assert aircon_node.object(AIRCON).read(0xB0) == b"\x43"


def test_setc_on_get_only_property_is_setc_sna_echoing_edt(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetC, [Property(0xB0, b"\x43"), Property(0x82, b"1234")])
    assert frame.esv is ESV.SetC_SNA
    # accepted EPC with PDC 0, refused one echoed with its EDT
    assert frame.props == (Property(0xB0), Property(0x82, b"1234"))
    assert aircon_node.object(AIRCON).read(0x82) != b"1234"


def test_setc_value_outside_codec_range_is_refused(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetC, [Property(0xB0, b"\x7f")])
    assert frame.esv is ESV.SetC_SNA
    assert frame.props == (Property(0xB0, b"\x7f"),)
    assert aircon_node.object(AIRCON).read(0xB0) == b"\x42"


def test_setc_with_wrong_size_edt_is_refused(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetC, [Property(0xB3, b"\x00\x1a")])
    assert frame.esv is ESV.SetC_SNA


def test_on_set_hook_runs_and_can_refuse() -> None:
    seen: list[tuple[int, bytes]] = []

    class Aircon(DeviceObject):
        def on_set(self, epc: int, edt: bytes) -> None:
            if edt == b"\x44":
                raise SetRejected("dehumidifying is broken")
            seen.append((epc, edt))

    node = LocalNode([Aircon(AIRCON)])
    assert one(node, AIRCON, ESV.SetC, [Property(0xB0, b"\x43")]).esv is ESV.Set_Res
    refused = one(node, AIRCON, ESV.SetC, [Property(0xB0, b"\x44")])
    assert refused.esv is ESV.SetC_SNA and refused.props == (Property(0xB0, b"\x44"),)
    assert seen == [(0xB0, b"\x43")]
    assert node.object(AIRCON).read(0xB0) == b"\x43"


def test_successful_seti_gets_no_answer(aircon_node: LocalNode) -> None:
    assert ask(aircon_node, AIRCON, ESV.SetI, [Property(0xB0, b"\x43")]) == []
    assert aircon_node.object(AIRCON).read(0xB0) == b"\x43"


def test_failed_seti_answers_seti_sna(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetI, [Property(0x9F, b"\x01\x80")])
    assert frame.esv is ESV.SetI_SNA
    assert frame.props == (Property(0x9F, b"\x01\x80"),)


# -- SetGet, INF_REQ, INFC ----------------------------------------------------------------


def test_setget_sets_then_reads_in_one_answer(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetGet, [Property(0xB0, b"\x44")], [Property(0xB0)])
    assert frame.esv is ESV.SetGet_Res
    assert frame.props == (Property(0xB0),)
    assert frame.get_props == (Property(0xB0, b"\x44"),)


def test_setget_with_a_failure_is_setget_sna_covering_both_lists(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetGet, [Property(0x82, b"1234")], [Property(0xB0)])
    assert frame.esv is ESV.SetGet_SNA
    assert frame.props == (Property(0x82, b"1234"),)
    assert frame.get_props == (Property(0xB0, b"\x42"),)


def test_inf_req_answers_inf_with_values_to_all_nodes(aircon_node: LocalNode) -> None:
    # §4.2.3.5: the answer is a property value notification, multicast to every node
    [(frame, dest)] = ask(aircon_node, AIRCON, ESV.INF_REQ, [Property(0x80)])
    assert dest == ALL_NODES
    assert frame.esv is ESV.INF and frame.tid == 7
    assert frame.seoj == AIRCON and frame.deoj == CONTROLLER
    assert frame.props == (Property(0x80, b"\x30"),)


def test_inf_req_for_unavailable_property_answers_inf_sna_to_requester(
    aircon_node: LocalNode,
) -> None:
    frame = one(aircon_node, AIRCON, ESV.INF_REQ, [Property(0xC0)])
    assert frame.esv is ESV.INF_SNA
    assert frame.props == (Property(0xC0),)


def test_infc_is_acknowledged_with_infc_res_and_pdc_zero() -> None:
    node = LocalNode([DeviceObject(CONTROLLER)])
    frame = one(node, CONTROLLER, ESV.INFC, [Property(0x80, b"\x30"), Property(0xB0, b"\x42")])
    assert frame.esv is ESV.INFC_Res
    assert frame.props == (Property(0x80), Property(0xB0))


# -- addressing ---------------------------------------------------------------------------


def test_request_to_object_not_hosted_is_dropped(aircon_node: LocalNode) -> None:
    assert ask(aircon_node, 0x013002, ESV.Get, [Property(0x80)]) == []
    assert ask(aircon_node, 0x027D01, ESV.Get, [Property(0x80)]) == []


def test_instance_code_zero_addresses_every_instance() -> None:
    node = LocalNode(
        [DeviceObject(0x013001, {0xB0: b"\x42"}), DeviceObject(0x013002, {0xB0: b"\x43"})]
    )
    answers = ask(node, 0x013000, ESV.Get, [Property(0xB0)])
    by_source = {frame.seoj: frame.props for frame, _ in answers}
    assert by_source == {
        EOJ(1, 0x30, 1): (Property(0xB0, b"\x42"),),
        EOJ(1, 0x30, 2): (Property(0xB0, b"\x43"),),
    }


def test_node_profile_answers_for_instance_code_zero(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, 0x0EF000, ESV.Get, [Property(0xD3)])
    assert frame.seoj == NODE_PROFILE and frame.props == (Property(0xD3, b"\x00\x00\x01"),)


def test_setc_without_a_value_is_refused(aircon_node: LocalNode) -> None:
    frame = one(aircon_node, AIRCON, ESV.SetC, [Property(0xB0)])
    assert frame.esv is ESV.SetC_SNA and frame.props == (Property(0xB0),)


def test_answers_and_malformed_datagrams_produce_nothing(aircon_node: LocalNode) -> None:
    assert ask(aircon_node, AIRCON, ESV.Get_Res, [Property(0x80, b"\x30")]) == []
    assert aircon_node.handle(b"\x10\x81\x00", PEER) == []
    assert aircon_node.handle(b"\x10\x82\x00\x01hello", PEER) == []


# -- node profile -------------------------------------------------------------------------


def test_node_profile_lists_instances_and_classes() -> None:
    node = LocalNode([DeviceObject(0x013001), DeviceObject(0x013002), DeviceObject(0x027D01)])
    frame = one(
        node,
        NODE_PROFILE,
        ESV.Get,
        [Property(0xD3), Property(0xD4), Property(0xD6), Property(0xD7)],
    )
    values = {p.epc: p.edt for p in frame.props}
    assert values[0xD3] == b"\x00\x00\x03"
    assert values[0xD4] == b"\x00\x03"  # two device classes + the node profile class
    assert decode_instance_list(values[0xD6]) == (
        EOJ(1, 0x30, 1),
        EOJ(1, 0x30, 2),
        EOJ(2, 0x7D, 1),
    )
    assert decode_class_list(values[0xD7]) == (0x0130, 0x027D)


def test_node_profile_identification_and_maker_code() -> None:
    node = LocalNode([DeviceObject(AIRCON)], manufacturer_code=0x000077, identification=bytes(13))
    frame = one(node, NODE_PROFILE, ESV.Get, [Property(0x83), Property(0x8A), Property(0x82)])
    values = {p.epc: p.edt for p in frame.props}
    assert values[0x83] == b"\xfe\x00\x00\x77" + bytes(13)
    assert values[0x8A] == b"\x00\x00\x77"
    assert values[0x82][2] == 0x01  # Format 1 supported
    # the maker code reaches the hosted objects too
    assert node.object(AIRCON).read(0x8A) == b"\x00\x00\x77"


def test_identification_is_unique_per_node_when_not_given() -> None:
    assert LocalNode().identification != LocalNode().identification
    assert LocalNode().identification[0] == 0xFE


def test_bad_identification_is_refused_with_reason() -> None:
    with pytest.raises(ValueError, match="17 bytes starting 0xFE"):
        LocalNode(identification=b"\x01\x02")


def test_instance_list_notification_is_not_readable_but_announced() -> None:
    node = LocalNode([DeviceObject(AIRCON)])
    assert one(node, NODE_PROFILE, ESV.Get, [Property(0xD5)]).esv is ESV.Get_SNA
    node.announce_instance_list()
    [(data, dest)] = node.take_announcements()
    frame = decode_frame(data)
    assert dest == ALL_NODES
    assert frame.esv is ESV.INF and frame.seoj == NODE_PROFILE
    assert decode_instance_list(frame.props[0].edt) == (AIRCON,)


# -- announcements ------------------------------------------------------------------------


def test_changed_announced_property_is_sent_as_inf() -> None:
    aircon = DeviceObject(AIRCON, {0xB0: b"\x42"})
    node = LocalNode([aircon])
    aircon.update(0xB0, b"\x43")
    [(data, dest)] = node.take_announcements()
    frame = decode_frame(data)
    assert dest == ALL_NODES
    assert frame.esv is ESV.INF and frame.seoj == AIRCON
    assert frame.props == (Property(0xB0, b"\x43"),)


def test_unchanged_value_or_unannounced_property_sends_nothing() -> None:
    aircon = DeviceObject(AIRCON, {0xB0: b"\x42", 0xBB: b"\x18"})
    node = LocalNode([aircon])
    aircon.update(0xB0, b"\x42")  # same value
    aircon.update(0xBB, b"\x19")  # room temperature: announcement optional, not in 0x9D
    assert node.take_announcements() == []


def test_set_from_network_announces_the_change(aircon_node: LocalNode) -> None:
    one(aircon_node, AIRCON, ESV.SetC, [Property(0xB0, b"\x43")])
    [(data, _)] = aircon_node.take_announcements()
    assert decode_frame(data).props == (Property(0xB0, b"\x43"),)


# -- construction -------------------------------------------------------------------------


def test_mandatory_properties_get_defaults() -> None:
    battery = DeviceObject(0x027D01)
    assert {0x80, 0x81, 0x82, 0x88, 0x8A} <= battery.epcs
    # storage battery: working operation status (0xDA) and remaining capacity are required
    assert 0xDA in battery.epcs
    for epc in battery.epcs:
        assert battery.read(epc) is not None


DEVICE_CLASSES = [c for c in all_classes() if c.class_code >> 8 != 0x0E]  # not profiles


def test_every_device_class_in_the_database_is_hosted_with_its_required_properties() -> None:
    # a node can host an object of any class: each required Get property is answered with
    # a value its own codec accepts, and the Get map lists them
    assert len(DEVICE_CLASSES) > 150
    for device_class in DEVICE_CLASSES:
        code = device_class.class_code
        eoj = EOJ(code >> 8, code & 0xFF, 1)
        node = LocalNode([DeviceObject(eoj)], manufacturer_code=0x000077)
        required = sorted({spec.epc for spec in device_class.mandatory("get")})
        frame = one(node, eoj, ESV.Get, [Property(e) for e in [*required, 0x9F]])
        assert frame.esv is ESV.Get_Res, (device_class.name_en, frame.props)
        values = {p.epc: p.edt for p in frame.props}
        assert set(required) <= decode_property_map(values[0x9F]), device_class.name_en
        for epc in required:
            spec = device_class.properties.get(epc)
            if spec is not None:
                spec.decode(values[epc])  # raises, naming class and property, if invalid


def test_device_identification_number_carries_the_node_maker_code() -> None:
    # household solar power generation requires 0x83 on the device object itself
    pv = DeviceObject(0x027901)
    LocalNode([pv], manufacturer_code=0x000077)
    identification = pv.read(0x83)
    assert identification is not None and len(identification) == 17
    assert identification[:4] == b"\xfe\x00\x00\x77"
    assert DeviceObject(0x027901).read(0x83) != DeviceObject(0x027901).read(0x83)


def test_standard_version_names_the_appendix_release() -> None:
    assert DeviceObject(AIRCON).read(0x82) == b"\x00\x00R\x00"
    assert DeviceObject(AIRCON, release="J").read(0x82) == b"\x00\x00J\x00"
    with pytest.raises(ValueError, match=r"release '1\.14'"):
        DeviceObject(AIRCON, release="1.14")


def test_class_unknown_to_database_needs_explicit_rules() -> None:
    custom = DeviceObject(0x0FF001, {0xF0: b"\x01"}, settable={0xF0})
    node = LocalNode([custom])
    assert one(node, 0x0FF001, ESV.SetC, [Property(0xF0, b"\x02")]).esv is ESV.Set_Res
    assert custom.read(0xF0) == b"\x02"


def test_values_outside_the_frame_format_are_refused_with_reason() -> None:
    with pytest.raises(ValueError, match="EPC 0x10 is out of range"):
        DeviceObject(AIRCON, {0x10: b"\x00"})
    aircon = DeviceObject(AIRCON)
    with pytest.raises(ValueError, match="300 bytes, at most 255"):
        aircon.update(0xF0, bytes(300))


def test_hosting_the_same_eoj_twice_is_refused() -> None:
    node = LocalNode([DeviceObject(AIRCON)])
    with pytest.raises(ValueError, match="already hosts"):
        node.add(DeviceObject(AIRCON))


# -- robustness ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_datagrams_never_raise(data: bytes) -> None:
    node = LocalNode([DeviceObject(AIRCON)])
    for reply, _ in node.handle(data, PEER):
        decode_frame(reply)  # every answer is itself a well-formed frame


@settings(max_examples=200, deadline=None)
@given(
    esv=st.sampled_from([ESV.Get, ESV.SetC, ESV.SetI, ESV.INF_REQ, ESV.SetGet, ESV.INFC]),
    props=st.lists(
        st.tuples(st.integers(0x80, 0xFF), st.binary(max_size=4)), min_size=1, max_size=6
    ),
)
def test_every_request_is_answered_per_property(esv: ESV, props: list[tuple[int, bytes]]) -> None:
    node = LocalNode([DeviceObject(AIRCON)])
    request = tuple(Property(e, d) for e, d in props)
    answers = ask(node, AIRCON, esv, request, request if esv is ESV.SetGet else ())
    for frame, _ in answers:
        # the answer lists exactly the EPCs asked, in order
        assert [p.epc for p in frame.props] == [p.epc for p in request]
        assert frame.esv in (esv.answers or ())
