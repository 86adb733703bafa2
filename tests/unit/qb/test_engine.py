from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qprserver.config import QbSettings
from qprserver.errors import ConfigError
from qprserver.qb import check_report, validate_upload
from qprserver.qb.plausibility import SHIPPED
from qprserver.qb.protocol import Protocol
from qprserver.qb.schema import MAX_SCHEMA_ERRORS, load_schema
from tests.unit.qb.conftest import REPORT_2019, SCHEMA_2019, Variant, require_qb_data

NAME = REPORT_2019.name
KH_IK = "<IK>260100023</IK>\n      <Standortnummer>99</Standortnummer>"


def _check(
    path: Path,
    settings: QbSettings,
    *,
    year: int | None = None,
    uploader_ik: str | None = None,
    delivers_for: set[str] | None = None,
) -> Protocol:
    return check_report(
        path,
        filename=path.name,
        settings=settings,
        year=year,
        uploader_ik=uploader_ik,
        delivers_for=delivers_for or set(),
    )


def _rules(protocol: Protocol, klass: str = "hart") -> set[str]:
    return {f.rule for f in protocol.findings if f.klass == klass}


def _billion_laughs() -> bytes:
    doc = b'<?xml version="1.0"?>\n<!DOCTYPE Qualitaetsbericht [\n<!ENTITY lol "lol">\n'
    for i in range(1, 10):
        prev = b"&lol;" if i == 1 else b"&lol%d;" % (i - 1)
        doc += b'<!ENTITY lol%d "%s">\n' % (i, prev * 10)
    return doc + b"]>\n<Qualitaetsbericht>&lol9;</Qualitaetsbericht>\n"


def test_real_2019_report_passes_schema_and_rules_without_hart_finding(
    qb_settings: QbSettings, real_report: Path
) -> None:
    protocol = _check(real_report, qb_settings)
    assert protocol.accepted
    assert protocol.outcome == "angenommen"
    assert _rules(protocol) == set()
    assert protocol.schema == SCHEMA_2019.name
    assert protocol.ruleset is not None and protocol.ruleset.rules >= 10
    assert (protocol.ik, protocol.site, protocol.year) == ("260100023", "01", 2019)
    # The report gives its web site as http://: the Pilot rule notes it, nothing else fires.
    assert [(f.rule, f.klass, f.line) for f in protocol.findings] == [("QB19-11", "Pilot", 54)]


def test_checking_the_real_report_takes_well_under_a_second(
    qb_settings: QbSettings, real_report: Path
) -> None:
    _check(real_report, qb_settings)  # compiles schema and rules once
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        _check(real_report, qb_settings)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 1.0


