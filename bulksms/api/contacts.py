"""Recipients with fields: a contact file (CSV, as spreadsheets export it) or JSON objects.

Either way the result is one `Rows`: the raw numbers in order, each row's values for the fields a
template needs (None where a row has none), and each row's label (a CSV row as a spreadsheet
numbers it, the header being row 1; a JSON recipient's place in the list, from 1).

A CSV is read as spreadsheets write it: UTF-8 with or without a byte order mark, CRLF or LF,
`,` `;` or tab between fields (whichever the header row uses most), quoted fields with embedded
newlines. It is read row by row from the uploaded file (Werkzeug keeps a big upload in a
temporary file, not in memory), keeping only the phone column and the template's fields.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import IO, Any, cast

from bulksms.api.errors import ApiError

PHONE_COLUMNS = ("phone", "phone_number", "mobile", "to", "number")  # in this order of choice
# A row's characters, quoted newlines and all: the csv reader builds a whole row before it is
# seen, and a row of a hundred million empty cells took a web worker to 1.8 GB. Spreadsheet rows
# are far shorter; a cell is at most the csv module's field size limit (128 KiB) anyway.
MAX_ROW_CHARACTERS = 1 << 20
DELIMITERS = (",", ";", "\t")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass
class Rows:
    numbers: list[str] = field(default_factory=list)
    # [] without fields; a CSV's cells as they are (blank ones are missing values), JSON's None
    # where missing
    values: list[tuple[str | None, ...]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)  # [] when a row's label is its place + 1
    columns: tuple[str, ...] = ()  # a CSV's headers, casefolded (to tell a missing column)

    def label(self, index: int) -> int:
        return self.labels[index] if self.labels else index + 1


def _invalid_csv(code: str, message: str, **details: Any) -> ApiError:
    return ApiError(422, code, message, details={"field": "recipients", **details})


def read_csv(upload: IO[bytes], wanted: Sequence[str], phone_column: str | None, most: int) -> Rows:
    """The rows of an uploaded CSV: its phone column and the `wanted` fields (casefolded names).
    At most `most` rows (else 413)."""
    text = io.TextIOWrapper(upload, encoding="utf-8-sig", newline="")
    try:
        return _read(text, wanted, phone_column, most)
    except UnicodeDecodeError as exc:
        raise _invalid_csv(
            "not_utf8",
            "The contact file is not UTF-8 text: save it as CSV UTF-8 "
            f"(byte {exc.start} of a read block could not be decoded).",
        ) from None
    finally:
        text.detach()


class _RowTooLong(Exception):
    pass


class _Lines:
    """The file's lines for the csv reader, at most `MAX_ROW_CHARACTERS` a row (`row_read`
    starts the next row's count), read with a limit: a line is never read whole first."""

    def __init__(self, text: io.TextIOWrapper) -> None:
        self.text = text
        self.taken = 0  # characters of the row being read

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.text.readline(MAX_ROW_CHARACTERS + 1 - self.taken)
        if not line:
            raise StopIteration
        self.taken += len(line)
        if self.taken > MAX_ROW_CHARACTERS:
            raise _RowTooLong
        return line

    def row_read(self) -> None:
        self.taken = 0


def _row_too_long(row: int) -> ApiError:
    return _invalid_csv(
        "invalid_csv",
        f"Row {row} of the contact file is longer than {MAX_ROW_CHARACTERS} characters.",
        row=row,
    )


