"""The JSON shape of a job's status, as `GET /api/bulk-sms/<id>` answers it and as a completion
callback posts it (the README's "API" section is its contract)."""

from __future__ import annotations

from typing import Any

from bulksms.store import COUNTED_BATCH_STATES, Job, JobState, Status, rfc3339


def status_document(job: Job, progress: dict[str, Any] | None = None) -> dict[str, Any]:
    counts = job.recipients
    return {
        "job_id": job.job_id,
        "state": job.state.value,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "message_length": len(job.sending.message),
        "recipients": {
            "received": counts.received,
            "accepted": counts.accepted,
            "duplicates": counts.duplicates,
            "invalid": counts.invalid,
            "suppressed": counts.suppressed,
        },
        "batches": {
            "total": job.batches,
            **{s.value: job.batch_counts[s] for s in COUNTED_BATCH_STATES},
        },
        "counts": {s.value: job.counts[s] for s in Status},
        **({"closed": job.closed} if job.closed is not None else {}),
        **({"halted": job.halted} if job.halted is not None else {}),
        **({"erased_at": rfc3339(job.erased_at)} if job.erased_at is not None else {}),
        **({"send_at": rfc3339(job.send_at)} if job.send_at is not None else {}),
        **({"retry_of": job.retry_of} if job.retry_of is not None else {}),
        "billed": {"units": job.billed_units, "amount": job.billed_amount},
        **({"progress": progress} if progress is not None else {}),
    }


def progress(
    job: Job, pace: float, backlog: float, sharing: int, now: float
) -> dict[str, Any] | None:
    """While a job is queued or sending: the rate it gets (messages a second: its sender's pace
    in segments, shared with the jobs taking turns, over its segments per message) and when its
    last message should leave Plivo's queue (its remaining messages at that rate, plus the
    queue already waiting at Plivo)."""
    if job.state not in (JobState.QUEUED, JobState.SENDING):
        return None
    rate = pace / max(1, sharing) / max(1, job.segments_per_message)
    remaining = max(0, job.recipients.accepted - job.handed)
    return {
        "rate_per_second": round(rate, 3),
        "remaining": remaining,
        "estimated_completion_at": rfc3339(now + remaining / rate + backlog),
    }


def duration(recipients: int, segments_per_message: int, pace: float) -> float:
    """Seconds from hand-over of the first message until the last leaves Plivo's queue, for a
    job that has the pace to itself."""
    return round(recipients * max(1, segments_per_message) / pace, 3)
