"""The mailbox over SFTP with the asyncssh client."""

from __future__ import annotations

import asyncio
import hashlib
import json
from datetime import timedelta

import asyncssh
import pytest

from qprserver.clock import SystemClock
from qprserver.jobs.registry import run_job
from qprserver.service import job_context
from tests.functional.harness import FACILITY_NW, LV_BY, LV_NW, MD_NW, Server, pdf_bytes

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"


async def _put(server: Server, ik: str, path: str, data: bytes) -> None:
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "wb") as f,
    ):
        await f.write(data)


async def _listdir(server: Server, ik: str, path: str) -> list[str]:
    async with server.connect(ik) as conn, conn.start_sftp_client() as sftp:
        return sorted(n for n in await sftp.listdir(path) if n not in (".", ".."))


async def _get(server: Server, ik: str, path: str) -> bytes:
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "rb") as f,
    ):
        return bytes(await f.read())


async def test_routed_upload_reaches_landesverband_and_facility_and_nobody_else(
    server: Server,
) -> None:
    data = pdf_bytes(300_000)
    await _put(server, MD_NW, f"/outbox/{REPORT}", data)
    for ik in (LV_NW, FACILITY_NW):
        assert await _listdir(server, ik, "/inbox") == [REPORT]
        got = await _get(server, ik, f"/inbox/{REPORT}")
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    assert await _listdir(server, LV_BY, "/inbox") == []


async def test_each_account_sees_only_its_own_folders(server: Server) -> None:
    assert await _listdir(server, LV_NW, "/") == ["archive", "bundles", "inbox"]
    assert await _listdir(server, MD_NW, "/") == ["outbox", "receipts"]


async def test_deleting_from_inbox_acknowledges_into_archive(server: Server) -> None:
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes())
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        await sftp.remove(f"/inbox/{REPORT}")
        assert [n for n in await sftp.listdir("/inbox") if n not in (".", "..")] == []
        assert REPORT in await sftp.listdir("/archive")
        attrs = await sftp.stat(f"/archive/{REPORT}")
        assert attrs.size == len(pdf_bytes())
    # The facility's copy is untouched.
    assert await _listdir(server, FACILITY_NW, "/inbox") == [REPORT]


async def test_accepted_upload_gets_a_protocol_in_receipts(server: Server) -> None:
    data = pdf_bytes(1000)
    await _put(server, MD_NW, f"/outbox/{REPORT}", data)
    names = await _listdir(server, MD_NW, "/receipts")
    assert len(names) == 1 and "_accepted_" in names[0]
    protocol = json.loads(await _get(server, MD_NW, f"/receipts/{names[0]}"))
    assert protocol["ergebnis"] == "angenommen"
    assert protocol["sha256"] == hashlib.sha256(data).hexdigest()
    assert protocol["empfaenger_anzahl"] == 2


async def test_truncated_pdf_is_rejected_with_a_protocol_and_reaches_nobody(
    server: Server,
) -> None:
    truncated = pdf_bytes(50_000)[:30_000]
    with pytest.raises(asyncssh.SFTPFailure, match="unvollständig"):
        await _put(server, MD_NW, f"/outbox/{REPORT}", truncated)
    assert await _listdir(server, LV_NW, "/inbox") == []
    names = await _listdir(server, MD_NW, "/receipts")
    assert len(names) == 1 and "_rejected_" in names[0]
    protocol = json.loads(await _get(server, MD_NW, f"/receipts/{names[0]}"))
    assert protocol["ergebnis"] == "abgelehnt"
    assert "%%EOF" in protocol["gruende"][0]
    assert server.temp_files() == []


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("123456789_bericht.pdf", "Prüfziffer"),
        ("irgendwas.pdf", "keiner Dokumentart"),
        (f"{FACILITY_NW}_leer.pdf", "Leere Datei"),
    ],
)
async def test_uploads_that_cannot_be_routed_or_checked_are_rejected(
    server: Server, name: str, reason: str
) -> None:
    data = b"" if "leer" in name else pdf_bytes()
    with pytest.raises(asyncssh.SFTPFailure, match=reason):
        await _put(server, MD_NW, f"/outbox/{name}", data)
    assert await _listdir(server, LV_NW, "/inbox") == []


async def test_facility_in_a_land_without_route_is_rejected(server: Server) -> None:
    # Region 14 (SN) has no route and the facility has no account.
    from qprserver.ik import check_digit

    ik = "5114" + "4444"
    ik += str(check_digit(ik))
    with pytest.raises(asyncssh.SFTPFailure, match="kein Empfänger"):
        await _put(server, MD_NW, f"/outbox/{ik}_bericht.pdf", pdf_bytes())


async def test_direct_address_reaches_exactly_that_recipient(server: Server) -> None:
    await _put(server, MD_NW, f"/outbox/{LV_BY}/rundschreiben.pdf", pdf_bytes())
    assert await _listdir(server, LV_BY, "/inbox") == ["rundschreiben.pdf"]
    assert await _listdir(server, LV_NW, "/inbox") == []


