"""The sweep's decisions (`bulksms.worker.sweep.sweep_once`) on an in-memory store: which
batches it settles, re-enqueues or leaves alone, and when it closes and forgets a job."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

import pytest

from bulksms import taskqueue
from bulksms.config import Settings
from bulksms.store import BatchRecord, BatchState, JobState, Status
from bulksms.worker import sweep
from bulksms.worker.reconcile import LOOKUPS_PER_JOB, LOOKUPS_PER_SWEEP, Lookups, Unsettled
from tests.helpers.fakes import FakePace, FakeStore, job

SETTINGS = Settings(dispatch_stale_seconds=30.0, report_wait_seconds=3600)
NOW = 100_000.0


class Queue:
    def __init__(self, depth: int = 0) -> None:
        self.enqueued: list[tuple[str, list[int], bool]] = []
        self.notified: list[str] = []
        self.depth = depth
        self.depth_asked = 0

    def enqueue(self, job_id: str, batches: Iterable[int], urgent: bool) -> None:
        self.enqueued.append((job_id, list(batches), urgent))

    def queue_depth(self) -> int:
        self.depth_asked += 1
        return self.depth


def run(
    store: FakeStore,
    queue: Queue,
    pace: FakePace | None = None,
    reconcile: sweep.Reconcile | None = None,
    now: Callable[[], float] = lambda: NOW,
    queue_heads: sweep.QueueHeads | None = None,
    look_up: sweep.LookUp | None = None,
) -> Counter[str]:
    return sweep.sweep_once(
        store,  # type: ignore[arg-type]
        pace or FakePace(),  # type: ignore[arg-type]
        SETTINGS,
        queue.enqueue,
        queue.queue_depth,
        queue.notified.append,
        now=now,
        reconcile=reconcile,
        look_up=look_up,
        queue_heads=queue_heads,
    )


def pending(batch: int, since: float = 0.0, enqueued: float = 0.0) -> BatchRecord:
    return BatchRecord(batch, BatchState.PENDING, since, 0, "", enqueued)


def sending(batch: int) -> BatchRecord:
    return BatchRecord(batch, BatchState.SENDING, NOW - 60, 1, "")


def paced(batch: int) -> BatchRecord:
    return BatchRecord(batch, BatchState.PACED, NOW - 600, 0, "", NOW - 600, offset=10)


def submitted(batch: int) -> BatchRecord:
    return BatchRecord(batch, BatchState.SUBMITTED, NOW - 60, 0, "api-1")


def failed(batch: int) -> BatchRecord:
    return BatchRecord(batch, BatchState.FAILED, NOW - 60, 0, "refused")


def cancelled(batch: int) -> BatchRecord:
    return BatchRecord(batch, BatchState.CANCELLED, NOW - 60, 0, "cancelled")


def test_a_call_without_an_answer_is_resent_only_on_plivo_s_list_s_verdict() -> None:
    store, queue = (
        FakeStore(resolutions={0: "ask", 1: "submitted", 2: "advanced", 3: "ask"}),
        Queue(),
    )
    store.add(job(batches=4, started_at=NOW - 90), [sending(b) for b in range(4)])
    asked: list[Unsettled] = []

    def reconcile(
        calls: list[Unsettled],
        in_flight: list[Unsettled],
        now: float,
        meanwhile: Callable[[], list[Unsettled]],
    ) -> list[tuple[Unsettled, str]]:
        asked.extend(calls)
        assert now == NOW  # Redis's clock
        return [(c, "resend" if c.batch == 0 else "waiting") for c in calls]

    tally = run(store, queue, reconcile=reconcile)
    assert [(c.batch, c.attempt, c.since, c.sender) for c in asked] == [
        (0, 1, NOW - 60, "+14155550199"),
        (3, 1, NOW - 60, "+14155550199"),
    ]
    assert queue.enqueued == [("j1", [2], False), ("j1", [0], False)]
    assert ("mark_enqueued", "j1", 0) in store.calls
    assert tally["resend"] == tally["submitted"] == tally["advanced"] == tally["waiting"] == 1


def test_calls_claimed_while_the_sweep_ran_count_against_the_unsettled_ones() -> None:
    """A call claimed after the sweep read its job (the claim woke the job) may have texted an
    unsettled call's numbers: it is among the calls in flight the reconciler weighs, or its
    message, its answer not yet back, would pass for the unsettled call's (marked sent, never
    sent). A call already in the sweep's lists is not counted twice."""
    store, queue = FakeStore(resolutions={0: "ask"}), Queue()
    store.add(job(batches=1, started_at=NOW - 90), [sending(0)])
    store.add(job("j2", batches=2), [submitted(0), sending(1)])
    store.due_at["j2"] = NOW + 60  # (not due this sweep: read only as woken meanwhile)
    store.woken.update(j1=NOW, j2=NOW)
    weighed: list[tuple[str, list[str]]] = []

    def reconcile(
        calls: list[Unsettled],
        in_flight: list[Unsettled],
        now: float,
        meanwhile: Callable[[], list[Unsettled]],
    ) -> list[tuple[Unsettled, str]]:
        weighed.extend((c.call, [o.call for o in in_flight]) for c in calls)
        # …and one claimed while it listed, read when a listing asks again.
        store.add(job("j3", batches=1), [sending(0)])
        store.woken["j3"] = NOW
        weighed.append(("meanwhile", [o.call for o in meanwhile()]))
        return [(c, "waiting") for c in calls]

    run(store, queue, reconcile=reconcile)
    assert weighed == [("j1:0:1:0", ["j2:1:1:0"]), ("meanwhile", ["j2:1:1:0", "j3:0:1:0"])]


