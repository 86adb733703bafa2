"""The mails of the Qb-R reporting year: one function per template, context only."""

from __future__ import annotations

from typing import TypedDict

from qprserver.notify.emails import Email
from qprserver.notify.registration_mails import PASSWORD_PATH

# The portal's paths that confirm a report's registration and correct its IK/Standort
# in the correction phase (``web/`` serves them).
QB_CONFIRM_PATH = "/berichtsjahr/bestaetigen/"
QB_CORRECT_PATH = "/berichtsjahr/korrigieren/"


class Report(TypedDict):
    year: int
    ik: str
    site: str
    hospital: str


class ConfirmLink(Report):
    contact: str
    path: str
    hours: int


class AccountLink(ConfirmLink):
    login: str


class Reminder(Report):
    contact: str
    deadline: str


class CorrectionLink(Report):
    contact: str
    mismatch: str
    path: str
    until: str


class Registered(Report):
    contact: str
    email: str
    phone: str
    basis: str
    further_iks: str
    late: bool


class C1Reminder(TypedDict):
    year: int
    ik: str
    name: str
    deadline: str
    lacking: list[str]


def _report(year: int, ik: str, site: str, hospital: str) -> Report:
    return {"year": year, "ik": ik, "site": site, "hospital": hospital}


def qb_registration_confirm(
    year: int, ik: str, site: str, hospital: str, contact: str, token: str, hours: int
) -> Email:
    """Please confirm the address of this report's registration (double opt-in)."""
    context: ConfirmLink = {
        **_report(year, ik, site, hospital),
        "contact": contact,
        "path": QB_CONFIRM_PATH + token,
        "hours": hours,
    }
    return Email("qb_registration_confirm", context)


def qb_account_password(
    year: int,
    ik: str,
    site: str,
    hospital: str,
    contact: str,
    login: str,
    token: str,
    hours: int,
) -> Email:
    """The registration is confirmed: its account's login name, and the one-time link
    that sets its first password."""
    context: AccountLink = {
        **_report(year, ik, site, hospital),
        "contact": contact,
        "login": login,
        "path": PASSWORD_PATH + token,
        "hours": hours,
    }
    return Email("qb_account_password", context)


def qb_registration_known(year: int, ik: str, site: str, hospital: str) -> Email:
    """Somebody registered a report that is registered already."""
    return Email("qb_registration_known", _report(year, ik, site, hospital))


def qb_reminder(year: int, ik: str, site: str, hospital: str, contact: str, deadline: str) -> Email:
    """The hospital deadline is 14 days away and no report is accepted yet."""
    context: Reminder = {
        **_report(year, ik, site, hospital),
        "contact": contact,
        "deadline": deadline,
    }
    return Email("qb_reminder", context)


def qb_c1_reminder(year: int, ik: str, name: str, deadline: str, lacking: list[str]) -> Email:
    """To a QS-Stelle: the registered reports that still lack its C-1 data."""
    context: C1Reminder = {
        "year": year,
        "ik": ik,
        "name": name,
        "deadline": deadline,
        "lacking": lacking,
    }
    return Email("qb_c1_reminder", context)


def qb_correction(
    year: int,
    ik: str,
    site: str,
    hospital: str,
    contact: str,
    mismatch: str,
    token: str,
    until: str,
) -> Email:
    """A QS-Stelle's list differs from this registration: correct IK/Standort by the link
    until the correction phase ends."""
    context: CorrectionLink = {
        **_report(year, ik, site, hospital),
        "contact": contact,
        "mismatch": mismatch,
        "path": QB_CORRECT_PATH + token,
        "until": until,
    }
    return Email("qb_correction", context)


def qb_registration_confirmed(
    year: int,
    ik: str,
    site: str,
    hospital: str,
    *,
    contact: str,
    email: str,
    phone: str,
    basis: str,
    further_iks: str,
    late: bool,
) -> Email:
    """The registration stands (after the correction phase): the data registered."""
    context: Registered = {
        **_report(year, ik, site, hospital),
        "contact": contact,
        "email": email,
        "phone": phone,
        "basis": basis,
        "further_iks": further_iks,
        "late": late,
    }
    return Email("qb_registration_confirmed", context)
