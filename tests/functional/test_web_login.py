"""Logging in to the web portal: two factors, enrolment, sessions, and the attacks
the portal must withstand (fixation, CSRF, enumeration, revoked accounts)."""

from __future__ import annotations

import json
import statistics
import time
from datetime import timedelta

import httpx
import pyotp
from sqlalchemy import select

from qprserver.accounts import service as accounts
from qprserver.accounts import websessions
from qprserver.accounts.enums import AccountStatus
from qprserver.audit import chain as audit
from qprserver.db.models import AuthScore
from qprserver.security import bans
from tests.functional.harness import ADMIN, FACILITY_NW, LV_NW, MD_NW
from tests.functional.web import PASSWORD, Web, csrf_of


async def test_password_then_code_logs_in_and_every_page_carries_the_security_headers(
    web: Web,
) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        page = await client.get("/posteingang")
    assert page.status_code == 200
    assert '<html lang="de">' in page.text
    csp = page.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["strict-transport-security"].startswith("max-age=")
    async with web.server.db.read_session() as session:
        events = await audit.events(session, account=LV_NW)
    assert any(e.action == "login" and json.loads(e.details) == {"channel": "web"} for e in events)


async def test_session_cookie_is_secure_httponly_strict_and_changes_at_each_step(
    web: Web,
) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        first = await web.password_step(client, LV_NW)
        cookie = first.headers["set-cookie"]
        assert "qpr_session=" in cookie
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
        after_password = client.cookies["qpr_session"]
        page = await client.get("/anmelden/code")
        await client.post(
            "/anmelden/code", data={"csrf": csrf_of(page.text), "code": web.code(secret)}
        )
        after_code = client.cookies["qpr_session"]
    assert after_password != after_code


async def test_a_session_id_planted_before_login_is_worthless_after_it(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as attacker:
        await web.password_step(attacker, LV_NW)
        planted = attacker.cookies["qpr_session"]
    async with web.client() as victim:
        victim.cookies.set("qpr_session", planted, domain="portal.test")
        await web.login(victim, LV_NW, secret)
        assert victim.cookies["qpr_session"] != planted
    async with web.client() as attacker:
        attacker.cookies.set("qpr_session", planted, domain="portal.test")
        page = await attacker.get("/posteingang")
    assert page.status_code == 303 and page.headers["location"] == "/anmelden"


async def test_a_wrong_code_is_refused_and_scores_against_address_and_account(web: Web) -> None:
    await web.enrol(LV_NW)
    async with web.client() as client:
        await web.password_step(client, LV_NW)
        page = await client.get("/anmelden/code")
        wrong = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(page.text), "code": "000000"}
        )
        inbox = await client.get("/posteingang")
    assert wrong.status_code == 200 and "nicht angenommen" in wrong.text
    assert inbox.status_code == 303 and inbox.headers["location"] == "/anmelden/code"
    async with web.server.db.read_session() as session:
        scores = {row.key: row.failures for row in await session.scalars(select(AuthScore))}
    assert scores == {bans.address_key("198.51.100.7"): 1, bans.account_key(LV_NW): 1}


async def test_a_post_without_the_csrf_token_is_refused_with_403_and_changes_nothing(
    web: Web,
) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        refused = await client.post("/konto/benachrichtigungen", data={"benachrichtigung": ""})
        wrong = await client.post(
            "/konto/benachrichtigungen", data={"csrf": "x" * 43, "benachrichtigung": ""}
        )
        login_without = await client.post("/anmelden", data={"ik": LV_NW, "passwort": PASSWORD})
    assert refused.status_code == 403 and wrong.status_code == 403
    assert login_without.status_code == 403
    async with web.server.db.read_session() as session:
        account = await accounts.get_account(session, LV_NW)
    assert account.notify is True


async def test_unknown_and_known_ik_get_the_same_answer_in_similar_time(web: Web) -> None:
    await web.enrol(LV_NW)
    answers: dict[str, list[str]] = {"known": [], "unknown": []}
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for _ in range(3):
        for label, ik in (("known", LV_NW), ("unknown", "105830016")):
            async with web.client() as client:
                started = time.perf_counter()
                answer = await web.password_step(client, ik, "falsches Passwort 123")
                times[label].append(time.perf_counter() - started)
                answers[label].append(answer.text.replace(csrf_of(answer.text), ""))
    assert set(answers["known"]) == set(answers["unknown"]) and len(set(answers["known"])) == 1
    # The password check dominates both (argon2id, also against a dummy hash).
    known, unknown = statistics.median(times["known"]), statistics.median(times["unknown"])
    assert 0.5 < known / unknown < 2.0, (known, unknown)


