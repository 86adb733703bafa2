"""Each report registration gets its own account, login ``<IK>-<Standort>``: made at the
confirmation, its password set by the mailed link, logging in over SFTP and in the
portal, delivering its own report only, changing its contact data; institution
accounts keep their IK as login and stay the ones that receive."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncssh
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.accounts import service as accounts
from qprserver.accounts.enums import ALL_PROCEDURES, AccountStatus, Role
from qprserver.clock import SystemClock
from qprserver.config import DatabaseSettings
from qprserver.db import migrate
from qprserver.db.base import UTCDateTime
from qprserver.db.engine import Database
from qprserver.db.models import (
    Account,
    AuditEvent,
    Document,
    MailMessage,
    PasswordCredential,
    QbRegistration,
)
from qprserver.exchange import routing
from qprserver.notify.registration_mails import PASSWORD_PATH
from tests.conftest import QB_DATA
from tests.functional.conftest import Instance
from tests.functional.harness import (
    ADMIN,
    HOSPITAL,
    LV_SH,
    REGISTERED_AT,
    REPORT,
    Server,
    mailed_token,
    register_report,
    start_qb_server,
)
from tests.functional.web import PASSWORD, csrf_of, make_web

SITE_01 = f"{HOSPITAL}-01"
OTHER_HOSPITAL = "260100034"
_SECRET = re.compile(r'<code class="geheim">([A-Z2-7 ]+)</code>')


@pytest.fixture
async def qb_server(tmp_path: Path, db: Database) -> AsyncIterator[Server]:
    """The 2019 report server: the hospital's own account, the Land's recipient, and the
    confirmed registration of the report 260100023-01."""
    if not (QB_DATA / REPORT).exists():
        pytest.skip("G-BA test data (../shared/data/qb) not present")
    srv = await start_qb_server(tmp_path, db, QB_DATA / "qb-2019-schema.xsd")
    try:
        yield srv
    finally:
        await srv.listener.stop(grace=0)


async def _account(server: Server, login: str) -> Account:
    async with server.db.read_session() as session:
        found = await session.scalar(select(Account).where(Account.login == login))
    assert found is not None, login
    return found


async def _mails(server: Server, template: str) -> list[MailMessage]:
    async with server.db.read_session() as session:
        query = select(MailMessage).where(MailMessage.template == template)
        return list((await session.scalars(query.order_by(MailMessage.id))).all())


async def _give_key(server: Server, login: str) -> None:
    """An SSH key for the account, as the operator adds one (``account key add LOGIN``)."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    async with server.db.session() as session:
        await accounts.add_key(
            session,
            ADMIN,
            SystemClock().now(),
            login,
            key.export_public_key().decode().strip(),
            server.notifier,
        )
    server.keys[login] = key


async def _put(server: Server, login: str, name: str, data: bytes) -> None:
    async with (
        server.connect(login) as conn,
        conn.start_sftp_client() as sftp,
        sftp.open(f"/outbox/{name}", "wb") as handle,
    ):
        await handle.write(data)


async def _receipts(server: Server, login: str) -> list[dict[str, object]]:
    async with server.connect(login) as conn, conn.start_sftp_client() as sftp:
        found = []
        for name in sorted(await sftp.listdir("/receipts")):
            if name not in (".", ".."):
                async with sftp.open(f"/receipts/{name}", "rb") as handle:
                    found.append(json.loads(await handle.read()))
        return found


async def test_a_confirmed_registration_gets_the_account_ik_dash_standort_and_a_password_mail(
    qb_server: Server,
) -> None:
    account = await _account(qb_server, SITE_01)
    assert (account.ik, account.site, account.status) == (HOSPITAL, "01", AccountStatus.ACTIVE)
    assert account.roles == frozenset({Role.DEPOSITOR}) and account.procedures == ALL_PROCEDURES
    assert account.email == f"qb-{HOSPITAL}-01@klinik.example"
    institution = await _account(qb_server, HOSPITAL)
    assert (institution.ik, institution.site) == (HOSPITAL, None)
    async with qb_server.db.read_session() as session:
        reg = await session.scalar(select(QbRegistration))
        assert reg is not None and reg.account_id == account.id
        passwords = select(func.count()).where(PasswordCredential.account_id == account.id)
        assert await session.scalar(passwords) == 0
    (mail,) = await _mails(qb_server, "qb_account_password")
    assert mail.to_addr == account.email
    assert f"Benutzername: {SITE_01}" in mail.body_text and PASSWORD_PATH in mail.body_text
    assert SITE_01 in mail.subject


