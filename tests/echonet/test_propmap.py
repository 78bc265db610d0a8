"""Property maps, instance lists and class lists: both encodings, both directions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from erab.echonet import (
    EOJ,
    PropertyMapError,
    decode_class_list,
    decode_instance_list,
    decode_property_map,
    encode_class_list,
    encode_instance_list,
    encode_property_map,
)


def test_below_16_properties_the_map_is_a_list() -> None:
    assert encode_property_map([0x80, 0xB0, 0x81]) == bytes([3, 0x80, 0x81, 0xB0])
    assert decode_property_map(bytes([3, 0x80, 0x81, 0xB0])) == {0x80, 0x81, 0xB0}


def test_from_16_properties_the_map_is_a_17_byte_bitmap() -> None:
    epcs = list(range(0x80, 0x90))  # 16 properties
    edt = encode_property_map(epcs)
    assert len(edt) == 17
    assert edt[0] == 16
    # EPC 0x80 + i lives in byte i, bit 0 (high nibble 8)
    assert all(edt[1 + i] == 0x01 for i in range(16))
    assert decode_property_map(edt) == set(epcs)


def test_bitmap_bit_position_follows_the_high_nibble() -> None:
    epcs = [*range(0x80, 0x8F), 0xFF]  # 16: 0xFF is byte 15, bit 7
    edt = encode_property_map(epcs)
    assert edt[16] & 0x80
    assert decode_property_map(edt) == set(epcs)


@given(st.sets(st.integers(0x80, 0xFF)))
def test_property_map_round_trips(epcs: set[int]) -> None:
    assert decode_property_map(encode_property_map(epcs)) == epcs


@pytest.mark.parametrize(
    ("edt", "reason"),
    [
        (b"", "count byte is missing"),
        (bytes([3, 0x80, 0x81]), "needs 4 bytes; it has 3"),
        (bytes([16]) + bytes(15), "needs 17 bytes"),
        (bytes([17]) + bytes([1] * 16), "count byte says 17, but its bitmap marks 16"),
        (bytes([1, 0x10]), "below 0x80"),
    ],
)
def test_bad_property_maps_say_why(edt: bytes, reason: str) -> None:
    with pytest.raises(PropertyMapError, match=reason):
        decode_property_map(edt)


def test_instance_list_round_trips() -> None:
    eojs = [EOJ(0x01, 0x30, 0x01), EOJ(0x02, 0x79, 0x01), EOJ(0x02, 0x88, 0x01)]
    edt = encode_instance_list(eojs)
    assert edt.hex() == "03013001027901028801"
    assert decode_instance_list(edt) == tuple(eojs)


def test_instance_list_holds_at_most_84() -> None:
    with pytest.raises(PropertyMapError, match="at most 84"):
        encode_instance_list([EOJ(1, 0x30, i) for i in range(85)])


def test_instance_list_with_wrong_length_is_refused() -> None:
    with pytest.raises(PropertyMapError, match="2 instances"):
        decode_instance_list(bytes.fromhex("02013001"))


def test_class_list_lists_at_most_8_but_counts_all() -> None:
    codes = [0x0130 + i for i in range(10)]
    edt = encode_class_list(codes)
    assert edt[0] == 10
    assert decode_class_list(edt) == tuple(codes[:8])
    assert decode_class_list(encode_class_list([0x0130, 0x0288])) == (0x0130, 0x0288)


# ---- fuzz: random bytes decode or raise PropertyMapError, nothing else ------------------------


@given(st.binary(max_size=40))
def test_random_property_map_bytes_decode_or_raise_property_map_error_only(edt: bytes) -> None:
    try:
        epcs = decode_property_map(edt)
    except PropertyMapError:
        return
    assert len(epcs) == edt[0]
    assert all(0x80 <= epc <= 0xFF for epc in epcs)
    assert decode_property_map(encode_property_map(epcs)) == epcs


@given(st.binary(max_size=40))
def test_random_instance_and_class_lists_decode_or_raise_property_map_error_only(
    edt: bytes,
) -> None:
    try:
        eojs = decode_instance_list(edt)
    except PropertyMapError:
        pass
    else:
        assert encode_instance_list(eojs) == edt
    try:
        codes = decode_class_list(edt)
    except PropertyMapError:
        pass
    else:
        assert len(codes) == min(edt[0], 8)  # at most 8 listed, the count may say more
        if edt[0] <= 8:
            assert encode_class_list(codes) == edt


def test_bitmap_form_with_fewer_than_16_properties_is_refused() -> None:
    # a count below 16 means list form, whatever the length: a 17-byte EDT cannot be a list of 3
    with pytest.raises(PropertyMapError, match="needs 4 bytes; it has 17"):
        decode_property_map(bytes([3]) + bytes(16))