def test_silence_alone_never_resends() -> None:
    store, queue = FakeStore(resolutions={0: "ask"}), Queue()
    store.add(job(batches=1, started_at=NOW - 9999), [sending(0)])
    for _ in range(3):
        run(store, queue)  # no one to ask
    assert queue.enqueued == []


def test_a_pending_batch_whose_task_vanished_is_enqueued_again_whatever_the_queue_holds() -> None:
    """Under sustained load the queue never drains: each batch is judged on its own."""
    store, queue = FakeStore(), Queue(depth=5000)
    store.add(job(batches=2, urgent=True), [pending(0), pending(1, enqueued=NOW - 5)])
    assert run(store, queue)["redispatched"] == 1
    assert queue.enqueued == [("j1", [0], True)]  # on the job's own (urgent) queue
    assert ("redispatched", "j1", 0, 1) in store.calls


def test_a_task_enqueued_after_its_queue_s_next_one_is_waiting_not_lost() -> None:
    """A backlog of alerts waits longer than DISPATCH_STALE_SECONDS. A batch enqueued after
    the task a worker takes next from the job's queue was pushed (or less than that time
    before) is waiting behind it: not enqueued again. One enqueued before it was passed over:
    its task vanished, and it is enqueued again. Where the queue's next task is not known,
    every stale batch is judged on its time alone."""

    def backlog() -> FakeStore:
        store = FakeStore()
        store.add(job("lost"), [pending(0, enqueued=NOW - 600)])
        store.add(job("next"), [pending(0, enqueued=NOW - 200)])
        # (stamped just before its message was pushed, by another clock: as good as after)
        store.add(
            job("just-before"), [pending(0, enqueued=NOW - 200 - SETTINGS.dispatch_stale_seconds)]
        )
        store.add(job("behind"), [pending(0, enqueued=NOW - 100)])
        store.add(job("urgent", urgent=True), [pending(0, enqueued=NOW - 100)])
        # (its batch stamped yesterday, long before it was pushed: a scheduled job released)
        store.add(job("old-stamp"), [pending(0, enqueued=NOW - 86_400)])
        return store

    # (the urgent queue's next task is unknown: empty, or no batch task among the next few)
    assert sweep_with(backlog(), lambda: {False: NOW - 200, True: None}) == [
        "lost",
        "old-stamp",
        "urgent",
    ]

    def unreadable() -> dict[bool, float | None]:
        raise ConnectionError("the broker is away")

    assert sweep_with(backlog(), unreadable) == [
        "behind",
        "just-before",
        "lost",
        "next",
        "old-stamp",
        "urgent",
    ]


