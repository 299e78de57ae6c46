"""Review of paced calls: sequences of events (stale workers, the sweep, late reports, cancel,
legacy records) driven through the store's scripts on a real Redis. After each sequence the
job's counters must equal its recipients' statuses, and no call is made twice unless the sweep
chose to resend after the grace."""

from __future__ import annotations

import random
import time
from collections import Counter
from typing import Any, cast

import pytest
import redis

from bulksms.config import Settings
from bulksms.store import BatchState, JobState, JobStore, NewJob, Report, Sending, Status
from bulksms.store.pacing import Pace
from bulksms.worker import dispatch
from bulksms.worker.gateway import Accepted, NotSent
from bulksms.worker.pacing import Pacer
from bulksms.worker.sweep import sweep_once
from tests.helpers.fakes import FakeGateway, FakePace, FakeStore, NoThrottle
from tests.helpers.fakes import job as fakes_job
from tests.helpers.settle import resolve

FIVE = [f"+1415555010{i}" for i in range(5)]
BATCHES = "bulksms:{j1}:batches"
FAKE_SETTINGS = Settings(api_base_url="https://sms.example.com", send_max_attempts=3)


def make(rdb: redis.Redis, numbers: list[str] = FIVE, batch_size: int = 0) -> JobStore:
    store = JobStore(rdb, 3600)
    size = batch_size or len(numbers)
    store.create(
        NewJob(
            "j1", Sending("hi", "+14155550199"), numbers, len(numbers), 0, 0, 0, size, "GSM-7", 1
        )
    )
    return store


def counts(store: JobStore) -> dict[str, int]:
    found = store.job("j1")
    assert found is not None
    return {s.value: n for s, n in found.counts.items() if n}


def actual(store: JobStore) -> dict[str, int]:
    found = store.job("j1")
    assert found is not None
    tally: Counter[str] = Counter()
    for batch in range(found.batches):
        tally.update(r.status.value for r in store.batch_recipients("j1", batch))
    return dict(tally)


def statuses(store: JobStore, batch: int = 0) -> list[str]:
    return [r.status.value for r in store.batch_recipients("j1", batch)]


def assert_consistent(store: JobStore) -> None:
    assert counts(store) == actual(store)
    found = store.job("j1")
    assert found is not None
    unfinished = sum(
        b.state in (BatchState.PENDING, BatchState.PACED, BatchState.SENDING)
        for b in store.batches("j1")
    )
    assert found.batch_counts[BatchState.PENDING] == unfinished


# -- 1. attempt numbers restart at every offset: a stale owner's write lands on the next call ---


def test_a_stale_answer_is_not_recorded_as_the_next_call(rdb: redis.Redis) -> None:
    """Worker A's call [0,2) reached Plivo, but A is slow to record it (Redis away, persist()
    retrying; or the process stalled > in_flight_seconds). Its reports arrive; the sweep settles
    the call from them ('advanced') and enqueues the batch; worker B claims [2,4) — attempt 1
    again, since an advance restarts the count. A's answer is then recorded as B's call."""
    store = make(rdb)
    assert store.claim_batch("j1", 0, 0, 2).attempt == 1  # A
    store.record_report(Report("j1", 0, FIVE[0], Status.SENT))
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=90) == "advanced"
    assert store.claim_batch("j1", 0, 2, 2).attempt == 1  # B, in flight
    # A's answer, for the call [0,2) it made, at last:
    assert store.call_submitted("j1", 0, 1, 0, "api-A", []) == "superseded"
    # ... else B's recipients [2,4) read queued while B's call is still in flight (and stay so
    # if B's call never reaches Plivo):
    assert statuses(store)[2:4] == ["pending", "pending"]


