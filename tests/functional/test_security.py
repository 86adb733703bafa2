"""Two factors, bans, per-account restrictions and session limits, with real clients;
the TOTP key at start."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncssh
import paramiko
import pyotp
import pytest
from sqlalchemy import func, select

from qprserver.accounts import service as accounts
from qprserver.clock import SystemClock
from qprserver.config import load_config
from qprserver.db.engine import Database
from qprserver.db.models import Account, Node
from qprserver.errors import ConfigError
from qprserver.security import bans, totp
from qprserver.service import build_context
from qprserver.sftp.server import SFTPListener
from tests.functional.conftest import Instance
from tests.functional.harness import (
    ADMIN,
    LV_BY,
    LV_NW,
    MD_NW,
    Running,
    Server,
    make_settings,
    start_server,
)


class CodeClient(asyncssh.SSHClient):
    """Answers the keyboard-interactive prompt with a fixed code."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.prompts: list[str] = []

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        self.prompts.extend(p for p, _ in prompts)
        return [self.code] if prompts else []


async def _enrol(server: Server, ik: str) -> pyotp.TOTP:
    key = totp.load_key(server.settings.security.totp_key)
    async with server.db.session() as session:
        enrolment = await totp.enable(session, ADMIN, SystemClock().now(), ik, key, "QPR")
    secret = enrolment.uri.split("secret=")[1].split("&")[0]
    return pyotp.TOTP(secret)


async def _login_with_code(server: Server, ik: str, code: str) -> list[str]:
    client = CodeClient(code)
    async with (
        server.connect(ik, client_factory=lambda: client, kbdint_auth=True, password=None) as conn,
        conn.start_sftp_client() as sftp,
    ):
        names = await sftp.listdir("/")
    assert client.prompts == ["Code: "]
    return names


async def test_key_alone_is_refused_for_a_two_factor_account(server: Server) -> None:
    await _enrol(server, LV_NW)
    with pytest.raises(asyncssh.PermissionDenied):
        await server.connect(LV_NW, kbdint_auth=False)


async def test_key_and_a_valid_code_log_in_and_a_reused_code_is_refused(server: Server) -> None:
    generator = await _enrol(server, LV_NW)
    code = generator.now()
    assert "inbox" in await _login_with_code(server, LV_NW, code)
    with pytest.raises(asyncssh.PermissionDenied):
        await _login_with_code(server, LV_NW, code)


async def test_a_wrong_code_is_refused(server: Server) -> None:
    generator = await _enrol(server, LV_NW)
    wrong = f"{(int(generator.now()) + 1) % 1_000_000:06d}"
    with pytest.raises(asyncssh.PermissionDenied):
        await _login_with_code(server, LV_NW, wrong)


