"""Celery tasks: thin. They pass ids, call `dispatch`, and turn its verdicts into retries."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from bulksms import dispatch
from bulksms.extensions import gateway, settings, store


@shared_task(name="bulksms.send_batch", bind=True, max_retries=None)
def send_batch(self: Any, job_id: str, batch: int) -> str:
    """Send batch number `batch` of job `job_id` (both shown in Flower)."""
    try:
        return dispatch.send_batch(
            store(), gateway(), settings(), job_id, batch, attempt=self.request.retries
        )
    except dispatch.RetryLater as later:
        raise self.retry(countdown=later.delay, exc=None) from None
