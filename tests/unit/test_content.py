from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from pathlib import Path

import pytest
from lxml import etree

from qprserver.config import QbSettings
from qprserver.exchange.content import (
    ContentRejected,
    check_content,
    parse_xml_safely,
)

# The configured default (``qb.max_xml_bytes``): the one limit XML uploads are parsed with.
MAX_XML_BYTES = QbSettings().max_xml_bytes


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _billion_laughs() -> bytes:
    doc = b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    for i in range(1, 10):
        prev = b"&lol;" if i == 1 else b"&lol%d;" % (i - 1)
        doc += b'<!ENTITY lol%d "%s">\n' % (i, prev * 10)
    return doc + b"]>\n<lolz>&lol9;</lolz>\n"


def _accepts(path: Path, name: str, max_xml_bytes: int = MAX_XML_BYTES) -> bool:
    try:
        check_content(path, name, max_xml_bytes=max_xml_bytes)
    except ContentRejected:
        return False
    return True


def _rejection(path: Path, name: str) -> str:
    with pytest.raises(ContentRejected) as info:
        check_content(path, name, max_xml_bytes=MAX_XML_BYTES)
    return info.value.reason


def test_complete_pdf_passes(tmp_path: Path) -> None:
    path = _file(tmp_path, "a.pdf", b"%PDF-1.7\n...\n%%EOF\n\x00")
    assert _accepts(path, "a.pdf")


def test_pdf_with_an_incremental_update_tail_passes(tmp_path: Path) -> None:
    data = b"%PDF-1.4\n" + b"x" * 5000 + b"%%EOF\n" + b"trailer<<>>\n" + b" " * 3000
    assert _accepts(_file(tmp_path, "a.pdf", data), "a.pdf")


def test_truncated_pdf_is_rejected(tmp_path: Path) -> None:
    whole = b"%PDF-1.7\n" + b"1 0 obj << >> endobj\n" * 200 + b"%%EOF\n"
    path = _file(tmp_path, "cut.pdf", whole[: len(whole) // 2])
    assert _rejection(path, "cut.pdf") == (
        "PDF unvollständig: Endemarke %%EOF fehlt (abgebrochene Übertragung?)"
    )


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Leere Datei"),
        (b"<html>%%EOF", "Keine PDF-Datei: Kopfzeile %PDF- fehlt"),
        (b"%PDF-1.7\n1 0 obj", "PDF unvollständig: Endemarke %%EOF fehlt"),
        (b"%PDF-1.7\n%%EOF" + b"x" * 2000, "PDF unvollständig"),
    ],
)
def test_broken_pdfs_are_rejected_with_the_reason(tmp_path: Path, data: bytes, reason: str) -> None:
    # Upper case on purpose: the type comes from the extension, whatever its case.
    assert _rejection(_file(tmp_path, "a.PDF", data), "a.PDF").startswith(reason)


def test_well_formed_xml_passes_and_parses(tmp_path: Path) -> None:
    path = _file(tmp_path, "q.xml", "<Qualitaetsbericht><a>Öl</a></Qualitaetsbericht>".encode())
    assert _accepts(path, "q.XML")
    tree = parse_xml_safely(path, max_bytes=MAX_XML_BYTES)
    assert tree.getroot().tag == "Qualitaetsbericht"
    assert tree.findtext("a") == "Öl"


def test_malformed_xml_names_the_line(tmp_path: Path) -> None:
    reason = _rejection(_file(tmp_path, "a.xml", b"<a>\n<b>\n</a>"), "a.xml")
    assert reason.startswith("XML nicht wohlgeformt: Zeile 3: ")
    assert "\n" not in reason


def test_billion_laughs_is_rejected_without_expansion(tmp_path: Path) -> None:
    path = _file(tmp_path, "bomb.xml", _billion_laughs())
    tracemalloc.start()
    start = time.monotonic()
    try:
        reason = _rejection(path, "bomb.xml")
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert reason == "XML enthält eine DTD/Entitäten; nicht erlaubt"
    assert elapsed < 1.0 and peak < 10 * 1024 * 1024


def test_billion_laughs_in_utf16_is_rejected_as_a_dtd(tmp_path: Path) -> None:
    # A byte search for "<!DOCTYPE" would miss this one.
    doc = _billion_laughs().decode().replace('version="1.0"', 'version="1.0" encoding="UTF-16"')
    path = _file(tmp_path, "bomb16.xml", doc.encode("utf-16"))
    start = time.monotonic()
    assert "DTD" in _rejection(path, "bomb16.xml")
    assert time.monotonic() - start < 1.0


def test_external_entity_is_rejected_without_reading_the_file(tmp_path: Path) -> None:
    secret = _file(tmp_path, "secret.txt", b"TOP-SECRET-CONTENT")
    xxe = (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">'
        b'<!ENTITY y SYSTEM "' + secret.as_uri().encode() + b'">]>\n'
        b"<r>&x;&y;</r>"
    )
    path = _file(tmp_path, "x.xml", xxe)
    start = time.monotonic()
    reason = _rejection(path, "x.xml")
    assert reason == "XML enthält eine DTD/Entitäten; nicht erlaubt"
    assert "root:" not in reason and "TOP-SECRET" not in reason
    assert time.monotonic() - start < 1.0
    with pytest.raises(ContentRejected, match="DTD"):
        parse_xml_safely(path, max_bytes=MAX_XML_BYTES)


def test_external_dtd_reference_is_rejected(tmp_path: Path) -> None:
    data = b'<!DOCTYPE r SYSTEM "http://example.invalid/r.dtd"><r/>'
    assert "DTD" in _rejection(_file(tmp_path, "ext.xml", data), "ext.xml")


