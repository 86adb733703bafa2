from __future__ import annotations

import unicodedata

import pytest

from qprserver.exchange.names import name_problem, nfc


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a\x00b", "Dateiname enthält das Steuerzeichen U+0000 an Stelle 2"),
        ("\x1b[31m", "Dateiname enthält das Steuerzeichen U+001B an Stelle 1"),
        ("ab\x7f", "Dateiname enthält das Steuerzeichen U+007F an Stelle 3"),
        ("a\x9bb", "Dateiname enthält das Steuerzeichen U+009B an Stelle 2"),
        (
            "x\u202dy",
            "Dateiname enthält das Schreibrichtungszeichen U+202D (LEFT-TO-RIGHT OVERRIDE) an "
            "Stelle 2; es verfälscht die angezeigte Reihenfolge der Zeichen",
        ),
        (
            "x\u2069",
            "Dateiname enthält das Schreibrichtungszeichen U+2069 (POP DIRECTIONAL ISOLATE) an "
            "Stelle 2; es verfälscht die angezeigte Reihenfolge der Zeichen",
        ),
        (
            "\u200dx",
            "Dateiname enthält das unsichtbare Zeichen U+200D (ZERO WIDTH JOINER) an Stelle 1",
        ),
        ("x\u2060", "Dateiname enthält das unsichtbare Zeichen U+2060 (WORD JOINER) an Stelle 2"),
    ],
)
def test_invisible_and_reordering_characters_are_refused_with_their_reason(
    name: str, reason: str
) -> None:
    assert name_problem(name) == reason


@pytest.mark.parametrize(
    "name",
    ["510512349_Prüfbericht.pdf", "Bericht (Kopie) – 2026.pdf", "日本語.pdf", "a\u00a0b.pdf"],
)
def test_ordinary_names_pass(name: str) -> None:
    assert name_problem(name) is None


def test_nfc_makes_one_spelling_of_nfd() -> None:
    name = "Müller.pdf"
    assert nfc(unicodedata.normalize("NFD", name)) == name