async def test_an_account_without_a_second_factor_must_enrol_before_it_sees_anything(
    web: Web,
) -> None:
    await web.set_password(FACILITY_NW)
    async with web.client() as client:
        first = await web.password_step(client, FACILITY_NW)
        assert first.headers["location"] == "/einrichten"
        blocked = await client.get("/posteingang")
        assert blocked.headers["location"] == "/einrichten"
        page = await client.get("/einrichten")
        assert 'src="data:image/svg+xml;base64,' in page.text
        shown = page.text.split('class="geheim">')[1].split("<")[0].replace(" ", "")
        wrong = await client.post(
            "/einrichten", data={"csrf": csrf_of(page.text), "code": "123456"}
        )
        assert "nicht angenommen" in wrong.text
        code = pyotp.TOTP(shown).at(web.clock.now())
        done = await client.post("/einrichten", data={"csrf": csrf_of(page.text), "code": code})
        assert done.status_code == 200 and "Wiederherstellungscodes" in done.text
        recovery = done.text.split('<ul class="codes">')[1].split("<code>")[1].split("<")[0]
        inbox = await client.get("/posteingang")
        assert inbox.status_code == 200
    async with web.client() as client:
        await web.password_step(client, FACILITY_NW)
        page = await client.get("/anmelden/code")
        again = await client.post("/anmelden/code", data={"csrf": csrf_of(page.text), "code": code})
        assert "nicht angenommen" in again.text  # the confirming code is used up
    web.clock.advance(timedelta(seconds=60))
    async with web.client() as client:
        await web.password_step(client, FACILITY_NW)
        page = await client.get("/anmelden/code")
        used = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(page.text), "code": recovery}
        )
        assert used.status_code == 303 and used.headers["location"] == "/"


async def test_disabling_the_account_ends_its_open_web_session_at_once(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        assert (await client.get("/posteingang")).status_code == 200
        async with web.server.db.session() as session:
            await accounts.set_status(
                session, ADMIN, web.clock.now(), LV_NW, AccountStatus.DISABLED, web.server.notifier
            )
        after = await client.get("/posteingang")
    assert after.status_code == 303 and after.headers["location"] == "/anmelden"


async def test_a_password_set_elsewhere_ends_the_open_web_sessions(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        web.clock.advance(timedelta(seconds=1))
        await web.set_password(LV_NW, "ein anderes langes Passwort")
        after = await client.get("/posteingang")
    assert after.status_code == 303 and after.headers["location"] == "/anmelden"


async def test_idle_and_maximum_session_times_end_a_session(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    idle = web.server.settings.web.session_idle
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        web.clock.advance(timedelta(seconds=idle - 60))
        assert (await client.get("/posteingang")).status_code == 200
        web.clock.advance(timedelta(seconds=idle + 1))
        assert (await client.get("/posteingang")).status_code == 303
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        for _ in range(int(web.server.settings.web.session_max // (idle / 2)) + 1):
            web.clock.advance(timedelta(seconds=idle / 2))
            last = await client.get("/posteingang")
        assert last.status_code == 303


async def test_a_session_cookie_from_before_logout_is_refused(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        old = client.cookies["qpr_session"]
        page = await client.get("/konto")
        out = await client.post("/abmelden", data={"csrf": csrf_of(page.text)})
        assert out.headers["location"] == "/anmelden?abgemeldet"
    async with web.client() as replay:
        replay.cookies.set("qpr_session", old, domain="portal.test")
        again = await replay.get("/posteingang")
    assert again.status_code == 303 and again.headers["location"] == "/anmelden"


async def test_a_depositor_sees_no_recipient_pages(web: Web) -> None:
    secret = await web.enrol(MD_NW)
    async with web.client() as client:
        await web.login(client, MD_NW, secret)
        assert (await client.get("/posteingang")).status_code == 404
        assert (await client.get("/hochladen")).status_code == 200


async def test_the_sweep_removes_sessions_past_their_time_and_keeps_live_ones(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as old:
        await web.login(old, LV_NW, secret)
    web.clock.advance(timedelta(seconds=web.server.settings.web.session_idle + 1))
    async with web.client() as fresh:
        await web.login(fresh, LV_NW, secret)
        ended = await websessions.expire(web.server.db, web.clock.now(), web.server.settings.web)
        assert ended == 1
        assert (await fresh.get("/konto")).status_code == 200


async def test_an_oversized_form_is_refused_before_it_is_read_whole(web: Web) -> None:
    async with web.client() as client:
        page = await client.get("/anmelden")
        big = await client.post(
            "/anmelden",
            data={"csrf": csrf_of(page.text), "ik": LV_NW, "passwort": "x" * 300_000},
        )
    assert big.status_code == 413


async def test_over_plain_http_the_cookie_is_not_secure_and_there_is_no_hsts(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    transport = httpx.ASGITransport(app=web.app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://portal.test") as client:
        page = await client.get("/anmelden")
        assert "strict-transport-security" not in page.headers
        step = await client.post(
            "/anmelden", data={"csrf": csrf_of(page.text), "ik": LV_NW, "passwort": PASSWORD}
        )
        cookie = step.headers["set-cookie"]
        assert "HttpOnly" in cookie and "Secure" not in cookie
        code = await client.get("/anmelden/code")
        done = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(code.text), "code": web.code(secret)}
        )
        assert done.status_code == 303
