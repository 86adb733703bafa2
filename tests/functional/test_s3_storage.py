"""Uploads, downloads and bundles over SFTP with the blobs in S3 (a real SeaweedFS):
the same behaviour as on local storage, and no blob on local disk."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qprserver.accounts import service as accounts
from qprserver.clock import FixedClock
from qprserver.db.engine import Database
from qprserver.exchange import mailbox
from qprserver.jobs.registry import run_job
from qprserver.service import job_context
from tests.functional.harness import (
    ADMIN,
    FACILITY_NW,
    LV_NW,
    MD_NW,
    Server,
    make_settings,
    pdf_bytes,
    start_server,
)
from tests.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"
WEEK45 = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
MONDAY46 = datetime(2026, 11, 9, 1, 0, tzinfo=UTC)
MIB = 1024 * 1024


@pytest.fixture
async def s3_backed(tmp_path: Path, db: Database, s3_server: SeaweedS3) -> AsyncIterator[Server]:
    """A running SFTP server whose blobs live in the bucket, under a prefix of its own."""
    credentials = tmp_path / "keys" / "s3.toml"
    credentials.parent.mkdir()
    credentials.write_text(
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"\n', encoding="utf-8"
    )
    settings = make_settings(
        tmp_path,
        db.settings.url,
        db.settings.schema_name,
        backend="s3",
        endpoint=s3_server.endpoint,
        bucket=BUCKET,
        prefix=s3_server.location().prefix,
        credentials_file="keys/s3.toml",
    )
    srv = await start_server(settings, db, tmp_path)
    await srv.add_account(MD_NW, ["depositor"], name="Medizinischer Dienst NW")
    await srv.add_account(LV_NW, ["recipient"], name="Landesverband NW")
    await srv.add_account(FACILITY_NW, ["recipient"], name="Pflegeheim Am See")
    await srv.add_route("pruefbericht", "NW", LV_NW)
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)
        srv.listener.ctx.blobs.close()


async def _put(server: Server, path: str, data: bytes) -> None:
    async with (
        server.connect(MD_NW) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "wb") as f,
    ):
        await f.write(data)


async def _get(server: Server, ik: str, path: str) -> bytes:
    async with (
        server.connect(ik) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(path, "rb") as f,
    ):
        return bytes(await f.read())


def _local_blobs(server: Server) -> list[Path]:
    return [p for p in (server.settings.storage.data_dir / "blobs").rglob("*") if p.is_file()]


async def test_an_upload_in_parts_is_stored_in_the_bucket_and_downloads_whole(
    s3_backed: Server,
) -> None:
    data = pdf_bytes(20 * MIB + 12345, seed=b"s3")  # above one part: a multipart upload
    await _put(s3_backed, f"/outbox/{REPORT}", data)
    blobs = s3_backed.listener.ctx.blobs
    digest = hashlib.sha256(data).hexdigest()
    assert blobs.stat(digest).size == len(data)
    assert _local_blobs(s3_backed) == []
    assert s3_backed.temp_files() == []  # the spool file went once it was sent
    assert await _get(s3_backed, LV_NW, f"/inbox/{REPORT}") == data
    await s3_backed.listener.ctx.receipts.flush()
    async with s3_backed.db.read_session() as session:
        deliveries = await mailbox.deliveries_of_document(session, 1)
    downloads = {d["recipient"]: d["downloads"] for d in deliveries}
    assert len(downloads[LV_NW]) == 1  # type: ignore[arg-type]


async def test_openssh_sftp_downloads_and_resumes_with_reget(
    s3_backed: Server, tmp_path: Path
) -> None:
    data = pdf_bytes(5 * MIB + 777, seed=b"reget")
    await _put(s3_backed, f"/outbox/{REPORT}", data)
    target = tmp_path / "got"
    target.mkdir()
    (target / REPORT).write_bytes(data[: 3 * MIB + 5])  # a download cut off earlier
    code, _, err = await s3_backed.sftp_batch(LV_NW, f"reget /inbox/{REPORT}\n", target)
    assert code == 0, err
    assert (target / REPORT).read_bytes() == data


async def test_a_missing_object_is_reported_as_unavailable_not_as_an_error_page(
    s3_backed: Server,
) -> None:
    data = pdf_bytes(seed=b"gone")
    await _put(s3_backed, f"/outbox/{REPORT}", data)
    assert s3_backed.listener.ctx.blobs.delete(hashlib.sha256(data).hexdigest())
    async with s3_backed.connect(LV_NW) as conn, conn.start_sftp_client() as sftp:
        with pytest.raises(Exception, match="temporarily unavailable"):
            await sftp.open(f"/inbox/{REPORT}", "rb")


async def test_a_weekly_bundle_is_zipped_into_the_bucket_and_downloads_as_a_valid_zip(
    s3_backed: Server,
) -> None:
    async with s3_backed.db.session() as session:
        await accounts.update_account(session, ADMIN, WEEK45, LV_NW, bundles=True)
    s3_backed.listener.ctx.clock = FixedClock(WEEK45)
    first = pdf_bytes(9 * MIB, seed=b"one")  # with the second, above one part
    second = pdf_bytes(3 * MIB, seed=b"two")
    await _put(s3_backed, f"/outbox/{REPORT}", first)
    await _put(s3_backed, f"/outbox/{FACILITY_NW}_nachpruefung_2026.pdf", second)
    ctx = job_context(
        s3_backed.settings, s3_backed.db, s3_backed.notifier, s3_backed.listener.ctx.blobs
    )
    outcome = await run_job(ctx, "bundles", MONDAY46)
    assert outcome.result["bundles"] == [f"qpr-{LV_NW}-2026-W45.zip"]  # type: ignore[index]
    assert _local_blobs(s3_backed) == []
    body = await _get(s3_backed, LV_NW, f"/bundles/qpr-{LV_NW}-2026-W45.zip")
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert archive.read(REPORT) == first
        assert archive.read(f"{FACILITY_NW}_nachpruefung_2026.pdf") == second
        assert "MANIFEST.csv" in archive.namelist()
