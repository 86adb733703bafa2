"""The QS-Stellen's mismatch files: columns by name, every bad row by its line."""

from __future__ import annotations

import pytest

from qprserver.errors import InvalidInput
from qprserver.qb.correction import Mismatch, parse

HOSPITAL = "260100023"


def test_a_mismatch_file_reads_its_columns_by_name_in_any_order_and_case() -> None:
    data = f"\ufeffGrund;IK;Standortnummer\n  IK  weicht   ab ;{HOSPITAL};01\n\n".encode()
    assert parse(data) == [Mismatch(2, HOSPITAL, "01", "IK weicht ab")]


def test_every_bad_row_is_named_by_its_line_and_nothing_is_returned() -> None:
    data = (
        "IK;Standort;Grund\n"
        f"{HOSPITAL};01;ok\n"
        "260100024;01;Prüfziffer\n"
        f"{HOSPITAL};1;einstellig\n"
        f"{HOSPITAL};01;doppelt\n"
        f"{HOSPITAL};02\n"
    ).encode()
    with pytest.raises(InvalidInput) as refused:
        parse(data)
    message = str(refused.value)
    assert message.startswith("mismatches: 4 bad rows, nothing imported: line 3: IK 260100024")
    assert "line 4: Standort '1' is neither two nor six digits" in message
    assert f"line 5: IK {HOSPITAL} Standort 01 repeats line 2" in message
    assert "line 6: 2 columns, expected 3" in message


def test_a_header_without_the_reason_column_is_refused_naming_it() -> None:
    with pytest.raises(InvalidInput, match=r"line 1: header needs the columns IK;Standort;Grund"):
        parse(f"IK;Standort\n{HOSPITAL};01\n".encode())