async def test_two_sites_are_two_accounts_and_a_later_year_reuses_the_account(
    qb_server: Server,
) -> None:
    await register_report(qb_server, 2019, HOSPITAL, "99", REGISTERED_AT)
    async with qb_server.db.session() as session:
        await accounts.set_password(session, ADMIN, REGISTERED_AT, SITE_01, PASSWORD)
    # Report year 2020 (the Qb-R's dates): registration 12 Jul – 23 Aug 2021.
    await register_report(qb_server, 2020, HOSPITAL, "01", datetime(2021, 7, 20, 9, tzinfo=UTC))
    async with qb_server.db.read_session() as session:
        logins = (await session.scalars(select(Account.login).order_by(Account.login))).all()
        regs = (
            await session.execute(
                select(QbRegistration.year, QbRegistration.site, Account.login)
                .join(Account, Account.id == QbRegistration.account_id)
                .order_by(QbRegistration.year, QbRegistration.site)
            )
        ).all()
    assert sorted(logins) == sorted([HOSPITAL, SITE_01, f"{HOSPITAL}-99", LV_SH])
    assert [tuple(r) for r in regs] == [
        (2019, "01", SITE_01),
        (2019, "99", f"{HOSPITAL}-99"),
        (2020, "01", SITE_01),
    ]
    # The account of site 01 has its password: the second year mails no new link.
    mailed = [m.to_addr for m in await _mails(qb_server, "qb_account_password")]
    assert mailed == [f"qb-{HOSPITAL}-01@klinik.example", f"qb-{HOSPITAL}-99@klinik.example"]


async def test_the_account_sets_its_password_by_the_link_and_logs_in_by_sftp_and_portal(
    qb_server: Server,
) -> None:
    web = make_web(qb_server)
    web.clock.advance(REGISTERED_AT - web.clock.now())  # the link is fresh
    path = PASSWORD_PATH + await mailed_token(qb_server.db, SITE_01, PASSWORD_PATH)
    async with web.client() as client:
        form = await client.get(path)
        done = await client.post(
            path,
            data={"csrf": csrf_of(form.text), "passwort": PASSWORD, "wiederholung": PASSWORD},
        )
        assert done.status_code == 303 and done.headers["location"] == "/einrichten"
        # The password alone logs in over SFTP (no second factor enrolled yet).
        async with (
            asyncssh.connect(
                "127.0.0.1",
                qb_server.port,
                username=SITE_01,
                password=PASSWORD,
                client_keys=None,
                known_hosts=None,
            ) as conn,
            conn.start_sftp_client() as sftp,
        ):
            assert "outbox" in await sftp.listdir("/")
        enrol = await client.get("/einrichten")
        found = _SECRET.search(enrol.text)
        assert found is not None, enrol.text
        secret = found.group(1).replace(" ", "")
        enrolled = await client.post(
            "/einrichten", data={"csrf": csrf_of(enrol.text), "code": web.code(secret)}
        )
        assert enrolled.status_code == 200 and "Sie sind angemeldet" in enrolled.text
    # The link is used up.
    async with web.client() as client:
        form = await client.get(path)
        again = await client.post(
            path,
            data={"csrf": csrf_of(form.text), "passwort": PASSWORD, "wiederholung": PASSWORD},
        )
        assert again.status_code == 400
    async with web.client() as client:
        await web.login(client, SITE_01, secret)
        assert (await client.get("/")).headers["location"] == "/hochladen"
        shown = await client.get("/berichtsjahr/registrierungen")
        assert shown.status_code == 200
        assert f"Berichtsjahr 2019: IK {HOSPITAL}, Standort 01" in shown.text
        assert f"Standort 01, Benutzername {SITE_01}" in (await client.get("/konto")).text
    # Now with a second factor, SFTP asks for a code after the password.
    with pytest.raises(asyncssh.PermissionDenied):
        await asyncssh.connect(
            "127.0.0.1",
            qb_server.port,
            username=SITE_01,
            password=PASSWORD,
            client_keys=None,
            known_hosts=None,
            kbdint_auth=False,
        )


async def test_the_account_delivers_its_own_report_and_nothing_else(qb_server: Server) -> None:
    await _give_key(qb_server, SITE_01)
    report = (QB_DATA / REPORT).read_bytes()
    await _put(qb_server, SITE_01, REPORT, report)
    # Routing found the Land's recipient as before.
    async with qb_server.connect(LV_SH) as conn, conn.start_sftp_client() as sftp:
        assert REPORT in await sftp.listdir("/inbox")
    refused = {
        f"{OTHER_HOSPITAL}-01-2019-xml.xml": f"IK {OTHER_HOSPITAL}, Standort 01; das Konto",
        f"{HOSPITAL}-99-2019-xml.xml": f"IK {HOSPITAL}, Standort 99; das Konto {SITE_01}",
        "510512349_bericht.pdf": f"liefert nur den Qualitätsbericht {HOSPITAL}-01-<Berichtsjahr>",
    }
    for name in refused:
        with pytest.raises(asyncssh.SFTPFailure):
            await _put(qb_server, SITE_01, name, report)
    protocols = await _receipts(qb_server, SITE_01)
    assert [p["ergebnis"] for p in protocols] == ["angenommen", *["abgelehnt"] * len(refused)]
    for protocol in protocols[1:]:
        reasons = protocol["gruende"]
        assert isinstance(reasons, list) and len(reasons) == 1
        assert refused[str(protocol["datei"])] in reasons[0], reasons
    account = await _account(qb_server, SITE_01)
    async with qb_server.db.read_session() as session:
        stored = (
            await session.scalars(select(Document.name).where(Document.depositor_id == account.id))
        ).all()
    assert stored == [REPORT]


