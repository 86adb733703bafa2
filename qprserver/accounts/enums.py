"""The states and roles of an account, as the database stores them.

``StrEnum`` members compare equal to their values, so the columns keep the same
strings (``active``, ``disabled``; ``depositor``, ``recipient``, ``admin``) and a
later state (``pending`` for the registration lifecycle) is one member more here
and one value more in the column's check constraint.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class AccountStatus(StrEnum):
    """Whether an account may log in at all (expiry and restrictions come on top)."""

    ACTIVE = "active"
    DISABLED = "disabled"


class Role(StrEnum):
    """What an account does in the exchange; an account has one or more."""

    DEPOSITOR = "depositor"
    RECIPIENT = "recipient"
    ADMIN = "admin"


def parse_roles(text: str) -> frozenset[Role]:
    """The roles of a stored comma-separated list (unknown names are an error)."""
    return frozenset(Role(name) for name in text.split(",") if name)


def format_roles(roles: Iterable[Role | str]) -> str:
    """The stored form: sorted, comma-separated, no spaces."""
    return ",".join(sorted({Role(r).value for r in roles}))


class Channel(StrEnum):
    """How an account logs in: the SSH edge, or (a later issue) the web portal."""

    SFTP = "sftp"
    WEB = "web"
