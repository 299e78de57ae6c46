"""Recipient numbers: parse, validate and normalise to E.164, drop duplicates.

Verdicts are phonenumbers' own (`parse` + `is_valid_number`); the version is pinned in
pyproject.toml so that they do not drift between releases.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumberFormat,
    ValidationResult,
)
from phonenumbers.phonenumberutil import region_code_for_country_code

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


# -- the fast path ----------------------------------------------------------------------------
# phonenumbers costs ~25 µs a number (parse builds objects, validation walks the metadata one
# pattern at a time). For the common input, "+" and digits, the same verdict comes from one
# regular expression per country calling code, compiled from phonenumbers' own metadata so that
# it follows `is_valid_number` step by step:
#   - the calling code is the first 1-3 digits found in COUNTRY_CODE_TO_REGION_CODE;
#   - the national number is the rest, unless phonenumbers would strip a national prefix or
#     keep Italian leading zeros: such inputs take the slow path;
#   - a number is valid for a region when it matches the general description and at least one
#     number type, with each description's possible lengths;
#   - where regions share a calling code, a region is chosen as `region_code_for_number` does:
#     in list order, the first whose leading digits match, or which has no leading digits and
#     in which the number is valid; the number is then valid only in the chosen region.
# tests/unit/test_numbers.py checks the verdicts against phonenumbers on a large random sample.

_FAST_INPUT = re.compile(r"\+[1-9]\d{2,19}", re.ASCII)
# A number is valid when its general pattern and any one type's pattern match: phonenumbers
# tries the types in another order, but only to name the type. The common types come first, so
# most numbers match on the first alternative (a third of the time a number takes).
_TYPES = (
    "mobile",
    "fixed_line",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _desc(desc: object) -> str | None:
    """A lookahead true when `_is_number_matching_desc(nsn, desc)` is; None when it never is."""
    pattern = getattr(desc, "national_number_pattern", None)
    if not pattern:
        return None
    lengths = tuple(getattr(desc, "possible_length", None) or ())
    positive = [n for n in lengths if n > 0]
    if lengths and not positive:  # [-1]: no number has this type
        return None
    alternatives = "|".join(rf"\d{{{n}}}" for n in positive)
    length = rf"(?=(?:{alternatives})\Z)" if lengths else ""
    return rf"{length}(?=(?:{pattern})\Z)"


def _valid_in(metadata: object) -> str:
    """A regex true when `_number_type_helper(nsn, metadata) != UNKNOWN`."""
    general = _desc(getattr(metadata, "general_desc", None))
    types = [d for d in (_desc(getattr(metadata, t, None)) for t in _TYPES) if d]
    if general is None or not types:
        return "(?!)"
    joined = "|".join(types)
    return rf"{general}(?:{joined})\d+"


@dataclass(frozen=True)
class _Plan:
    national_prefix: re.Pattern[str] | None
    valid: re.Pattern[str]
    code: str

    @functools.cached_property
    def lines(self) -> re.Pattern[str]:
        """`valid` for a whole list at once: every line that is a valid number of this calling
        code (capturing and named groups made plain, so that `findall` returns the lines)."""
        text = self.valid.pattern.replace(r"\Z", "$")
        text = re.sub(r"\(\?P<\w+>", "(?:", text)
        text = re.sub(r"(?<!\\)\((?!\?)", "(?:", text)
        return re.compile(rf"^\+{self.code}{text}$", re.ASCII | re.MULTILINE)


@functools.cache
def _plans() -> dict[str, _Plan]:
    plans: dict[str, _Plan] = {}
    for code, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        main = PhoneMetadata.metadata_for_region_or_calling_code(
            code, region_code_for_country_code(code)
        )
        if main is None:
            continue
        branches: list[str] = []
        if len(regions) == 1:
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, regions[0])
            branches.append(f"(?P<R_{regions[0]}>{_valid_in(metadata)})")
        else:
            earlier: list[str] = []
            for region in regions:
                metadata = PhoneMetadata.metadata_for_region(region, None)
                if metadata is None:
                    continue
                guard = "".join(f"(?!{ld})" for ld in earlier)
                if metadata.leading_digits is not None:
                    guard += f"(?={metadata.leading_digits})"
                    earlier.append(metadata.leading_digits)
                branches.append(f"(?P<R_{region}>{guard}{_valid_in(metadata)})")
        prefix = main.national_prefix_for_parsing
        # The inputs that take the slow path are refused by the same expression, so that the
        # common case is one match: checked again only when it fails (`fast_verdict`).
        not_slow = f"(?!0)(?!{prefix})" if prefix else "(?!0)"
        plans[str(code)] = _Plan(
            re.compile(prefix) if prefix else None,
            # ASCII: a match is then "+" and ASCII digits only, as E.164 is.
            re.compile(f"{not_slow}(?:{'|'.join(branches)})", re.ASCII),
            str(code),
        )
    _PLANS.update(plans)
    return plans


_PLANS: dict[str, _Plan] = {}  # `_plans()`, once made: read without a call on the hot path


def _plan_of(raw: str) -> tuple[_Plan, int] | None:
    """The plan of a "+digits" string's calling code, and where its national number starts."""
    plans = _PLANS or _plans()
    for end in (2, 3, 4):  # (calling codes are a prefix code: at most one of these is one)
        plan = plans.get(raw[1:end])
        if plan is not None:
            return plan, end
    return None


