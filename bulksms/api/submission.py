"""Reading a `POST /api/bulk-sms` body: every way it can be wrong becomes one clear `ApiError`.

The body's schema (`schemas.SubmitRequest`) judges types, enums and ranges; the custom checks here
judge the rest, numbers and segments included. A body with several faults is answered for the
first one in the order below, the order these checks have always run in: a field's schema
refusal is held back (`Checked.ensure`) until that field's turn.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ValidationError

from bulksms import callback_address, numbers
from bulksms.api import schemas
from bulksms.api.errors import ApiError
from bulksms.config import ALPHANUMERIC_SENDER_RE, E164_RE, UUID_RE, Settings
from bulksms.message import Encoded, encode
from bulksms.store import Sending

MAX_SCHEDULE_SECONDS = 30 * 86400  # and at most half the retention: the job must outlive it
INVALID_SHOWN = 100  # the answer lists at most this many refused entries; the count is exact

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


@dataclass(frozen=True)
class Submission:
    recipients: numbers.Recipients
    sending: Sending
    encoded: Encoded
    # The body as its schema read it; max_segments and priority are judged last, after the
    # opt-outs, as they always were.
    body: Checked[schemas.SubmitRequest]
    send_at: float | None = None
    callback_url: str | None = None

    def priority(self) -> schemas.Priority:
        self.body.ensure("priority")
        return self.body.fields.priority


def parse_json(raw: bytes, content_type: str | None) -> Any:
    if not content_type or content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError(
            400,
            "malformed_json",
            "The body is not valid JSON.",
            details=str(exc)[:200] if isinstance(exc, ValueError) else None,
        ) from None


def read_submission(body: Any, settings: Settings) -> Submission:
    checked = check(schemas.SubmitRequest, body)
    fields = checked.fields
    checked.ensure("recipients")
    recipients = fields.recipients
    if len(recipients) > settings.max_recipients:
        raise ApiError(
            413,
            "too_many_recipients",
            f"A request may carry at most {settings.max_recipients} recipients; "
            f"this one has {len(recipients)}.",
            details={"limit": settings.max_recipients, "received": len(recipients)},
        )

    checked.ensure("message")
    text = fields.message
    if not text.strip():
        raise ApiError(
            422, "empty_message", "message must not be empty.", details={"field": "message"}
        )
    encoded = encode(text)
    if encoded.length > encoded.limit:
        raise ApiError(
            422,
            "message_too_long",
            f"A {encoded.encoding} message may be at most {encoded.limit} characters; "
            f"this one is {encoded.length}.",
            details={
                "encoding": encoded.encoding,
                "limit": encoded.limit,
                "length": encoded.length,
            },
        )

    sending = _read_sending(checked, settings)

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

    sorted_out = numbers.sort_out(
        recipients, region or settings.default_region, settings.allowed_countries, INVALID_SHOWN
    )
    source = sending.src
    if source in sorted_out.accepted:
        # Plivo refuses a batch whose src is also a dst; keep the others sendable.
        sorted_out.accepted.remove(source)
        sorted_out.refuse(source, "same_as_sender", INVALID_SHOWN)
    if not sorted_out.accepted:
        raise ApiError(
            422,
            "no_valid_recipients",
            "None of the recipients is a valid number.",
            details=_account(sorted_out),
        )
    return Submission(
        callback_url=_read_callback_url(checked, settings),
        recipients=sorted_out,
        sending=sending,
        encoded=encoded,
        body=checked,
        send_at=_read_send_at(checked, settings),
    )


def check_spend(sub: Submission, settings: Settings) -> None:
    """Refuse a job that would bill more segments than the request or the service allows."""
    sub.body.ensure("max_segments")
    limits = [n for n in (sub.body.fields.max_segments, settings.max_segments_per_job) if n]
    total = sub.encoded.segments * len(sub.recipients.accepted)
    if limits and total > min(limits):
        raise ApiError(
            422,
            "too_many_segments",
            f"This job would send {total} segments; the limit is {min(limits)}.",
            details={"segments": total, "limit": min(limits)},
        )


def _read_callback_url(checked: Checked[schemas.SubmitRequest], settings: Settings) -> str | None:
    checked.ensure("callback_url")
    value = checked.fields.callback_url
    if value is None:
        return None
    parts = urlsplit(value)
    if (
        parts.scheme not in ("http", "https")
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


def _read_send_at(checked: Checked[schemas.SubmitRequest], settings: Settings) -> float | None:
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


def _read_sending(checked: Checked[schemas.SubmitRequest], settings: Settings) -> Sending:
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
        message=fields.message,
        src=sender,
        powerpack_uuid=powerpack,
        message_expiry=fields.expiry_seconds,
    )


def _account(recipients: numbers.Recipients) -> dict[str, Any]:
    return {
        "recipients": {
            "received": recipients.received,
            "accepted": len(recipients.accepted),
            "duplicates": recipients.duplicates,
            "invalid": recipients.invalid_count,
            "suppressed": recipients.suppressed,
        },
        "invalid": [
            {"input": raw[:64], "reason": reason}
            for raw, reason in recipients.invalid[:INVALID_SHOWN]
        ],
    }


def accepted_document(submission: Submission) -> dict[str, Any]:
    """The recipient accounting and the billing estimate of a 202 answer."""
    accepted = len(submission.recipients.accepted)
    return {
        **_account(submission.recipients),
        "encoding": submission.encoded.encoding,
        "segments_per_message": submission.encoded.segments,
        "estimated_segments": submission.encoded.segments * accepted,
    }
