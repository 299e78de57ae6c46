"""A batch's recipients: one string of 32 bytes a recipient, its numbers sorted.

A million recipients take 32 MB of strings (a hash of text records took about 90 bytes each);
a report finds its recipient by binary search on the numbers (the scripts in `scripts` read
the same layout). For a batch of n recipients:

    offset        size
    0             8n    the numbers: E.164 digits as big-endian integers, sorted
    8n + 24i      16    recipient i's Plivo message UUID (zeros until a report names it)
    8n + 24i + 16 1     its status code (`store.CODES`); 0 while the batch's outcome says it all
    8n + 24i + 17 2     its error code, big-endian (`encode_error`)
    8n + 24i + 19 4     its last update, unix seconds, big-endian (0 with status 0: the batch's)
    8n + 24i + 23 1     1 once what Plivo billed for its message is counted; 2 once a part of it
                        is (a message reported part by part keeps that per part in the job's parts
                        hash, and is then billed by its parts only)

A new batch is written whole, with one SET: grown by SETRANGE instead, Redis would allocate
twice its size.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from typing import NamedTuple

SIZE = 32
STATE = struct.Struct(">16scHIx")
TAIL = struct.Struct(">cHI")  # status, error, time: what a report writes after the UUID
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
    digits = text.replace("-", "")
    if len(digits) == 32 and digits.isascii() and digits.isalnum():  # the usual form, cheaper
        try:
            return bytes.fromhex(digits)
        except ValueError:
            pass
    try:  # braces, "urn:uuid:" and whatever else uuid.UUID takes
        return uuid.UUID(text).bytes
    except ValueError:
        return b""


def number_key(number: str) -> int:
    """The integer a record stores for an E.164 number ('+' optional)."""
    digits = number.strip().lstrip("+")
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 15 else 0


def pack_new(numbers: Sequence[str]) -> bytes:
    """A new batch: its numbers sorted, every recipient pending (state all zeros)."""
    ints = sorted(map(int, numbers))  # (int() takes the '+')
    return struct.pack(f">{len(ints)}Q{24 * len(ints)}x", *ints)


FIELD_SEPARATOR = "\0"  # between values: no value holds it (the API refuses one that would)


def sorted_order(numbers: Sequence[str]) -> list[int]:
    """The places of `numbers` in the order `pack_new` stores them."""
    keys = list(map(int, numbers))
    return sorted(range(len(numbers)), key=keys.__getitem__)


def pack_fields(values: Sequence[Sequence[str]]) -> bytes:
    """A batch's recipients' template values, in stored order, in one value: UTF-8, separated
    by NUL (one byte a value beside its own)."""
    return FIELD_SEPARATOR.join(v for row in values for v in row).encode()


def unpack_fields(packed: bytes, width: int) -> list[tuple[str, ...]]:
    """`pack_fields`'s rows back, `width` values each."""
    if not packed or width <= 0:
        return []
    flat = packed.decode().split(FIELD_SEPARATOR)
    return [tuple(flat[i : i + width]) for i in range(0, len(flat), width)]


def uuids_of(packed: bytes) -> list[str]:
    """UUIDs packed 16 bytes each (a batch's answers, `keys.answered`), zeros left out."""
    return [
        str(uuid.UUID(bytes=packed[i : i + 16]))
        for i in range(0, len(packed) - 15, 16)
        if packed[i : i + 16] != UNKNOWN_UUID
    ]


def raw_uuids(blob: bytes) -> set[bytes]:
    """The UUIDs reports named in a batch's records, as packed (16 bytes each)."""
    count = len(blob) // SIZE
    base = 8 * count
    return {blob[base + 24 * i : base + 24 * i + 16] for i in range(count)} - {UNKNOWN_UUID}


def tail(code: str, error: str, when: int) -> bytes:
    return TAIL.pack(code.encode(), encode_error(error), when)


def numbers_of(blob: bytes) -> list[str]:
    count = len(blob) // SIZE
    return [f"+{n}" for n in struct.unpack_from(f">{count}Q", blob)]


def numbers_with(blob: bytes, code: str) -> frozenset[str]:
    """The numbers whose own status is `code` (one byte of `store.CODES`)."""
    count = len(blob) // SIZE
    codes = blob[8 * count + 16 :: 24][:count]
    wanted = code.encode()
    if wanted not in codes:
        return frozenset()
    numbers = struct.unpack_from(f">{count}Q", blob)
    return frozenset(f"+{numbers[i]}" for i, c in enumerate(codes) if c == wanted[0])


def unpack(blob: bytes) -> Iterator[Record]:
    count = len(blob) // SIZE
    states = STATE.iter_unpack(memoryview(blob)[8 * count : SIZE * count])
    for number, state in zip(struct.unpack_from(f">{count}Q", blob), states, strict=True):
        yield _record(number, *state)


def find(blob: bytes, number: str) -> Record | None:
    """Binary search, as the scripts do it."""
    wanted, count = number_key(number), len(blob) // SIZE
    low, high = 0, count - 1
    while low <= high:
        middle = (low + high) // 2
        (found,) = NUMBER.unpack_from(blob, middle * 8)
        if found == wanted:
            return _record(found, *STATE.unpack_from(blob, 8 * count + 24 * middle))
        if found < wanted:
            low = middle + 1
        else:
            high = middle - 1
    return None


def _record(number: int, raw_uuid: bytes, code: bytes, error: int, when: int) -> Record:
    return Record(
        f"+{number}",
        None if raw_uuid == UNKNOWN_UUID else str(uuid.UUID(bytes=raw_uuid)),
        "" if code == b"\0" else code.decode(),
        decode_error(error),
        when,
    )
