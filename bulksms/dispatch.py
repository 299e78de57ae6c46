"""Sending one batch: the decisions, kept out of the Celery task so they can be read and tested.

The batch's state in Redis decides whether to send, not Celery: a claim moves it from `pending`
to `sending` atomically, so a duplicate or redelivered task never sends a batch twice.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from urllib.parse import urlencode

from bulksms.config import Settings
from bulksms.gateway import (
    BadCredentials,
    NotSent,
    OutcomeUnknown,
    Outgoing,
    PlivoGateway,
    Refused,
)
from bulksms.store import BatchState, JobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryLater(Exception):
    """Nothing reached Plivo; try this batch again after `delay` seconds."""

    delay: float
    reason: str


def callback_url(settings: Settings, job_id: str, batch: int) -> str:
    """The delivery-report URL; V3 signs its query, so a report names its job and batch."""
    return f"{settings.delivery_report_url}?{urlencode({'job': job_id, 'batch': batch})}"


def backoff(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with full jitter, capped; Plivo's Retry-After wins when given."""
    if retry_after is not None:
        return min(retry_after, settings.send_backoff_max)
    ceiling = min(settings.send_backoff_max, settings.send_backoff_base * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)


def send_batch(
    store: JobStore,
    gateway: PlivoGateway,
    settings: Settings,
    job_id: str,
    batch: int,
    attempt: int,
) -> str:
    """Send one batch if it is still pending. Returns what became of it."""
    before = store.claim_batch(job_id, batch)
    if before is None:
        return "gone"
    if before is not BatchState.PENDING:
        # submitted/failed: done already. sending: another attempt is (or was) in flight.
        return f"skipped:{before.value}"
    work = store.batch_work(job_id, batch)
    outgoing = Outgoing(
        dst=tuple(work.numbers),
        text=work.sending.message,
        url=callback_url(settings, job_id, batch),
        src=work.sending.src,
        powerpack_uuid=work.sending.powerpack_uuid,
        message_expiry=work.sending.message_expiry,
    )
    try:
        accepted = gateway.send(outgoing)
    except NotSent as exc:
        store.release_batch(job_id, batch)
        if attempt + 1 >= settings.send_max_attempts:
            store.batch_failed(job_id, batch, f"gave up after {attempt + 1} attempts: {exc.reason}")
            return "failed"
        raise RetryLater(backoff(settings, attempt, exc.retry_after), exc.reason) from exc
    except BadCredentials as exc:
        store.batch_failed(job_id, batch, f"Plivo refused the credentials: {exc.reason}")
        return "failed"
    except Refused as exc:
        store.batch_failed(job_id, batch, exc.reason)
        return "failed"
    except OutcomeUnknown as exc:
        # Plivo may have sent these messages: never resend blindly. The batch stays `sending`.
        log.warning("batch %s/%s outcome unknown: %s", job_id, batch, exc.reason)
        return "unknown"
    store.batch_submitted(job_id, batch, accepted.api_id, accepted.invalid_numbers)
    return "submitted"
