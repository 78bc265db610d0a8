"""The Python examples in the docs are true: each runs as a doctest, or says why it cannot.

A ```python block whose lines start with ``>>>`` is run with :mod:`doctest`.  A block that
needs what a test cannot give it (a Wi-SUN dongle on a serial port, a LAN of devices) is
preceded by a line ``<!-- not run: REASON -->``; any other block fails this test, so an
example cannot silently drift from the code.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([*REPO.glob("docs/*.md"), REPO / "README.md"])
BLOCK = re.compile(r"(?P<before>[^\n]*)\n```python\n(?P<body>.*?)```", re.S)
NOT_RUN = re.compile(r"<!-- not run: (?P<reason>.+\S) -->")


def python_blocks(page: Path) -> list[tuple[int, str, str]]:
    """(line number, the line before the fence, body) of every ```python block."""
    text = page.read_text(encoding="utf-8")
    return [
        (text.count("\n", 0, m.start("body")), m.group("before"), m.group("body"))
        for m in BLOCK.finditer(text)
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_example_runs_or_says_why_not(page: Path) -> None:
    unmarked = [
        f"{page.name}:{line}"
        for line, before, body in python_blocks(page)
        if ">>>" not in body and not NOT_RUN.search(before)
    ]
    assert unmarked == [], "write these as doctests (>>>) or mark them <!-- not run: why -->"


def pages_with_doctests() -> list[Path]:
    return [page for page in PAGES if any(">>>" in body for *_, body in python_blocks(page))]


@pytest.mark.parametrize("page", pages_with_doctests(), ids=lambda p: p.name)
def test_the_doctests_in_the_docs_pass(page: Path) -> None:
    parser = doctest.DocTestParser()
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    globs: dict[str, object] = {}  # one namespace per page: later examples build on earlier ones
    ran = 0
    for line, _before, body in python_blocks(page):
        if ">>>" not in body:
            continue
        test = parser.get_doctest(body, globs, f"{page.name}:{line}", str(page), line)
        result = runner.run(test, clear_globs=False)
        globs.update(test.globs)  # DocTest works on a copy
        ran += result.attempted
        assert result.failed == 0, f"{page.name}: a doctest from line {line} failed (see above)"
    assert ran > 0


def test_the_check_catches_an_unmarked_block(tmp_path: Path) -> None:
    page = tmp_path / "x.md"
    page.write_text("Intro\n```python\nprint(1)\n```\n<!-- not run: needs a dongle -->\n"
                    "```python\nawait dongle()\n```\n")
    blocks = python_blocks(page)
    assert [(before, ">>>" in body) for _, before, body in blocks] == [
        ("Intro", False), ("<!-- not run: needs a dongle -->", False)]
    assert [bool(NOT_RUN.search(before)) for _, before, _ in blocks] == [False, True]
