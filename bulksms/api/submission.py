"""Reading a `POST /api/bulk-sms` body: every way it can be wrong becomes one clear `ApiError`."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from bulksms import numbers
from bulksms.api.errors import ApiError
from bulksms.config import ALPHANUMERIC_SENDER_RE, E164_RE, UUID_RE, Settings
from bulksms.message import Encoded, encode
from bulksms.store.jobs import Sending

KNOWN_FIELDS = {
    "recipients",
    "message",
    "sender",
    "default_region",
    "powerpack_uuid",
    "expiry_seconds",
    "send_at",
    "max_segments",
    "priority",
    "callback_url",
}
EXPIRY_RANGE = (5, 10_799)  # Plivo's message_expiry, in seconds
MAX_SCHEDULE_SECONDS = 30 * 86400  # and at most half the retention: the job must outlive it
INVALID_SHOWN = 100  # the answer lists at most this many refused entries; the count is exact


@dataclass(frozen=True)
class Submission:
    recipients: numbers.Recipients
    sending: Sending
    encoded: Encoded
    send_at: float | None = None
    callback_url: str | None = None


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


def _field_error(name: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", message, details={"field": name})


def read_submission(body: Any, settings: Settings) -> Submission:
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_body", "The body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"Unknown field(s): {', '.join(unknown)[:200]}.",
            details={"fields": unknown[:20]},
        )

    recipients = body.get("recipients")
    # (JSON's types only: a set of the types seen is the fast way to ask "all strings?")
    if not isinstance(recipients, list) or not set(map(type, recipients)) <= {str}:
        raise _field_error("recipients", "recipients must be a list of phone numbers as strings.")
    if not recipients:
        raise ApiError(
            422, "no_recipients", "recipients must not be empty.", details={"field": "recipients"}
        )
    if len(recipients) > settings.max_recipients:
        raise ApiError(
            413,
            "too_many_recipients",
            f"A request may carry at most {settings.max_recipients} recipients; "
            f"this one has {len(recipients)}.",
            details={"limit": settings.max_recipients, "received": len(recipients)},
        )

    text = body.get("message")
    if not isinstance(text, str):
        raise _field_error("message", "message must be a string.")
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

    sending = _read_sending(body, text, settings)

    region = body.get("default_region")
    if region is not None:
        if not isinstance(region, str):
            raise _field_error("default_region", "default_region must be a string.")
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
        callback_url=_read_callback_url(body.get("callback_url"), settings),
        recipients=sorted_out,
        sending=sending,
        encoded=encoded,
        send_at=_read_send_at(body.get("send_at"), settings),
    )


def check_spend(sub: Submission, body: dict[str, Any], settings: Settings) -> None:
    """Refuse a job that would bill more segments than the request or the service allows."""
    cap = body.get("max_segments")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise _field_error("max_segments", "max_segments must be a whole number of at least 1.")
    limits = [n for n in (cap, settings.max_segments_per_job) if n]
    total = sub.encoded.segments * len(sub.recipients.accepted)
    if limits and total > min(limits):
        raise ApiError(
            422,
            "too_many_segments",
            f"This job would send {total} segments; the limit is {min(limits)}.",
            details={"segments": total, "limit": min(limits)},
        )


def _read_callback_url(value: Any, settings: Settings) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise _field_error("callback_url", "callback_url must be a string.")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 2048:
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
    return value


def _read_send_at(value: Any, settings: Settings) -> float | None:
    """An ISO 8601 time with its zone; now or in the past means now. None: send at once."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _field_error("send_at", "send_at must be an ISO 8601 time string.")
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


def _read_sending(body: dict[str, Any], text: str, settings: Settings) -> Sending:
    """`src` or a Powerpack (the request's, else the service's), and the expiry."""
    sender, powerpack = body.get("sender"), body.get("powerpack_uuid")
    if sender is not None:
        if not isinstance(sender, str):
            raise _field_error("sender", "sender must be a string.")
        if not (E164_RE.match(sender) or ALPHANUMERIC_SENDER_RE.match(sender)):
            raise ApiError(
                422,
                "invalid_sender",
                "sender must be an E.164 number or an alphanumeric sender ID of "
                "1-11 characters with at least one letter.",
                details={"field": "sender"},
            )
    if powerpack is not None:
        if not isinstance(powerpack, str):
            raise _field_error("powerpack_uuid", "powerpack_uuid must be a string.")
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
    expiry = body.get("expiry_seconds")
    if expiry is not None:
        if not isinstance(expiry, int) or isinstance(expiry, bool):
            raise _field_error("expiry_seconds", "expiry_seconds must be a whole number.")
        low, high = EXPIRY_RANGE
        if not low <= expiry <= high:
            raise ApiError(
                422,
                "invalid_expiry",
                f"expiry_seconds must be between {low} and {high}.",
                details={"field": "expiry_seconds", "min": low, "max": high},
            )
    if sender is None and powerpack is None:
        sender, powerpack = settings.plivo_sender_id, settings.plivo_powerpack_uuid
    if sender is None and powerpack is None:
        raise ApiError(
            422,
            "no_sender",
            "No sender: pass sender or powerpack_uuid, or set "
            "PLIVO_SENDER_ID or PLIVO_POWERPACK_UUID on the service.",
        )
    return Sending(message=text, src=sender, powerpack_uuid=powerpack, message_expiry=expiry)


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
