from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from qprserver.content import ContentRejected, check_content


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_complete_pdf_passes(tmp_path: Path) -> None:
    check_content(_file(tmp_path, "a.pdf", b"%PDF-1.7\n...\n%%EOF\n\x00"), "a.pdf")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Leere Datei"),
        (b"<html>%%EOF", "Kopfzeile %PDF- fehlt"),
        (b"%PDF-1.7\n1 0 obj", "%%EOF fehlt"),
    ],
)
def test_broken_pdfs_are_rejected_with_the_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    with pytest.raises(ContentRejected, match=reason):
        check_content(_file(tmp_path, "a.PDF", data), "a.PDF")


def test_malformed_xml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ContentRejected, match="Zeile 3"):
        check_content(_file(tmp_path, "a.xml", b"<a>\n<b>\n</a>"), "a.xml")


def test_billion_laughs_is_rejected_without_expansion(tmp_path: Path) -> None:
    lol = b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    for i in range(1, 10):
        prev = b"&lol;" if i == 1 else b"&lol%d;" % (i - 1)
        lol += b'<!ENTITY lol%d "%s">\n' % (i, prev * 10)
    lol += b"]>\n<lolz>&lol9;</lolz>\n"
    path = _file(tmp_path, "bomb.xml", lol)
    tracemalloc.start()
    start = time.monotonic()
    with pytest.raises(ContentRejected, match="DTD"):
        check_content(path, "bomb.xml")
    elapsed = time.monotonic() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 10 * 1024 * 1024


def test_external_entity_is_rejected(tmp_path: Path) -> None:
    xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    with pytest.raises(ContentRejected, match="DTD"):
        check_content(_file(tmp_path, "x.xml", xxe), "x.xml")


def test_doctype_after_a_long_prolog_is_still_rejected(tmp_path: Path) -> None:
    data = b"<?xml version='1.0'?>" + b"<!--" + b"x" * 70000 + b"-->" + b"<!DOCTYPE r><r/>"
    with pytest.raises(ContentRejected):
        check_content(_file(tmp_path, "late.xml", data), "late.xml")


def test_zip_needs_a_readable_directory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "a")
    check_content(_file(tmp_path, "ok.zip", buffer.getvalue()), "ok.zip")
    with pytest.raises(ContentRejected, match="ZIP"):
        check_content(_file(tmp_path, "bad.zip", buffer.getvalue()[:-30]), "bad.zip")


def test_other_types_only_need_content(tmp_path: Path) -> None:
    check_content(_file(tmp_path, "a.csv", b"x;y\n"), "a.csv")
    with pytest.raises(ContentRejected, match="Leere Datei"):
        check_content(_file(tmp_path, "a.csv", b""), "a.csv")
