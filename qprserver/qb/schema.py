"""XML schema (XSD) validation of quality reports against the year's G-BA schema.

A schema is compiled once and kept until its file changes (path, size and mtime), so an
operator can drop in a corrected schema without a restart. Validation of one report
against one compiled schema is serialised: lxml keeps the error log on the schema
object, which threads must not share mid-validation.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from qprserver.errors import ConfigError
from qprserver.qb.protocol import Finding

MAX_SCHEMA_ERRORS = 50
SCHEMA_RULE = "XSD-01"


@dataclass(frozen=True, slots=True)
class SchemaResult:
    """The first schema errors as findings, and how many there were in all."""

    findings: tuple[Finding, ...]
    total: int


class CompiledSchema:
    """One compiled XSD, safe to use from several threads."""

    def __init__(self, path: Path, schema: etree.XMLSchema) -> None:
        self.path = path
        self._schema = schema
        self._lock = threading.Lock()

    def validate(self, tree: etree._ElementTree, year: int) -> SchemaResult:
        with self._lock:
            valid = self._schema.validate(tree)
            log: Any = self._schema.error_log  # lxml-stubs do not know it is iterable
            entries: list[Any] = [] if valid else list(log)
        instruction = (
            f"Die Datei mit dem XML-Schema des Berichtsjahres {year} prüfen und den "
            "Fehler in der erstellenden Software beheben."
        )
        findings = tuple(
            Finding(
                rule=SCHEMA_RULE,
                klass="hart",
                message=" ".join(entry.message.split()),
                instruction=instruction,
                location=entry.path or "",
                line=entry.line or None,
                title="Verstoß gegen das XML-Schema",
                category="XML-Schema",
            )
            for entry in entries[:MAX_SCHEMA_ERRORS]
        )
        return SchemaResult(findings, len(entries))


_cache: dict[Path, tuple[tuple[int, int], CompiledSchema]] = {}
_cache_lock = threading.Lock()


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def load_schema(path: Path, key: str) -> CompiledSchema:
    """The compiled schema at path; key names the setting in errors (``qb.schemas.2019``)."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"{key}: {path}: {exc.strerror or 'not readable'}") from None
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with path.open("rb") as handle:
                # base_url lets xsd:include/xsd:import find files beside the schema.
                document = etree.parse(handle, _parser(), base_url=str(path))
            compiled = CompiledSchema(path, etree.XMLSchema(document))
        except OSError as exc:
            raise ConfigError(f"{key}: {path}: {exc.strerror or 'not readable'}") from None
        except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
            message = " ".join(str(exc).split())
            raise ConfigError(f"{key}: {path}: not a usable XML schema: {message}") from None
        _cache[path] = (stamp, compiled)
        return compiled
