"""The files both servers serve, written once into OpenSSH's folders.

Layout (one folder per role; sshd starts each role's session in its folder)::

    openssh/lv/inbox/     the big file and the file of the parallel downloads
    openssh/mget/inbox/   the many 100 KB files
    openssh/list/inbox/   the folder of many entries (hard links of a few files)
    openssh/md/outbox/    where uploads land (emptied after each run)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from populate import FileSpec
from scenarios import BIG_NAME, PARALLEL_NAME, Sizes, list_name, mget_name
from util import PdfMaker

ROLES = ("lv", "md", "mget", "list")
# ext4 allows 65,000 links to one inode; the listing uses a fresh source file well before.
LINKS_PER_SOURCE = 50_000


@dataclass
class Dataset:
    folders: dict[str, Path]  # role -> OpenSSH start folder
    inboxes: dict[str, list[FileSpec]]  # role -> files in its inbox
    upload_source: Path


def make(openssh_root: Path, scratch: Path, sizes: Sizes, needed: set[str]) -> Dataset:
    """Write the files the scenarios named in needed read (all of them in a normal run)."""
    maker = PdfMaker()
    folders = {role: openssh_root / role for role in ROLES}
    for role in ("lv", "mget", "list"):
        (folders[role] / "inbox").mkdir(parents=True)
    (folders["md"] / "outbox").mkdir(parents=True)
    scratch.mkdir(parents=True, exist_ok=True)
    inboxes: dict[str, list[FileSpec]] = {"lv": [], "mget": [], "list": []}

    def pdf(role: str, name: str, size: int) -> None:
        path = folders[role] / "inbox" / name
        inboxes[role].append(FileSpec(name, path, maker.write(path, size, name), size))

    if "download" in needed:
        pdf("lv", BIG_NAME, sizes.big)
    if "parallel" in needed:
        pdf("lv", PARALLEL_NAME, sizes.parallel_size)
    if needed & {"mget", "mget4"}:
        for i in range(1, sizes.mget_count + 1):
            pdf("mget", mget_name(i), sizes.mget_size)
    if "ls" in needed:
        _listing(folders["list"] / "inbox", scratch / "list-sources", sizes, maker, inboxes)
    upload_source = scratch / "upload.pdf"
    if "upload" in needed:
        maker.write(upload_source, sizes.upload, "upload")
    return Dataset(folders, inboxes, upload_source)


def _listing(
    inbox: Path,
    sources: Path,
    sizes: Sizes,
    maker: PdfMaker,
    inboxes: dict[str, list[FileSpec]],
) -> None:
    sources.mkdir()
    source: FileSpec | None = None
    for i in range(1, sizes.list_count + 1):
        if (i - 1) % LINKS_PER_SOURCE == 0:
            # Same content each time: qprserver stores it once, as its blob store would.
            path = sources / f"source{i}.pdf"
            digest = maker.write(path, sizes.list_size, "list")
            source = FileSpec(path.name, path, digest, sizes.list_size)
        assert source is not None
        target = inbox / list_name(i)
        os.link(source.path, target)
        inboxes["list"].append(FileSpec(target.name, target, source.sha256, source.size))
