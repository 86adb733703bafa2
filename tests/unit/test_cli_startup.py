"""The CLI starts without the domain's heavy libraries; they come with the commands."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest

from qprserver.cli.main import COMMANDS, cli
from qprserver.db import migrate

HEAVY = ("sqlalchemy", "asyncssh", "lxml", "aiosmtplib", "apscheduler", "jinja2", "rich", "alembic")


def _modules_after(code: str) -> set[str]:
    """The top-level packages imported by code, run in a fresh interpreter."""
    report = "import json, sys\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    probe = f"{code}\n{report}"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_importing_the_cli_imports_none_of_the_heavy_libraries() -> None:
    loaded = _modules_after("import qprserver.cli.main")
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_help_imports_none_of_the_heavy_libraries() -> None:
    code = (
        "from qprserver.cli.main import cli\n"
        "try:\n    cli(['--help'], prog_name='qprserver')\nexcept SystemExit:\n    pass"
    )
    loaded = _modules_after(code)
    assert loaded.isdisjoint(HEAVY), sorted(loaded & set(HEAVY))


def test_loading_the_account_commands_leaves_mail_ssh_and_xml_libraries_out() -> None:
    loaded = _modules_after("import qprserver.cli.accounts")
    assert loaded.isdisjoint({"asyncssh", "lxml", "aiosmtplib", "jinja2", "alembic"})


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_overview_help_of_each_command_is_the_commands_own(name: str) -> None:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None and command.name == name
    assert COMMANDS[name].short_help == command.get_short_help_str(limit=200)


def test_the_revision_read_from_the_migration_files_is_alembics_head() -> None:
    assert migrate.shipped_head() == migrate.head_revision()