def test_a_job_all_waiting_for_a_worker_is_left_until_a_batch_could_be_due() -> None:
    """Under a backlog of alerts most active jobs wait in the queue, and reading each every
    sweep made the sweep the worker's bottleneck. A job whose batches all wait for a worker is
    looked at next when the first could be enqueued again (its time since it was enqueued, or
    the lead of the queue's next task on it), and at the first sweep DISPATCH_STALE_SECONDS on
    at the latest (a draining queue's next task moves faster than the clock); a worker's claim
    makes the job due at once (`test_store`). A job with anything else to watch, or a batch to
    enqueue again, is looked at every sweep."""
    stale = SETTINGS.dispatch_stale_seconds
    store = FakeStore()
    store.add(
        job("young", batches=2, urgent=True),
        [pending(0, enqueued=NOW - 10), pending(1, enqueued=NOW - 20)],
    )
    store.add(job("just-behind"), [pending(0, enqueued=NOW - 200)])
    store.add(job("far-behind"), [pending(0, enqueued=NOW - 100)])
    store.add(job("backing-off"), [pending(0, since=NOW + 500, enqueued=NOW - 600)])
    store.add(job("paused", paused=NOW - 50), [pending(0, enqueued=NOW - 25)])
    store.add(
        job("some-ended", batches=3),
        [failed(0), cancelled(1), pending(2, enqueued=NOW - 200)],
    )
    store.add(job("calling"), [pending(0, enqueued=NOW - 10), sending(1)])
    store.add(job("at-the-pace"), [pending(0, enqueued=NOW - 10), paced(1)])
    store.add(job("partly-sent"), [pending(0, enqueued=NOW - 10), submitted(1)])
    store.add(job("lost"), [pending(0, enqueued=NOW - 600)])  # (its task vanished)
    head = NOW - 180.0  # (the urgent queue's is unknown: judged on time alone)
    latest = NOW + stale - SETTINGS.sweep_interval  # (read at the first sweep past `stale`)

    assert sweep_with(store, lambda: {False: head, True: None}) == ["lost"]
    assert store.due_at == {
        "young": NOW - 20 + stale,  # (the first of its batches)
        "just-behind": NOW + (NOW - 200 + stale - head),
        "far-behind": latest,  # (its lead on the head: 110 s)
        "backing-off": latest,  # (its time: 530 s)
        "paused": NOW - 25 + stale,  # (its time alone: no batch of it is taken)
        "some-ended": NOW + (NOW - 200 + stale - head),
    }
    # Until then the next sweeps read only the others.
    assert sorted(job_id for job_id, _ in store.jobs_to_sweep(NOW + 1)) == [
        "at-the-pace",
        "calling",
        "lost",  # (enqueued again: looked at next sweep)
        "partly-sent",
    ]


def test_waiting_behind_the_queue_s_next_task_has_a_bound() -> None:
    """The hosts that push tasks and stamp batches may disagree on the time: past
    BEHIND_AT_MOST × DISPATCH_STALE_SECONDS (the longest the time alone ever waits) a batch is
    judged on its time alone, whatever the queue's next task says."""
    store = FakeStore()
    bound = sweep.BEHIND_AT_MOST * SETTINGS.dispatch_stale_seconds
    store.add(job("long"), [pending(0, enqueued=NOW - bound - 1)])
    store.add(job("recent"), [pending(0, enqueued=NOW - bound + 1)])
    assert sweep_with(store, lambda: {False: NOW - 2 * bound}) == ["long"]


def sweep_with(store: FakeStore, heads: sweep.QueueHeads) -> list[str]:
    """The jobs a sweep enqueues again, the queues' next tasks pushed as `heads` says."""
    queue = Queue(depth=5000)
    run(store, queue, queue_heads=heads)
    return sorted(job_id for job_id, _, _ in queue.enqueued)


