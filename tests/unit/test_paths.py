from __future__ import annotations

import unicodedata

import pytest

from qprserver.exchange.folders import DEPOSITOR_FOLDERS, RECIPIENT_FOLDERS
from qprserver.sftp.paths import (
    MAX_NAME_BYTES,
    MAX_PATH_BYTES,
    BadName,
    BadPath,
    VPath,
    is_temp_name,
    normalise,
    parse,
)

RECIPIENT = RECIPIENT_FOLDERS
DEPOSITOR = DEPOSITOR_FOLDERS
IK = "180500016"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "/"),
        (b".", "/"),
        (b"/", "/"),
        (b"//", "/"),
        (b"//x", "/x"),
        (b"///inbox", "/inbox"),
        (b"//inbox//x", "/inbox/x"),
        (b"inbox/./x", "/inbox/x"),
        (b"inbox/x/", "/inbox/x"),
        (b"..", "/"),
        (b"/..", "/"),
        (b"/../../inbox", "/inbox"),
        (b"../../../../etc/passwd", "/etc/passwd"),
        (b"/inbox/../archive/y", "/archive/y"),
        (b"/inbox/../../../archive/y", "/archive/y"),
        (b"/%2e%2e/inbox", "/%2e%2e/inbox"),  # no URL decoding: a plain name
        ("/Prüfbericht ä.pdf".encode(), "/Prüfbericht ä.pdf"),
    ],
)
def test_paths_normalise_inside_the_account_root(raw: bytes, expected: str) -> None:
    assert normalise(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        b"/inbox/\x00x",
        b"\x00",
        b"/inbox\x00/../etc",
        b"/\xff",
        b"/\xff\xfe/inbox",
        b"/inbox/\xc0\xae\xc0\xae",  # overlong UTF-8 for ".."
        b"/inbox/\xed\xa0\x80",  # a UTF-16 surrogate encoded as UTF-8
        b"/" + b"a" * 5000,
        b"/" + b"x/" * 2600,
    ],
)
def test_impossible_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalise(raw)
    with pytest.raises(BadPath):
        parse(raw, RECIPIENT)


def test_path_length_limit_is_inclusive() -> None:
    longest = b"/" * (MAX_PATH_BYTES - 5) + b"inbox"
    assert len(longest) == MAX_PATH_BYTES
    assert parse(longest, RECIPIENT) == VPath("inbox")
    with pytest.raises(BadPath):
        parse(b"/" + longest, RECIPIENT)


