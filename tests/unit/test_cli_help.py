"""newuser21: what an operator reading `--help` needs is there: `tessera fsck --help` says
what the exit statuses mean (a script branches on them), and every option of `tessera node
add` says what it takes (`--id` and `--weight` had no text)."""

from __future__ import annotations

import argparse

from ops import cli, nodecli


def _sub(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise AssertionError(f"no subcommand {name}")


def test_fsck_help_says_what_each_exit_status_means() -> None:
    text = " ".join(_sub(cli.build_parser(), "fsck").format_help().split())
    for words in ("Exit 0 clean", "1 errors found", "2 incomplete"):
        assert words in text, text


def test_every_option_of_node_add_has_help() -> None:
    add = _sub(nodecli.build_parser(), "add")
    bare = [a.option_strings for a in add._actions if a.option_strings and not a.help]
    assert bare == [], bare
