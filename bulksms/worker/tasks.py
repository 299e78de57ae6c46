"""Celery tasks: thin. They pass ids, call `dispatch`, and turn verdicts into retries."""

from __future__ import annotations

import functools
import logging
from typing import Any

import redis
from celery import shared_task

from bulksms import taskqueue
from bulksms.callback_address import NotAllowed
from bulksms.documents import status_document
from bulksms.extensions import celery, settings, store
from bulksms.worker import completion_callback as callbacks
from bulksms.worker import dispatch, pacing
from bulksms.worker.resources import gateway, pacer, throttle

log = logging.getLogger(__name__)


@shared_task(name=taskqueue.SEND_BATCH, bind=True, max_retries=None)
def send_batch(self: Any, job_id: str, batch: int) -> str:
    """Send batch number `batch` of job `job_id` (both shown in Flower)."""
    try:
        return dispatch.send_batch(
            store(), gateway(), throttle(), pacer(), settings(), job_id, batch, _wake_next
        )
    except dispatch.RetryLater as later:  # (the batch that needs it: perhaps one it went on with)
        try:  # (its retry is its task enqueued again: the sweep compares the two)
            store().mark_enqueued(job_id, later.batch)
        except redis.RedisError:  # (judged on its first enqueue: at worst a duplicate task)
            log.warning("batch %s of job %s: its retry not marked enqueued", later.batch, job_id)
        raise self.retry(args=(job_id, later.batch), countdown=later.delay, exc=None) from None


def _wake_next() -> None:
    """The next job in line at the pace, woken now (as a waker's tick would)."""
    pacing.wake_due(pacer().pace, functools.partial(taskqueue.enqueue, celery()))


@shared_task(name=taskqueue.NOTIFY, bind=True, max_retries=callbacks.MAX_ATTEMPTS)
def notify(self: Any, job_id: str) -> str:
    """POST job `job_id`'s final status to its callback_url, until the receiver takes it."""
    job = store().job(job_id)
    secret = settings().callback_secret
    if job is None or job.callback_url is None or not secret:
        return "nothing to notify"
    try:
        taken = callbacks.deliver(
            job.callback_url, status_document(job), secret, settings().callback_allow_private
        )
    except NotAllowed as exc:  # (it may resolve elsewhere by now: refused, never retried)
        log.warning("completion callback of job %s not sent: %s", job_id, exc)
        return f"not sent: {exc}"
    if not taken:
        raise self.retry(countdown=callbacks.backoff(self.request.retries))
    store().mark_notified(job_id)
    return "notified"


@shared_task(name=taskqueue.FAN_OUT)
def fan_out(job_id: str) -> str:
    """Enqueue a new job's batches: a worker's second, not the submit request's."""
    job = store().job(job_id)
    if job is None:
        return "no such job"
    pending = store().pending_enqueued(job_id)
    taskqueue.enqueue(celery(), job_id, pending, job.urgent)
    return f"enqueued {len(pending)} batches"