def test_a_failure_to_enqueue_one_job_again_stops_no_other() -> None:
    """What a chunk enqueues again is marked and sent after the chunk: one job's failed
    publish (or a failed mark) is logged and counted, and the sweep goes on."""
    store = FakeStore()
    for name in ("a", "b", "c"):
        store.add(job(name), [pending(0, enqueued=NOW - 600)])
    sent: list[str] = []

    def enqueue(job_id: str, batches: Iterable[int], urgent: bool) -> None:
        if job_id == "b":
            raise ConnectionError("the broker is away")
        sent.append(job_id)

    def sweep_with(enqueue: sweep.Enqueue) -> Counter[str]:
        return sweep.sweep_once(
            store,  # type: ignore[arg-type]
            FakePace(),  # type: ignore[arg-type]
            SETTINGS,
            enqueue,
            lambda: 0,
            lambda _: None,
            now=lambda: NOW,
        )

    tally = sweep_with(enqueue)
    assert tally["errors"] == 1 and tally["redispatched"] == 2  # (b's was not)
    assert sent == ["a", "c"]

    def unmarked(marks: object, at: float) -> None:
        raise ConnectionError("Redis is away")

    store.mark_enqueued_many = unmarked  # type: ignore[method-assign,assignment]
    sent.clear()
    tally = sweep_with(enqueue)
    assert tally["errors"] == 1 and sent == []  # (nothing sent unmarked)
    assert tally["redispatched"] == 0


def test_each_re_enqueue_of_a_batch_doubles_its_wait() -> None:
    """Its task may be waiting behind thousands: a long queue costs it a few duplicates."""
    store, queue = FakeStore(), Queue(depth=5000)
    waited = replace(pending(0, enqueued=NOW - 100), redispatched=2)  # 100 s < 30 s × 2²
    store.add(job(batches=2), [waited, replace(waited, batch=1, enqueued_at=NOW - 121)])
    run(store, queue)
    assert queue.enqueued == [("j1", [1], False)]
    assert ("redispatched", "j1", 1, 3) in store.calls


def test_a_batch_backing_off_is_left_until_its_time() -> None:
    store, queue = FakeStore(), Queue()
    store.add(job(), [pending(0, since=NOW + 10)])
    run(store, queue)
    assert queue.enqueued == [] and queue.depth_asked == 0


@pytest.mark.parametrize("changes", [{"paused": True}, {"send_at": NOW + 60}])
def test_paused_and_scheduled_jobs_keep_their_batches(changes: dict[str, object]) -> None:
    store, queue = FakeStore(), Queue()
    store.add(job(**changes), [pending(0)])
    run(store, queue)
    assert queue.enqueued == []


def test_a_scheduled_job_whose_time_came_is_released_and_enqueued() -> None:
    store, queue = FakeStore(due=["j1"]), Queue()
    store.add(job(batches=2, send_at=NOW - 1), [pending(0), pending(1)])
    assert run(store, queue)["released"] == 1
    assert ("release_scheduled", "j1") in store.calls
    assert queue.enqueued == [("j1", [0, 1], False)]  # (once: marked enqueued, not stale)
    assert ("mark_enqueued", "j1", 0) in store.calls


def sent_job(sent_at: float) -> FakeStore:
    store = FakeStore()
    counts = {s: 0 for s in Status} | {Status.QUEUED: 1}
    store.add(
        job(
            batch_counts={
                BatchState.PENDING: 0,
                BatchState.SUBMITTED: 1,
                BatchState.FAILED: 0,
                BatchState.CANCELLED: 0,
            },
            counts=counts,
            sent_at=sent_at,
            callback_url="https://example.com/done",
        ),
        [submitted(0)],
    )
    return store


def test_a_job_waits_for_its_reports_until_the_report_window_ends() -> None:
    store = sent_job(sent_at=NOW - 60)
    run(store, Queue())
    assert "close" not in store.names()
    store = sent_job(sent_at=NOW - SETTINGS.report_wait_seconds - 1)
    assert run(store, Queue())["closed"] == 1
    assert ("close", "j1", sweep.CLOSED_REASON) in store.calls


def test_a_finished_job_is_notified_once_and_forgotten() -> None:
    store, queue = sent_job(sent_at=NOW), Queue()
    store.known["j1"] = replace(store.known["j1"], closed=sweep.CLOSED_REASON)
    assert run(store, queue)["finished"] == 1
    assert queue.notified == ["j1"]
    assert store.names()[-2:] == ["claim_notification", "deactivate"]


