"""`/api/bulk-sms`: submit a job, read its status. Every endpoint needs an API key."""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, jsonify, request, url_for

from bulksms import submission
from bulksms.auth import require_api_key
from bulksms.errors import ApiError
from bulksms.extensions import settings, store
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
    s = settings()
    body = submission.parse_json(request.get_data(cache=False), request.content_type)
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
    enqueue(job_id, range(new_job.batch_count))
    location = url_for("api.status", job_id=job_id)
    answer = {
        "job_id": job_id,
        "status_url": location,
        "state": JobState.QUEUED.value,
        "batches": new_job.batch_count,
        **submission.accepted_document(sub),
    }
    return jsonify(answer), 202, {"Location": location}


@bp.get("/<job_id>")
@limiter.limit(read_limit)
def status(job_id: str) -> Response:
    fields = store().job_fields(job_id) if _plausible_id(job_id) else None
    if fields is None:
        raise ApiError(404, "not_found", "No job with this id (it may have expired).")
    return jsonify(status_document(job_id, fields))


def _plausible_id(job_id: str) -> bool:
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)
