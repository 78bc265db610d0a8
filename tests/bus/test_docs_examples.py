"""The payload examples in docs/bus.md are valid messages of their kind."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from erab.bus import MessageKind, decode_command, decode_uplink
from erab.bus.schema import kind_of

DOC = Path(__file__).resolve().parents[2] / "docs" / "bus.md"
EXAMPLE = re.compile(r"### `(?P<kind>[a-z]+)`\n.*?```json\n(?P<body>.*?)```", re.S)
NOW = datetime(2026, 8, 1, 13, 5, tzinfo=UTC)


def examples() -> list[tuple[str, str]]:
    return [(m.group("kind"), m.group("body")) for m in EXAMPLE.finditer(DOC.read_text())]


def test_every_kind_has_an_example() -> None:
    assert sorted(kind for kind, _ in examples()) == sorted(k.value for k in MessageKind)


@pytest.mark.parametrize(("kind", "body"), examples(), ids=[k for k, _ in examples()])
def test_the_example_decodes_on_its_topic(kind: str, body: str) -> None:
    topic = f"erab/v1/gw/gw-0001/{kind}"
    if kind == MessageKind.COMMAND.value:
        assert decode_command(topic, body.encode()).gateway_id == "gw-0001"
    else:
        assert kind_of(decode_uplink(topic, body.encode(), NOW)).value == kind
