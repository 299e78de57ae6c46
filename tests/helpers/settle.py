"""The sweep's settling of a call left in flight, as the store tests need it: evidence first
(`resolve_batch`), then what Plivo's message list said — here always "absent" once the grace has
passed, as when the call never reached Plivo."""

from __future__ import annotations

import time

from bulksms.store import JobStore


def resolve(
    store: JobStore, job_id: str, batch: int, in_flight_seconds: float, grace_seconds: float
) -> str:
    verdict = store.resolve_batch(job_id, batch, in_flight_seconds)
    if verdict == "in_flight" and not in_flight_seconds:  # claimed this very millisecond
        time.sleep(0.01)
        verdict = store.resolve_batch(job_id, batch, in_flight_seconds)
    if verdict != "ask":
        return verdict
    record = next(b for b in store.batches(job_id) if b.batch == batch)
    if grace_seconds and time.time() - record.since < grace_seconds:
        return "waiting"
    return store.settle_call(job_id, batch, record.attempts, record.offset, found=False)
