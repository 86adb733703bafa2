"""``account totp``, ``account update`` (restrictions) and ``bans`` through the real CLI."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pyotp
from sqlalchemy.ext.asyncio import AsyncSession

from qprserver.clock import SystemClock
from qprserver.db.models import AuthScore
from tests.functional.conftest import Instance
from tests.functional.harness import LV_NW

UNKNOWN = "185830016"  # valid check digit, no account


def _recipient(instance: Instance) -> None:
    instance.ok("account", "add", LV_NW, "--name", "LV NW", "--role", "recipient")


def test_totp_enable_gives_a_uri_and_ten_codes_and_disable_removes_the_factor(
    instance: Instance,
) -> None:
    _recipient(instance)
    enrolment = instance.json("account", "totp", "enable", LV_NW)
    assert set(enrolment) >= {"uri", "recovery_codes"}
    uri = urlsplit(enrolment["uri"])
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    pyotp.TOTP(parse_qs(uri.query)["secret"][0]).now()  # a usable base32 secret
    assert len(set(enrolment["recovery_codes"])) == 10
    assert instance.json("account", "show", LV_NW)["second_factor"] is True

    # Enabling again replaces the secret; the text form is for a person with a phone.
    text = instance.ok("account", "totp", "enable", LV_NW)
    assert "otpauth://totp/" in text and "Wiederherstellungscodes" in text
    assert enrolment["uri"] not in text

    out = instance.ok("account", "totp", "disable", LV_NW)
    assert out.strip() == f"second factor of {LV_NW} removed"
    assert instance.json("account", "show", LV_NW)["second_factor"] is False
    assert instance.fails("account", "totp", "disable", LV_NW) == (
        f"Error: Konto {LV_NW} hat keinen zweiten Faktor"
    )
    assert instance.fails("account", "totp", "enable", UNKNOWN) == (
        f"Error: kein Konto mit IK {UNKNOWN}"
    )
    actions = [e["action"] for e in instance.json("audit", "list", "--account", LV_NW)]
    assert actions[:3] == ["totp.disable", "totp.enable", "totp.enable"]


def test_account_update_sets_every_field_and_empty_values_reset_them(instance: Instance) -> None:
    _recipient(instance)
    out = instance.ok(
        "account", "update", LV_NW,
        "--name", "Landesverband Nordrhein-Westfalen",
        "--email", "Post@LV.example.org",
        "--no-notify",
        "--bundles",
        "--allow-network", "192.0.2.0/24",
        "--allow-network", "2001:db8::1/48",
        "--max-sessions", "2",
        "--expires", "2027-01-31",
    )  # fmt: skip
    assert out.strip() == f"account {LV_NW} updated"
    shown = instance.json("account", "show", LV_NW)
    assert {k: shown[k] for k in _UPDATED} == {
        "name": "Landesverband Nordrhein-Westfalen",
        "email": "Post@lv.example.org",
        "notify": False,
        "bundles": True,
        "allowed_networks": ["192.0.2.0/24", "2001:db8::/48"],
        "max_sessions": 2,
        "expires_at": "2027-01-31T00:00:00+00:00",
    }

    instance.ok(
        "account", "update", LV_NW,
        "--email", "", "--notify", "--no-bundles", "--allow-network", "",
        "--max-sessions", "0", "--expires", "",
    )  # fmt: skip
    shown = instance.json("account", "show", LV_NW)
    assert {k: shown[k] for k in _UPDATED} == {
        "name": "Landesverband Nordrhein-Westfalen",
        "email": None,
        "notify": True,
        "bundles": False,
        "allowed_networks": [],
        "max_sessions": None,
        "expires_at": None,
    }
    (event,) = instance.json("audit", "list", "--account", LV_NW, "--limit", "1")
    assert event["action"] == "account.update"
    assert event["details"]["max_sessions"] is None and event["details"]["email"] is None


_UPDATED = ("name", "email", "notify", "bundles", "allowed_networks", "max_sessions", "expires_at")


def test_account_update_refuses_bad_values_with_one_line_and_changes_nothing(
    instance: Instance,
) -> None:
    _recipient(instance)
    before = instance.json("account", "show", LV_NW)
    update = ("account", "update", LV_NW)
    assert instance.fails(*update, "--expires", "bald") == "Error: --expires 'bald' is no ISO date"
    assert instance.fails(*update, "--allow-network", "300.1.1.0/24") == (
        "Error: '300.1.1.0/24' ist kein IP-Netz (CIDR)"
    )
    assert instance.fails(*update, "--name", " ") == "Error: Name darf nicht leer sein"
    assert instance.fails("account", "update", UNKNOWN, "--no-notify") == (
        f"Error: kein Konto mit IK {UNKNOWN}"
    )
    assert instance.json("account", "show", LV_NW) == before


def test_bans_in_force_are_listed_and_lifted_by_address_or_ik(instance: Instance) -> None:
    _recipient(instance)
    now = SystemClock().now()

    async def ban(session: AsyncSession) -> None:
        # What the login path writes after too many failures (see security/bans.py).
        for key, until in (
            ("addr:192.0.2.7", now + timedelta(hours=1)),
            (f"account:{LV_NW}", now + timedelta(minutes=15)),
            ("addr:192.0.2.8", now - timedelta(minutes=1)),  # expired: not listed
        ):
            session.add(
                AuthScore(
                    key=key,
                    failures=0,
                    window_start=now,
                    offences=1,
                    banned_until=until,
                    updated_at=now,
                )
            )

    instance.in_session(ban)
    bans = instance.json("bans", "list")
    assert all(set(b) >= {"key", "banned_until", "offences"} for b in bans)
    assert [(b["key"], b["offences"]) for b in bans] == [
        (f"account:{LV_NW}", 1),
        ("addr:192.0.2.7", 1),
    ]
    assert "192.0.2.7" in instance.ok("bans", "list")

    assert instance.ok("bans", "remove", "192.0.2.7").strip() == "ban on 192.0.2.7 lifted"
    assert instance.ok("bans", "remove", LV_NW).strip() == f"ban on {LV_NW} lifted"
    assert instance.json("bans", "list") == []
    assert instance.fails("bans", "remove", "192.0.2.9") == "Error: keine Sperre für addr:192.0.2.9"
