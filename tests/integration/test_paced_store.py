"""Paced calls in the store's scripts, on a real Redis: a batch sent a few recipients at a time
keeps its counters equal to its recipients' statuses, never repeats a call, and a cancel stops
what is not yet handed over. And the shared pace itself."""

from __future__ import annotations

import time

import redis

from bulksms.store import BatchState, Claim, JobState, JobStore, NewJob, Report, Sending, Status
from bulksms.store.pacing import Pace
from tests.helpers import release_before
from tests.helpers.settle import resolve

FIVE = [f"+1415555010{i}" for i in range(5)]


def make(rdb: redis.Redis) -> JobStore:
    store = JobStore(rdb, 3600)
    store.create(NewJob("j1", Sending("hi", "+14155550199"), FIVE, 5, 0, 0, 0, 5, "GSM-7", 1))
    return store


def counts(store: JobStore) -> dict[str, int]:
    found = store.job("j1")
    assert found is not None
    return {s.value: n for s, n in found.counts.items() if n}


def statuses(store: JobStore) -> list[str]:
    return [r.status.value for r in store.batch_recipients("j1", 0)]


def record(store: JobStore) -> tuple[BatchState, int]:
    (batch,) = store.batches("j1")
    return batch.state, batch.offset


def test_a_batch_sent_in_calls_counts_each_call_once(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert store.claim_batch("j1", 0, 0, 2) == Claim("go", attempt=1, size=2)
    assert store.call_submitted("j1", 0, 1, 0, "api-1", []) == "advanced"
    assert record(store) == (BatchState.PENDING, 2)
    assert counts(store) == {"queued": 2, "pending": 3}
    # A task that read the batch before that call was recorded does not send it again.
    assert store.claim_batch("j1", 0, 0, 2) == Claim("moved", detail="2")
    assert store.claim_batch("j1", 0, 2, 2) == Claim("go", attempt=1, size=2)
    # A report for the call in flight arrives before its answer is recorded.
    assert store.record_report(Report("j1", 0, FIVE[2], Status.SENT, "", "")) == 1
    assert store.call_submitted("j1", 0, 1, 2, "api-2", [FIVE[3]]) == "advanced"
    assert counts(store) == {"queued": 2, "sent": 1, "rejected": 1, "pending": 1}
    assert store.claim_batch("j1", 0, 4, 1) == Claim("go", attempt=1, size=1)
    assert store.call_submitted("j1", 0, 1, 4, "api-3", []) == "submitted"
    assert store.call_submitted("j1", 0, 1, 4, "api-3", []) == "done"
    assert counts(store) == {"queued": 3, "sent": 1, "rejected": 1}
    assert statuses(store) == ["queued", "queued", "sent", "rejected", "queued"]
    found = store.job("j1")
    assert found is not None and found.state is JobState.SENT and found.handed == 5
    # Reports for recipients handed over by an earlier call move them as usual.
    assert store.record_report(Report("j1", 0, FIVE[0], Status.DELIVERED, "", "")) == 1
    assert counts(store) == {"queued": 2, "sent": 1, "rejected": 1, "delivered": 1}


def test_a_cancel_between_calls_cancels_only_what_was_not_handed_over(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    store.call_submitted("j1", 0, 1, 0, "api-1", [])
    store.cancel("j1")
    assert store.claim_batch("j1", 0, 2, 2).outcome == "cancelled"
    assert counts(store) == {"queued": 2, "cancelled": 3}
    assert statuses(store) == ["queued", "queued", "cancelled", "cancelled", "cancelled"]


def test_a_call_whose_answer_was_lost_is_recorded_from_its_reports(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    store.record_report(Report("j1", 0, FIVE[0], Status.QUEUED, "", ""))
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=120) == "advanced"
    assert record(store) == (BatchState.PENDING, 2)
    assert counts(store) == {"queued": 2, "pending": 3}
    # Without evidence, after the grace, the same call (same offset) is made again.
    store.claim_batch("j1", 0, 2, 3)
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    assert record(store) == (BatchState.PENDING, 2)


def test_a_call_made_by_the_release_before_is_finished(rdb: redis.Redis) -> None:
    """The release before paced calls wrote `sending|since|attempt`: a call of the whole batch."""
    store = make(rdb)
    rdb.hset("bulksms:{j1}:batches", "0", f"sending|{time.time():.3f}|1")
    assert store.call_submitted("j1", 0, 1, 0, "api-1", []) == "submitted"
    assert counts(store) == {"queued": 5}


def test_a_parked_batch_waits_in_its_job_s_paced_set(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert not store.park("j1", 0, 3, 100.0)  # not at that offset: nothing changes
    assert store.park("j1", 0, 0, 100.0)
    assert record(store) == (BatchState.PACED, 0)
    assert store.pending_batches("j1") == [0]
    before = store.clock()
    assert store.next_paced("j1") == 0
    # Taken: marked enqueued then, on Redis's clock (the sweep's), so its task is on its way
    (taken,) = store.batches("j1")
    assert before - 0.001 <= taken.enqueued_at <= store.clock() + 0.001  # (kept to the ms)
    assert store.next_paced("j1") is None
    assert store.claim_batch("j1", 0, 0, 5) == Claim(
        "go", attempt=1, size=5
    )  # a paced batch is claimed


def test_a_paced_batch_of_a_job_gone_is_taken_without_writing_a_key_that_never_expires(
    rdb: redis.Redis,
) -> None:
    store = make(rdb)
    assert store.park("j1", 0, 0, 100.0)
    rdb.delete("bulksms:{j1}:batches")  # the job's retention ended
    assert store.next_paced("j1") == 0
    assert not rdb.exists("bulksms:{j1}:batches")
    store.relist_paced("j1", [0])  # (a waker that died holding it)
    assert 0 < rdb.ttl("bulksms:{j1}:paced") <= store.retention


def test_the_pace_keeps_plivo_s_queue_within_the_bound(rdb: redis.Redis) -> None:
    pace = Pace(rdb)
    started = time.monotonic()  # (what a busy host's stalls take off the waits below)
    assert pace.take("a", 50, 10.0, 10.0, None).go  # an empty queue takes any call: 5 s of it
    assert pace.take("a", 50, 10.0, 10.0, None).go  # 10 s: at the bound
    assert pace.take("b", 10, 10.0, 10.0, None).had_last is False  # b waits: a goes after it
    refused = pace.take("a", 10, 10.0, 10.0, None)
    assert refused.had_last  # a took the last room
    # told to come back when the queue is down to half the bound (5 s), less the time gone by
    assert not refused.go and 5.0 - (time.monotonic() - started) <= refused.seconds <= 5.0
    assert pace.take("a", 10, 20.0, 10.0, None).go  # an urgent call may go past it
    # A sender with a cap of its own: its queue binds before the account's.
    assert pace.take("a", 2, 1.0, 1000.0, ("+14155550199", 1.0)).go is False  # the account is full
    rdb.delete("bulksms:{pace}:account")
    assert pace.take("a", 2, 1.0, 1000.0, ("+14155550199", 1.0)).go
    capped = pace.take("a", 1, 1.0, 1000.0, ("+14155550199", 1.0))
    assert not capped.go and 2.0 - (time.monotonic() - started) <= capped.seconds <= 2.0


def test_the_schedule_gives_each_due_job_to_one_waker(rdb: redis.Redis) -> None:
    pace = Pace(rdb)
    pace.schedule("a", 0.0)
    pace.schedule("b", time.time() + 3600)
    pace.schedule("b", 1.0)  # an earlier turn wins
    pace.schedule("a", time.time() + 3600)  # a later one does not push it back
    assert pace.due() == ["a"]  # one a tick, earliest first
    assert pace.due(limit=5) == ["b"]
    assert pace.due() == []


def test_the_release_before_leaves_a_batch_sent_in_calls_alone(rdb: redis.Redis) -> None:
    """During a rolling deploy the release before's workers run their own scripts on this
    release's records. A batch part sent is `calling`, `resume` or `paced` to them: names they
    skip (they would otherwise send it whole again), and they change nothing."""
    store = make(rdb)
    claim = rdb.register_script(release_before.CLAIM)
    resolve = rdb.register_script(release_before.RESOLVE)
    keys = ["bulksms:{j1}:job", "bulksms:{j1}:batches", "bulksms:{j1}:r:0"]
    later = f"{time.time() + 3600:.3f}"

    def untouched(state: str) -> None:
        before = rdb.hget(keys[1], "0")
        assert before is not None and before.startswith(state + "|")
        assert claim(keys=keys, args=[0, later]) == [state]
        assert resolve(keys=keys, args=[0, later, 0, 0]) == state
        assert rdb.hget(keys[1], "0") == before

    store.claim_batch("j1", 0, 0, 2)
    untouched("calling")
    store.call_submitted("j1", 0, 1, 0, "api-1", [])
    untouched("resume")
    store.park("j1", 0, 2, 0.0)
    untouched("paced")
    # A whole batch is written as the release before wrote it, and it finishes it correctly.
    rdb.flushall()
    store = make(rdb)
    assert claim(keys=keys, args=[0, later]) == ["go", "1"]
    assert counts(store) == {"pending": 5}
