"""Message templates: `{{name}}` placeholders filled from each recipient's fields.

Grammar: `{{name}}`, with optional spaces or tabs inside the braces, is a placeholder (a name is
letters, digits and `_`, matched to field names case-insensitively, as spreadsheet headers are
often capitalised); `{{{{` writes a literal `{{`; any other `{{` (`{{}}`, `{{ a b }}`, an unclosed
`{{`) is an error naming its place. Lone braces and `}}` are text. A value is inserted as it is,
never read as a template: a value holding `{{x}}` stays as written.

Rendering is `str.format` on a format string made once (the literal text's braces doubled), so a
million rows render at C speed; `measure` gives a rendered text's encoding and segments without
`message.encode`'s walk over every character for the common (ASCII) case.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bulksms.message import GSM7, GSM_BASIC, GSM_EXTENSION, PART, SINGLE, UCS2, Encoded, encode

_TOKEN = re.compile(r"\{\{\{\{|\{\{[ \t]*(\w+)[ \t]*\}\}|\{\{")
# ASCII characters outside GSM-7's tables (a text holding one is UCS-2), and GSM's extension
# characters (two septets each): with them, an ASCII text is measured by two C-speed searches.
_NOT_GSM = "".join(chr(c) for c in range(128) if chr(c) not in GSM_BASIC | GSM_EXTENSION)
_ASCII_NOT_GSM = re.compile(f"[{re.escape(_NOT_GSM)}]")
_EXTENSION = re.compile("[" + re.escape("".join(sorted(GSM_EXTENSION))) + "]")
# A character that is not "plain": one septet of GSM-7's basic table and ASCII. A text without
# any is GSM-7 and its length in septets is its length in characters.
_PLAIN = "".join(chr(c) for c in range(128) if chr(c) in GSM_BASIC)
_NOT_PLAIN = re.compile(f"[^{re.escape(_PLAIN)}]")


def plain(*texts: Iterable[str | None]) -> bool:
    """Whether every text given (strings, or iterables of strings; None skipped) is plain: then
    each of their concatenations measures as `plain_segments` says, by its length alone."""
    joined = "".join(filter(None, itertools.chain.from_iterable(texts)))
    return _NOT_PLAIN.search(joined) is None


def plain_segments(length: int) -> int:
    """`measure(text).segments` for a plain text of `length` characters (up to the limit)."""
    if length <= SINGLE[GSM7]:
        return 1 if length else 0
    return -(-length // PART[GSM7])


class TemplateError(ValueError):
    """A `{{` that is neither a placeholder nor the `{{{{` escape; `position` counts from 0."""

    def __init__(self, position: int, excerpt: str) -> None:
        super().__init__(
            f"message has a '{{{{' at character {position + 1} ({excerpt!r}) that is not a "
            "placeholder such as {{name}}; write {{{{ for a literal {{."
        )
        self.position = position
        self.excerpt = excerpt


@dataclass(frozen=True)
class Template:
    """A parsed message: its placeholders' field names (casefolded, in order of first use) and
    the format string that renders it from those fields' values, in that order."""

    source: str
    fields: tuple[str, ...]
    format: str
    literal: str  # the text without its placeholders: a template without any is this text

    @property
    def personal(self) -> bool:
        return bool(self.fields)

    def render(self, values: Sequence[str]) -> str:
        """The text for one recipient; `values` follow `fields`."""
        return self.format.format(*values) if self.fields else self.literal

    def render_fields(self, fields: dict[str, str]) -> str:
        """The same from a {casefolded name: value} mapping (missing values render empty)."""
        return self.render([fields.get(name, "") for name in self.fields])


def parse(source: str) -> Template:
    """Read a message; raises `TemplateError` at its first malformed `{{`."""
    places: dict[str, int] = {}  # a field's name -> its place in the values
    form: list[str] = []
    literal: list[str] = []
    at = 0
    for found in _TOKEN.finditer(source):
        text = source[at : found.start()]
        form.append(_escaped(text))
        literal.append(text)
        at = found.end()
        matched, name = found.group(0), found.group(1)
        if matched == "{{{{":
            form.append("{{{{")
            literal.append("{{")
        elif name is not None:
            key = name.casefold()
            if key not in places:
                places[key] = len(places)
            form.append(f"{{{places[key]}}}")
        else:
            raise TemplateError(found.start(), source[found.start() : found.start() + 20])
    tail = source[at:]
    form.append(_escaped(tail))
    literal.append(tail)
    return Template(source, tuple(places), "".join(form), "".join(literal))


def brace_free(text: str) -> Template:
    """`parse(text)` of a text without a "{" (no placeholder, nothing to unescape), unsearched."""
    assert "{" not in text
    return Template(text, (), _escaped(text), text)


def escape(text: str) -> str:
    """A template that renders `text` as it is."""
    return text.replace("{{", "{{{{")


def _escaped(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def measure(text: str) -> Encoded:
    """`message.encode(text)`, the same verdict, at C speed for an ASCII text."""
    if not text.isascii() or _ASCII_NOT_GSM.search(text):
        return encode(text)
    extended = len(_EXTENSION.findall(text))
    length = len(text) + extended
    if length <= SINGLE[GSM7]:
        return Encoded(GSM7, length, 1 if length else 0)
    if not extended:  # (nothing that must not split: parts fill up whole)
        return Encoded(GSM7, length, math.ceil(length / PART[GSM7]))
    return encode(text)


__all__ = [
    "GSM7",
    "UCS2",
    "Template",
    "TemplateError",
    "escape",
    "measure",
    "parse",
    "plain",
    "plain_segments",
]