async def test_contact_data_change_in_the_portal_is_checked_audited_and_own_only(
    qb_server: Server,
) -> None:
    other = await register_report(qb_server, 2019, HOSPITAL, "99", REGISTERED_AT)
    web = make_web(qb_server)
    secret = await web.enrol(SITE_01)
    async with qb_server.db.read_session() as session:
        reg = await session.scalar(select(QbRegistration).where(QbRegistration.site == "01"))
    assert reg is not None
    target = f"/berichtsjahr/registrierungen/{reg.id}"
    new = {
        "hospital": "Klinikum Nord, Haus A",
        "contact": "Herr Beispiel",
        "email": "qualitaet@klinikum-nord.example",
        "phone": "0431 9876-0",
    }
    async with web.client() as client:
        await web.login(client, SITE_01, secret)
        token = await web.token(client, "/berichtsjahr/registrierungen")
        bad = await client.post(target, data={"csrf": token, **new, "email": "kein-at"})
        assert bad.status_code == 400 and "E-Mail" in bad.text
        assert 'value="Herr Beispiel"' in bad.text  # what was typed stays
        foreign = await client.post(
            f"/berichtsjahr/registrierungen/{other}", data={"csrf": token, **new}
        )
        assert foreign.status_code == 404
        unsigned = await client.post(target, data=new)
        assert unsigned.status_code == 403
        saved = await client.post(target, data={"csrf": token, **new})
        assert saved.status_code == 303
        page = await client.get(saved.headers["location"])
        assert "Die Kontaktdaten sind gespeichert." in page.text
    async with qb_server.db.read_session() as session:
        changed = await session.get_one(QbRegistration, reg.id)
        untouched = await session.get_one(QbRegistration, other)
        events = (
            await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "qb.registration.contact")
            )
        ).all()
    assert (changed.hospital, changed.contact, changed.email, changed.phone) == tuple(new.values())
    assert untouched.contact == "Frau Muster"
    (event,) = events
    assert event.actor == SITE_01 and json.loads(event.details)["email"] == new["email"]
    account = await _account(qb_server, SITE_01)
    assert (account.name, account.email) == (new["hospital"], new["email"])
    # The hospital's own account has no registrations of its own to show.
    secret = await web.enrol(HOSPITAL)
    async with web.client() as client:
        await web.login(client, HOSPITAL, secret)
        assert (await client.get("/berichtsjahr/registrierungen")).status_code == 404


async def test_institution_accounts_log_in_by_ik_and_routing_still_finds_them(
    qb_server: Server,
) -> None:
    await qb_server.add_account(OTHER_HOSPITAL, ["depositor", "recipient"])
    await register_report(qb_server, 2019, OTHER_HOSPITAL, "00", REGISTERED_AT)
    async with qb_server.connect(HOSPITAL) as conn, conn.start_sftp_client() as sftp:
        assert "outbox" in await sftp.listdir("/")
    web = make_web(qb_server)
    secret = await web.enrol(LV_SH)
    async with web.client() as client:
        await web.login(client, LV_SH, secret)
        assert (await client.get("/")).headers["location"] == "/posteingang"
    classified = routing.classify(f"{OTHER_HOSPITAL}-00-2019-xml.xml", qb_server.settings.kinds)
    depositor = await _account(qb_server, HOSPITAL)
    async with qb_server.db.read_session() as session:
        routed = await routing.recipients_for(
            session, classified, direct_ik=None, depositor=depositor
        )
        direct = await routing.recipients_for(
            session, None, direct_ik=OTHER_HOSPITAL, depositor=depositor
        )
    institution = await _account(qb_server, OTHER_HOSPITAL)  # login = IK, no Standort
    assert sorted(a.ik for a in routed) == sorted([LV_SH, OTHER_HOSPITAL])
    assert [(a.id, a.ik) for a in direct] == [(institution.id, OTHER_HOSPITAL)]
    assert institution.id in {a.id for a in routed}
    shown = await _shown(qb_server, f"{OTHER_HOSPITAL}-00")
    assert (shown["login"], shown["ik"], shown["site"]) == (
        f"{OTHER_HOSPITAL}-00",
        OTHER_HOSPITAL,
        "00",
    )


