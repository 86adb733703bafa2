"""Checking uploaded content against the type its name claims.

PDF: ``%PDF-`` header and ``%%EOF`` near the end (a cut-off transfer lacks it).
XML: well-formed, parsed with entities, DTDs and network off; any DOCTYPE is
refused, so entity bombs and external entities are rejected without expansion.
ZIP: the central directory must be readable. Empty files are always refused.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from lxml import etree

MAX_XML_BYTES = 50 * 1024 * 1024


class ContentRejected(Exception):
    """The content does not match what its name claims; the reason is for the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
    )


def parse_xml_safely(path: Path, *, max_bytes: int = MAX_XML_BYTES) -> etree._ElementTree:
    """Parse an XML file safely or raise ContentRejected with a readable reason."""
    size = path.stat().st_size
    if size > max_bytes:
        raise ContentRejected(f"XML-Datei größer als {max_bytes} Bytes")
    with path.open("rb") as handle:
        head = handle.read(64 * 1024)
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise ContentRejected("XML enthält eine DTD/Entitäten; nicht erlaubt")
    try:
        tree = etree.parse(str(path), _safe_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno is not None else "?"
        raise ContentRejected(f"XML nicht wohlgeformt: Zeile {line}: {exc.msg}") from None
    docinfo: Any = tree.docinfo  # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise ContentRejected("XML enthält eine DTD/Entitäten; nicht erlaubt")
    return tree


def _check_pdf(path: Path, size: int) -> None:
    with path.open("rb") as handle:
        if not handle.read(5) == b"%PDF-":
            raise ContentRejected("Keine PDF-Datei: Kopfzeile %PDF- fehlt")
        handle.seek(max(0, size - 1024))
        tail = handle.read().rstrip(b"\r\n\t \x00")
    if not tail.endswith(b"%%EOF"):
        raise ContentRejected(
            "PDF unvollständig: Endemarke %%EOF fehlt (abgebrochene Übertragung?)"
        )


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise ContentRejected("ZIP-Verzeichnis fehlt oder ist beschädigt") from None


def check_content(path: Path, filename: str, *, max_xml_bytes: int = MAX_XML_BYTES) -> None:
    """Raise ContentRejected unless the file at path has the content its name claims."""
    size = path.stat().st_size
    if size == 0:
        raise ContentRejected("Leere Datei")
    lower = filename.lower()
    if lower.endswith(".pdf"):
        _check_pdf(path, size)
    elif lower.endswith(".xml"):
        parse_xml_safely(path, max_bytes=max_xml_bytes)
    elif lower.endswith(".zip"):
        _check_zip(path)
