"""Checks of what people type about an account: roles, procedures, address, networks.

Each returns the normalised value or raises ``InvalidInput`` with a German message
naming what is wrong; the CLI, the registration form and the portal use the same ones.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from qprserver.accounts.enums import ALL_PROCEDURES, Procedure, Role
from qprserver.db.models import IPNetwork
from qprserver.errors import InvalidInput


def normalise_roles(roles: Iterable[str]) -> frozenset[Role]:
    """Validate role names (any case, spaces around ignored) into roles."""
    allowed = ", ".join(Role)
    wanted = {r.strip().lower() for r in roles if r.strip()}
    if not wanted:
        raise InvalidInput(f"mindestens eine Rolle nötig: {allowed}")
    unknown = wanted - set(Role)
    if unknown:
        raise InvalidInput(f"unbekannte Rolle {', '.join(sorted(unknown))}; erlaubt: {allowed}")
    return frozenset(Role(r) for r in wanted)


def normalise_procedures(procedures: Iterable[str] | None) -> frozenset[Procedure]:
    """Validate procedure names (any case); None means both."""
    if procedures is None:
        return ALL_PROCEDURES
    allowed = ", ".join(Procedure)
    wanted = {p.strip().upper() for p in procedures if p.strip()}
    if not wanted:
        raise InvalidInput(f"mindestens ein Verfahren nötig: {allowed}")
    unknown = wanted - set(Procedure)
    if unknown:
        raise InvalidInput(
            f"unbekanntes Verfahren {', '.join(sorted(unknown))}; erlaubt: {allowed}"
        )
    return frozenset(Procedure(p) for p in wanted)


def normalise_email(email: str | None) -> str | None:
    """Return a normalised address, None for none, or raise InvalidInput."""
    if email is None or not email.strip():
        return None
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(email.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise InvalidInput(f"ungültige E-Mail-Adresse {email!r}: {exc}") from None


_PHONE = re.compile(r"\+?[0-9][0-9 ()/\-]{3,48}")


def normalise_text(value: str, field: str, limit: int = 200) -> str:
    """A required line of text with its blanks collapsed, at most ``limit`` characters."""
    clean = " ".join(value.split())
    if not clean:
        raise InvalidInput(f"{field}: bitte angeben")
    if len(clean) > limit:
        raise InvalidInput(f"{field}: höchstens {limit} Zeichen")
    return clean


def normalise_phone(phone: str) -> str:
    """A telephone number of digits (with +, blanks, brackets, / and -)."""
    clean = phone.strip()
    if not _PHONE.fullmatch(clean):
        raise InvalidInput(
            "Telefon: bitte eine Telefonnummer aus Ziffern angeben, z. B. 0211 1234-56"
        )
    return clean


def normalise_networks(networks: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Validate CIDR networks; refuse anything that is not one."""
    result = []
    for net in networks:
        if not net.strip():
            continue
        try:
            result.append(ipaddress.ip_network(net.strip(), strict=False))
        except ValueError:
            raise InvalidInput(f"{net!r} ist kein IP-Netz (CIDR)") from None
    return tuple(result)


# A login name (both edges): the IK, or <IK>-<Standort> for a report registration's
# account (qb/accounts.py), the Standort of two digits or the six of the
# Standortverzeichnis.
_LOGIN = re.compile(r"[0-9]{9}(?:-(?:[0-9]{2}|[0-9]{6}))?")


def is_login(name: str) -> bool:
    """True when ``name`` has the form of a login name (known or not)."""
    return _LOGIN.fullmatch(name) is not None
