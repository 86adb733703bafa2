"""Acceptance checks of hospital quality reports (Qb-R): XML schema, plausibility rules,
protocols and delivery windows. See ``engine`` for the order of the checks.
"""

from __future__ import annotations

from qprserver.qb.engine import QbResult, check_report, result_of, validate_upload
from qprserver.qb.protocol import Finding, Protocol
from qprserver.qb.windows import open_windows, windows_message, windows_open

__all__ = [
    "Finding",
    "Protocol",
    "QbResult",
    "check_report",
    "open_windows",
    "result_of",
    "validate_upload",
    "windows_message",
    "windows_open",
]
