"""Celery tasks: thin. They pass ids, call `dispatch` or `sweep`, and turn verdicts into retries."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import shared_task
from kombu.exceptions import ChannelError

from bulksms import dispatch
from bulksms.celery_app import QUEUE
from bulksms.extensions import gateway, settings, store, throttle


@shared_task(name="bulksms.send_batch", bind=True, max_retries=None)
def send_batch(self: Any, job_id: str, batch: int) -> str:
    """Send batch number `batch` of job `job_id` (both shown in Flower)."""
    try:
        return dispatch.send_batch(store(), gateway(), throttle(), settings(), job_id, batch)
    except dispatch.RetryLater as later:
        raise self.retry(countdown=later.delay, exc=None) from None


def enqueue(job_id: str, batches: Iterable[int]) -> None:
    """One `send_batch` task per batch, over one broker connection."""
    with send_batch.app.producer_or_acquire() as producer:
        for batch in batches:
            send_batch.apply_async((job_id, batch), producer=producer)


def queue_depth() -> int:
    """Messages waiting in the batch queue (any broker: a passive declare counts them)."""
    with send_batch.app.connection_or_acquire() as connection:
        try:
            _, count, _ = connection.default_channel.queue_declare(queue=QUEUE, passive=True)
        except ChannelError:  # the Redis transport's word for an empty queue: no list at all
            return 0
        return int(count)