def test_name_length_limit_is_counted_in_bytes() -> None:
    name = "ä" * (MAX_NAME_BYTES // 2)  # two bytes each
    assert parse(f"/inbox/{name}".encode(), RECIPIENT) == VPath("inbox", name=name)
    with pytest.raises(BadPath):
        parse(f"/inbox/{name}ää".encode(), RECIPIENT)
    assert parse(b"/inbox/" + b"a" * MAX_NAME_BYTES, RECIPIENT).name == "a" * MAX_NAME_BYTES
    with pytest.raises(BadPath):
        parse(b"/inbox/" + b"a" * (MAX_NAME_BYTES + 1), RECIPIENT)


@pytest.mark.parametrize(
    ("raw", "folders", "expected"),
    [
        (b"/", RECIPIENT, VPath()),
        (b"", RECIPIENT, VPath()),
        (b"/inbox", RECIPIENT, VPath("inbox")),
        (b"/inbox/", RECIPIENT, VPath("inbox")),
        (b"/inbox/.", RECIPIENT, VPath("inbox")),
        (b"inbox", RECIPIENT, VPath("inbox")),
        (b"/inbox/a.pdf", RECIPIENT, VPath("inbox", name="a.pdf")),
        (b"//inbox//a.pdf", RECIPIENT, VPath("inbox", name="a.pdf")),
        (b"/../inbox/a.pdf", RECIPIENT, VPath("inbox", name="a.pdf")),
        (b"/inbox/x/../a.pdf", RECIPIENT, VPath("inbox", name="a.pdf")),
        (b"/archive/a b.pdf", RECIPIENT, VPath("archive", name="a b.pdf")),
        (b"/bundles/w.zip.sha256", RECIPIENT, VPath("bundles", name="w.zip.sha256")),
        (b"/outbox", DEPOSITOR, VPath("outbox")),
        (b"/outbox/a.pdf", DEPOSITOR, VPath("outbox", name="a.pdf")),
        (f"/outbox/{IK}".encode(), DEPOSITOR, VPath("outbox", direct_ik=IK)),
        (f"/outbox/{IK}/".encode(), DEPOSITOR, VPath("outbox", direct_ik=IK)),
        (
            f"/outbox/{IK}/a.pdf".encode(),
            DEPOSITOR,
            VPath("outbox", direct_ik=IK, name="a.pdf"),
        ),
        (b"/receipts/p.json", DEPOSITOR, VPath("receipts", name="p.json")),
        (b"/inbox/%2e%2e", RECIPIENT, VPath("inbox", name="%2e%2e")),
    ],
)
def test_the_tree_is_parsed_into_folder_recipient_and_name(
    raw: bytes, folders: tuple[str, ...], expected: VPath
) -> None:
    assert parse(raw, folders) == expected


def test_a_place_prints_as_its_normal_path() -> None:
    assert VPath().text() == "/"
    assert VPath("inbox").text() == "/inbox"
    assert VPath("outbox", direct_ik=IK, name="a.pdf").text() == f"/outbox/{IK}/a.pdf"
    assert VPath("outbox", direct_ik=IK).is_dir and not VPath("inbox", name="a").is_dir


@pytest.mark.parametrize(
    ("raw", "folders"),
    [
        (b"/outbox/a.pdf", RECIPIENT),  # a folder the account does not have
        (b"/inbox/a.pdf", DEPOSITOR),
        (b"/x", RECIPIENT),
        (b"/etc/passwd", RECIPIENT),
        (b"/../../etc/passwd", RECIPIENT),
        (f"/{IK}/inbox/a.pdf".encode(), RECIPIENT),  # a home-folder spelling
        (f"../{IK}/inbox/a.pdf".encode(), RECIPIENT),
        (b"/home/x/inbox/a.pdf", RECIPIENT),
        (b"/inbox/a/b", RECIPIENT),  # too deep
        (f"/outbox/{IK}/a/b".encode(), DEPOSITOR),
        (b"/outbox/abc/a.pdf", DEPOSITOR),  # a subfolder that is no IK
        (b"/outbox/12345678/a.pdf", DEPOSITOR),  # eight digits are no IK
        ("/outbox/１８０５００１６/a.pdf".encode(), DEPOSITOR),  # fullwidth digits
        ("/іnbox".encode(), RECIPIENT),  # Cyrillic і
        ("／inbox".encode(), RECIPIENT),  # fullwidth solidus is no separator
        (b"/INBOX", RECIPIENT),  # folder names are case-sensitive
        (b"/inbox/" + b"a" * 256, RECIPIENT),  # a name longer than 255 bytes
        (b"/inbox/a\x1bb", RECIPIENT),  # control characters
        (b"/inbox/a\nb", RECIPIENT),
        (b"/inbox/a\x7f", RECIPIENT),
        (b"/inbox/a.pdf/", RECIPIENT),  # a trailing slash names a folder
        (b"/inbox/a.pdf/.", RECIPIENT),
        (b"/outbox/a.pdf/", DEPOSITOR),
    ],
)
def test_places_outside_the_tree_do_not_exist(raw: bytes, folders: tuple[str, ...]) -> None:
    with pytest.raises(BadPath):
        parse(raw, folders)


def test_no_account_has_a_folder_named_by_another_accounts_ik() -> None:
    for folders in (RECIPIENT, DEPOSITOR, RECIPIENT + DEPOSITOR, ()):
        with pytest.raises(BadPath):
            parse(f"/{IK}".encode(), folders)


@pytest.mark.parametrize(
    ("name", "temp"),
    [
        ("a.pdf.filepart", True),
        ("a.PART", True),
        ("a.tmp", True),
        ("a.pdf.Tmp", True),
        ("a.pdf", False),
        ("filepart.pdf", False),
        ("a.partial", False),
        ("a.pdf.filepart.pdf", False),
        ("", False),
        (".a.pdf.Xy12Zq", True),  # rsync's mkstemp name
        (".in.a.pdf", True),  # lftp's xfer:use-temp-file
        (".in.a.pdf.", True),
        (".a.pdf.Xy12Z", False),
        (".hidden.pdf", False),
        ("in.a.pdf", False),
    ],
)
def test_temporary_upload_names_are_recognised(name: str, temp: bool) -> None:
    assert is_temp_name(name) is temp


def test_an_nfd_spelling_names_the_same_file_as_the_nfc_one() -> None:
    nfc = "/outbox/Prüfbericht_Müller.pdf"
    nfd = unicodedata.normalize("NFD", nfc)
    assert parse(nfd.encode(), DEPOSITOR) == parse(nfc.encode(), DEPOSITOR)
    assert parse(nfd.encode(), DEPOSITOR).name == "Prüfbericht_Müller.pdf"


def test_a_control_character_in_a_path_gives_its_reason() -> None:
    with pytest.raises(BadName, match="Steuerzeichen U\\+001B an Stelle 2"):
        parse(b"/outbox/a\x1bb.pdf", DEPOSITOR)
