"""The batch-sending decisions (`bulksms.worker.dispatch`), without Redis, Celery or Plivo: what
each claim and each Plivo answer leads to."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError
from prometheus_client import REGISTRY

from bulksms.config import Settings
from bulksms.store import BatchRecord, BatchState, Claim
from bulksms.worker import dispatch
from bulksms.worker.gateway import (
    Accepted,
    BadCredentials,
    NotSent,
    OutcomeUnknown,
    Refused,
    SendError,
)
from bulksms.worker.pacing import Pacer
from tests.helpers.fakes import FakeGateway, FakePace, FakeStore, NoThrottle, job

SETTINGS = Settings(
    api_base_url="https://sms.example.com",
    send_max_attempts=3,
    send_backoff_base=2.0,
    send_backoff_max=60.0,
)


def send(
    store: FakeStore,
    gateway: FakeGateway,
    batch: int = 0,
    pace: FakePace | None = None,
    settings: Settings = SETTINGS,
    wake: Callable[[], object] | None = None,
) -> str:
    pacer = Pacer(pace or FakePace(), settings)  # type: ignore[arg-type]
    return dispatch.send_batch(store, gateway, NoThrottle(), pacer, settings, "j1", batch, wake)  # type: ignore[arg-type]


@pytest.fixture
def store() -> FakeStore:
    found = FakeStore()
    found.add(job(batches=2))
    return found


@pytest.mark.parametrize("outcome", ["sending", "failed", "gone", "paused", "cancelled"])
def test_a_batch_not_claimed_is_never_sent(store: FakeStore, outcome: str) -> None:
    store.claims = [Claim(outcome)]
    gateway = FakeGateway()
    assert send(store, gateway) == f"skipped:{outcome}"
    assert gateway.sent == []
    assert store.names() == ["claim"]


def test_a_call_found_to_have_reached_plivo_after_all_is_not_made_again(
    store: FakeStore,
) -> None:
    store.claims = [Claim("submitted")]  # the claim recorded it from a late report
    gateway = FakeGateway()
    assert send(store, gateway) == "submitted"
    assert gateway.sent == []


def test_an_accepted_batch_is_recorded_with_what_plivo_refused(store: FakeStore) -> None:
    gateway = FakeGateway([Accepted("api-7", ("u1",), ("+14155550101",))])
    assert send(store, gateway, batch=1) == "submitted"
    (outgoing,) = gateway.sent
    assert outgoing.dst == ("+14155550100", "+14155550101")
    assert (
        outgoing.url == "https://sms.example.com/api/webhooks/plivo/delivery-report?job=j1&batch=1"
    )
    assert outgoing.src == "+14155550199"
    assert store.calls[-1] == ("submitted", "j1", 1, 1, "api-7", ("+14155550101",))
    assert store.calls[0] == ("claim", "j1", 1, 0, 2)  # the whole batch in one call


def test_the_rate_limit_is_waited_out_before_the_claim(store: FakeStore) -> None:
    """A call's age (which the sweep judges) starts at its claim: a long wait for a token
    must come before it, or the sweep would take the waiting call for one in flight."""

    class Throttle:
        def wait(self) -> float:
            store.calls.append(("token",))
            return 12.0

    pacer = Pacer(FakePace(), SETTINGS)  # type: ignore[arg-type]
    outcome = dispatch.send_batch(store, FakeGateway(), Throttle(), pacer, SETTINGS, "j1", 0)  # type: ignore[arg-type]
    assert outcome == "submitted"
    assert store.names()[:2] == ["token", "claim"]


def test_numbers_opted_out_since_submit_are_left_out_of_the_call(store: FakeStore) -> None:
    store.opted = {"+14155550101"}
    gateway = FakeGateway()
    assert send(store, gateway) == "submitted"
    (outgoing,) = gateway.sent
    assert outgoing.dst == ("+14155550100",)
    assert ("suppress", "j1", 0, 1, 0, ["+14155550101"]) in store.calls


def test_a_call_whose_numbers_all_opted_out_is_not_made(store: FakeStore) -> None:
    store.opted = {"+14155550100", "+14155550101"}
    gateway = FakeGateway()
    assert send(store, gateway) == "submitted"  # recorded as handed over: nothing to hand
    assert gateway.sent == []
    assert store.names() == ["claim", "suppress", "submitted"]


def test_plivo_s_acceptance_is_recorded_however_long_redis_is_away(store: FakeStore) -> None:
    store.redis_down_for = 2  # only this worker knows Plivo took the batch: it waits it out
    assert send(store, FakeGateway()) == "submitted"
    assert store.names() == ["claim", "submitted"]


def test_an_unknown_outcome_leaves_the_batch_to_the_sweep(store: FakeStore) -> None:
    gateway = FakeGateway([OutcomeUnknown("read timed out")])
    assert send(store, gateway) == "unknown"
    assert store.names() == ["claim"]  # neither released (a resend) nor failed


def test_nothing_sent_releases_the_batch_for_a_later_attempt(store: FakeStore) -> None:
    store.claims = [Claim("go", attempt=2)]
    before = time.time()
    with pytest.raises(dispatch.RetryLater) as later:
        send(store, FakeGateway([NotSent("connection refused")]))
    assert 2.0 <= later.value.delay <= 4.0  # attempt 2: base × 2, with jitter down to half
    name, job_id, batch, attempt, not_before = store.calls[-1]
    assert (name, job_id, batch, attempt) == ("release", "j1", 0, 2)
    assert before + later.value.delay <= not_before <= time.time() + later.value.delay


def test_plivo_s_retry_after_wins_but_is_capped(store: FakeStore) -> None:
    with pytest.raises(dispatch.RetryLater) as later:
        send(store, FakeGateway([NotSent("429", retry_after=30)]))
    assert later.value.delay == 30
    with pytest.raises(dispatch.RetryLater) as later:
        send(store, FakeGateway([NotSent("429", retry_after=10**6)]))
    # Kept in the batch's record; the task's countdown stays within the broker's timeout.
    assert store.calls[-1][4] == pytest.approx(
        time.time() + dispatch.RETRY_AFTER_CAP_SECONDS, abs=5
    )
    assert later.value.delay == SETTINGS.celery_visibility_timeout / 2


def test_a_retry_that_comes_before_the_backoff_ends_backs_off_again(store: FakeStore) -> None:
    store.claims = [Claim("early", detail="1000.000")]  # (seconds yet to wait)
    gateway = FakeGateway()
    with pytest.raises(dispatch.RetryLater) as later:
        send(store, gateway)
    assert later.value.delay == SETTINGS.celery_visibility_timeout / 2
    assert gateway.sent == []


def test_the_last_attempt_fails_the_batch(store: FakeStore) -> None:
    store.claims = [Claim("go", attempt=SETTINGS.send_max_attempts)]
    assert send(store, FakeGateway([NotSent("connection refused")])) == "failed"
    assert store.calls[-1] == ("failed", "j1", 0, 3, "gave up after 3 attempts: connection refused")


def test_every_write_of_a_call_s_owner_names_its_claim() -> None:
    """The claim's since goes with each of its owner's writes: a Redis that lost a claim gives
    the next one the same attempt number, and only the since tells them apart (the store takes
    '' for "whoever owns it")."""

    def owners(claim: Claim, *answers: Accepted | SendError) -> list[tuple[str, str]]:
        store = FakeStore(opted={"+14155550101"}, claims=[claim])
        store.add(job(batches=1))
        with contextlib.suppress(dispatch.RetryLater):
            send(store, FakeGateway(list(answers)))
        return store.owners

    accepted = owners(Claim("go", attempt=1, since="100.001"))
    assert accepted == [("suppress", "100.001"), ("submitted", "100.001")]
    released = owners(Claim("go", attempt=1, since="100.002"), NotSent("503"))
    assert released == [("suppress", "100.002"), ("release", "100.002")]
    failed = owners(Claim("go", attempt=3, since="100.003"), NotSent("503"))
    assert failed == [("suppress", "100.003"), ("failed", "100.003")]
    not_durable = owners(Claim("go", attempt=1, durable=False, since="100.004"))
    assert not_durable == [("release", "100.004")]


def test_a_refusal_fails_the_batch_only(store: FakeStore) -> None:
    assert send(store, FakeGateway([Refused("invalid text")])) == "failed"
    assert store.names() == ["claim", "failed"]


def test_bad_credentials_halt_the_whole_job(store: FakeStore) -> None:
    assert send(store, FakeGateway([BadCredentials("401")])) == "failed"
    assert store.names() == ["claim", "halt", "failed"]
    assert store.calls[1] == ("halt", "j1", "Plivo refused the credentials: 401")


def test_an_acceptance_after_another_attempt_took_over_is_still_submitted(
    store: FakeStore,
) -> None:
    store.submitted_answer = "superseded"  # the store keeps the owner's record; only logged
    before = REGISTRY.get_sample_value("bulksms_batches_total", {"outcome": "superseded"}) or 0
    assert send(store, FakeGateway()) == "submitted"
    after = REGISTRY.get_sample_value("bulksms_batches_total", {"outcome": "superseded"})
    assert after == before + 1  # (counted apart: Plivo may have the recipients twice)


PACED = Settings(api_base_url="https://sms.example.com", plivo_mps=0.4, plivo_queue_seconds=10)
FIVE = ["+14155550100", "+14155550101", "+14155550102", "+14155550103", "+14155550104"]


def test_a_batch_goes_in_calls_of_half_the_queue_bound(store: FakeStore) -> None:
    store.numbers = FIVE  # 0.4 a second × 10 s / 2: calls of 2
    gateway = FakeGateway()
    assert send(store, gateway, settings=PACED) == "submitted"
    assert [o.dst for o in gateway.sent] == [tuple(FIVE[0:2]), tuple(FIVE[2:4]), (FIVE[4],)]
    claims = [c for c in store.calls if c[0] == "claim"]
    assert [(c[3], c[4]) for c in claims] == [(0, 2), (2, 2), (4, 1)]  # offset, size


def test_with_no_room_at_the_pace_the_batch_is_parked_not_slept_on(store: FakeStore) -> None:
    pace = FakePace(room=0, wait=7.5, now=1000.0)
    gateway = FakeGateway()
    assert send(store, gateway, pace=pace, settings=PACED) == "paced"
    assert gateway.sent == []
    assert store.names() == ["park"]  # never claimed: nothing in flight
    assert store.calls[0] == ("park", "j1", 0, 0, 1007.5)
    assert pace.schedule_calls == [("j1", 1007.5)]


@pytest.mark.parametrize(("queue", "after"), [(10.0, 0.25), (1.0, 0.125)])
def test_a_job_that_took_the_last_room_is_woken_after_the_others(
    store: FakeStore, queue: float, after: float
) -> None:
    settings = replace(PACED, plivo_queue_seconds=queue, pace_wake_interval=0.25)
    pace = FakePace(room=0, wait=7.5, now=1000.0, had_last=True)
    assert send(store, FakeGateway(), pace=pace, settings=settings) == "paced"
    # A waker's tick later: the batch of a job woken first takes the room before this one's is
    # woken, by this worker's waker or another's. At most an eighth of the queue bound later: a
    # job sending alone still finds Plivo's queue not empty when it is woken.
    assert pace.schedule_calls == [("j1", 1007.5 + after)]


@pytest.mark.parametrize(
    ("waiting", "backlog", "woken"),
    [
        (2, 9.0, 1),  # room left after the call (the bound is 10 s): the next job takes it now
        (2, 10.0, 0),  # the call filled the queue: the next job waits for its time
        (0, 0.0, 0),  # nobody waits
    ],
)
def test_a_call_that_leaves_room_wakes_the_next_job_in_line(
    store: FakeStore, waiting: int, backlog: float, woken: int
) -> None:
    store.numbers = FIVE[:2]
    wakes: list[None] = []
    pace = FakePace(waiting=waiting, backlog=backlog)
    gateway = FakeGateway()
    assert send(store, gateway, pace=pace, settings=PACED, wake=lambda: wakes.append(None))
    assert len(gateway.sent) == 1 and len(wakes) == woken


@pytest.mark.parametrize("error", [redis.ConnectionError("away"), OperationalError("away")])
def test_a_wake_that_fails_leaves_the_next_job_to_the_waker(
    store: FakeStore, error: Exception
) -> None:
    def away() -> None:
        raise error

    store.numbers = FIVE[:2]
    gateway = FakeGateway()
    assert send(store, gateway, pace=FakePace(waiting=1), settings=PACED, wake=away) == (
        "submitted"
    )
    assert len(gateway.sent) == 1  # the call is made all the same


def test_a_batch_sends_what_the_pace_has_room_for_and_parks_at_its_offset(
    store: FakeStore,
) -> None:
    store.numbers = FIVE
    pace = FakePace(room=4)
    gateway = FakeGateway()
    assert send(store, gateway, pace=pace, settings=PACED) == "paced"
    assert [len(o.dst) for o in gateway.sent] == [2, 2]
    assert store.calls[-1][:4] == ("park", "j1", 0, 4)


def test_a_segment_counts_as_a_message_at_the_pace(store: FakeStore) -> None:
    store.known["j1"] = job(batches=2, segments_per_message=3)
    store.numbers = FIVE[:2]
    pace = FakePace()
    gateway = FakeGateway()
    assert send(store, gateway, pace=pace, settings=PACED) == "submitted"
    assert [len(o.dst) for o in gateway.sent] == [1, 1]  # 2 segments of room: 1 message a call
    assert pace.taken == [3, 3]


def test_a_cancelled_or_paused_job_spends_no_pace(store: FakeStore) -> None:
    for flags in ({"cancelled": True}, {"paused": True}):
        store.known["j1"] = job(batches=2, **flags)
        store.claims = [Claim("cancelled" if "cancelled" in flags else "paused")]
        pace = FakePace()
        gateway = FakeGateway()
        assert send(store, gateway, pace=pace).startswith("skipped:")
        assert pace.taken == [] and gateway.sent == []


def test_a_finished_batch_hands_its_turn_to_the_job_s_next_paced_batch(
    store: FakeStore,
) -> None:
    store.paced["j1"] = [1]
    store.batch_records["j1"][1] = BatchRecord(1, BatchState.PACED, 0.0, 0, "")
    gateway = FakeGateway()
    assert send(store, gateway) == "submitted (went on with batches 1)"
    assert [c[2] for c in store.calls if c[0] == "claim"] == [0, 1]  # in the same task
    assert len(gateway.sent) == 2 and store.paced["j1"] == []


def test_a_turn_gives_way_to_waiting_jobs_after_its_share(store: FakeStore) -> None:
    store.numbers = FIVE
    pace = FakePace(waiting=1, now=1234.0)  # a share of 0.4 × 10 s / 2 / 2 = 1 segment
    gateway = FakeGateway()
    assert send(store, gateway, pace=pace, settings=PACED) == "paced"
    assert [len(o.dst) for o in gateway.sent] == [2]
    assert store.calls[-1] == ("park", "j1", 0, 2, 1234.0)  # to the back of the line, now
    assert pace.schedule_calls == [("j1", 1234.0)]


def test_a_finished_turn_that_gives_way_leaves_the_job_s_next_paced_batch_as_it_was(
    store: FakeStore,
) -> None:
    """Its next batch is not taken off the paced set (which marks it enqueued) only to be put
    back: the sweep would then take it for one on its way to a worker, and a waker that died
    holding the job's turn would be found DISPATCH_STALE_SECONDS later than it could be."""
    store.paced["j1"] = [1]
    store.batch_records["j1"][1] = BatchRecord(1, BatchState.PACED, 0.0, 0, "")
    pace = FakePace(waiting=1, now=1234.0)  # a share of 1 segment: used up by the first call
    gateway = FakeGateway()
    assert send(store, gateway, pace=pace, settings=PACED) == "submitted"
    assert len(gateway.sent) == 1 and store.paced["j1"] == [1]
    assert store.paced_taken == []
    assert not any(c[0] == "relist_paced" for c in store.calls)
    assert pace.schedule_calls == [("j1", 1234.0)]  # to the back of the line, now
    store.paced["j1"] = []  # and without one, the job has no turn to wait for
    store.batch_records["j1"][0] = BatchRecord(0, BatchState.PENDING, 0.0, 0, "")
    pace.schedule_calls.clear()
    assert send(store, gateway, pace=pace, settings=PACED) == "submitted"
    assert pace.schedule_calls == []


def test_a_retried_batch_is_marked_enqueued_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry is the batch's task enqueued again: marked so (else, behind a backlog, the
    sweep would take its first enqueue for the time it was last enqueued, and its retry for a
    task that vanished)."""
    from bulksms.worker import tasks

    store = FakeStore()

    def later(*_: object) -> str:
        raise dispatch.RetryLater(5.0, "not sent", 3)

    for name in ("gateway", "throttle", "pacer", "settings"):
        monkeypatch.setattr(tasks, name, lambda: None)
    monkeypatch.setattr(tasks, "store", lambda: store)
    monkeypatch.setattr(dispatch, "send_batch", later)
    asked: dict[str, Any] = {}

    def retry(**options: Any) -> Exception:
        asked.update(options, marked=("mark_enqueued", "j1", 3) in store.calls)
        return RuntimeError("retried")

    monkeypatch.setattr(tasks.send_batch, "retry", retry)
    with pytest.raises(RuntimeError, match="retried"):
        tasks.send_batch.run("j1", 3)
    assert asked == {"args": ("j1", 3), "countdown": 5.0, "exc": None, "marked": True}
