"""Checking uploaded content against the type its name claims.

PDF: ``%PDF-`` header and ``%%EOF`` near the end (a cut-off transfer lacks it).
XML: well-formed, parsed with entities, DTDs and network off; any DOCTYPE is
refused, so entity bombs and external entities are rejected without expansion.
ZIP: the central directory must be readable. Empty files are always refused.

This is the one place XML is parsed, with one parser configuration and the size
limit the caller takes from the config (``qb.max_xml_bytes``): ``check_content``
returns the parsed tree, so the quality-report checks (``qb``) work on it instead
of parsing the file again.

Checks read a file path or an open binary file (an upload's bytes as its
``BlobWriter.open_written`` gives them, before they are committed to the blob store).
They block; callers on the event loop use a thread, except for names whose check
reads only a few bytes (``reads_little``).
"""

from __future__ import annotations

import contextlib
import os
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from lxml import etree

# A parsed XML document, as ``check_content`` and ``parse_xml_safely`` return it.
XmlTree = etree._ElementTree

# Acrobat accepts %%EOF anywhere in the last 1024 bytes; so do we. The larger read
# leaves room for padding (whitespace, NULs) that some generators append.
_PDF_TAIL_WINDOW = 1024
_PDF_TAIL_READ = 64 * 1024
_PDF_PADDING = b" \t\r\n\f\x00"
_PROBE_CHUNK = 64 * 1024
_DTD_REJECTED = "XML enthält eine DTD/Entitäten; nicht erlaubt"
# libxml2 appends the position to its messages; the reason already names the line.
_POSITION_SUFFIX = re.compile(r",\s*line \d+, column \d+\s*$")


# A file to check: a path, or an open, seekable binary file (read from its start).
Source = Path | BinaryIO


@contextlib.contextmanager
def _reading(source: Source) -> Iterator[BinaryIO]:
    """The source as a binary file at offset 0; a path is opened and closed here."""
    if isinstance(source, Path):
        with source.open("rb") as handle:
            yield handle
    else:
        source.seek(0)
        yield source


def _size(source: Source) -> int:
    if isinstance(source, Path):
        return source.stat().st_size
    return source.seek(0, os.SEEK_END)


class ContentRejected(Exception):
    """The content does not match what its name claims; the reason is for the sender."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _PrologProbe:
    """Parser target that notes whether a DOCTYPE comes before the root element.

    A target sees the DOCTYPE as libxml2 reads it, before any entity declaration in
    it is parsed, and whatever the document's encoding (a byte search for
    ``<!DOCTYPE`` misses UTF-16 and long prologs). The other callbacks exist only
    to satisfy lxml's target protocol.
    """

    def __init__(self) -> None:
        self.doctype_seen = False
        self.root_seen = False

    def doctype(self, name: str | None, public_id: str | None, system_url: str | None) -> None:
        self.doctype_seen = True

    def start(self, tag: str | bytes, attrib: dict[Any, Any], nsmap: object = None) -> None:
        self.root_seen = True

    def end(self, tag: str | bytes) -> None:
        pass

    def data(self, data: str | bytes) -> None:
        pass

    def comment(self, text: str | bytes) -> None:
        pass

    def close(self) -> None:
        return None


def _safe_parser(target: _PrologProbe | None = None) -> etree.XMLParser:
    # huge_tree=False keeps libxml2's limits on depth, text size and entity
    # amplification; the DOCTYPE ban is the main defence, these limits the second.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        target=target,
    )


def _syntax_reason(exc: etree.XMLSyntaxError) -> str:
    line = exc.lineno if exc.lineno else "?"
    message = _POSITION_SUFFIX.sub("", " ".join(str(exc.msg).split()))
    return f"XML nicht wohlgeformt: Zeile {line}: {message}"


def _refuse_doctype(path: Source) -> None:
    """Raise ContentRejected when the prolog holds a DOCTYPE; reads only up to the root."""
    probe = _PrologProbe()
    parser = _safe_parser(probe)
    try:
        with _reading(path) as handle:
            while not (probe.doctype_seen or probe.root_seen):
                chunk = handle.read(_PROBE_CHUNK)
                if not chunk:
                    break
                parser.feed(chunk)
    except etree.XMLSyntaxError:
        # Without a DOCTYPE the full parse reports the same error with a tree
        # builder's context; with one, the error is a symptom of the DTD.
        if not probe.doctype_seen:
            return
    if probe.doctype_seen:
        raise ContentRejected(_DTD_REJECTED)


def parse_xml_safely(path: Source, *, max_bytes: int) -> XmlTree:
    """Parse an XML file of at most max_bytes safely or raise ContentRejected with a
    readable reason."""
    size = _size(path)
    if size == 0:
        raise ContentRejected("Leere Datei")
    if size > max_bytes:
        raise ContentRejected(f"XML-Datei größer als die erlaubten {max_bytes} Bytes")
    _refuse_doctype(path)
    try:
        # An open file, not the name: libxml2 would read a name as a URL.
        with _reading(path) as handle:
            tree = etree.parse(handle, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise ContentRejected(_syntax_reason(exc)) from None
    docinfo: Any = tree.docinfo  # lxml-stubs lack DocInfo.doctype
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise ContentRejected(_DTD_REJECTED)
    return tree


def _check_pdf(path: Source, size: int) -> None:
    with _reading(path) as handle:
        if handle.read(5) != b"%PDF-":
            raise ContentRejected("Keine PDF-Datei: Kopfzeile %PDF- fehlt")
        handle.seek(max(0, size - _PDF_TAIL_READ))
        tail = handle.read().rstrip(_PDF_PADDING)[-_PDF_TAIL_WINDOW:]
    if b"%%EOF" not in tail:
        raise ContentRejected(
            "PDF unvollständig: Endemarke %%EOF fehlt (abgebrochene Übertragung?)"
        )


def _check_zip(path: Source) -> None:
    # Opening reads and parses the whole central directory; members stay compressed,
    # so a ZIP bomb costs nothing here. zipfile refuses entries that claim a newer
    # format version with NotImplementedError; recipients could not open those either.
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError):
        raise ContentRejected("ZIP-Verzeichnis fehlt oder ist beschädigt") from None


def reads_little(filename: str) -> bool:
    """True when ``check_content`` reads at most the head and tail of a file of this
    name (PDF) or nothing but its size: a check cheap enough for the event loop."""
    return not filename.lower().endswith((".xml", ".zip"))


def check_content(path: Source, filename: str, *, max_xml_bytes: int) -> XmlTree | None:
    """Raise ContentRejected unless the file at path has the content its name claims.

    An XML file is parsed (at most max_xml_bytes) and its tree returned for checks
    that read it further; other kinds return None.
    """
    size = _size(path)
    if size == 0:
        raise ContentRejected("Leere Datei")
    lower = filename.lower()
    if lower.endswith(".pdf"):
        _check_pdf(path, size)
    elif lower.endswith(".xml"):
        return parse_xml_safely(path, max_bytes=max_xml_bytes)
    elif lower.endswith(".zip"):
        _check_zip(path)
    return None