async def _shown(server: Server, login: str) -> accounts.AccountSummary:
    """What ``account show LOGIN --json`` prints."""
    async with server.db.read_session() as session:
        return accounts.account_summary(await accounts.get_account(session, login))


def test_account_list_and_show_name_the_login_and_commands_take_it(instance: Instance) -> None:
    instance.ok("account", "add", HOSPITAL, "--name", "Klinikum Nord", "--role", "depositor")
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)

    async def registration_account(session: AsyncSession) -> None:
        session.add(
            Account(
                ik=HOSPITAL,
                login=SITE_01,
                site="01",
                name="Klinikum Nord",
                roles="depositor",
                created_at=now,
                updated_at=now,
            )
        )

    instance.in_session(registration_account)
    listed = instance.json("account", "list")
    assert [(a["login"], a["ik"], a["site"]) for a in listed] == [
        (HOSPITAL, HOSPITAL, None),
        (SITE_01, HOSPITAL, "01"),
    ]
    assert instance.ok("account", "list").count(SITE_01) == 1
    shown = instance.ok("account", "show", SITE_01)
    assert f"login       {SITE_01}\n" in shown and "standort    01\n" in shown
    assert instance.ok("account", "disable", SITE_01).strip() == f"account {SITE_01} disabled"
    assert instance.json("account", "show", SITE_01)["status"] == "disabled"
    assert instance.json("account", "show", HOSPITAL)["status"] == "active"
    assert instance.fails("account", "show", f"{HOSPITAL}-02") == f"Error: kein Konto {HOSPITAL}-02"


_ACCOUNTS_0012 = sa.table(
    "accounts",
    sa.column("id", sa.Integer),
    sa.column("ik", sa.String),
    sa.column("name", sa.String),
    sa.column("roles", sa.String),
    sa.column("status", sa.String),
    sa.column("notify", sa.Boolean),
    sa.column("created_at", UTCDateTime()),
    sa.column("updated_at", UTCDateTime()),
)
_KEYS_0012 = sa.table(
    "ssh_keys",
    sa.column("account_id", sa.Integer),
    sa.column("algorithm", sa.String),
    sa.column("fingerprint", sa.String),
    sa.column("public_key", sa.String),
    sa.column("comment", sa.String),
    sa.column("created_at", UTCDateTime()),
)


async def test_the_upgrade_from_0012_makes_each_ik_its_accounts_login_and_keeps_its_rows(
    database_settings: DatabaseSettings,
) -> None:
    db = Database(database_settings)
    now = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    try:
        await migrate.upgrade(db, "0012")
        async with db.engine.begin() as conn:
            for ik, role in (("105830016", "recipient"), (HOSPITAL, "depositor")):
                await conn.execute(
                    sa.insert(_ACCOUNTS_0012).values(
                        ik=ik,
                        name=f"Konto {ik}",
                        roles=role,
                        status="active",
                        notify=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
            await conn.execute(
                sa.insert(_KEYS_0012).values(
                    account_id=sa.select(_ACCOUNTS_0012.c.id)
                    .where(_ACCOUNTS_0012.c.ik == "105830016")
                    .scalar_subquery(),
                    algorithm="ssh-ed25519",
                    fingerprint="SHA256:abc",
                    public_key="ssh-ed25519 AAAA",
                    comment="",
                    created_at=now,
                )
            )
        await migrate.upgrade(db)
        assert await migrate.check(db) == []
        async with db.read_session() as session:
            rows = (await session.execute(select(Account.login, Account.ik, Account.site))).all()
            keys = await session.scalar(select(func.count()).select_from(_KEYS_0012))
        assert sorted(tuple(r) for r in rows) == [
            ("105830016", "105830016", None),
            (HOSPITAL, HOSPITAL, None),
        ]
        assert keys == 1  # copying the table on SQLite cascaded to no row

        def made(login: str, site: str | None) -> Account:
            return Account(
                ik=HOSPITAL,
                login=login,
                site=site,
                name="x",
                roles="depositor",
                created_at=now,
                updated_at=now,
            )

        with pytest.raises(IntegrityError):  # a second institution account of the IK
            async with db.session() as session:
                session.add(made(f"{HOSPITAL}-00", None))
        with pytest.raises(IntegrityError):  # a login twice
            async with db.session() as session:
                session.add(made(HOSPITAL, "01"))
        async with db.session() as session:
            session.add(made(SITE_01, "01"))
        async with db.read_session() as session:
            count = await session.scalar(
                select(func.count()).select_from(Account).where(Account.ik == HOSPITAL)
            )
        assert count == 2
    finally:
        await db.dispose()
