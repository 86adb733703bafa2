"""Tables of accounts, their credentials, second factors, login scores and sessions."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from qprserver.accounts.enums import (
    ALL_PROCEDURES,
    AccountStatus,
    Channel,
    Procedure,
    Role,
    format_procedures,
    format_roles,
    parse_procedures,
    parse_roles,
)
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

# Plain values, for click's choices and messages.
ROLES = tuple(role.value for role in Role)


STATUSES = tuple(status.value for status in AccountStatus)
PROCEDURES = tuple(procedure.value for procedure in Procedure)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RoleList(TypeDecorator[frozenset[Role]]):
    """An account's roles: a set of ``Role`` here, sorted and comma-joined in the column
    (small and fixed, so no join table)."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(
        self, value: Iterable[Role | str] | str | None, dialect: Dialect
    ) -> str | None:
        if value is None:
            return None
        return format_roles(parse_roles(value) if isinstance(value, str) else value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> frozenset[Role] | None:
        return None if value is None else parse_roles(value)


class ProcedureList(TypeDecorator[frozenset[Procedure]]):
    """The procedures an account is approved for: a set here, comma-joined in the column."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(
        self, value: Iterable[Procedure | str] | str | None, dialect: Dialect
    ) -> str | None:
        if value is None:
            return None
        return format_procedures(parse_procedures(value) if isinstance(value, str) else value)

    def process_result_value(
        self, value: str | None, dialect: Dialect
    ) -> frozenset[Procedure] | None:
        return None if value is None else parse_procedures(value)


class NetworkList(TypeDecorator[tuple[IPNetwork, ...]]):
    """Source networks: parsed networks here, comma-separated CIDRs in the column
    (empty: any source)."""

    impl = Text
    cache_ok = True

    def process_bind_param(
        self, value: Iterable[IPNetwork | str] | str | None, dialect: Dialect
    ) -> str | None:
        if value is None:
            return None
        items = value.split(",") if isinstance(value, str) else value
        return ",".join(str(ipaddress.ip_network(n, strict=False)) for n in items if n)

    def process_result_value(
        self, value: str | None, dialect: Dialect
    ) -> tuple[IPNetwork, ...] | None:
        if value is None:
            return None
        return tuple(ipaddress.ip_network(n, strict=False) for n in value.split(",") if n)


def _login_of_ik(context: DefaultExecutionContext) -> str:
    """An account made without a login name logs in by its IK."""
    parameters: dict[str, object] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return str(parameters["ik"])


# One account per IK for the institution itself (no Standort); a report registration's
# accounts (``qb/accounts.py``) share the IK and differ by their Standort.
_INSTITUTION = text("site IS NULL")


class Account(Base):
    """An account: an institution's, keyed by its IK, or a report registration's
    (IK + Standort, Qb-R Anlage 2). Both log in by ``login``: the IK, or
    ``<IK>-<Standort>`` for a report registration's account."""

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("login"),
        Index(
            "uq_accounts_ik_institution",
            "ik",
            unique=True,
            sqlite_where=_INSTITUTION,
            postgresql_where=_INSTITUTION,
        ),
        CheckConstraint("status IN ('active', 'disabled', 'pending')", name="status"),
    )

    id: Mapped[intpk]
    ik: Mapped[ik_str]
    # The user name of both edges (SFTP, portal): the IK, or <IK>-<Standort>.
    login: Mapped[str] = mapped_column(String(16), default=_login_of_ik)
    # The Standortnummer of a report registration's account; None for an institution's.
    site: Mapped[str | None] = mapped_column(String(6))
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(254))
    roles: Mapped[frozenset[Role]] = mapped_column(RoleList())
    land: Mapped[str | None] = mapped_column(String(2))
    status: Mapped[AccountStatus] = mapped_column(
        EnumString(AccountStatus, 16), default=AccountStatus.ACTIVE
    )
    # QPR_0_WEB and/or QPR_0_SFTP; accounts from before the procedures existed have both.
    procedures: Mapped[frozenset[Procedure]] = mapped_column(
        ProcedureList(),
        default=ALL_PROCEDURES,
        server_default=format_procedures(ALL_PROCEDURES),
    )
    notify: Mapped[bool] = mapped_column(Boolean, default=True)
    bundles: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Second factor: the TOTP secret encrypted with the instance key (never in clear),
    # and the last time step used, so each code works once.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Restrictions: source networks (empty = any), concurrent sessions (None =
    # unlimited), and an expiry after which logins are refused.
    allowed_networks: Mapped[tuple[IPNetwork, ...]] = mapped_column(
        NetworkList(), default=(), server_default=""
    )
    max_sessions: Mapped[int | None]
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[utc]
    updated_at: Mapped[utc]

    keys: Mapped[list[SSHKey]] = relationship(
        back_populates="account", cascade="all, delete-orphan", order_by="SSHKey.id"
    )
    password: Mapped[PasswordCredential | None] = relationship(
        back_populates="account", cascade="all, delete-orphan"
    )

    @property
    def role_set(self) -> frozenset[Role]:
        return self.roles

    def has_role(self, role: Role) -> bool:
        return role in self.roles

    @property
    def active(self) -> bool:
        return self.status is AccountStatus.ACTIVE


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


class Node(Base):
    """A running ``serve`` process; its heartbeat keeps its login sessions counting.

    A node whose heartbeat is older than the lease (``accounts/sessions.py``) is taken
    for dead: its sessions stop counting and the next live node removes it.
    """

    __tablename__ = "nodes"

    id: Mapped[intpk]
    # ``server.node_id``: the name of its spool folder, shared by a node's workers.
    name: Mapped[str] = mapped_column(String(43), default="", server_default="")
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    started_at: Mapped[utc]
    heartbeat_at: Mapped[utc]


class LoginSession(Base):
    """A logged-in connection of an account, from login to close, on one node."""

    __tablename__ = "login_sessions"
    __table_args__ = (CheckConstraint("channel IN ('sftp', 'web')", name="channel"),)

    id: Mapped[intpk]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    node_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("nodes.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[Channel] = mapped_column(EnumString(Channel, 8))
    address: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[utc]


class RecoveryCode(Base):
    """A single-use code that stands in for the TOTP code (hashed)."""

    __tablename__ = "recovery_codes"

    id: Mapped[intpk]
    account_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[sha256_hex]
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class AuthScore(Base):
    """Failed logins of one source address or account, and its ban, shared by all nodes."""

    __tablename__ = "auth_scores"
    __table_args__ = (UniqueConstraint("key"),)

    id: Mapped[intpk]
    # "addr:<ip>" or "account:<ik>"
    key: Mapped[str] = mapped_column(String(80))
    failures: Mapped[int] = mapped_column(default=0)
    window_start: Mapped[utc]
    offences: Mapped[int] = mapped_column(default=0)
    banned_until: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    updated_at: Mapped[utc]
