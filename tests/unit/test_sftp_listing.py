"""Listing lines made by the session match what asyncssh itself would make."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncssh
import pytest
from asyncssh import SFTPName

from qprserver.exchange import mailbox
from qprserver.sftp.attrs import entry_attrs, listed_name


class _Owner:
    """Stands in for the session in asyncssh's ``format_longname``."""

    def format_user(self, uid: int | None) -> str:
        return "180500016"

    def format_group(self, gid: int | None) -> str:
        return "qpr"


@pytest.mark.parametrize(
    ("name", "size", "mtime"),
    [
        ("510512349_pruefbericht_2026.pdf", 48, datetime.now(UTC).replace(microsecond=0)),
        ("510512349_a.pdf", 123_456_789, datetime(2026, 3, 1, 7, 5, tzinfo=UTC)),
        ("260100023-01-2019-xml.xml", 0, datetime(2019, 12, 31, 23, 59, tzinfo=UTC)),
        ("Prüfbericht ä.pdf", 7, datetime(2026, 11, 2, 9, 30, 15, tzinfo=UTC)),
    ],
)
def test_listed_names_equal_asyncssh_formatting(name: str, size: int, mtime: datetime) -> None:
    entry = mailbox.Entry(1, name, size, mtime, "0" * 64)
    mine = listed_name(entry, "180500016", time.time())
    reference = SFTPName(name.encode("utf-8"), attrs=entry_attrs(entry))
    asyncssh.SFTPServer.format_longname(_Owner(), reference)  # type: ignore[arg-type]
    assert mine.longname == reference.longname
    assert mine.attrs.encode(3) == reference.attrs.encode(3)
    assert mine.filename == reference.filename
