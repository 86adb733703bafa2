"""The states and roles of an account, as the database stores them.

``StrEnum`` members compare equal to their values, so the columns keep the same
strings (``active``, ``disabled``, ``pending``; ``depositor``, ``recipient``,
``admin``); a new member is one value more here and in the column's check constraint.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class AccountStatus(StrEnum):
    """Whether an account may log in at all (expiry and restrictions come on top)."""

    ACTIVE = "active"
    DISABLED = "disabled"
    # A self-registered account before it is freigeschaltet (and, with postal
    # activation, before the letter's code was entered): it logs in nowhere.
    PENDING = "pending"


class Role(StrEnum):
    """What an account does in the exchange; an account has one or more."""

    DEPOSITOR = "depositor"
    RECIPIENT = "recipient"
    ADMIN = "admin"
    # An office for external quality assurance (Land or Bund): delivers part C-1 of
    # the quality reports (Qb-R § 6), besides depositing.
    QS_STELLE = "qs-stelle"


def parse_roles(text: str) -> frozenset[Role]:
    """The roles of a stored comma-separated list (unknown names are an error)."""
    return frozenset(Role(name) for name in text.split(",") if name)


def format_roles(roles: Iterable[Role | str]) -> str:
    """The stored form: sorted, comma-separated, no spaces."""
    return ",".join(sorted({Role(r).value for r in roles}))


class Channel(StrEnum):
    """How an account logs in: the SSH edge or the web portal."""

    SFTP = "sftp"
    WEB = "web"


class Procedure(StrEnum):
    """The QPR-Portal's procedures; an account is approved for one or both, and each
    channel admits only accounts approved for its procedure."""

    WEB = "QPR_0_WEB"
    SFTP = "QPR_0_SFTP"

    @classmethod
    def of(cls, channel: Channel) -> Procedure:
        """The procedure a channel serves."""
        return cls.SFTP if channel is Channel.SFTP else cls.WEB


ALL_PROCEDURES = frozenset(Procedure)


def parse_procedures(text: str) -> frozenset[Procedure]:
    """The procedures of a stored comma-separated list."""
    return frozenset(Procedure(name) for name in text.split(",") if name)


def format_procedures(procedures: Iterable[Procedure | str]) -> str:
    """The stored form: sorted, comma-separated."""
    return ",".join(sorted({Procedure(p).value for p in procedures}))


class RegistrationState(StrEnum):
    """Where a self-registration stands (DESIGN.md §6); German as the participant reads it.

    ``registriert`` (form sent) → ``bestaetigt`` (address confirmed by its link) →
    ``beantragt`` (password and second factor set, procedures applied for) →
    ``freigeschaltet`` or ``abgelehnt``. Locking an account later is the account's
    status, not a registration state.
    """

    REGISTRIERT = "registriert"
    BESTAETIGT = "bestaetigt"
    BEANTRAGT = "beantragt"
    FREIGESCHALTET = "freigeschaltet"
    ABGELEHNT = "abgelehnt"

    @property
    def label(self) -> str:
        return _STATE_LABELS[self]


_STATE_LABELS = {
    RegistrationState.REGISTRIERT: "registriert",
    RegistrationState.BESTAETIGT: "bestätigt",
    RegistrationState.BEANTRAGT: "beantragt",
    RegistrationState.FREIGESCHALTET: "freigeschaltet",
    RegistrationState.ABGELEHNT: "abgelehnt",
}


class TokenPurpose(StrEnum):
    """What a one-time link or code is for."""

    CONFIRM = "confirm"
    PASSWORD = "password"
    RESET = "reset"
    LETTER = "letter"
    # The address of a report's registration for a Qb-R year (``qb/registrations.py``).
    QB_CONFIRM = "qb-confirm"
    # The correction of a report registration's IK/Standort in the correction phase.
    QB_CORRECT = "qb-correct"
