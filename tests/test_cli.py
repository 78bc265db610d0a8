"""The `erab` entry point: help, groups, errors and pipes."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

import pytest

from erab.cli import build_parser, main
from erab.cli.flags import deprecated_alias


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


Command = tuple[str, argparse.ArgumentParser, str | None]


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[Command]:
    """Every (command path, parser, its one-line help) under ``parser``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield f"{path} {name}", child, helps.get(name)
                yield from _walk(child, f"{path} {name}")


def test_every_subcommand_has_a_description_and_every_positional_has_help() -> None:
    missing: list[str] = []
    for path, sub, one_line in _walk(build_parser(), "erab"):
        if not one_line:
            missing.append(f"{path}: no one-line description in its group's --help")
        for action in sub._actions:
            group = isinstance(action, argparse._SubParsersAction)
            if not action.option_strings and not group and not action.help:
                missing.append(f"{path}: positional {action.dest} has no help")
    assert missing == []


def test_an_old_flag_spelling_still_works_and_warns(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float)
    parser.add_argument("--json", action="store_true")
    deprecated_alias(parser, "--seconds", new="--duration", type=float)
    deprecated_alias(parser, "--as-json", new="--json", flag=True)
    args = parser.parse_args(["--seconds", "2.5", "--as-json"])
    assert args.duration == 2.5 and args.json is True
    err = capsys.readouterr().err
    assert "--seconds is deprecated" in err and "use --duration" in err
    assert "--seconds" not in parser.format_help()
    assert parser.parse_args([]).duration is None
