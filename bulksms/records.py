"""A recipient's record: 32 bytes at a fixed place in its batch's string, sorted by number.

A million recipients take 32 MB of strings (a hash of text records took about 90 bytes each),
a submit writes each batch with one SET, and a report finds its recipient by binary search
(the scripts in `scripts` read the same layout).

    offset size
    0      8    number: its E.164 digits as a big-endian integer, so records sort by number
    8      16   Plivo's message UUID (zeros until a delivery report names it)
    24     1    status code (`store.CODES`); 0 while the batch's own outcome says it all
    25     2    error code, big-endian (`encode_error`)
    27     4    last update, unix seconds, big-endian (0 with status 0: the batch's time)
    31     1    spare
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from functools import cache
from typing import NamedTuple

SIZE = 32
RECORD = struct.Struct(">Q16scHIx")
TAIL = struct.Struct(">cHI")  # status, error, time: bytes 24..30, what a report rewrites
NUMBER = struct.Struct(">Q")
UNKNOWN_UUID = bytes(16)

# Error codes: a Plivo code of 1–4 digits keeps its digits and their count (so "000" stays
# "000"); our own reasons and anything else get the top of the range.
NO_ERROR = 0
OTHER_ERROR = 65533
OWN_ERRORS = {"invalid_number": 65534, "batch_failed": 65535}
OWN_BY_CODE = {code: reason for reason, code in OWN_ERRORS.items()}


class Record(NamedTuple):
    number: str  # E.164 with '+'
    uuid: str | None
    code: str  # a status code, or "" when the batch's outcome says it
    error: str | None
    updated: int  # unix seconds, 0 when the batch's outcome says it


def encode_error(text: str) -> int:
    text = text.strip()
    if not text:
        return NO_ERROR
    if text in OWN_ERRORS:
        return OWN_ERRORS[text]
    if text.isascii() and text.isdigit() and len(text) <= 4:
        return len(text) * 10_000 + int(text)
    return OTHER_ERROR


def decode_error(code: int) -> str | None:
    if code == NO_ERROR:
        return None
    if code in OWN_BY_CODE:
        return OWN_BY_CODE[code]
    if code == OTHER_ERROR:
        return "other"
    digits, value = divmod(code, 10_000)
    return f"{value:0{digits}d}"


def encode_uuid(text: str) -> bytes:
    """Plivo's UUID in 16 bytes; b"" (keep what is there) when it is not a UUID."""
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        return b""


def number_key(number: str) -> int:
    """The integer a record stores for an E.164 number ('+' optional)."""
    digits = number.strip().lstrip("+")
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 15 else 0


@cache
def _empty_records(count: int) -> struct.Struct:
    return struct.Struct(">" + "Q24x" * count)


def pack_new(numbers: Sequence[str]) -> bytes:
    """A new batch: its numbers sorted, every record pending (status 0)."""
    return _empty_records(len(numbers)).pack(*sorted(map(int, numbers)))  # (int() takes '+')


def tail(code: str, error: str, when: int) -> bytes:
    return TAIL.pack(code.encode(), encode_error(error), when)


def numbers_of(blob: bytes) -> list[str]:
    return [f"+{n}" for (n,) in struct.iter_unpack(">Q24x", blob)]


def unpack(blob: bytes) -> Iterator[Record]:
    for number, raw_uuid, code, error, when in RECORD.iter_unpack(blob):
        yield Record(
            f"+{number}",
            None if raw_uuid == UNKNOWN_UUID else str(uuid.UUID(bytes=raw_uuid)),
            "" if code == b"\0" else code.decode(),
            decode_error(error),
            when,
        )


def find(blob: bytes, number: str) -> Record | None:
    """Binary search, as the scripts do it."""
    wanted = number_key(number)
    low, high = 0, len(blob) // SIZE - 1
    while low <= high:
        middle = (low + high) // 2
        (found,) = NUMBER.unpack_from(blob, middle * SIZE)
        if found == wanted:
            return next(unpack(blob[middle * SIZE : (middle + 1) * SIZE]))
        if found < wanted:
            low = middle + 1
        else:
            high = middle - 1
    return None
