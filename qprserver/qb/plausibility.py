"""Plausibility rules of quality reports: ISO Schematron files, one per report year.

A rules file is data: each ``sch:pattern`` is one rule with its number (``@id``),
title, description (``sch:p``), category and report part (``qpr:`` attributes), class
(``@role`` of its assertions: hart, weich, Pilot), message (assertion text with
``sch:value-of``) and instruction (``sch:diagnostic``). The file is checked for all of
these when it is loaded, compiled once to XSLT by lxml's ISO Schematron skeleton, and
kept until it changes. The file name's IK, site and the report year reach the rules as
the top-level ``sch:let`` parameters ``datei_ik``, ``datei_standort``, ``berichtsjahr``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from lxml import etree
from lxml.isoschematron import Schematron  # type: ignore[import-not-found]  # not in lxml-stubs

from qprserver.errors import ConfigError
from qprserver.qb.protocol import KLASSEN, Finding, Klasse, RuleSetInfo

SHIPPED = Path(__file__).parent / "rules"
SCH = "http://purl.oclc.org/dsdl/schematron"
SVRL = "http://purl.oclc.org/dsdl/svrl"
QPR = "urn:qprserver:qb-regelwerk"
PARAMETERS = ("datei_ik", "datei_standort", "berichtsjahr")
MAX_PER_RULE = 50

# Contexts are found through keys instead of one walk over the whole report per
# pattern, and fired rules are not recorded: together about four times faster.
_COMPILE = {"select-contexts": "key", "generate-fired-rule": "false"}
_NS = {"sch": SCH, "svrl": SVRL}


@dataclass(frozen=True, slots=True)
class Rule:
    """One plausibility rule as described in the rules file."""

    number: str
    title: str
    description: str
    category: str
    part: str
    klass: Klasse


@dataclass(frozen=True, slots=True)
class RuleResult:
    """Findings of one run, at most MAX_PER_RULE per rule, and the counts left out."""

    findings: tuple[Finding, ...]
    omitted: dict[str, int]


def _text(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return " ".join("".join(map(str, element.itertext())).split())


def _catalogue(schematron: etree._Element, where: str) -> dict[str, Rule]:
    """Read and check the rule descriptions; ConfigError naming the first gap."""
    diagnostics = {d.get("id") for d in schematron.iterfind(f".//{{{SCH}}}diagnostic")}
    rules: dict[str, Rule] = {}
    for pattern in schematron.iterfind(f"{{{SCH}}}pattern"):
        number = pattern.get("id")
        if not number:
            raise ConfigError(f"{where}: a pattern has no id (rule number)")
        asserts = pattern.findall(f"{{{SCH}}}rule/{{{SCH}}}assert") + pattern.findall(
            f"{{{SCH}}}rule/{{{SCH}}}report"
        )
        roles = {a.get("role") for a in asserts}
        missing = [
            name
            for name, value in (
                ("sch:title", _text(pattern.find(f"{{{SCH}}}title"))),
                ("sch:p", _text(pattern.find(f"{{{SCH}}}p"))),
                ("qpr:kategorie", pattern.get(f"{{{QPR}}}kategorie")),
                ("qpr:berichtsteil", pattern.get(f"{{{QPR}}}berichtsteil")),
                ("an assertion", asserts),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"{where}: rule {number} lacks {', '.join(missing)}")
        if len(roles) != 1 or next(iter(roles)) not in KLASSEN:
            raise ConfigError(
                f"{where}: rule {number}: every assertion needs the same role, "
                f"one of {', '.join(KLASSEN)}"
            )
        for assertion in asserts:
            refs = (assertion.get("diagnostics") or "").split()
            if not refs or not set(refs) <= diagnostics:
                raise ConfigError(
                    f"{where}: rule {number}: each assertion needs diagnostics naming "
                    "an existing sch:diagnostic (the instruction)"
                )
        if number in rules:
            raise ConfigError(f"{where}: rule number {number} used twice")
        rules[number] = Rule(
            number=number,
            title=_text(pattern.find(f"{{{SCH}}}title")),
            description=_text(pattern.find(f"{{{SCH}}}p")),
            category=pattern.get(f"{{{QPR}}}kategorie", ""),
            part=pattern.get(f"{{{QPR}}}berichtsteil", ""),
            klass=cast(Klasse, next(iter(roles))),
        )
    if not rules:
        raise ConfigError(f"{where}: no rules (sch:pattern) found")
    return rules


class RuleSet:
    """The compiled rules of one file, safe to use from several threads."""

    def __init__(self, path: Path, where: str) -> None:
        self.path = path
        try:
            with path.open("rb") as handle:
                parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
                document = etree.parse(handle, parser, base_url=str(path))
            schematron = Schematron(
                document, compile_params=_COMPILE, store_schematron=True, store_xslt=True
            )
        except OSError as exc:
            raise ConfigError(f"{where}: {path}: {exc.strerror or 'not readable'}") from None
        except (etree.XMLSyntaxError, etree.SchematronParseError, etree.XSLTError) as exc:
            message = " ".join(str(exc).split())
            raise ConfigError(f"{where}: {path}: not usable ISO Schematron: {message}") from None
        expanded = schematron.schematron
        root = expanded.getroot() if isinstance(expanded, etree._ElementTree) else expanded
        self.rules = _catalogue(root, f"{where}: {path}")
        self.info = RuleSetInfo(
            title=_text(root.find(f"{{{SCH}}}title")) or path.name,
            version=root.get("schemaVersion", ""),
            source=path.name,
            rules=len(self.rules),
        )
        # The rules run on untrusted reports: no file or network access from XSLT.
        deny = etree.XSLTAccessControl.DENY_ALL  # type: ignore[attr-defined]  # not in lxml-stubs
        self._transform = etree.XSLT(schematron.validator_xslt, access_control=deny)
        self._lock = threading.Lock()

    def check(self, tree: etree._ElementTree, **parameters: str) -> RuleResult:
        """Run all rules on a schema-valid report; parameters fill the file name lets."""
        unknown = set(parameters) - set(PARAMETERS)
        if unknown:
            raise ValueError(f"unknown rule parameters {sorted(unknown)}")
        quoted: dict[str, Any] = {k: etree.XSLT.strparam(v) for k, v in parameters.items()}
        with self._lock:
            try:
                report = self._transform(tree, **quoted)
            except etree.XSLTApplyError as exc:
                raise ConfigError(f"rules {self.path}: failed on this report: {exc}") from None
        findings: list[Finding] = []
        omitted: dict[str, int] = {}
        per_rule: dict[str, int] = {}
        current: Rule | None = None
        for element in report.getroot():
            if not isinstance(element.tag, str):
                continue
            tag = etree.QName(element).localname
            if tag == "active-pattern":
                current = self.rules.get(element.get("id", ""))
                continue
            if tag not in ("failed-assert", "successful-report") or current is None:
                continue
            seen = per_rule.get(current.number, 0) + 1
            per_rule[current.number] = seen
            if seen > MAX_PER_RULE:
                omitted[current.number] = omitted.get(current.number, 0) + 1
                continue
            location = element.get("location", "")
            findings.append(
                Finding(
                    rule=current.number,
                    klass=current.klass,
                    message=_text(element.find("svrl:text", _NS)),
                    instruction=" ".join(
                        _text(ref) for ref in element.iterfind("svrl:diagnostic-reference", _NS)
                    ),
                    location=location,
                    line=_line(tree, location),
                    title=current.title,
                    category=current.category,
                    part=current.part,
                )
            )
        return RuleResult(tuple(findings), omitted)


def _line(tree: etree._ElementTree, location: str) -> int | None:
    """The source line of the node a Schematron location points to."""
    if not location.startswith("/"):
        return None
    try:
        nodes = tree.xpath(location)
    except etree.XPathError:
        return None
    if isinstance(nodes, list) and nodes and isinstance(nodes[0], etree._Element):
        line: object = nodes[0].sourceline
        return line if isinstance(line, int) and line > 0 else None
    return None


_cache: dict[Path, tuple[tuple[int, int], RuleSet]] = {}
_cache_lock = threading.Lock()


def rules_path(year: int, configured: dict[str, Path]) -> tuple[Path, str] | None:
    """The rules file for a year and the setting it comes from, or None if there is none."""
    if str(year) in configured:
        return configured[str(year)], f"qb.rules.{year}"
    shipped = SHIPPED / f"{year}.sch"
    if shipped.is_file():
        return shipped, f"shipped rules {year}"
    return None


def load_rules(path: Path, where: str) -> RuleSet:
    """The compiled rule set at path, from the cache while the file is unchanged."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise ConfigError(f"{where}: {path}: {exc.strerror or 'not readable'}") from None
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        ruleset = RuleSet(path, where)
        _cache[path] = (stamp, ruleset)
        return ruleset