async def test_upload_to_temp_name_becomes_a_document_only_on_rename(server: Server) -> None:
    data = pdf_bytes(200_000)
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        async with sftp.open(f"/outbox/{REPORT}.filepart", "wb") as f:
            await f.write(data)
        assert await sftp.exists(f"/outbox/{REPORT}.filepart")
        assert await _listdir(server, LV_NW, "/inbox") == []
        await sftp.rename(f"/outbox/{REPORT}.filepart", f"/outbox/{REPORT}")
    assert await _listdir(server, LV_NW, "/inbox") == [REPORT]
    assert await _get(server, LV_NW, f"/inbox/{REPORT}") == data


async def test_dropped_connection_midway_leaves_a_partial_only_its_depositor_sees_and_resumes(
    server: Server,
) -> None:
    data = pdf_bytes(100_000)
    conn = await server.connect(MD_NW)
    sftp = await conn.start_sftp_client()
    f = await sftp.open(f"/outbox/{REPORT}", "wb")
    await f.write(data[:60_000])
    assert len(server.temp_files()) == 1
    conn.abort()
    await conn.wait_closed()
    # The server learns of the loss asynchronously; wait until it has kept the bytes.
    for _ in range(200):
        if not server.listener.connections:
            break
        await asyncio.sleep(0.01)
    await server.settled()
    assert len(server.temp_files()) == 1
    assert await _listdir(server, LV_NW, "/inbox") == []
    assert await _listdir(server, MD_NW, "/receipts") == []
    assert await _listdir(server, MD_NW, "/outbox") == [REPORT]
    async with server.connect(MD_NW) as conn, conn.start_sftp_client() as sftp:
        attrs = await sftp.stat(f"/outbox/{REPORT}")
        assert attrs.size == 60_000 and attrs.permissions == 0o100600
        # Opened without truncation (as reput, lftp put -c and curl -C - do): resumed.
        async with sftp.open(f"/outbox/{REPORT}", "r+b") as f:
            await f.write(data[60_000:], 60_000)
    assert await _get(server, LV_NW, f"/inbox/{REPORT}") == data
    assert server.temp_files() == []


async def test_same_name_again_supersedes_the_earlier_version(server: Server) -> None:
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes(seed=b"v1"))
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes(seed=b"v2"))
    assert await _listdir(server, LV_NW, "/inbox") == [REPORT]
    assert await _get(server, LV_NW, f"/inbox/{REPORT}") == pdf_bytes(seed=b"v2")


async def test_same_content_for_many_recipients_is_stored_once(server: Server) -> None:
    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes(seed=b"once"))
    await _put(server, MD_NW, f"/outbox/{LV_BY}/kopie.pdf", pdf_bytes(seed=b"once"))
    blobs = list((server.settings.storage.data_dir / "blobs").glob("*/*/*"))
    assert len(blobs) == 1


async def test_complete_download_records_a_receipt_visible_to_the_depositor(
    server: Server,
) -> None:
    from qprserver.exchange import mailbox

    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes(500_000))
    await _get(server, LV_NW, f"/inbox/{REPORT}")
    async with (
        server.connect(FACILITY_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/inbox/{REPORT}", "rb") as f,
    ):
        await f.read(1000)  # a partial read is no download
    await server.listener.ctx.receipts.flush()
    async with server.db.read_session() as session:
        deliveries = await mailbox.deliveries_of_document(session, 1)
    downloads = {d["recipient"]: d["downloads"] for d in deliveries}
    assert len(downloads[LV_NW]) == 1  # type: ignore[arg-type]
    assert downloads[FACILITY_NW] == []


async def test_logins_and_downloads_land_in_the_audit_chain(server: Server) -> None:
    from qprserver.audit import chain as audit
    from qprserver.audit import check as audit_check

    await _put(server, MD_NW, f"/outbox/{REPORT}", pdf_bytes(seed=b"audited"))
    await _get(server, LV_NW, f"/inbox/{REPORT}")
    await server.listener.ctx.receipts.flush()
    async with server.db.read_session() as session:
        events = [
            e
            for e in reversed(await audit.events(session, account=LV_NW))
            if e.action in ("login", "download")
        ]
        assert await audit_check.verify(session) > 0
    assert [e.action for e in events] == ["login", "download"]
    assert all(e.source.startswith("127.0.0.1") for e in events)


async def test_each_reply_is_one_packet_without_an_ignore_packet_before_it(
    server: Server,
) -> None:
    # The client's receive sequence number counts the SSH packets it got (asyncssh
    # 2.24, pinned in sftp/compat.py); asyncssh alone sends an empty ignore packet
    # before each, which compat.drop_empty_ignores drops.
    async with server.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        before = conn._recv_seq
        for _ in range(20):
            await sftp.stat("/inbox")
        received = (conn._recv_seq - before) & 0xFFFFFFFF
    assert 20 <= received < 30


async def test_unknown_and_disabled_accounts_cannot_log_in_alike(server: Server) -> None:
    from qprserver.accounts import service as accounts
    from qprserver.clock import SystemClock
    from tests.functional.harness import ADMIN

    key = server.keys[LV_NW]
    with pytest.raises(asyncssh.PermissionDenied) as unknown:
        await asyncssh.connect(
            "127.0.0.1", server.port, username="185830016", client_keys=[key], known_hosts=None
        )
    async with server.db.session() as session:
        await accounts.set_status(
            session, ADMIN, SystemClock().now(), LV_NW, "disabled", server.notifier
        )
    with pytest.raises(asyncssh.PermissionDenied) as disabled:
        await server.connect(LV_NW)
    # The same answer for both; only the echoed user name differs.
    assert str(unknown.value).replace("185830016", "U") == str(disabled.value).replace(LV_NW, "U")


async def test_password_login_works_when_a_password_is_set(server: Server) -> None:
    from qprserver.accounts import service as accounts
    from qprserver.clock import SystemClock
    from tests.functional.harness import ADMIN

    async with server.db.session() as session:
        await accounts.set_password(
            session, ADMIN, SystemClock().now(), LV_NW, "ein langes Passwort"
        )
    async with (
        asyncssh.connect(
            "127.0.0.1",
            server.port,
            username=LV_NW,
            password="ein langes Passwort",
            client_keys=None,
            known_hosts=None,
        ) as conn,
        conn.start_sftp_client() as sftp,
    ):
        assert "inbox" in await sftp.listdir("/")
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            server.port,
            username=LV_NW,
            password="falsch falsch falsch",
            client_keys=None,
            known_hosts=None,
        )


