"""Redis stopped mid-job and started again: the API says 503 (JSON, Retry-After, no hang), the
webhook says 503 so Plivo retries, readiness fails, workers wait; with the append-only file,
nothing is lost and nothing is sent twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from bulksms import signature
from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.own_redis import OwnRedis
from tests.helpers.stack import (
    SANDBOX_UNLIMITED_LISTING,
    UNLIMITED_LISTING,
    Stack,
    wait_until,
)


@pytest.fixture
def stack_overrides(own_redis: OwnRedis) -> dict[str, Any]:
    # (the listing limit lifted: a stop may land between a call's record and its request)
    return {"redis_url": own_redis.url, **UNLIMITED_LISTING}


def test_redis_stopped_mid_job_and_started_again(stack: Stack, own_redis: OwnRedis) -> None:
    stack.sandbox.retry_delays = (1.0, 2.0, 4.0, 8.0)  # Plivo's retries, on a shorter clock
    stack.sandbox.faults.update({"latency_ms": 300, **SANDBOX_UNLIMITED_LISTING})
    numbers = us_numbers(5000)
    job_id = stack.submit({"recipients": numbers, "message": "outage"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["batches"]["submitted"] >= 1)

    own_redis.stop()
    answer = requests.get(  # an answer, not a hang (which would raise ReadTimeout)
        f"{stack.base_url}/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert answer.status_code == 503
    assert answer.json()["error"] == "service_unavailable" and answer.headers["Retry-After"]
    submit = stack.submit({"recipients": us_numbers(3), "message": "during"})
    assert submit.status_code == 503 and submit.json()["error"] == "service_unavailable"
    # (Each process shares its last check for a second.)
    wait_until(lambda: requests.get(f"{stack.base_url}/readyz", timeout=30).status_code == 503)
    url = f"{stack.base_url}/api/webhooks/plivo/delivery-report?job={job_id}&batch=0"
    params = {"Status": "delivered", "To": numbers[0].lstrip("+"), "MessageUUID": "u-x"}
    key = stack.settings.webhook_key or ""
    headers = {signature.V3: signature.sign_v3(url, params, "77", key), signature.V3_NONCE: "77"}
    assert requests.post(url, data=params, headers=headers, timeout=30).status_code == 503

    time.sleep(2)  # the outage's length: the worker and the sandbox meet Redis down meanwhile
    own_redis.start()
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(numbers)
    stack.counts_match_the_sandbox(job_id)
    assert stack.sandbox.stats()["reports_given_up"] == 0


@pytest.mark.parametrize("holding", ["a countdown retry", "a running task"])
def test_a_worker_holding_a_message_rides_out_a_redis_restart(
    stack: Stack, own_redis: OwnRedis, holding: str
) -> None:
    """With late acks the worker nearly always holds a message: a retry waiting out Plivo's
    Retry-After, or the task calling Plivo. Redis restarts meanwhile; the worker must not
    exit, and every recipient is sent once."""
    if holding == "a countdown retry":
        stack.sandbox.faults.update(
            {"fail_next": [429], "retry_after": 6, **SANDBOX_UNLIMITED_LISTING}
        )
    else:
        # The call outlasts the outage.
        stack.sandbox.faults.update({"latency_ms": 4000, **SANDBOX_UNLIMITED_LISTING})
    numbers = us_numbers(3)
    job_id = stack.submit({"recipients": numbers, "message": "held"}).json()["job_id"]
    wait_until(lambda: len(stack.sandbox.sends) == 1, what="the first send")
    own_redis.stop()
    time.sleep(2)
    own_redis.start()
    stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=120)
    workers = [p for name, p in stack.processes.items() if name.startswith("worker")]
    assert workers and all(p.poll() is None for p in workers), stack.tail()
    assert "Unrecoverable error" not in stack.tail()
    assert stack.sent_numbers() == sorted(numbers)


def test_redis_down_between_plivo_s_answer_and_its_record_resends_nothing(
    stack: Stack, own_redis: OwnRedis
) -> None:
    """Plivo takes the call; Redis goes down before the worker can record it, for longer than
    a call may last plus the grace (as a Redis reloading a big append-only file may). Whoever
    gets there first once it is back, the worker recording what it holds or the sweep asking
    Plivo's list, the call is recorded as made: never resent on silence."""
    stack.sandbox.faults.update(
        {
            "latency_ms": 2000,
            "no_queued": True,
            "report_delay_ms": 60_000,
            **SANDBOX_UNLIMITED_LISTING,
        }
    )
    numbers = us_numbers(5)
    job_id = stack.submit({"recipients": numbers, "message": "outage"}).json()["job_id"]
    wait_until(lambda: len(stack.sandbox.sends) == 1, what="the call, still unanswered")
    own_redis.stop()
    wait_until(lambda: len(stack.sandbox.messages) == 5, what="Plivo taking the call")
    down = stack.settings.in_flight_seconds + stack.settings.unknown_outcome_grace + 5
    time.sleep(down)
    own_redis.start()
    doc = stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 1, seconds=120)
    assert len(stack.sandbox.sends) == 1
    assert stack.sent_numbers() == sorted(numbers)
    assert doc["counts"]["queued"] == 5
