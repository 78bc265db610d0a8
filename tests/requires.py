"""What a test needs from the machine: skipped on a developer's machine, a failure under CI.

CI (the ``CI`` environment variable) installs every test peer and service, so a missing one
there means the run is broken, and a silent skip would hide it.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

UNDER_CI = bool(os.environ.get("CI"))


def missing(reason: str) -> None:
    """Skip this test for ``reason``, or fail it under CI."""
    if UNDER_CI:
        pytest.fail(f"{reason} (CI is set: every test peer and service must be present)")
    pytest.skip(reason, allow_module_level=True)


def peer(name: str) -> ModuleType:
    """Import the test peer ``name`` (an independent implementation used only by tests)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        missing(f"test peer {name} is not installed ({exc}); pip install -e '.[test]'")
        raise  # not reached: missing() always raises


def skip_unless(condition: bool, reason: str) -> pytest.MarkDecorator:
    """A skipif mark that never skips under CI: there the test runs and fails on its own."""
    return pytest.mark.skipif(not condition and not UNDER_CI, reason=reason)
