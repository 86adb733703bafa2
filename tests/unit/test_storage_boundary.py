"""Only ``qprserver/storage/`` knows that blobs are files: everything else goes through
the ``BlobStore`` Protocol, so another backend can take the local one's place."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "qprserver"
STORAGE = PACKAGE / "storage"

# Methods of the local backend (or of its old shape) that hand out or take file paths.
PATH_ATTRIBUTES = {"path_for", "temp_path", "new_temp_path", "adopt", "statvfs", "spool"}
# Folders of the data folder's layout; joining one onto a path builds a blob or spool path.
LAYOUT_FOLDERS = {"blobs", "spool", "tmp"}
# Who may name a backend: the composition root, ``init`` (creates the folders), and the
# config (checks a node id with the spool's rule).
BACKEND_MODULES = {"qprserver.storage.local", "qprserver.storage.spool", "qprserver.storage.files"}
MAY_NAME_BACKENDS = {"service.py", "cli/admin.py", "config.py"}


def _modules_outside_storage() -> list[Path]:
    return [p for p in sorted(PACKAGE.rglob("*.py")) if STORAGE not in p.parents]


def _problems(source: str, where: str) -> list[str]:
    """What in one module's source (where: its path in the package) crosses the boundary."""
    tree = ast.parse(source, where)
    found = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Attribute) and node.attr in PATH_ATTRIBUTES:
            found.append(f"{line}: .{node.attr}")
        if (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Div)
            and any(
                isinstance(side, ast.Constant) and side.value in LAYOUT_FOLDERS
                for side in (node.left, node.right)
            )
        ):
            found.append(f"{line}: a path into the data folder's layout")
        if (
            isinstance(node, ast.ImportFrom)
            and node.module in BACKEND_MODULES
            and where not in MAY_NAME_BACKENDS
        ):
            found.append(f"{line}: imports {node.module}")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in BACKEND_MODULES and where not in MAY_NAME_BACKENDS:
                    found.append(f"{line}: imports {alias.name}")
    return found


def test_no_module_outside_storage_builds_or_uses_a_blob_path() -> None:
    problems = [
        problem
        for path in _modules_outside_storage()
        for problem in _problems(
            path.read_text(encoding="utf-8"), path.relative_to(PACKAGE).as_posix()
        )
    ]
    assert problems == []


def test_the_boundary_check_finds_each_kind_of_crossing() -> None:
    source = (
        "import qprserver.storage.spool\n"
        "from qprserver.storage.local import FileBlobStore\n"
        "def f(store, root, writer):\n"
        "    return store.path_for('x'), root / 'blobs', writer.temp_path\n"
    )
    assert len(_problems(source, "exchange/sample.py")) == 5
    # The composition root may build the local backend, and nothing else there counts.
    assert _problems("from qprserver.storage.local import FileBlobStore\n", "service.py") == []