def test_a_stale_release_does_not_free_the_next_call(rdb: redis.Redis) -> None:
    """A's call [0,2) hangs past the grace: the sweep resends it (attempt 2, by B), B records
    it, C claims [2,4) as attempt 1. A's NotSent finally comes back and A releases 'attempt 1':
    C's claim, while C's call is in flight. The next task claims [2,4) again: a double send."""
    store = make(rdb)
    assert store.claim_batch("j1", 0, 0, 2).attempt == 1  # A
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    assert store.claim_batch("j1", 0, 0, 2).attempt == 2  # B
    assert store.call_submitted("j1", 0, 2, 0, "api-B", []) == "advanced"
    assert store.claim_batch("j1", 0, 2, 2).attempt == 1  # C, in flight
    assert not store.release_batch("j1", 0, 1, 0, 0.0)  # A, late
    # Were it released, A's retry would send C's recipients a second time:
    assert store.claim_batch("j1", 0, 2, 2).outcome == "sending"


def test_a_stale_failure_does_not_fail_the_next_call(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)  # A
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    store.claim_batch("j1", 0, 0, 2)  # B: attempt 2
    store.call_submitted("j1", 0, 2, 0, "api-B", [])
    assert store.claim_batch("j1", 0, 2, 2).attempt == 1  # C, in flight
    assert store.batch_failed("j1", 0, (1, 0), "A's late refusal") == -1
    assert store.call_submitted("j1", 0, 1, 2, "api-C", []) == "advanced"
    assert statuses(store)[:4] == ["queued"] * 4


# -- 2. the evidence counter e:<n> is dropped whole by a paced call -------------------------------


def test_evidence_beyond_a_call_survives_it_legacy_record(rdb: redis.Redis) -> None:
    """The release before sent the whole batch, got no answer, and resent it after the grace
    (`pending|0|1`). A late report (Plivo retries at +60/+180/+420 s) for recipient 3 lands:
    the lost call reached Plivo after all. The next claim records it instead of sending any of
    it again, and the counts stay exact."""
    store = make(rdb)
    rdb.hset(BATCHES, "0", "pending|0|1")
    assert store.record_report(Report("j1", 0, FIVE[3], Status.SENT)) == 1
    assert store.claim_batch("j1", 0, 0, 2).outcome == "submitted"
    assert statuses(store) == ["queued", "queued", "queued", "sent", "queued"]
    assert_consistent(store)


def test_evidence_beyond_a_call_survives_it_smaller_calls(rdb: redis.Redis) -> None:
    """The same within this release: a call of [0,5) resent after the grace, then made again in
    smaller calls (PLIVO_MPS or PLIVO_QUEUE_SECONDS lowered in a deploy meanwhile); Plivo's
    refusal of a later call fails the batch."""
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 5)
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    store.record_report(Report("j1", 0, FIVE[4], Status.DELIVERED))
    # The late report shows the resent call reached Plivo: recorded, not made again.
    assert store.claim_batch("j1", 0, 0, 2).outcome == "submitted"
    assert statuses(store) == ["queued", "queued", "queued", "queued", "delivered"]
    assert_consistent(store)
    # Without a report, a call made again is the same call (its size, whatever is asked now),
    # and a refusal of the next call fails only what was never handed over.
    rdb.flushall()
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 3)
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    repeat = store.claim_batch("j1", 0, 0, 2)
    assert (repeat.attempt, repeat.size) == (2, 3)
    assert store.call_submitted("j1", 0, 2, 0, "api-1", []) == "advanced"
    assert store.claim_batch("j1", 0, 3, 2).attempt == 1
    assert store.batch_failed("j1", 0, (1, 3), "refused") == 1
    assert statuses(store) == ["queued", "queued", "queued", "rejected", "rejected"]
    assert_consistent(store)


