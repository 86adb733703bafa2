"""``qprserver db upgrade | db check`` through the real CLI, and every database command's
refusal to work on a schema that is not at the newest revision."""

from __future__ import annotations

from pathlib import Path

import pytest

from qprserver.config import DatabaseSettings
from qprserver.db import migrate
from tests.functional.conftest import Instance, write_config

HEAD = migrate.head_revision()


@pytest.fixture
def fresh(tmp_path: Path, database_settings: DatabaseSettings) -> Instance:
    """An instance whose database is still empty (no ``init``)."""
    return Instance(tmp_path, write_config(tmp_path, database_settings))


def test_db_upgrade_migrates_an_empty_database_and_db_check_then_passes(fresh: Instance) -> None:
    assert fresh.ok("db", "upgrade").strip() == f"database at revision {HEAD}"
    assert fresh.ok("db", "upgrade").strip() == f"database at revision {HEAD}"  # idempotent
    assert fresh.json("db", "check") == {"ok": True, "problems": []}
    assert fresh.ok("db", "check").strip() == f"database matches models at revision {HEAD}"


def test_db_check_fails_on_a_table_the_models_do_not_know(instance: Instance) -> None:
    instance.sql("CREATE TABLE stray_table (id INTEGER PRIMARY KEY)")
    line = instance.fails("db", "check")
    assert line.startswith("Error: schema differs from models: ") and "stray_table" in line
    result = instance.run("db", "check", "--json")
    # The JSON report still comes on stdout, so a script sees what differs.
    assert result.returncode == 1 and '"ok": false' in result.stdout
    assert "stray_table" in result.stdout


def test_db_upgrade_with_an_unusable_database_url_fails_naming_the_setting(
    tmp_path: Path,
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[database]\nurl = "mysql://localhost/qpr"\n', encoding="utf-8")
    line = Instance(tmp_path, config).fails("db", "upgrade")
    assert line.startswith("Error: ") and "database.url" in line


@pytest.mark.parametrize(
    "command",
    [
        ("account", "list"),
        ("account", "show", "105830016"),
        ("audit", "list"),
        ("audit", "verify"),
        ("route", "list"),
        ("document", "list", "--depositor", "105830016"),
        ("mail", "list"),
        ("bans", "list"),
        ("jobs", "list"),
    ],
    ids=" ".join,
)
def test_a_command_on_an_unmigrated_database_asks_for_db_upgrade(
    fresh: Instance, command: tuple[str, ...]
) -> None:
    line = fresh.fails(*command)
    assert line == (
        f"Error: database schema at nothing, expected {HEAD}: run `qprserver db upgrade`"
    )
