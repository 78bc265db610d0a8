"""The meter the route B tests read: an emulated low-voltage smart meter (0x0288)."""

from __future__ import annotations

from erab.echonet.node import DeviceObject


def emulated_meter() -> DeviceObject:
    values = {
        0xE7: (1234).to_bytes(4, "big"),
        0xE8: bytes.fromhex("0064FFF6"),
        0xD3: (1).to_bytes(4, "big"),
        0xE1: b"\x01",
        0xD7: b"\x06",
        0xE5: b"\x00",
        0xE2: b"\x00\x00" + bytes(192),
        0xEA: bytes.fromhex("07EA0B1B0C0000") + (4321).to_bytes(4, "big"),
        0xEB: bytes.fromhex("07EA0B1B0C0000") + (12).to_bytes(4, "big"),
    }
    return DeviceObject(0x028801, values, settable=[0xE5])
