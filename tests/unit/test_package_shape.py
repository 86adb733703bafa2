"""The package's shape, read from its source (nothing is imported): the domain never
reaches into an edge, each third-party edge library stays in its edge, and a long
module says why it is long."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "qprserver"

# Packages and top-level modules that hold the domain: both channels (SFTP now, the
# web portal next) call them, so they must not know either.
DOMAIN = (
    "accounts",
    "security",
    "audit",
    "exchange",
    "storage",
    "notify",
    "qb",
    "jobs",
    "observability",
    "db",
    "config",
    "errors",
    "clock",
    "ik",
)
EDGES = ("qprserver.sftp", "qprserver.cli", "qprserver.web")
MAX_LINES = 400


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. "qprserver.sftp.session"
    path: Path
    tree: ast.Module
    lines: int

    @property
    def subject(self) -> str:
        """The package or top-level module below ``qprserver`` it belongs to."""
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else ""

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


@cache
def modules() -> tuple[Module, ...]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        found.append(Module(".".join(parts), path, tree, len(text.splitlines())))
    return tuple(found)


def imports(module: Module) -> set[str]:
    """Every module name it imports, anywhere in the file (functions and
    ``TYPE_CHECKING`` blocks too: a dependency is a dependency)."""
    names: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.name.split(".")
                if not module.is_package:
                    package = package[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            # ``from qprserver import sftp`` imports the package qprserver.sftp.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def offenders(rule: str, found: list[str]) -> str:
    return f"{rule}:\n  " + "\n  ".join(found)


def test_the_walk_sees_every_subject_and_the_imports_it_checks() -> None:
    # Guards the guards: a walk that found nothing would pass everything below.
    subjects = {m.subject for m in modules()}
    assert set(DOMAIN) <= subjects, set(DOMAIN) - subjects
    by_name = {m.name: m for m in modules()}
    assert "asyncssh" in imports(by_name["qprserver.sftp.server"])
    assert "click" in imports(by_name["qprserver.cli.app"])
    assert "starlette.applications" in imports(by_name["qprserver.web.app"])
    assert "qprserver.cli.main" in imports(by_name["qprserver.__main__"])


def test_relative_imports_are_resolved_against_the_importing_module() -> None:
    tree = ast.parse("from . import session\nfrom ..cli.app import App\nfrom .. import web\n")
    module = Module("qprserver.exchange.mailbox", PACKAGE / "exchange/mailbox.py", tree, 3)
    assert imports(module) >= {
        "qprserver.exchange.session",
        "qprserver.cli.app",
        "qprserver.web",
    }


def test_domain_packages_never_import_the_sftp_cli_or_web_edges() -> None:
    found = sorted(
        f"{m.name} imports {name}"
        for m in modules()
        if m.subject in DOMAIN
        for name in imports(m)
        if any(within(name, edge) for edge in EDGES)
    )
    assert not found, offenders("the domain reaches into an edge", found)


def test_only_the_sftp_edge_imports_asyncssh() -> None:
    found = sorted(
        f"{m.name} imports {name}"
        for m in modules()
        if m.subject != "sftp"
        for name in imports(m)
        if within(name, "asyncssh")
    )
    assert not found, offenders("asyncssh outside sftp/", found)


def test_only_the_cli_imports_click() -> None:
    found = sorted(
        f"{m.name} imports {name}"
        for m in modules()
        if m.subject != "cli"
        for name in imports(m)
        if within(name, "click")
    )
    assert not found, offenders("click outside cli/", found)


def test_only_the_web_edge_imports_starlette_uvicorn_and_multipart() -> None:
    found = sorted(
        f"{m.name} imports {name}"
        for m in modules()
        if m.subject != "web"
        for name in imports(m)
        if any(within(name, lib) for lib in ("starlette", "uvicorn", "python_multipart"))
    )
    assert not found, offenders("Starlette, uvicorn or python-multipart outside web/", found)


def test_only_the_s3_client_module_imports_aiobotocore_and_botocore() -> None:
    found = sorted(
        f"{m.name} imports {name}"
        for m in modules()
        if m.name != "qprserver.storage.s3client"
        for name in imports(m)
        if within(name, "aiobotocore") or within(name, "botocore")
    )
    assert not found, offenders("aiobotocore outside storage/s3client.py", found)


def test_no_module_is_over_400_lines_unless_its_docstring_says_why() -> None:
    found = sorted(
        f"{m.path.relative_to(PACKAGE.parent)}: {m.lines} lines"
        for m in modules()
        if m.lines > MAX_LINES and "lines" not in (ast.get_docstring(m.tree) or "")
    )
    assert not found, offenders(
        f"over {MAX_LINES} lines: split along a real seam, or say in the module "
        "docstring why its lines belong together",
        found,
    )
