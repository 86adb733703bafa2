"""The README's "Command line" list and the CLI name the same commands."""

from __future__ import annotations

import re
from pathlib import Path

import click

from qprserver.cli.main import cli

README = Path(__file__).resolve().parents[2] / "README.md"
WORD = re.compile(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*")


def readme_commands() -> set[tuple[str, ...]]:
    """Command paths of the README's list: ``account key add``, ``bans remove``…

    After a ``|`` an alternative may leave out its group (``totp disable`` after
    ``account totp enable``); ``disable|enable`` names two commands."""
    block = README.read_text(encoding="utf-8").split("## Command line", 1)[1].split("```")[1]
    found: set[tuple[str, ...]] = set()
    top = set(cli.list_commands(click.Context(cli)))
    for line in block.splitlines():
        text = line.split("#", 1)[0].strip().removeprefix("qprserver ")
        previous: tuple[str, ...] = ()
        for alternative in text.split(" | "):
            words: list[str] = []
            for word in alternative.split():
                if not WORD.fullmatch(word):
                    break
                words.append(word)
            if not words:
                continue
            if words[0] not in top:
                shared = previous[: previous.index(words[0])] if words[0] in previous else ()
                words = [*shared, *words] if shared else [*previous[:1], *words]
            *head, last = words
            for name in last.split("|"):
                found.add((*head, name))
            previous = tuple(words)
    return found


def cli_commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every visible command of the CLI, as its path of names."""
    ctx = click.Context(group)
    found: set[tuple[str, ...]] = set()
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if command.hidden:
            continue
        if isinstance(command, click.Group):
            found |= cli_commands(command, (*path, name))
        else:
            found.add((*path, name))
    return found


def test_the_readme_lists_every_command_of_the_cli_and_no_other() -> None:
    readme = readme_commands()
    assert ("account", "key", "remove") in readme and ("account", "enable") in readme
    assert readme == cli_commands()
