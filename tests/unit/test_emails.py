"""Each mail template with the context its function in ``notify.emails`` returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import jinja2
import jinja2.meta
import pytest

from qprserver.config import MailSettings
from qprserver.db.models import Account, UploadProtocol
from qprserver.notify import emails, qb_mails
from qprserver.notify import registration_mails as reg_mails
from qprserver.notify.emails import TEMPLATES, Email

SETTINGS = MailSettings(portal_name="QPR-Portal", collect_host="sftp.example.org")
NOW = datetime(2026, 11, 22, 10, 0, 5, 250, tzinfo=UTC)
PARTS = ("subject.txt", "body.txt", "body.html")


@dataclass(frozen=True)
class ReportFinding:
    rule: str
    klass: str
    message: str
    where: str
    instruction: str


def _account() -> Account:
    return Account(ik="180500016", name="Landesverband <NW>", roles="recipient,depositor")


def _protocol() -> UploadProtocol:
    return UploadProtocol(upload_name="510512349_bericht.pdf", file_name="20261122_0000007.json")


IK, INST = "180500016", "Landesverband <NW>"
FINDING = ReportFinding("QB19-11", "hart", "Wert fehlt", "/Qb/X (Zeile 54)", "Wert eintragen")

# One or more calls per template folder, each covering a branch of the template.
SAMPLES: dict[str, Callable[[], Email]] = {
    "account_created": lambda: emails.account_created(_account()),
    "account_disabled": lambda: emails.account_disabled(_account()),
    "key_added": lambda: emails.key_added(_account(), "SHA256:abc", "ssh-ed25519"),
    "upload_receipt": lambda: emails.upload_receipt(
        _protocol(), _account(), received_at=NOW, size=20_000, sha256="ab" * 32
    ),
    "upload_result:accepted": lambda: emails.upload_result(
        _protocol(),
        findings=emails.report_findings([FINDING]),
        document_id=7,
        version=2,
        sha256="ab" * 32,
        recipients=3,
    ),
    "upload_result:rejected": lambda: emails.upload_result(
        _protocol(), findings=[emails.finding("%%EOF fehlt")]
    ),
    "upload_result:unavailable": lambda: emails.upload_result(
        _protocol(), findings=emails.report_findings([FINDING]), unavailable=True
    ),
    "digest": lambda: emails.digest(
        _account(),
        [("Prüfbericht", 11), ("Qualitätsbericht", 1)],
        [f"bericht_{i:02d}.pdf" for i in range(12)],
        first=10,
    ),
    "bundle_ready": lambda: emails.bundle_ready(
        _account(), "qpr-180500016-2026-W45.zip", count=1, size=999, sha256="cd" * 32
    ),
    "send_test": lambda: emails.send_test("127.0.0.1:8025"),
    "registration_confirm": lambda: reg_mails.registration_confirm(
        IK, INST, "Frau Muster", "t0k", 72
    ),
    "registration_known": lambda: reg_mails.registration_known(IK, INST, ""),
    "registration_password": lambda: reg_mails.registration_password(
        IK, INST, "Frau Muster", "t0k", 72
    ),
    "registration_reminder": lambda: reg_mails.registration_reminder(
        IK, INST, "Frau Muster", "t0k", 72
    ),
    "registration_applied": lambda: reg_mails.registration_applied(
        IK, INST, "Frau Muster", ["QPR_0_WEB"]
    ),
    "registration_approved:postal-sftp-no-key": lambda: reg_mails.registration_approved(
        IK, INST, "Frau Muster", ["QPR_0_SFTP", "QPR_0_WEB"], sftp_without_key=True, postal=True
    ),
    "registration_approved:web": lambda: reg_mails.registration_approved(
        IK, INST, "Frau Muster", ["QPR_0_WEB"], sftp_without_key=False, postal=False
    ),
    "registration_rejected": lambda: reg_mails.registration_rejected(
        IK, INST, "", "IK gehört nicht zu Ihnen"
    ),
    "password_reset": lambda: reg_mails.password_reset(IK, INST, "t0k", 2),
    "totp_reset": lambda: reg_mails.totp_reset(IK, INST),
    "qb_registration_confirm": lambda: qb_mails.qb_registration_confirm(
        2025, "260100023", "01", "Klinik <Nord>", "Frau Muster", "t0k", 72
    ),
    "qb_account_password": lambda: qb_mails.qb_account_password(
        2025, "260100023", "01", "Klinik <Nord>", "Frau Muster", "260100023-01", "t0k", 72
    ),
    "qb_registration_known": lambda: qb_mails.qb_registration_known(
        2025, "260100023", "01", "Klinik <Nord>"
    ),
    "qb_correction": lambda: qb_mails.qb_correction(
        2025,
        "260100023",
        "01",
        "Klinik <Nord>",
        "Frau Muster",
        "Standort 01 bei der QS-Stelle unbekannt",
        "t0k",
        "20.09.2026",
    ),
    "qb_registration_confirmed:late": lambda: qb_mails.qb_registration_confirmed(
        2025,
        "260100023",
        "01",
        "Klinik <Nord>",
        contact="Frau Muster",
        email="qb@klinik.example",
        phone="0431 1234-56",
        basis="Plankrankenhaus",
        further_iks="260100034",
        late=True,
    ),
    "qb_registration_confirmed:in-time": lambda: qb_mails.qb_registration_confirmed(
        2025,
        "260100023",
        "99",
        "Klinik <Nord>",
        contact="Frau Muster",
        email="qb@klinik.example",
        phone="0431 1234-56",
        basis="Hochschulklinik",
        further_iks="",
        late=False,
    ),
    "qb_c1_reminder": lambda: qb_mails.qb_c1_reminder(
        2025, "100000011", "QS-Stelle <SH>", "15.12.2026", ["IK 260100023, Standort 01: Klinik"]
    ),
    "qb_reminder": lambda: qb_mails.qb_reminder(
        2025, "260100023", "01", "Klinik <Nord>", "Frau Muster", "15.11.2026"
    ),
}


def _variables(template: str) -> set[str]:
    """The names a template folder reads from its context, over all three parts."""
    env = jinja2.Environment()
    names: set[str] = set()
    for part in PARTS:
        source = (TEMPLATES / template / part).read_text(encoding="utf-8")
        names |= jinja2.meta.find_undeclared_variables(env.parse(source))
    return names


def test_every_template_folder_has_its_function_and_a_sample_here() -> None:
    folders = sorted(p.name for p in TEMPLATES.iterdir() if p.is_dir())
    assert folders == sorted({name.partition(":")[0] for name in SAMPLES})
    for folder in folders:
        module = next(m for m in (reg_mails, qb_mails, emails) if hasattr(m, folder))
        assert callable(getattr(module, folder)), folder
        assert sorted(p.name for p in (TEMPLATES / folder).iterdir()) == sorted(PARTS)


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_the_context_function_renders_subject_text_and_html_with_no_key_missing(
    sample: str,
) -> None:
    email = SAMPLES[sample]()
    assert email.template == sample.partition(":")[0]
    # StrictUndefined: a key the function left out would raise here.
    mail = emails.render(email, SETTINGS)
    assert mail.subject.startswith("QPR-Portal: ") and "\n" not in mail.subject
    assert mail.text.strip() and mail.html.startswith("<!DOCTYPE html>")
    assert "QPR-Portal" in mail.text and "QPR-Portal" in mail.html


@pytest.mark.parametrize("template", sorted({name.partition(":")[0] for name in SAMPLES}))
def test_the_context_holds_exactly_what_the_template_reads(template: str) -> None:
    contexts = [SAMPLES[name]().context for name in SAMPLES if name.partition(":")[0] == template]
    common = set(emails.common(SETTINGS))
    for context in contexts:
        assert set(context) | common >= _variables(template)
        assert set(context) <= _variables(template), "the function passes more than is shown"


def test_a_missing_key_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(jinja2.UndefinedError, match="'ik' is undefined"):
        emails.render(Email("account_disabled", {"name": "Landesverband"}), SETTINGS)


def test_names_are_escaped_in_html_and_left_as_they_are_in_text() -> None:
    mail = emails.render(emails.account_disabled(_account()), SETTINGS)
    assert "Landesverband &lt;NW&gt;" in mail.html
    assert "Landesverband <NW>" in mail.text


def test_the_receipt_says_when_no_checksum_was_stored() -> None:
    email = emails.upload_receipt(_protocol(), _account(), received_at=NOW, size=12, sha256="")
    mail = emails.render(email, SETTINGS)
    assert "SHA-256:   (nicht gespeichert)" in mail.text
    assert "Eingang:   2026-11-22T10:00:05+00:00" in mail.text


def test_a_report_finding_is_listed_with_rule_class_place_and_instruction() -> None:
    mail = emails.render(SAMPLES["upload_result:accepted"](), SETTINGS)
    assert "  - [QB19-11, hart] Wert fehlt (/Qb/X (Zeile 54))\n    Bitte: Wert eintragen" in (
        mail.text
    )
    assert mail.subject == "QPR-Portal: 510512349_bericht.pdf angenommen"


def test_a_check_that_could_not_run_says_so_in_the_subject() -> None:
    mail = emails.render(SAMPLES["upload_result:unavailable"](), SETTINGS)
    assert mail.subject == "QPR-Portal: 510512349_bericht.pdf – Prüfung derzeit nicht möglich"
    assert "Dokument-Nr." not in mail.text


def test_the_digest_lists_the_first_names_and_counts_the_rest() -> None:
    mail = emails.render(SAMPLES["digest"](), SETTINGS)
    assert mail.subject == "QPR-Portal: 12 neue Dokumente zum Abruf bereit"
    assert "  - bericht_09.pdf\n  … und 2 weitere" in mail.text
    assert "bericht_10.pdf" not in mail.text
    assert "  Prüfbericht: 11\n  Qualitätsbericht: 1" in mail.text


def test_registration_links_join_the_portal_url_and_the_token() -> None:
    settings = MailSettings(portal_url="https://portal.example.org/qpr/")
    mail = emails.render(
        reg_mails.registration_confirm(IK, INST, "Frau Muster", "abc_-1", 72), settings
    )
    assert "https://portal.example.org/qpr/registrierung/bestaetigen/abc_-1" in mail.text
    assert 'href="https://portal.example.org/qpr/registrierung/bestaetigen/abc_-1"' in mail.html


def test_an_approval_for_sftp_without_a_key_says_how_to_add_one() -> None:
    approved = SAMPLES["registration_approved:postal-sftp-no-key"]()
    text = emails.render(approved, SETTINGS).text
    assert "SSH-Schlüssel" in text and "Aktivierungscode" in text
    web_only = emails.render(SAMPLES["registration_approved:web"](), SETTINGS).text
    assert "SSH-Schlüssel" not in web_only and "Aktivierungscode" not in web_only
