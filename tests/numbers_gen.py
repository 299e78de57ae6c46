"""Valid numbers for tests, made with phonenumbers' own example numbers."""

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
