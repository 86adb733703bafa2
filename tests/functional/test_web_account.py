"""Konto: password, second factor, recovery codes, SSH keys, notifications, sessions."""

from __future__ import annotations

from datetime import timedelta

import asyncssh
import pyotp

from qprserver.accounts import service as accounts
from tests.functional.harness import LV_NW
from tests.functional.web import PASSWORD, Web, csrf_of


async def test_a_new_password_needs_the_old_one_and_ends_the_other_sessions(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as other, web.client() as client:
        await web.login(other, LV_NW, secret)
        await web.login(client, LV_NW, secret)
        before = client.cookies["qpr_session"]
        token = await web.token(client)
        wrong = await client.post(
            "/konto/passwort",
            data={
                "csrf": token,
                "altes_passwort": "nicht das alte",
                "neues_passwort": "ganz neues Passwort",
                "wiederholung": "ganz neues Passwort",
            },
        )
        assert wrong.status_code == 400 and "stimmt nicht" in wrong.text
        short = await client.post(
            "/konto/passwort",
            data={
                "csrf": token,
                "altes_passwort": PASSWORD,
                "neues_passwort": "kurz",
                "wiederholung": "kurz",
            },
        )
        assert short.status_code == 400 and "mindestens 12 Zeichen" in short.text
        web.clock.advance(timedelta(seconds=1))
        done = await client.post(
            "/konto/passwort",
            data={
                "csrf": token,
                "altes_passwort": PASSWORD,
                "neues_passwort": "ganz neues Passwort",
                "wiederholung": "ganz neues Passwort",
            },
        )
        assert done.status_code == 303 and client.cookies["qpr_session"] != before
        assert (await client.get("/konto")).status_code == 200
        assert (await other.get("/konto")).status_code == 303
    async with web.client() as client:
        assert (await web.password_step(client, LV_NW, "ganz neues Passwort")).status_code == 303


async def test_re_enrolling_replaces_the_secret_only_once_a_code_of_the_new_one_is_given(
    web: Web,
) -> None:
    old = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, old)
        started = await client.post("/konto/zweiter-faktor", data={"csrf": await web.token(client)})
        assert started.headers["location"] == "/konto/zweiter-faktor"
        page = await client.get("/konto/zweiter-faktor")
        new = page.text.split('class="geheim">')[1].split("<")[0].replace(" ", "")
        code = pyotp.TOTP(new).at(web.clock.now())
        done = await client.post(
            "/konto/zweiter-faktor/bestaetigen", data={"csrf": csrf_of(page.text), "code": code}
        )
        assert done.status_code == 200 and "Wiederherstellungscodes" in done.text
    web.clock.advance(timedelta(seconds=60))
    async with web.client() as client:
        await web.password_step(client, LV_NW)
        page = await client.get("/anmelden/code")
        stale = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(page.text), "code": web.code(old)}
        )
        assert stale.status_code == 200
        fresh = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(page.text), "code": web.code(new)}
        )
        assert fresh.headers["location"] == "/"


async def test_new_recovery_codes_replace_the_old_ones(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        page = await client.post(
            "/konto/wiederherstellungscodes", data={"csrf": await web.token(client)}
        )
    codes = [c.split("<")[0] for c in page.text.split("<li><code>")[1:]]
    assert len(codes) == 10
    async with web.client() as client:
        await web.password_step(client, LV_NW)
        form = await client.get("/anmelden/code")
        used = await client.post(
            "/anmelden/code", data={"csrf": csrf_of(form.text), "code": codes[0]}
        )
        assert used.headers["location"] == "/"


async def test_ssh_keys_are_added_listed_and_removed(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    key = asyncssh.generate_private_key("ssh-ed25519")
    line = key.export_public_key().decode().strip()
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        bad = await client.post(
            "/konto/schluessel",
            data={"csrf": await web.token(client), "schluessel": "kein Schlüssel"},
        )
        assert bad.status_code == 400 and "wird nicht unterstützt" in bad.text
        added = await client.post(
            "/konto/schluessel", data={"csrf": await web.token(client), "schluessel": line}
        )
        assert added.status_code == 303
        page = (await client.get("/konto")).text
        fingerprint = key.get_fingerprint("sha256")
        assert fingerprint in page
        async with web.server.db.read_session() as session:
            account = await accounts.get_account(session, LV_NW)
        assert fingerprint in [k.fingerprint for k in account.keys]
        removed = await client.post(
            "/konto/schluessel/entfernen",
            data={"csrf": csrf_of(page), "fingerabdruck": fingerprint},
        )
        assert removed.status_code == 303
        assert fingerprint not in (await client.get("/konto")).text


async def test_notification_settings_are_saved(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as client:
        await web.login(client, LV_NW, secret)
        await client.post(
            "/konto/benachrichtigungen", data={"csrf": await web.token(client), "buendel": "ja"}
        )
    async with web.server.db.read_session() as session:
        account = await accounts.get_account(session, LV_NW)
    assert (account.notify, account.bundles) == (False, True)


async def test_logging_out_everywhere_ends_every_session_of_the_account(web: Web) -> None:
    secret = await web.enrol(LV_NW)
    async with web.client() as first, web.client() as second:
        await web.login(first, LV_NW, secret)
        await web.login(second, LV_NW, secret)
        listing = (await second.get("/konto")).text
        assert listing.count("(diese Sitzung)") == 1 and listing.count("<tr><td>") >= 2
        out = await second.post("/konto/abmelden-ueberall", data={"csrf": csrf_of(listing)})
        assert out.headers["location"] == "/anmelden?abgemeldet"
        assert (await first.get("/konto")).status_code == 303
        assert (await second.get("/konto")).status_code == 303
