from __future__ import annotations

import pytest

from bulksms import numbers


def test_mixed_formats_normalise_to_e164_and_duplicates_drop() -> None:
    result = numbers.sort_out(
        ["+14155550100", "(415) 555-0100", "415.555.0100", "+1 415 555 0101", "+442079460958"],
        region="US",
    )
    assert result.accepted == ["+14155550100", "+14155550101", "+442079460958"]
    assert result.duplicates == 2
    assert result.invalid == []
    assert result.received == 5


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("hello", numbers.NOT_A_NUMBER),
        ("+1415", numbers.TOO_SHORT),
        ("+1415555010012345678", numbers.TOO_LONG),
        ("+999123456789", numbers.INVALID_COUNTRY_CODE),
        ("4155550100", numbers.MISSING_REGION),
        ("+14155550100", None),
        ("+11235550100", numbers.INVALID_FOR_REGION),
    ],
)
def test_each_refusal_has_a_machine_readable_reason(raw: str, reason: str | None) -> None:
    e164, why = numbers.normalise(raw, None)
    assert why == reason
    assert (e164 is None) == (reason is not None)


def test_allowed_countries_refuse_numbers_elsewhere() -> None:
    result = numbers.sort_out(["+14155550100", "+442079460958"], None, frozenset({"US"}))
    assert result.accepted == ["+14155550100"]
    assert result.invalid == [("+442079460958", numbers.COUNTRY_NOT_ALLOWED)]
