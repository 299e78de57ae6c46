from __future__ import annotations

import pytest

from bulksms.message import encode


@pytest.mark.parametrize(
    ("text", "encoding", "length", "segments"),
    [
        ("a" * 160, "GSM-7", 160, 1),
        ("a" * 161, "GSM-7", 161, 2),
        ("a" * 306, "GSM-7", 306, 2),
        ("a" * 307, "GSM-7", 307, 3),
        ("€" * 80, "GSM-7", 160, 1),
        ("a" * 159 + "€", "GSM-7", 161, 2),
        ("a" * 152 + "€" + "a" * 152, "GSM-7", 306, 3),  # € does not split: 152 | 2+151 | 1
        ("é" * 70, "GSM-7", 70, 1),  # é is in the GSM basic table
        ("ł" * 70, "UCS-2", 70, 1),
        ("ł" * 71, "UCS-2", 71, 2),
        ("😀" * 35, "UCS-2", 70, 1),
        ("ł" * 66 + "😀" + "ł" * 66, "UCS-2", 134, 3),  # the pair does not split: 66 | 2+65 | 1
    ],
)
def test_encoding_and_segments_as_a_carrier_bills(
    text: str, encoding: str, length: int, segments: int
) -> None:
    encoded = encode(text)
    assert (encoded.encoding, encoded.length, encoded.segments) == (encoding, length, segments)
