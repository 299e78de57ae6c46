"""The message text: which encoding a carrier will use and how many segments it bills.

GSM-7 when every character is in the GSM 03.38 basic table or its extension table (extension
characters cost two septets, and an escape pair never splits across parts); otherwise UCS-2,
counted in UTF-16 code units (a surrogate pair never splits either). Plivo's limits: 1600 GSM
characters (septets), 737 UCS-2 characters.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7, UCS2 = "GSM-7", "UCS-2"
LIMITS = {GSM7: 1600, UCS2: 737}
SINGLE = {GSM7: 160, UCS2: 70}
PART = {GSM7: 153, UCS2: 67}


@dataclass(frozen=True)
class Encoded:
    encoding: str
    length: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int

    @property
    def limit(self) -> int:
        return LIMITS[self.encoding]


def _units(text: str) -> tuple[str, list[int]]:
    """Encoding and the cost of each character in its units."""
    if all(c in GSM_BASIC or c in GSM_EXTENSION for c in text):
        return GSM7, [2 if c in GSM_EXTENSION else 1 for c in text]
    return UCS2, [2 if ord(c) > 0xFFFF else 1 for c in text]


def encode(text: str) -> Encoded:
    encoding, costs = _units(text)
    length = sum(costs)
    if length <= SINGLE[encoding]:
        return Encoded(encoding, length, 1 if length else 0)
    part, segments, used = PART[encoding], 1, 0
    for cost in costs:  # a character that does not fit whole starts the next part
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return Encoded(encoding, length, segments)
