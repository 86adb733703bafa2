"""The Folder enum: the names clients see and the values the database keeps."""

from __future__ import annotations

from sqlalchemy import CheckConstraint

from qprserver.db.models import Delivery
from qprserver.exchange.folders import (
    BY_NAME,
    DELIVERY_FOLDERS,
    DEPOSITOR_FOLDERS,
    RECIPIENT_FOLDERS,
    SUPERSEDED,
    Folder,
)
from qprserver.sftp.paths import parse


def test_folders_are_the_top_level_names_of_the_tree() -> None:
    assert [f.value for f in Folder] == ["inbox", "archive", "bundles", "outbox", "receipts"]
    assert set(RECIPIENT_FOLDERS) | set(DEPOSITOR_FOLDERS) == set(Folder)
    assert BY_NAME["outbox"] is Folder.OUTBOX


def test_a_folder_compares_formats_and_is_stored_as_its_plain_name() -> None:
    assert Folder.INBOX == "inbox" and f"/{Folder.INBOX}/a.pdf" == "/inbox/a.pdf"
    assert hash(Folder.ARCHIVE) == hash("archive")


def test_delivery_folders_are_exactly_what_the_database_allows() -> None:
    (check,) = (
        c
        for c in Delivery.__table__.constraints
        if isinstance(c, CheckConstraint) and "folder" in str(c.sqltext)
    )
    stored = ", ".join(f"'{value}'" for value in (*DELIVERY_FOLDERS, SUPERSEDED))
    assert str(check.sqltext) == f"folder IN ({stored})"


def test_a_parsed_path_names_its_folder_by_the_enum() -> None:
    vpath = parse(b"/outbox/190500027/a.pdf", DEPOSITOR_FOLDERS)
    assert vpath.folder is Folder.OUTBOX
    assert vpath.direct_ik == "190500027" and vpath.name == "a.pdf"
