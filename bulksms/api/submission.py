"""Reading a `POST /api/bulk-sms` body: every way it can be wrong becomes one clear `ApiError`.

The body's schema (`schemas.SubmitRequest`) judges types, enums and ranges; the custom checks here
judge the rest, numbers and segments included. A body with several faults is answered for the
first one in the order below, the order these checks have always run in: a field's schema
refusal is held back (`Checked.ensure`) until that field's turn.
"""

from __future__ import annotations

import itertools
import json
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Generic, TypeVar, cast
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ValidationError

from bulksms import callback_address, numbers
from bulksms.api import contacts, schemas
from bulksms.api.errors import ApiError
from bulksms.config import ALPHANUMERIC_SENDER_RE, E164_RE, UUID_RE, Settings
from bulksms.message import GSM7, LIMITS, Encoded, encode
from bulksms.store import Sending
from bulksms.template import Template, TemplateError, brace_free, measure, plain, plain_segments
from bulksms.template import parse as parse_template

MAX_SCHEDULE_SECONDS = 30 * 86400  # and at most half the retention: the job must outlive it
INVALID_SHOWN = 100  # the answer lists at most this many refused entries; the count is exact
MISSING_FIELD, TOO_LONG = "missing_field", "too_long"  # a row's reasons beside its number's
# A template's own bounds (its texts are bounded by the message limits once filled): a message's
# worth of placeholders with room for their braces, and fields enough for any SMS.
MAX_TEMPLATE_CHARACTERS = 4 * 1600
MAX_PLACEHOLDERS = 20
_SURROGATE = re.compile("[\ud800-\udfff]")

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Checked(Generic[M]):
    """A body read by its schema. `fields` holds every field that passed (a field that did not
    is never read: `ensure` raises its refusal first)."""

    fields: M
    refusals: Mapping[str, ApiError]

    def ensure(self, name: str) -> None:
        """Raise the answer to field `name`'s schema error, if it has one."""
        refused = self.refusals.get(name)
        if refused is not None:
            raise refused


def check(model: type[M], body: Any) -> Checked[M]:
    """Read `body` by `model`. A body that is not an object, or has a field the model does not
    know, is refused at once; any other schema error waits for its field's turn."""
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    # The schema forbids unknown fields too; asked first, a set difference answers a body of a
    # million of them in a fraction of the time pydantic takes to list them.
    unknown = sorted(body.keys() - model.model_fields.keys())
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"Unknown field(s): {', '.join(unknown)[:200]}.",
            details={"fields": unknown[:20]},
        )
    try:
        return Checked(model.model_validate(body), {})
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
    refusals: dict[str, ApiError] = {}
    for error in errors:
        name = str(error["loc"][0])
        if name not in refusals:
            refused = schemas.refusal(model, name, error["type"])
            details = {"field": name, **refused.details}
            refusals[name] = ApiError(refused.status, refused.code, refused.message, details)
    # Strict fields are taken as they come, so the fields that passed are the body's own values.
    passed = {name: value for name, value in body.items() if name not in refusals}
    return Checked(model.model_construct(**passed), refusals)


@dataclass
class Personal:
    """A template's job: each accepted recipient's values (in `template.fields` order), text
    and segments, in the order of `Recipients.accepted`."""

    template: Template
    values: list[tuple[str, ...]]
    texts: list[str]
    segments: list[int]
    encodings: Counter[str]


@dataclass
class Submission:
    recipients: numbers.Recipients
    sending: Sending
    encoded: Encoded  # the text's; with a template, its text without the placeholders'
    # The body as its schema read it; max_segments and priority are judged last, after the
    # opt-outs, as they always were.
    body: Checked[schemas.SubmitFields]
    template: Template
    rows: contacts.Rows | None = None  # recipients with fields (a template's, or a file's)
    labels: Callable[[int], int] | None = None  # an entry's place -> its row number
    send_at: float | None = None
    callback_url: str | None = None
    personal: Personal | None = None  # filled by `personalise`

    def priority(self) -> schemas.Priority:
        self.body.ensure("priority")
        return self.body.fields.priority

    @property
    def total_segments(self) -> int:
        if self.personal is not None:
            return sum(self.personal.segments)
        return self.encoded.segments * len(self.recipients.accepted)


