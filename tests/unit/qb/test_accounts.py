"""Login names and what a report registration's account may deliver (no database)."""

from __future__ import annotations

import pytest

from qprserver.accounts.fields import is_login
from qprserver.db.models import Account
from qprserver.qb.accounts import delivery_refusal, login_name
from qprserver.qb.filename import parse_report_name


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("260100023", True),
        ("260100023-01", True),
        ("260100023-771234", True),
        ("260100023-1", False),
        ("260100023-0123", False),
        ("26010002", False),
        ("260100023-01 ", False),
        ("\u0662\u0666\u0660\u0661\u0660\u0660\u0660\u0662\u0663", False),  # Arabic-Indic digits
        ("root", False),
    ],
)
def test_a_login_name_is_an_ik_or_ik_dash_standort(name: str, ok: bool) -> None:
    assert is_login(name) is ok


def test_the_login_of_a_report_joins_ik_and_standort() -> None:
    assert login_name("260100023", "01") == "260100023-01"


def _account(site: str | None) -> Account:
    login = "260100023" if site is None else login_name("260100023", site)
    return Account(ik="260100023", login=login, site=site)


def test_an_institution_account_is_not_limited_here() -> None:
    assert delivery_refusal(_account(None), None) is None
    assert delivery_refusal(_account(None), parse_report_name("260100034-01-2019-xml.xml")) is None


def test_a_registration_account_delivers_its_own_report_only() -> None:
    own = _account("01")
    assert delivery_refusal(own, parse_report_name("260100023-01-2019-xml.xml")) is None
    assert delivery_refusal(own, parse_report_name("260100023-01-2020-xml.xml")) is None
    assert delivery_refusal(own, parse_report_name("260100023-99-2019-xml.xml")) == (
        "Der Bericht ist für IK 260100023, Standort 99; das Konto 260100023-01 liefert nur "
        "den Bericht seiner Registrierung (IK 260100023, Standort 01): "
        "260100023-01-<Berichtsjahr>-xml.xml."
    )
    assert delivery_refusal(own, None) == (
        "Das Konto 260100023-01 einer Berichtsregistrierung liefert nur den Qualitätsbericht "
        "260100023-01-<Berichtsjahr>-xml.xml."
    )
