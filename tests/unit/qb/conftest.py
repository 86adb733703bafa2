"""The real G-BA schema and report of 2019, and modified copies of the report.

The files are read from ``QB_DATA`` (``../shared/data/qb`` or ``$QPR_QB_DATA``) and
never copied into the project; tests skip with the reason when they are absent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qprserver.config import QbSettings
from tests.conftest import QB_DATA

SCHEMA_2019 = QB_DATA / "qb-2019-schema.xsd"
REPORT_2019 = QB_DATA / "260100023-01-2019-xml.xml"

Variant = Callable[..., Path]


def require_qb_data() -> None:
    """Skip, naming the folder, when the real Qb files are not there."""
    missing = [p.name for p in (SCHEMA_2019, REPORT_2019) if not p.is_file()]
    if missing:
        pytest.skip(
            f"real Qb test data missing in {QB_DATA} ({', '.join(missing)}); "
            "set QPR_QB_DATA to the folder holding them"
        )


@pytest.fixture
def qb_settings() -> QbSettings:
    """Settings with the real 2019 schema and the shipped 2019 rules."""
    require_qb_data()
    return QbSettings.model_validate({"schemas": {"2019": str(SCHEMA_2019)}})


@pytest.fixture
def real_report() -> Path:
    require_qb_data()
    return REPORT_2019


@pytest.fixture
def variant(tmp_path: Path) -> Variant:
    """Write a copy of the real report with text replaced.

    Each old text must occur exactly once, or at least once with ``every=True``.
    """
    require_qb_data()

    def make(
        *replacements: tuple[str, str],
        name: str = REPORT_2019.name,
        every: bool = False,
    ) -> Path:
        text = REPORT_2019.read_text(encoding="utf-8")
        for old, new in replacements:
            found = text.count(old)
            assert found == 1 or (every and found), f"{old!r} found {found} times"
            text = text.replace(old, new)
        folder = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
        folder.mkdir()
        path = folder / name
        path.write_text(text, encoding="utf-8")
        return path

    return make
