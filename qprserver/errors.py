"""The one error hierarchy of qprserver.

Domain code raises these; each edge (SFTP, CLI) translates them exactly once.
Messages are meant for operators and users: one line, specific, no internals.
"""

from __future__ import annotations


class QprError(Exception):
    """Base of every error the domain raises on purpose."""


class ConfigError(QprError):
    """The configuration file is missing, unreadable or invalid."""


class InvalidInput(QprError):
    """A value given by a user or operator is malformed."""


class InvalidIK(InvalidInput):
    """A string is not a valid Institutionskennzeichen."""


class InvalidKey(InvalidInput):
    """An SSH public key is malformed, of a refused type or too weak."""


class NotFound(QprError):
    """The thing asked for does not exist (or is not visible to the actor)."""


class AlreadyExists(QprError):
    """A thing with the same identity exists already."""


class TooManyRequests(QprError):
    """One source asked too often in a short time; it may try again later."""


class PermissionDenied(QprError):
    """The acting account may not do this."""


class Rejected(QprError):
    """An upload was refused; the reason is meant for its sender."""


class QuotaExceeded(Rejected):
    """An upload would exceed a size limit or the depositor's quota."""


class AuditChainBroken(QprError):
    """The audit log's hash chain does not verify."""


class DatabaseNotReady(QprError):
    """The database schema is missing or not at the expected revision."""


class StartupError(QprError):
    """The server cannot start, e.g. because its port is taken."""
