"""The `erab` entry point: help, groups, errors and pipes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from erab.cli import main


def test_help_lists_every_command_group(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for group in ("el", "emulate", "meter", "pki", "audit", "security"):
        assert f"    {group}" in out


def test_a_group_without_subcommand_shows_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["el"]) == 2
    assert "decode" in capsys.readouterr().out


def test_a_closed_pipe_ends_quietly() -> None:
    # `erab el decode --json ... | head -c 10`: the reader leaves early; no error, no traceback.
    # 400 frames give well over a pipe buffer (64 KiB) of JSON, so the writer must see EPIPE.
    frames = ["1081000001300505FF017201B00142"] * 400
    proc = subprocess.Popen(
        [sys.executable, "-m", "erab", "el", "decode", "--json", *frames],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.read(10)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0
    assert first.startswith(b"[")
    assert err == ""
