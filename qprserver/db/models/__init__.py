"""The database tables, by subject; one declarative base (``db.base``), one metadata.

Importing this package registers every table, which the migrations and ``db check`` rely on.
"""

from qprserver.db.models.accounts import (
    PROCEDURES,
    ROLES,
    STATUSES,
    Account,
    AuthScore,
    IPNetwork,
    LoginSession,
    NetworkList,
    Node,
    PasswordCredential,
    ProcedureList,
    RecoveryCode,
    RoleList,
    SSHKey,
)
from qprserver.db.models.exchange import (
    FOLDERS,
    Bundle,
    Delivery,
    DepositorUsage,
    Document,
    DownloadCoverage,
    DownloadReceipt,
    Outcome,
    PartialUpload,
    Route,
    UploadProtocol,
)
from qprserver.db.models.operations import (
    MAIL_STATUSES,
    AuditEvent,
    JobRun,
    MailMessage,
)
from qprserver.db.models.qb import QbC1Delivery, QbPositiveListEntry, QbRegistration
from qprserver.db.models.registrations import (
    REGISTRATION_STATES,
    OneTimeToken,
    Registration,
)
from qprserver.db.models.web import WebSession, WebStage

__all__ = [
    "FOLDERS",
    "MAIL_STATUSES",
    "PROCEDURES",
    "REGISTRATION_STATES",
    "ROLES",
    "STATUSES",
    "Account",
    "AuditEvent",
    "AuthScore",
    "Bundle",
    "Delivery",
    "DepositorUsage",
    "Document",
    "DownloadCoverage",
    "DownloadReceipt",
    "IPNetwork",
    "JobRun",
    "LoginSession",
    "MailMessage",
    "NetworkList",
    "Node",
    "OneTimeToken",
    "Outcome",
    "PartialUpload",
    "PasswordCredential",
    "ProcedureList",
    "QbC1Delivery",
    "QbPositiveListEntry",
    "QbRegistration",
    "RecoveryCode",
    "Registration",
    "RoleList",
    "Route",
    "SSHKey",
    "UploadProtocol",
    "WebSession",
    "WebStage",
]