async def test_password_and_code_work_like_key_and_code(server: Server) -> None:
    generator = await _enrol(server, LV_NW)
    async with server.db.session() as session:
        await accounts.set_password(
            session, ADMIN, SystemClock().now(), LV_NW, "ein sehr langes Wort"
        )
    client = CodeClient(generator.now())
    async with (
        asyncssh.connect(
            "127.0.0.1",
            server.port,
            username=LV_NW,
            password="ein sehr langes Wort",
            client_keys=None,
            known_hosts=None,
            client_factory=lambda: client,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        assert "inbox" in await sftp.listdir("/")


async def test_openssh_sftp_logs_in_with_key_and_code_and_not_with_key_alone(
    server: Server, tmp_path: Path
) -> None:
    generator = await _enrol(server, LV_NW)
    code_file = tmp_path / "code"
    code_file.write_text(generator.now() + "\n")
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\ncat {code_file}\n")
    askpass.chmod(0o700)
    command = [
        "sftp",
        "-i", str(server.key_path(LV_NW)),
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "LogLevel=ERROR",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=no",
        "-o", "KbdInteractiveAuthentication=yes",
        "-o", "PreferredAuthentications=publickey,keyboard-interactive",
        "-P", str(server.port), "-b", "-", f"{LV_NW}@127.0.0.1",
    ]  # fmt: skip
    env = {
        **os.environ,
        "SSH_ASKPASS": str(askpass),
        "SSH_ASKPASS_REQUIRE": "force",
        "DISPLAY": ":0",
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    out, err = await asyncio.wait_for(proc.communicate(b"ls /\n"), 60)
    assert proc.returncode == 0, err.decode()
    assert b"inbox" in out
    # Key alone (no keyboard-interactive): refused.
    code, _, _ = await server.sftp_batch(LV_NW, "ls /\n", tmp_path)
    assert code != 0


def _paramiko_key_then_codes(
    port: int, key_path: Path, ik: str, codes: list[str], *, code_user: str | None = None
) -> list[str]:
    """paramiko's two steps on one connection: ``auth_publickey``, then ``auth_interactive``
    (as ``code_user``, default ``ik``) with each code in turn until one is taken; returns
    each code's outcome, then the names in /."""
    outcomes: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=30)
            key = paramiko.Ed25519Key.from_private_key_file(str(key_path))
            # Partial success: the key counted, the second factor is still owed.
            assert transport.auth_publickey(ik, key) == ["keyboard-interactive"]
            for code in codes:
                try:
                    transport.auth_interactive(
                        code_user or ik, lambda _t, _i, prompts, c=code: [c] * len(prompts)
                    )
                except paramiko.AuthenticationException:
                    outcomes.append("refused")
                    continue
                outcomes.append("accepted")
                sftp = paramiko.SFTPClient.from_transport(transport)
                assert sftp is not None
                return [*outcomes, *sftp.listdir("/")]
            return outcomes
        finally:
            transport.close()


async def test_paramiko_logs_in_with_key_then_code_as_two_separate_steps(server: Server) -> None:
    generator = await _enrol(server, LV_NW)
    outcome = await asyncio.to_thread(
        _paramiko_key_then_codes, server.port, server.key_path(LV_NW), LV_NW, [generator.now()]
    )
    assert outcome[0] == "accepted" and "inbox" in outcome


async def test_paramiko_with_a_wrong_code_is_refused_and_may_try_again_on_the_same_connection(
    server: Server,
) -> None:
    generator = await _enrol(server, LV_NW)
    right = generator.now()
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    outcome = await asyncio.to_thread(
        _paramiko_key_then_codes, server.port, server.key_path(LV_NW), LV_NW, [wrong, right]
    )
    assert outcome[:2] == ["refused", "accepted"] and "inbox" in outcome


async def test_a_key_verified_for_one_account_does_not_count_as_another_accounts_first_factor(
    server: Server,
) -> None:
    await _enrol(server, LV_NW)
    other = await _enrol(server, LV_BY)
    outcome = await asyncio.to_thread(
        _paramiko_key_then_codes,
        server.port,
        server.key_path(LV_NW),
        LV_NW,
        [other.now()],
        code_user=LV_BY,
    )
    assert outcome == ["refused"]


async def test_required_role_without_enrolment_cannot_log_in(server: Server) -> None:
    security = server.settings.security.model_copy(update={"require_2fa_roles": ["recipient"]})
    server.listener.ctx.settings = server.settings.model_copy(update={"security": security})
    with pytest.raises(asyncssh.PermissionDenied):
        await server.connect(LV_NW)
    async with server.connect(MD_NW) as conn:  # a depositor is not affected
        assert conn is not None


async def _fail_passwords(
    server: Server, ik: str, times: int, *, source: str = "127.0.0.1"
) -> None:
    """Wrong passwords for ``ik``, one connection each, from the loopback address ``source``."""
    for _ in range(times):
        with pytest.raises(asyncssh.PermissionDenied):
            await asyncssh.connect(
                "127.0.0.1",
                server.port,
                username=ik,
                password="falsch falsch falsch",
                client_keys=None,
                known_hosts=None,
                local_addr=(source, 0),
            )


async def _banned_key_login(server: Server, port: int, ik: str) -> BaseException | None:
    try:
        conn = await asyncssh.connect(
            "127.0.0.1", port, username=ik, client_keys=[server.keys[ik]], known_hosts=None
        )
    except (OSError, asyncssh.Error) as exc:
        return exc
    conn.close()
    return None


async def test_repeated_failures_ban_the_address_across_servers_sharing_the_database(
    server: Server,
) -> None:
    threshold = server.settings.security.ban_threshold
    await _fail_passwords(server, "185830016", threshold)
    # Even the right key is refused now, and by a second server on the same database.
    assert await _banned_key_login(server, server.port, LV_NW) is not None
    second = SFTPListener(build_context(server.settings, server.db, server.notifier))
    await second.start()
    try:
        assert await _banned_key_login(server, second.port, LV_NW) is not None
        rows = await bans.list_bans(server.db, SystemClock().now())
        assert [r.key for r in rows] == ["addr:127.0.0.1"]
        await bans.remove_ban(server.db, "127.0.0.1")
        await second._refresh()
        assert await _banned_key_login(server, second.port, LV_NW) is None
    finally:
        await second.stop(grace=0)


ATTACKER = "127.0.0.2"  # Linux answers all of 127.0.0.0/8 on loopback


async def _settled(listener: SFTPListener) -> None:
    """Wait until every connection has closed and its failure has been scored."""
    for _ in range(500):
        if not listener.connections and not listener._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("connections did not close")


async def _ban_keys(server: Server) -> list[str]:
    return [row.key for row in await bans.list_bans(server.db, SystemClock().now())]


async def test_password_guesses_from_one_address_never_lock_the_owner_out_of_key_logins(
    server: Server,
) -> None:
    threshold = server.settings.security.ban_threshold
    await _fail_passwords(server, LV_NW, threshold, source=ATTACKER)
    assert await _ban_keys(server) == [f"account:{LV_NW}", f"addr:{ATTACKER}"]
    # The owner's key from a clean address still logs in ...
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        assert "inbox" in await sftp.listdir("/")
    # ... while the guessing address gets nothing, not even with the right key.
    with pytest.raises((OSError, asyncssh.Error)):
        await server.connect(LV_NW, local_addr=(ATTACKER, 0))


async def test_a_banned_account_refuses_even_its_right_password_but_not_its_key(
    server: Server,
) -> None:
    async with server.db.session() as session:
        await accounts.set_password(
            session, ADMIN, SystemClock().now(), LV_NW, "ein sehr langes Wort"
        )
    await _fail_passwords(server, LV_NW, server.settings.security.ban_threshold, source=ATTACKER)

    def by_password() -> Any:
        return asyncssh.connect(
            "127.0.0.1",
            server.port,
            username=LV_NW,
            password="ein sehr langes Wort",
            client_keys=None,
            known_hosts=None,
        )

    with pytest.raises(asyncssh.PermissionDenied):
        await by_password()
    async with server.connect(LV_NW) as conn:
        assert conn is not None
    await bans.remove_ban(server.db, LV_NW)
    async with by_password() as conn:
        assert conn is not None


async def test_wrong_keys_score_against_the_address_but_never_the_account(
    server: Server,
) -> None:
    threshold = server.settings.security.ban_threshold
    strangers = [asyncssh.generate_private_key("ssh-ed25519")]
    for _ in range(threshold):
        with pytest.raises(asyncssh.PermissionDenied):
            await server.connect(LV_NW, client_keys=strangers, local_addr=(ATTACKER, 0))
    await _settled(server.listener)
    assert await _ban_keys(server) == [f"addr:{ATTACKER}"]
    async with server.connect(LV_NW) as conn:
        assert conn is not None


async def test_allowlisted_addresses_are_never_banned(server: Server) -> None:
    security = server.settings.security.model_copy(update={"allowlist": ["127.0.0.0/8"]})
    server.listener.ctx.settings = server.settings.model_copy(update={"security": security})
    await _fail_passwords(server, "185830016", server.settings.security.ban_threshold + 2)
    assert await _banned_key_login(server, server.port, LV_NW) is None


async def _set(server: Server, ik: str, **changes: Any) -> None:
    async with server.db.session() as session:
        await accounts.update_account(session, ADMIN, SystemClock().now(), ik, **changes)


async def test_logins_from_outside_the_allowed_networks_are_refused(server: Server) -> None:
    await _set(server, LV_NW, allowed_networks=["10.0.0.0/8"])
    with pytest.raises(asyncssh.PermissionDenied):
        await server.connect(LV_NW)
    await _set(server, LV_NW, allowed_networks=["127.0.0.0/8"])
    async with server.connect(LV_NW) as conn:
        assert conn is not None


async def test_an_expired_account_cannot_log_in(server: Server) -> None:
    await _set(server, LV_NW, expires_at=SystemClock().now() - timedelta(minutes=1))
    with pytest.raises(asyncssh.PermissionDenied):
        await server.connect(LV_NW)


async def test_concurrent_sessions_are_limited_per_account(server: Server) -> None:
    await _set(server, LV_BY, max_sessions=1)
    async with server.connect(LV_BY) as first:
        with pytest.raises(asyncssh.PermissionDenied):
            await server.connect(LV_BY)
        assert first is not None
    async with server.connect(LV_BY) as again:
        assert again is not None


async def test_disabling_an_account_closes_its_open_session(server: Server) -> None:
    async with server.connect(LV_NW) as conn:
        async with server.db.session() as session:
            await accounts.set_status(
                session, ADMIN, SystemClock().now(), LV_NW, "disabled", server.notifier
            )
        await asyncio.wait_for(conn.wait_closed(), 10)


async def test_open_handles_per_session_are_limited(server: Server) -> None:
    security = server.settings.security.model_copy(update={"max_handles_per_session": 3})
    server.listener.ctx.settings = server.settings.model_copy(update={"security": security})
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        handles = [await sftp.open(f"/outbox/x{i}.pdf.part", "wb") for i in range(3)]
        with pytest.raises(asyncssh.SFTPFailure, match="Too many open files"):
            await sftp.open("/outbox/x9.pdf.part", "wb")
        await handles[0].close()
        handles[0] = await sftp.open("/outbox/x9.pdf.part", "wb")
        for h in handles:
            await h.close()


async def test_too_many_failed_attempts_close_the_connection(server: Server) -> None:
    keys = [asyncssh.generate_private_key("ssh-ed25519") for _ in range(8)]
    with pytest.raises(asyncssh.Error):
        await asyncssh.connect(
            "127.0.0.1", server.port, username=LV_NW, client_keys=keys, known_hosts=None
        )
    async with server.db.read_session() as session:
        account = await session.scalar(select(Account).where(Account.ik == LV_NW))
    assert account is not None and account.status == "active"


async def _nodes(run: Running) -> int:
    db = Database(load_config(run.config).database)
    try:
        async with db.read_session() as session:
            return int(await session.scalar(select(func.count(Node.id))) or 0)
    finally:
        await db.dispose()


@pytest.mark.parametrize("running", ["workers = 2\n"], indirect=True)
async def test_a_session_limit_of_one_holds_across_two_worker_processes(
    running: Running, tmp_path: Path
) -> None:
    Instance(tmp_path, running.config).ok("account", "update", LV_NW, "--max-sessions", "1")
    # Each worker is a node with its own heartbeat; the second may still be starting
    # when the first answers SSH.
    for _ in range(200):
        if await _nodes(running) == 2:
            break
        await asyncio.sleep(0.1)
    assert await _nodes(running) == 2
    async with running.connect(LV_NW) as first:
        # Each try goes to the worker with fewer open connections: the one that did
        # not take the first login.
        for _ in range(8):
            with pytest.raises(asyncssh.PermissionDenied):
                await running.connect(LV_NW)
        assert first is not None
    # Closed at one worker, the session is free for a login at either.
    for _ in range(100):
        try:
            async with running.connect(LV_NW) as again:
                assert again is not None
            break
        except asyncssh.PermissionDenied:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the session did not become free after close")


async def test_a_corrupt_totp_key_stops_the_start_with_one_line(
    tmp_path: Path, db: Database
) -> None:
    settings = make_settings(tmp_path / "corrupt", db.settings.url, db.settings.schema_name)
    settings.security.totp_key.write_bytes(b"not a key\n")
    with pytest.raises(ConfigError, match="not a valid key"):
        await start_server(settings, db, tmp_path)


async def test_an_unreadable_totp_key_stops_the_start(tmp_path: Path, db: Database) -> None:
    settings = make_settings(tmp_path / "unreadable", db.settings.url, db.settings.schema_name)
    settings.security.totp_key.unlink()
    settings.security.totp_key.mkdir()  # unreadable as a file, whoever runs the test
    with pytest.raises(ConfigError, match="TOTP key unreadable"):
        await start_server(settings, db, tmp_path)


async def test_a_missing_totp_key_is_fine_until_an_account_has_a_second_factor(
    server: Server, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "missing", server.db.settings.url, server.db.settings.schema_name
    )
    settings.security.totp_key.unlink()
    second = await start_server(settings, server.db, tmp_path)
    try:
        assert second.listener.ctx.totp_key is None
        assert await _banned_key_login(server, second.port, LV_NW) is None
    finally:
        await second.listener.stop(grace=0)
    await _enrol(server, LV_NW)
    with pytest.raises(ConfigError, match="TOTP key missing, but 1 account"):
        await start_server(settings, server.db, tmp_path)


def test_serve_with_a_corrupt_totp_key_exits_with_one_line(instance: Instance) -> None:
    (instance.root / "keys" / "totp.key").write_bytes(b"garbage")
    result = instance.run("serve")
    assert result.returncode == 1
    assert "totp.key: not a valid key" in result.stderr