def test_doctype_after_a_long_prolog_is_still_rejected(tmp_path: Path) -> None:
    data = b"<?xml version='1.0'?>" + b"<!--" + b"x" * 200_000 + b"-->" + b"<!DOCTYPE r><r/>"
    assert "DTD" in _rejection(_file(tmp_path, "late.xml", data), "late.xml")


def test_xml_above_the_size_limit_is_rejected_before_parsing(tmp_path: Path) -> None:
    path = _file(tmp_path, "big.xml", b"<r>" + b"x" * 2000 + b"</r>")
    with pytest.raises(ContentRejected, match="größer als die erlaubten 1000 Bytes"):
        check_content(path, "big.xml", max_xml_bytes=1000)
    assert _accepts(path, "big.xml", max_xml_bytes=10_000)


def test_zip_needs_a_readable_directory(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "a")
    assert _accepts(_file(tmp_path, "ok.zip", buffer.getvalue()), "ok.zip")
    truncated = _file(tmp_path, "bad.zip", buffer.getvalue()[:-30])
    assert _rejection(truncated, "bad.zip") == "ZIP-Verzeichnis fehlt oder ist beschädigt"
    not_a_zip = _file(tmp_path, "pdf.zip", b"%PDF-1.7\n%%EOF\n")
    assert _rejection(not_a_zip, "pdf.zip") == "ZIP-Verzeichnis fehlt oder ist beschädigt"


def test_empty_file_is_rejected_whatever_its_type(tmp_path: Path) -> None:
    for name in ("a.pdf", "a.xml", "a.zip", "a.csv", "noext"):
        assert _rejection(_file(tmp_path, name, b""), name) == "Leere Datei"


def test_other_types_only_need_content(tmp_path: Path) -> None:
    assert _accepts(_file(tmp_path, "a.csv", b"x;y\n"), "a.csv")
    assert _accepts(_file(tmp_path, "a.txt", b"<!DOCTYPE x>"), "a.txt")


def test_xinclude_is_not_followed(tmp_path: Path) -> None:
    secret = _file(tmp_path, "secret.txt", b"TOP-SECRET-CONTENT")
    doc = (
        b'<r xmlns:xi="http://www.w3.org/2001/XInclude">'
        b'<xi:include href="' + secret.as_uri().encode() + b'" parse="text"/></r>'
    )
    path = _file(tmp_path, "xi.xml", doc)
    assert _accepts(path, "xi.xml")  # well-formed; the include is an inert element
    tree = parse_xml_safely(path, max_bytes=MAX_XML_BYTES)
    assert b"TOP-SECRET" not in etree.tostring(tree)


def test_parameter_entity_with_an_external_dtd_is_rejected(tmp_path: Path) -> None:
    data = (
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE r [<!ENTITY % ext SYSTEM "http://example.invalid/evil.dtd"> %ext;]>\n'
        b"<r/>"
    )
    start = time.monotonic()
    assert "DTD" in _rejection(_file(tmp_path, "pe.xml", data), "pe.xml")
    assert time.monotonic() - start < 1.0


def test_absurdly_deep_nesting_is_rejected_quickly(tmp_path: Path) -> None:
    depth = 100_000
    path = _file(tmp_path, "deep.xml", b"<a>" * depth + b"</a>" * depth)
    start = time.monotonic()
    assert _rejection(path, "deep.xml").startswith("XML nicht wohlgeformt: Zeile 1: ")
    assert time.monotonic() - start < 2.0


def test_xml_with_a_byte_order_mark_and_latin1_declaration_passes(tmp_path: Path) -> None:
    bom = _file(tmp_path, "bom.xml", b"\xef\xbb\xbf<r>\xc3\xa4</r>")
    assert _accepts(bom, "bom.xml")
    latin1 = _file(tmp_path, "l1.xml", b'<?xml version="1.0" encoding="ISO-8859-1"?><r>\xe4</r>')
    assert parse_xml_safely(latin1, max_bytes=MAX_XML_BYTES).getroot().text == "ä"


def test_xml_that_is_not_xml_names_line_one(tmp_path: Path) -> None:
    reason = _rejection(_file(tmp_path, "a.xml", b"%PDF-1.7\n%%EOF\n"), "a.xml")
    assert reason.startswith("XML nicht wohlgeformt: Zeile 1: ")


def test_pdf_header_must_start_the_file(tmp_path: Path) -> None:
    data = b"\n%PDF-1.7\n...\n%%EOF\n"
    assert _rejection(_file(tmp_path, "a.pdf", data), "a.pdf") == (
        "Keine PDF-Datei: Kopfzeile %PDF- fehlt"
    )


def test_pdf_trailer_may_be_followed_by_padding(tmp_path: Path) -> None:
    data = b"%PDF-1.7\n" + b"x" * 100 + b"%%EOF" + b"\r\n\x00 " * 10_000
    assert _accepts(_file(tmp_path, "pad.pdf", data), "pad.pdf")


def test_an_empty_zip_passes_and_a_cut_deflated_one_does_not(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w"):
        pass  # closed at once: an archive with no members
    assert _accepts(_file(tmp_path, "empty.zip", buffer.getvalue()), "empty.zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("MANIFEST.csv", "a;b\n" * 1000)
    whole = buffer.getvalue()
    assert _accepts(_file(tmp_path, "ok.zip", whole), "ok.zip")
    cut = _file(tmp_path, "cut.zip", whole[: len(whole) // 2])
    assert _rejection(cut, "cut.zip") == "ZIP-Verzeichnis fehlt oder ist beschädigt"
