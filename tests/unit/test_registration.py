"""The registration lifecycle (``accounts/registration.py``, ``accounts/review.py``) on a
real database: every transition, its mail, and each bad input changing nothing."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts import access, activation, recovery, registration, review
from qprserver.accounts.enums import AccountStatus, Channel, Procedure, RegistrationState
from qprserver.accounts.registration import RegistrationForm
from qprserver.accounts.sessions import NodeLease
from qprserver.audit.chain import Actor
from qprserver.clock import FixedClock
from qprserver.config import MailSettings, RegistrationSettings, SecuritySettings
from qprserver.db.engine import Database, Reads
from qprserver.db.models import Account, MailMessage, Registration, SSHKey
from qprserver.errors import InvalidIK, InvalidInput, InvalidKey, TooManyRequests
from qprserver.notify.outbox import Notifier
from qprserver.security import totp
from tests.registrations import PFLEGEKASSE_NW

NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
MAIL = Notifier(MailSettings(portal_url="https://portal.example.org"))
SETTINGS = RegistrationSettings()
OPERATOR = Actor("cli", "test")
ADDRESS = "198.51.100.4"
KEY = Fernet(Fernet.generate_key())
# A Pflegekasse (class 18) in NW, and a hospital (class 26).
FORM = PFLEGEKASSE_NW
ED25519 = (
    Ed25519PrivateKey.generate()
    .public_key()
    .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    .decode()
    + " muster"
)


async def _register(db: Database, form: RegistrationForm = FORM, address: str = ADDRESS) -> None:
    async with db.session() as session:
        await registration.register(
            session, NOW, form, address=address, settings=SETTINGS, notifier=MAIL
        )


async def _mails(db: Database, template: str) -> list[MailMessage]:
    async with db.read_session() as session:
        query = select(MailMessage).where(MailMessage.template == template)
        return list((await session.scalars(query.order_by(MailMessage.id))).all())


def _token(mail: MailMessage, path: str) -> str:
    match = re.search(
        re.escape("https://portal.example.org" + path) + r"([A-Za-z0-9_-]+)", mail.body_text
    )
    assert match, mail.body_text
    return match.group(1)


async def _count(db: Database, model: type[Registration] | type[Account]) -> int:
    async with db.read_session() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def _applied(db: Database, form: RegistrationForm = FORM) -> tuple[int, str]:
    """Register, confirm, set a password, enrol TOTP and apply; the registration id and
    the TOTP secret."""
    await _register(db, form)
    confirm = _token((await _mails(db, "registration_confirm"))[-1], "/registrierung/bestaetigen/")
    async with db.session() as session:
        password_token = await registration.confirm(
            session, NOW, confirm, settings=SETTINGS, notifier=MAIL
        )
    async with db.session() as session:
        account = await registration.set_first_password(
            session, NOW, password_token, "ein langes Passwort 1"
        )
        enrolment = await totp.enable(session, OPERATOR, NOW, account.ik, KEY, "QPR")
        await registration.apply(session, NOW, account.id, MAIL)
        reg = await registration.open_registration(session, account.id)
    secret = pyotp.parse_uri(enrolment.uri).secret
    return reg.id, secret


async def _approve(
    session: AsyncSession,
    registration_id: int,
    *,
    procedures: list[str] | None = None,
    land: str | None = None,
    postal: bool = True,
) -> Registration:
    settings = SETTINGS.model_copy(update={"postal_activation": postal})
    return await review.approve(
        session,
        OPERATOR,
        NOW,
        registration_id,
        procedures=procedures,
        land=land,
        settings=settings,
        notifier=MAIL,
    )


async def _decide(db: Database, ik: str, channel: Channel) -> access.Decision:
    async def work(reads: Reads) -> access.Decision:
        account = await reads.scalar(select(Account).where(Account.ik == ik))
        return await access.may_log_in(
            reads,
            account,
            channel=channel,
            address=ADDRESS,
            now=NOW,
            security=SecuritySettings(),
            second_factor_ready=True,
            open_sessions=NodeLease(db, FixedClock(NOW)),
        )

    return await db.quick_read(work)


async def test_the_whole_way_in_ends_in_an_account_usable_after_the_letters_code(
    db: Database,
) -> None:
    registration_id, _ = await _applied(db)
    assert [m.to_addr for m in await _mails(db, "registration_applied")] == [FORM.email]
    # Pending: no channel admits it, however complete its credentials.
    for channel in Channel:
        assert (await _decide(db, FORM.ik, channel)).refusal is access.Refusal.PENDING
    async with db.session() as session:
        reg = await _approve(session, registration_id, procedures=["QPR_0_WEB"])
        assert reg.state is RegistrationState.FREIGESCHALTET
    [approved] = await _mails(db, "registration_approved")
    assert "Aktivierungscode" in approved.body_text
    assert not (await _decide(db, FORM.ik, Channel.WEB)).allowed  # letter not yet used
    async with db.session() as session:
        assert await activation.letters_due(session, NOW) == [registration_id]
        first = await activation.issue_letter(session, OPERATOR, NOW, registration_id, SETTINGS)
        letter = await activation.issue_letter(session, OPERATOR, NOW, registration_id, SETTINGS)
        assert await activation.letters_due(session, NOW) == []
        account = await session.scalar(select(Account).where(Account.ik == FORM.ik))
        assert account is not None
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="Aktivierungscode"):
            await activation.activate(
                session, NOW, account.id, first.code
            )  # replaced by the second
    async with db.session() as session:
        await activation.activate(session, NOW, account.id, letter.code.lower().replace("-", " "))
    web = await _decide(db, FORM.ik, Channel.WEB)
    assert web.allowed and web.second_factor
    assert (await _decide(db, FORM.ik, Channel.SFTP)).refusal is access.Refusal.PROCEDURE
    async with db.session() as session:
        with pytest.raises(InvalidInput):
            await activation.activate(session, NOW, account.id, letter.code)  # used up


async def test_without_postal_activation_approval_opens_the_account_and_attaches_its_key(
    db: Database,
) -> None:
    registration_id, _ = await _applied(db, replace(FORM, ssh_key=ED25519))
    async with db.session() as session:
        await _approve(session, registration_id, land="NW", postal=False)
    assert (await _decide(db, FORM.ik, Channel.SFTP)).allowed
    async with db.read_session() as session:
        keys = (await session.scalars(select(SSHKey.comment))).all()
    assert keys == ["muster"]
    [approved] = await _mails(db, "registration_approved")
    assert "SSH-Schlüssel" not in approved.body_text and "ab sofort" in approved.body_text


async def test_a_rejected_registrant_logs_in_nowhere_and_reads_the_reason(db: Database) -> None:
    registration_id, _ = await _applied(db)
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="Begründung"):
            await review.reject(session, OPERATOR, NOW, registration_id, reason=" ", notifier=MAIL)
    async with db.session() as session:
        await review.reject(
            session, OPERATOR, NOW, registration_id, reason="IK passt nicht", notifier=MAIL
        )
    [mail] = await _mails(db, "registration_rejected")
    assert "IK passt nicht" in mail.body_text
    for channel in Channel:
        assert (await _decide(db, FORM.ik, channel)).refusal is access.Refusal.DISABLED
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="abgelehnt"):
            await _approve(session, registration_id)


async def test_only_an_application_with_both_factors_can_be_approved(db: Database) -> None:
    await _register(db)
    async with db.read_session() as session:
        reg_id = await session.scalar(select(Registration.id))
    assert reg_id is not None
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="registriert"):
            await _approve(session, reg_id)


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ({"ik": "180500017"}, InvalidIK, "Prüfziffer 6 erwartet, 7 gefunden"),
        ({"ik": "18050001"}, InvalidIK, "9 Ziffern erwartet"),
        ({"email": "erika@"}, InvalidInput, "E-Mail"),
        ({"phone": "ruf an"}, InvalidInput, "Telefon"),
        ({"postcode": "4021"}, InvalidInput, "Postleitzahl"),
        ({"institution": "  "}, InvalidInput, "Name der Einrichtung"),
        ({"roles": ("depositor",)}, InvalidInput, "Einsteller: IK 180500016"),
        ({"roles": ("admin",)}, InvalidInput, "nur Empfänger"),
        ({"procedures": ()}, InvalidInput, "Verfahren"),
        ({"procedures": ("QPR_0_WEB",), "ssh_key": ED25519}, InvalidInput, "nur mit"),
        ({"ssh_key": "ssh-rsa AAAA kaputt"}, InvalidKey, "Schlüssel beschädigt"),
    ],
)
async def test_a_bad_field_is_named_and_nothing_is_created(
    db: Database, change: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        await _register(db, replace(FORM, **change))  # type: ignore[arg-type]
    assert await _count(db, Registration) == 0
    assert await _mails(db, "registration_confirm") == []


async def test_a_hospital_may_ask_to_deposit(db: Database) -> None:
    await _register(db, replace(FORM, ik="260530012", roles=("depositor", "recipient")))
    assert await _count(db, Registration) == 1


async def test_a_known_ik_gets_the_same_answer_and_its_owner_a_mail_once_a_day(
    db: Database,
) -> None:
    await _register(db)
    other = replace(FORM, email="mallory@example.net", contact="Mallory")
    await _register(db, other, address="203.0.113.9")
    await _register(db, other, address="203.0.113.9")
    assert await _count(db, Registration) == 1
    [known] = await _mails(db, "registration_known")
    assert known.to_addr == FORM.email
    assert [m.to_addr for m in await _mails(db, "registration_confirm")] == [FORM.email]


async def test_one_address_is_refused_past_the_hourly_limit_and_nothing_is_created(
    db: Database,
) -> None:
    iks = ["180500016", "180500027", "180500038"]
    settings = SETTINGS.model_copy(update={"per_address_hour": 2})
    async with db.session() as session:
        for ik in iks[:2]:
            await registration.register(
                session,
                NOW,
                replace(FORM, ik=ik),
                address=ADDRESS,
                settings=settings,
                notifier=MAIL,
            )
    async with db.session() as session:
        with pytest.raises(TooManyRequests, match="zu viele"):
            await registration.register(
                session,
                NOW,
                replace(FORM, ik=iks[2]),
                address=ADDRESS,
                settings=settings,
                notifier=MAIL,
            )
    assert await _count(db, Registration) == 2


async def test_a_confirmation_link_works_once_and_not_after_it_expired(db: Database) -> None:
    await _register(db)
    token = _token((await _mails(db, "registration_confirm"))[0], "/registrierung/bestaetigen/")
    late = NOW + timedelta(hours=SETTINGS.confirm_hours)
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="abgelaufen"):
            await registration.confirm(session, late, token, settings=SETTINGS, notifier=MAIL)
    async with db.session() as session:
        await registration.confirm(session, NOW, token, settings=SETTINGS, notifier=MAIL)
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="schon"):
            await registration.confirm(session, NOW, token, settings=SETTINGS, notifier=MAIL)
    assert await _count(db, Account) == 1


async def test_a_resent_link_voids_the_first(db: Database) -> None:
    await _register(db)
    async with db.session() as session:
        await registration.resend_confirmation(
            session, NOW, ik=FORM.ik, email=FORM.email, settings=SETTINGS, notifier=MAIL
        )
        await registration.resend_confirmation(
            session, NOW, ik=FORM.ik, email="other@example.org", settings=SETTINGS, notifier=MAIL
        )
    first, second = await _mails(db, "registration_confirm")
    old = _token(first, "/registrierung/bestaetigen/")
    async with db.session() as session:
        with pytest.raises(InvalidInput):
            await registration.confirm(session, NOW, old, settings=SETTINGS, notifier=MAIL)
    new = _token(second, "/registrierung/bestaetigen/")
    async with db.session() as session:
        await registration.confirm(session, NOW, new, settings=SETTINGS, notifier=MAIL)


async def test_a_short_first_password_uses_up_no_link(db: Database) -> None:
    await _register(db)
    confirm = _token((await _mails(db, "registration_confirm"))[0], "/registrierung/bestaetigen/")
    async with db.session() as session:
        token = await registration.confirm(session, NOW, confirm, settings=SETTINGS, notifier=MAIL)
    async with db.session() as session:
        with pytest.raises(InvalidInput, match="zu kurz"):
            await registration.set_first_password(session, NOW, token, "kurz")
    async with db.session() as session:
        account = await registration.set_first_password(session, NOW, token, "lang genug 12345")
        assert account.status is AccountStatus.PENDING


async def test_the_jobs_remind_once_and_purge_the_unconfirmed(db: Database) -> None:
    await _register(db)  # confirmed below, then idle
    await _register(db, replace(FORM, ik="180500027", email="b@example.org"))  # never confirmed
    confirm = _token((await _mails(db, "registration_confirm"))[0], "/registrierung/bestaetigen/")
    async with db.session() as session:
        await registration.confirm(session, NOW, confirm, settings=SETTINGS, notifier=MAIL)
    later = NOW + timedelta(days=SETTINGS.purge_days)
    for _ in range(3):
        async with db.session() as session:
            await review.remind_stuck(session, later, SETTINGS, MAIL)
            await review.purge_unconfirmed(session, later, SETTINGS)
    assert [m.to_addr for m in await _mails(db, "registration_reminder")] == [FORM.email]
    async with db.read_session() as session:
        [left] = (await session.scalars(select(Registration))).all()
        assert left.state is RegistrationState.BESTAETIGT
        assert review.summary(left, later, SETTINGS)["stuck"]
    # The reminder's link sets the password; the first link no longer does.
    token = _token((await _mails(db, "registration_reminder"))[0], "/registrierung/passwort/")
    async with db.session() as session:
        await registration.set_first_password(session, later, token, "ein langes Passwort 1")


async def test_a_password_reset_is_mailed_only_to_a_known_active_address(db: Database) -> None:
    registration_id, _ = await _applied(db)
    for address in ("nobody@example.org", "kaputt", FORM.email):
        async with db.session() as session:
            await recovery.request_password_reset(
                session, NOW, address, settings=SETTINGS, notifier=MAIL
            )
    assert await _mails(db, "password_reset") == []  # pending accounts get no reset
    async with db.session() as session:
        await _approve(session, registration_id, postal=False)
        await recovery.request_password_reset(
            session, NOW, FORM.email.upper(), settings=SETTINGS, notifier=MAIL
        )
    [mail] = await _mails(db, "password_reset")
    token = _token(mail, "/passwort/neu/")
    async with db.session() as session:
        account = await recovery.reset_password(session, NOW, token, "ganz neues Passwort")
        assert account.ik == FORM.ik
    async with db.session() as session:
        with pytest.raises(InvalidInput):
            await recovery.reset_password(session, NOW, token, "noch ein Passwort!")


def test_procedure_names_are_the_portals() -> None:
    assert {p.value for p in Procedure} == {"QPR_0_WEB", "QPR_0_SFTP"}
