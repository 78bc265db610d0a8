"""A missing test peer skips on a developer's machine and fails under CI."""

from __future__ import annotations

import pytest

from tests import requires


def test_a_missing_peer_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requires, "UNDER_CI", True)
    with pytest.raises(pytest.fail.Exception, match="no_such_peer_xyz is not installed"):
        requires.peer("no_such_peer_xyz")


def test_a_missing_peer_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(requires, "UNDER_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no_such_peer_xyz"):
        requires.peer("no_such_peer_xyz")


def test_an_installed_peer_is_imported() -> None:
    assert requires.peer("json").dumps([1]) == "[1]"
