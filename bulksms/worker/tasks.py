"""Celery tasks: thin. They pass ids, call `dispatch` or `sweep`, and turn verdicts into retries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import shared_task
from kombu.exceptions import ChannelError

from bulksms.extensions import gateway, settings, store, throttle
from bulksms.store.jobs import status_document
from bulksms.worker import completion_callback as callbacks
from bulksms.worker import dispatch
from bulksms.worker.celery import QUEUE, URGENT_QUEUE


@shared_task(name="bulksms.send_batch", bind=True, max_retries=None)
def send_batch(self: Any, job_id: str, batch: int) -> str:
    """Send batch number `batch` of job `job_id` (both shown in Flower)."""
    try:
        return dispatch.send_batch(store(), gateway(), throttle(), settings(), job_id, batch)
    except dispatch.RetryLater as later:
        raise self.retry(countdown=later.delay, exc=None) from None


@shared_task(name="bulksms.notify", bind=True, max_retries=callbacks.MAX_ATTEMPTS)
def notify(self: Any, job_id: str) -> str:
    """POST job `job_id`'s final status to its callback_url, until the receiver takes it."""
    fields = store().job_fields(job_id)
    secret = settings().callback_secret
    if fields is None or "callback_url" not in fields or not secret:
        return "nothing to notify"
    if not callbacks.deliver(fields["callback_url"], status_document(job_id, fields), secret):
        raise self.retry(countdown=callbacks.backoff(self.request.retries))
    store().set_flag(job_id, "notified")
    return "notified"


@shared_task(name="bulksms.fan_out")
def fan_out(job_id: str) -> str:
    """Enqueue a new job's batches: a worker's second, not the submit request's (`start`)."""
    pending = store().pending_batches(job_id)
    enqueue(job_id, pending)
    return f"enqueued {len(pending)} batches"


FAN_OUT_ABOVE = 20  # batches


def start(job_id: str, batches: int, urgent: bool) -> None:
    """Set a new job going. Its 1000 tasks cost a million-recipient submit a second, so a big
    job's are enqueued by one `fan_out` task instead; a small job's right away. If this fails,
    the job is stored and the sweep enqueues its batches."""
    queue = URGENT_QUEUE if urgent else QUEUE
    if batches <= FAN_OUT_ABOVE:
        enqueue(job_id, range(batches), queue)
    else:
        fan_out.apply_async((job_id,), queue=queue)


def enqueue(job_id: str, batches: Iterable[int], queue: str | None = None) -> None:
    """One `send_batch` task per batch, over one broker connection, on the job's queue (read
    from the job unless the caller knows it)."""
    if queue is None:
        queue = URGENT_QUEUE if store().is_urgent(job_id) else QUEUE
    with send_batch.app.producer_or_acquire() as producer:
        for batch in batches:
            send_batch.apply_async((job_id, batch), producer=producer, queue=queue)


def queue_depth() -> int:
    """Messages waiting in the batch queues (any broker: a passive declare counts them)."""
    total = 0
    with send_batch.app.connection_or_acquire() as connection:
        for queue in (URGENT_QUEUE, QUEUE):
            try:
                _, count, _ = connection.default_channel.queue_declare(queue=queue, passive=True)
            except ChannelError:  # the Redis transport's word for an empty queue: no list
                count = 0
            total += int(count)
    return total
