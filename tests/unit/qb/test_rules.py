from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from lxml import etree

from qprserver.config import QbSettings
from qprserver.errors import ConfigError
from qprserver.ik import check_digit
from qprserver.qb import check_report
from qprserver.qb.plausibility import SHIPPED, RuleSet, load_rules
from qprserver.qb.protocol import KLASSEN
from tests.unit.qb.conftest import Variant

RULES_2019 = SHIPPED / "2019.sch"
KH_IK = "<IK>260100023</IK>\n      <Standortnummer>99</Standortnummer>"


def _shipped() -> RuleSet:
    return load_rules(RULES_2019, "shipped rules 2019")


def _tiny(body: str) -> etree._ElementTree:
    return etree.ElementTree(etree.fromstring(f"<Qualitaetsbericht>{body}</Qualitaetsbericht>"))


def _fired(tree: etree._ElementTree, **parameters: str) -> set[str]:
    return {f.rule for f in _shipped().check(tree, **parameters).findings}


def test_shipped_2019_rules_describe_every_rule_completely() -> None:
    rules = _shipped().rules
    assert len(rules) >= 10
    for rule in rules.values():
        assert rule.number.startswith("QB19-")
        assert rule.title and rule.description and rule.category and rule.part
        assert rule.klass in KLASSEN
    assert {r.klass for r in rules.values()} == set(KLASSEN)
    assert [n for n, r in rules.items() if r.klass == "Pilot"] == ["QB19-11"]


@pytest.mark.parametrize(
    ("replacement", "rule", "klass"),
    [
        pytest.param(
            ("<Email>muehue@diako.de</Email>", "<Email>muehue@diako.de; rieswo@diako.de</Email>"),
            "QB19-09",
            "weich",
            id="two e-mail addresses in one field",
        ),
        pytest.param(
            (
                "<Vorwahl>0461</Vorwahl>\n              <Rufnummer>812</Rufnummer>\n"
                "              <Durchwahl>1201</Durchwahl>",
                "<Vorwahl>461</Vorwahl>\n              <Rufnummer>812</Rufnummer>\n"
                "              <Durchwahl>1201</Durchwahl>",
            ),
            "QB19-10",
            "weich",
            id="area code without leading zero",
        ),
        pytest.param(
            (
                "<Vollstationaere_Fallzahl>6078</Vollstationaere_Fallzahl>",
                "<Vollstationaere_Fallzahl>30000</Vollstationaere_Fallzahl>",
            ),
            "QB19-12",
            "weich",
            id="department with more cases than the hospital",
        ),
        pytest.param(
            (
                "<Vollstationaere_Fallzahl>6078</Vollstationaere_Fallzahl>",
                "<Vollstationaere_Fallzahl>5000</Vollstationaere_Fallzahl>",
            ),
            "QB19-13",
            "weich",
            id="main diagnoses exceeding the department's cases",
        ),
        pytest.param(
            ("<Anzahl_VK>185,69</Anzahl_VK>", "<Anzahl_VK>175,69</Anzahl_VK>"),
            "QB19-14",
            "weich",
            id="staff parts not adding up",
        ),
        pytest.param(
            ("<Anzahl_VK>118,46</Anzahl_VK>", "<Anzahl_VK>218,46</Anzahl_VK>"),
            "QB19-15",
            "weich",
            id="more specialists than doctors",
        ),
        pytest.param(
            ("<Anzahl_Betten>493</Anzahl_Betten>", "<Anzahl_Betten>50</Anzahl_Betten>"),
            "QB19-16",
            "weich",
            id="more cases than beds can take",
        ),
        pytest.param(
            (
                "<Nachweispflichtige>122</Nachweispflichtige>",
                "<Nachweispflichtige>200</Nachweispflichtige>",
            ),
            "QB19-17",
            "weich",
            id="more obliged to prove than obliged to train",
        ),
        pytest.param(
            ("<Erbrachte_Menge>93</Erbrachte_Menge>", "<Erbrachte_Menge>90</Erbrachte_Menge>"),
            "QB19-18",
            "weich",
            id="minimum volume differing from the prognosis",
        ),
        pytest.param(
            (
                "<IK>260100023</IK>\n      <Standortnummer>99",
                "<IK>260100023</IK>\n"
                "      <IK_Weitere>260100024</IK_Weitere>\n      <Standortnummer>99",
            ),
            "QB19-08",
            "weich",
            id="further IK with wrong check digit",
        ),
        pytest.param(
            (KH_IK, KH_IK.replace(">99<", ">00<")),
            "QB19-05",
            "hart",
            id="hospital site number 00 although sites follow",
        ),
    ],
)
def test_modified_report_gets_the_expected_finding(
    qb_settings: QbSettings, variant: Variant, replacement: tuple[str, str], rule: str, klass: str
) -> None:
    path = variant(replacement)
    protocol = check_report(path, filename=path.name, settings=qb_settings)
    fired = {(f.rule, f.klass) for f in protocol.findings} - {("QB19-11", "Pilot")}
    assert (rule, klass) in fired
    assert protocol.accepted == (klass != "hart")
    assert all(f.rule.startswith("QB19-") for f in protocol.findings)


