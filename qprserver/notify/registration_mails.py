"""The mails of the registration lifecycle: one function per template, context only.

They sit beside ``emails`` (which renders them) because a participant's way in has
its own eight templates. Links are built here from the path the web portal serves and
the token in clear; the portal URL comes from ``[mail] portal_url`` at rendering.
"""

from __future__ import annotations

from typing import TypedDict

from qprserver.notify.emails import Email

# The portal's paths for the links in these mails (``web/`` serves them).
CONFIRM_PATH = "/registrierung/bestaetigen/"
PASSWORD_PATH = "/registrierung/passwort/"
RESET_PATH = "/passwort/neu/"


class Person(TypedDict):
    ik: str
    institution: str
    contact: str


class WithLink(Person):
    path: str
    hours: int


class Holder(TypedDict):
    ik: str
    institution: str


class HolderLink(Holder):
    path: str
    hours: int


class Applied(Person):
    procedures: list[str]


class Approved(Person):
    procedures: list[str]
    sftp_without_key: bool
    postal: bool


class Rejected(Person):
    reason: str


def _person(ik: str, institution: str, contact: str) -> Person:
    return {"ik": ik, "institution": institution, "contact": contact}


def registration_confirm(ik: str, institution: str, contact: str, token: str, hours: int) -> Email:
    """Please confirm this address (double opt-in)."""
    context: WithLink = {
        **_person(ik, institution, contact),
        "path": CONFIRM_PATH + token,
        "hours": hours,
    }
    return Email("registration_confirm", context)


def registration_known(ik: str, institution: str, contact: str) -> Email:
    """Somebody registered an IK that has an account or a registration under way."""
    return Email("registration_known", _person(ik, institution, contact))


def registration_password(ik: str, institution: str, contact: str, token: str, hours: int) -> Email:
    """The address is confirmed: set the password by this one-time link."""
    context: WithLink = {
        **_person(ik, institution, contact),
        "path": PASSWORD_PATH + token,
        "hours": hours,
    }
    return Email("registration_password", context)


def registration_reminder(ik: str, institution: str, contact: str, token: str, hours: int) -> Email:
    """The registration waits for password and second factor: a new link."""
    context: WithLink = {
        **_person(ik, institution, contact),
        "path": PASSWORD_PATH + token,
        "hours": hours,
    }
    return Email("registration_reminder", context)


def registration_applied(ik: str, institution: str, contact: str, procedures: list[str]) -> Email:
    """The application is complete and waits for the operator."""
    context: Applied = {**_person(ik, institution, contact), "procedures": procedures}
    return Email("registration_applied", context)


def registration_approved(
    ik: str,
    institution: str,
    contact: str,
    procedures: list[str],
    *,
    sftp_without_key: bool,
    postal: bool,
) -> Email:
    """The operator approved: what happens next."""
    context: Approved = {
        **_person(ik, institution, contact),
        "procedures": procedures,
        "sftp_without_key": sftp_without_key,
        "postal": postal,
    }
    return Email("registration_approved", context)


def registration_rejected(ik: str, institution: str, contact: str, reason: str) -> Email:
    """The operator rejected, with the reason."""
    context: Rejected = {**_person(ik, institution, contact), "reason": reason}
    return Email("registration_rejected", context)


def password_reset(ik: str, institution: str, token: str, hours: int) -> Email:
    """A new password by this one-time link (asked for at the portal)."""
    context: HolderLink = {
        "ik": ik,
        "institution": institution,
        "path": RESET_PATH + token,
        "hours": hours,
    }
    return Email("password_reset", context)


def totp_reset(ik: str, institution: str) -> Email:
    """The operator removed the second factor: enrol again at the next web login."""
    context: Holder = {"ik": ik, "institution": institution}
    return Email("totp_reset", context)
