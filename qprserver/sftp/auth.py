"""Authentication of an IK's account, with the guards operators expect of OpenSSH.

- First factor: an SSH key or the password; a second factor (TOTP by
  keyboard-interactive) when the account has one or its role requires one; see
  ``compat.py`` for how the partial success reaches the client.
- Unknown, disabled and expired accounts, and logins from outside an account's
  allowed networks, fail exactly like a wrong key (no account is revealed).
- Bans (``bans.py``): every failed connection and every wrong password or code
  scores against the address; a banned address is dropped at connect and refused at
  the start of authentication. Only wrong passwords and codes score against the
  account, and a banned account only stops password logins: keys (and a code after
  a key) still log in, so nobody can lock an account out by guessing at its IK.
- At most ``max_auth_attempts`` failed attempts per connection, at most
  ``max_unauthenticated_per_address`` connections per address still logging in, and
  at most ``max_sessions`` logged-in connections per account in this process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncssh
from sqlalchemy import bindparam, select
from sqlalchemy.orm import selectinload

from qprserver.db.models import Account
from qprserver.security import bans, totp
from qprserver.security.passwords import verify_password
from qprserver.sftp import compat
from qprserver.sftp.outbox import Outbox
from qprserver.sftp.state import ConnectionState, ServerContext

if TYPE_CHECKING:
    from qprserver.sftp.server import SFTPListener

log = logging.getLogger(__name__)

SECOND_FACTOR_PROMPT = (
    "Zweiter Faktor",
    "Bitte den Code aus der Authenticator-App (oder einen Wiederherstellungscode) eingeben.",
    "",
    [("Code: ", False)],
)


# Built once: every login runs it.
_ACCOUNT_AT_LOGIN = (
    select(Account)
    .where(Account.ik == bindparam("ik"))
    .options(selectinload(Account.keys), selectinload(Account.password))
)


class AccountSSHServer(asyncssh.SSHServer):
    """One connection's authentication."""

    def __init__(self, ctx: ServerContext, listener: SFTPListener) -> None:
        self.ctx = ctx
        self.listener = listener
        self.conn: Any = None
        self.state = ConnectionState(peer="")

    @property
    def security(self) -> Any:
        return self.ctx.settings.security

    # -- connection -------------------------------------------------------------

    def connection_made(self, conn: Any) -> None:
        self.conn = conn
        compat.drop_empty_ignores(conn)
        compat.quick_acks_during_login(conn)
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.state.address = str(peer[0])
        self.state.peer = f"{peer[0]}:{peer[1]}"
        allowlisted = bans.allowlisted(self.state.address, self.security)
        waiting = sum(
            1
            for s in self.listener.connections.values()
            if s.address == self.state.address and not s.authenticated
        )
        if not allowlisted and (
            self.state.address in self.listener.banned_addresses
            or waiting >= self.security.max_unauthenticated_per_address
        ):
            # Before the version banner: abort, as a disconnect here confuses OpenSSH.
            log.info("dropping connection from %s (banned or too many)", self.state.peer)
            conn.abort()
            return
        self.listener.connections[conn] = self.state

    def connection_lost(self, exc: Exception | None) -> None:
        self.state.lost = True
        # Uploads cut off midway stay their depositor's partial files (to resume);
        # temp uploads closed but never renamed are thrown away.
        for handle in list(self.state.uploads):
            keeping = handle.owner.cut_off(handle) if isinstance(handle.owner, Outbox) else None
            if keeping is not None:
                self.listener.spawn(keeping)
            elif not handle.kept:
                handle.writer.abort()
        for handle in list(self.state.pending.values()):
            handle.writer.abort()
        self.state.uploads.clear()
        self.state.pending.clear()
        if self.listener.connections.pop(self.conn, None) is None:
            return
        # A failed connection counts once against its address, unless its wrong
        # passwords or codes counted already.
        if (
            not self.state.authenticated
            and not self.state.scored
            and (self.state.auth_failures or self.state.first_factor is not None)
        ):
            self.listener.spawn(self._score_failure(guessed_secret=False))

    async def _score_failure(self, *, guessed_secret: bool) -> None:
        """Count a failure against the address, and a wrong password or code against
        the account too (a wrong key or an aborted login is no guess at its secrets)."""
        if bans.allowlisted(self.state.address, self.security):
            return
        keys = [bans.address_key(self.state.address)]
        account_key = None
        if guessed_secret and self.state.account is not None:
            account_key = bans.account_key(self.state.account.ik)
            keys.append(account_key)
        try:
            newly = await bans.record_failure(
                self.ctx.db, keys, self.ctx.clock.now(), self.security
            )
        except Exception:
            log.exception("recording a failed login failed")
            return
        for key in newly:
            log.warning("banned %s after repeated failed logins", key)
            if key.startswith("addr:"):
                self.listener.banned_addresses.add(key.removeprefix("addr:"))
            elif key == account_key:
                self.state.secrets_locked = True

    # -- account -----------------------------------------------------------------

    async def begin_auth(self, username: str) -> bool:
        self.state.touch()
        now = self.ctx.clock.now()
        address = bans.address_key(self.state.address)
        keys = [address]
        # asyncssh calls this again when the client switches user names mid-login: a
        # first factor verified for one account must not count for another.
        self.state.account = None
        self.state.first_factor = None
        self.state.secrets_locked = False
        if len(username) == 9 and username.isascii() and username.isdigit():
            keys.append(bans.account_key(username))
            self.state.account = await self.ctx.db.quick_read(
                lambda reads: reads.scalar(_ACCOUNT_AT_LOGIN, {"ik": username})
            )
        if bans.allowlisted(self.state.address, self.security):
            return True
        banned = await bans.banned_keys(self.ctx.db, keys, now)
        if address in banned:
            raise asyncssh.PermissionDenied("Permission denied")
        # A banned account still logs in with a key; only its password is off limits.
        self.state.secrets_locked = len(banned) > 0
        return True

    def _usable(self) -> Account | None:
        """The account when it may log in from here now, else None (never says why)."""
        account = self.state.account
        if account is None or not account.active:
            return None
        if account.expires_at is not None and account.expires_at <= self.ctx.clock.now():
            return None
        networks = [n for n in account.allowed_networks.split(",") if n]
        if networks:
            try:
                address = ipaddress.ip_address(self.state.address)
            except ValueError:
                return None
            if not any(address in ipaddress.ip_network(n, strict=False) for n in networks):
                return None
        if account.max_sessions is not None:
            logged_in = sum(
                1
                for s in self.listener.connections.values()
                if s.authenticated and s.account is not None and s.account.id == account.id
            )
            if logged_in >= account.max_sessions:
                return None
        if totp.requires_second_factor(account, self.security) and (
            account.totp_secret is None or self.ctx.totp_key is None
        ):
            log.warning("account %s needs a second factor but has none enrolled", account.ik)
            return None
        return account

    def _failed(self) -> bool:
        self.state.auth_failures += 1
        if self.state.auth_failures >= self.security.max_auth_attempts:
            raise asyncssh.PermissionDenied("Too many authentication failures")
        return False

    # -- first factor ------------------------------------------------------------

    def public_key_auth_supported(self) -> bool:
        return self.state.first_factor is None

    def validate_public_key(self, username: str, key: Any) -> bool:
        account = self._usable()
        if account is None:
            return self._failed()
        fingerprint = key.get_fingerprint("sha256")
        if any(k.fingerprint == fingerprint for k in account.keys):
            return True
        return self._failed()

    def password_auth_supported(self) -> bool:
        return self.state.first_factor is None

    async def validate_password(self, username: str, password: str) -> bool:
        account = self._usable()
        stored = account.password.password_hash if account and account.password else None
        # Same work whether or not the account exists or has a password.
        async with self.listener.password_checks:
            ok = await asyncio.to_thread(verify_password, stored, password)
        # The check above ran all the same: a banned account answers as slowly as any.
        if ok and account is not None and not self.state.secrets_locked:
            return True
        self.state.scored += 1
        await self._score_failure(guessed_secret=True)  # counted before the client hears
        return self._failed()

    def first_factor_verified(self, method: str) -> bool:
        """Called by compat.py's two-step auth once a key or password is verified."""
        account = self.state.account
        if (
            account is not None
            and totp.requires_second_factor(account, self.security)
            and self.state.first_factor is None
        ):
            self.state.first_factor = method
            return False
        return True

    # -- second factor -----------------------------------------------------------

    def kbdint_auth_supported(self) -> bool:
        return self.state.first_factor is not None

    def get_kbdint_challenge(self, username: str, lang: str, submethods: str) -> Any:
        return SECOND_FACTOR_PROMPT

    async def validate_kbdint_response(self, username: str, responses: Sequence[str]) -> bool:
        account = self.state.account
        key = self.ctx.totp_key
        if self.state.first_factor is None or account is None or key is None:
            return self._failed()
        if len(responses) == 1:
            async with self.ctx.db.session() as session:
                if await totp.verify(session, account.id, responses[0], key, self.ctx.clock.now()):
                    return True
        self.state.scored += 1
        await self._score_failure(guessed_secret=True)
        return self._failed()

    def auth_completed(self) -> None:
        self.state.authenticated = True
        self.state.touch()
