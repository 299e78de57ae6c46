"""Sending at the pace Plivo sends: the sandbox queues what it accepts at its own MPS (and fails
with 420 what waits past its expiry), the service paces to the same MPS. Counts, order and
upper bounds that hold on a slow machine; the rates themselves are measured in bench/."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
import requests

from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import SANDBOX_UNLIMITED_LISTING, UNLIMITED_LISTING, Stack, wait_until

PACE = 200.0  # messages a second, on both sides
QUEUE = 5.0  # PLIVO_QUEUE_SECONDS
PACED_SETTINGS = {"plivo_mps": PACE, "plivo_queue_seconds": QUEUE}
MARGIN = 1.0  # seconds: what a wait at the sandbox may pass the bound by (clock reads, rounding)
EXPIRY = 12  # seconds: longer than the bound, so a paced message never expires


@pytest.fixture
def stack_overrides() -> dict[str, Any]:
    return dict(PACED_SETTINGS)


@pytest.fixture
def paced(stack: Stack) -> Stack:
    stack.sandbox.faults.update({"mps": PACE})
    return stack


def messages_of(stack: Stack, job_id: str) -> list[dict[str, Any]]:
    return [m for m in list(stack.sandbox.messages) if f"job={job_id}" in m["url"]]


def waits(messages: list[dict[str, Any]]) -> list[float]:
    return [m["left_at"] - m["accepted_at"] for m in messages if m["left_at"] is not None]


def most_handed_over_in_any_window(messages: list[dict[str, Any]], seconds: float) -> int:
    times = sorted(m["accepted_at"] for m in messages)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] > seconds:
            start += 1
        most = max(most, end - start + 1)
    return most


def counts_match(stack: Stack, job_id: str) -> None:
    """The job's counts are the outcomes the sandbox reported for it, and what it never handed
    over is counted cancelled."""
    stack.wait_until_quiet()
    counts = {k: v for k, v in stack.status(job_id)["counts"].items() if v and k != "cancelled"}
    assert counts == dict(Counter(m["status"] for m in messages_of(stack, job_id)))


def control(stack: Stack, job_id: str, action: str) -> requests.Response:
    return requests.post(
        f"{stack.base_url}/api/bulk-sms/{job_id}/{action}",
        headers={"X-API-Key": API_KEY},
        timeout=30,
    )


def test_plivo_s_queue_stays_within_the_bound_and_nothing_expires(paced: Stack) -> None:
    numbers = us_numbers(2000)
    answer = paced.submit({"recipients": numbers, "message": "paced", "expiry_seconds": EXPIRY})
    assert answer.json()["estimated_duration_seconds"] == pytest.approx(2000 / PACE)
    job_id = answer.json()["job_id"]
    # Halfway through, the estimate: when the last message should leave Plivo's queue.
    doc = paced.wait_for(job_id, lambda d: d["counts"]["pending"] <= 1000)
    estimate = doc.get("progress")
    paced.wait_for(job_id, lambda d: d["state"] == "completed")
    sent = messages_of(paced, job_id)
    assert sorted(m["dst"] for m in sent) == sorted(numbers)  # each once
    assert not [m for m in sent if m["error_code"] == "420"]
    assert max(waits(sent)) <= QUEUE + MARGIN
    # Handed over: never more than the pace, plus the bound's burst, in any window.
    window = QUEUE + 5
    assert most_handed_over_in_any_window(sent, window) <= PACE * (window + QUEUE) + 1
    paced.counts_match_the_sandbox(job_id)
    if estimate is not None:  # (None when the job had already been handed over)
        eta = datetime.fromisoformat(estimate["estimated_completion_at"]).timestamp()
        last_handed = max(m["accepted_at"] for m in sent)
        last_left = max(m["left_at"] for m in sent)
        assert last_handed - 5 <= eta <= last_left + 5, (eta, last_handed, last_left)


def test_pacing_set_higher_than_plivo_sends_ends_in_420s_that_retry_resends(
    paced: Stack,
) -> None:
    paced.sandbox.faults.update({"mps": PACE / 5})  # the account really sends a fifth of that
    numbers = us_numbers(800)
    job_id = paced.submit(
        {"recipients": numbers, "message": "too fast", "expiry_seconds": 5}
    ).json()["job_id"]
    doc = paced.wait_for(job_id, lambda d: d["state"] == "completed")
    expired = [m["dst"] for m in messages_of(paced, job_id) if m["error_code"] == "420"]
    assert expired, "the sandbox must be able to expire what waits too long"
    assert doc["counts"]["failed"] >= len(expired)
    paced.counts_match_the_sandbox(job_id)
    failed_rows = requests.get(
        f"{paced.base_url}/api/bulk-sms/{job_id}/messages",
        params={"status": "failed", "limit": "1000"},
        headers={"X-API-Key": API_KEY},
        timeout=30,
    ).json()["messages"]
    assert Counter(r["error_code"] for r in failed_rows)["420"] == len(expired)
    again = control(paced, job_id, "retry")
    assert again.status_code == 202, again.text
    assert again.json()["recipients"]["accepted"] >= len(expired)  # 420s, and 20s and 80s


def test_workers_share_one_pace_and_jobs_sent_together_both_progress(paced: Stack) -> None:
    # Sent together: both jobs wait in the queue before any worker runs. (Submitted to a
    # running worker, the first could be all handed over before a busy machine had the second.)
    paced.kill_workers()
    first, second = us_numbers(4000)[:2000], us_numbers(4000)[2000:]
    jobs = [
        paced.submit({"recipients": numbers, "message": "shared"}).json()["job_id"]
        for numbers in (first, second)
    ]
    for _ in range(2):  # two workers of two processes each
        paced.start_worker()
    for job_id in jobs:
        paced.wait_for(job_id, lambda d: d["state"] == "completed")
    a, b = (messages_of(paced, job_id) for job_id in jobs)
    assert sorted(m["dst"] for m in a + b) == sorted(first + second)
    every = a + b
    assert max(waits(every)) <= QUEUE + MARGIN
    window = QUEUE + 5
    assert most_handed_over_in_any_window(every, window) <= PACE * (window + QUEUE) + 1
    # Neither waited for the other: by the time one was all handed over, the other had a
    # good part of its messages handed over too. (Four calls each: the first job's first two
    # fill Plivo's queue, then they take turns; the other job has had at least one by then
    # unless it lost the race for the room twice running, which the tick after the others
    # makes rare.)
    one_done = min(max(m["accepted_at"] for m in a), max(m["accepted_at"] for m in b))
    for messages in (a, b):
        assert sum(m["accepted_at"] <= one_done for m in messages) >= len(messages) / 4


def test_an_urgent_job_overtakes_a_paced_campaign(paced: Stack) -> None:
    campaign = paced.submit({"recipients": us_numbers(3000), "message": "campaign"}).json()
    wait_until(lambda: messages_of(paced, campaign["job_id"]), what="the campaign under way")
    time.sleep(2)  # well into it: Plivo's queue is full to the bound
    submitted_at = time.time()
    alert = paced.submit(
        {"recipients": ["+12025550187"], "message": "alert", "priority": "high"}
    ).json()
    wait_until(lambda: messages_of(paced, alert["job_id"]), seconds=60, what="the alert sent")
    (message,) = messages_of(paced, alert["job_id"])
    assert message["accepted_at"] - submitted_at <= QUEUE + 5
    remaining = paced.status(campaign["job_id"])["counts"]["pending"]
    assert remaining > 0, "the campaign was over before the alert: nothing was shown"


ALERT_PACE = 10.0  # messages a second: urgent calls may leave 2 × QUEUE of it, 100, at Plivo


@pytest.mark.parametrize(
    "stack_overrides",
    [
        {
            "plivo_mps": ALERT_PACE,
            "plivo_queue_seconds": QUEUE,
            "pace_wake_interval": 5.0,
            "rate_limit_submit": "100000/minute",
        }
    ],
)
def test_a_burst_of_alerts_beyond_plivo_s_queue_goes_at_the_pace_not_one_a_tick(
    stack: Stack,
) -> None:
    stack.sandbox.faults.update({"mps": ALERT_PACE})
    numbers = us_numbers(int(ALERT_PACE * QUEUE * 2) + 100)
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda n: stack.submit({"recipients": [n], "message": "alert"}), numbers)
        )
    assert [a.status_code for a in answers] == [202] * len(numbers)
    # Most of the last 100 wait in bulksms for room. Woken one a waker's tick (5 s here), they
    # would take over 5 minutes; woken by the calls that leave room, 15-45 s (each time Plivo's
    # queue is full, they wait for it to be down to half, then for a tick).
    wait_until(
        lambda: len(stack.sandbox.messages) >= len(numbers), seconds=180, what="every alert sent"
    )
    assert stack.sent_numbers() == sorted(numbers)
    handed = sorted(m["accepted_at"] for m in stack.sandbox.messages)
    assert handed[-1] - handed[0] >= 100 / ALERT_PACE / 2  # (they waited: paced, not all at once)


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_no_call_is_made_for_a_job_after_its_cancel_or_pause(paced: Stack, action: str) -> None:
    numbers = us_numbers(3000)
    job_id = paced.submit({"recipients": numbers, "message": action}).json()["job_id"]
    wait_until(lambda: len(messages_of(paced, job_id)) >= 1000, what="two calls made")
    answer = control(paced, job_id, action)
    assert answer.status_code == 200, answer.text
    answered_at = time.time()
    time.sleep(QUEUE + 2)  # a paced batch would have had its next turn by now
    after = {m["api_id"] for m in messages_of(paced, job_id) if m["accepted_at"] > answered_at}
    assert len(after) <= 1  # a call already in flight may land; no other
    handed = len(messages_of(paced, job_id))
    assert handed < len(numbers)
    if action == "cancel":
        doc = paced.wait_for(
            job_id,
            lambda d: (
                d["state"] == "cancelled"
                and not any(d["counts"][s] for s in ("pending", "queued", "sent"))
            ),
        )
        assert doc["counts"]["cancelled"] == len(numbers) - handed
    else:
        assert control(paced, job_id, "resume").status_code == 200
        paced.wait_for(job_id, lambda d: d["state"] == "completed")
        assert sorted(m["dst"] for m in messages_of(paced, job_id)) == sorted(numbers)
    counts_match(paced, job_id)


@pytest.mark.parametrize("stack_overrides", [{**PACED_SETTINGS, **UNLIMITED_LISTING}])
def test_a_worker_killed_mid_paced_batch_sends_every_recipient_once(
    paced: Stack, stack_overrides: dict[str, Any]
) -> None:
    paced.sandbox.faults.update(SANDBOX_UNLIMITED_LISTING)
    numbers = us_numbers(2000)
    job_id = paced.submit({"recipients": numbers, "message": "killed"}).json()["job_id"]
    wait_until(lambda: len(messages_of(paced, job_id)) >= 500, what="paced calls under way")
    paced.kill_workers()
    paced.start_worker()
    paced.wait_for(job_id, lambda d: d["state"] == "completed")
    assert sorted(m["dst"] for m in messages_of(paced, job_id)) == sorted(numbers)
    paced.counts_match_the_sandbox(job_id)