# A body that sets no option: the options as the schema reads them then (its defaults).
_NO_OPTIONS = Checked(schemas.SubmitFields.model_construct(), {})


def _read_plain(body: Any, settings: Settings) -> Submission | None:
    """`read_submission` of the commonest body, an alert's: its recipients as strings and a
    message without placeholders ("{" nowhere), nothing else, from the service's own sender.
    The same Submission, read without the schema and the options, which a body that sets none
    of them does not need (on a busy host their reading cost a one-recipient submit more than
    anything else in its request). None for any other body, and for one this would refuse:
    `read_submission` reads those, and answers them."""
    if type(body) is not dict or len(body) != 2:
        return None
    entries, text = body.get("recipients"), body.get("message")
    src, powerpack = settings.plivo_sender_id, settings.plivo_powerpack_uuid
    if (
        type(entries) is not list
        or type(text) is not str
        or not entries
        or len(entries) > settings.max_recipients
        or "{" in text
        or len(text) > MAX_TEMPLATE_CHARACTERS
        or (src is None and powerpack is None)
        or invisible(text)
        or _SURROGATE.search(text)
        or not all(type(entry) is str for entry in entries)
    ):
        return None
    encoded = encode(text)
    if encoded.length > encoded.limit:
        return None
    recipients = numbers.sort_out(
        entries, settings.default_region, settings.allowed_countries, INVALID_SHOWN
    )
    if not recipients.accepted or src in recipients.accepted:  # (refused: the general way)
        return None
    return Submission(
        recipients=recipients,
        sending=Sending(message=text, src=src, powerpack_uuid=powerpack),
        encoded=encoded,
        body=_NO_OPTIONS,
        template=brace_free(text),
    )


def parse_json(raw: bytes, content_type: str | None, most: int | None = None) -> Any:
    """The body's JSON; with `most` (recipients a request may carry), refused unparsed if it
    holds far more objects and arrays than that many recipients could need: parsed, each costs
    a worker some 64 bytes where the body spends 2 or 3. At the size limit of a million
    recipients (80 MB), measured: a million recipients with two fields take 0.64 GB to parse,
    a body of `{},` took 1.84 GB, and the worst now let through (those objects allowed, then
    short strings) 1.32 GB."""
    if not content_type or content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Send the body as application/json, or multipart/form-data with a contact file.",
        )
    if most is not None:
        # (a recipient is an object and its fields' one; a brace in a string counts too: room
        # for one more a recipient, one a 16 bytes of the body, and a message all braces)
        room = 3 * most + len(raw) // 16 + 2 * MAX_TEMPLATE_CHARACTERS
        if raw.count(b"{") + raw.count(b"[") > room:
            raise ApiError(
                413,
                "too_many_recipients",
                f"A request may carry at most {most} recipients; this body holds more JSON "
                "objects and arrays than that many need.",
                details={"limit": most},
            )
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400,
            "malformed_json",
            "The body is not valid JSON.",
            details=str(exc)[:200] if isinstance(exc, ValueError) else None,
        ) from None


def form_body(form: Mapping[str, str]) -> dict[str, Any]:
    """A multipart body's fields as the JSON body would hold them (whole numbers read)."""
    body: dict[str, Any] = {}
    for name, value in form.items():
        if name in schemas.FORM_INTEGERS:
            text = value.strip()
            # ASCII digits only, as JSON's numbers: int() would also read "١٢" (Arabic-Indic).
            body[name] = int(text) if re.fullmatch(r"-?[0-9]{1,12}", text) else value
        else:
            body[name] = value
    return body


