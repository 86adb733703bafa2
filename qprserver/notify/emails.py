"""The mails qprserver writes: one function per template, returning only its context.

Each folder ``templates/email/<name>/`` (``subject.txt``, ``body.txt``, ``body.html``)
has one function here of the same name. It takes the domain objects of the event and
returns an ``Email``: the template's name and a typed context holding exactly what
that template shows. ``render`` is the one place that turns an ``Email`` into subject,
text and HTML; it adds what every template may use (``portal``, ``portal_url``, ``host``, ``port``)
and renders with ``StrictUndefined``, so a key the context lacks is an error rather
than an empty line in somebody's mail.

Only the standard library at import: the account commands of the CLI use these
functions without loading Jinja2, which comes in with the first ``render``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

if TYPE_CHECKING:
    import jinja2

    from qprserver.config import MailSettings
    from qprserver.db.models import Account, UploadProtocol

TEMPLATES = Path(__file__).parent.parent / "templates" / "email"


@dataclass(frozen=True, slots=True)
class Email:
    """A template folder's name and the context it is rendered with."""

    template: str
    context: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class Rendered:
    """An email as its reader sees it: one-line subject, text body, HTML body."""

    subject: str
    text: str
    html: str


class Common(TypedDict):
    """What ``render`` adds to every context, from the mail settings."""

    portal: str
    portal_url: str
    host: str
    port: int


class AccountCreated(TypedDict):
    ik: str
    name: str
    roles: str


class AccountDisabled(TypedDict):
    ik: str
    name: str


class KeyAdded(TypedDict):
    ik: str
    name: str
    fingerprint: str
    algorithm: str


class UploadReceipt(TypedDict):
    name: str
    depositor_name: str
    depositor_ik: str
    received_at: str
    size: int
    sha256: str


class Finding(TypedDict):
    """One line of the result mail's reasons or notes."""

    rule: str
    klass: str
    message: str
    location: str
    instruction: str


class ReportFinding(Protocol):
    """A finding of a quality report's check (``qb.protocol.Finding``), as the mail reads it."""

    @property
    def rule(self) -> str: ...
    @property
    def klass(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def where(self) -> str: ...
    @property
    def instruction(self) -> str: ...


class UploadResult(TypedDict):
    name: str
    protocol: str
    accepted: bool
    # The check itself could not run: not accepted, but not the report's fault.
    unavailable: bool
    document_id: int | None
    version: int | None
    sha256: str
    recipients: int
    findings: list[Finding]


class KindCount(TypedDict):
    label: str
    count: int


class Digest(TypedDict):
    recipient_name: str
    recipient_ik: str
    total: int
    kinds: list[KindCount]
    first_names: list[str]
    more: int


class BundleReady(TypedDict):
    recipient_name: str
    recipient_ik: str
    bundle_name: str
    count: int
    size: int
    sha256: str


class SendTest(TypedDict):
    relay: str


def account_created(account: Account) -> Email:
    """An account was set up: how to log in."""
    context: AccountCreated = {
        "ik": account.ik,
        "name": account.name,
        "roles": ", ".join(sorted(account.role_set)),
    }
    return Email("account_created", context)


def account_disabled(account: Account) -> Email:
    """An account was disabled: logging in is no longer possible."""
    context: AccountDisabled = {"ik": account.ik, "name": account.name}
    return Email("account_disabled", context)


def key_added(account: Account, fingerprint: str, algorithm: str) -> Email:
    """A new SSH key was attached to an account: a warning if nobody meant it."""
    context: KeyAdded = {
        "ik": account.ik,
        "name": account.name,
        "fingerprint": fingerprint,
        "algorithm": algorithm,
    }
    return Email("key_added", context)


def upload_receipt(
    protocol: UploadProtocol, depositor: Account, *, received_at: datetime, size: int, sha256: str
) -> Email:
    """The Eingangsbestätigung of an upload, accepted or not; sha256 empty when not stored."""
    context: UploadReceipt = {
        "name": protocol.upload_name,
        "depositor_name": depositor.name,
        "depositor_ik": depositor.ik,
        "received_at": received_at.isoformat(timespec="seconds"),
        "size": size,
        "sha256": sha256 or "(nicht gespeichert)",
    }
    return Email("upload_receipt", context)


def finding(message: str) -> Finding:
    """A reason that is no rule of a report check, such as a refused name or size."""
    return {"rule": "", "klass": "", "message": message, "location": "", "instruction": ""}


def report_findings(findings: Iterable[ReportFinding]) -> list[Finding]:
    """The findings of a quality report's check, each with its rule, class and place."""
    return [
        {
            "rule": f.rule,
            "klass": f.klass,
            "message": f.message,
            "location": f.where,
            "instruction": f.instruction,
        }
        for f in findings
    ]


def upload_result(
    protocol: UploadProtocol,
    *,
    findings: Sequence[Finding],
    document_id: int | None = None,
    version: int | None = None,
    sha256: str = "",
    recipients: int = 0,
    unavailable: bool = False,
) -> Email:
    """The outcome of an upload: accepted when it became a document (``document_id``)."""
    context: UploadResult = {
        "name": protocol.upload_name,
        "protocol": protocol.file_name,
        "accepted": document_id is not None,
        "unavailable": unavailable,
        "document_id": document_id,
        "version": version,
        "sha256": sha256,
        "recipients": recipients,
        "findings": list(findings),
    }
    return Email("upload_result", context)


def digest(
    recipient: Account, kinds: Sequence[tuple[str, int]], names: Sequence[str], *, first: int
) -> Email:
    """New deliveries of one recipient, in one mail: (label, count) per kind and the
    first ``first`` of their names, in delivery order."""
    context: Digest = {
        "recipient_name": recipient.name,
        "recipient_ik": recipient.ik,
        "total": len(names),
        "kinds": [{"label": label, "count": n} for label, n in kinds],
        "first_names": list(names[:first]),
        "more": max(0, len(names) - first),
    }
    return Email("digest", context)


def bundle_ready(recipient: Account, name: str, *, count: int, size: int, sha256: str) -> Email:
    """A bundle is waiting in the recipient's /bundles."""
    context: BundleReady = {
        "recipient_name": recipient.name,
        "recipient_ik": recipient.ik,
        "bundle_name": name,
        "count": count,
        "size": size,
        "sha256": sha256,
    }
    return Email("bundle_ready", context)


def send_test(relay: str) -> Email:
    """The operator's test of the SMTP settings (``mail send-test``), sent past the outbox."""
    context: SendTest = {"relay": relay}
    return Email("send_test", context)


def common(settings: MailSettings) -> Common:
    return {
        "portal": settings.portal_name,
        "portal_url": settings.portal_url,
        "host": settings.collect_host,
        "port": settings.collect_port,
    }


def render(email: Email, settings: MailSettings) -> Rendered:
    """Subject (on one line), text body and HTML body of an email."""
    env = _environment()
    context: dict[str, Any] = {**common(settings), **email.context}
    subject = env.get_template(f"{email.template}/subject.txt").render(context)
    text = env.get_template(f"{email.template}/body.txt").render(context)
    html = env.get_template(f"{email.template}/body.html").render(context)
    return Rendered(" ".join(subject.split()), text, html)


@cache
def _environment() -> jinja2.Environment:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        # Only the HTML bodies escape; subjects and text bodies are plain text.
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        # The templates ship with the package: compiled once, not looked at on disk
        # again for every mail (three ``stat`` calls per mail, two mails per upload).
        auto_reload=False,
    )
