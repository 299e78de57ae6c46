"""The sweep: what no single task can see. It runs in every worker, one at a time (a Redis
lock), every `SWEEP_INTERVAL` seconds, over the jobs not yet finished:

- a call left `sending` longer than any Plivo call lasts is settled from evidence: a delivery
  report for it means Plivo took it (recorded, and the batch goes on); without one, Plivo's
  message list is asked (`reconcile`): found, it is recorded; absent past
  `UNKNOWN_OUTCOME_GRACE`, it never got there (pending again, and resent). Silence alone
  never resends;
- a job whose paced batches nobody will wake (the worker that took its turn died) is put back
  on the pace's schedule; a batch taken off its paced set less than `DISPATCH_STALE_SECONDS`
  ago is not such a batch: its task is on its way (woken) or is going on with it;
- a `pending` batch whose task vanished (its worker was killed, or Redis lost the message) is
  enqueued again `DISPATCH_STALE_SECONDS` after it was last enqueued, each batch judged on its
  own (not "once the queue has drained", which under sustained load never comes). A batch
  enqueued after the task a worker takes next from its queue (the queue's oldest) was pushed,
  or less than that time before it, is still waiting behind it, and is left alone (for 64 ×
  that time at most): a backlog of alerts is not enqueued twice over. Where that cannot be
  told (an empty queue, none of its next few messages saying when it was pushed), a task only
  waiting becomes a harmless duplicate (the claim sees to it), and the wait doubles with
  every re-enqueue of the batch (up to 64 times);
- messages with no report at all `RECONCILE_AFTER_SECONDS` after their batch was handed over
  are looked up at Plivo (`look_up`), at a bounded rate;
- a job whose reports never all arrive is closed `REPORT_WAIT_SECONDS` after its last batch
  (messages last reported `sent` stay so: no receipt);
- scheduled jobs whose time has come are released (queued);
- finished jobs leave the sweep's index; a paused job's pending batches are left alone, and a
  cancelled job's are enqueued like any others, for their claim to cancel them.

A job still being sent is looked at every sweep, unless all its batches wait for a worker in
the queue (none paced, sending or handed over, no lookups under way): then when the first could
be enqueued again, at the first sweep DISPATCH_STALE_SECONDS on at the latest (`_due`), or at
once when a worker claims one (the claim wakes it: its call may die with the worker). A job
all handed over, waiting for reports, is looked at only when something about it can be due
(`_next_look`): its lookups, the end of its report window, or at once after a final report or a
cancel (either may finish it). A day of alerts to numbers that give no receipts is millions of
such jobs: a sweep reads the few due.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from flask import Flask

from bulksms.config import Settings
from bulksms.extensions import pace, redis_client, store
from bulksms.store import BatchRecord, BatchState, Job, JobState, JobStore
from bulksms.store.pacing import Pace
from bulksms.store.signals import take_sweep_lock
from bulksms.worker.reconcile import LOOKUPS_PER_JOB, LOOKUPS_PER_SWEEP, Lookups, Unsettled

log = logging.getLogger(__name__)

CLOSED_REASON = "report_wait_expired"
REDISPATCH_DOUBLINGS = 6  # a vanished-looking task's wait doubles up to 64 × DISPATCH_STALE
# A batch enqueued after its queue's next task was pushed counts as waiting behind it for
# this many DISPATCH_STALE_SECONDS at most (the longest the time alone ever waits): the hosts
# that push and stamp may disagree on the time.
BEHIND_AT_MOST = 2**REDISPATCH_DOUBLINGS
JOBS_A_READ = 500  # active jobs read in one round trip
# Batches of a job that may be left until one is due (`_due`): waiting for a worker, or ended
# without a call to look up.
WAITING_OR_DONE = (BatchState.PENDING, BatchState.FAILED, BatchState.CANCELLED)

Enqueue = Callable[[str, Iterable[int], bool], None]  # job id, batches, urgent
# Calls in flight with no evidence, calls still within their time, Redis's time and what
# reads the calls claimed since the sweep began: each unsettled call's verdict
# (`reconcile.Reconciler`).
Reconcile = Callable[
    [list[Unsettled], list[Unsettled], float, Callable[[], list[Unsettled]]],
    list[tuple[Unsettled, str]],
]
# A job's id, the time and how many lookups it may make: look up the messages no report has
# named (`Reconciler.look_up_silent`).
LookUp = Callable[[str, float, int], Lookups]
# For each batch queue (by urgency), when the message a worker takes next was pushed.
QueueHeads = Callable[[], Mapping[bool, float | None]]


def sweep_once(
    store: JobStore,
    pace: Pace,
    settings: Settings,
    enqueue: Enqueue,
    queue_depth: Callable[[], int],
    notify: Callable[[str], None],
    now: Callable[[], float] = time.time,
    reconcile: Reconcile | None = None,
    look_up: LookUp | None = None,
    queue_heads: QueueHeads | None = None,
) -> Counter[str]:
    tally: Counter[str] = Counter()
    unsettled: list[Unsettled] = []
    in_flight: list[Unsettled] = []
    drained: list[bool] = []  # asked of the broker at most once per sweep, and only if needed

    def queue_drained() -> bool:
        if not drained:
            drained.append(queue_depth() == 0)
        return drained[0]

    # (one budget of lookups for the whole sweep: thousands of alerts may have silent messages)
    looking = None if look_up is None else _within(LOOKUPS_PER_SWEEP, look_up)
    started = now()
    for job_id in store.due_jobs(started):
        store.release(job_id)
        job = store.job(job_id)
        if job is not None:
            enqueue(job_id, store.pending_enqueued(job_id), job.urgent)
        tally["released"] += 1
    heads = _heads(queue_heads)
    # Only the jobs due: a job all handed over that waits for reports is looked at again when
    # its lookups or the end of its report window come due, or at once when a final report or
    # a cancel wakes it.
    due = store.jobs_to_sweep(started)
    # A chunk of jobs is read in one round trip, Redis's clock once for the chunk, and the
    # batches of its jobs still being sent in one more; what the chunk re-enqueues is marked in
    # one more, and when it is to be looked at next in one more. Under a sustained load of
    # alerts thousands of jobs are active (until their reports are in): a round trip or more
    # for each made a sweep of 40,000 take 11 s of a worker's time, on a host the web tier
    # shares.
    for start in range(0, len(due), JOBS_A_READ):
        read_at = dict(due[start : start + JOBS_A_READ])  # (when each was due, as read)
        chunk = list(read_at)
        jobs = store.jobs(chunk)
        at = now()
        moving = [j for j, job in zip(chunk, jobs, strict=True) if job and _still_sending(job)]
        batches = dict(zip(moving, store.batches_of(moving), strict=True))
        again: list[Again] = []
        later: list[tuple[str, float, float]] = []  # job, its due time as read, its next
        for job_id, job in zip(chunk, jobs, strict=True):
            try:
                following = _sweep_job(
                    store,
                    pace,
                    settings,
                    job_id,
                    job,
                    batches.get(job_id, []),
                    queue_drained,
                    notify,
                    tally,
                    at,
                    (unsettled, in_flight),
                    looking,
                    again,
                    heads.get(job.urgent) if job else None,
                )
                if following is not None and following > at:
                    later.append((job_id, read_at[job_id], following))
            except Exception:  # one job's trouble must not stop the others being looked after
                log.exception("sweep of job %s failed", job_id)
                tally["errors"] += 1
        if again:
            _enqueue_again(store, enqueue, again, at, tally)
        if later:
            try:
                store.look_again(later)
            except Exception:  # (they are looked at next sweep, as before)
                log.exception("the sweep could not set when to look at %d jobs", len(later))
                tally["errors"] += 1
    if reconcile is not None:  # (also when none is unsettled: it names what lookups left)
        known = [*unsettled, *in_flight]

        def meanwhile() -> list[Unsettled]:
            return _claimed_meanwhile(store, started, known)

        if unsettled:
            in_flight.extend(meanwhile())
        # (on Redis's clock, as the calls were stamped: hosts' clocks differ; and the calls
        # claimed meanwhile read again whenever a listing could hold one's message)
        for call, verdict in reconcile(unsettled, in_flight, store.clock(), meanwhile):
            tally[verdict] += 1
            if verdict in ("resend", "advanced"):
                store.mark_enqueued(call.job_id, call.batch)
                enqueue(call.job_id, [call.batch], store.is_urgent(call.job_id))
    return tally


def _claimed_meanwhile(store: JobStore, started: float, known: list[Unsettled]) -> list[Unsettled]:
    """The calls in flight claimed while this sweep ran, after their jobs were read (each
    claim woke its job): they may have texted an unsettled call's numbers in the same minutes,
    and their messages, their answers not yet back, must not pass for its own."""
    seen = {call.call for call in known}
    woken = store.woken_since(started)
    found = []
    for job_id, job, batches in zip(woken, store.jobs(woken), store.batches_of(woken), strict=True):
        if job is None or batches is None:
            continue
        for batch in batches:
            if batch.state is BatchState.SENDING:
                call = _call_of(job_id, job, batch)
                if call.call not in seen:
                    found.append(call)
    return found


def _call_of(job_id: str, job: Job, batch: BatchRecord) -> Unsettled:
    """The call a batch `sending` is in, with its sender: the job's `src`, or its Powerpack's
    UUID (Plivo picks the number)."""
    powerpack = job.sending.powerpack_uuid
    return Unsettled(
        job_id,
        batch.batch,
        batch.attempts,
        batch.offset,
        batch.size,
        batch.since,
        None if powerpack else job.sending.src,
        powerpack or None,
    )


def _sweep_job(
    store: JobStore,
    pace: Pace,
    settings: Settings,
    job_id: str,
    job: Job | None,
    batches: list[BatchRecord] | None,  # if it is still being sent (None: unreadable)
    queue_drained: Callable[[], bool],
    notify: Callable[[str], None],
    tally: Counter[str],
    now: float,
    calls: tuple[list[Unsettled], list[Unsettled]],  # unsettled, in flight: for `reconcile`
    look_up: Callable[[str, float], Lookups] | None,  # within the sweep's budget
    again: list[Again],  # the jobs whose batches are to be enqueued again
    head: float | None,  # when the task a worker takes next from the job's queue was pushed
) -> float | None:
    """Look after one job; when it is to be looked at next, if not at the next sweep."""
    if job is None:  # expired
        store.deactivate(job_id)
        return None
    state = job.state
    if _finished(job):
        if job.callback_url is not None and store.claim_notification(job_id):
            notify(job_id)
        store.deactivate(job_id)
        tally["finished"] += 1
        return None
    looked: Lookups | None = None  # (None: too young to look up, or no lookups)
    if (
        look_up is not None
        and state in (JobState.SENDING, JobState.SENT)
        # (no batch of a younger job can have waited that long for its reports)
        and now - _begun(job) >= settings.reconcile_after_seconds
    ):
        looked = look_up(job_id, now)
        tally["looked_up"] += looked.looked
    if state is JobState.SENT:
        if now - _sent_at(job) > settings.report_wait_seconds:
            store.close(job_id, CLOSED_REASON)  # completed: the next sweep notifies and forgets
            tally["closed"] += 1
            return None
        return _next_look(job, settings, now, look_up is not None, looked)
    resend: list[int] = []
    redispatch: list[tuple[int, int]] = []  # batch, the how-manieth time
    paced: list[int] = []
    taken = True  # every paced batch's last task, if any, was taken from the queue
    moving = False  # a batch of the job is being sent, or waits for a worker
    # When each batch waiting for a worker could next be due; None once a batch is anything
    # but that (or finished): the job is looked at every sweep while so.
    waits: list[float] | None = [] if looked is None or looked.settled else None
    stale = settings.dispatch_stale_seconds
    # Enqueued after the queue's next task was pushed, or up to DISPATCH_STALE_SECONDS before
    # (a batch is stamped just before its message is pushed, by another clock, perhaps a
    # chunk of the sweep before): waiting behind it, for `behind` at most.
    behind = stale * BEHIND_AT_MOST
    if batches is None:
        raise ValueError("its batch records cannot be read")
    for batch in batches:
        if waits is not None and batch.state not in WAITING_OR_DONE:
            waits = None
        if batch.state is BatchState.SENDING:
            verdict = store.resolve_batch(job_id, batch.batch, settings.in_flight_seconds)
            if verdict in ("ask", "in_flight"):
                calls[0 if verdict == "ask" else 1].append(_call_of(job_id, job, batch))
            if verdict != "ask":
                tally[verdict] += 1
            if verdict == "advanced":
                resend.append(batch.batch)
            moving = True
        elif (
            batch.state is BatchState.PACED
            and state is not JobState.CANCELLED
            and job.halted is None
        ):
            if now - batch.enqueued_at <= stale:  # woken: its task is on its way to it
                moving = True
            else:
                paced.append(batch.batch)
                # A task of it may still wait behind the queue's next (as a pending batch's)
                taken &= head is not None and (
                    batch.enqueued_at < head - stale or now - batch.enqueued_at > behind
                )
        elif (
            batch.state in (BatchState.PENDING, BatchState.PACED)
            and state not in (JobState.PAUSED, JobState.SCHEDULED)
            and now >= batch.since + stale
            and now - batch.enqueued_at > stale * 2 ** min(batch.redispatched, REDISPATCH_DOUBLINGS)
            and (
                head is None or batch.enqueued_at < head - stale or now - batch.enqueued_at > behind
            )
        ):
            # (a cancelled or halted job's paced batches too: their claims finish them)
            redispatch.append((batch.batch, batch.redispatched + 1))
        elif batch.state is BatchState.PENDING:
            moving = True
            if waits is not None:
                waits.append(_due(batch, state, now, stale, head, settings.sweep_interval))
    if (
        paced
        and not moving
        and state is not JobState.PAUSED
        and not pace.scheduled(job_id)
        and (taken or queue_drained())
    ):
        # Nothing of the job moves and it is off the pace's schedule: a waker died holding its
        # turn. Put its paced batches back and give it a turn now (not only once the queue is
        # empty: a backlog of the other lane's would hold it for as long as it lasts).
        store.relist_paced(job_id, paced)
        pace.schedule(job_id, 0.0)
        tally["paced_rescheduled"] += 1
    if resend or redispatch:
        marks: list[tuple[int, int | None]] = [(b, None) for b in resend]
        marks.extend(redispatch)
        again.append(Again(job_id, marks, job.urgent))
        return None
    # All its batches wait for a worker (an alert in a backlog, say): looked at again when the
    # first could be enqueued again (a sweep DISPATCH_STALE_SECONDS on at the latest), or at
    # once when a worker claims one (`scripts.CLAIM`: its call may die with the worker). Under
    # a backlog of alerts, a sweep reads a fraction of the queue's jobs, not every one.
    return min(waits) if waits else None


def _due(
    batch: BatchRecord,
    state: JobState,
    now: float,
    stale: float,
    head: float | None,
    interval: float,
) -> float:
    """When a pending batch not enqueued again now is to be looked at: when it could be (its
    time since it was enqueued, doubled by each redispatch, and, where it waits behind the
    queue's next task, that task's lead on it), but no later than the first sweep after
    DISPATCH_STALE_SECONDS from `now` (the sweep this one is part of began a little before it):
    a queue that drains or empties moves its next task on faster than the clock, and a batch
    may change without a claim (a pacer's park, a failure before any call). A paused or
    scheduled job's batch is due on its time alone, and once that has passed, every sweep."""
    due: float = max(
        batch.since + stale,
        batch.enqueued_at + stale * 2 ** min(batch.redispatched, REDISPATCH_DOUBLINGS),
    )
    if (
        state not in (JobState.PAUSED, JobState.SCHEDULED)
        and head is not None
        and batch.enqueued_at >= head - stale
    ):
        due = max(due, now + (batch.enqueued_at + stale - head))
    return min(due, now + stale - interval)


def _next_look(
    job: Job, settings: Settings, now: float, lookups: bool, looked: Lookups | None
) -> float:
    """When a job all handed over, waiting for reports, is next due: its report window's end;
    before it, where messages are looked up (`lookups`; `looked`: this sweep's, if any), when
    they can start, each sweep while its batches' first rounds come due or lookups go on or
    were held back, then when the next round can start; none once nothing is left to look up.
    A final report or a cancel makes it due at once (`JobStore.look_now`)."""
    close = _sent_at(job) + settings.report_wait_seconds
    after = settings.reconcile_after_seconds
    if not lookups or (looked is not None and looked.settled):
        return close
    if looked is None:  # (too young)
        return min(close, _begun(job) + after)
    if now < _sent_at(job) + after or looked.looked or looked.held:
        return now  # (the next sweep)
    return min(close, now + after)


def _within(budget: int, look_up: LookUp) -> Callable[[str, float], Lookups]:
    """`look_up`, job after job, for at most `budget` lookups in all and `LOOKUPS_PER_JOB` a
    job (the jobs come in the same order each sweep: one with thousands of silent messages
    must not take every sweep's budget); a job that finds none left is held back (it is
    looked at next sweep)."""
    left = [budget]

    def each(job_id: str, now: float) -> Lookups:
        if left[0] <= 0:
            return Lookups(0, held=True)
        allowed = min(left[0], LOOKUPS_PER_JOB)
        try:
            found = look_up(job_id, now, allowed)
        except Exception:
            left[0] -= allowed  # (what it made before it failed counts)
            raise
        left[0] -= found.looked
        return found

    return each


@dataclass(frozen=True)
class Again:
    """A job's batches to enqueue again: each with the how-manieth redispatch it is (None: a
    resend, which is not counted)."""

    job_id: str
    marks: list[tuple[int, int | None]]
    urgent: bool


def _enqueue_again(
    store: JobStore, enqueue: Enqueue, again: list[Again], at: float, tally: Counter[str]
) -> None:
    """Mark a chunk's batches enqueued (on Redis's clock, which the next sweep compares them
    with), then enqueue them. A failure stops only what it touches: unmarked, they are all
    looked at again next sweep; marked and not enqueued, a job's are, after their wait. Only
    the batches enqueued are counted redispatched."""
    try:
        store.mark_enqueued_many([(a.job_id, b, n) for a in again for b, n in a.marks], at)
    except Exception:
        log.exception("the sweep could not mark %d jobs' batches enqueued", len(again))
        tally["errors"] += 1
        return
    for a in again:
        try:
            enqueue(a.job_id, [b for b, _ in a.marks], a.urgent)
        except Exception:
            log.exception("the sweep could not enqueue job %s's batches", a.job_id)
            tally["errors"] += 1
            continue
        tally["redispatched"] += sum(1 for _, n in a.marks if n is not None)


def _heads(queue_heads: QueueHeads | None) -> dict[bool, float]:
    """For each batch queue (by urgency), when the message a worker takes next was pushed, where
    that is known. Read once, before the jobs: the queue only moves on, so a task enqueued
    after it is still waiting when the sweep comes to it."""
    if queue_heads is None:
        return {}
    try:
        found = queue_heads()
    except Exception:  # (unknown: every stale batch is judged on its time alone, as before)
        log.warning("the queues' next tasks could not be read", exc_info=True)
        return {}
    return {urgent: at for urgent, at in found.items() if at is not None}


def _finished(job: Job) -> bool:
    state = job.state
    return state in (JobState.COMPLETED, JobState.FAILED) or (
        state is JobState.CANCELLED and not job.unsent_batches
    )


def _still_sending(job: Job) -> bool:
    """Its batches are the sweep's business (a job all handed over waits only for reports)."""
    return not _finished(job) and job.state is not JobState.SENT


def _begun(job: Job) -> float:
    """When the job's first batch was claimed, on Redis's clock, as the sweep's `now` is (its
    creation is the API host's time, which may be hours off)."""
    return job.started_at if job.started_at is not None else job.created_at


def _sent_at(job: Job) -> float:
    return job.sent_at if job.sent_at is not None else job.updated_at


def start(
    app: Flask,
    settings: Settings,
    enqueue: Enqueue,
    notify: Callable[[str], None],
    queue_depth: Callable[[], int],
    reconcile: Reconcile | None = None,
    look_up: LookUp | None = None,
    queue_heads: QueueHeads | None = None,
) -> threading.Event:
    """Sweep in a daemon thread of this worker process; set the returned event to stop it."""
    stop = threading.Event()
    lock_ms = max(100, int(settings.sweep_interval * 900))

    def loop() -> None:
        while not stop.wait(settings.sweep_interval):
            with app.app_context():
                try:
                    if take_sweep_lock(redis_client(), lock_ms):
                        tally = sweep_once(
                            store(),
                            pace(),
                            settings,
                            enqueue,
                            queue_depth,
                            notify,
                            now=store().clock,  # (Redis's: this host's may be off)
                            reconcile=reconcile,
                            look_up=look_up,
                            queue_heads=queue_heads,
                        )
                        if tally:
                            log.info("sweep: %s", dict(tally))
                except Exception:  # a sweep that fails is retried next interval
                    log.exception("sweep failed")

    threading.Thread(target=loop, name="bulksms-sweep", daemon=True).start()
    return stop
