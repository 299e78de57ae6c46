"""Sending one batch: the decisions, kept out of the Celery task so they can be read and tested.

The batch's state in Redis decides whether to send, not Celery: a claim moves it from `pending`
to `sending` atomically and numbers the attempt, so a duplicate or redelivered task never sends
a batch twice, and an outcome is recorded only by the attempt that owns the batch.

A batch goes to Plivo in calls as big as the pace allows (`pacing`): each call takes room at the
pace, then claims the batch's next recipients (from its offset), so a call is never repeated
and a cancel or pause stops the next call. With no room the batch is parked until its turn.

- Plivo accepted: the call's recipients are queued (recorded however long Redis takes to come
  back: we are the only ones who know); the batch is submitted, or goes on with its next call.
- Nothing reached Plivo (`NotSent`): `pending` again, not before the backoff; a retry follows.
- Plivo refused for good (`Refused`): `failed`, its recipients rejected; bad credentials or an
  account out of credit halt the whole job (no retries burnt, every unsent batch failed).
- The request went out and no answer says what became of it (`OutcomeUnknown`: no answer, a
  500, a gateway's 502/504): left `sending`. The sweep settles it from the delivery reports that
  name the batch, or from Plivo's message list (`reconcile`); never by resending blindly.
"""

from __future__ import annotations

import functools
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlencode

import redis

from bulksms import metrics
from bulksms.config import Settings
from bulksms.store import BatchState, BatchWork, Claim, JobStore
from bulksms.template import measure
from bulksms.worker.gateway import (
    Accepted,
    AccountRefused,
    BadCredentials,
    NotSent,
    OutcomeUnknown,
    Outgoing,
    OutOfCredit,
    PlivoGateway,
    Refused,
    SendError,
)
from bulksms.worker.pacing import Pacer
from bulksms.worker.throttle import PlivoThrottle

log = logging.getLogger(__name__)
T = TypeVar("T")

ERROR_KINDS = {
    NotSent: "not_sent",
    Refused: "refused",
    BadCredentials: "bad_credentials",
    OutOfCredit: "out_of_credit",
    OutcomeUnknown: "outcome_unknown",
}
RETRY_AFTER_CAP_SECONDS = 3600
MISSING_VALUES = "the batch's template values are missing"
RECORD_PATIENCE_SECONDS = 600  # how long a worker keeps trying to write an outcome to Redis


# A fault hook for tests: called between a call's claim and the call itself.
before_call: Callable[[Owner, Claim], None] | None = None


@dataclass(frozen=True)
class RetryLater(Exception):
    """Nothing reached Plivo; try batch `batch` again after `delay` seconds (the batch a task
    went on with may not be the one it was given)."""

    delay: float
    reason: str
    batch: int


def report_url(settings: Settings, job_id: str, batch: int) -> str:
    """The delivery-report URL; V3 signs its query, so a report names its job and batch."""
    return f"{settings.delivery_report_url}?{urlencode({'job': job_id, 'batch': batch})}"


