"""``storage check`` and ``storage migrate``: the blob store of this instance."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from qprserver.cli.app import App, handle_errors, pass_app
from qprserver.cli.output import Column, emit, json_option
from qprserver.db.engine import Database


@click.group("storage")
def storage_group() -> None:
    """The blob store: check it, migrate it to S3."""


@storage_group.command("check")
@json_option
@pass_app
def storage_check(app: App, as_json: bool) -> None:
    """Check the configured blob store: reachable, writable, set-up hints."""
    from qprserver.service import blob_store

    def work() -> list[dict[str, str]]:
        blobs = blob_store(app.settings)
        try:
            found = blobs.check()
        finally:
            blobs.close()
        return [{"check": c.name, "status": c.status, "detail": c.detail} for c in found]

    rows = handle_errors(work)
    data = {"backend": app.settings.storage.backend, "checks": rows}
    emit(
        data if as_json else rows,
        as_json=as_json,
        columns=[Column("Check", "check"), Column("Status", "status"), Column("Detail", "detail")],
    )
    failed = [row["check"] for row in rows if row["status"] == "error"]
    if failed:
        raise click.ClickException(f"storage check failed: {', '.join(failed)}")


@storage_group.command("migrate")
@click.option(
    "--to", "to", type=click.Choice(["s3"]), required=True, help="The backend to copy to."
)
@json_option
@pass_app
def storage_migrate(app: App, to: str, as_json: bool) -> None:
    """Copy every blob a document or bundle refers to into the S3 bucket, verifying
    each SHA-256; run again to resume. Then switch storage.backend."""
    from qprserver.exchange.retention import referenced_blobs
    from qprserver.service import blob_store
    from qprserver.storage.transfer import copy_blobs

    storage = app.settings.storage
    if storage.backend == to:
        raise click.ClickException(f"storage.backend is {to} already: nothing to migrate from")
    if not (storage.endpoint and storage.bucket):
        raise click.ClickException(
            "set storage.endpoint, storage.bucket and the credentials first "
            "(storage.backend stays local until the copy is complete)"
        )

    async def work(db: Database) -> dict[str, Any]:
        hashes = await referenced_blobs(db)
        source, target = blob_store(app.settings), blob_store(app.settings, to)
        try:
            report = await asyncio.to_thread(copy_blobs, source, target, hashes)
        finally:
            source.close()
            target.close()
        return {
            "referenced": len(hashes),
            "copied": report.copied,
            "copied_bytes": report.copied_bytes,
            "present": report.present,
            "missing": report.missing,
            "corrupt": report.corrupt,
            "complete": report.complete,
        }

    data = app.run(work)
    emit(data, as_json=as_json, text=_print_migration)
    if not data["complete"]:
        raise click.ClickException(
            f"{len(data['missing'])} blob(s) missing and {len(data['corrupt'])} corrupt "
            "in the local store: see the list above; the rest is copied"
        )


def _print_migration(data: dict[str, Any]) -> None:
    click.echo(
        f"{data['referenced']} referenced blob(s): {data['copied']} copied "
        f"({data['copied_bytes']} bytes), {data['present']} there already"
    )
    for sha256 in data["missing"]:
        click.echo(f"missing: {sha256}")
    for sha256 in data["corrupt"]:
        click.echo(f"corrupt: {sha256}")
    if data["complete"]:
        click.echo(
            "complete. Now stop every node, run this command once more (it copies what "
            'came since), set storage.backend = "s3" and start the nodes again.'
        )