def test_removed_required_element_is_a_schema_error_with_line_and_path(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant((KH_IK, "<IK>260100023</IK>"))
    protocol = _check(path, qb_settings)
    assert not protocol.accepted
    assert _rules(protocol) == {"XSD-01"}
    [error] = protocol.findings
    assert error.line == 61  # the element that came after the removed one
    assert error.location == "/Qualitaetsbericht/Krankenhaus/Krankenhauskontaktdaten/Kontakt_Zugang"
    assert "Standortnummer" in error.message
    # Plausibility rules run only on schema-valid reports.
    assert protocol.ruleset is None


def test_wrong_check_digit_in_the_report_is_rejected_by_the_ik_rules(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant((KH_IK, KH_IK.replace("260100023", "260100024")))
    protocol = _check(path, qb_settings)
    assert not protocol.accepted
    assert _rules(protocol) == {"QB19-01", "QB19-02"}
    digit = next(f for f in protocol.findings if f.rule == "QB19-01")
    assert digit.message == "Das IK 260100024 ist ungültig: Prüfziffer 3 erwartet, 4 angegeben."
    assert digit.location == "/Qualitaetsbericht/Krankenhaus/Krankenhauskontaktdaten/IK"
    assert digit.line == 60
    assert digit.instruction.startswith("Das IK des Krankenhauses")


def test_report_created_within_its_report_year_does_not_match_the_name(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant(("<Datum>2020-11-12</Datum>", "<Datum>2019-11-12</Datum>"))
    protocol = _check(path, qb_settings)
    assert _rules(protocol) == {"QB19-04"}
    [finding] = [f for f in protocol.findings if f.rule == "QB19-04"]
    assert "2019-11-12" in finding.message and "Berichtsjahr 2019" in finding.message


def test_report_named_for_a_later_year_is_rejected_by_the_year_rule(
    qb_settings: QbSettings, variant: Variant
) -> None:
    # The 2019 report, renamed as a 2020 report, checked with the 2019 schema and rules.
    settings = qb_settings.model_copy(
        update={
            "schemas": {"2020": SCHEMA_2019},
            "rules": {"2020": SHIPPED / "2019.sch"},
        }
    )
    path = variant(name="260100023-01-2020-xml.xml")
    protocol = _check(path, settings)
    assert _rules(protocol) == {"QB19-04"}


def test_year_option_that_differs_from_the_name_is_a_hart_finding(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant(name="260100023-01-2018-xml.xml")
    protocol = _check(path, qb_settings, year=2019)
    assert protocol.year == 2019
    assert _rules(protocol) == {"DATEI-04"}


def test_site_in_the_name_must_be_the_site_of_the_report(
    qb_settings: QbSettings, variant: Variant
) -> None:
    protocol = _check(variant(name="260100023-02-2019-xml.xml"), qb_settings)
    assert _rules(protocol) == {"QB19-03"}
    [finding] = [f for f in protocol.findings if f.rule == "QB19-03"]
    assert finding.message == (
        "Der Bericht gilt für den Standort 01, der Dateiname nennt den Standort 02."
    )


def test_ik_in_the_name_must_be_valid_and_match_the_report(
    qb_settings: QbSettings, variant: Variant
) -> None:
    protocol = _check(variant(name="260100024-01-2019-xml.xml"), qb_settings)
    assert _rules(protocol) == {"DATEI-02", "QB19-02"}


def test_uploader_may_deliver_only_its_own_reports(
    qb_settings: QbSettings, real_report: Path
) -> None:
    foreign = _check(real_report, qb_settings, uploader_ik="260326822")
    assert _rules(foreign) == {"DATEI-03"}
    own = _check(real_report, qb_settings, uploader_ik="260100023")
    assert own.accepted
    on_behalf = _check(
        real_report, qb_settings, uploader_ik="260326822", delivers_for={"260100023"}
    )
    assert on_behalf.accepted


def test_file_name_off_the_pattern_is_rejected_but_checked_for_the_given_year(
    qb_settings: QbSettings, variant: Variant
) -> None:
    protocol = _check(variant(name="bericht.xml"), qb_settings, year=2019)
    assert _rules(protocol) == {"DATEI-01"}
    # Schema and rules still ran, so the sender learns everything at once.
    assert protocol.ruleset is not None
    assert "QB19-11" in _rules(protocol, "Pilot")


def test_without_a_year_nothing_beyond_the_name_is_checked(
    qb_settings: QbSettings, variant: Variant
) -> None:
    protocol = _check(variant(name="bericht.xml"), qb_settings)
    assert _rules(protocol) == {"DATEI-01", "JAHR-01"}
    assert protocol.schema is None


def test_year_without_configured_schema_is_refused_with_the_accepted_years(
    qb_settings: QbSettings, variant: Variant
) -> None:
    protocol = _check(variant(name="260100023-01-2017-xml.xml"), qb_settings)
    [finding] = protocol.findings
    assert finding.rule == "JAHR-02"
    assert "angenommene Berichtsjahre: 2019" in finding.message


def test_configured_but_missing_schema_file_is_a_config_error_naming_the_key(
    real_report: Path, tmp_path: Path
) -> None:
    settings = QbSettings.model_validate({"schemas": {"2019": str(tmp_path / "nope.xsd")}})
    with pytest.raises(ConfigError, match=r"qb\.schemas\.2019: .*nope\.xsd"):
        _check(real_report, settings)


def test_schema_errors_are_listed_up_to_fifty_and_counted_beyond(
    qb_settings: QbSettings, variant: Variant
) -> None:
    path = variant(("<Fallzahl>", "<Fallzahl>x"), every=True)
    protocol = _check(path, qb_settings)
    assert len(protocol.findings) == MAX_SCHEMA_ERRORS
    assert all(f.rule == "XSD-01" and f.line and f.location for f in protocol.findings)
    assert protocol.omitted == {"XSD-01": 811 - MAX_SCHEMA_ERRORS}
    assert protocol.counts()["hart"] == 811
    assert "761 weitere Befunde" in protocol.render_text()


def test_external_entity_is_rejected_quickly_without_reading_the_file(
    qb_settings: QbSettings, tmp_path: Path
) -> None:
    path = tmp_path / NAME
    path.write_bytes(
        b'<?xml version="1.0"?>\n<!DOCTYPE Qualitaetsbericht [\n'
        b'<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<Qualitaetsbericht>&x;</Qualitaetsbericht>\n'
    )
    start = time.perf_counter()
    protocol = _check(path, qb_settings)
    assert time.perf_counter() - start < 1.0
    assert _rules(protocol) == {"XML-01"}
    assert "root:" not in json.dumps(protocol.to_dict())


def test_external_dtd_over_the_network_is_rejected_without_fetching(
    qb_settings: QbSettings, tmp_path: Path
) -> None:
    path = tmp_path / NAME
    path.write_bytes(
        b'<?xml version="1.0"?>\n'
        b'<!DOCTYPE Qualitaetsbericht SYSTEM "http://192.0.2.1/qb.dtd">\n'
        b"<Qualitaetsbericht/>\n"
    )
    start = time.perf_counter()
    protocol = _check(path, qb_settings)
    assert time.perf_counter() - start < 1.0
    assert _rules(protocol) == {"XML-01"}


_ISOLATED = """
import json, sys, time
from pathlib import Path
from qprserver.config import QbSettings
from qprserver.qb import check_report
settings = QbSettings.model_validate({"schemas": {"2019": sys.argv[2]}})
path = Path(sys.argv[1])
start = time.perf_counter()
protocol = check_report(path, filename=path.name, settings=settings)
seconds = time.perf_counter() - start
# VmHWM is the peak of this process image alone; ru_maxrss would include the parent's
# peak, which the kernel carries over into the child at exec.
status = Path("/proc/self/status").read_text()
peak_kib = int(next(l for l in status.splitlines() if l.startswith("VmHWM:")).split()[1])
rules = sorted({f.rule for f in protocol.findings})
print(json.dumps({"seconds": seconds, "rules": rules, "peak_kib": peak_kib}))
"""


def test_billion_laughs_is_rejected_fast_with_bounded_memory(tmp_path: Path) -> None:
    require_qb_data()
    path = tmp_path / NAME
    path.write_bytes(_billion_laughs())
    if not Path("/proc/self/status").is_file():
        pytest.skip("peak memory is read from /proc/self/status (Linux)")
    # A process of its own, so its peak memory is the check's and nothing else's.
    done = subprocess.run(
        [sys.executable, "-c", _ISOLATED, str(path), str(SCHEMA_2019)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["rules"] == ["XML-01"]
    assert result["seconds"] < 1.0
    # Python with lxml and pydantic loaded peaks near 60 MiB; expanded, the entities
    # would need gigabytes.
    assert result["peak_kib"] < 200 * 1024


def test_file_over_the_size_limit_is_refused_before_parsing(
    qb_settings: QbSettings, real_report: Path
) -> None:
    settings = qb_settings.model_copy(update={"max_xml_bytes": 1024})
    protocol = _check(real_report, settings)
    [finding] = protocol.findings
    assert finding.rule == "XML-01"
    assert "1024 Bytes" in finding.message


def test_schema_is_compiled_once_and_again_when_its_file_changes(tmp_path: Path) -> None:
    require_qb_data()
    copy = tmp_path / "schema.xsd"
    shutil.copyfile(SCHEMA_2019, copy)
    first = load_schema(copy, "qb.schemas.2019")
    assert load_schema(copy, "qb.schemas.2019") is first
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert load_schema(copy, "qb.schemas.2019") is not first


def test_unusable_schema_file_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.xsd"
    broken.write_text("<xsd:schema xmlns:xsd='http://www.w3.org/2001/XMLSchema'><oops/>")
    with pytest.raises(ConfigError, match=r"qb\.schemas\.2019: .*not a usable XML schema"):
        load_schema(broken, "qb.schemas.2019")


async def test_upload_inside_a_window_is_accepted_with_its_notes(
    qb_settings: QbSettings, real_report: Path
) -> None:
    settings = qb_settings.model_copy(
        update={
            "years": QbSettings.model_validate(
                {"years": {"2019": {"hospital": {"start": "2020-10-15", "end": "2020-11-15"}}}}
            ).years
        }
    )
    inside = datetime(2020, 11, 2, 9, 0, tzinfo=UTC)
    result = await validate_upload(real_report, NAME, "260100023", settings, inside)
    assert result.accepted
    assert result.protocol["ergebnis"] == "angenommen"
    assert [f.rule for f in result.findings] == ["QB19-11"]
    assert result.findings[0].where.endswith("(Zeile 54)")
    assert "QB19-11" in result.text
    assert result.reason.startswith(f"Qualitätsbericht {NAME} angenommen")

    outside = datetime(2021, 1, 5, 9, 0, tzinfo=UTC)
    late = await validate_upload(real_report, NAME, "260100023", settings, outside)
    assert not late.accepted
    assert "FRIST-01" in late.reason
    frist = next(f for f in late.findings if f.rule == "FRIST-01")
    assert "Hauptlieferung 15.10.2020–15.11.2020" in frist.message