def test_an_expired_job_leaves_the_index_and_a_broken_one_does_not_stop_the_others() -> None:
    store, queue = FakeStore(), Queue()
    store.add(job("good"), [pending(0)])
    store.known["broken"] = job("broken")  # with no batches to read: its sweep fails
    tally = run(store, queue)
    assert tally["errors"] == 1
    assert ("good", [0], False) in queue.enqueued
    store.known.pop("broken")
    store.known["gone"] = None  # type: ignore[assignment]
    run(store, Queue())
    assert ("deactivate", "gone") in store.calls


def test_paced_batches_wait_for_their_turn_and_are_not_redispatched() -> None:
    store, queue, pace = FakeStore(), Queue(), FakePace(listed={"j1"})
    store.add(job(batches=3, started_at=NOW - 600), [paced(0), paced(1), paced(2)])
    run(store, queue, pace)
    assert queue.enqueued == [] and pace.schedule_calls == []


def test_a_job_whose_turn_was_lost_goes_back_on_the_pace_s_schedule() -> None:
    store, queue, pace = FakeStore(), Queue(), FakePace()  # on no schedule, nothing moving
    store.add(job(batches=3, started_at=NOW - 600), [submitted(0), paced(1), paced(2)])
    assert run(store, queue, pace)["paced_rescheduled"] == 1
    assert ("relist_paced", "j1", (1, 2)) in store.calls
    assert pace.schedule_calls == [("j1", 0.0)]
    assert queue.enqueued == []


def test_a_lost_turn_is_given_back_behind_a_backlog_once_its_task_is_not_queued() -> None:
    """A waker that died holding the turn, with other tasks queued: given back once the
    queue's next task was pushed after the batch's last (its task, if any, was taken), or its
    own queue is empty while the other has a backlog, not only once both are empty; while its
    task may still wait behind the next, or the queue's next is not known, not."""
    lanes = ((NOW - 10, NOW), (NOW - 700, NOW), (taskqueue.EMPTY, NOW), (None, NOW))
    for (head, other), given in zip(lanes, (1, 0, 1, 0), strict=True):
        store, queue, pace = FakeStore(), Queue(depth=500), FakePace()
        store.add(job(batches=3, started_at=NOW - 600), [submitted(0), paced(1), paced(2)])
        heads = lambda head=head, other=other: {False: head, True: other}  # noqa: E731
        assert run(store, queue, pace, queue_heads=heads)["paced_rescheduled"] == given
        assert (("relist_paced", "j1", (1, 2)) in store.calls) == bool(given)


def test_a_job_just_woken_is_not_given_a_second_turn() -> None:
    store, queue, pace = FakeStore(), Queue(), FakePace()  # off the schedule: it was woken
    woken = replace(paced(1), enqueued_at=NOW - 0.5)  # and its task is on its way
    store.add(job(batches=3, started_at=NOW - 600), [submitted(0), woken, paced(2)])
    assert run(store, queue, pace)["paced_rescheduled"] == 0
    assert pace.schedule_calls == [] and queue.enqueued == []


def test_a_job_with_a_call_out_is_not_given_a_second_turn() -> None:
    store, queue, pace = FakeStore(resolutions={0: "in_flight"}), Queue(), FakePace()
    store.add(job(batches=2, started_at=NOW - 600), [sending(0), paced(1)])
    run(store, queue, pace)
    assert pace.schedule_calls == []


def test_a_cancelled_job_s_paced_batches_are_enqueued_for_their_claim_to_cancel() -> None:
    store, queue, pace = FakeStore(), Queue(), FakePace(listed={"j1"})
    store.add(job(batches=2, cancelled=True), [paced(0), paced(1)])
    run(store, queue, pace)
    assert queue.enqueued == [("j1", [0, 1], False)]


def test_a_call_recorded_from_its_reports_lets_the_batch_go_on() -> None:
    store, queue = FakeStore(resolutions={0: "advanced"}), Queue()
    store.add(job(batches=1, started_at=NOW - 600), [sending(0)])
    run(store, queue)
    assert queue.enqueued == [("j1", [0], False)]