async def test_replies_held_back_for_a_slow_client_arrive_whole_and_in_order(
    server: Server,
) -> None:
    # A 64 KiB reply cap: while the client stops reading, the session's replies pass the
    # cap at once and it waits on the channel's drain; afterwards every read completes.
    security = server.settings.security.model_copy(update={"max_write_buffer": 65536})
    server.listener.ctx.settings = server.settings.model_copy(update={"security": security})
    content = pdf_bytes(8_000_000, seed=b"slow reader")
    await _put(server, MD_NW, f"/outbox/{REPORT}", content)
    block = 256 * 1024
    async with (
        server.connect(LV_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/inbox/{REPORT}", "rb") as f,
    ):
        transport = conn._transport  # the client's socket transport (asyncssh 2.24)
        transport.pause_reading()
        reads = [
            asyncio.ensure_future(f.read(block, offset)) for offset in range(0, len(content), block)
        ]
        await asyncio.sleep(0.5)
        assert not any(r.done() for r in reads)
        transport.resume_reading()
        data = b"".join(await asyncio.wait_for(asyncio.gather(*reads), 30))
    assert data == content


async def test_a_kept_partial_upload_is_swept_after_the_keep_time(server: Server) -> None:
    async def cut(name: str) -> None:
        conn = await server.connect(MD_NW)
        sftp = await conn.start_sftp_client()
        f = await sftp.open(f"/outbox/{name}", "wb")
        await f.write(pdf_bytes(100_000)[:30_000])
        conn.abort()
        await conn.wait_closed()
        for _ in range(200):
            if not server.listener.connections:
                break
            await asyncio.sleep(0.01)
        await server.settled()

    await cut("alt.pdf")
    ctx = job_context(server.settings, server.db, server.listener.ctx.blobs)
    keep = timedelta(seconds=server.settings.storage.partial_keep)
    start = SystemClock().now()
    await cut("neu.pdf")
    # Within their keep time the partial uploads stay.
    outcome = await run_job(ctx, "sweep", start + keep - timedelta(minutes=1))
    assert outcome.result == {"temp_files_removed": 0, "partial_uploads_expired": 0}
    assert sorted(await _listdir(server, MD_NW, "/outbox")) == ["alt.pdf", "neu.pdf"]
    outcome = await run_job(ctx, "sweep", start + keep + timedelta(minutes=1))
    assert outcome.result["partial_uploads_expired"] == 2
    assert await _listdir(server, MD_NW, "/outbox") == []
    assert server.temp_files() == []


async def test_the_same_bytes_for_someone_new_are_a_new_version_not_unchanged(
    server: Server,
) -> None:
    data = pdf_bytes(seed=b"direct")
    await _put(server, MD_NW, f"/outbox/{LV_BY}/anlage.pdf", data)
    await _put(server, MD_NW, f"/outbox/{LV_BY}/anlage.pdf", data)  # a retry: unchanged
    await _put(server, MD_NW, f"/outbox/{LV_NW}/anlage.pdf", data)  # another recipient
    outcomes = [n.split("_")[2] for n in await _listdir(server, MD_NW, "/receipts")]
    assert outcomes == ["accepted", "unchanged", "accepted"]
    assert await _listdir(server, LV_NW, "/inbox") == ["anlage.pdf"]
    # Each folder of /outbox shows the current version where it was addressed.
    assert await _listdir(server, MD_NW, f"/outbox/{LV_NW}") == ["anlage.pdf"]
    assert await _listdir(server, MD_NW, f"/outbox/{LV_BY}") == []
    assert await _get(server, MD_NW, f"/outbox/{LV_NW}/anlage.pdf") == data
