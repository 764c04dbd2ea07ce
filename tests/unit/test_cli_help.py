"""Every `slm-fleet` command and subcommand prints its help: the parser tree is walked, not listed."""

from __future__ import annotations

import argparse

import pytest

from serving.cli.main import build_parser, main


def command_paths(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """``path`` and the path of every subcommand below it."""
    paths = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths += command_paths(sub, path + (name,))
    return paths


PATHS = command_paths(build_parser())


def test_the_walk_finds_nested_commands():
    assert ("rollout", "promote") in PATHS and ("adapters", "push") in PATHS and () in PATHS


@pytest.mark.parametrize("path", PATHS, ids=[" ".join(p) or "slm-fleet" for p in PATHS])
def test_help_of_every_command(path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*path, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: slm-fleet" + "".join(f" {p}" for p in path))
