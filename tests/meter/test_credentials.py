"""Route B credentials: where they come from, what is allowed, and that they stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from erab.meter.routeb import RouteBCredentials
from tests.meter.conftest import PASSWORD, RBID


def test_password_is_not_in_the_repr() -> None:
    assert PASSWORD not in repr(RouteBCredentials(RBID, PASSWORD))


def test_id_must_be_32_and_password_12_characters() -> None:
    with pytest.raises(ValueError, match="32 ASCII"):
        RouteBCredentials("X" * 31, PASSWORD)
    with pytest.raises(ValueError, match="12 ASCII"):
        RouteBCredentials(RBID, "short")


def test_environment_gives_both_or_neither() -> None:
    both = {"ERAB_ROUTEB_ID": RBID, "ERAB_ROUTEB_PASSWORD": PASSWORD}
    assert RouteBCredentials.from_env(both) == RouteBCredentials(RBID, PASSWORD)
    assert RouteBCredentials.from_env({}) is None
    with pytest.raises(ValueError, match="both"):
        RouteBCredentials.from_env({"ERAB_ROUTEB_ID": RBID})


def test_file_as_json_or_two_lines(tmp_path: Path) -> None:
    js = tmp_path / "c.json"
    js.write_text(f'{{"id": "{RBID}", "password": "{PASSWORD}"}}')
    lines = tmp_path / "c.txt"
    lines.write_text(f"{RBID}\n{PASSWORD}\n")
    assert RouteBCredentials.from_file(js) == RouteBCredentials.from_file(lines)


def test_a_file_of_another_shape_says_what_is_expected(tmp_path: Path) -> None:
    bad = tmp_path / "c.txt"
    bad.write_text("just one line\n")
    with pytest.raises(ValueError, match="two lines"):
        RouteBCredentials.from_file(bad)
    wrong_keys = tmp_path / "c.json"
    wrong_keys.write_text('{"user": "x"}')
    with pytest.raises(ValueError, match="'id' and 'password'"):
        RouteBCredentials.from_file(wrong_keys)
