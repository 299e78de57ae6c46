from __future__ import annotations

import pytest

from bulksms import numbers
from bulksms.devstack.numbers_gen import random_e164


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
    assert result.invalid == [("+442079460958", numbers.COUNTRY_NOT_ALLOWED, 1, None)]
    national = numbers.sort_out(["020 7946 0958"], "GB", frozenset({"US"}))
    assert national.invalid == [("020 7946 0958", numbers.COUNTRY_NOT_ALLOWED, 0, None)]


def test_every_refusal_is_counted_and_the_first_few_explained() -> None:
    result = numbers.sort_out(["+1415"] * 5 + ["junk"] * 5 + ["+14155550100"], None, keep_invalid=3)
    assert result.invalid_count == 10
    assert result.invalid == [("+1415", numbers.TOO_SHORT, place, None) for place in range(3)]
    assert result.received == 11


def test_the_fast_path_gives_phonenumbers_verdicts_on_a_large_random_sample() -> None:
    import phonenumbers

    sample = random_e164(60_000, seed=20261129)
    fast_taken = valid = 0
    for raw in sample:
        try:
            parsed = phonenumbers.parse(raw, None)
            truth = phonenumbers.is_valid_number(parsed) and phonenumbers.format_number(
                parsed, phonenumbers.PhoneNumberFormat.E164
            )
            region = phonenumbers.region_code_for_number(parsed) if truth else None
        except phonenumbers.NumberParseException:
            truth, region = False, None
        fast = numbers.fast_verdict(raw)
        if fast is not None:
            fast_taken += 1
            assert bool(fast) == bool(truth), raw
            if fast:
                assert (truth, fast) == (raw, region), raw
        assert (numbers.normalise(raw, None)[0] or False) == truth, raw
        valid += bool(truth)
    # The sample exercises both verdicts, and the fast path takes most of it.
    assert 0.2 < valid / len(sample) < 0.8
    assert fast_taken / len(sample) > 0.8


def test_a_big_list_judged_in_bulk_gets_each_entrys_own_verdict() -> None:
    """The bulk pass (a list's main calling code, one expression over all of it) must agree
    with one verdict per entry, line breaks and all, in request order."""
    mix = random_e164(30_000, seed=21)
    listed = [n for n in mix if n.startswith("+1")] + mix[:3000]
    listed += ["+1\n2015550100", "+12015550100\n", "+1201555\n0100", listed[0], " +12015550100"]
    bulk = numbers.sort_out(listed, None)
    one_by_one, seen = numbers.Recipients(), set()
    for raw in listed:
        e164, _ = numbers.normalise(raw, None)
        if e164 is None:
            one_by_one.invalid_count += 1
        elif e164 in seen:
            one_by_one.duplicates += 1
        else:
            seen.add(e164)
            one_by_one.accepted.append(e164)
    assert len(listed) >= numbers.BULK_FROM
    assert bulk.accepted == one_by_one.accepted
    assert (bulk.duplicates, bulk.invalid_count) == (
        one_by_one.duplicates,
        one_by_one.invalid_count,
    )


def test_a_line_break_cannot_make_a_list_look_all_valid() -> None:
    """One entry splits into two valid lines, one entry is invalid: as many valid lines as
    entries, yet neither of those two entries is valid."""
    good = [f"+1201555{n:04d}" for n in range(2000)]
    listed = [*good[:1998], f"{good[1998]}\n{good[1999]}", "not a number"]
    result = numbers.sort_out(listed, None)
    assert result.accepted == good[:1998]
    assert result.invalid_count == 2
