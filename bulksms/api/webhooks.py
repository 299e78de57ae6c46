"""Plivo's delivery reports: verify the signature first, record, answer 2xx only once stored.

Plivo retries any non-2xx answer, so a report is acknowledged only after Redis has it (a Redis
failure leaves as 503 through the error handlers), and a report we cannot use (a message we do
not know, a status we do not track) is acknowledged too: a retry would not make it usable.
"Has it" is Redis's answer where that answer means the disk has it; elsewhere, the write on
Redis's socket (`hand_over`, `bulksms.store.handoff`; the README's Delivery reports).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import TypeVar
from urllib.parse import unquote

import redis
from flask import Blueprint, Response, g, request
from redis.connection import Connection

from bulksms import metrics, signature
from bulksms.api.errors import ApiError
from bulksms.api.ratelimit import count_bad_signature, refuse_bad_signatures_past_limit
from bulksms.extensions import nonces, settings, store
from bulksms.store import BLOCKED_BY_STOP, JobStore, Report, Status
from bulksms.store.handoff import Handoff

log = logging.getLogger(__name__)
T = TypeVar("T", int, float)

bp = Blueprint("webhooks", __name__, url_prefix="/api/webhooks")
MAX_BODY = 64 * 1024  # Plivo's reports and inbound messages are under 2 KB

TRACKED = {s.value for s in Status if s is not Status.PENDING}
RESULTS = {1: "recorded", 0: "repeat", -1: "unknown_recipient"}
# How long a handed-over report whose write failed is written again while Redis is away.
HANDOFF_PATIENCE_SECONDS = 120
PART_INFO = re.compile(r"(\d{1,3})\s+of\s+(\d{1,3})", re.IGNORECASE | re.ASCII)


@bp.before_request
def guard() -> None:
    """Before the body is parsed (anyone may post here): a body longer than MAX_BODY is
    refused from its length unread, or once that much has come (a body without a length); an
    address past the bad-signature limit is refused before its body is parsed."""
    if request.content_length is None:
        # Werkzeug reads a body without a length up to the limit and stops there, silently:
        # one byte more says it was longer.
        request.max_content_length = MAX_BODY + 1
        too_long = len(request.get_data()) > MAX_BODY
    else:
        too_long = request.content_length > MAX_BODY
    if too_long:
        # The rest of the body is not read: the connection closes after the answer.
        raise ApiError(
            413,
            "payload_too_large",
            f"A webhook's body is at most {MAX_BODY} bytes.",
            headers={"Connection": "close"},
        )
    refuse_bad_signatures_past_limit()


def _public_url() -> str:
    """The URL Plivo signed: API_BASE_URL and our route, not what a proxy made of request.url."""
    query = request.query_string.decode("utf-8", "replace")
    assert request.url_rule is not None
    base = f"{settings().api_base_url}{request.url_rule.rule}"
    return f"{base}?{query}" if query else base


def parse_form(text: str) -> dict[str, list[str]]:
    """`parse_qs(text, keep_blank_values=True)`, in a third of its time: Plivo's fields seldom
    need unquoting, and those that do not skip it (tests/unit/test_webhook.py holds the two
    equal)."""
    form: dict[str, list[str]] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            name, value = unquote(name.replace("+", " ")), unquote(value.replace("+", " "))
        form.setdefault(name, []).append(value)
    return form


def _posted() -> dict[str, list[str]]:
    """The POSTed parameters. Plivo posts a urlencoded form: parsed straight from the body, it
    costs a ninth of Werkzeug's form parser (with the same UTF-8 decoding, errors replaced)."""
    if request.mimetype == "application/x-www-form-urlencoded":
        return parse_form(request.get_data(as_text=True))
    return request.form.to_dict(flat=False)


def verify_plivo(lasting: bool = False) -> dict[str, str] | None:
    """Refuse (403, or 429 past the limit) any request without a valid Plivo signature.

    Returns the signed parameters, the first value of each; None for a replay, a nonce already
    bound to another request, which the caller answers 2xx and ignores (a 403 would count
    against Plivo's own address, and Plivo retries what it thinks was lost). `lasting`: the
    request's effect lasts and a repeat could undo a later one (an inbound START after a STOP),
    so its nonces are remembered for good and the caller settles them (`settle_nonce`) once
    its work is stored.
    """
    s = settings()
    posted = _posted()
    url = _public_url()
    verdict = signature.verify(
        url, posted, request.headers, s.webhook_key, s.plivo_main_auth_token, s.accept_v2
    )
    if verdict in (signature.Verdict.MISSING, signature.Verdict.INVALID):
        metrics.SIGNATURE_FAILURES.labels(verdict.value).inc()
        count_bad_signature()
    if verdict is signature.Verdict.MISSING:
        raise ApiError(403, "signature_missing", "The request carries no Plivo signature.")
    if verdict is signature.Verdict.INVALID:
        raise ApiError(403, "signature_invalid", "The Plivo signature does not match.")
    taken = bound_nonces(request.headers, verdict, lasting)
    digest = request_digest(url, posted)
    if not all(nonces().first_use(nonce, digest, lasting) for nonce in taken):
        metrics.SIGNATURE_FAILURES.labels("replayed").inc()
        log.warning("a signed request came with a nonce already taken: ignored")
        return None
    if lasting:
        g.plivo_nonces = taken
    return {name: values[0] for name, values in posted.items()}


def bound_nonces(
    headers: signature.Headers, verdict: signature.Verdict, lasting: bool
) -> list[str]:
    """The nonces a verified request binds. A V2 nonce always, even beside a valid V3: V2 signs
    no parameter, so the V2 half of a request signed both ways, re-posted alone with other
    content, would otherwise pass. A V3 nonce when the request's effect lasts."""
    found = [headers.get(signature.V2_NONCE)]
    if lasting and verdict is signature.Verdict.VALID_V3:
        found.append(headers.get(signature.V3_NONCE))
    return [nonce for nonce in found if nonce]


