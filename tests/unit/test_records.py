"""The 32-byte recipient record: what goes in comes out, and the search finds every number."""

from __future__ import annotations

import random
import uuid

from hypothesis import given
from hypothesis import strategies as st

from bulksms.store import records


@given(st.from_regex(r"\A[0-9]{1,4}\Z"))
def test_plivo_error_codes_keep_their_digits(code: str) -> None:
    assert records.decode_error(records.encode_error(code)) == code


def test_own_and_odd_error_codes() -> None:
    assert records.decode_error(records.encode_error("")) is None
    assert records.decode_error(records.encode_error("batch_failed")) == "batch_failed"
    assert records.decode_error(records.encode_error("invalid_number")) == "invalid_number"
    assert records.decode_error(records.encode_error("12345")) == "other"
    assert records.decode_error(records.encode_error("E-7")) == "other"


def test_a_new_batch_is_sorted_pending_and_32_bytes_a_recipient() -> None:
    rng = random.Random(3)
    numbers = [f"+1415{rng.randrange(10**7):07d}" for _ in range(1000)]
    blob = records.pack_new(numbers)
    assert len(blob) == 32 * 1000
    unpacked = list(records.unpack(blob))
    assert [r.number for r in unpacked] == sorted(numbers, key=lambda n: int(n[1:]))
    assert all(r.code == "" and r.uuid is None and r.updated == 0 for r in unpacked)
    assert records.numbers_of(blob) == [r.number for r in unpacked]
    for number in numbers:
        found = records.find(blob, number)
        assert found and found.number == number
    assert records.find(blob, "+19999999999") is None


def test_uuids_round_trip_and_non_uuids_keep_what_is_there() -> None:
    text = str(uuid.uuid4())
    assert uuid.UUID(bytes=records.encode_uuid(text)) == uuid.UUID(text)
    assert records.encode_uuid("not-a-uuid") == b""


def _by_uuid_module(text: str) -> bytes:
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        return b""


@given(
    st.one_of(
        st.uuids().map(str),
        st.uuids().map(lambda u: u.hex.upper()),
        st.uuids().map(lambda u: "{urn:uuid:" + str(u) + "}"),
        st.text(alphabet="0123456789abcdefABCDEFgG- _{}٣", max_size=40),
        st.text(max_size=40),
    )
)
def test_uuids_are_read_as_the_uuid_module_reads_them(text: str) -> None:
    assert records.encode_uuid(text) == _by_uuid_module(text)


def test_number_keys_refuse_what_is_not_a_number() -> None:
    assert records.number_key("+14155550100") == 14155550100
    assert records.number_key("14155550100") == 14155550100
    assert records.number_key("") == records.number_key("+1 415") == 0
    assert records.number_key("1" * 16) == 0
