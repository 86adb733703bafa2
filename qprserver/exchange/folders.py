"""The folders of an account's tree, and where a delivery can be.

``Folder`` values are what clients see as top-level names (``/inbox`` …) and what
the database stores in ``deliveries.folder``; a ``StrEnum`` member compares and
binds as its value, so queries and stored rows are unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Folder(StrEnum):
    """A top-level folder of an account's tree."""

    INBOX = "inbox"  # delivered to a recipient, not yet acknowledged
    ARCHIVE = "archive"  # acknowledged, until retention removes it
    BUNDLES = "bundles"  # weekly ZIP bundles and their .sha256 files
    OUTBOX = "outbox"  # a depositor's uploads and current documents
    RECEIPTS = "receipts"  # one protocol per upload


RECIPIENT_FOLDERS: Final = (Folder.INBOX, Folder.ARCHIVE, Folder.BUNDLES)
DEPOSITOR_FOLDERS: Final = (Folder.OUTBOX, Folder.RECEIPTS)
# Folders whose entries are deliveries (rows of ``deliveries``), with receipts.
DELIVERY_FOLDERS: Final = (Folder.INBOX, Folder.ARCHIVE)
# Folders whose files are blobs of the store (receipts are served from the database).
BLOB_FOLDERS: Final = (Folder.INBOX, Folder.ARCHIVE, Folder.BUNDLES, Folder.OUTBOX)
# A delivery a newer version replaced: in no folder, kept for retention.
SUPERSEDED: Final = "superseded"

BY_NAME: Final = {folder.value: folder for folder in Folder}