def test_evidence_of_a_smaller_call_does_not_settle_a_bigger_one(rdb: redis.Redis) -> None:
    """A call of [0,2) is resent after the grace; its late report lands (e:0 = 1). The resend is
    claimed as [0,3) (call size raised in a deploy meanwhile) and its worker is killed before
    the request leaves. The sweep reads e:0 as evidence that [0,3) reached Plivo: recipient 2 is
    recorded queued and the batch moves past it. It is never sent."""
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    store.record_report(Report("j1", 0, FIVE[0], Status.SENT))
    claim = store.claim_batch("j1", 0, 0, 3)  # the late report: [0,2) is recorded, not repeated
    assert (claim.outcome, claim.detail) == ("moved", "2")
    assert store.claim_batch("j1", 0, 2, 3).attempt == 1  # killed before sending
    resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=90)
    assert statuses(store)[2] == "pending"
    assert_consistent(store)


def test_a_halted_job_s_parked_batches_all_fail_at_the_next_sweep(
    rdb: redis.Redis, settings: Settings
) -> None:
    """Bad credentials halt a job whose other batches are parked: the sweep gives the job one
    turn per pass, and each turn fails one batch (its claim says 'halted' and the task ends
    there), so a job of n parked batches takes n sweeps (15 s each) to fail. A cancelled job's
    parked batches are all enqueued by one sweep."""
    store = make(rdb, [f"+141555502{i:02d}" for i in range(12)], batch_size=3)  # 4 batches
    pace = Pace(rdb)
    for batch in range(4):
        assert store.park("j1", batch, 0, 0.0)
    pace.schedule("j1", 0.0)
    assert pace.due() == ["j1"] and store.next_paced("j1") == 0  # the waker
    store.claim_batch("j1", 0, 0, 3)
    store.halt("j1", "Plivo refused the credentials")
    store.batch_failed("j1", 0, (1, 0), "Plivo refused the credentials")

    def task(job_id: str, batches: object, urgent: bool) -> None:
        for batch in batches:  # type: ignore[attr-defined]
            store.claim_batch(job_id, batch, 0, 3)  # the claim fails it; the task ends

    sweep_once(store, pace, settings, task, lambda: 0, lambda _: None, lambda: time.time() + 999)
    for job_id in pace.due():  # the waker's next tick
        woken = store.next_paced(job_id)
        if woken is not None:
            task(job_id, [woken], False)
    found = store.job("j1")
    assert found is not None and found.state is JobState.FAILED, store.batches("j1")


def test_a_retry_goes_to_the_batch_that_needs_it() -> None:
    """A task's turn went on from batch 0 (submitted) to the job's parked batch 1, whose call
    was not sent (a 503): batch 1 is released to back off, and RetryLater retries the task —
    whose argument is batch 0. The retry finds batch 0 submitted and stops; batch 1 has no task
    until the sweep sees it stale (DISPATCH_STALE_SECONDS after its backoff, and only once the
    broker's queue is empty)."""
    store = FakeStore()
    store.add(fakes_job(batches=2))
    store._set("j1", 1, state=BatchState.PACED)
    store.paced["j1"] = [1]
    gateway = FakeGateway([Accepted("api-0", ("u1", "u2"), ()), NotSent("503")])
    pacer = Pacer(FakePace(), FAKE_SETTINGS)  # type: ignore[arg-type]

    def task(batch: int) -> str:
        send = cast(Any, dispatch.send_batch)  # (the fakes stand in for the real objects)
        return str(send(store, gateway, NoThrottle(), pacer, FAKE_SETTINGS, "j1", batch))

    with pytest.raises(dispatch.RetryLater) as later:
        task(0)
    assert store.batch_records["j1"][1].state is BatchState.PENDING  # released, backing off
    store._set("j1", 1, since=0.0)  # its backoff is over when the retry runs
    assert later.value.batch == 1  # (tasks.send_batch retries with this batch)
    task(later.value.batch)
    assert len(gateway.sent) == 3, "batch 1 was not retried"


