"""Acceptance check of one quality report: name, safe parse, XML schema, plausibility.

The steps, each adding findings to one protocol:

1. File name ``<IK>-<Standort>-<Berichtsjahr>-xml.xml``; the IK must be valid and be
   the uploader's own (or one it delivers for). The report year selects schema and rules.
2. Delivery windows of that year, when a time is given (uploads; not ``check``).
3. Safe parse (``exchange.content``, the one XML parser): size limit
   ``qb.max_xml_bytes``, no DOCTYPE (so no entity expansion or external entities), no
   network. A file that fails here is rejected at once. An upload arrives already
   parsed by the content check, with the same parser and limit, and is not parsed
   again; ``check`` parses the file here.
4. XML schema of the year; the first 50 errors with line and element path.
5. Only for a schema-valid report: the year's plausibility rules (Schematron).

Any ``hart`` finding rejects the report. The checks block (CPU and file reads); the
async entry point for uploads runs them in a thread.

When the year's configured schema or rules cannot be used (missing file, broken
XSD), ``check`` stops with the reason; an upload instead gets the outcome
"Prüfung derzeit nicht möglich" (not accepted, not faulted, deliver again later) and
the operator a warning in the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from qprserver.config import QbSettings
from qprserver.errors import ConfigError, InvalidIK
from qprserver.exchange.content import ContentRejected, Source, XmlTree, parse_xml_safely
from qprserver.ik import IK
from qprserver.qb.filename import PATTERN_TEXT, ReportName, parse_report_name
from qprserver.qb.plausibility import load_rules, rules_path
from qprserver.qb.protocol import Finding, Protocol, RuleSetInfo
from qprserver.qb.schema import load_schema
from qprserver.qb.windows import windows_message, windows_open

log = logging.getLogger(__name__)


def _finding(rule: str, message: str, instruction: str, title: str, category: str) -> Finding:
    return Finding(
        rule=rule,
        klass="hart",
        message=message,
        instruction=instruction,
        title=title,
        category=category,
    )


def _name_findings(
    filename: str,
    name: ReportName | None,
    year: int | None,
    uploader_ik: str | None,
    delivers_for: Collection[str],
) -> tuple[list[Finding], int | None, dict[str, str]]:
    """Findings about the file name, the report year to check for, the rule parameters."""
    findings: list[Finding] = []
    if name is None:
        findings.append(
            _finding(
                "DATEI-01",
                f"Der Dateiname {filename} folgt nicht dem Muster {PATTERN_TEXT}.",
                f"Die Datei nach dem Muster {PATTERN_TEXT} benennen, "
                "z. B. 260100023-01-2019-xml.xml.",
                "Dateiname",
                "Datei",
            )
        )
        parameters = {"berichtsjahr": str(year)} if year is not None else {}
        return findings, year, parameters
    try:
        IK(name.ik)
    except InvalidIK as exc:
        findings.append(
            _finding(
                "DATEI-02",
                f"Dateiname: {exc}",
                "Die Datei mit dem IK des Krankenhauses benennen.",
                "IK im Dateinamen",
                "Datei",
            )
        )
    allowed = {uploader_ik, *delivers_for} if uploader_ik else set()
    if uploader_ik and name.ik not in allowed:
        findings.append(
            _finding(
                "DATEI-03",
                f"Der Bericht ist für das IK {name.ik}; das Konto {uploader_ik} darf nur "
                "eigene Berichte liefern.",
                "Den Bericht mit dem Konto des Krankenhauses liefern, dessen IK im "
                "Dateinamen steht.",
                "IK des Absenders",
                "Datei",
            )
        )
    if year is not None and year != name.year:
        findings.append(
            _finding(
                "DATEI-04",
                f"Der Dateiname nennt das Berichtsjahr {name.year}, geprüft wird für {year}.",
                "Das Berichtsjahr im Dateinamen berichtigen.",
                "Berichtsjahr im Dateinamen",
                "Datei",
            )
        )
    effective = year if year is not None else name.year
    parameters = {
        "datei_ik": name.ik,
        "datei_standort": name.site,
        "berichtsjahr": str(effective),
    }
    return findings, effective, parameters


def check_report(
    path: Source,
    *,
    filename: str,
    settings: QbSettings,
    year: int | None = None,
    uploader_ik: str | None = None,
    delivers_for: Collection[str] = (),
    at: datetime | None = None,
    unavailable_ok: bool = False,
    tree: XmlTree | None = None,
    registered: bool | None = None,
) -> Protocol:
    """Check the report at path (named filename) and return its protocol.

    year overrides the report year of the file name; uploader_ik (and delivers_for)
    are the IKs the sender may deliver for; at enables the delivery window check;
    tree is the report as the upload's content check parsed it (without it, the file
    at path is parsed here); registered: whether the report (IK, Standort, year) has a
    confirmed registration (None: not asked, as for ``check``).
    Raises ConfigError when the year's configured schema or rules cannot be used,
    unless unavailable_ok: then the protocol says the check could not run (or
    rejects for the findings so far, when they already reject the report).
    """
    name = parse_report_name(filename)
    findings, effective, parameters = _name_findings(
        filename, name, year, uploader_ik, delivers_for
    )
    base: dict[str, Any] = {
        "filename": filename,
        "year": effective,
        "ik": name.ik if name else None,
        "site": name.site if name else None,
    }
    if effective is None:
        findings.append(
            _finding(
                "JAHR-01",
                "Das Berichtsjahr ist unbekannt; es steht im Dateinamen.",
                f"Die Datei nach dem Muster {PATTERN_TEXT} benennen.",
                "Berichtsjahr",
                "Datei",
            )
        )
        return Protocol(**base, findings=tuple(findings))
    if at is not None and not windows_open(settings, effective, at):
        findings.append(
            _finding(
                "FRIST-01",
                windows_message(settings, effective),
                "Den Bericht innerhalb einer Lieferfrist liefern.",
                "Lieferfrist",
                "Datei",
            )
        )
    if registered is False and name is not None:
        findings.append(
            _finding(
                "REG-01",
                f"Für IK {name.ik}, Standort {name.site} ist für das Berichtsjahr {effective} "
                "keine bestätigte Registrierung vorhanden.",
                "Den Bericht in der Registrierungsfrist registrieren und die Adresse "
                "bestätigen (nachträglich in der Ersatzlieferungsfrist).",
                "Registrierung",
                "Datei",
            )
        )
    schema_file = settings.schemas.get(str(effective))
    if schema_file is None:
        configured = ", ".join(sorted(settings.schemas)) or "keine"
        findings.append(
            _finding(
                "JAHR-02",
                f"Berichte für das Berichtsjahr {effective} werden nicht angenommen "
                f"(angenommene Berichtsjahre: {configured}).",
                "Das Berichtsjahr im Dateinamen prüfen.",
                "Berichtsjahr",
                "Datei",
            )
        )
        return Protocol(**base, findings=tuple(findings))
    try:
        return _check_content(
            path, tree, settings, effective, schema_file, parameters, base, findings
        )
    except ConfigError as exc:
        if not unavailable_ok:
            raise
        if any(f.klass == "hart" for f in findings):
            return Protocol(**base, findings=tuple(findings))
        return Protocol(**base, findings=tuple(findings), unavailable=str(exc))


def _check_content(
    path: Source,
    parsed: XmlTree | None,
    settings: QbSettings,
    effective: int,
    schema_file: Path,
    parameters: dict[str, str],
    base: dict[str, Any],
    findings: list[Finding],
) -> Protocol:
    """Steps 3 to 5: safe parse, XML schema, plausibility rules."""
    schema = load_schema(schema_file, f"qb.schemas.{effective}")
    located = rules_path(effective, settings.rules)
    ruleset = load_rules(*located) if located else None
    info: RuleSetInfo | None = ruleset.info if ruleset else None
    try:
        tree = (
            parsed
            if parsed is not None
            else parse_xml_safely(path, max_bytes=settings.max_xml_bytes)
        )
    except ContentRejected as exc:
        findings.append(
            _finding(
                "XML-01",
                exc.reason,
                "Eine wohlgeformte XML-Datei ohne DOCTYPE und Entitäten liefern, "
                f"höchstens {settings.max_xml_bytes} Bytes groß.",
                "Lesbare XML-Datei",
                "XML",
            )
        )
        return Protocol(**base, findings=tuple(findings))
    checked = schema.validate(tree, effective)
    findings.extend(checked.findings)
    omitted: dict[str, int] = {}
    if checked.total > len(checked.findings):
        omitted[checked.findings[0].rule] = checked.total - len(checked.findings)
    if checked.total == 0 and ruleset is not None:
        result = ruleset.check(tree, **parameters)
        findings.extend(result.findings)
        omitted.update(result.omitted)
    return Protocol(
        **base,
        schema=schema_file.name,
        ruleset=info if checked.total == 0 else None,
        findings=tuple(findings),
        omitted=omitted,
    )


@dataclass(frozen=True, slots=True)
class QbResult:
    """The outcome of a delivered report, in the forms uploads need."""

    accepted: bool
    findings: tuple[Finding, ...]
    protocol: dict[str, Any]
    text: str
    reason: str
    # The check could not run ("Prüfung derzeit nicht möglich"); not accepted either.
    unavailable: bool = False


def result_of(protocol: Protocol) -> QbResult:
    """The upload-facing form of a protocol."""
    return QbResult(
        accepted=protocol.accepted,
        findings=protocol.findings,
        protocol=protocol.to_dict(),
        text=protocol.render_text(),
        reason=protocol.summary(),
        unavailable=bool(protocol.unavailable),
    )


async def validate_upload(
    path: Source,
    filename: str,
    uploader_ik: str,
    settings: QbSettings,
    now: datetime,
    *,
    delivers_for: Collection[str] = (),
    tree: XmlTree | None = None,
    registered: bool | None = None,
) -> QbResult:
    """Check an uploaded report (in a thread), including the delivery windows at now;
    tree: the report as the content check parsed it; registered: see ``check_report``."""
    protocol = await asyncio.to_thread(
        check_report,
        path,
        filename=filename,
        settings=settings,
        uploader_ik=uploader_ik,
        delivers_for=delivers_for,
        at=now,
        unavailable_ok=True,
        tree=tree,
        registered=registered,
    )
    if protocol.unavailable:
        log.warning(
            "quality report %s from %s not checked (Prüfung derzeit nicht möglich): %s",
            filename,
            uploader_ik,
            protocol.unavailable,
        )
    return result_of(protocol)


def configuration_problems(settings: QbSettings) -> list[str]:
    """One line for every configured schema or rules file that cannot be used, and
    every configured report year without a schema; ``serve`` logs them at start."""
    problems: list[str] = []
    for year, path in sorted(settings.schemas.items()):
        try:
            load_schema(path, f"qb.schemas.{year}")
        except ConfigError as exc:
            problems.append(f"{exc} (reports of {year}: Prüfung derzeit nicht möglich)")
    for year, path in sorted(settings.rules.items()):
        try:
            load_rules(path, f"qb.rules.{year}")
        except ConfigError as exc:
            problems.append(f"{exc} (reports of {year}: Prüfung derzeit nicht möglich)")
    for year in sorted(settings.years):
        if year not in settings.schemas:
            problems.append(
                f"qb.years.{year}: no schema for report year {year} (qb.schemas.{year}); "
                "its reports are refused"
            )
    return problems