def test_messages_are_filled_with_values_from_the_report(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant(("<Anzahl_VK>185,69</Anzahl_VK>", "<Anzahl_VK>175,69</Anzahl_VK>"))
    protocol = check_report(path, filename=path.name, settings=qb_settings)
    [finding] = [f for f in protocol.findings if f.rule == "QB19-14"]
    assert finding.message == (
        "Aerzte_ohne_Belegaerzte: 189,51 Vollkräfte angegeben, nach Beschäftigungsverhältnis "
        "zusammen 179,51."
    )
    assert finding.location == (
        "/Qualitaetsbericht/Personal_des_Krankenhauses/Aerzte/Aerzte_ohne_Belegaerzte"
        "/Personalerfassung"
    )
    assert finding.line == 637
    assert finding.part == "A-11, B-[X].11"
    assert finding.instruction == (
        "Die Vollkräfte so angeben, dass die Teilsummen die Gesamtzahl ergeben."
    )


def test_site_of_a_single_report_must_not_be_00_or_99(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant(
        ("<Standortnummer>01</Standortnummer>", "<Standortnummer>99</Standortnummer>"),
        name="260100023-99-2019-xml.xml",
    )
    protocol = check_report(path, filename=path.name, settings=qb_settings)
    assert {f.rule for f in protocol.findings if f.klass == "hart"} == {"QB19-06"}


def test_sites_of_a_combined_report_are_listed_once() -> None:
    sites = "".join(
        f"<Kontaktdaten><IK>260100023</IK><Standortnummer>{n}</Standortnummer></Kontaktdaten>"
        for n in ("01", "02", "01")
    )
    tree = _tiny(
        "<Krankenhaus><Krankenhauskontaktdaten><IK>260100023</IK>"
        "<Standortnummer>99</Standortnummer></Krankenhauskontaktdaten>"
        f"<Standortkontaktdaten_Gesamtbericht>{sites}</Standortkontaktdaten_Gesamtbericht>"
        "</Krankenhaus>"
    )
    result = _shipped().check(tree, datei_ik="260100023", datei_standort="99")
    assert [(f.rule, f.location) for f in result.findings] == [
        (
            "QB19-07",
            "/Qualitaetsbericht/Krankenhaus/Standortkontaktdaten_Gesamtbericht/Kontaktdaten[3]",
        )
    ]


@given(
    stem=st.from_regex(r"[0-9]{8}", fullmatch=True),
    digit=st.integers(min_value=0, max_value=9),
)
def test_check_digit_rule_agrees_with_the_ik_module(stem: str, digit: int) -> None:
    expected = check_digit(stem)

    def fired(ik: str) -> bool:
        body = (
            "<Krankenhaus><Krankenhauskontaktdaten>"
            f"<IK>{ik}</IK><Standortnummer>00</Standortnummer>"
            "</Krankenhauskontaktdaten></Krankenhaus>"
        )
        return "QB19-01" in _fired(_tiny(body))

    assert not fired(f"{stem}{expected}")
    assert fired(f"{stem}{digit}") == (digit != expected)


def test_e_mail_rule_tells_well_formed_from_malformed_addresses() -> None:
    good = ["a@b.de", "vorname.nachname@klinik-x.de", "info@sub.example.org"]
    bad = ["a@b", "@b.de", "a@@b.de", "a@b..de", "a b@c.de", "a@b.d", "a@.b.de", "a,b@c.de"]
    for address in good + bad:
        fired = "QB19-09" in _fired(_tiny(f"<Email>{address}</Email>"))
        assert fired == (address in bad), address


def test_rules_comparing_with_the_file_name_are_silent_without_one() -> None:
    tree = _tiny(
        "<Einleitung><Datensatz><Datum>2019-01-01</Datum></Datensatz></Einleitung>"
        "<Krankenhaus><Krankenhauskontaktdaten><IK>260100023</IK>"
        "<Standortnummer>00</Standortnummer></Krankenhauskontaktdaten></Krankenhaus>"
    )
    assert _fired(tree) == set()
    assert _fired(tree, datei_ik="260326822", datei_standort="01", berichtsjahr="2019") == {
        "QB19-02",
        "QB19-03",
        "QB19-04",
    }


def _write_rules(tmp_path: Path, pattern_attributes: str, role: str = "hart") -> Path:
    path = tmp_path / "rules.sch"
    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<sch:schema xmlns:sch="http://purl.oclc.org/dsdl/schematron"
            xmlns:qpr="urn:qprserver:qb-regelwerk" queryBinding="xslt" schemaVersion="test">
  <sch:title>Testregeln</sch:title>
  <sch:pattern id="T-1" {pattern_attributes}>
    <sch:title>Immer verletzt</sch:title>
    <sch:p>Zum Testen.</sch:p>
    <sch:rule context="/Qualitaetsbericht">
      <sch:assert role="{role}" test="false()" diagnostics="t1">Regel T-1 verletzt.</sch:assert>
    </sch:rule>
  </sch:pattern>
  <sch:diagnostics><sch:diagnostic id="t1">Nichts tun.</sch:diagnostic></sch:diagnostics>
</sch:schema>
""",
        encoding="utf-8",
    )
    return path


def test_configured_rules_file_replaces_the_shipped_one(
    qb_settings: QbSettings, real_report: Path, tmp_path: Path
) -> None:
    rules = _write_rules(tmp_path, 'qpr:kategorie="Test" qpr:berichtsteil="A"')
    settings = qb_settings.model_copy(update={"rules": {"2019": rules}})
    protocol = check_report(real_report, filename=real_report.name, settings=settings)
    assert [(f.rule, f.klass, f.message) for f in protocol.findings] == [
        ("T-1", "hart", "Regel T-1 verletzt.")
    ]
    assert protocol.ruleset is not None and protocol.ruleset.title == "Testregeln"


@pytest.mark.parametrize(
    ("attributes", "role", "problem"),
    [
        ('qpr:berichtsteil="A"', "hart", "rule T-1 lacks qpr:kategorie"),
        ('qpr:kategorie="Test" qpr:berichtsteil="A"', "fatal", "same role, one of hart"),
    ],
)
def test_incomplete_rules_file_is_refused_naming_the_gap(
    tmp_path: Path, attributes: str, role: str, problem: str
) -> None:
    path = _write_rules(tmp_path, attributes, role)
    with pytest.raises(ConfigError, match=problem):
        load_rules(path, "qb.rules.2019")


def test_rules_file_that_is_no_schematron_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rules.sch"
    path.write_text("<regeln/>", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"qb\.rules\.2019: .*not usable ISO Schematron"):
        load_rules(path, "qb.rules.2019")
