"""The whole flow with real parts: gunicorn serving the app, a Celery worker process, the real
Plivo SDK talking HTTP to the sandbox, and the sandbox posting signed reports back over HTTP."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import redis

from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import JobStore
from tests.helpers.stack import Stack

FINAL = {"delivered", "undelivered", "failed", "rejected"}


def test_a_few_thousand_recipients_are_sent_once_each_and_counted_exactly(stack: Stack) -> None:
    numbers = us_numbers(2500)
    listed = numbers + numbers[:40] + ["not a number", "+1 201 555"]  # duplicates and junk
    answer = stack.submit({"recipients": listed, "message": "Hello from the flow test"})
    assert answer.status_code == 202, answer.text
    body = answer.json()
    job_id = body["job_id"]
    assert answer.headers["Location"] == f"/api/bulk-sms/{job_id}"
    assert body["recipients"] == {
        "received": 2542,
        "accepted": 2500,
        "duplicates": 40,
        "invalid": 2,
        "suppressed": 0,
    }
    assert body["batches"] == 3

    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    doc = stack.status(job_id)

    # Plivo's side: exactly three calls, every recipient once, with our sender and callback.
    sent = stack.sandbox.messages
    by_request = Counter(m["api_id"] for m in sent)
    assert len(by_request) == 3
    assert sorted(by_request.values()) == [500, 1000, 1000]
    assert sorted(m["dst"] for m in sent) == sorted(numbers)
    assert {m["src"] for m in sent} == {"+14155550199"}
    assert {m["text"] for m in sent} == {"Hello from the flow test"}
    assert all(
        m["url"].startswith(f"{stack.base_url}/api/webhooks/plivo/delivery-report?job=")
        for m in sent
    )
    assert stack.sandbox.stats()["reports_refused"] == 0

    # Our side: the counts are exactly the outcomes the sandbox reported.
    outcomes = Counter(m["status"] for m in sent)
    assert doc["counts"] == {
        "pending": 0,
        "queued": 0,
        "sent": 0,
        "delivered": outcomes["delivered"],
        "undelivered": outcomes["undelivered"],
        "failed": outcomes["failed"],
        "rejected": 0,
        "cancelled": 0,
        "suppressed": 0,
    }
    assert outcomes["undelivered"] and outcomes["failed"]  # the sandbox mixes outcomes in
    assert doc["batches"] == {"total": 3, "pending": 0, "submitted": 3, "failed": 0, "cancelled": 0}
    assert doc["state"] == "completed"


def test_plivo_invalid_numbers_are_counted_rejected(stack: Stack) -> None:
    numbers = us_numbers(5)
    stack.sandbox.faults.update({"invalid_numbers": numbers[:2]})
    job_id = stack.submit({"recipients": numbers, "message": "hi"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert doc["counts"]["rejected"] == 2
    assert sum(doc["counts"][s] for s in FINAL) == 5
    assert len(stack.sandbox.messages) == 3


# (Two batches of 100: the batch that got the 500 is proved absent by reading its sender's
# list, a page of 20 a listing token at Plivo's 20 a minute; next to a batch of 1000 that took
# minutes.)
@pytest.mark.parametrize("stack_overrides", [{"batch_size": 100}])
def test_transient_plivo_errors_are_retried_without_a_second_send(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    stack.sandbox.faults.update({"fail_next": [500, 429, 503]})
    numbers = us_numbers(120)
    job_id = stack.submit({"recipients": numbers, "message": "retry me"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sandbox.stats()["refused_requests"] == 3
    assert sorted(m["dst"] for m in stack.sandbox.messages) == sorted(numbers)
    assert doc["batches"]["submitted"] == 2


def test_a_permanently_refused_batch_fails_and_its_recipients_are_counted(stack: Stack) -> None:
    stack.sandbox.faults.update({"fail_next": [400]})
    job_id = stack.submit({"recipients": us_numbers(3), "message": "no"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "failed")
    assert doc["counts"]["rejected"] == 3
    assert doc["counts"]["pending"] == 0
    assert doc["batches"] == {"total": 1, "pending": 0, "submitted": 0, "failed": 1, "cancelled": 0}
    assert stack.sandbox.messages == []


def test_shuffled_and_repeated_reports_count_exactly(stack: Stack) -> None:
    stack.sandbox.faults.update({"shuffle_reports": True, "repeat_rate": 0.5, "report_delay_ms": 5})
    numbers = us_numbers(1500)
    job_id = stack.submit({"recipients": numbers, "message": "shuffle"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    outcomes = Counter(m["status"] for m in stack.sandbox.messages)
    assert stack.sandbox.stats()["reports_posted"] > 3 * 1500  # some came twice
    doc = stack.status(job_id)
    assert {k: v for k, v in doc["counts"].items() if v} == dict(outcomes)


@pytest.mark.parametrize("stack_overrides", [{"plivo_signatures": "v3"}])
def test_v2_only_reports_are_refused_when_v3_is_mandatory(
    stack: Stack, stack_overrides: dict[str, str]
) -> None:
    stack.sandbox.faults.update({"signatures": "v2"})
    job_id = stack.submit({"recipients": us_numbers(3), "message": "v2"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 1)
    stack.wait_until_quiet()
    doc = stack.status(job_id)
    assert doc["state"] == "sent"  # every report was refused (403), so nothing moved on
    assert doc["counts"]["queued"] == 3
    assert stack.sandbox.stats()["reports_posted"] == 0


@pytest.mark.parametrize("stack_overrides", [{"plivo_main_auth_token": "main-account-token"}])
def test_reports_signed_as_plivo_signs_count_by_default(
    stack: Stack, stack_overrides: dict[str, str]
) -> None:
    """V2 only, then V3 only, with the Ma- headers signed by a main account's token of its own
    and the subaccount's own headers by a token we do not know: every report counts once."""
    stack.sandbox.main_signing_key = "main-account-token"
    stack.sandbox.signing_key = "a-token-we-do-not-know"
    try:
        for mode in ("v2", "v3"):
            stack.sandbox.reset()
            stack.sandbox.faults.update({"signatures": mode, "repeat_rate": 0.3})
            job_id = stack.submit({"recipients": us_numbers(20), "message": mode}).json()["job_id"]
            doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
            outcomes = Counter(m["status"] for m in stack.sandbox.messages)
            assert {k: v for k, v in doc["counts"].items() if v} == dict(outcomes)
            assert stack.sandbox.stats()["reports_refused"] == 0
    finally:
        stack.sandbox.signing_key = stack.sandbox.main_signing_key = stack.sandbox.auth_token


