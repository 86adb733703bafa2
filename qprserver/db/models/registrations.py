"""Tables of self-registrations and of the one-time links and codes they hand out."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from qprserver.accounts.enums import Procedure, RegistrationState, Role, TokenPurpose
from qprserver.db.base import (
    Base,
    BigIntPK,
    EnumString,
    UTCDateTime,
    ik_str,
    intpk,
    sha256_hex,
    utc,
)
from qprserver.db.models.accounts import ProcedureList, RoleList

REGISTRATION_STATES = tuple(state.value for state in RegistrationState)


class Registration(Base):
    """One participant's way in: the form, its state, and the operator's decision."""

    __tablename__ = "registrations"
    __table_args__ = (
        CheckConstraint(
            "state IN ('registriert', 'bestaetigt', 'beantragt', 'freigeschaltet', 'abgelehnt')",
            name="state",
        ),
        Index("ix_registrations_ik_state", "ik", "state"),
        Index("ix_registrations_address_created_at", "address", "created_at"),
    )

    id: Mapped[intpk]
    ik: Mapped[ik_str]
    institution: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(50))
    # The postal address the activation letter goes to.
    street: Mapped[str] = mapped_column(String(200))
    postcode: Mapped[str] = mapped_column(String(10))
    city: Mapped[str] = mapped_column(String(100))
    roles: Mapped[frozenset[Role]] = mapped_column(RoleList())
    procedures: Mapped[frozenset[Procedure]] = mapped_column(ProcedureList())
    ssh_key: Mapped[str | None] = mapped_column(Text)
    # The source address of the form, for the per-address limit (and the operator).
    address: Mapped[str] = mapped_column(String(64))
    state: Mapped[RegistrationState] = mapped_column(EnumString(RegistrationState, 16))
    reason: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[utc]
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Postal activation: set when the letter's code is entered.
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[utc]


class OneTimeToken(Base):
    """A single-use secret sent by mail or letter; only its SHA-256 is stored."""

    __tablename__ = "one_time_tokens"
    __table_args__ = (
        UniqueConstraint("token_hash"),
        CheckConstraint(
            "purpose IN ('confirm', 'password', 'reset', 'letter', 'qb-confirm', 'qb-correct')",
            name="purpose",
        ),
    )

    id: Mapped[intpk]
    purpose: Mapped[TokenPurpose] = mapped_column(EnumString(TokenPurpose, 16))
    token_hash: Mapped[sha256_hex]
    registration_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("registrations.id", ondelete="CASCADE"), index=True
    )
    account_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    qb_registration_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("qb_registrations.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[utc]
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[utc]
