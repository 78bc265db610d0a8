"""The meter's EDTs → a reading: scaling by coefficient (0xD3) and unit (0xE1), the
"no data" markers, and any bytes at all without an exception (hypothesis)."""

from __future__ import annotations

import struct
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from erab.clock import JST
from erab.echonet import meterdata
from erab.gateway.meter import meter_values, scaling_from

NOW = datetime(2026, 8, 3, 4, 0, tzinfo=UTC)


def test_counts_are_scaled_by_the_meters_coefficient_and_unit() -> None:
    scaling = scaling_from({0xD3: struct.pack(">I", 10), 0xE1: b"\x02"})  # 10 x 0.01 kWh
    point = datetime(2026, 8, 3, 13, 0, tzinfo=JST)
    raw = {
        0xE7: struct.pack(">i", -850),
        0xE0: struct.pack(">I", 12345),
        0xE3: struct.pack(">I", 0xFFFFFFFE),  # no data
        0xEA: meterdata.encode_fixed_time_reading(meterdata.Reading(point, 1234.5),
                                                  coefficient=10, unit_code=0x02),
    }  # fmt: skip
    values = meter_values(raw, scaling, NOW)
    assert values.power_w == -850.0  # exporting
    assert values.import_kwh == 1234.5
    assert values.export_kwh is None
    assert (values.fixed_at, values.fixed_import_kwh) == (point, 1234.5)


def test_without_0xd3_and_0xe1_a_count_is_a_tenth_of_a_kwh() -> None:
    scaling = scaling_from({})
    assert meter_values({0xE0: struct.pack(">I", 7)}, scaling, NOW).import_kwh == 0.7


@given(st.dictionaries(st.sampled_from([0xE7, 0xE0, 0xE3, 0xEA, 0xEB, 0xD3, 0xE1]),
                       st.binary(max_size=12)))  # fmt: skip
def test_any_bytes_give_a_reading_or_none_never_an_exception(raw: dict[int, bytes]) -> None:
    values = meter_values(raw, scaling_from(raw), NOW)
    assert values.measured_at == NOW
    for kwh in (values.import_kwh, values.export_kwh, values.fixed_import_kwh):
        assert kwh is None or kwh >= 0
