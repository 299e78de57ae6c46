"""The sweep: what no single task can see. It runs in every worker, one at a time (a Redis
lock), every `SWEEP_INTERVAL` seconds, over the jobs not yet finished:

- a batch left `sending` longer than any Plivo call lasts is settled from evidence: a delivery
  report for it means Plivo took it (submitted); none within `UNKNOWN_OUTCOME_GRACE` seconds
  means it never got there (pending again, and resent);
- a `pending` batch whose task vanished (its worker was killed, or Redis lost the message) is
  enqueued again once the queue has drained; a duplicate task is harmless, the claim sees to it;
- a job whose reports never all arrive is closed `REPORT_WAIT_SECONDS` after its last batch;
- finished jobs leave the sweep's index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable

from flask import Flask

from bulksms import keys
from bulksms.config import Settings
from bulksms.store import JobState, JobStore, derive_state

log = logging.getLogger(__name__)

CLOSED_REASON = "report_wait_expired"


def sweep_once(
    store: JobStore,
    settings: Settings,
    enqueue: Callable[[str, list[int]], None],
    queue_depth: Callable[[], int],
) -> Counter[str]:
    now = time.time()
    tally: Counter[str] = Counter()
    drained: bool | None = None  # asked of the broker at most once, and only if needed
    for job_id in store.active_jobs():
        fields = store.job_fields(job_id)
        if fields is None:  # expired
            store.deactivate(job_id)
            continue
        state = derive_state(fields)
        if state in (JobState.COMPLETED, JobState.FAILED):
            store.deactivate(job_id)
            tally["finished"] += 1
            continue
        if state is JobState.SENT:
            if (
                now - float(fields.get("sent_at", fields["updated_at"]))
                > settings.report_wait_seconds
            ):
                store.close(job_id, CLOSED_REASON)
                store.deactivate(job_id)
                tally["closed"] += 1
            continue
        resend: list[int] = []
        records = store.batch_records(job_id)
        for key, record in records.items():
            if not key.isdigit():
                continue
            batch = int(key)
            kind, since, _ = record.split("|", 2)
            if kind == "sending":
                verdict = store.resolve_batch(
                    job_id, batch, settings.in_flight_seconds, settings.unknown_outcome_grace
                )
                tally[verdict] += 1
                if verdict == "resend":
                    resend.append(batch)
            elif kind == "pending":
                enqueued = float(records.get(f"q:{batch}", "0"))
                stale = settings.dispatch_stale_seconds
                if now >= float(since) + stale and now - enqueued > stale:
                    if drained is None:
                        drained = queue_depth() == 0
                    if drained:
                        resend.append(batch)
                        tally["redispatched"] += 1
        if resend:
            for batch in resend:
                store.mark_enqueued(job_id, batch)
            enqueue(job_id, resend)
    return tally


def start(app: Flask, settings: Settings) -> threading.Event:
    """Sweep in a daemon thread of this worker process; set the returned event to stop it."""
    from bulksms.extensions import redis_client, store
    from bulksms.tasks import enqueue, queue_depth

    stop = threading.Event()
    lock_ms = max(100, int(settings.sweep_interval * 900))

    def loop() -> None:
        while not stop.wait(settings.sweep_interval):
            with app.app_context():
                try:
                    if redis_client().set(keys.SWEEP_LOCK, "1", nx=True, px=lock_ms):
                        tally = sweep_once(store(), settings, enqueue, queue_depth)
                        if tally:
                            log.info("sweep: %s", dict(tally))
                except Exception:  # a sweep that fails is retried next interval
                    log.exception("sweep failed")

    threading.Thread(target=loop, name="bulksms-sweep", daemon=True).start()
    return stop
