"""The one config reader: a TOML file validated into typed settings.

Unknown keys and wrong types stop start-up with one line naming the key.
Relative paths resolve against the folder of the config file. This is also the
only module that reads environment variables (``QPRSERVER_CONFIG``, and systemd's
``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``JOURNAL_STREAM`` in ``service_environment``).

Its nearly 600 lines are one model per section of the file, each setting declared once
with its default and its check, and the reader that validates them together: a
setting's declaration, its cross-checks (schedules, zones, paths) and the loader that
names an unknown key belong in one place.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from qprserver.errors import ConfigError

CONFIG_ENV = "QPRSERVER_CONFIG"

# Safe choices per BSI TR-02102-4: AES-GCM and AES-CTR with SHA-2 MACs. chacha20-poly1305
# is left out by default because asyncssh composes it in Python at twice the CPU cost.
DEFAULT_CIPHERS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]
# Encrypt-then-MAC first. The plain (encrypt-and-MAC) SHA-2 MACs stay, last, for libssh2
# before 1.11 (curl and PHP on Debian 12, RHEL 9), which has neither ETM nor AES-GCM;
# with AES-CTR and HMAC-SHA-2 they are still in BSI TR-02102-4.
DEFAULT_MACS = [
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
]
# Post-quantum hybrids first (ML-KEM from cryptography's OpenSSL; OpenSSH >= 9.9 and
# recent paramiko pick mlkem768x25519-sha256); then the classical ones.
# sntrup761x25519-sha512 needs liboqs and is therefore not in the default.
DEFAULT_KEX = [
    "mlkem768x25519-sha256",
    "mlkem768nistp256-sha256",
    "mlkem1024nistp384-sha384",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
]
# Host key signatures without SHA-1: no ssh-rsa, none of the ssh.com RSA variants.
DEFAULT_HOST_KEY_ALGS = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
]
# Signature algorithms announced for clients' keys (server-sig-algs): the key types
# sshkeys.py accepts, RSA only with SHA-2.
DEFAULT_SIGNATURE_ALGS = [
    "ssh-ed25519",
    "sk-ssh-ed25519@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
]


# Paths are written as TOML strings; strict mode would only accept Path objects.
FilePath = Annotated[Path, Strict(False)]
# Dates may be TOML dates (2020-10-15) or ISO strings ("2020-10-15").
IsoDate = Annotated[date, Strict(False)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ServerSettings(_Section):
    """The SFTP listener."""

    host: str = "127.0.0.1"
    port: int = Field(default=2222, ge=0, le=65535)
    host_keys: list[FilePath] = Field(default_factory=lambda: [Path("keys/ssh_host_ed25519_key")])
    login_timeout: float = Field(default=60.0, gt=0)
    idle_timeout: float = Field(default=900.0, gt=0)
    shutdown_grace: float = Field(default=30.0, ge=0)
    workers: int = Field(default=1, ge=1, le=64)
    # This node's name among nodes sharing a data folder: its spool folder is
    # ``<data_dir>/spool/<node_id>/``. Empty: the host's name up to the first dot.
    node_id: str = Field(default="", validate_default=True)
    ciphers: list[str] = Field(default_factory=lambda: list(DEFAULT_CIPHERS))
    macs: list[str] = Field(default_factory=lambda: list(DEFAULT_MACS))
    kex: list[str] = Field(default_factory=lambda: list(DEFAULT_KEX))
    host_key_algs: list[str] = Field(default_factory=lambda: list(DEFAULT_HOST_KEY_ALGS))
    signature_algs: list[str] = Field(default_factory=lambda: list(DEFAULT_SIGNATURE_ALGS))
    compression: list[str] = Field(default_factory=lambda: ["none"])

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        from qprserver.storage.spool import check_node_id, default_node_id

        return check_node_id(value or default_node_id())

    @field_validator("ciphers", "macs", "kex", "host_key_algs", "signature_algs", "compression")
    @classmethod
    def _not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one algorithm")
        return value


class StorageSettings(_Section):
    """Where documents live on disk and how much a depositor may send."""

    data_dir: FilePath = Path("var/data")
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, gt=0)
    depositor_quota_bytes: int = Field(default=50 * 1024 * 1024 * 1024, gt=0)
    orphan_grace: float = Field(default=3600.0, ge=0)
    # Seconds an upload cut off by a dropped connection stays resumable for its depositor.
    partial_keep: float = Field(default=24 * 60 * 60.0, gt=0)
    # Where blobs live: "local" (files under data_dir) or "s3" (an S3-compatible bucket;
    # uploads in progress still spool under data_dir). The keys below are for "s3".
    backend: Literal["local", "s3"] = "local"
    endpoint: str = ""
    bucket: str = ""
    region: str = "us-east-1"
    prefix: str = ""
    # A TOML file with access_key_id and secret_access_key; "" = the environment
    # (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
    credentials_file: FilePath | None = None

    @field_validator("endpoint")
    @classmethod
    def _http_endpoint(cls, value: str) -> str:
        if value and not re.fullmatch(r"https?://[^/\s]+/?", value):
            raise ValueError("must be http(s)://host[:port]")
        return value

    @field_validator("prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9._-]+)*/", value):
            raise ValueError("must be folder names ending in '/', e.g. \"qpr/\"")
        return value

    @field_validator("credentials_file", mode="before")
    @classmethod
    def _empty_is_environment(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _s3_complete(self) -> StorageSettings:
        if self.backend == "s3" and not (self.endpoint and self.bucket):
            raise ValueError('backend = "s3" needs endpoint and bucket')
        return self


class DatabaseSettings(_Section):
    """The SQLAlchemy URL; SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

    url: str = "sqlite+aiosqlite:///var/qprserver.db"
    schema_name: str = Field(default="", alias="schema")
    echo: bool = False
    write_wait: float = Field(default=600.0, gt=0)

    @field_validator("url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            raise ValueError("must start with sqlite+aiosqlite:// or postgresql+asyncpg://")
        return value

    @field_validator("schema_name")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
            raise ValueError("must be a plain lower-case identifier")
        return value


class MailSettings(_Section):
    """Outgoing mail: the SMTP relay, retries, digests, and what mails tell users."""

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=8025, ge=1, le=65535)
    security: str = "none"
    username: str = ""
    password: str = Field(default="", repr=False)
    timeout: float = Field(default=30.0, gt=0)
    sender: str = "qpr-portal@example.org"
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base: float = Field(default=60.0, gt=0)
    digest_interval: int = Field(default=900, ge=60)
    collect_host: str = "sftp.example.org"
    collect_port: int = Field(default=2222, ge=1, le=65535)
    portal_name: str = "QPR-Portal"
    # Address of the web portal as participants reach it: the base of every link in a mail.
    portal_url: str = "https://localhost:8443"

    @field_validator("portal_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
            raise ValueError(
                "must be an http(s) URL without query, e.g. https://portal.example.org"
            )
        return value.rstrip("/")

    @field_validator("security")
    @classmethod
    def _known_security(cls, value: str) -> str:
        if value not in {"none", "starttls", "tls"}:
            raise ValueError("must be one of none, starttls, tls")
        return value


def check_zone(value: str) -> str:
    """An IANA time zone name, or ValueError."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_schedule(text: str) -> tuple[str | None, int, int]:
    """``"mon 02:00"`` → ("mon", 2, 0); ``"03:30"`` → (None, 3, 30) for every day."""
    parts = text.split()
    day = parts[0].lower() if len(parts) == 2 else None
    clock = parts[-1]
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", clock)
    if len(parts) not in (1, 2) or match is None or (day is not None and day not in _WEEKDAYS):
        raise ValueError(f"{text!r} is no schedule; use 'HH:MM' or 'mon HH:MM'")
    return day, int(match.group(1)), int(match.group(2))


class JobsSettings(_Section):
    """The scheduler inside ``serve``: when jobs run and what they keep."""

    timezone: str = "Europe/Berlin"
    bundles: str = "mon 02:00"
    retention: str = "03:30"
    send_interval: int = Field(default=60, ge=5)
    sweep_interval: int = Field(default=3600, ge=60)
    checkpoint_interval: int = Field(default=300, ge=10)
    lease: int = Field(default=600, ge=10)
    archive_days: int = Field(default=42, ge=1)
    inbox_days: int = Field(default=42, ge=1)
    bundle_days: int = Field(default=42, ge=1)
    final_bundle_kind: str = "qualitaetsbericht"

    @field_validator("bundles", "retention")
    @classmethod
    def _schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)


class RegistrationSettings(_Section):
    """Self-registration: how long its links and letters hold, and its limits."""

    confirm_hours: int = Field(default=72, ge=1)
    password_hours: int = Field(default=72, ge=1)
    reset_hours: int = Field(default=2, ge=1)
    purge_days: int = Field(default=14, ge=1)
    reminder_days: int = Field(default=7, ge=1)
    postal_activation: bool = True
    letter_days: int = Field(default=30, ge=1)
    per_address_hour: int = Field(default=20, ge=1)
    sender_address: list[str] = Field(
        default_factory=lambda: ["QPR-Portal", "Musterstraße 1", "12345 Musterstadt"]
    )


class SecuritySettings(_Section):
    """Second factor, brute-force defence and per-session limits."""

    totp_key: FilePath = Path("keys/totp.key")
    audit_key: FilePath = Path("keys/audit.key")
    audit_checkpoint: FilePath = Path("var/audit-checkpoint.json")
    require_2fa_roles: list[str] = Field(default_factory=list)
    totp_issuer: str = "QPR-Portal"
    ban_threshold: int = Field(default=10, ge=1)
    ban_window: int = Field(default=600, ge=1)
    ban_time: int = Field(default=900, ge=1)
    ban_max_time: int = Field(default=86400, ge=1)
    allowlist: list[str] = Field(default_factory=list)
    max_auth_attempts: int = Field(default=6, ge=1)
    max_unauthenticated_per_address: int = Field(default=10, ge=1)
    max_handles_per_session: int = Field(default=64, ge=1)
    max_write_buffer: int = Field(default=2 * 1024 * 1024, ge=65536)

    @field_validator("require_2fa_roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"depositor", "recipient", "admin"}
        if unknown:
            raise ValueError(f"unknown role(s) {', '.join(sorted(unknown))}")
        return value

    @field_validator("allowlist")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is no IP network") from None
        return value


class LoggingSettings(_Section):
    """What ``serve`` logs and how: JSON lines for a collector, text for a terminal."""

    # "auto": JSON unless stderr is a terminal.
    format: str = "auto"
    level: str = "info"

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in {"auto", "json", "text"}:
            raise ValueError("must be one of auto, json, text")
        return value

    @field_validator("level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value


class MetricsSettings(_Section):
    """The operations listener: Prometheus ``/metrics``, ``/healthz`` and ``/readyz``."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)


class WebSettings(_Section):
    """The web portal (QPR_0_WEB): its own listener, HTTPS or plain HTTP behind a proxy."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    # Empty: plain HTTP, allowed only on a loopback address behind ``trusted_proxies``.
    tls_cert: FilePath | None = None
    tls_key: FilePath | None = None
    trusted_proxies: list[str] = Field(default_factory=list)
    session_idle: float = Field(default=15 * 60.0, gt=0)
    session_max: float = Field(default=8 * 60 * 60.0, gt=0)
    page_size: int = Field(default=50, ge=5, le=500)

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("trusted_proxies")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for net in value:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is no IP address or network") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self


class KindSettings(_Section):
    """A document kind: which file names it matches and what content it must have."""

    pattern: str
    content: str = "any"
    description: str = ""

    @field_validator("pattern")
    @classmethod
    def _compiles_with_ik(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "ik" not in compiled.groupindex:
            raise ValueError("needs a named group (?P<ik>...) for the subject IK")
        return value

    @field_validator("content")
    @classmethod
    def _known_content(cls, value: str) -> str:
        if value not in {"any", "pdf", "xml", "zip"}:
            raise ValueError("must be one of any, pdf, xml, zip")
        return value


# The two standard kinds (DESIGN §4): they apply when the config has no [kinds] section,
# so a minimal config routes Prüfberichte and quality reports. A [kinds] section
# replaces them as a whole (the example config lists both, to copy from).
STANDARD_KINDS: dict[str, KindSettings] = {
    "pruefbericht": KindSettings(
        pattern=r"^(?P<ik>\d{9})_[^/]+\.pdf$",
        content="pdf",
        description="Prüfbericht nach § 115 Abs. 1 SGB XI",
    ),
    "qualitaetsbericht": KindSettings(
        pattern=r"^(?P<ik>\d{9})-(?P<standort>\d{2,6})-(?P<jahr>\d{4})-xml\.xml$",
        content="xml",
        description="Strukturierter Qualitätsbericht der Krankenhäuser",
    ),
    "qb_c1": KindSettings(
        pattern=r"^(?P<ik>\d{9})-(?P<standort>\d{2})-(?P<jahr>\d{4})-(?P<teil>Land|bund)\.xml$",
        content="xml",
        description="Teil C-1 des Qualitätsberichts (QS-Stellen Land und Bund)",
    ),
}


class DateRange(_Section):
    """A span of calendar days, both ends included."""

    start: IsoDate
    end: IsoDate

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError("end lies before start")
        return self


class QbYear(_Section):
    """The deadline windows of one report year; a window left out gets the Qb-R's dates
    (``qb/calendar.py``), and every other date of the year is computed from them; the
    correction phase's length (at most four weeks, Qb-R Anlage 2 Nr. 5) and the XML
    schema of part C-1 (none: the safe parse only)."""

    hospital: DateRange | None = None
    c1: DateRange | None = None
    replacement: DateRange | None = None
    correction_days: int = Field(default=28, ge=1, le=28)
    c1_schema: FilePath | None = None


class QbSettings(_Section):
    """Acceptance checks of hospital quality reports (Qb-R): schemas, rules, windows."""

    schemas: dict[str, FilePath] = Field(default_factory=dict)
    rules: dict[str, FilePath] = Field(default_factory=dict)
    years: dict[str, QbYear] = Field(default_factory=dict)
    timezone: str = "Europe/Berlin"
    max_xml_bytes: int = Field(default=50 * 1024 * 1024, gt=0)

    @field_validator("schemas", "rules", "years")
    @classmethod
    def _years(cls, value: dict[str, Any]) -> dict[str, Any]:
        for year in value:
            if not re.fullmatch(r"(19|20)\d\d", year):
                raise ValueError(f"{year!r} is no report year (YYYY)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return check_zone(value)


class Settings(_Section):
    """All settings of one qprserver instance."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    registration: RegistrationSettings = Field(default_factory=RegistrationSettings)
    kinds: dict[str, KindSettings] = Field(default_factory=lambda: dict(STANDARD_KINDS))
    qb: QbSettings = Field(default_factory=QbSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    web: WebSettings = Field(default_factory=WebSettings)
    config_path: Path | None = Field(default=None, exclude=True)

    @field_validator("kinds")
    @classmethod
    def _kind_names(cls, value: dict[str, KindSettings]) -> dict[str, KindSettings]:
        for name in value:
            if not re.fullmatch(r"[a-z][a-z0-9_]{0,39}", name):
                raise ValueError(f"kind name {name!r} must be lower-case letters, digits, _")
        return value

    @model_validator(mode="after")
    def _own_metrics_port(self) -> Settings:
        metrics = self.metrics
        if metrics.enabled and metrics.port and metrics.port == self.server.port:
            raise ValueError("metrics.port must differ from server.port")
        if metrics.enabled and self.web.enabled and metrics.port and metrics.port == self.web.port:
            raise ValueError("metrics.port must differ from web.port")
        return self


@dataclass(frozen=True, slots=True)
class ServiceEnvironment:
    """What a service manager tells the process through its environment."""

    # systemd's notification socket (``Type=notify``); empty when not run so.
    notify_socket: str = ""
    # The watchdog interval in microseconds (``WatchdogSec=``); 0: no watchdog.
    watchdog_usec: int = 0
    # ``device:inode`` of stderr when it is connected to journald.
    journal_stream: str = ""


def service_environment() -> ServiceEnvironment:
    """The service manager's settings of this process (systemd's variables)."""
    pid = os.environ.get("WATCHDOG_PID", "")
    usec = os.environ.get("WATCHDOG_USEC", "")
    watchdog = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else 0
    return ServiceEnvironment(
        notify_socket=os.environ.get("NOTIFY_SOCKET", ""),
        watchdog_usec=watchdog,
        journal_stream=os.environ.get("JOURNAL_STREAM", ""),
    )


def config_path_from(explicit: str | os.PathLike[str] | None) -> Path:
    """The config file to use: the explicit one, else ``$QPRSERVER_CONFIG``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env)
    raise ConfigError(f"no config file: pass --config PATH or set {CONFIG_ENV}")


def _format_error(path: Path, exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(part) for part in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more)" if more else ""
    return f"{path}: {loc}: {msg}{suffix}"


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else (base / p).resolve()


def _resolve_sqlite_url(base: Path, url: str) -> str:
    prefix = "sqlite+aiosqlite:///"
    if not url.startswith(prefix):
        return url
    rest = url[len(prefix) :]
    if rest in ("", ":memory:") or rest.startswith("/"):
        return url
    path_part, sep, query = rest.partition("?")
    return prefix + str((base / path_part).resolve()) + sep + query


# Settings that were replaced, with what the operator writes instead.
_REPLACED = {
    ("qb", "windows"): (
        "replaced by [qb.years.<Y>] with hospital, c1 and "
        "replacement = { start = ..., end = ... } (main is now hospital; a year left out "
        "gets the Qb-R's dates)"
    ),
    ("jobs", "final_bundle_after"): (
        "replaced by [qb.years.<Y>]: the final bundle of a "
        "report year is built after its replacement window (qb.years.<Y>.replacement.end)"
    ),
}


def _replaced_settings(data: dict[str, Any], path: Path) -> None:
    for (section, key), instead in _REPLACED.items():
        table = data.get(section)
        if isinstance(table, dict) and key in table:
            raise ConfigError(f"{path}: {section}.{key}: {instead}")


def parse_config(data: dict[str, Any], path: Path) -> Settings:
    """Validate raw TOML data read from ``path`` into settings with resolved paths."""
    _replaced_settings(data, path)
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(path, exc)) from None
    base = path.resolve().parent
    server = settings.server.model_copy(
        update={"host_keys": [_resolve(base, p) for p in settings.server.host_keys]}
    )
    credentials = settings.storage.credentials_file
    storage = settings.storage.model_copy(
        update={
            "data_dir": _resolve(base, settings.storage.data_dir),
            "credentials_file": None if credentials is None else _resolve(base, credentials),
        }
    )
    database = settings.database.model_copy(
        update={"url": _resolve_sqlite_url(base, settings.database.url)}
    )
    security = settings.security.model_copy(
        update={
            "totp_key": _resolve(base, settings.security.totp_key),
            "audit_key": _resolve(base, settings.security.audit_key),
            "audit_checkpoint": _resolve(base, settings.security.audit_checkpoint),
        }
    )
    # A configured schema or rules file may be missing at start-up (the operator adds
    # the year's G-BA file later); the check that needs it reports it.
    qb = settings.qb.model_copy(
        update={
            "schemas": {y: _resolve(base, p) for y, p in settings.qb.schemas.items()},
            "rules": {y: _resolve(base, p) for y, p in settings.qb.rules.items()},
            "years": {
                y: c.model_copy(
                    update={"c1_schema": _resolve(base, c.c1_schema) if c.c1_schema else None}
                )
                for y, c in settings.qb.years.items()
            },
        }
    )
    web = settings.web.model_copy(
        update={
            "tls_cert": _resolve(base, settings.web.tls_cert) if settings.web.tls_cert else None,
            "tls_key": _resolve(base, settings.web.tls_key) if settings.web.tls_key else None,
        }
    )
    return settings.model_copy(
        update={
            "qb": qb,
            "web": web,
            "security": security,
            "server": server,
            "storage": storage,
            "database": database,
            "config_path": path.resolve(),
        }
    )


@dataclasses.dataclass(frozen=True)
class S3Credentials:
    """The key pair of the S3 bucket; the secret never shows in a repr or a log."""

    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)


def s3_credentials(storage: StorageSettings) -> S3Credentials:
    """The bucket's key pair from ``credentials_file``, else from the environment."""
    source = storage.credentials_file
    if source is None:
        key = os.environ.get("AWS_ACCESS_KEY_ID", "")
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        if not (key and secret):
            raise ConfigError(
                "storage.credentials_file is empty and AWS_ACCESS_KEY_ID or "
                "AWS_SECRET_ACCESS_KEY is not set"
            )
        return S3Credentials(key, secret)
    try:
        data = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read S3 credentials: {exc.strerror}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise ConfigError(f"{source}: S3 credentials are not valid TOML") from None
    found_key, found_secret = data.get("access_key_id"), data.get("secret_access_key")
    if not (isinstance(found_key, str) and found_key and isinstance(found_secret, str)):
        raise ConfigError(f"{source}: needs access_key_id and secret_access_key (strings)")
    if not found_secret:
        raise ConfigError(f"{source}: secret_access_key is empty")
    return S3Credentials(found_key, found_secret)


def load_config(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the config file; raise ConfigError with one line on any problem."""
    path = config_path_from(explicit)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: config file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(data, path)


def setting_keys(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Every dotted setting key, for documentation checks."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        if field.exclude:
            continue
        key = prefix + (field.alias or name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys.extend(setting_keys(annotation, key + "."))
        elif name == "kinds":
            keys.extend(setting_keys(KindSettings, key + ".*."))
        else:
            keys.append(key)
    return keys
