"""The batch-sending decisions (`bulksms.worker.dispatch`), without Redis, Celery or Plivo: what
each claim and each Plivo answer leads to."""

from __future__ import annotations

import time

import pytest

from bulksms.config import Settings
from bulksms.store import Claim
from bulksms.worker import dispatch
from bulksms.worker.gateway import Accepted, BadCredentials, NotSent, OutcomeUnknown, Refused
from tests.helpers.fakes import FakeGateway, FakeStore, NoThrottle, job

SETTINGS = Settings(
    api_base_url="https://sms.example.com",
    send_max_attempts=3,
    send_backoff_base=2.0,
    send_backoff_max=60.0,
)


def send(store: FakeStore, gateway: FakeGateway, batch: int = 0) -> str:
    return dispatch.send_batch(store, gateway, NoThrottle(), SETTINGS, "j1", batch)  # type: ignore[arg-type]


@pytest.fixture
def store() -> FakeStore:
    found = FakeStore()
    found.add(job(batches=2))
    return found


@pytest.mark.parametrize("outcome", ["sending", "submitted", "failed", "gone", "early", "paused"])
def test_a_batch_not_claimed_is_never_sent(store: FakeStore, outcome: str) -> None:
    store.claims = [Claim(outcome)]
    gateway = FakeGateway()
    assert send(store, gateway) == f"skipped:{outcome}"
    assert gateway.sent == []
    assert store.names() == ["claim"]


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
    assert later.value.delay == dispatch.RETRY_AFTER_CAP_SECONDS


def test_the_last_attempt_fails_the_batch(store: FakeStore) -> None:
    store.claims = [Claim("go", attempt=SETTINGS.send_max_attempts)]
    assert send(store, FakeGateway([NotSent("connection refused")])) == "failed"
    assert store.calls[-1] == ("failed", "j1", 0, 3, "gave up after 3 attempts: connection refused")


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
    store.submitted_answer = -1  # the store keeps the owner's record; this one is only logged
    assert send(store, FakeGateway()) == "submitted"
