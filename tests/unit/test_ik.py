from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qprserver.errors import InvalidIK
from qprserver.ik import IK, check_digit, is_valid_ik, validate_land

REAL_IKS = ["105830016", "185830016", "661430035", "260100023"]


def test_worked_example_from_the_design_gives_check_digit_2() -> None:
    assert check_digit("26032682") == 2
    assert IK("260326822").value == "260326822"


@pytest.mark.parametrize("value", REAL_IKS)
def test_real_iks_pass(value: str) -> None:
    assert is_valid_ik(value)


def test_wrong_check_digit_names_expected_and_found_digit() -> None:
    with pytest.raises(InvalidIK, match="Prüfziffer 2 erwartet, 3 gefunden"):
        IK("260326823")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("12345678", "9 Ziffern erwartet, 8 gefunden"),
        ("1234567890", "9 Ziffern erwartet, 10 gefunden"),
        ("26032682x", "nur Ziffern"),
        ("２６０３２６８２２", "nur Ziffern"),  # full-width digits are not ASCII digits
        ("", "nur Ziffern"),
    ],
)
def test_malformed_iks_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(InvalidIK, match=message):
        IK(value)


def test_classification_and_land_are_exposed() -> None:
    ik = IK("260100023")
    assert ik.classification == "26"
    assert ik.classification_name == "Krankenhaus"
    assert ik.region == "01"
    assert ik.land == "SH"


def test_unknown_region_is_not_an_error_and_has_no_land() -> None:
    stem = "2699123"
    value = stem + "4" + str(check_digit(stem + "4"))
    assert IK(value).land is None


def test_parse_ignores_surrounding_blanks() -> None:
    assert IK.parse(" 105830016\n") == IK("105830016")


def test_land_codes_are_validated() -> None:
    assert validate_land("nw") == "NW"
    with pytest.raises(Exception, match="Unbekanntes Land 'XX'"):
        validate_land("XX")


valid_iks = st.from_regex(r"\A[0-9]{8}\Z").map(lambda s: s + str(check_digit(s)))


@given(valid_iks)
def test_every_generated_ik_with_its_check_digit_is_valid(value: str) -> None:
    assert IK(value).value == value


@given(valid_iks, st.integers(min_value=2, max_value=8), st.integers(min_value=1, max_value=9))
def test_changing_any_one_of_digits_3_to_9_makes_a_valid_ik_invalid(
    value: str, position: int, delta: int
) -> None:
    digits = list(value)
    digits[position] = str((int(digits[position]) + delta) % 10)
    # Weights 2,1,2,1,2,1 on digits 3-8: d -> crosssum(2d) and d -> d are bijections
    # on 0..9, so a change of one digit always changes the sum modulo 10.
    assert not is_valid_ik("".join(digits))
