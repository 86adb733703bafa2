"""Activation letters as PDF, laid out after DIN 5008 (form B), with reportlab.

One page per letter: letterhead, the return-address line and the recipient in the
address window (20 mm from the left, 45 mm from the top, 85 × 45 mm, so it shows in a
DL window envelope), date, subject, the activation code set large in a monospaced
face, and what to do with it. Several letters go into one file, one per page, for
printing in one go.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import BinaryIO
from zoneinfo import ZoneInfo

from reportlab.lib.pagesizes import A4
from reportlab.lib.units import mm
from reportlab.pdfgen.canvas import Canvas

from qprserver.accounts.activation import Letter

_LEFT = 25 * mm  # text margin (DIN 5008: 25 mm)
_ADDRESS_LEFT = 20 * mm
_ADDRESS_TOP = 45 * mm
_WIDTH = A4[0] - _LEFT - 20 * mm
_ZONE = ZoneInfo("Europe/Berlin")


def _date(value: datetime) -> str:
    return value.astimezone(_ZONE).strftime("%d.%m.%Y")


def _wrap(canvas: Canvas, text: str, font: str, size: float) -> list[str]:
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words, line = paragraph.split(), ""
        for word in words:
            candidate = f"{line} {word}".strip()
            if canvas.stringWidth(candidate, font, size) > _WIDTH and line:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def _page(
    canvas: Canvas, letter: Letter, sender: Sequence[str], portal_url: str, today: datetime
) -> None:
    height = A4[1]
    canvas.setTitle("Aktivierungsbrief")
    canvas.setFont("Helvetica-Bold", 14)
    canvas.drawString(_LEFT, height - 20 * mm, sender[0] if sender else "QPR-Portal")
    canvas.setFont("Helvetica", 9)
    for i, line in enumerate(sender[1:]):
        canvas.drawString(_LEFT, height - (26 + 4.5 * i) * mm, line)
    # Address window: return line, then the recipient.
    top = height - _ADDRESS_TOP
    canvas.setFont("Helvetica", 7)
    canvas.drawString(_ADDRESS_LEFT + 5 * mm, top - 5 * mm, " · ".join(sender))
    canvas.setFont("Helvetica", 11)
    recipient = [letter.institution, f"z. Hd. {letter.contact}", letter.street]
    recipient.append(f"{letter.postcode} {letter.city}")
    for i, line in enumerate(recipient):
        canvas.drawString(_ADDRESS_LEFT + 5 * mm, top - (17 + 5 * i) * mm, line)
    y = height - 103 * mm
    canvas.drawRightString(A4[0] - 20 * mm, y, _date(today))
    y -= 12 * mm
    canvas.setFont("Helvetica-Bold", 12)
    canvas.drawString(_LEFT, y, f"Aktivierung Ihres Zugangs – IK {letter.ik}")
    y -= 10 * mm
    body = (
        f"Sehr geehrte Damen und Herren,\n\n"
        f"für {letter.institution} (IK {letter.ik}) wurde ein Zugang zum Portal "
        f"freigeschaltet. Damit niemand anderes einen Zugang auf Ihren Namen nutzt, wird "
        f"er erst mit dem folgenden Aktivierungscode wirksam, den wir Ihnen per Post "
        f"senden. Melden Sie sich unter {portal_url} mit Ihrem IK, Ihrem Passwort und dem "
        f"zweiten Faktor an und geben Sie den Code ein, wenn das Portal danach fragt:"
    )
    canvas.setFont("Helvetica", 11)
    for line in _wrap(canvas, body, "Helvetica", 11):
        canvas.drawString(_LEFT, y, line)
        y -= 5.5 * mm
    y -= 6 * mm
    canvas.setFont("Courier-Bold", 20)
    canvas.drawString(_LEFT + 10 * mm, y, letter.code)
    y -= 14 * mm
    canvas.setFont("Helvetica", 11)
    after = (
        f"Der Code gilt bis zum {_date(letter.expires_at)} und nur einmal. Groß- und "
        f"Kleinschreibung sowie Bindestriche spielen keine Rolle. Haben Sie keinen Zugang "
        f"beantragt, wenden Sie sich bitte an den Betreiber; der Zugang bleibt ohne den "
        f"Code gesperrt.\n\nMit freundlichen Grüßen\n\n{sender[0] if sender else 'QPR-Portal'}"
    )
    for line in _wrap(canvas, after, "Helvetica", 11):
        canvas.drawString(_LEFT, y, line)
        y -= 5.5 * mm
    canvas.setFont("Helvetica", 8)
    canvas.drawString(_LEFT, 15 * mm, f"Registrierung {letter.registration_id} · IK {letter.ik}")
    canvas.showPage()


def write_letters(
    out: BinaryIO,
    letters: Sequence[Letter],
    *,
    sender: Sequence[str],
    portal_url: str,
    today: datetime,
) -> None:
    """Write one PDF with one page per letter to ``out``."""
    canvas = Canvas(out, pagesize=A4, invariant=True)
    canvas.setAuthor(sender[0] if sender else "QPR-Portal")
    for letter in letters:
        _page(canvas, letter, sender, portal_url, today)
    canvas.save()
