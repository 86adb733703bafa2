"""Tables of the Qb-R reporting year: one registration per report (IK + Standort), the
G-BA's positive list, and the C-1 parts accepted from the QS-Stellen."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
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
    # The mismatch a QS-Stelle reported for IK/Standort (correction phase), and when.
    mismatch: Mapped[str | None] = mapped_column(Text)
    mismatch_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When the hospital last corrected (or kept) IK/Standort by its correction link.
    corrected_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set by the one confirmation mail with the registered data after the correction phase.
    confirmation_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
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


class QbC1Delivery(Base):
    """An accepted part C-1 (one document): which report and part it is for, and whether
    it is a Null-Meldung (the QS-Stelle has no QS data for the hospital)."""

    __tablename__ = "qb_c1_deliveries"
    __table_args__ = (
        CheckConstraint("part IN ('Land', 'bund')", name="part"),
        Index("ix_qb_c1_deliveries_year", "year"),
    )

    id: Mapped[intpk]
    document_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("documents.id", ondelete="CASCADE"), unique=True
    )
    year: Mapped[int]
    ik: Mapped[ik_str]
    site: Mapped[str] = mapped_column(String(6))
    part: Mapped[str] = mapped_column(String(4))
    null_report: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[utc]
