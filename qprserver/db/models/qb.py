"""Tables of the Qb-R reporting year: one registration per report (IK + Standort)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from qprserver.accounts.enums import RegistrationState
from qprserver.db.base import Base, BigIntPK, EnumString, UTCDateTime, ik_str, intpk, utc


class QbRegistration(Base):
    """A hospital's registration of one report for one report year (Qb-R Anlage 2)."""

    __tablename__ = "qb_registrations"
    __table_args__ = (
        UniqueConstraint("year", "ik", "site"),
        CheckConstraint("state IN ('registriert', 'bestaetigt')", name="state"),
        CheckConstraint(
            "basis IN ('hochschulklinik', 'plankrankenhaus', 'versorgungsvertrag')", name="basis"
        ),
        Index("ix_qb_registrations_year_state", "year", "state"),
        Index("ix_qb_registrations_address_created_at", "address", "created_at"),
    )

    id: Mapped[intpk]
    year: Mapped[int]
    ik: Mapped[ik_str]
    # Standortnummer: 00 without sites, 01… one report per site, 99 the overall report;
    # from report year 2020 the six-digit number of the Standortverzeichnis.
    site: Mapped[str] = mapped_column(String(6))
    hospital: Mapped[str] = mapped_column(String(200))
    contact: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(254))
    phone: Mapped[str] = mapped_column(String(50))
    basis: Mapped[str] = mapped_column(String(24))
    # Further IKs used for quality assurance, comma-separated.
    further_iks: Mapped[str] = mapped_column(String(200), default="")
    state: Mapped[RegistrationState] = mapped_column(EnumString(RegistrationState, 16))
    # The source address of the form, for the per-address limit (and the operator).
    address: Mapped[str] = mapped_column(String(64))
    # Registered in the replacement window (late registration).
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    account_id: Mapped[int | None] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[utc]
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by the one reminder before the hospital deadline.
    reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[utc]


class QbPositiveListEntry(Base):
    """One row of the G-BA's positive list of a report year: a report that is owed."""

    __tablename__ = "qb_positive_list"
    __table_args__ = (UniqueConstraint("year", "ik", "site"),)

    id: Mapped[intpk]
    year: Mapped[int]
    ik: Mapped[ik_str]
    site: Mapped[str] = mapped_column(String(6))
    name: Mapped[str] = mapped_column(String(200))
    address: Mapped[str] = mapped_column(String(300))
    imported_at: Mapped[utc]
