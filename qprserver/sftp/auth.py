"""Authentication of an account by its login name (the IK, or ``<IK>-<Standort>`` for
a report registration's account), with the guards operators expect of OpenSSH.

- Whether an account may log in at all is the login policy's answer
  (``accounts/access.py``, asked once per user name in ``begin_auth``): active, not
  expired, from an allowed network, under its session limit, with a second factor
  when it needs one. Every refusal fails exactly like a wrong key (no account is
  revealed); the reason goes to the log only.
- First factor: an SSH key or the password; then a TOTP code by keyboard-interactive
  when the policy says so; see ``compat.py`` for how the partial success reaches
  the client.
- A completed login is a row in ``login_sessions`` (``accounts/sessions.py``) until
  the connection closes, so ``max_sessions`` holds across processes and nodes.
- Bans (``bans.py``): every failed connection and every wrong password or code
  scores against the address; a banned address is dropped at connect and refused at
  the start of authentication. Only wrong passwords and codes score against the
  account, and a banned account only stops password logins: keys (and a code after
  a key) still log in, so nobody can lock an account out by guessing at its IK.
- At most ``max_auth_attempts`` failed attempts per connection, and at most
  ``max_unauthenticated_per_address`` connections per address still logging in *per
  process*. That count stays in memory on purpose (see ``connection_made``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import asyncssh
from sqlalchemy import bindparam, select
from sqlalchemy.orm import selectinload

from qprserver.accounts import access
from qprserver.accounts.enums import Channel
from qprserver.accounts.fields import is_login
from qprserver.db.engine import Reads
from qprserver.db.models import Account
from qprserver.observability import events
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
    .where(Account.login == bindparam("login"))
    .options(selectinload(Account.keys), selectinload(Account.password))
)


def _warn_unenrolled(decision: access.Decision) -> None:
    """A refusal the operator can fix: the account needs a second factor it lacks.
    (Every refusal is told with the login's end, ``access.report``.)"""
    account = decision.account
    if account is not None and decision.refusal is access.Refusal.NO_SECOND_FACTOR:
        log.warning("account %s needs a second factor but has none enrolled", account.login)


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
        """Drop a banned address, or one with too many logins under way, before the
        SSH banner.

        The count of unauthenticated connections per address is this process's own,
        each process allowing the whole ``max_unauthenticated_per_address``. The two
        ways to make it one count for all workers were measured and both rejected:

        - In the database: a write when a connection comes and a delete when it logs
          in or drops. On SQLite that is ~0.15 ms of CPU on the event loop per
          connection (measured with ``Database.write_now``: open + close of a row);
          on PostgreSQL it is a round trip, which this synchronous callback cannot
          wait for, so the refusal would come after the banner (which confuses
          OpenSSH) — and a connection flood, the thing this limit is for, would turn
          into a write load on the database every node shares.
        - The limit divided by ``server.workers``: connections go to the process with
          the fewest open connections of any address (``spread.py``), so one
          address's still-authenticating connections need not split evenly while
          other addresses' sessions load one process. (When the kernel chose the
          worker by a hash of the source port, 8 logins at once from one address —
          which ``test_concurrent_uploads`` makes, well within the default 10 — put 6
          or more on one worker in 29 % of such batches, 5 each being allowed.)

        The limit bounds what one process spends on logins that have not succeeded
        (key exchanges, memory), so per process is the unit it protects; an address
        that keeps failing is banned in the database for every process and node.
        """
        self.conn = conn
        compat.drop_empty_ignores(conn)
        compat.coalesce_writes(conn)
        compat.lazy_keepalive(conn)
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
        refused = None
        if not allowlisted and self.state.address in self.listener.banned_addresses:
            refused = "banned"
        elif not allowlisted and waiting >= self.security.max_unauthenticated_per_address:
            refused = "limit"
        events.connection(Channel.SFTP, self.state.address, refused)
        if refused is not None:
            # Before the version banner: abort, as a disconnect here confuses OpenSSH.
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
        self._close_login_session()
        if self.listener.connections.pop(self.conn, None) is None:
            return
        # A login is told once it tried a factor, or was refused as banned before one.
        tried = self.state.method != "none" or self.state.failure is access.Failure.BANNED
        if not self.state.authenticated and tried:
            access.report(
                Channel.SFTP,
                self.state.method,
                account=self.state.login,
                address=self.state.address,
                reason=self.state.failure or access.Failure.ABORTED,
                session=self.state.session,
            )
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
            account_key = bans.account_key(self.state.account.login)
            keys.append(account_key)
        try:
            newly = await bans.record_failure(
                self.ctx.db, keys, self.ctx.clock.now(), self.security
            )
        except Exception:
            log.exception("recording a failed login failed")
            return
        for key in newly:
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
        self.state.access = None
        self.state.login = None
        self.state.failure = access.Refusal.UNKNOWN
        if is_login(username):
            self.state.login = username
            keys.append(bans.account_key(username))

            async def decide(reads: Reads) -> access.Decision:
                account = await reads.scalar(_ACCOUNT_AT_LOGIN, {"login": username})
                return await access.may_log_in(
                    reads,
                    account,
                    channel=Channel.SFTP,
                    address=self.state.address,
                    now=now,
                    security=self.security,
                    second_factor_ready=self.ctx.totp_key is not None,
                    open_sessions=self.ctx.node,
                )

            decision = await self.ctx.db.quick_read(decide)
            self.state.access = decision
            self.state.account = decision.account
            self.state.failure = decision.refusal
            _warn_unenrolled(decision)
        if bans.allowlisted(self.state.address, self.security):
            return True
        banned = await bans.banned_keys(self.ctx.db, keys, now)
        if address in banned:
            self.state.failure = access.Failure.BANNED
            raise asyncssh.PermissionDenied("Permission denied")
        # A banned account still logs in with a key; only its password is off limits.
        self.state.secrets_locked = len(banned) > 0
        return True

    def _usable(self) -> Account | None:
        """The account when the login policy lets it in from here, else None (the
        client never learns why: a refusal fails like a wrong key)."""
        decision = self.state.access
        return decision.account if decision is not None and decision.allowed else None

    def _failed(self, reason: access.Failure) -> bool:
        # A refusal of the policy (or a user name that is no login name) stays the reason:
        # the login failed whatever was tried.
        if self.state.access is not None and self.state.access.allowed:
            self.state.failure = reason
        self.state.auth_failures += 1
        if self.state.auth_failures >= self.security.max_auth_attempts:
            raise asyncssh.PermissionDenied("Too many authentication failures")
        return False

    # -- first factor ------------------------------------------------------------

    def public_key_auth_supported(self) -> bool:
        return self.state.first_factor is None

    def validate_public_key(self, username: str, key: Any) -> bool:
        self.state.method = "publickey"
        account = self._usable()
        if account is None:
            return self._failed(access.Failure.WRONG_KEY)
        fingerprint = key.get_fingerprint("sha256")
        if any(k.fingerprint == fingerprint for k in account.keys):
            return True
        return self._failed(access.Failure.WRONG_KEY)

    def password_auth_supported(self) -> bool:
        return self.state.first_factor is None

    async def validate_password(self, username: str, password: str) -> bool:
        self.state.method = "password"
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
        locked = ok and self.state.secrets_locked
        return self._failed(access.Failure.BANNED if locked else access.Failure.WRONG_PASSWORD)

    def first_factor_verified(self, method: str) -> bool:
        """Called by compat.py's two-step auth once a key or password is verified."""
        decision = self.state.access
        if decision is not None and decision.second_factor and self.state.first_factor is None:
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
            return self._failed(access.Failure.WRONG_CODE)
        if len(responses) == 1:
            async with self.ctx.db.session() as session:
                if await totp.verify(session, account.id, responses[0], key, self.ctx.clock.now()):
                    return True
        self.state.scored += 1
        await self._score_failure(guessed_secret=True)
        return self._failed(access.Failure.WRONG_CODE)

    def auth_completed(self) -> None:
        self.state.authenticated = True
        self.state.touch()
        assert self.state.account is not None
        first = self.state.first_factor
        access.report(
            Channel.SFTP,
            f"{first}+totp" if first is not None else self.state.method,
            account=self.state.account.login,
            address=self.state.address,
            session=self.state.session,
        )
        self.ctx.node.reserve(self.state.account.id)
        self.state.reserved = True
        self.listener.spawn(self._open_login_session())

    def session_requested(self) -> Any:
        """Each session channel: SFTP served as its requests arrive, or scp."""
        return compat.sftp_session(
            self.listener.sftp_factory, reads_on_loop=self.ctx.db.reads_on_loop
        )

    async def _open_login_session(self) -> None:
        """Record the login in ``login_sessions``, where every process and node counts
        it against the account's ``max_sessions``.

        The policy checked the count at ``begin_auth`` already; this write checks it
        again under the account's lock, so of two logins racing for the last free
        session on two processes one is closed here.
        """
        account = self.state.account
        assert account is not None
        try:
            opened = await self.ctx.node.open_session(
                account.id, account.max_sessions, Channel.SFTP, self.state.address
            )
        except Exception:
            # The login stands (uncounted) rather than failing on a database hiccup.
            log.exception("recording the login of %s failed", account.login)
            return
        if opened is None:
            self._release()
            log.info(
                "closing session of %s: its session limit was reached meanwhile", account.login
            )
            self.conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many sessions")
            return
        if self.state.lost:
            await self.ctx.node.close_session(opened)
            return
        self.state.login_session = opened

    def _release(self) -> None:
        if self.state.reserved and self.state.account is not None:
            self.state.reserved = False
            self.ctx.node.release(self.state.account.id)

    def _close_login_session(self) -> None:
        self._release()
        opened, self.state.login_session = self.state.login_session, None
        if opened is not None and not self.ctx.node.close_session_now(opened):
            self.listener.spawn(self.ctx.node.close_session(opened))
