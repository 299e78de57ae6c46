"""Opt-outs: numbers that must never be sent to again, until they opt back in.

One set in Redis (`bulksms.store.optouts`, never expiring) of numbers. Filled by the API
(`PUT /api/opt-outs/<number>`), by STOP replies through the signed inbound-message webhook, and
by delivery reports with Plivo's error 200 ("blocked by STOP"); emptied by START replies and
`DELETE`. Replies apply in the order they were sent (Plivo's MessageTime), each message once.
Every submit leaves opted-out numbers out and reports them as `suppressed`.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import UTC, datetime

from flask import Blueprint, Response, jsonify, request

from bulksms import numbers
from bulksms.api.auth import require_api_key
from bulksms.api.errors import ApiError
from bulksms.api.ratelimit import limiter, read_limit, submit_limit
from bulksms.api.webhooks import guard, settle_nonce, verify_plivo
from bulksms.extensions import redis_client, settings
from bulksms.store import optouts as opt_out_set

# CTIA's and Plivo's words (a reply that is one of them, in any case, spacing or end
# punctuation); Plivo also says what a reply means on long codes and toll-free numbers.
STOP_WORDS = {"STOP", "STOPALL", "STOP ALL", "UNSUBSCRIBE", "UNSUB", "CANCEL", "END", "QUIT"}
START_WORDS = {"START", "UNSTOP"}
INTENTS = {"optout": True, "optin": False}  # Plivo's MessageIntent: opted out or not
log = logging.getLogger(__name__)
FUTURE_SLACK_SECONDS = 300

api = Blueprint("optouts", __name__, url_prefix="/api/opt-outs")
inbound = Blueprint("inbound", __name__, url_prefix="/api/webhooks")
inbound.before_request(guard)  # the body's cap and the bad-signature limit, as for reports


def _number(raw: str) -> str:
    e164, reason = numbers.normalise(raw, settings().default_region)
    if e164 is None:
        raise ApiError(
            422,
            "invalid_number",
            f"Not a valid phone number ({reason}).",
            details={"reason": reason},
        )
    return e164


@api.before_request
def _authenticate() -> None:
    require_api_key(settings().api_keys)


@api.get("")
@limiter.limit(read_limit)
def listing() -> Response:
    cursor = request.args.get("cursor", "0")
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 20 and int(cursor) < 2**64):
        raise ApiError(400, "invalid_cursor", "cursor must be a next_cursor from a page.")
    found, after = opt_out_set.page(redis_client(), int(cursor))
    return jsonify({"opt_outs": found, "next_cursor": str(after) if after else None})


@api.get("/<number>")
@limiter.limit(read_limit)
def show(number: str) -> Response:
    e164 = _number(number)
    if not opt_out_set.is_opted_out(redis_client(), e164):
        raise ApiError(404, "not_found", "This number has not opted out.")
    return jsonify({"number": e164, "opted_out": True})


@api.put("/<number>")
@limiter.limit(submit_limit)
def add(number: str) -> Response:
    e164 = _number(number)
    opt_out_set.opt_out(redis_client(), e164)
    return jsonify({"number": e164, "opted_out": True})


@api.delete("/<number>")
@limiter.limit(submit_limit)
def remove(number: str) -> Response:
    e164 = _number(number)
    if not opt_out_set.opt_in(redis_client(), e164):
        raise ApiError(404, "not_found", "This number has not opted out.")
    return jsonify({"number": e164, "opted_out": False})


def sent_at(message_time: str, stop: bool = True) -> float | None:
    """Plivo's MessageTime ('2026-11-30 12:00:01', UTC unless it says otherwise, maybe with
    fractions and an offset) as epoch seconds; None when absent or unreadable.

    A time ahead of ours would make every later reply "older". A STOP's counts as at most a few
    minutes ahead (clocks drift); a START's as now at most, as it arrived: dated ahead, it
    would otherwise have a real STOP sent in those minutes ignored. Where clocks disagree, the
    error falls on the side of not texting."""
    try:
        when = datetime.fromisoformat(message_time.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    stamp = when.timestamp()
    if not math.isfinite(stamp):
        return None
    return min(stamp, time.time() + (FUTURE_SLACK_SECONDS if stop else 0))


@inbound.post("/plivo/inbound")
def inbound_message() -> Response:
    """Plivo's inbound SMS: STOP words (or MessageIntent=optout) opt the sender out, START words
    (or MessageIntent=optin) back in; in the order the sender sent them, each message once
    (`optouts.apply_reply`)."""
    form = verify_plivo(lasting=True)
    if form is None:
        return Response(status=204)
    word = " ".join(form.get("Text", "").split()).upper().rstrip(".!")
    intent = INTENTS.get(form.get("MessageIntent", "").strip().lower())
    if intent is None and word in STOP_WORDS | START_WORDS:
        intent = word in STOP_WORDS
    sender = form.get("From", "").strip()
    e164 = numbers.normalise("+" + sender.lstrip("+"), None)[0] if sender else None
    if e164 and intent is not None:
        done = opt_out_set.apply_reply(
            redis_client(),
            e164,
            intent,
            sent_at(form.get("MessageTime", ""), intent),
            form.get("MessageUUID", "").strip(),
        )
        if done != "applied":
            log.info("inbound %s not applied: %s", "STOP" if intent else "START", done)
    settle_nonce()  # stored: a replay of this request, even unchanged, is now ignored
    return Response(status=204)
