"""What a document's file name may be: one Unicode spelling, no invisible tricks.

Names are compared in NFC, so an NFD spelling (as macOS clients send it) and an NFC
spelling are the same document. Control characters, bidirectional overrides and
isolates, and zero-width characters are refused: they hide or reorder what a person
reads (``510512349_Bericht<U+202E>FDP.exe.pdf`` shows as ``...exe.PDF``), and the
name goes into mails and other people's folders.
"""

from __future__ import annotations

import unicodedata

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff")


def nfc(name: str) -> str:
    """The one spelling a name is stored and compared in."""
    return unicodedata.normalize("NFC", name)


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code < 0xA0


def _described(char: str) -> str:
    label = unicodedata.name(char, "")
    return f"U+{ord(char):04X}" + (f" ({label})" if label else "")


def name_problem(name: str) -> str | None:
    """Why name cannot be a document's name (German, for the uploader); None if it can."""
    for position, char in enumerate(name, start=1):
        if _is_control(char):
            return f"Dateiname enthält das Steuerzeichen {_described(char)} an Stelle {position}"
        if char in BIDI_CONTROLS:
            return (
                f"Dateiname enthält das Schreibrichtungszeichen {_described(char)} an Stelle "
                f"{position}; es verfälscht die angezeigte Reihenfolge der Zeichen"
            )
        if char in ZERO_WIDTH:
            return (
                f"Dateiname enthält das unsichtbare Zeichen {_described(char)} an Stelle {position}"
            )
    return None