def read_submission(body: Any, settings: Settings, upload: IO[bytes] | None = None) -> Submission:
    """A JSON body, or (with `upload`, a CSV contact file) a form's fields."""
    if upload is None and (sub := _read_plain(body, settings)) is not None:
        return sub
    model: type[schemas.SubmitFields] = schemas.SubmitForm if upload else schemas.SubmitRequest
    checked = check(model, body)
    fields = checked.fields
    entries: list[Any] = []
    if upload is None:
        checked.ensure("recipients")
        entries = cast(schemas.SubmitRequest, fields).recipients
        if len(entries) > settings.max_recipients:
            raise ApiError(
                413,
                "too_many_recipients",
                f"A request may carry at most {settings.max_recipients} recipients; "
                f"this one has {len(entries)}.",
                details={"limit": settings.max_recipients, "received": len(entries)},
            )

    checked.ensure("message")
    text = fields.message
    if invisible(text):
        raise ApiError(
            422, "empty_message", "message must not be empty.", details={"field": "message"}
        )
    if len(text) > MAX_TEMPLATE_CHARACTERS:
        raise ApiError(
            422,
            "message_too_long",
            f"message may be at most {MAX_TEMPLATE_CHARACTERS} characters, placeholders "
            f"included; this one is {len(text)}.",
            details={"field": "message", "limit": MAX_TEMPLATE_CHARACTERS, "length": len(text)},
        )
    if _SURROGATE.search(text):
        raise ApiError(
            422,
            "invalid_message",
            "message holds a lone surrogate (an unpaired \\ud800-\\udfff escape): not text.",
            details={"field": "message"},
        )
    try:
        template = parse_template(text)
    except TemplateError as exc:
        raise ApiError(
            422,
            "invalid_template",
            str(exc),
            details={"field": "message", "position": exc.position + 1},
        ) from None
    if len(template.fields) > MAX_PLACEHOLDERS:
        raise ApiError(
            422,
            "too_many_placeholders",
            f"message may name at most {MAX_PLACEHOLDERS} fields; this one names "
            f"{len(template.fields)}.",
            details={"field": "message", "limit": MAX_PLACEHOLDERS},
        )
    encoded = encode(template.literal)
    if encoded.length > encoded.limit:
        raise ApiError(
            422,
            "message_too_long",
            f"A {encoded.encoding} message may be at most {encoded.limit} characters; "
            f"this one is {encoded.length}"
            + (" without its placeholders." if template.personal else "."),
            details={
                "encoding": encoded.encoding,
                "limit": encoded.limit,
                "length": encoded.length,
            },
        )

    sending = _read_sending(checked, settings, template)

    checked.ensure("default_region")
    region = fields.default_region
    if region is not None:
        region = region.strip().upper()
        if not re.fullmatch(r"[A-Z]{2}", region) or not numbers.is_known_region(region):
            raise ApiError(
                422,
                "unknown_region",
                "default_region must be a two-letter region code that phonenumbers "
                "knows, such as US or GB.",
                details={"field": "default_region"},
            )

    rows: contacts.Rows | None = None
    if upload is not None:
        checked.ensure("phone_column")
        chosen = cast(schemas.SubmitForm, fields).phone_column
        rows = contacts.read_csv(upload, template.fields, chosen, settings.max_recipients)
    elif template.personal or not set(map(type, entries)) <= {str}:
        rows = contacts.from_json(entries, template.fields)
    if rows is not None:
        _check_fillable(template, rows)
    sorted_out = numbers.sort_out(
        rows.numbers if rows is not None else entries,
        region or settings.default_region,
        settings.allowed_countries,
        INVALID_SHOWN,
        rows=template.personal,
    )
    source = sending.src
    if source in sorted_out.accepted:
        # Plivo refuses a batch whose src is also a dst; keep the others sendable.
        at = sorted_out.accepted.index(source)
        listed = rows.numbers if rows is not None else entries
        place = sorted_out.rows[at] if sorted_out.rows is not None else _place(listed, source)
        sorted_out.keep([i for i in range(len(sorted_out.accepted)) if i != at])
        sorted_out.refuse(source, "same_as_sender", INVALID_SHOWN, place)
    sub = Submission(
        callback_url=_read_callback_url(checked, settings),
        recipients=sorted_out,
        sending=sending,
        encoded=encoded,
        body=checked,
        template=template,
        rows=rows,
        labels=rows.label if rows is not None else None,
        send_at=_read_send_at(checked, settings),
    )
    if not sorted_out.accepted:
        raise ApiError(
            422,
            "no_valid_recipients",
            "None of the recipients is a valid number.",
            details=_account(sub),
        )
    return sub


