"""Which document kind a file name claims, and who receives it.

A name either is addressed to one recipient (``/outbox/<IK>/<name>``) or is matched
against the configured kinds' patterns, whose ``ik`` group names the subject
facility; routing rules map (kind, Land of that IK) to recipient accounts, and the
facility itself receives the document when it has a recipient account. Recipients
are institutions' accounts (one per IK, no Standort): a report registration's account
(``qb/accounts.py``) shares its hospital's IK but never receives anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts.enums import AccountStatus, Role
from qprserver.audit import chain as audit
from qprserver.audit.chain import Actor
from qprserver.config import KindSettings
from qprserver.db import prepared
from qprserver.db.engine import Reads
from qprserver.db.models import Account, Route
from qprserver.db.prepared import Prepared
from qprserver.errors import AlreadyExists, InvalidInput, NotFound, Rejected
from qprserver.ik import IK, validate_land

DIRECT_KIND = "direkt"


@dataclass(frozen=True, slots=True)
class Classification:
    """What a file name says about its document."""

    kind: str
    subject_ik: IK | None
    content: str


def classify(name: str, kinds: Mapping[str, KindSettings]) -> Classification | None:
    """The first kind whose pattern matches name, with the validated subject IK.

    Raises Rejected when the pattern matches but the IK in the name is invalid.
    """
    for kind, settings in kinds.items():
        match = re.fullmatch(settings.pattern, name)
        if match is None:
            continue
        try:
            subject = IK(match.group("ik"))
        except InvalidInput as exc:
            raise Rejected(f"IK im Dateinamen ungültig: {exc}") from None
        return Classification(kind, subject, settings.content)
    return None


def content_type_from_name(name: str) -> str:
    """The content check a bare file name asks for, by its extension."""
    lower = name.lower()
    for ext in ("pdf", "xml", "zip"):
        if lower.endswith("." + ext):
            return ext
    return "any"


def _institution(ik: str) -> Select[Account]:
    """The account of the institution with this IK (not a report registration's)."""
    return select(Account).where(Account.ik == ik, Account.site.is_(None))


@dataclass(frozen=True, slots=True)
class Recipient:
    """An account an upload goes to."""

    id: int
    ik: str


# Run by the driver itself (``db/prepared.py``): every upload asks them.
_CANDIDATES = select(Account.id, Account.ik, Account.roles, Account.status)
_ROUTED = Prepared(
    _CANDIDATES.join(Route, Route.recipient_id == Account.id).where(
        Route.kind == bindparam("kind"), Route.land == bindparam("land")
    )
)
_BY_IK = Prepared(_CANDIDATES.where(Account.ik == bindparam("ik"), Account.site.is_(None)))


def _receiving(row: tuple[Any, ...]) -> bool:
    """An account that receives: active, with the recipient role (as ``Account``)."""
    _id, _ik, roles, status = row
    return status is AccountStatus.ACTIVE and Role.RECIPIENT in roles


async def recipients_for(
    reads: Reads,
    classification: Classification | None,
    *,
    direct_ik: str | None,
    depositor: Account,
) -> list[Recipient]:
    """Active recipient accounts for an upload, sorted by IK; Rejected when none.

    reads: a session, or ``Database.quick_read``'s reader."""
    if direct_ik is not None:
        found = await prepared.rows(reads, _BY_IK, {"ik": direct_ik})
        if not found or not _receiving(found[0]):
            raise Rejected(f"Empfänger {direct_ik} ist nicht bekannt oder nicht empfangsbereit")
        return [Recipient(found[0][0], found[0][1])]
    if classification is None or classification.subject_ik is None:
        raise Rejected(
            "Dateiname passt zu keiner Dokumentart und kein Empfänger ist adressiert "
            "(/outbox/<IK>/<Name>)"
        )
    subject = classification.subject_ik
    rows: list[tuple[Any, ...]] = []
    if subject.land is not None:
        rows += await prepared.rows(
            reads, _ROUTED, {"kind": classification.kind, "land": subject.land}
        )
    rows += await prepared.rows(reads, _BY_IK, {"ik": subject.value})
    by_ik = {row[1]: row for row in rows}
    result = [
        Recipient(row[0], ik)
        for ik, row in sorted(by_ik.items())
        if _receiving(row) and row[0] != depositor.id
    ]
    if not result:
        land = subject.land or "unbekannt"
        raise Rejected(
            f"kein Empfänger für {classification.kind} zu IK {subject} (Land {land}): "
            "Dokument wird nicht angenommen"
        )
    return result


async def add_route(
    session: AsyncSession, actor: Actor, now: datetime, *, kind: str, land: str, recipient: str
) -> Route:
    """Add a routing rule; the recipient must be an account with the recipient role."""
    land_code = validate_land(land)
    ik = IK.parse(recipient)
    account = await session.scalar(_institution(ik.value))
    if account is None:
        raise NotFound(f"kein Konto mit IK {ik}")
    if not account.has_role(Role.RECIPIENT):
        raise InvalidInput(f"Konto {ik} hat die Rolle recipient nicht")
    exists = await session.scalar(
        select(Route.id).where(
            Route.kind == kind, Route.land == land_code, Route.recipient_id == account.id
        )
    )
    if exists:
        raise AlreadyExists(f"Route {kind} {land_code} → {ik} existiert bereits")
    route = Route(kind=kind, land=land_code, recipient_id=account.id, created_at=now)
    session.add(route)
    await session.flush()
    await audit.record(
        session,
        actor,
        "route.add",
        at=now,
        target=ik.value,
        details={"kind": kind, "land": land_code},
    )
    return route


async def remove_route(
    session: AsyncSession, actor: Actor, now: datetime, *, kind: str, land: str, recipient: str
) -> None:
    """Remove one routing rule."""
    land_code = validate_land(land)
    ik = IK.parse(recipient)
    route = await session.scalar(
        select(Route)
        .join(Account, Route.recipient_id == Account.id)
        .where(
            Route.kind == kind,
            Route.land == land_code,
            Account.ik == ik.value,
            Account.site.is_(None),
        )
    )
    if route is None:
        raise NotFound(f"keine Route {kind} {land_code} → {ik}")
    await session.delete(route)
    await audit.record(
        session,
        actor,
        "route.remove",
        at=now,
        target=ik.value,
        details={"kind": kind, "land": land_code},
    )


async def list_routes(session: AsyncSession) -> list[tuple[str, str, str, str]]:
    """(kind, land, recipient IK, recipient name) for every rule."""
    rows = await session.execute(
        select(Route.kind, Route.land, Account.ik, Account.name)
        .join(Account, Route.recipient_id == Account.id)
        .order_by(Route.kind, Route.land, Account.ik)
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]
