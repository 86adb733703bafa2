from __future__ import annotations

import json

from qprserver.qb.protocol import Finding, Protocol, RuleSetInfo

RULES = RuleSetInfo(title="Regeln 2019", version="2019.1", source="2019.sch", rules=18)


def _finding(rule: str, klass: str, line: int | None = 7) -> Finding:
    return Finding(
        rule=rule,
        klass=klass,  # type: ignore[arg-type]
        message=f"Meldung {rule}",
        instruction=f"Anweisung {rule}",
        location="/Qualitaetsbericht/X" if line else "",
        line=line,
        title=f"Titel {rule}",
        category="Kategorie",
        part="A-1",
    )


def _protocol(*findings: Finding, omitted: dict[str, int] | None = None) -> Protocol:
    return Protocol(
        filename="260100023-01-2019-xml.xml",
        year=2019,
        ik="260100023",
        site="01",
        schema="qb-2019-schema.xsd",
        ruleset=RULES,
        findings=findings,
        omitted=omitted or {},
    )


def test_only_hart_findings_reject_a_report() -> None:
    assert _protocol().accepted
    assert _protocol(_finding("W", "weich"), _finding("P", "Pilot")).accepted
    assert not _protocol(_finding("W", "weich"), _finding("H", "hart")).accepted


def test_counts_include_findings_left_out_of_the_list() -> None:
    protocol = _protocol(_finding("W", "weich"), _finding("H", "hart"), omitted={"W": 9})
    assert protocol.counts() == {"hart": 1, "weich": 10, "Pilot": 0}
    assert protocol.summary() == (
        "Qualitätsbericht 260100023-01-2019-xml.xml abgelehnt (1 hart, 10 weich, 0 Pilot; H)"
    )


def test_json_protocol_lists_every_field_of_a_finding() -> None:
    data = json.loads(json.dumps(_protocol(_finding("QB19-01", "hart")).to_dict()))
    assert data["ergebnis"] == "abgelehnt"
    assert data["regelwerk"] == {
        "titel": "Regeln 2019",
        "version": "2019.1",
        "quelle": "2019.sch",
        "regeln": 18,
    }
    assert data["befunde"] == [
        {
            "regel": "QB19-01",
            "klasse": "hart",
            "titel": "Titel QB19-01",
            "kategorie": "Kategorie",
            "berichtsteil": "A-1",
            "meldung": "Meldung QB19-01",
            "ort": "/Qualitaetsbericht/X",
            "zeile": 7,
            "anweisung": "Anweisung QB19-01",
        }
    ]


def test_text_protocol_shows_outcome_and_each_finding() -> None:
    text = _protocol(_finding("QB19-11", "Pilot"), omitted={"QB19-11": 3}).render_text()
    assert "Ergebnis:     ANGENOMMEN (0 hart, 0 weich, 4 Pilot)" in text
    assert "[QB19-11] Pilot – Titel QB19-11 (Teil A-1)" in text
    assert "  Ort:       /Qualitaetsbericht/X (Zeile 7)" in text
    assert "  Anweisung: Anweisung QB19-11" in text
    assert "[QB19-11] 3 weitere Befunde dieser Regel nicht aufgeführt." in text
