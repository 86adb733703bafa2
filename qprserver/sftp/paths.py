"""Parsing client paths into the virtual tree, failing closed.

A path is decoded as strict UTF-8, normalised as if the account's root were the
file system root (``..`` stops there), each name put in Unicode NFC (an NFD spelling
names the same file), and then must name exactly one place of
the tree: the root, a top-level folder, a file in one, or ``/outbox/<IK>/<name>``.
Anything else does not exist. Nothing here ever touches the real file system.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from qprserver.exchange.folders import BY_NAME, Folder
from qprserver.exchange.names import name_problem, nfc

MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


class BadPath(Exception):
    """The path cannot name anything in the tree."""


class BadName(BadPath):
    """A name has characters no name in the tree can have; the reason is for the client."""


@dataclass(frozen=True, slots=True)
class VPath:
    """A place in the virtual tree."""

    folder: Folder | None = None  # None: the root
    direct_ik: str | None = None  # only under /outbox
    name: str | None = None  # None: a folder itself

    @property
    def is_dir(self) -> bool:
        return self.name is None

    def text(self) -> str:
        parts = [p for p in (self.folder, self.direct_ik, self.name) if p]
        return "/" + "/".join(parts)


def _valid_component(part: str) -> bool:
    if part.isascii():
        # The common case, at C speed: printable ASCII is exactly 0x20 to 0x7E.
        return len(part) <= MAX_NAME_BYTES and part.isprintable()
    if len(part.encode("utf-8")) > MAX_NAME_BYTES:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in part)


def _decode(path: bytes) -> str:
    if len(path) > MAX_PATH_BYTES:
        raise BadPath("path too long")
    if b"\x00" in path:
        raise BadPath("NUL in path")
    try:
        return path.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadPath("path is not UTF-8") from None


def _normalise_text(text: str) -> str:
    # Relative paths start at the account's root; "//x" is "/x" here.
    norm = posixpath.normpath("/" + text.lstrip("/"))
    return "/" + norm.lstrip("/")


def normalise(path: bytes) -> str:
    """The absolute, normalised text form of a client path; BadPath when impossible."""
    return _normalise_text(_decode(path))


def parse(path: bytes, folders: tuple[Folder, ...]) -> VPath:
    """The place a client path names within an account's folders; BadPath otherwise.

    A trailing ``/`` (or ``/.``) names a folder, as on POSIX: ``/inbox/a.pdf/`` is
    nothing, not ``/inbox/a.pdf``.
    """
    text = _decode(path)
    vpath = _parse_normalised(_normalise_text(text), folders)
    if text.endswith(("/", "/.")) and not vpath.is_dir:
        raise BadPath("not a folder")
    return vpath


def _parse_normalised(norm: str, folders: tuple[Folder, ...]) -> VPath:
    parts = [nfc(p) for p in norm.split("/") if p]
    for part in parts:
        if not _valid_component(part):
            problem = name_problem(part)
            raise BadName(problem) if problem else BadPath("invalid name")
    if not parts:
        return VPath()
    folder = BY_NAME.get(parts[0])
    if folder is None or folder not in folders:
        raise BadPath("no such folder")
    if len(parts) == 1:
        return VPath(folder)
    if len(parts) == 2:
        if folder is Folder.OUTBOX and _looks_like_ik(parts[1]):
            return VPath(folder, direct_ik=parts[1])
        return VPath(folder, name=parts[1])
    if len(parts) == 3 and folder is Folder.OUTBOX and _looks_like_ik(parts[1]):
        return VPath(folder, direct_ik=parts[1], name=parts[2])
    raise BadPath("no such place")


def _looks_like_ik(part: str) -> bool:
    return len(part) == 9 and part.isascii() and part.isdigit()


TEMP_SUFFIXES = (".filepart", ".part", ".tmp")
# rsync (also onto an sshfs mount): ".NAME.XXXXXX" from mkstemp; lftp with
# xfer:use-temp-file: ".in.NAME" (xfer:temp-file-name ".in.*"; some versions ".in.NAME.").
_TEMP_PATTERNS = re.compile(r"\..+\.[A-Za-z0-9]{6}|\.in\..+", re.DOTALL)


def is_temp_name(name: str) -> bool:
    """Names clients use while uploading, renamed to the final name when complete."""
    return name.lower().endswith(TEMP_SUFFIXES) or _TEMP_PATTERNS.fullmatch(name) is not None
