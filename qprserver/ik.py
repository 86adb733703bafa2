"""The Institutionskennzeichen (IK): nine digits with an ARGE check digit.

Digits 1-2 are the classification, 3-4 the region (Land), 5-8 a serial number
and digit 9 the check digit: digits 3-8 are weighted 2,1,2,1,2,1, the cross sums
of the products are added and the sum modulo 10 is the check digit.
"""

from __future__ import annotations

from dataclasses import dataclass

from qprserver.errors import InvalidIK

CLASSIFICATIONS: dict[str, str] = {
    "10": "Krankenkasse",
    "16": "private Krankenversicherung",
    "18": "Pflegekasse",
    "19": "Medizinischer Dienst",
    "26": "Krankenhaus",
    "46": "ambulante Pflege",
    "50": "ambulante Pflege",
    "51": "stationäre Pflegeeinrichtung",
    "66": "Datenannahme-/Abrechnungsstelle",
}

# Region code (digits 3-4) to the two-letter code of the Land.
REGION_TO_LAND: dict[str, str] = {
    "01": "SH",
    "02": "HH",
    "03": "NI",
    "04": "HB",
    "05": "NW",
    "06": "HE",
    "07": "RP",
    "08": "BW",
    "09": "BY",
    "10": "SL",
    "11": "BE",
    "12": "BB",
    "13": "MV",
    "14": "SN",
    "15": "ST",
    "16": "TH",
}

LAENDER: frozenset[str] = frozenset(REGION_TO_LAND.values())

_WEIGHTS = (2, 1, 2, 1, 2, 1)


def check_digit(ik8: str) -> int:
    """Return the check digit for the first eight digits of an IK."""
    if len(ik8) != 8 or not ik8.isascii() or not ik8.isdigit():
        raise InvalidIK(f"IK-Stamm muss 8 Ziffern haben: {ik8!r}")
    total = 0
    for digit, weight in zip(ik8[2:8], _WEIGHTS, strict=True):
        product = int(digit) * weight
        total += product // 10 + product % 10
    return total % 10


@dataclass(frozen=True, slots=True, order=True)
class IK:
    """A validated Institutionskennzeichen."""

    value: str

    def __post_init__(self) -> None:
        v = self.value
        if not isinstance(v, str) or not v.isascii() or not v.isdigit():
            raise InvalidIK(f"IK {v!r} ungültig: nur Ziffern erlaubt")
        if len(v) != 9:
            raise InvalidIK(f"IK {v!r} ungültig: 9 Ziffern erwartet, {len(v)} gefunden")
        expected = check_digit(v[:8])
        found = int(v[8])
        if expected != found:
            raise InvalidIK(f"IK {v} ungültig: Prüfziffer {expected} erwartet, {found} gefunden")

    @classmethod
    def parse(cls, text: str) -> IK:
        """Parse an IK from user input; surrounding blanks are ignored."""
        return cls(text.strip())

    @property
    def classification(self) -> str:
        """The two classification digits, e.g. "26" for a hospital."""
        return self.value[:2]

    @property
    def classification_name(self) -> str | None:
        """A readable name for the classification, or None when unknown."""
        return CLASSIFICATIONS.get(self.classification)

    @property
    def region(self) -> str:
        """The two region digits."""
        return self.value[2:4]

    @property
    def land(self) -> str | None:
        """The Land's two-letter code, or None for other region codes (not an error)."""
        return REGION_TO_LAND.get(self.region)

    def __str__(self) -> str:
        return self.value


def is_valid_ik(text: str) -> bool:
    """True when text is a valid IK."""
    try:
        IK(text)
    except InvalidIK:
        return False
    return True


def validate_land(code: str) -> str:
    """Return a Land code in upper case, or raise InvalidInput naming the known codes."""
    from qprserver.errors import InvalidInput

    upper = code.strip().upper()
    if upper not in LAENDER:
        known = ", ".join(sorted(LAENDER))
        raise InvalidInput(f"Unbekanntes Land {code!r}; erlaubt: {known}")
    return upper
