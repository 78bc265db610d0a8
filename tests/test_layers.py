"""Layering (ARCHITECTURE.md, "Package layout"): a lower folder never imports a higher one."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "erab"

# folder -> the erab folders it may import (besides itself and the top-level modules
# clock and settings, which every component may use)
ALLOWED: dict[str, set[str]] = {
    "echonet": set(),
    "devices": {"echonet"},
    # the route A head-end stores readings behind the store interface the aggregator shares
    "meter": {"echonet", "devices", "store"},
    "security": set(),
    "store": set(),
    "bus": {"security"},
    "gateway": {"echonet", "meter", "security", "bus"},
    "aggregator": {"bus", "security", "store"},
    "openadr": {"aggregator"},
    "web": {"aggregator"},
}
TOP_LEVEL = {"clock", "settings"}


def erab_imports(path: Path) -> set[str]:
    """The first component under ``erab`` of every module ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "erab" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_folder_imports_only_lower_layers(folder: str) -> None:
    allowed = ALLOWED[folder] | TOP_LEVEL | {folder}
    violations = []
    for path in sorted((SRC / folder).rglob("*.py")):
        for imported in sorted(erab_imports(path) - allowed):
            violations.append(f"{path.relative_to(SRC)} imports erab.{imported}")
    assert violations == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from erab.sim import build_emulation\nimport erab.clock\n")
    assert erab_imports(module) == {"sim", "clock"}


# folder -> third-party packages it may use (ARCHITECTURE.md: echonet is stdlib only;
# security uses cryptography, argon2 and zxcvbn for passwords)
THIRD_PARTY_ALLOWED: dict[str, set[str]] = {
    "echonet": set(),
    "security": {"cryptography", "argon2", "zxcvbn"},
    "bus": {"nats", "aiomqtt", "paho", "msgspec"},
}


def third_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return {name for name in found if name not in sys.stdlib_module_names} - {"erab"}


@pytest.mark.parametrize("folder", sorted(THIRD_PARTY_ALLOWED))
def test_folder_uses_only_its_chosen_dependencies(folder: str) -> None:
    violations = []
    for path in sorted((SRC / folder).rglob("*.py")):
        for name in sorted(third_party_imports(path) - THIRD_PARTY_ALLOWED[folder]):
            violations.append(f"{path.relative_to(SRC)} imports {name}")
    assert violations == []
