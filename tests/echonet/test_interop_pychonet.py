"""pychonet (the library behind Home Assistant's ECHONET Lite integration) as the controller,
talking to erab's LocalNode over loopback.

pychonet binds one UDP socket to (address, 3610) and sends to port 3610 of each device, so it
gets its own random 127.x.y.z address here, as does the erab node.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from erab.echonet.frame import EOJ
from erab.echonet.node import DeviceObject, LocalNode
from erab.echonet.transport import random_loopback_address
from tests.requires import peer

pychonet = peer("pychonet")
from pychonet import HomeAirConditioner  # noqa: E402

from tests.pychonet_peer import discovered, pychonet_client  # noqa: E402

AIRCON = EOJ(0x01, 0x30, 0x01)


@pytest.fixture
async def erab_node() -> AsyncIterator[tuple[str, LocalNode]]:
    node = LocalNode([DeviceObject(AIRCON)])
    host = random_loopback_address()
    await node.start(host)
    yield host, node
    await node.close()


@pytest.fixture
async def api() -> AsyncIterator[Any]:
    async with pychonet_client() as client:
        yield client


async def test_pychonet_multicast_search_finds_erab_node(api, erab_node) -> None:
    host, _ = erab_node
    seen: list[str] = []

    async def on_new_host(found: str) -> None:
        seen.append(found)

    api._discover_callback = on_new_host
    # multicast Get 0xD6; pychonet waits its full 20 s timeout for it, so don't wait for it
    search = asyncio.create_task(api.discover())
    for _ in range(40):
        if host in seen:
            break
        await asyncio.sleep(0.05)
    search.cancel()
    assert host in seen


async def test_pychonet_reads_instance_list_and_identification(api, erab_node) -> None:
    host, node = erab_node
    state = await discovered(api, host)
    assert list(state["instances"]) == [0x01]
    assert list(state["instances"][0x01]) == [0x30]
    assert list(state["instances"][0x01][0x30]) == [0x01]
    # pychonet shows 0x83 without its leading 0xFE
    assert state["uid"] == node.identification[1:].hex()


async def test_pychonet_reads_air_conditioner_values(api, erab_node) -> None:
    host, _ = erab_node
    await discovered(api, host)
    await api.getAllPropertyMaps(host, 0x01, 0x30, 0x01)
    aircon = HomeAirConditioner(host, api)
    values = await aircon.update([0x80, 0xB0, 0xB3])
    assert values == {0x80: "on", 0xB0: "cool", 0xB3: 26}


async def test_pychonet_sets_mode_and_temperature_on_erab_node(api, erab_node) -> None:
    host, node = erab_node
    await discovered(api, host)
    await api.getAllPropertyMaps(host, 0x01, 0x30, 0x01)
    aircon = HomeAirConditioner(host, api)
    assert await aircon.setMode("heat") is True
    assert await aircon.setOperationalTemperature(22) is True
    assert node.object(AIRCON).read(0xB0) == b"\x43"
    assert node.object(AIRCON).read(0xB3) == b"\x16"


async def test_pychonet_sees_a_refused_set_as_failure(api, erab_node) -> None:
    host, node = erab_node
    await discovered(api, host)
    await api.getAllPropertyMaps(host, 0x01, 0x30, 0x01)
    aircon = HomeAirConditioner(host, api)
    # 0x7F is no operation mode: erab answers SetC_SNA echoing it
    ok = await api.echonetMessage(
        host, 0x01, 0x30, 0x01, 0x61, [{"EPC": 0xB0, "PDC": 1, "EDT": 0x7F}]
    )
    assert ok is False
    assert node.object(AIRCON).read(0xB0) == b"\x42"
    assert await aircon.getMode() is not None
