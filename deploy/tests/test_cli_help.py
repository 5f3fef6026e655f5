"""`visio-rdv --help` says what the command is for; every subcommand and every flag has help;
`--version` answers; `up --help` lists every setting `up` reads."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator

from visio_deploy.cli import build_parser
from visio_deploy.up import UpSettings


def walk(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("visio-rdv",)
) -> Iterator[tuple[str, argparse.Action | None, str | None]]:
    """(command path, action, its help) for every flag and argument; (path, None, help) for
    every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{' '.join(path)} {name}", None, helps.get(name)
                yield from walk(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action, action.help


def test_every_subcommand_and_every_flag_has_help() -> None:
    missing = [
        f"{where} {'/'.join(action.option_strings) or action.dest if action else ''}".strip()
        for where, action, text in walk(build_parser())
        if not text
    ]
    assert missing == []


def test_a_flag_without_help_is_caught() -> None:
    parser = build_parser()
    ops = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    ops.choices["stack"].add_argument("--undocumented")
    assert [a.dest for _, a, text in walk(parser) if a and not text] == ["undocumented"]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "visio_deploy", *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_help_says_what_the_command_is_for_and_version_answers() -> None:
    helped = run("--help")
    assert helped.returncode == 0
    assert "video appointments" in helped.stdout and "docs/runbook.md" in helped.stdout
    # Not how it is built.
    assert "register(subparsers)" not in helped.stdout
    versioned = run("--version")
    assert versioned.returncode == 0
    assert versioned.stdout.startswith("visio-rdv 0.")


def test_up_help_lists_each_setting_it_reads() -> None:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = commands.choices["up"].format_help()
    for name in UpSettings.model_fields:
        assert f"VISIO_{name.upper()}" in text, name
    assert "DATABASE_URL" in text and "VISIO_EMAIL_LATE_AFTER_MINUTES" in text
