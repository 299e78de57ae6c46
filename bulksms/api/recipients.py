"""Per-recipient reports: who got the message and who did not, paged as JSON or streamed as CSV.

A job's recipients live in one string per batch (at most 1000 records, sorted by number), so a
page reads a batch at a time; the cursor is ``<batch>.<offset>`` into the batch's records. The CSV
streams batch after batch and never holds more than one in memory.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bulksms.api.errors import ApiError
from bulksms.store import Job, JobStore, Recipient, Status

COLUMNS = ("number", "message_uuid", "status", "error_code", "error", "updated_at")
MAX_BATCHES_PER_PAGE = 50  # a filtered page stops after this many batches, with a cursor
# Plivo's messaging error codes, in words (the ones a sender meets; others show their code).
ERRORS = {
    "10": "Invalid message",
    "20": "Network error",
    "30": "Spam detected",
    "40": "Invalid source number",
    "50": "Invalid destination number",
    "60": "Loop detected",
    "70": "Destination permanently unavailable",
    "80": "Destination temporarily unavailable",
    "90": "No route available",
    "100": "Prohibited by carrier",
    "110": "Message too long",
    "200": "Source number blocked by STOP from destination",
    "900": "Insufficient credit",
    "420": "Expired in Plivo's queue (not charged)",
    "1000": "Unknown error",
    "invalid_number": "Plivo refused the number",
    "batch_failed": "The batch was refused",
}


@dataclass(frozen=True)
class Cursor:
    batch: int = 0
    offset: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        batch, _, offset = text.partition(".")
        if not all(
            part.isascii() and part.isdigit() and len(part) <= 9 for part in (batch, offset)
        ):
            raise ApiError(400, "invalid_cursor", "cursor must be a next_cursor from a page.")
        return cls(int(batch), int(offset))

    def __str__(self) -> str:
        return f"{self.batch}.{self.offset}"


def row(recipient: Recipient, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """One recipient, with its error in words (and a template's job: its values)."""
    error = recipient.error_code
    found: dict[str, Any] = {
        **recipient.as_dict(),
        "error": ERRORS.get(error, error) if error else None,
    }
    if names:
        found["fields"] = dict(zip(names, recipient.fields or ("",) * len(names), strict=True))
    return found


# A cell a spreadsheet would run as a formula starts with one of these: exported, it is
# prefixed with ' so that it is shown as text (OWASP's advice on CSV injection).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "\0", "＝", "＋", "－", "＠")


def neutralised(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def page(
    store: JobStore, job: Job, status: Status | None, limit: int, cursor: Cursor
) -> tuple[list[dict[str, Any]], Cursor | None]:
    job_id, batches = job.job_id, job.batches
    found: list[dict[str, Any]] = []
    batch, offset, scanned = cursor.batch, cursor.offset, 0
    while batch < batches and len(found) < limit and scanned < MAX_BATCHES_PER_PAGE:
        records = store.batch_recipients(job_id, batch, len(job.field_names))
        for index in range(offset, len(records)):
            if status is None or records[index].status is status:
                found.append(row(records[index], job.field_names))
                if len(found) == limit:
                    return found, _after(batch, index + 1, len(records), batches)
        batch, offset, scanned = batch + 1, 0, scanned + 1
    return found, (Cursor(batch, 0) if batch < batches else None)


def _after(batch: int, offset: int, size: int, batches: int) -> Cursor | None:
    if offset < size:
        return Cursor(batch, offset)
    return Cursor(batch + 1, 0) if batch + 1 < batches else None


RETRYABLE_STATUSES = {Status.FAILED, Status.UNDELIVERED}
# network error; destination temporarily unavailable; expired in Plivo's queue (not charged)
RETRYABLE_ERRORS = {"20", "80", "420"}


def retryable(store: JobStore, job: Job) -> Iterator[dict[str, Any]]:
    """Recipients whose final status a second attempt may change."""
    for batch in range(job.batches):
        for recipient in store.batch_recipients(job.job_id, batch, len(job.field_names)):
            if recipient.status in RETRYABLE_STATUSES and recipient.error_code in RETRYABLE_ERRORS:
                yield row(recipient, job.field_names)


def error_summary(store: JobStore, job: Job) -> list[dict[str, Any]]:
    """Recipients with an error, grouped by code: its meaning, how many, and whether `retry`
    would send to them again."""
    found: dict[str, list[int]] = {}
    for batch in range(job.batches):
        for recipient in store.batch_recipients(job.job_id, batch):
            code = recipient.error_code
            if code:
                tally = found.setdefault(code, [0, 0])
                tally[0] += 1
                retried = recipient.status in RETRYABLE_STATUSES and code in RETRYABLE_ERRORS
                tally[1] += retried
    return [
        {
            "code": code,
            "meaning": ERRORS.get(code, "See Plivo's error codes"),
            "count": n,
            "retryable": bool(again),
        }
        for code, (n, again) in sorted(found.items(), key=lambda item: -item[1][0])
    ]


def csv_lines(store: JobStore, job: Job, status: Status | None) -> Iterator[str]:
    """The recipients as CSV; a template's job adds a column per field (after the others,
    values that look like formulas neutralised)."""
    names = job.field_names
    out = io.StringIO()
    # CRLF, as RFC 4180 writes it: a value holding a lone \r is then quoted too (with "\n" it
    # would not be, and a spreadsheet would start a row of its own there)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*COLUMNS, *names])
    for batch in range(job.batches):
        for recipient in store.batch_recipients(job.job_id, batch, len(names)):
            if status is None or recipient.status is status:
                found = row(recipient)
                values = recipient.fields or ("",) * len(names)
                writer.writerow([*(found[c] for c in COLUMNS), *map(neutralised, values)])
        yield out.getvalue()
        out.seek(0)
        out.truncate()
