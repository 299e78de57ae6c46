"""The JSON shape of a job's status, as `GET /api/bulk-sms/<id>` answers it and as a completion
callback posts it (the README's "API" section is its contract)."""

from __future__ import annotations

from typing import Any

from bulksms.store import BatchState, Job, Status, rfc3339


def status_document(job: Job) -> dict[str, Any]:
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
            **{s.value: job.batch_counts[s] for s in BatchState if s is not BatchState.SENDING},
        },
        "counts": {s.value: job.counts[s] for s in Status},
        **({"closed": job.closed} if job.closed is not None else {}),
        **({"halted": job.halted} if job.halted is not None else {}),
        **({"erased_at": rfc3339(job.erased_at)} if job.erased_at is not None else {}),
        **({"send_at": rfc3339(job.send_at)} if job.send_at is not None else {}),
        **({"retry_of": job.retry_of} if job.retry_of is not None else {}),
        "billed": {"units": job.billed_units, "amount": job.billed_amount},
    }
