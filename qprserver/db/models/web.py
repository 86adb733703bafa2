"""Tables of the web portal: its login sessions, kept on the server."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from qprserver.db.base import Base, BigIntPK, EnumString, intpk, sha256_hex, utc


class WebStage(StrEnum):
    """How far a web login has come."""

    CODE = "code"  # password right; the TOTP or recovery code is next
    ENROL = "enrol"  # password right, no second factor yet: enrolment is next
    FULL = "full"  # logged in with two factors


class WebSession(Base):
    """A browser's login: the cookie holds a random id, this row only its SHA-256.

    A new row (a new id) is made at the password and again at the second factor, so
    an id known before a step is worth nothing after it (no session fixation).
    """

    __tablename__ = "web_sessions"
    __table_args__ = (
        UniqueConstraint("token_hash"),
        CheckConstraint("stage IN ('code', 'enrol', 'full')", name="stage"),
    )

    id: Mapped[intpk]
    token_hash: Mapped[sha256_hex]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    stage: Mapped[WebStage] = mapped_column(EnumString(WebStage, 8))
    # The synchronizer token every form of this session carries.
    csrf: Mapped[str] = mapped_column(String(64))
    # A TOTP secret being enrolled (encrypted with the instance key) until confirmed.
    pending_totp: Mapped[str | None] = mapped_column(Text)
    failures: Mapped[int] = mapped_column(default=0)
    address: Mapped[str] = mapped_column(String(64))
    user_agent: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[utc]
    last_seen_at: Mapped[utc]