def test_powerpack_and_expiry_reach_plivo(stack: Stack) -> None:
    powerpack = "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab"
    body = {
        "recipients": us_numbers(2),
        "message": "pp",
        "powerpack_uuid": powerpack,
        "expiry_seconds": 600,
    }
    job_id = stack.submit(body).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    sent = stack.sandbox.messages
    assert [(m["src"], m["powerpack_uuid"], m["message_expiry"]) for m in sent] == [
        ("", powerpack, 600)
    ] * 2


# The suite's 2 s staleness would let the sweep re-enqueue a batch that waits that long in
# the worker's prefetch on a busy machine (harmless, but not fan_out's doing).
@pytest.mark.parametrize("stack_overrides", [{"dispatch_stale_seconds": 60}])
def test_a_big_job_is_fanned_out_by_a_worker_and_sent_once(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    stack.sandbox.faults.reports = False  # 25 batches: their reports are not what this is about
    numbers = us_numbers(25_000)
    answer = stack.submit({"recipients": numbers, "message": "fan out"})
    assert answer.status_code == 202, answer.text
    assert answer.json()["batches"] == 25
    job_id = answer.json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "sent")
    assert doc["batches"]["submitted"] == 25
    stack.wait_until_quiet()
    sent = stack.sandbox.messages
    assert len({m["api_id"] for m in sent}) == 25
    assert sorted(m["dst"] for m in sent) == sorted(numbers)
    # Enqueued by fan_out, not by the sweep (which counts a batch it re-enqueues as
    # redispatched).
    store = JobStore(
        redis.Redis.from_url(stack.settings.redis_url or "", decode_responses=True), 60
    )
    job = store.job(job_id)
    assert job is not None
    batches = store.batches(job_id)
    assert {batch.redispatched for batch in batches} == {0}
    (stamped,) = {batch.enqueued_at for batch in batches}
    # Stamped when fan_out enqueued them, not left with the job's creation (a sweep would
    # take them for long enqueued). (Redis's clock and this host's: one machine here.)
    assert stamped > job.created_at
