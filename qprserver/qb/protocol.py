"""The check protocol of one quality report: findings, outcome, JSON and text.

Any ``hart`` finding rejects the report; ``weich`` and ``Pilot`` findings accept it
with notes for the sender. The JSON form goes to ``/receipts`` (German keys, like the
other upload protocols); the text form is for people and the ``check`` command.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

Klasse = Literal["hart", "weich", "Pilot"]
KLASSEN: tuple[Klasse, ...] = ("hart", "weich", "Pilot")

# The outcome when the portal's own schema or rules for the year cannot be used: the
# report is neither accepted nor faulted, and the hospital is told what to do.
UNAVAILABLE = "Prüfung derzeit nicht möglich"
UNAVAILABLE_ADVICE = (
    "Der Bericht konnte wegen einer Störung beim Portal nicht geprüft werden und wurde "
    "deshalb nicht angenommen; beanstandet wurde er nicht. Bitte liefern Sie dieselbe "
    "Datei später unverändert erneut. Hält die Störung an oder endet die Lieferfrist "
    "bald, wenden Sie sich mit dem Namen dieses Protokolls an den Betreiber des Portals."
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One violated rule at one place in the report."""

    rule: str
    klass: Klasse
    message: str
    instruction: str
    location: str = ""
    line: int | None = None
    title: str = ""
    category: str = ""
    part: str = ""

    @property
    def where(self) -> str:
        """XPath and line, as far as known."""
        if self.location and self.line:
            return f"{self.location} (Zeile {self.line})"
        if self.line:
            return f"Zeile {self.line}"
        return self.location

    def to_dict(self) -> dict[str, Any]:
        return {
            "regel": self.rule,
            "klasse": self.klass,
            "titel": self.title,
            "kategorie": self.category,
            "berichtsteil": self.part,
            "meldung": self.message,
            "ort": self.location,
            "zeile": self.line,
            "anweisung": self.instruction,
        }


@dataclass(frozen=True, slots=True)
class RuleSetInfo:
    """Which plausibility rules a report was checked against."""

    title: str
    version: str
    source: str
    rules: int


@dataclass(frozen=True)
class Protocol:
    """The result of checking one report."""

    filename: str
    year: int | None
    ik: str | None = None
    site: str | None = None
    schema: str | None = None
    ruleset: RuleSetInfo | None = None
    findings: tuple[Finding, ...] = ()
    # Findings beyond the per-rule cap, counted but not listed (rule → count).
    omitted: dict[str, int] = field(default_factory=dict)
    # Why the check could not run (for the operator's log; it names server paths, so
    # it never goes into the protocol or a mail). Empty when the check ran.
    unavailable: str = ""

    @property
    def accepted(self) -> bool:
        return not self.unavailable and not any(f.klass == "hart" for f in self.findings)

    @property
    def outcome(self) -> str:
        if self.unavailable:
            return UNAVAILABLE
        return "angenommen" if self.accepted else "abgelehnt"

    def counts(self) -> dict[str, int]:
        """Findings per class, including those not listed."""
        listed = Counter(f.klass for f in self.findings)
        for rule, extra in self.omitted.items():
            klass = next(f.klass for f in self.findings if f.rule == rule)
            listed[klass] += extra
        return {k: listed.get(k, 0) for k in KLASSEN}

    def summary(self) -> str:
        """One line: outcome and counts, with the rules of hart findings when rejected."""
        if self.unavailable:
            return (
                f"Qualitätsbericht {self.filename}: {UNAVAILABLE}, nicht angenommen; "
                "bitte später unverändert erneut liefern"
            )
        counts = self.counts()
        numbers = ", ".join(f"{n} {k}" for k, n in counts.items())
        if self.accepted:
            return f"Qualitätsbericht {self.filename} angenommen ({numbers})"
        rules = sorted({f.rule for f in self.findings if f.klass == "hart"})
        return f"Qualitätsbericht {self.filename} abgelehnt ({numbers}; {', '.join(rules)})"

    def to_dict(self) -> dict[str, Any]:
        ruleset = self.ruleset
        return {
            "datei": self.filename,
            "berichtsjahr": self.year,
            "ik": self.ik,
            "standort": self.site,
            "ergebnis": self.outcome,
            "schema": self.schema,
            "regelwerk": None
            if ruleset is None
            else {
                "titel": ruleset.title,
                "version": ruleset.version,
                "quelle": ruleset.source,
                "regeln": ruleset.rules,
            },
            "anzahl": self.counts(),
            "nicht_aufgefuehrt": dict(self.omitted),
            "befunde": [f.to_dict() for f in self.findings],
            **({"hinweis": UNAVAILABLE_ADVICE} if self.unavailable else {}),
        }

    def render_text(self) -> str:
        """A readable protocol in German."""
        counts = self.counts()
        lines = [
            "Prüfprotokoll Qualitätsbericht",
            f"Datei:        {self.filename}",
            f"Berichtsjahr: {self.year if self.year is not None else '(unbekannt)'}",
        ]
        if self.ik or self.site:
            lines.append(f"IK/Standort:  {self.ik or '?'} / {self.site or '?'}")
        lines.append(f"XML-Schema:   {self.schema or '(nicht geprüft)'}")
        if self.ruleset is not None:
            lines.append(
                f"Regelwerk:    {self.ruleset.title} (Version {self.ruleset.version}, "
                f"{self.ruleset.rules} Regeln)"
            )
        else:
            lines.append("Regelwerk:    (nicht geprüft)")
        tally = ", ".join(f"{n} {k}" for k, n in counts.items())
        lines.append(f"Ergebnis:     {self.outcome.upper()} ({tally})")
        if self.unavailable:
            lines.append(f"Hinweis:      {UNAVAILABLE_ADVICE}")
        for finding in self.findings:
            lines.append("")
            head = f"[{finding.rule}] {finding.klass}"
            if finding.title:
                head += f" – {finding.title}"
            if finding.part:
                head += f" (Teil {finding.part})"
            lines.append(head)
            lines.append(f"  Meldung:   {finding.message}")
            if finding.where:
                lines.append(f"  Ort:       {finding.where}")
            lines.append(f"  Anweisung: {finding.instruction}")
        for rule, extra in sorted(self.omitted.items()):
            lines.append("")
            lines.append(f"[{rule}] {extra} weitere Befunde dieser Regel nicht aufgeführt.")
        return "\n".join(lines) + "\n"
