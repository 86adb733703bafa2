"""A hospital registers each report (IK + Standort) of a report year in the windows of
its calendar, confirms the address by the mailed link's button, and only then may it
deliver that report."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from qprserver.accounts.enums import RegistrationState
from qprserver.db.models import MailMessage, QbRegistration
from qprserver.errors import InvalidInput, TooManyRequests
from qprserver.qb import registrations as qb_registrations
from qprserver.qb.registrations import ReportRegistrationForm
from tests.functional.harness import LV_NW, REGISTERED_AT, Server
from tests.functional.web import Web, csrf_of

HOSPITAL_IK = "260100023"


def _form(site: str = "01", **changes: str) -> ReportRegistrationForm:
    values: dict[str, str] = {
        "ik": HOSPITAL_IK,
        "site": site,
        "hospital": "Klinikum Nord",
        "contact": "Frau Muster",
        "email": "qb@klinikum-nord.example",
        "phone": "0431 1234-56",
        "basis": "Plankrankenhaus",
        **changes,
    }
    return ReportRegistrationForm(year=2019, **values)


async def _register(server: Server, at: datetime, form: ReportRegistrationForm) -> None:
    async with server.db.session() as session:
        await qb_registrations.register(
            session,
            at,
            form,
            qb=server.settings.qb,
            settings=server.settings.registration,
            notifier=server.notifier,
            address="127.0.0.1",
        )


async def _registrations(server: Server) -> list[QbRegistration]:
    async with server.db.read_session() as session:
        query = select(QbRegistration).order_by(QbRegistration.id)
        return list((await session.scalars(query)).all())


async def _mails(server: Server, template: str) -> list[MailMessage]:
    async with server.db.read_session() as session:
        query = select(MailMessage).where(MailMessage.template == template)
        return list((await session.scalars(query.order_by(MailMessage.id))).all())


@pytest.mark.parametrize(
    "at",
    [
        datetime(2020, 7, 11, 12, 0, tzinfo=UTC),  # the day before the window opens
        datetime(2020, 9, 1, 12, 0, tzinfo=UTC),  # closed 12 weeks before the deadline
        datetime(2020, 12, 16, 12, 0, tzinfo=UTC),  # after the replacement window
    ],
)
async def test_a_registration_outside_its_windows_is_refused_naming_them(
    server: Server, at: datetime
) -> None:
    with pytest.raises(InvalidInput) as refused:
        await _register(server, at, _form())
    assert str(refused.value) == (
        "Registrierung für das Berichtsjahr 2019 nur vom 12.07.2020 bis 23.08.2020, "
        "nachträglich vom 23.11.2020 bis 15.12.2020."
    )
    assert await _registrations(server) == []


async def test_reports_register_in_the_window_and_late_in_the_replacement_window(
    server: Server,
) -> None:
    await _register(server, REGISTERED_AT, _form("01"))
    await _register(server, datetime(2020, 11, 30, 9, 0, tzinfo=UTC), _form("99"))
    sites = [(r.site, r.late, r.state) for r in await _registrations(server)]
    assert sites == [
        ("01", False, RegistrationState.REGISTRIERT),
        ("99", True, RegistrationState.REGISTRIERT),
    ]
    assert len(await _mails(server, "qb_registration_confirm")) == 2


async def test_a_six_digit_standortnummer_of_the_standortverzeichnis_registers(
    server: Server,
) -> None:
    await _register(server, REGISTERED_AT, _form("771234"))
    assert [r.site for r in await _registrations(server)] == ["771234"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ik": "510512361"}, "IK 510512361: kein Krankenhaus-IK (Klasse 26…)"),
        ({"site": "1"}, "Standortnummer: zwei Ziffern"),
        ({"site": "7712345"}, "oder ab Berichtsjahr 2020 die sechsstellige Nummer"),
        ({"basis": "Belegklinik"}, "Zulassung: Hochschulklinik, Plankrankenhaus"),
        ({"email": ""}, "E-Mail-Adresse: bitte angeben"),
    ],
)
async def test_a_bad_field_is_named_and_nothing_is_stored(
    server: Server, changes: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        await _register(server, REGISTERED_AT, _form(**changes))
    assert await _registrations(server) == []
    assert await _mails(server, "qb_registration_confirm") == []


async def test_a_second_registration_of_a_report_mails_the_registered_address_only(
    server: Server,
) -> None:
    await _register(server, REGISTERED_AT, _form())
    await _register(server, REGISTERED_AT, _form(email="jemand@anders.example"))
    assert len(await _registrations(server)) == 1
    (known,) = await _mails(server, "qb_registration_known")
    assert known.to_addr == "qb@klinikum-nord.example"


PORTAL_FORM = {
    "year": "2019",
    "ik": HOSPITAL_IK,
    "site": "01",
    "hospital": "Klinikum Nord",
    "contact": "Frau Muster",
    "email": "qb@klinikum-nord.example",
    "phone": "0431 1234-56",
    "basis": "plankrankenhaus",
    "further_iks": "260100034",
}


async def test_a_bad_field_on_the_portal_form_is_named_and_nothing_is_stored(web: Web) -> None:
    web.clock.advance(REGISTERED_AT - web.clock.now())
    async with web.client() as client:
        page = await client.get("/berichtsjahr/registrieren")
        data = {"csrf": csrf_of(page.text), **PORTAL_FORM, "site": "1"}
        refused = await client.post("/berichtsjahr/registrieren", data=data)
        assert refused.status_code == 400 and "Standortnummer: zwei Ziffern" in refused.text
        assert 'value="Klinikum Nord"' in refused.text  # the form keeps what was typed
        unsigned = await client.post("/berichtsjahr/registrieren", data=PORTAL_FORM)
        assert unsigned.status_code == 403
    assert await _registrations(web.server) == []


async def test_too_many_registrations_from_one_address_are_refused(server: Server) -> None:
    limit = server.settings.registration.per_address_hour
    for site in range(limit):
        await _register(server, REGISTERED_AT, _form(f"{site:02d}"))
    with pytest.raises(TooManyRequests):
        await _register(server, REGISTERED_AT, _form(f"{limit:02d}"))
    assert len(await _registrations(server)) == limit


async def test_the_portal_form_registers_and_its_mailed_button_confirms_once(web: Web) -> None:
    server = web.server
    web.clock.advance(REGISTERED_AT - web.clock.now())
    async with web.client() as client:
        page = await client.get("/berichtsjahr/registrieren")
        data = {"csrf": csrf_of(page.text), **PORTAL_FORM}
        sent = await client.post("/berichtsjahr/registrieren", data=data)
        assert sent.status_code == 200 and "Registrierung eingegangen" in sent.text
    (mail,) = await _mails(server, "qb_registration_confirm")
    found = re.search(r"https?://[^/\s]+(/berichtsjahr/bestaetigen/\S+)", mail.body_text)
    assert found is not None, mail.body_text
    path = found.group(1)
    async with web.client() as client:
        for _ in range(3):  # a mail scanner following the link confirms nothing
            page = await client.get(path)
            assert page.status_code == 200
        (still,) = await _registrations(server)
        assert still.state is RegistrationState.REGISTRIERT
        done = await client.post(path, data={"csrf": csrf_of(page.text)})
        assert done.status_code == 200 and "Standort 01 ist bestätigt" in done.text
        again = await client.post(path, data={"csrf": csrf_of(page.text)})
        assert again.status_code == 400
    (reg,) = await _registrations(server)
    assert reg.state is RegistrationState.BESTAETIGT and reg.confirmed_at == REGISTERED_AT
    assert (reg.further_iks, reg.basis, reg.late) == ("260100034", "plankrankenhaus", False)
    async with server.db.read_session() as session:
        assert await qb_registrations.confirmed(session, 2019, HOSPITAL_IK, "01")
        assert not await qb_registrations.confirmed(session, 2019, HOSPITAL_IK, "02")
        assert await session.scalar(select(func.count(QbRegistration.id))) == 1


async def test_operators_read_the_year_in_the_portal_and_nobody_else_sees_it(web: Web) -> None:
    operator = "100000011"  # an operator account (role admin)
    await web.server.add_account(operator, ["admin"])
    await _register(web.server, REGISTERED_AT, _form())
    for ik, status in ((operator, 200), (LV_NW, 404)):
        secret = await web.enrol(ik)
        async with web.client() as client:
            await web.login(client, ik, secret)
            shown = await client.get("/berichtsjahr/2019")
            assert shown.status_code == status
            if status == 200:
                text = re.sub(r"\s+", " ", shown.text)
                assert "<td>Registrierung</td><td>2020-07-12</td><td>2020-08-23</td>" in text
                assert "<td>registriert</td><td>1</td>" in text
                assert "<td>Korrekturphase</td><td>2020-08-24</td><td>2020-09-20</td>" in text
                for count in ("abweichung_gemeldet", "bestaetigung_versandt", "null_meldungen"):
                    assert f"<td>{count}</td><td>0</td>" in text
                assert (await client.get("/berichtsjahr/20x9")).status_code == 404
                assert (await client.get("/berichtsjahr/12019")).status_code == 404
