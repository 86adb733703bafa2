"""The S3 backend of the ``BlobStore`` Protocol: blobs as objects in a bucket.

Keys: ``<prefix>blobs/ab/cd/<64 hex>``, the local backend's layout, so a blob has the
same name in both (``storage migrate``). Each object carries the Unix time it was
stored, or stored again, as metadata (``stored-at``; S3's own Last-Modified counts
whole seconds only), which the sweep of unreferenced blobs goes by.

Writes: an upload spools to this node's spool folder while it is hashed
(``storage/spool.py``, as on the local backend, so ``reput`` resumes it on the same
node); ``finish`` then sends it as one PUT, or as a multipart upload above ``PART``
bytes, straight to its content address, before the caller commits its row. Content
stored already is not sent again: its ``stored-at`` is renewed by a copy onto itself.
A bundle (``begin_stream``) goes out part by part as it is zipped, to a temporary key
under ``<prefix>incoming/<node>/``, and is copied to its content address inside the
store once its hash is known; it is never whole in memory or on local disk.

Reads: ``storage/s3read.py`` (ranged GETs with read-ahead); parts: ``storage/s3write.py``.

Removing: ``delete_if_older`` reads the time stored, then deletes. S3 has no rename
to move the object aside first as the local backend does, so a store of the same
content landing between the two (a few milliseconds) would lose its blob; the sweep
only looks at blobs no row has referred to for ``orphan_grace`` (an hour), which an
upload of the same content must hit within that window.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from qprserver.storage.base import BlobNotFound, BlobStat, StoreCheck, check_hash
from qprserver.storage.s3client import (
    S3Connection,
    S3Location,
    as_os_error,
    error_code,
    is_not_found,
)
from qprserver.storage.s3read import S3BlobReader
from qprserver.storage.s3write import PART, STORED_AT, Multipart, S3BlobStream, stamp
from qprserver.storage.spool import Spool, SpoolWriter, default_node_id

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

COPY_LIMIT = 5 * 1024**3  # the largest object one CopyObject copies
COPY_PART = 1024**3


class S3BlobStore:
    """Blobs as objects in one bucket; writes through this node's local spool."""

    def __init__(self, data_dir: Path, location: S3Location, node_id: str | None = None) -> None:
        self.spool = Spool(data_dir, node_id or default_node_id())
        self.conn = S3Connection(location)

    # -- keys ------------------------------------------------------------------------

    def blob_key(self, sha256: str) -> str:
        """The object key of a blob; ValueError for anything but a SHA-256."""
        h = check_hash(sha256)
        return self.conn.key(f"blobs/{h[:2]}/{h[2:4]}/{h}")

    def incoming_key(self) -> str:
        """A fresh temporary key of this node, for a blob whose hash is not known yet."""
        return self.conn.key(f"incoming/{self.spool.node_id}/{secrets.token_hex(12)}")

    # -- writing ---------------------------------------------------------------------

    def begin_write(self) -> SpoolWriter:
        return self.spool.new_writer(self._commit)

    def resume_write(self, temp_name: str) -> SpoolWriter:
        return self.spool.resume_writer(temp_name, self._commit)

    def remove_temp(self, temp_name: str) -> None:
        self.spool.remove(temp_name)

    def sweep_temp(
        self, older_than_seconds: float, now: float, spare: frozenset[str] = frozenset()
    ) -> int:
        return self.spool.sweep(older_than_seconds, now, spare)

    def begin_stream(self) -> S3BlobStream:
        return S3BlobStream(self)

    def _commit(self, path: Path, sha256: str) -> None:
        """Send a finished spool file to its content address, then remove it."""
        if not self.touch(sha256):
            size = path.stat().st_size
            with path.open("rb") as source:
                if size <= PART:
                    self.put(sha256, source.read())
                else:
                    self._send_file(source, self.blob_key(sha256))
        path.unlink()

    def _send_file(self, source: BinaryIO, key: str) -> None:
        upload = Multipart(self.conn, key)
        try:
            while data := source.read(PART):
                upload.add(data)
            upload.complete()
        except BaseException:
            upload.abort()
            raise

    def put(self, sha256: str, data: bytes) -> None:
        """Store data under its hash in one PUT."""
        self.conn.run(
            self.conn.client.put_object(
                Bucket=self.conn.bucket, Key=self.blob_key(sha256), Body=data, Metadata=stamp()
            ),
            "put",
        )

    def touch(self, sha256: str) -> bool:
        """Renew a stored blob's ``stored-at``; False if it is not stored."""
        try:
            size = self.stat(sha256).size
        except BlobNotFound:
            return False
        key = self.blob_key(sha256)
        try:
            self.copy(key, key, size)
        except Exception as exc:
            if is_not_found(exc):
                return False  # swept a moment ago: the caller stores its copy
            raise
        return True

    def copy(self, source: str, target: str, size: int) -> None:
        """Copy an object inside the bucket with a fresh ``stored-at``."""
        conn = self.conn
        if size <= COPY_LIMIT:
            conn.run(
                conn.client.copy_object(
                    Bucket=conn.bucket,
                    Key=target,
                    CopySource={"Bucket": conn.bucket, "Key": source},
                    MetadataDirective="REPLACE",
                    Metadata=stamp(),
                ),
                "copy",
            )
            return
        created = conn.run(
            conn.client.create_multipart_upload(Bucket=conn.bucket, Key=target, Metadata=stamp()),
            "create multipart copy",
        )
        parts: list[CompletedPartTypeDef] = []
        for number, start in enumerate(range(0, size, COPY_PART), start=1):
            end = min(start + COPY_PART, size) - 1
            copied = conn.run(
                conn.client.upload_part_copy(
                    Bucket=conn.bucket,
                    Key=target,
                    UploadId=created["UploadId"],
                    PartNumber=number,
                    CopySource={"Bucket": conn.bucket, "Key": source},
                    CopySourceRange=f"bytes={start}-{end}",
                ),
                "copy part",
            )
            parts.append({"ETag": copied["CopyPartResult"]["ETag"], "PartNumber": number})
        conn.run(
            conn.client.complete_multipart_upload(
                Bucket=conn.bucket,
                Key=target,
                UploadId=created["UploadId"],
                MultipartUpload={"Parts": parts},
            ),
            "complete multipart copy",
        )

    def delete_key(self, key: str) -> None:
        self.conn.run(self.conn.client.delete_object(Bucket=self.conn.bucket, Key=key), "delete")

    # -- reading and looking -------------------------------------------------------------

    def open_reader(self, sha256: str) -> S3BlobReader:
        """Open a blob for reading; a missing one raises BlobNotFound from the reader's
        first ``ready``, ``pread`` or ``size`` (opening asks the bucket nothing yet)."""
        return S3BlobReader(self.conn, self.blob_key(sha256), sha256)

    def stat(self, sha256: str) -> BlobStat:
        key = self.blob_key(sha256)
        try:
            head = self.conn.run(
                self.conn.client.head_object(Bucket=self.conn.bucket, Key=key), "head"
            )
        except Exception as exc:
            if is_not_found(exc):
                raise BlobNotFound(sha256) from None
            raise
        stamp = head.get("Metadata", {}).get(STORED_AT, "")
        try:
            stored_at = float(stamp)
        except ValueError:
            stored_at = head["LastModified"].timestamp()
        return BlobStat(sha256, head["ContentLength"], stored_at)

    def exists(self, sha256: str) -> bool:
        try:
            self.stat(sha256)
        except BlobNotFound:
            return False
        return True

    def iter_blobs(self) -> Iterator[BlobStat]:
        """Every stored blob; ``stored_at`` here is S3's Last-Modified (whole seconds)."""
        prefix = self.conn.key("blobs/")
        token: str | None = None
        while True:
            listing = (
                self.conn.client.list_objects_v2(
                    Bucket=self.conn.bucket, Prefix=prefix, ContinuationToken=token
                )
                if token
                else self.conn.client.list_objects_v2(Bucket=self.conn.bucket, Prefix=prefix)
            )
            page = self.conn.run(listing, "list")
            for item in page.get("Contents", []):
                name = item["Key"].rpartition("/")[2]
                try:
                    if item["Key"] != self.blob_key(name):
                        continue
                except ValueError:
                    continue  # not a blob of ours
                yield BlobStat(name, item["Size"], item["LastModified"].timestamp())
            if not page.get("IsTruncated"):
                return
            token = page["NextContinuationToken"]

    # -- removing ------------------------------------------------------------------------

    def delete(self, sha256: str) -> bool:
        if not self.exists(sha256):
            return False
        self.delete_key(self.blob_key(sha256))
        return True

    def delete_if_older(self, sha256: str, cutoff: float) -> bool:
        try:
            if self.stat(sha256).stored_at >= cutoff:
                return False
        except BlobNotFound:
            return False
        self.delete_key(self.blob_key(sha256))
        return True

    def check(self) -> list[StoreCheck]:
        """Reachable, writable (a probe object put, read and deleted), and hints on
        versioning and the lifecycle rules the bucket should have."""
        conn, client = self.conn, self.conn.client
        where = f"{conn.location.endpoint} bucket {conn.bucket}"
        try:
            conn.run(client.head_bucket(Bucket=conn.bucket), "head bucket")
        except Exception as exc:
            return [StoreCheck("reachable", "error", f"{where}: {as_os_error(exc, 'head bucket')}")]
        found = [StoreCheck("reachable", "ok", where)]
        probe = self.incoming_key() + "-check"
        try:
            conn.run(client.put_object(Bucket=conn.bucket, Key=probe, Body=b"check"), "put")
            got = conn.run(client.get_object(Bucket=conn.bucket, Key=probe), "get")
            got["Body"].close()
            self.delete_key(probe)
            found.append(StoreCheck("writable", "ok", f"put, get and delete under {probe}"))
        except OSError as exc:
            found.append(StoreCheck("writable", "error", str(exc)))
        try:
            versioning = conn.run(client.get_bucket_versioning(Bucket=conn.bucket), "versioning")
            status: str = versioning.get("Status", "")
        except OSError as exc:
            status = f"unknown ({exc})"
        found.append(
            StoreCheck(
                "versioning",
                "hint" if status == "Enabled" else "ok",
                "enabled: deleted blobs stay as noncurrent versions; expire them by a "
                "lifecycle rule, or retention deletes nothing"
                if status == "Enabled"
                else f"{status or 'off'}: a delete removes a blob's bytes",
            )
        )
        found.append(self._lifecycle_check())
        return found

    def _lifecycle_check(self) -> StoreCheck:
        conn = self.conn
        try:
            rules = conn.run(
                conn.client.get_bucket_lifecycle_configuration(Bucket=conn.bucket), "lifecycle"
            ).get("Rules", [])
        except Exception as exc:
            if error_code(exc) != "NoSuchLifecycleConfiguration" and not isinstance(exc, OSError):
                raise
            rules = []
        aborts = any("AbortIncompleteMultipartUpload" in rule for rule in rules)
        if aborts:
            return StoreCheck("lifecycle", "ok", "incomplete multipart uploads are aborted")
        return StoreCheck(
            "lifecycle",
            "hint",
            "no rule aborts incomplete multipart uploads: add one (1 day) so the parts of a "
            f"bundle cut off by a crash go, and one expiring {conn.key('incoming/')} after 1 day",
        )

    def close(self) -> None:
        self.conn.close()