def _place(listed: list[Any], number: str) -> int:
    try:
        return listed.index(number)
    except ValueError:  # (written another way: its place goes unsaid)
        return -1


def _check_fillable(template: Template, rows: contacts.Rows) -> None:
    """A placeholder that no row fills is the request's fault, not each row's."""
    for at, name in enumerate(template.fields):
        if not any(_given(row[at]) for row in rows.values):
            raise ApiError(
                422,
                "unfilled_placeholder",
                f"No recipient has a value for the message's placeholder {{{{{name}}}}}.",
                details={"field": "message", "placeholders": [name]},
            )


def invisible(text: str) -> bool:
    """Nothing a phone would show: only whitespace and format characters (zero-width spaces
    and joiners, a byte-order mark), which str.strip() keeps. (Judged at the first visible
    character: the first, in any real text.)"""
    if text.isascii():
        return not text.strip()
    return all(c.isspace() or unicodedata.category(c) == "Cf" for c in text)


def _given(value: str | None) -> bool:
    return value is not None and not value.isspace() and value != ""


def personalise(sub: Submission) -> None:
    """Fill the template for every accepted recipient (after the opt-outs are taken out): a row
    lacking a value (`missing_field`), whose text is too long (`too_long`) or blank
    (`empty_message`) is refused with its row number."""
    template, recipients, rows = sub.template, sub.recipients, sub.rows
    if not template.personal or rows is None or recipients.rows is None:
        return
    texts: list[str] = []
    segments: list[int] = []
    kept: list[int] = []
    encodings: Counter[str] = Counter()
    render, table, accepted = template.format.format, rows.values, recipients.accepted
    # The common case, judged once for the whole file: a plain template and plain values
    # (ASCII of GSM-7's basic table) make GSM-7 texts whose segments follow from their length.
    simple = plain([template.literal], itertools.chain.from_iterable(table))
    blank = invisible(template.literal)  # (else no text can be blank)
    limit = LIMITS[GSM7]

    def refuse(index: int, place: int, reason: str, lacking: str | None = None) -> None:
        recipients.refuse(accepted[index], reason, INVALID_SHOWN, place, lacking)

    for index, place in enumerate(recipients.rows):
        row = table[place]
        if None in row or not all(map(str.strip, cast(tuple[str, ...], row))):  # (blank: missing)
            lacking = template.fields[next(i for i, v in enumerate(row) if not _given(v))]
            refuse(index, place, MISSING_FIELD, lacking)
            continue
        text = render(*row)
        if simple:
            length = len(text)
            if length > limit:
                refuse(index, place, TOO_LONG, "message")
                continue
            count = plain_segments(length)
        else:
            measured = measure(text)
            if measured.length > measured.limit:
                refuse(index, place, TOO_LONG, "message")
                continue
            count = measured.segments
            encodings[measured.encoding] += 1
        if blank and invisible(text):
            refuse(index, place, "empty_message")
            continue
        kept.append(index)
        texts.append(text)
        segments.append(count)
    if simple:
        encodings[GSM7] = len(kept)
    values = [cast(tuple[str, ...], table[recipients.rows[i]]) for i in kept]
    recipients.keep(kept)
    sub.personal = Personal(template, values, texts, segments, encodings)


def batching(texts: list[str], batch_size: int) -> tuple[list[int], list[int]]:
    """Recipients of one text share batches (so they share calls: Plivo's `dst` takes one text
    a call), the others fill batches of their own: the order to store the recipients in (empty:
    as they are) and where each batch starts in it."""
    counts = Counter(texts)
    if len(counts) == len(texts):  # every text its own: nothing to share
        return [], list(range(0, len(texts), batch_size))
    order: list[int] = []
    starts: list[int] = []
    alone: list[int] = []
    members: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        if counts[text] == 1:
            alone.append(index)
            if len(alone) == batch_size:
                starts.append(len(order))
                order += alone
                alone = []
        else:
            members.setdefault(text, []).append(index)
    for group in members.values():
        for at in range(0, len(group), batch_size):
            starts.append(len(order))
            order += group[at : at + batch_size]
    if alone:
        starts.append(len(order))
        order += alone
    return order, starts