def test_a_job_whose_batch_failed_after_handing_some_over_is_not_failed(
    rdb: redis.Redis,
) -> None:
    """A batch that handed [0,2) to Plivo and was then refused counts as `failed`; with no batch
    `submitted` the job reads FAILED (final: the sweep notifies and forgets it) although two of
    its messages were sent and their reports are still to come."""
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    store.call_submitted("j1", 0, 1, 0, "api-1", [])
    store.claim_batch("j1", 0, 2, 2)
    assert store.batch_failed("j1", 0, (1, 2), "refused") == 1
    found = store.job("j1")
    assert found is not None and found.counts[Status.QUEUED] == 2
    assert found.state is not JobState.FAILED


def test_a_record_whose_answer_was_lost_goes_on_with_the_batch(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first call's record is written but its answer is lost on the way back (the
    connection drops): the worker writes it again and goes on with the batch's next calls, each
    number sent once. It used to read the batch past its offset as another attempt's,
    log that Plivo took a call twice, and leave the rest of the batch to the sweep."""
    store = make(rdb)
    settings = Settings(
        api_base_url="https://sms.example.com", plivo_mps=0.4, plivo_queue_seconds=10
    )  # calls of 2 numbers
    gateway = FakeGateway()
    pacer = Pacer(FakePace(), settings)  # type: ignore[arg-type]
    record = store.call_submitted
    lost: list[str] = []

    def answer_lost(*args: Any, **kwargs: Any) -> str:
        answer = record(*args, **kwargs)
        if not lost:
            lost.append(answer)
            raise redis.ConnectionError("the connection dropped before the answer came")
        return answer

    monkeypatch.setattr(store, "call_submitted", answer_lost)
    send = cast(Any, dispatch.send_batch)  # (the fakes stand in for the real objects)
    with caplog.at_level("WARNING"):
        outcome = send(store, gateway, NoThrottle(), pacer, settings, "j1", 0)
    assert lost == ["advanced"] and outcome == "submitted"
    assert [list(o.dst) for o in gateway.sent] == [FIVE[0:2], FIVE[2:4], FIVE[4:5]]
    assert statuses(store) == ["queued"] * 5
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text
    assert_consistent(store)


# -- 3. things that held ------------------------------------------------------------------------


def test_legacy_pending_record_is_sent_in_calls(rdb: redis.Redis) -> None:
    store = make(rdb)
    rdb.hset(BATCHES, "0", "pending|0|0")
    assert store.batches("j1")[0].offset == 0
    assert store.claim_batch("j1", 0, 0, 3).attempt == 1
    assert store.call_submitted("j1", 0, 1, 0, "a", [FIVE[1]]) == "advanced"
    assert store.claim_batch("j1", 0, 3, 3).attempt == 1  # size clipped to the 2 left
    assert store.call_submitted("j1", 0, 1, 3, "b", []) == "submitted"
    assert statuses(store) == ["queued", "rejected", "queued", "queued", "queued"]
    assert_consistent(store)
    found = store.job("j1")
    assert found is not None and found.handed == 5 and found.state.value == "sent"


def test_legacy_sending_record_is_settled_from_reports(rdb: redis.Redis) -> None:
    store = make(rdb)
    rdb.hset(BATCHES, "0", f"sending|{time.time() - 100:.3f}|2")
    store.record_report(Report("j1", 0, FIVE[2], Status.DELIVERED))
    assert resolve(store, "j1", 0, 32, 90) == "submitted"
    assert statuses(store) == ["queued", "queued", "delivered", "queued", "queued"]
    assert_consistent(store)


def test_legacy_sending_record_resent_keeps_its_attempts(rdb: redis.Redis) -> None:
    store = make(rdb)
    rdb.hset(BATCHES, "0", f"sending|{time.time() - 100:.3f}|2")
    assert resolve(store, "j1", 0, 32, 90) == "resend"
    assert rdb.hget(BATCHES, "0") == "pending|0|2"  # (as the release before writes it)
    assert store.claim_batch("j1", 0, 0, 0).attempt == 3


def test_a_call_whose_recipients_were_all_reported_first_counts_zero(rdb: redis.Redis) -> None:
    """HINCRBY by 0 (never '-0') when every recipient of a call was reported before its answer,
    and when a whole batch's recipients were all reported before it finished."""
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    for number in FIVE[:2]:
        store.record_report(Report("j1", 0, number, Status.SENT))
    assert store.call_submitted("j1", 0, 1, 0, "a", []) == "advanced"
    store.claim_batch("j1", 0, 2, 3)
    for number in FIVE[2:]:
        store.record_report(Report("j1", 0, number, Status.DELIVERED))
    assert store.call_submitted("j1", 0, 1, 2, "b", []) == "submitted"
    assert_consistent(store)
    rdb.flushall()
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 0)
    for number in FIVE:
        store.record_report(Report("j1", 0, number, Status.SENT))
    assert store.call_submitted("j1", 0, 1, 0, "c", FIVE[:1]) == "submitted"
    assert counts(store) == {"sent": 5}
    assert_consistent(store)


