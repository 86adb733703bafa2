"""HTTP download details: the attachment header and the one range we serve."""

from __future__ import annotations

import io
import zipfile

import pytest

from qprserver.web.downloads import _Pipe, content_disposition, parse_range


def test_the_real_name_goes_in_filename_star_and_an_ascii_fallback_in_filename() -> None:
    header = content_disposition('Prüf"bericht; 1%.pdf')
    assert header == (
        'attachment; filename="Pr_f_bericht_ 1_.pdf"; '
        "filename*=UTF-8''Pr%C3%BCf%22bericht%3B%201%25.pdf"
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 100)),
        ("bytes=-30", (70, 100)),
        ("bytes=90-500", (90, 100)),
        ("bytes=100-", False),
        ("bytes=-0", False),
        ("bytes=0-1,5-6", None),  # several ranges: the whole file
        ("items=0-1", None),
    ],
)
def test_a_range_header_gives_one_range_the_whole_file_or_unsatisfiable(
    header: str | None, expected: object
) -> None:
    assert parse_range(header, 100) == expected


def test_zipfile_writes_a_readable_archive_onto_a_writer_that_cannot_seek() -> None:
    pipe = _Pipe()
    out = bytearray()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED) as archive:
        with archive.open("a.txt", "w") as member:
            member.write(b"hello")
        out += pipe.take()
    out += pipe.take()
    with zipfile.ZipFile(io.BytesIO(bytes(out))) as back:
        assert back.read("a.txt") == b"hello"
