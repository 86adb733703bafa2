from __future__ import annotations

import pytest

from qprserver.sftp.paths import BadPath, VPath, is_temp_name, normalise, parse

RECIPIENT = ("inbox", "archive", "bundles")
DEPOSITOR = ("outbox", "receipts")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "/"),
        (b".", "/"),
        (b"/", "/"),
        (b"//inbox//x", "/inbox/x"),
        (b"inbox/./x", "/inbox/x"),
        (b"/../../inbox", "/inbox"),
        (b"/inbox/../archive/y", "/archive/y"),
    ],
)
def test_paths_normalise_inside_the_account_root(raw: bytes, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize("raw", [b"/inbox/\x00x", b"/\xff", b"/" + b"a" * 5000])
def test_impossible_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalise(raw)


def test_the_tree_is_parsed_into_folder_recipient_and_name() -> None:
    assert parse(b"/", RECIPIENT) == VPath()
    assert parse(b"/inbox", RECIPIENT) == VPath("inbox")
    assert parse(b"/inbox/a.pdf", RECIPIENT) == VPath("inbox", name="a.pdf")
    assert parse(b"/outbox/180500016", DEPOSITOR) == VPath("outbox", direct_ik="180500016")
    assert parse(b"/outbox/180500016/a.pdf", DEPOSITOR) == VPath(
        "outbox", direct_ik="180500016", name="a.pdf"
    )
    assert parse(b"/outbox/180500016/a.pdf", DEPOSITOR).text() == "/outbox/180500016/a.pdf"


@pytest.mark.parametrize(
    ("raw", "folders"),
    [
        (b"/outbox/a.pdf", RECIPIENT),  # a folder the account does not have
        (b"/inbox/a/b", RECIPIENT),  # too deep
        (b"/outbox/abc/a.pdf", DEPOSITOR),  # a subfolder that is no IK
        ("/іnbox".encode(), RECIPIENT),  # a look-alike of a folder name
        (b"/inbox/" + b"a" * 256, RECIPIENT),  # a name longer than 255 bytes
        (b"/inbox/a\x1bb", RECIPIENT),  # control characters
    ],
)
def test_places_outside_the_tree_do_not_exist(raw: bytes, folders: tuple[str, ...]) -> None:
    with pytest.raises(BadPath):
        parse(raw, folders)


@pytest.mark.parametrize(
    ("name", "temp"),
    [("a.pdf.filepart", True), ("a.PART", True), ("a.tmp", True), ("a.pdf", False)],
)
def test_temporary_upload_names_are_recognised(name: str, temp: bool) -> None:
    assert is_temp_name(name) is temp