def check_spend(sub: Submission, settings: Settings) -> None:
    """Refuse a job that would bill more segments than the request or the service allows."""
    sub.body.ensure("max_segments")
    limits = [n for n in (sub.body.fields.max_segments, settings.max_segments_per_job) if n]
    total = sub.total_segments
    if limits and total > min(limits):
        raise ApiError(
            422,
            "too_many_segments",
            f"This job would send {total} segments; the limit is {min(limits)}.",
            details={"segments": total, "limit": min(limits)},
        )


def _read_callback_url(checked: Checked[schemas.SubmitFields], settings: Settings) -> str | None:
    checked.ensure("callback_url")
    value = checked.fields.callback_url
    if value is None:
        return None
    try:
        parts: SplitResult | None = urlsplit(value)
    except ValueError:  # not a URL at all (an unclosed IPv6 bracket: `http://[::1`)
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(value) > 2048
        or not _has_valid_port(parts)
    ):
        raise ApiError(
            422,
            "invalid_callback_url",
            "callback_url must be an http(s) URL.",
            details={"field": "callback_url"},
        )
    if not settings.callback_secret:
        raise ApiError(
            422,
            "callbacks_not_configured",
            "This service signs callbacks with "
            "CALLBACK_SECRET, which is not set: it cannot send callbacks.",
            details={"field": "callback_url"},
        )
    if not settings.callback_allow_private:  # (with it, nothing to check: no lookup either)
        try:
            callback_address.allowed_addresses(value, allow_private=False)
        except callback_address.NotAllowed as exc:
            unresolved = isinstance(exc, callback_address.Unresolved)
            raise ApiError(
                422,
                "callback_url_unresolvable" if unresolved else "callback_url_not_allowed",
                f"{exc}: callbacks go only to public addresses.",
                details={"field": "callback_url"},
            ) from None
    return value


def _has_valid_port(parts: SplitResult) -> bool:
    try:
        parts.port  # noqa: B018 (read to be checked: raises on a malformed port)
    except ValueError:
        return False
    return True