def settle_nonce() -> None:
    """The request `verify_plivo` let through is stored: its nonces are spent for good."""
    for nonce in g.pop("plivo_nonces", []):
        nonces().settle(nonce)


def request_digest(url: str, posted: Mapping[str, list[str]]) -> str:
    """What a nonce is bound to: the URL with its query and every posted value."""
    text = json.dumps([url, sorted(posted.items())], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _number(raw: str | None, kind: type[T], most: T) -> T:
    """A billing figure from a report; anything odd counts as nothing."""
    try:
        value = kind(raw or 0)
    except ValueError:
        return kind()
    return value if 0 <= value <= most else kind()  # (NaN fails the comparison too)


def _part(info: str) -> tuple[int, int]:
    """Plivo's PartInfo, "1 of 2": (1, 2); (0, 0) for a whole message or anything odd."""
    found = PART_INFO.fullmatch(info.strip())
    if found:
        part, parts = int(found[1]), int(found[2])
        if 1 <= part <= parts and parts > 1:
            return part, parts
    return 0, 0


@bp.post("/plivo/delivery-report")
def delivery_report() -> Response:
    form = verify_plivo()
    if form is None:
        return Response(status=204)
    record(store(), request.args.get("job", ""), request.args.get("batch", ""), form)
    return Response(status=204)


def record(
    jobs: JobStore,
    job_id: str,
    batch: str,
    form: Mapping[str, str],
    connection: Connection | None = None,
) -> str:
    """Record one report whose signature is verified; returns what became of it."""
    report = _report(job_id, batch, form)
    if report is None:
        return "ignored"
    return _recorded(report, jobs.record_report(report, connection))


def hand_over(
    jobs: JobStore,
    handoff: Handoff,
    job_id: str,
    batch: str,
    form: Mapping[str, str],
) -> bool:
    """Record one report as `record` does, without waiting for Redis's answer where that
    answer would not mean the report is on disk (`bulksms.store.handoff`). False: not handed
    over (Redis answers from disk, say), and the caller records it with `record`."""
    if form.get("ErrorCode", "").strip() == BLOCKED_BY_STOP:
        return False  # (its opt-out, in the same script, must be stored before the 204: rare)
    report = _report(job_id, batch, form)
    if report is None:
        return True
    packed = jobs.report_command(report)
    if packed is None:
        _recorded(report, -1)
        return True

    def settle(answer: object, since: float) -> None:  # in a thread of the handoff's
        moved = _answered(jobs, report, answer, since)
        if moved is not None:
            _recorded(report, moved)

    return handoff.send(packed, settle)


def _answered(jobs: JobStore, report: Report, answer: object, since: float) -> int | None:
    """The handed-over report's outcome. Its answer an error (in the handoff's rewriter): it
    is written again, waiting, while Redis fails, up to HANDOFF_PATIENCE_SECONDS from `since`
    (when the answer came); None if it never was. Otherwise (in the handoff's reader, which
    must not retry): a failure is raised, and the handoff hands it to the rewriter."""
    if not isinstance(answer, BaseException):
        return jobs.report_answered(report, answer)
    deadline, pause = since + HANDOFF_PATIENCE_SECONDS, 0.2
    while True:
        try:
            return jobs.report_answered(report, answer)
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                # Acknowledged to Plivo, which will not post it again: as a report that never
                # came, the message keeps the status it had.
                log.error(
                    "delivery report for job %s batch %d acknowledged but not recorded: Redis "
                    "failed for %d s (%s)",
                    report.job_id,
                    report.batch,
                    HANDOFF_PATIENCE_SECONDS,
                    exc,
                )
                metrics.REPORTS.labels(report.status.value, "lost").inc()
                return None
            time.sleep(pause)
            pause = min(pause * 2, 5.0)


def _report(job_id: str, batch: str, form: Mapping[str, str]) -> Report | None:
    """The report a verified form makes; None (logged and counted) for one we do not track."""
    status = form.get("Status", "").strip().lower()
    number = form.get("To", "").strip()
    batch_ok = batch.isascii() and batch.isdigit() and len(batch) <= 9  # (V2 signs no query)
    if not (job_id and batch_ok and number and status in TRACKED):
        log.info("delivery report ignored: job=%r batch=%r status=%r", job_id, batch[:20], status)
        metrics.REPORTS.labels(status if status in TRACKED else "other", "ignored").inc()
        return None
    part, parts = _part(form.get("PartInfo", ""))
    return Report(
        job_id,
        int(batch),
        number,
        Status(status),
        # A part's report names the message by its first part (ParentMessageUUID).
        uuid=(parts and form.get("ParentMessageUUID", "")) or form.get("MessageUUID", ""),
        error_code=form.get("ErrorCode", ""),
        units=_number(form.get("Units"), int, 1000),
        amount=_number(form.get("TotalAmount"), float, 1000.0),
        part=part,
        parts=parts,
    )


def _recorded(report: Report, moved: int) -> str:
    """Log and count what the report changed. (A STOP it reveals opted the recipient out in the
    store's same step, once, and only for a recipient of the job: V2 signs neither body nor
    query, so a captured request posted again must not opt out any number it names, nor opt a
    number out again after its START: `JobStore.record_report`.)"""
    if moved < 0:
        log.info("delivery report for an unknown recipient of job %s", report.job_id)
    metrics.REPORTS.labels(report.status.value, RESULTS[moved]).inc()
    return RESULTS[moved]