def backoff(settings: Settings, attempt: int, retry_after: float | None) -> float:
    """Exponential backoff with jitter, capped; Plivo's Retry-After, when given, wins.

    `attempt` counts from 1: the first retry waits about `send_backoff_base` seconds.
    """
    if retry_after is not None:  # Plivo knows best; an hour at most, in case it is absurd
        return min(retry_after, RETRY_AFTER_CAP_SECONDS)
    ceiling = min(settings.send_backoff_max, settings.send_backoff_base * 2 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def countdown(settings: Settings, delay: float) -> float:
    """A retry's countdown: never longer than half the broker's visibility timeout, after which
    kombu would hand the waiting task to another worker (DESIGN §4). A longer backoff is kept in
    the batch's record (`not_before`): the retry that comes early backs off again."""
    return max(0.0, min(delay, settings.celery_visibility_timeout / 2))


def persist(write: Callable[[], T], patience: float = RECORD_PATIENCE_SECONDS) -> T:
    """Write an outcome only this worker knows, waiting out a Redis outage to do it."""
    deadline, pause = time.monotonic() + patience, 0.2
    while True:
        try:
            return write()
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            log.warning("redis unavailable; retrying in %.1f s to record a batch outcome", pause)
            time.sleep(pause)
            pause = min(pause * 2, 10.0)


def send_batch(
    store: JobStore,
    gateway: PlivoGateway,
    throttle: PlivoThrottle,
    pacer: Pacer,
    settings: Settings,
    job_id: str,
    batch: int,
    wake: Callable[[], object] | None = None,
) -> str:
    """Send what is left of one batch, call by call, while the pace has room, then the job's
    next paced batches (one turn: it gives way after its share when other jobs wait). Returns
    what became of the last batch: submitted, paced (parked until its turn), retry, failed,
    unknown, skipped; and the batches it went on with, if any (Flower shows it).

    `wake` wakes the next job in line at the pace (`pacing.wake_due`): called when a call
    leaves room and other jobs wait, so that they take it now rather than a waker's tick later."""
    taken_over: list[int] = []
    outcome = _turn(store, gateway, throttle, pacer, settings, job_id, batch, taken_over, wake)
    return f"{outcome} (went on with batches {_listed(taken_over)})" if taken_over else outcome


def _listed(batches: list[int]) -> str:
    return ", ".join(map(str, batches))


def _turn(
    store: JobStore,
    gateway: PlivoGateway,
    throttle: PlivoThrottle,
    pacer: Pacer,
    settings: Settings,
    job_id: str,
    batch: int,
    taken_over: list[int],
    wake: Callable[[], object] | None,
) -> str:
    turn = math.inf  # segments this task may still hand over before it gives way
    while True:
        work = store.batch_work(job_id, batch)
        record = work.record
        if record is None or record.state not in (BatchState.PENDING, BatchState.PACED):
            metrics.BATCHES.labels("skipped").inc()
            return f"skipped:{record.state.value if record else 'gone'}"
        if work.template is not None and len(work.fields) != len(work.numbers):
            # (never written so: its values gone, no text can be made; nothing is guessed)
            persist(functools.partial(store.batch_failed, job_id, batch, None, MISSING_VALUES))
            metrics.BATCHES.labels("failed").inc()
            return "failed"
        # One call sends one text: a template's batch goes one run of equal texts at a time.
        text, per_message = _text_at(work, record.offset)
        size = work.run(
            record.offset, min(len(work.unsent), pacer.call_size(work.sending, per_message))
        )
        segments = size * per_message
        early = record.state is BatchState.PENDING and record.since > work.now + 1
        grant = None
        if not (work.held or early):  # (else the claim says why not, and no pace is spent)
            grant = pacer.take(job_id, work.sending, segments, work.urgent)
            if not grant.go:
                # A job that took the last room is woken after the others that wait for the
                # same room: a tick after, since every worker's waker ticks and a job woken a
                # moment later by another would race the first one's batch for it. (At most an
                # eighth of the bound: a job sending alone must not let Plivo's queue run dry.)
                after = min(settings.pace_wake_interval, settings.plivo_queue_seconds / 8)
                resume_at = grant.now + grant.seconds + (after if grant.had_last else 0.0)
                return _park(store, pacer, job_id, batch, record.offset, resume_at)
            turn = min(turn, pacer.turn(work.sending, grant.waiting))
            if wake is not None and grant.waiting and pacer.room_left(grant, work.urgent):
                _wake_next(wake)
        if not (work.held or early):
            # A token first: a call is stamped when claimed, and its age must be the request's,
            # not a wait for the rate limit's (the sweep asks Plivo about calls that old).
            throttle.wait()
        claim = store.claim_batch(job_id, batch, record.offset, size)
        if claim.outcome == "moved":  # another task made this call: go on from where it got
            continue
        if claim.outcome == "early":  # backing off: come back then (in steps the broker keeps)
            left = float(claim.detail or 0)  # (seconds, on Redis's clock)
            raise RetryLater(countdown(settings, left), "backing off", batch)
        if claim.outcome == "submitted":  # a report showed that the call before reached Plivo
            outcome = "submitted"
        elif claim.outcome != "go":
            # halted: failed now; else done, in flight, paused or gone.
            metrics.BATCHES.labels("failed" if claim.outcome == "halted" else "skipped").inc()
            return f"skipped:{claim.outcome}"
        elif claim.durable is False:  # the claim might not survive a crash: no call on it
            log.warning("claim of batch %s not acknowledged durable in time; retrying", batch)
            store.release_batch(
                job_id, batch, claim.attempt, record.offset, settings.send_backoff_base, claim.since
            )
            raise RetryLater(countdown(settings, settings.send_backoff_base), "not durable", batch)
        else:
            size = claim.size or size  # (a call made before is repeated as it was)
            owner = Owner(job_id, batch, claim.attempt, record.offset, claim.since)
            if before_call is not None:
                before_call(owner, claim)
            outcome = _call(store, gateway, settings, owner, work, work.unsent[:size], text)
        turn -= segments
        # When other jobs wait, a turn used up goes to the back of the line (on Redis's clock).
        give_way = grant.now if grant is not None and grant.waiting > 0 and turn <= 0 else None
        if outcome == "advanced":
            if give_way is not None:
                return _park(store, pacer, job_id, batch, record.offset + size, give_way)
            continue
        if outcome != "submitted":
            return outcome
        if give_way is not None:  # its next paced batch, if any, waits for the job's next turn
            if store.has_paced(job_id):
                pacer.schedule(job_id, give_way)
            return outcome
        following = store.next_paced(job_id)  # the job's next batch takes this one's turn
        if following is not None:
            taken_over.append(following)
            batch = following
            continue
        return outcome


def _wake_next(wake: Callable[[], object]) -> None:
    """Jobs parked behind a full queue (a burst of alerts, say) are woken one a waker's tick;
    each woken call that leaves room wakes the next, so they go at the pace, not one a tick."""
    try:
        wake()
    except Exception:  # (Redis or the broker away: a wake only hastens what the waker does)
        log.warning("a wake failed; the waker (or the sweep) wakes the next job", exc_info=True)


def _text_at(work: BatchWork, offset: int) -> tuple[str, int]:
    """The text of the batch's call at `offset`, and its segments."""
    if work.template is None or offset >= len(work.numbers):
        return work.sending.message, work.segments_per_message
    text = work.text_at(offset)
    return text, max(1, measure(text).segments)


def _park(
    store: JobStore, pacer: Pacer, job_id: str, batch: int, offset: int, resume_at: float
) -> str:
    """The batch waits for its turn (its worker slot is free at once)."""
    if store.park(job_id, batch, offset, resume_at):
        pacer.schedule(job_id, resume_at)
    metrics.BATCHES.labels("paced").inc()
    return "paced"


@dataclass(frozen=True)
class Owner:
    """Who made a call: the claim's attempt at the batch's offset. Only the owner records its
    outcome (a worker that was taken over and comes back late records nothing)."""

    job_id: str
    batch: int
    attempt: int
    offset: int
    since: str = ""  # the claim's time on Redis's clock: with the rest, no other claim's


def _call(
    store: JobStore,
    gateway: PlivoGateway,
    settings: Settings,
    owner: Owner,
    work: BatchWork,
    numbers: list[str],
    text: str,
) -> str:
    """One call to Plivo (`text` to `numbers`), and its outcome recorded."""
    job_id, batch = owner.job_id, owner.batch
    # Opted out since the job was submitted (a scheduled or paused job waits for days): left
    # out, and `suppressed`. Those an earlier attempt at this call left out stay out.
    opted = work.suppressed.intersection(numbers) | store.opted_out(
        [n for n in numbers if n not in work.suppressed]
    )
    if opted:
        left_out = opted - work.suppressed
        if left_out and not store.suppress(
            job_id, batch, owner.attempt, owner.offset, sorted(left_out), owner.since
        ):
            metrics.BATCHES.labels("skipped").inc()
            return "skipped:superseded"  # the call is not this task's any more: not made
        numbers = [n for n in numbers if n not in opted]
        if not numbers:  # every one of them: nothing to ask of Plivo
            return _record_accepted(store, owner, Accepted("", (), ()))
    outgoing = Outgoing(
        dst=tuple(numbers),
        text=text,
        url=report_url(settings, job_id, batch),
        src=work.sending.src,
        powerpack_uuid=work.sending.powerpack_uuid,
        message_expiry=work.sending.message_expiry,
    )
    started = time.perf_counter()
    try:
        accepted = gateway.send(outgoing)
    except SendError as exc:
        metrics.PLIVO_LATENCY.labels("error").observe(time.perf_counter() - started)
        metrics.PLIVO_ERRORS.labels(ERROR_KINDS.get(type(exc), "other")).inc()
        outcome, delay = _after_failed_send(store, settings, owner, exc)
        metrics.BATCHES.labels(outcome).inc()
        if outcome == "retry":
            raise RetryLater(countdown(settings, delay), exc.reason, batch) from exc
        return outcome
    metrics.PLIVO_LATENCY.labels("accepted").observe(time.perf_counter() - started)
    return _record_accepted(store, owner, accepted)


def _record_accepted(store: JobStore, owner: Owner, accepted: Accepted) -> str:
    """Plivo took the call: recorded, however long Redis takes to come back."""
    job_id, batch = owner.job_id, owner.batch
    # With its UUIDs, in one transaction: never recorded without them (others' calls to the
    # same numbers find its messages in Plivo's list as not theirs). Should the whole write
    # fail for good, the sweep settles the call from that list. Filed under the hour of the
    # claim, on Redis's clock as every host reads it (this host's may be hours off).
    at = float(owner.since) if owner.since else store.clock()
    recorded = persist(
        lambda: store.call_submitted(
            job_id,
            batch,
            owner.attempt,
            owner.offset,
            accepted.api_id,
            accepted.invalid_numbers,
            accepted.message_uuids,
            at,
            owner.since,
        )
    )
    if recorded == "superseded":  # (counted apart: operators alert on it)
        log.error("call accepted by Plivo after another attempt took the batch over")
        metrics.BATCHES.labels("superseded").inc()
        return "submitted"
    if recorded == "advanced":
        metrics.BATCHES.labels("advanced").inc()
        return "advanced"
    metrics.BATCHES.labels("submitted").inc()
    return "submitted"


def _after_failed_send(
    store: JobStore, settings: Settings, owner: Owner, exc: SendError
) -> tuple[str, float]:
    """Record what a failed send means for the batch: retry (after a delay), failed, unknown."""
    job_id, batch, attempt = owner.job_id, owner.batch, owner.attempt
    if isinstance(exc, OutcomeUnknown):
        # Plivo may have sent these messages: never resend blindly. The sweep settles it.
        log.warning("batch outcome unknown, left for the sweep to settle: %s", exc.reason)
        return "unknown", 0.0
    if isinstance(exc, NotSent) and attempt < settings.send_max_attempts:
        delay = backoff(settings, attempt, exc.retry_after)
        persist(
            lambda: store.release_batch(job_id, batch, attempt, owner.offset, delay, owner.since)
        )
        return "retry", delay
    if isinstance(exc, NotSent):
        reason = f"gave up after {attempt} attempts: {exc.reason}"
    elif isinstance(exc, AccountRefused):  # every batch would be refused: stop the job
        what = "the credentials" if isinstance(exc, BadCredentials) else "the account (no credit)"
        reason = f"Plivo refused {what}: {exc.reason}"
        persist(lambda: store.halt(job_id, reason))
    else:
        reason = exc.reason
    persist(lambda: store.batch_failed(job_id, batch, (attempt, owner.offset), reason, owner.since))
    return "failed", 0.0
