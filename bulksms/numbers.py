"""Recipient numbers: parse, validate and normalise to E.164, drop duplicates.

Verdicts are phonenumbers' own (`parse` + `is_valid_number`); the version is pinned in
pyproject.toml so that they do not drift between releases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult

# Machine-readable reasons a recipient is refused.
NOT_A_NUMBER = "not_a_number"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
INVALID_COUNTRY_CODE = "invalid_country_code"
MISSING_REGION = "missing_region"
INVALID_FOR_REGION = "invalid_for_region"
COUNTRY_NOT_ALLOWED = "country_not_allowed"

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: INVALID_COUNTRY_CODE,
    NumberParseException.NOT_A_NUMBER: NOT_A_NUMBER,
    NumberParseException.TOO_SHORT_AFTER_IDD: TOO_SHORT,
    NumberParseException.TOO_SHORT_NSN: TOO_SHORT,
    NumberParseException.TOO_LONG: TOO_LONG,
}
_LENGTH_REASONS = {
    ValidationResult.TOO_SHORT: TOO_SHORT,
    ValidationResult.TOO_LONG: TOO_LONG,
    ValidationResult.INVALID_LENGTH: INVALID_FOR_REGION,
    ValidationResult.INVALID_COUNTRY_CODE: INVALID_COUNTRY_CODE,
}


def is_known_region(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


def normalise(raw: str, region: str | None) -> tuple[str | None, str | None]:
    """One number's verdict: (E.164, None) when valid, else (None, reason)."""
    try:
        number = phonenumbers.parse(raw, region)
    except NumberParseException as exc:
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE and region is None:
            stripped = raw.strip()
            if stripped and not stripped.startswith("+"):
                return None, MISSING_REGION
        return None, _PARSE_REASONS.get(exc.error_type, NOT_A_NUMBER)
    if not phonenumbers.is_valid_number(number):
        why = phonenumbers.is_possible_number_with_reason(number)
        return None, _LENGTH_REASONS.get(why, INVALID_FOR_REGION)
    return phonenumbers.format_number(number, PhoneNumberFormat.E164), None


@dataclass
class Recipients:
    """What became of every entry of a request's recipient list."""

    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0
    invalid: list[tuple[str, str]] = field(default_factory=list)

    @property
    def received(self) -> int:
        return len(self.accepted) + self.duplicates + len(self.invalid)


def sort_out(
    entries: Iterable[str], region: str | None, allowed: frozenset[str] = frozenset()
) -> Recipients:
    """Normalise every entry; keep the first of each E.164 number, in request order."""
    result = Recipients()
    seen: set[str] = set()
    verdicts: dict[str, tuple[str | None, str | None]] = {}
    for raw in entries:
        verdict = verdicts.get(raw)
        if verdict is None:
            verdict = verdicts[raw] = normalise(raw, region)
        e164, reason = verdict
        if (
            e164 is not None
            and allowed
            and phonenumbers.region_code_for_number(phonenumbers.parse(e164)) not in allowed
        ):
            e164, reason = None, COUNTRY_NOT_ALLOWED
            verdicts[raw] = (None, reason)
        if e164 is None:
            result.invalid.append((raw, reason or NOT_A_NUMBER))
        elif e164 in seen:
            result.duplicates += 1
        else:
            seen.add(e164)
            result.accepted.append(e164)
    return result
