"""Tables of accounts, credentials and the audit log."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from qprserver.db.base import Base, BigIntPK, ik_str, intpk, sha256_hex, utc

ROLES = ("depositor", "recipient", "admin")
STATUSES = ("active", "disabled")


class Account(Base):
    """An institution's account, keyed by its IK."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("ik"),
        CheckConstraint("status IN ('active', 'disabled')", name="status"),
    )

    id: Mapped[intpk]
    ik: Mapped[ik_str]
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    # Sorted, comma-separated subset of ROLES; small and fixed, so no join table.
    roles: Mapped[str] = mapped_column(String(64))
    land: Mapped[str | None] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="active")
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[utc]
    updated_at: Mapped[utc]

    keys: Mapped[list[SSHKey]] = relationship(
        back_populates="account", cascade="all, delete-orphan", order_by="SSHKey.id"
    )
    password: Mapped[PasswordCredential | None] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r for r in self.roles.split(",") if r)

    def has_role(self, role: str) -> bool:
        return role in self.role_set

    @property
    def active(self) -> bool:
        return self.status == "active"


class SSHKey(Base):
    """An SSH public key that may log in as its account."""

    __tablename__ = "ssh_keys"
    __table_args__ = (UniqueConstraint("account_id", "fingerprint"),)

    id: Mapped[intpk]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    algorithm: Mapped[str] = mapped_column(String(64))
    bits: Mapped[int | None]
    fingerprint: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[str] = mapped_column(Text)
    comment: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[utc]

    account: Mapped[Account] = relationship(back_populates="keys")


class PasswordCredential(Base):
    """An optional argon2id password hash for an account."""

    __tablename__ = "password_credentials"

    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    password_hash: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[utc]

    account: Mapped[Account] = relationship(back_populates="password")


class AuditEvent(Base):
    """One append-only audit record; ``hash`` chains it to the row before.

    ``prev_hash`` is unique, so two writers can never fork the chain: the second
    insert fails and is retried on top of the first.
    """

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("prev_hash"),
        Index("ix_audit_events_actor_at", "actor", "at"),
    )

    id: Mapped[intpk]
    at: Mapped[utc]
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    source: Mapped[str] = mapped_column(String(255), default="")
    details: Mapped[str] = mapped_column(Text, default="{}")
    prev_hash: Mapped[sha256_hex]
    hash: Mapped[sha256_hex]


__all__ = ["ROLES", "STATUSES", "Account", "AuditEvent", "Base", "PasswordCredential", "SSHKey"]