def _read(
    text: io.TextIOWrapper, wanted: Sequence[str], phone_column: str | None, most: int
) -> Rows:
    lines = _Lines(text)
    try:
        header_line = next(lines, "")
    except _RowTooLong:
        raise _row_too_long(1) from None
    if not header_line.strip():
        raise _invalid_csv("no_header", "The contact file is empty: it needs a header row.")
    delimiter = (
        max(DELIMITERS, key=header_line.count) if any(d in header_line for d in DELIMITERS) else ","
    )
    # (a chain, not a generator: closing one would close the file under it)
    # strict: an unclosed quote is an error, not a cell that swallows the rows after it
    reader = csv.reader(itertools.chain((header_line,), lines), delimiter=delimiter, strict=True)
    try:
        header = [column_key(name) for name in next(reader)]
    except csv.Error as exc:
        raise _invalid_csv("invalid_csv", f"The header row is not valid CSV: {exc}.") from None
    except _RowTooLong:
        raise _row_too_long(1) from None
    named = [name for name in header if name]
    duplicates = sorted(name for name, seen in Counter(named).items() if seen > 1)
    if duplicates:
        raise _invalid_csv(
            "duplicate_columns",
            f"The contact file has duplicate column headers: {', '.join(duplicates)[:200]}.",
            columns=duplicates[:20],
        )
    phone = _phone_column(header, phone_column)
    missing = [name for name in wanted if name not in header]
    if missing:
        raise ApiError(
            422,
            "unfilled_placeholder",
            f"The message's placeholder {{{{{missing[0]}}}}} has no column in the contact file "
            f"(its columns: {', '.join(named)[:200]}).",
            details={"field": "message", "placeholders": missing},
        )
    rows = Rows(columns=tuple(named))
    numbers, values, labels = rows.numbers, rows.values, rows.labels
    width, row = len(header), 1
    # The row's values as one tuple, at C speed (an empty cell is read as missing later).
    places = [header.index(name) for name in wanted]
    pick = itemgetter(*places) if wanted else None
    single = len(wanted) == 1
    used = max([phone, *places]) + 1  # a short row is padded up to the last column read
    try:
        lines.row_read()
        for cells in reader:
            lines.row_read()
            row += 1
            if len(cells) < used:
                cells += [""] * (used - len(cells))
            elif len(cells) > width and any(cell.strip() for cell in cells[width:]):
                raise _invalid_csv(
                    "invalid_csv",
                    f"Row {row} of the contact file has more cells than its header: a value "
                    "with the separator in it must be quoted.",
                    row=row,
                )
            number = cells[phone]
            if not number.strip() and not "".join(cells).strip():
                continue  # a blank row (spreadsheets add them at the end: "" or ",,,")
            if len(numbers) == most:
                raise ApiError(
                    413,
                    "too_many_recipients",
                    f"A request may carry at most {most} recipients; this file has more rows.",
                    details={"limit": most},
                )
            numbers.append(number)
            labels.append(row)
            if pick is not None:
                values.append((pick(cells),) if single else pick(cells))
    except csv.Error as exc:  # (met while reading the row after the last one read)
        raise _invalid_csv(
            "invalid_csv",
            f"Row {row + 1} of the contact file is not valid CSV: {exc}.",
            row=row + 1,
        ) from None
    except _RowTooLong:
        raise _row_too_long(row + 1) from None
    if not numbers:
        raise ApiError(
            422, "no_recipients", "The contact file has no rows.", details={"field": "recipients"}
        )
    cells_read = cast(list[tuple[str, ...]], values)  # (a CSV's values are all strings)
    if values and "\0" in "".join(itertools.chain.from_iterable(cells_read)):
        # (the values are stored NUL-separated; Python's csv takes a NUL as any character)
        place = next(i for i, found in enumerate(cells_read) if "\0" in "".join(found))
        raise _invalid_csv(
            "invalid_csv",
            f"Row {labels[place]} of the contact file holds a NUL character.",
            row=labels[place],
        )
    return rows


def column_key(name: str) -> str:
    """A header as placeholders name it: case-insensitive, spaces and hyphens read as `_`
    ("First Name" is {{first_name}})."""
    return re.sub(r"[\s-]+", "_", name.strip()).casefold()


def _phone_column(header: list[str], chosen: str | None) -> int:
    if chosen is not None:
        name = column_key(chosen)
        if name not in header:
            raise _invalid_csv(
                "no_phone_column",
                f"The contact file has no column {chosen!r} (phone_column).",
                columns=[h for h in header if h][:20],
            )
        return header.index(name)
    for name in PHONE_COLUMNS:
        if name in header:
            return header.index(name)
    raise _invalid_csv(
        "no_phone_column",
        "The contact file has no phone column: name it phone, phone_number, mobile, to or "
        "number, or pass phone_column.",
        columns=[h for h in header if h][:20],
    )


def from_json(entries: list[Any], wanted: Sequence[str]) -> Rows:
    """JSON recipients: strings, or objects {"to": ..., "fields": {...}} (strings and numbers;
    null or "" is a missing value)."""
    rows = Rows()
    numbers, values = rows.numbers, rows.values
    for place, entry in enumerate(entries):
        if isinstance(entry, str):
            numbers.append(entry)
            if wanted:
                values.append((None,) * len(wanted))
            continue
        given = _object_fields(entry, place)
        numbers.append(entry["to"])
        if wanted:
            values.append(tuple(given.get(name) for name in wanted))
    return rows


def _object_fields(entry: Any, place: int) -> dict[str, str | None]:
    def refused(why: str) -> ApiError:
        return ApiError(
            400,
            "invalid_recipient",
            f"recipients[{place}] {why}",
            details={"field": "recipients", "index": place},
        )

    if not isinstance(entry, dict) or not isinstance(entry.get("to"), str):
        raise refused('must be a phone number or an object {"to": "+14155550100", "fields": {}}.')
    if entry.keys() - {"to", "fields"}:
        raise refused('may hold only "to" and "fields".')
    given = entry.get("fields")
    given = {} if given is None else given
    if not isinstance(given, dict):
        raise refused("has fields that are not an object.")
    out: dict[str, str | None] = {}
    for name, value in given.items():
        key = column_key(name)
        if key in out:
            raise refused(f"has the field {name!r} twice (names are case-insensitive).")
        if isinstance(value, str) and ("\0" in value or _SURROGATE.search(value)):
            raise refused(f"has a field {name!r} that is not text (a NUL or a lone surrogate).")
        if value is None or isinstance(value, str):
            out[key] = value if value and value.strip() else None
        elif isinstance(value, int) and not isinstance(value, bool):
            out[key] = str(value)
        elif isinstance(value, float) and math.isfinite(value):
            out[key] = repr(value)
        else:
            raise refused(f"has a field {name!r} that is not a string or a number.")
    return out
