"""Phone numbers made from phonenumbers' own example numbers, for the tests and the bench
(here rather than in tests/ so the bench imports nothing from the tests)."""

from __future__ import annotations

import phonenumbers


def us_numbers(count: int, start: int = 0) -> list[str]:
    """`count` distinct valid US numbers (+1 201 555 xxxx, then further area codes)."""
    result: list[str] = []
    area_codes = (201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214, 215, 216)
    n = start
    while len(result) < count:
        area, line = area_codes[n // 9000], 1000 + n % 9000
        candidate = f"+1{area}555{line:04d}"
        if phonenumbers.is_valid_number(phonenumbers.parse(candidate)):
            result.append(candidate)
        n += 1
    return result


def random_e164(count: int, seed: int) -> list[str]:
    """A hard mix of "+digits" strings: real example numbers with digits changed, calling codes
    with random national numbers of every length, and plain random digits."""
    import random

    from phonenumbers import (
        COUNTRY_CODE_TO_REGION_CODE,
        PhoneNumberFormat,
        PhoneNumberType,
        example_number_for_type,
    )
    from phonenumbers import format_number as fmt

    rng = random.Random(seed)
    examples: list[str] = []
    for regions in COUNTRY_CODE_TO_REGION_CODE.values():
        for region in regions:
            for kind in (
                PhoneNumberType.MOBILE,
                PhoneNumberType.FIXED_LINE,
                PhoneNumberType.TOLL_FREE,
                PhoneNumberType.VOIP,
            ):
                number = example_number_for_type(region, kind) if region != "001" else None
                if number is not None:
                    examples.append(fmt(number, PhoneNumberFormat.E164))
    codes = [str(c) for c in COUNTRY_CODE_TO_REGION_CODE]
    result: list[str] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.5:
            base = list(rng.choice(examples))
            for _ in range(rng.choice((1, 2, 3, 4))):
                base[rng.randrange(len(base) - 4, len(base))] = str(rng.randrange(10))
            if rng.random() < 0.1:
                base.append(str(rng.randrange(10)))
            elif rng.random() < 0.1:
                base.pop()
            result.append("".join(base))
        elif roll < 0.85:
            result.append(
                "+"
                + rng.choice(codes)
                + "".join(str(rng.randrange(10)) for _ in range(rng.randrange(4, 15)))
            )
        else:
            result.append(
                "+"
                + str(rng.randrange(1, 10))
                + "".join(str(rng.randrange(10)) for _ in range(rng.randrange(2, 16)))
            )
    return result
