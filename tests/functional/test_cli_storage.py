"""``qprserver storage migrate --to s3`` and ``storage check`` against a real SeaweedFS:
every referenced blob copied and verified, a second run copies nothing, and a
server switched to S3 serves the documents."""

from __future__ import annotations

from pathlib import Path

from qprserver.db.engine import Database
from tests.functional.conftest import Instance
from tests.functional.harness import (
    FACILITY_NW,
    LV_BY,
    LV_NW,
    MD_NW,
    Server,
    make_settings,
    pdf_bytes,
    start_server,
)
from tests.s3server import ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedS3

REPORT = f"{FACILITY_NW}_pruefbericht_2026.pdf"


def _config(root: Path, db: Database, s3: SeaweedS3, prefix: str, backend: str) -> Path:
    (root / "keys").mkdir(exist_ok=True)
    (root / "keys" / "s3.toml").write_text(
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "{SECRET_KEY}"\n', encoding="utf-8"
    )
    schema = f'schema = "{db.settings.schema_name}"\n' if db.settings.schema_name else ""
    config = root / "qprserver.toml"
    config.write_text(
        '[storage]\ndata_dir = "data"\n'
        f'backend = "{backend}"\nendpoint = "{s3.endpoint}"\nbucket = "{BUCKET}"\n'
        f'prefix = "{prefix}"\ncredentials_file = "keys/s3.toml"\n'
        f'[database]\nurl = "{db.settings.url}"\n{schema}',
        encoding="utf-8",
    )
    return config


async def test_migration_copies_every_referenced_blob_once_and_an_s3_node_serves_them(
    server: Server, tmp_path: Path, db: Database, s3_server: SeaweedS3
) -> None:
    first, second = pdf_bytes(3_000_000, seed=b"first"), pdf_bytes(seed=b"second")
    await server.put(MD_NW, f"/outbox/{REPORT}", first)
    await server.put(MD_NW, f"/outbox/{LV_BY}/rundschreiben.pdf", second)
    prefix = s3_server.location().prefix
    cli = Instance(tmp_path, _config(tmp_path, db, s3_server, prefix, "local"))

    report = cli.json("storage", "migrate", "--to", "s3")
    assert (report["referenced"], report["copied"], report["present"]) == (2, 2, 0)
    assert report["complete"] is True and report["missing"] == []
    again = cli.json("storage", "migrate", "--to", "s3")
    assert (again["copied"], again["present"]) == (0, 2)

    s3_settings = make_settings(
        tmp_path / "s3-node",
        db.settings.url,
        db.settings.schema_name,
        backend="s3",
        endpoint=s3_server.endpoint,
        bucket=BUCKET,
        prefix=prefix,
        credentials_file=str(tmp_path / "keys" / "s3.toml"),
    )
    s3_node = await start_server(s3_settings, db, tmp_path / "s3-node")
    s3_node.keys = server.keys
    try:
        async with (
            s3_node.connect(LV_NW) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(f"/inbox/{REPORT}", "rb") as f,
        ):
            got = bytes(await f.read())
        assert got == first
    finally:
        await s3_node.listener.stop(grace=0)
        s3_node.listener.ctx.blobs.close()


def test_storage_check_reports_a_reachable_writable_bucket_with_set_up_hints(
    tmp_path: Path, db: Database, s3_server: SeaweedS3
) -> None:
    cli = Instance(tmp_path, _config(tmp_path, db, s3_server, "check/", "s3"))
    found = cli.json("storage", "check")
    statuses = {row["check"]: row["status"] for row in found["checks"]}
    assert found["backend"] == "s3"
    assert statuses["reachable"] == "ok" and statuses["writable"] == "ok"
    assert statuses["lifecycle"] == "hint"  # the test bucket has no rules


def test_a_bucket_that_refuses_the_credentials_fails_the_check_in_one_line(
    tmp_path: Path, db: Database, s3_server: SeaweedS3
) -> None:
    cli = Instance(tmp_path, _config(tmp_path, db, s3_server, "check/", "s3"))
    (tmp_path / "keys" / "s3.toml").write_text(
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key = "wrong"\n', encoding="utf-8"
    )
    result = cli.run("storage", "check")
    assert result.returncode == 1
    assert "storage check failed: reachable" in result.stderr
    assert "wrong" not in result.stdout + result.stderr


def test_migration_without_a_bucket_configured_is_refused_and_changes_nothing(
    instance: Instance,
) -> None:
    line = instance.fails("storage", "migrate", "--to", "s3")
    assert "set storage.endpoint, storage.bucket" in line
