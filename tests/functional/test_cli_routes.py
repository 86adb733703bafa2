"""``qprserver route add | remove | list`` through the real CLI.

JSON shapes are checked as "at least these keys", here and in the other CLI tests:
scripts rely on them, and a key added later breaks none of them.
"""

from __future__ import annotations

import pytest

from tests.functional.conftest import Instance
from tests.functional.harness import LV_BY, LV_NW, MD_NW

ROUTE_KEYS = {"kind", "land", "recipient", "name"}


@pytest.fixture
def accounts(instance: Instance) -> Instance:
    instance.ok("account", "add", LV_NW, "--name", "Landesverband NW", "--role", "recipient")
    instance.ok("account", "add", LV_BY, "--name", "Landesverband BY", "--role", "recipient")
    instance.ok("account", "add", MD_NW, "--name", "MD Nordrhein", "--role", "depositor")
    return instance


def test_routes_added_are_listed_with_the_recipients_name_and_removed_again(
    accounts: Instance,
) -> None:
    assert accounts.json("route", "list") == []
    out = accounts.ok(
        "route", "add", "--kind", "pruefbericht", "--land", "nw", "--recipient", LV_NW
    )
    assert out.strip() == f"route pruefbericht NW → {LV_NW} added"
    accounts.ok("route", "add", "--kind", "pruefbericht", "--land", "BY", "--recipient", LV_BY)

    routes = accounts.json("route", "list")
    assert all(set(route) >= ROUTE_KEYS for route in routes)
    assert sorted((r["kind"], r["land"], r["recipient"], r["name"]) for r in routes) == [
        ("pruefbericht", "BY", LV_BY, "Landesverband BY"),
        ("pruefbericht", "NW", LV_NW, "Landesverband NW"),
    ]
    table = accounts.ok("route", "list")
    assert "Landesverband NW" in table and "Empfänger" in table

    out = accounts.ok(
        "route", "remove", "--kind", "pruefbericht", "--land", "BY", "--recipient", LV_BY
    )
    assert out.strip() == "route removed"
    assert [r["recipient"] for r in accounts.json("route", "list")] == [LV_NW]
    actions = [e["action"] for e in accounts.json("audit", "list", "--limit", "2")]
    assert actions == ["route.remove", "route.add"]


def test_route_refusals_are_one_line_each_and_change_nothing(accounts: Instance) -> None:
    add = ("route", "add", "--kind")
    assert accounts.fails(*add, "gutachten", "--land", "NW", "--recipient", LV_NW) == (
        "Error: unknown kind 'gutachten'; configured: pruefbericht, qb_c1, qualitaetsbericht"
    )
    assert accounts.fails(*add, "pruefbericht", "--land", "NW", "--recipient", MD_NW) == (
        f"Error: Konto {MD_NW} hat die Rolle recipient nicht"
    )
    remove = ("route", "remove", "--kind", "pruefbericht", "--land", "NW")
    assert accounts.fails(*remove, "--recipient", LV_NW) == (
        f"Error: keine Route pruefbericht NW → {LV_NW}"
    )
    assert accounts.json("route", "list") == []