def _read_send_at(checked: Checked[schemas.SubmitFields], settings: Settings) -> float | None:
    """An ISO 8601 time with its zone; now or in the past means now. None: send at once."""
    checked.ensure("send_at")
    value = checked.fields.send_at
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(
            422,
            "invalid_send_at",
            "send_at must be an ISO 8601 time, such as 2026-12-01T09:00:00+01:00.",
            details={"field": "send_at"},
        ) from None
    if moment.tzinfo is None:
        raise ApiError(
            422,
            "invalid_send_at",
            "send_at needs a time zone (Z or +01:00).",
            details={"field": "send_at"},
        )
    horizon = min(MAX_SCHEDULE_SECONDS, settings.job_retention_seconds // 2)
    at = moment.timestamp()
    if at - time.time() > horizon:
        raise ApiError(
            422,
            "send_at_too_far",
            f"send_at may be at most {horizon // 86400} days ahead.",
            details={"field": "send_at", "max_seconds": horizon},
        )
    return at if at > time.time() else None


def _read_sending(
    checked: Checked[schemas.SubmitFields], settings: Settings, template: Template
) -> Sending:
    """`src` or a Powerpack (the request's, else the service's), and the expiry."""
    fields = checked.fields
    checked.ensure("sender")
    sender = fields.sender
    if sender is not None and not (E164_RE.match(sender) or ALPHANUMERIC_SENDER_RE.match(sender)):
        raise ApiError(
            422,
            "invalid_sender",
            "sender must be an E.164 number or an alphanumeric sender ID of "
            "1-11 characters with at least one letter.",
            details={"field": "sender"},
        )
    checked.ensure("powerpack_uuid")
    powerpack = fields.powerpack_uuid
    if powerpack is not None:
        if not UUID_RE.match(powerpack):
            raise ApiError(
                422,
                "invalid_powerpack_uuid",
                "powerpack_uuid must be a UUID.",
                details={"field": "powerpack_uuid"},
            )
        if sender is not None:
            raise ApiError(
                422,
                "sender_and_powerpack",
                "Pass sender or powerpack_uuid, not both: Plivo sends from one.",
                details={"fields": ["sender", "powerpack_uuid"]},
            )
    checked.ensure("expiry_seconds")  # its type, then its range
    if sender is None and powerpack is None:
        sender, powerpack = settings.plivo_sender_id, settings.plivo_powerpack_uuid
    if sender is None and powerpack is None:
        raise ApiError(
            422,
            "no_sender",
            "No sender: pass sender or powerpack_uuid, or set "
            "PLIVO_SENDER_ID or PLIVO_POWERPACK_UUID on the service.",
        )
    return Sending(
        # A template's job keeps the template (each call renders its text); any other job the
        # text to send ({{{{ read as {{).
        message=template.source if template.personal else template.literal,
        src=sender,
        powerpack_uuid=powerpack,
        message_expiry=fields.expiry_seconds,
    )


def _account(sub: Submission) -> dict[str, Any]:
    recipients = sub.recipients
    label = sub.labels or (lambda place: place + 1)
    return {
        "recipients": {
            "received": recipients.received,
            "accepted": len(recipients.accepted),
            "duplicates": recipients.duplicates,
            "invalid": recipients.invalid_count,
            "suppressed": recipients.suppressed,
        },
        "invalid": [
            {
                **({"row": label(place)} if place >= 0 else {}),
                "input": raw[:64],
                "reason": reason,
                **({"field": lacking} if lacking else {}),
            }
            for raw, reason, place, lacking in recipients.invalid[:INVALID_SHOWN]
        ],
    }


def accepted_document(sub: Submission) -> dict[str, Any]:
    """The recipient accounting and the billing estimate of a 202 answer: with a template, the
    exact sum over the rendered texts; `segments_per_message` is {"min", "max"} when they
    differ, and `encoding` "mixed" when the texts do."""
    return {**_account(sub), **segments_document(sub)}


def segments_document(sub: Submission) -> dict[str, Any]:
    personal = sub.personal
    if personal is None or not personal.segments:
        return {
            "encoding": sub.encoded.encoding,
            "segments_per_message": sub.encoded.segments,
            "estimated_segments": sub.total_segments,
        }
    low, high = min(personal.segments), max(personal.segments)
    encodings = sorted(personal.encodings)
    return {
        "encoding": encodings[0] if len(encodings) == 1 else "mixed",
        "encodings": dict(sorted(personal.encodings.items())),
        "segments_per_message": low if low == high else {"min": low, "max": high},
        "estimated_segments": sub.total_segments,
    }


def preview_document(sub: Submission, settings: Settings, shown: int = 5) -> dict[str, Any]:
    """What a submit of this body would answer, and the first `shown` messages as sent."""
    accepted = sub.recipients.accepted
    if sub.personal is not None:
        texts, segments = sub.personal.texts, sub.personal.segments
        histogram = Counter(segments)
    else:
        texts = [sub.template.literal] * min(shown, len(accepted))
        segments = [sub.encoded.segments] * min(shown, len(accepted))
        histogram = Counter({sub.encoded.segments: len(accepted)})
    document = {
        **accepted_document(sub),
        "segments_histogram": {str(k): v for k, v in sorted(histogram.items())},
        "messages": [
            {"to": number, "text": text, "segments": count, "encoding": measure(text).encoding}
            for number, text, count in zip(accepted[:shown], texts, segments, strict=False)
        ],
    }
    if settings.price_per_segment is not None:
        document["estimated_cost"] = round(sub.total_segments * settings.price_per_segment, 5)
    return document