def test_cancel_halt_and_pause_of_a_parked_batch(rdb: redis.Redis) -> None:
    store = make(rdb, [f"+141555502{i:02d}" for i in range(9)], batch_size=3)  # 3 batches of 3
    store.claim_batch("j1", 0, 0, 1)
    store.call_submitted("j1", 0, 1, 0, "a", [])
    assert store.park("j1", 0, 1, time.time())
    assert store.park("j1", 1, 0, time.time())
    store.pause("j1")
    assert store.claim_batch("j1", 0, 1, 1).outcome == "paused"
    assert store.batches("j1")[0].state is BatchState.PACED
    store.resume("j1")
    store.halt("j1", "bad credentials")
    assert store.claim_batch("j1", 0, 1, 1).outcome == "halted"
    store.cancel("j1")
    assert store.claim_batch("j1", 1, 0, 1).outcome == "halted"  # halted first: it wins
    assert store.claim_batch("j1", 2, 0, 1).outcome == "halted"
    assert statuses(store, 0) == ["queued", "rejected", "rejected"]
    assert_consistent(store)
    found = store.job("j1")
    assert found is not None and found.unsent_batches == 0


def test_park_needs_the_batch_s_offset_and_state(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    assert not store.park("j1", 0, 0, 1.0)  # sending: its owner decides
    store.call_submitted("j1", 0, 1, 0, "a", [])
    assert not store.park("j1", 0, 0, 1.0)  # an old offset
    assert store.park("j1", 0, 2, 1.0)
    assert store.call_submitted("j1", 0, 1, 0, "a", []) == "superseded"  # (whose? not said)
    assert store.release_batch("j1", 0, 1, 0, 0.0) is False
    assert store.batch_failed("j1", 0, (1, 0), "x") == -1
    assert store.claim_batch("j1", 0, 0, 2).outcome == "moved"
    assert store.claim_batch("j1", 0, 2, 2).attempt == 1


def test_reports_before_during_and_after_calls_repeated(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0, 0, 2)
    for _ in range(2):
        store.record_report(Report("j1", 0, FIVE[1], Status.SENT))
        store.record_report(Report("j1", 0, FIVE[1], Status.QUEUED))
    store.call_submitted("j1", 0, 1, 0, "a", [])
    store.record_report(Report("j1", 0, FIVE[1], Status.DELIVERED))
    store.record_report(Report("j1", 0, FIVE[1], Status.UNDELIVERED))
    store.record_report(Report("j1", 0, FIVE[0], Status.SENT))
    assert statuses(store)[:2] == ["sent", "delivered"]
    assert_consistent(store)


def test_the_pace_schedule_and_paced_set_after_a_waker_died(rdb: redis.Redis) -> None:
    store = make(rdb)
    pace = Pace(rdb)
    store.park("j1", 0, 0, 0.0)
    pace.schedule("j1", 0.0)
    assert pace.due() == ["j1"]  # the waker takes the job's turn...
    assert store.next_paced("j1") == 0  # ...and its batch, then dies
    assert not pace.scheduled("j1") and not store.has_paced("j1")
    store.relist_paced("j1", [0])  # what the sweep does then
    pace.schedule("j1", 0.0)
    assert pace.due() == ["j1"] and store.next_paced("j1") == 0


# -- 4. random interleavings of honest workers, the sweep, reports and decisions -----------------


class World:
    """Workers that only ever report what they did (sometimes late, after the sweep took their
    call over); Plivo that reports only what it got; calls of any size (0: the rest)."""

    def __init__(self, store: JobStore, rng: random.Random, numbers: list[str]) -> None:
        self.store, self.rng, self.numbers = store, rng, numbers
        self.inflight: list[tuple[int, int, int, bool]] = []  # attempt, offset, size, reached
        self.plivo: list[str] = []  # every number Plivo got, in order (repeats = double sends)
        self.resent = False  # the sweep resent a call after the grace

    def claim(self) -> None:
        record = self.store.batches("j1")[0]
        claim = self.store.claim_batch("j1", 0, record.offset, self.rng.choice([0, 1, 2, 3]))
        if claim.outcome == "go":
            left = len(self.numbers) - record.offset
            size = min(claim.size or left, left)
            reached = self.rng.random() < 0.7
            if reached:
                self.plivo += self.numbers[record.offset : record.offset + size]
            self.inflight.append((claim.attempt, record.offset, size, reached))

    def answer(self) -> None:
        if not self.inflight:
            return
        attempt, offset, size, reached = self.inflight.pop(self.rng.randrange(len(self.inflight)))
        if reached:
            if self.rng.random() < 0.8:  # else the answer is lost: left for the sweep
                self.store.call_submitted("j1", 0, attempt, offset, "api", [])
        elif self.rng.random() < 0.95:
            self.store.release_batch("j1", 0, attempt, offset, 0.0)
        else:
            self.store.batch_failed("j1", 0, (attempt, offset), "refused")

    def report(self) -> None:
        if self.plivo:
            number = self.rng.choice(self.plivo)
            status = self.rng.choice([Status.QUEUED, Status.SENT, Status.DELIVERED, Status.FAILED])
            self.store.record_report(Report("j1", 0, number, status))

    def sweep(self) -> None:
        if self.store.batches("j1")[0].state is BatchState.SENDING and self.rng.random() < 0.5:
            self.inflight.clear()  # its worker died (kill -9): no answer will come
        # (else its worker is alive, only slow: its answer may come after the sweep's verdict)
        verdict = resolve(self.store, "j1", 0, 0, self.rng.choice([0, 1000]))
        self.resent |= verdict == "resend"

    def park(self) -> None:
        record = self.store.batches("j1")[0]
        self.store.park("j1", 0, record.offset, 0.0)

    def decide(self) -> None:
        choice = self.rng.random() * 4  # (most of the time, nothing)
        if choice < 0.3:
            self.store.cancel("j1")
        elif choice < 0.6:
            self.store.pause("j1")
        elif choice < 0.9:
            self.store.resume("j1")
        elif choice < 1.0:
            self.store.halt("j1", "halted")


@pytest.mark.parametrize("seed", range(120))
def test_random_interleavings_keep_counters_and_never_double_send(
    rdb: redis.Redis, seed: int
) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(7)]
    store = make(rdb, numbers)
    rng = random.Random(seed)
    world = World(store, rng, numbers)
    steps = [
        world.claim,
        world.claim,
        world.answer,
        world.answer,
        world.report,
        world.report,
        world.sweep,
        world.park,
        world.decide,
    ]
    for _ in range(80):
        rng.choice(steps)()
        assert_consistent(store)
        if not world.resent:  # a resend after the grace may repeat a call; nothing else may
            assert len(world.plivo) == len(set(world.plivo)), world.plivo
        # Handed over (queued or later) only if Plivo has it.
        for recipient in store.batch_recipients("j1", 0):
            if recipient.status not in (Status.PENDING, Status.CANCELLED, Status.REJECTED):
                assert recipient.number in world.plivo, recipient
