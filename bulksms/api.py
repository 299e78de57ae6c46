"""`/api/bulk-sms`: submit a job, read its status. Every endpoint needs an API key."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from bulksms import idempotency, metrics, submission
from bulksms.auth import presented_key, require_api_key
from bulksms.errors import ApiError
from bulksms.extensions import redis_client, settings, store
from bulksms.ratelimit import limiter, read_limit, submit_limit
from bulksms.store import JobState, NewJob, status_document
from bulksms.tasks import enqueue

bp = Blueprint("api", __name__, url_prefix="/api/bulk-sms")


@bp.before_request
def _authenticate() -> None:
    require_api_key(settings().api_keys)


@bp.post("")
@limiter.limit(submit_limit)
def submit() -> tuple[Response, int, dict[str, str]]:
    body = submission.parse_json(request.get_data(cache=False), request.content_type)
    idempotency_key = request.headers.get(idempotency.HEADER)
    if idempotency_key is None:
        return _accepted(_make_job(body, None))
    with idempotency.once(
        redis_client(), idempotency_key, presented_key() or "", body, settings().idempotency_ttl
    ) as slot:
        if isinstance(slot, dict):
            return _accepted(slot, {"Idempotent-Replayed": "true"})
        return _accepted(_make_job(body, slot))


def _make_job(body: Any, slot: idempotency.Slot | None) -> dict[str, Any]:
    """Validate, store the job, remember the answer (if idempotent), then enqueue its batches."""
    s = settings()
    sub = submission.read_submission(body, s)
    job_id = uuid.uuid4().hex
    new_job = NewJob(
        job_id=job_id,
        sending=sub.sending,
        recipients=sub.recipients.accepted,
        received=sub.recipients.received,
        duplicates=sub.recipients.duplicates,
        invalid=sub.recipients.invalid_count,
        batch_size=s.batch_size,
        extra={"encoding": sub.encoded.encoding, "segments_per_message": sub.encoded.segments},
    )
    store().create(new_job)
    answer = {
        "job_id": job_id,
        "status_url": url_for("api.status", job_id=job_id),
        "state": JobState.QUEUED.value,
        "batches": new_job.batch_count,
        **submission.accepted_document(sub),
    }
    if slot is not None:
        slot.remember(answer)
    metrics.JOBS_CREATED.inc()
    metrics.RECIPIENTS_ACCEPTED.inc(len(new_job.recipients))
    # If enqueueing fails now, the job is stored and the sweep enqueues its batches later.
    enqueue(job_id, range(new_job.batch_count))
    return answer


def _accepted(
    answer: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[Response, int, dict[str, str]]:
    return jsonify(answer), 202, {"Location": answer["status_url"], **(headers or {})}


@bp.get("/<job_id>")
@limiter.limit(read_limit)
def status(job_id: str) -> Response:
    fields = store().job_fields(job_id) if _plausible_id(job_id) else None
    if fields is None:
        raise ApiError(404, "not_found", "No job with this id (it may have expired).")
    return jsonify(status_document(job_id, fields))


def _plausible_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