def fast_verdict(raw: str) -> str | Literal[False] | None:
    """phonenumbers' verdict on a "+digits" string: the number's region when it is valid (and
    `raw` is then its E.164 form), False when it is not, None when this input needs phonenumbers
    itself."""
    if raw[:1] != "+":
        return None
    known = _plan_of(raw)
    if known is None:
        return None
    plan, start = known
    found = plan.valid.fullmatch(raw, start)
    if found is not None:
        return (found.lastgroup or "R_ZZ")[2:]
    # No match: invalid, unless the input is one phonenumbers must judge itself.
    if not _FAST_INPUT.fullmatch(raw):
        return None
    if raw[start : start + 1] in ("", "0") or (
        plan.national_prefix and plan.national_prefix.match(raw, start)
    ):
        return None
    return False


def prepare() -> None:
    """Compile the fast path's expressions (about 0.25 s) ahead of the first request."""
    for plan in _plans().values():
        _ = plan.lines


def is_known_region(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


def normalise(raw: str, region: str | None) -> tuple[str | None, str | None]:
    """One number's verdict: (E.164, None) when valid, else (None, reason)."""
    return (raw, None) if fast_verdict(raw) else _slow(raw, region)


def _slow(raw: str, region: str | None) -> tuple[str | None, str | None]:
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
    invalid_count: int = 0
    # the first few refusals: the entry, the reason, its place in the list, what it lacks
    invalid: list[tuple[str, str, int, str | None]] = field(default_factory=list)
    suppressed: int = 0  # valid, but opted out
    rows: list[int] | None = None  # when asked for: each accepted number's place in the list

    @property
    def received(self) -> int:
        return len(self.accepted) + self.duplicates + self.invalid_count + self.suppressed

    def suppress(self, opted_out: set[str]) -> None:
        if opted_out:
            kept = [i for i, n in enumerate(self.accepted) if n not in opted_out]
            self.keep(kept)
            self.suppressed += len(opted_out)

    def keep(self, indexes: list[int]) -> None:
        """Keep only these accepted numbers (places in `accepted`, in order)."""
        if len(indexes) == len(self.accepted):
            return
        self.accepted = [self.accepted[i] for i in indexes]
        if self.rows is not None:
            self.rows = [self.rows[i] for i in indexes]

    def refuse(
        self,
        raw: str,
        reason: str | Callable[[], str],
        keep: int,
        place: int = -1,
        lacking: str | None = None,
    ) -> None:
        self.invalid_count += 1
        if len(self.invalid) < keep:
            self.invalid.append(
                (raw, reason if isinstance(reason, str) else reason(), place, lacking)
            )


def sort_out(
    entries: Iterable[str],
    region: str | None,
    allowed: frozenset[str] = frozenset(),
    keep_invalid: int = 100,
    rows: bool = False,
) -> Recipients:
    """Normalise every entry; keep the first of each E.164 number, in request order.

    Only the first `keep_invalid` refusals are explained (a reason may cost phonenumbers' full
    parse); every refusal is counted. With `rows`, `Recipients.rows` says where each accepted
    number was in `entries`.
    """
    result = Recipients(rows=[] if rows else None)
    seen: set[str] = set()
    slow: dict[str, tuple[str | None, str | None, str | None]] = {}
    entries = list(entries)
    valid = set() if allowed else _valid_in_bulk(entries)
    if valid is ALL:  # nothing to judge one by one: only duplicates to drop
        if rows:
            first: dict[str, int] = {}
            for place, raw in enumerate(entries):
                first.setdefault(raw, place)
            result.accepted, result.rows = list(first), list(first.values())
        else:
            result.accepted = list(dict.fromkeys(entries))  # (in request order)
        result.duplicates = len(entries) - len(result.accepted)
        return result
    seen_add, accept = seen.add, result.accepted.append
    placed = result.rows.append if result.rows is not None else None
    for place, raw in enumerate(entries):
        if raw in valid:  # the common case, first and short
            if raw in seen:
                result.duplicates += 1
            else:
                seen_add(raw)
                accept(raw)
                if placed:
                    placed(place)
            continue
        verdict = fast_verdict(raw)
        if verdict is False:
            result.refuse(raw, functools.partial(_reason, raw, region), keep_invalid, place)
            continue
        if verdict is None:
            known = slow.get(raw)
            if known is None:
                e164, reason = _slow(raw, region)
                where = _region_of(e164) if e164 and allowed else None
                known = slow[raw] = (e164, reason, where)
            e164, reason, where = known
            if e164 is None:
                result.refuse(raw, reason or NOT_A_NUMBER, keep_invalid, place)
                continue
        else:
            e164, where = raw, verdict
        if allowed and where not in allowed:
            result.refuse(raw, COUNTRY_NOT_ALLOWED, keep_invalid, place)
        elif e164 in seen:
            result.duplicates += 1
        else:
            seen.add(e164)
            result.accepted.append(e164)
            if placed:
                placed(place)
    return result


BULK_FROM = 1000  # entries: below this, one match each costs less than finding the code


ALL: set[str] = set()  # `_valid_in_bulk`'s answer when every entry is valid


def _valid_in_bulk(entries: list[str]) -> set[str]:
    """The entries that are valid numbers of the list's most common calling code, found in one
    pass of that code's expression over the whole list (a third of the cost of one match per
    entry), or ALL when that is every entry. Every other entry is judged on its own. An entry
    with a line break in it is never a line of the text, so it is never in this set."""
    if len(entries) < BULK_FROM:
        return set()
    sample = map(_plan_of, entries[:: len(entries) // 100])  # (BULK_FROM: a step of 10 or more)
    plans = Counter(known[0] for known in sample if known)
    if not plans:
        return set()
    plan = plans.most_common(1)[0][0]
    text = "\n".join(entries)
    found = plan.lines.findall(text)
    # As many valid lines as entries, and as many lines: no entry has a line break of its own.
    if len(found) == len(entries) and text.count("\n") == len(entries) - 1:
        return ALL
    return set(found)


def _reason(raw: str, region: str | None) -> str:
    return _slow(raw, region)[1] or NOT_A_NUMBER


def _region_of(e164: str) -> str | None:
    region: str | None = phonenumbers.region_code_for_number(phonenumbers.parse(e164))
    return region