def test_messages_are_looked_up_only_for_jobs_old_enough_to_have_silent_ones() -> None:
    """No batch of a job younger than RECONCILE_AFTER_SECONDS can have waited that long for
    its reports: the sweep does not ask (under a load of alerts, thousands are that young)."""
    asked: list[str] = []

    def look_up(job_id: str, now: float, allowed: int) -> Lookups:
        asked.append(job_id)
        return Lookups(0)

    for age, wanted in (
        (SETTINGS.reconcile_after_seconds - 1, []),
        (SETTINGS.reconcile_after_seconds, ["j1"]),
    ):
        store = sent_job(sent_at=NOW - 1)
        store.known["j1"] = replace(store.known["j1"], created_at=NOW - age)
        asked.clear()
        run(store, Queue(), look_up=look_up)
        assert asked == wanted


def test_an_api_host_s_clock_hours_ahead_does_not_hold_lookups_back() -> None:
    """A job's creation is stamped by the API host; its first claim by Redis, the clock the
    sweep reads. The age that lets lookups start is the claim's: a host three hours ahead
    held them back three hours (and the job, due then, was not looked at before)."""
    asked: list[str] = []

    def look_up(job_id: str, now: float, allowed: int) -> Lookups:
        asked.append(job_id)
        return Lookups(0)

    store = sent_job(sent_at=NOW - 1)
    after = SETTINGS.reconcile_after_seconds
    ahead = replace(store.known["j1"], created_at=NOW + 3 * 3600, started_at=NOW - after)
    store.known["j1"] = ahead
    run(store, Queue(), look_up=look_up)
    assert asked == ["j1"]
    store.known["j1"] = replace(ahead, started_at=NOW - 60)  # (too young: due when it can be)
    store.due_at["j1"] = 0.0
    run(store, Queue(), look_up=look_up)
    assert asked == ["j1"] and store.due_at["j1"] == NOW - 60 + after


def test_the_sweep_reads_active_jobs_a_chunk_at_a_time() -> None:
    store, queue = FakeStore(), Queue()
    for n in range(sweep.JOBS_A_READ + 3):
        store.add(job(f"j{n}"), [pending(0, since=NOW, enqueued=NOW)])
    reads: list[int] = []
    jobs = store.jobs
    store.jobs = lambda ids: reads.append(len(ids)) or jobs(ids)  # type: ignore[method-assign]
    run(store, queue)
    assert reads == [sweep.JOBS_A_READ, 3]


def test_a_sweep_reads_many_jobs_a_round_trip() -> None:
    """Under a load of alerts thousands of jobs are active: the sweep reads each chunk's batch
    records in one round trip and Redis's clock once for it, and marks what it enqueues again
    in one more, rather than a round trip or more for each job (which made a sweep of 40,000
    take 11 s)."""
    store, queue = FakeStore(), Queue()
    count = 2 * sweep.JOBS_A_READ
    for n in range(count):
        store.add(job(f"j{n}", started_at=NOW - 600), [pending(0, enqueued=NOW - 600)])
    clock_reads: list[float] = []

    def now() -> float:
        clock_reads.append(NOW)
        return NOW

    read_one: list[str] = []
    store.batches = read_one.append  # type: ignore[assignment,method-assign]
    marked: list[int] = []
    store.mark_enqueued_many = lambda marks, at: marked.append(len(marks))  # type: ignore[method-assign]
    tally = run(store, queue, now=now)
    assert tally["redispatched"] == count and len(queue.enqueued) == count
    assert read_one == []
    assert [c for c in store.calls if c[0] == "batches_of"] == [
        ("batches_of", tuple(f"j{n}" for n in range(start, start + sweep.JOBS_A_READ)))
        for start in (0, sweep.JOBS_A_READ)
    ]
    assert len(clock_reads) <= 3  # (the scheduled jobs' read, and one a chunk)
    assert marked == [sweep.JOBS_A_READ, sweep.JOBS_A_READ]


