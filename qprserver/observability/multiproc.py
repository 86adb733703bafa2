"""The folder where worker processes leave their metric values (multiprocess mode).

prometheus-client picks how it stores values when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``; so ``serve`` names the run's folder here, before any
process imports ``metrics`` (this module must not import prometheus-client), and
the worker processes inherit it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare() -> Path:
    """A fresh, empty folder for this run's values, named for this process and its
    workers: values of an earlier run never add to this one's."""
    folder = Path(tempfile.mkdtemp(prefix="qprserver-metrics-"))
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def remove(folder: Path) -> None:
    """Remove the run's folder at the end of ``serve``."""
    os.environ.pop(MULTIPROC_ENV, None)
    shutil.rmtree(folder, ignore_errors=True)