def test_a_job_all_handed_over_has_no_batches_read() -> None:
    """A job waiting only for reports (`sent`) is no business of the batches' part of the
    sweep: its records are not read."""
    store, queue = FakeStore(), Queue()
    waiting = job(
        started_at=NOW - 600,
        batch_counts={
            BatchState.PENDING: 0,
            BatchState.SUBMITTED: 1,
            BatchState.FAILED: 0,
            BatchState.CANCELLED: 0,
        },
        counts={s: (1 if s is Status.QUEUED else 0) for s in Status},
        handed=1,
    )
    store.add(waiting, [submitted(0)])
    assert waiting.state is JobState.SENT
    run(store, queue)
    assert all("j1" not in c[1] for c in store.calls if c[0] == "batches_of")
    assert not [c for c in store.calls if c[0] == "resolve"]


def test_a_job_waiting_for_reports_is_looked_at_again_only_when_something_can_be_due() -> None:
    """A job all handed over is not read by every sweep (under a load of alerts whose numbers
    give no receipts, a day of them waits): it is due again when its report window ends, and,
    with lookups, when they can start, each sweep while they go on, then when the next round
    of them can start. (A final report or a cancel makes it due at once: the store's.)"""
    wait, after = SETTINGS.report_wait_seconds, SETTINGS.reconcile_after_seconds
    store = sent_job(sent_at=NOW - 60)
    store.known["j1"] = replace(store.known["j1"], created_at=NOW - 60)
    read: list[str] = []
    jobs = store.jobs
    store.jobs = lambda ids: read.extend(ids) or jobs(ids)  # type: ignore[method-assign]
    run(store, Queue())
    assert read == ["j1"] and store.due_at["j1"] == NOW - 60 + wait
    read.clear()
    run(store, Queue(), now=lambda: NOW + 60)
    assert read == []
    tally = run(store, Queue(), now=lambda: NOW + wait)  # (at its due time: read, and closed)
    assert read == ["j1"] and tally["closed"] == 1

    looked = Lookups(0)

    def swept(at: float) -> float:
        run(store, Queue(), now=lambda: at, look_up=lambda job_id, now, allowed: looked)
        return store.due_at["j1"]

    created = NOW - 60
    store = sent_job(sent_at=NOW - 30)
    store.known["j1"] = replace(store.known["j1"], created_at=created)
    assert swept(NOW) == created + after  # (when its first lookups can be)
    assert swept(created + after) == created + after  # the next sweep: a batch may be due
    looked = Lookups(3)  # (lookups going on: every sweep)
    assert swept(NOW - 30 + after + 1) == created + after
    looked = Lookups(0, held=True)  # (the budget ran out: the next sweep goes on)
    assert swept(NOW - 30 + after + 2) == created + after
    looked = Lookups(0)  # (a round over: the next one starts this much later)
    assert swept(NOW - 30 + after + 3) == NOW - 30 + 2 * after + 3
    store.due_at["j1"] = -1.0  # (as a final report leaves it)
    assert swept(NOW + wait - 100) == NOW - 30 + wait  # (the window ends first)
    store.due_at["j1"] = -2.0
    looked = Lookups(0, settled=True)  # (nothing left to look up: only the window's end)
    assert swept(NOW + 700) == NOW - 30 + wait


def test_a_sweep_makes_a_bounded_number_of_lookups_in_all() -> None:
    """Thousands of alerts may have silent messages: the sweep's budget of lookups is shared by
    its jobs, a share at most each (they come in the same order every sweep), and a job that
    finds none left is looked at next sweep."""
    store = FakeStore()
    names = ("a", "b", "c", "d", "e")
    for name in names:
        sent = sent_job(sent_at=NOW - 3000).known["j1"]
        store.add(replace(sent, job_id=name, created_at=NOW - 3000), [submitted(0)])
    allowed: list[int] = []

    def look_up(job_id: str, now: float, left: int) -> Lookups:
        allowed.append(left)
        return Lookups(left, held=True)  # (it has more than it may ask)

    tally = run(store, Queue(), look_up=look_up)
    shares = LOOKUPS_PER_SWEEP // LOOKUPS_PER_JOB
    assert len(names) > shares and allowed == [LOOKUPS_PER_JOB] * shares  # (the last: none)
    assert tally["looked_up"] == LOOKUPS_PER_SWEEP
    assert store.due_at == {}  # (each due again next sweep: looking up, or held back)
