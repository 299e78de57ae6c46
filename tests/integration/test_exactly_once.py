"""Exactly once, through crashes and a misbehaving Plivo: every recipient is sent once, counted
on the sandbox's side, and the job's counts end exact. Real processes, real kills."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import pytest
from flask import Flask

from bulksms import taskqueue
from bulksms.config import Settings
from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers.stack import (
    SANDBOX_UNLIMITED_LISTING,
    UNLIMITED_LISTING,
    Stack,
    held_sends,
    wait_until,
)


@pytest.mark.parametrize("stack_overrides", [UNLIMITED_LISTING])
@pytest.mark.parametrize("moment", ["before any send", "mid-send", "between batches"])
def test_a_worker_killed_at_any_moment_sends_every_batch_once(
    stack: Stack, moment: str, stack_overrides: dict[str, Any]
) -> None:
    stack.sandbox.faults.update({"latency_ms": 400, **SANDBOX_UNLIMITED_LISTING})
    numbers = us_numbers(6000)
    # Mid-send, the sandbox holds the answer: the kill comes while the request is there.
    with held_sends(stack.sandbox) if moment == "mid-send" else nullcontext():
        job_id = stack.submit({"recipients": numbers, "message": "crash"}).json()["job_id"]
        if moment == "mid-send":
            wait_until(lambda: stack.sandbox.sends, what="a send at the sandbox")
        elif moment == "between batches":
            wait_until(lambda: stack.status(job_id)["batches"]["submitted"] >= 2)
        stack.kill_workers()
    stack.start_worker()
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(numbers)
    stack.counts_match_the_sandbox(job_id)


def test_accepted_then_dropped_is_settled_from_reports_without_a_resend(stack: Stack) -> None:
    stack.sandbox.faults.update({"drop_next": 1})
    numbers = us_numbers(2500)
    job_id = stack.submit({"recipients": numbers, "message": "dropped"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sandbox.stats()["dropped_requests"] == 1
    assert stack.sent_numbers() == sorted(numbers)
    assert doc["batches"] == {"total": 3, "pending": 0, "submitted": 3, "failed": 0, "cancelled": 0}
    stack.counts_match_the_sandbox(job_id)


def test_a_gateway_error_after_plivo_took_the_call_is_settled_without_a_resend(
    stack: Stack,
) -> None:
    """A 502 (or 504, 500) says nothing of Plivo's backend: here it sent the messages. The call
    is an unknown outcome, settled from reports or Plivo's list, never retried blindly."""
    # No report in sight before the retry would go (none `queued`, `sent` a minute later).
    stack.sandbox.faults.update(
        {"accept_then_fail": [502], "no_queued": True, "report_delay_ms": 60_000}
    )
    numbers = us_numbers(2500)
    job_id = stack.submit({"recipients": numbers, "message": "502"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 3, seconds=120)
    assert [s["status"] for s in stack.sandbox.sends].count("accepted, answered 502") == 1
    assert len(stack.sandbox.sends) == 3
    assert stack.sent_numbers() == sorted(numbers)  # once each: Plivo's list said it had them
    assert doc["counts"]["pending"] == 0


def test_retry_after_is_honoured(stack: Stack) -> None:
    stack.sandbox.faults.update({"fail_next": [429], "retry_after": 2})
    job_id = stack.submit({"recipients": us_numbers(3), "message": "429"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    first, second = stack.sandbox.sends
    assert (first["status"], second["status"]) == (429, 202)
    assert second["at"] - first["at"] >= 2.0


def test_transient_errors_until_the_attempts_run_out_fail_the_batch_counted(
    stack: Stack,
) -> None:
    stack.sandbox.faults.update({"error_rate": 1.0, "error_status": 503})
    job_id = stack.submit({"recipients": us_numbers(4), "message": "no"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "failed")
    assert len(stack.sandbox.sends) == stack.settings.send_max_attempts
    assert doc["counts"]["rejected"] == 4 and doc["counts"]["pending"] == 0
    assert stack.sandbox.messages == []


def test_bad_credentials_stop_the_job_instead_of_burning_through_it(stack: Stack) -> None:
    stack.sandbox.auth_token = "rotated-by-someone-else"
    job_id = stack.submit({"recipients": us_numbers(3500), "message": "401"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "failed")
    # At most one 401 per worker process already sending; the other batches never went.
    assert len(stack.sandbox.sends) <= 2
    assert doc["counts"]["rejected"] == 3500
    assert doc["batches"]["failed"] == 4
    assert "credentials" in doc["halted"]


def test_an_account_out_of_credit_stops_the_job_instead_of_burning_through_it(
    stack: Stack,
) -> None:
    stack.sandbox.faults.update({"no_credit": True})
    job_id = stack.submit({"recipients": us_numbers(3500), "message": "402"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "failed")
    assert len(stack.sandbox.sends) <= 2  # one refusal per worker process already sending
    assert doc["counts"]["rejected"] == 3500
    assert doc["batches"]["failed"] == 4
    assert "no credit" in doc["halted"]
    assert stack.sandbox.messages == []


@pytest.mark.parametrize("stack_overrides", [{"report_wait_seconds": 2}])
def test_a_job_whose_reports_never_come_is_closed_after_the_wait(
    stack: Stack, stack_overrides: dict[str, int]
) -> None:
    stack.sandbox.faults.update({"reports": False})
    job_id = stack.submit({"recipients": us_numbers(5), "message": "silence"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert doc["closed"] == "report_wait_expired"
    assert doc["counts"]["queued"] == 5  # what never got final, shown as such


def test_reports_shuffled_repeated_and_before_the_answer_count_once(stack: Stack) -> None:
    # Latency after accepting makes every report race the worker's own record of the answer.
    stack.sandbox.faults.update({"shuffle_reports": True, "repeat_rate": 1.0, "report_delay_ms": 1})
    numbers = us_numbers(3000)
    job_id = stack.submit({"recipients": numbers, "message": "race"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(numbers)
    stack.counts_match_the_sandbox(job_id)


DEFAULT_TIMING = {
    name: getattr(Settings(), name)
    for name in (
        "plivo_timeout",
        "sweep_interval",
        "dispatch_stale_seconds",
        "unknown_outcome_grace",
        "celery_visibility_timeout",
    )
}


@pytest.mark.parametrize("stack_overrides", [DEFAULT_TIMING])
def test_with_the_default_settings_a_killed_worker_costs_a_couple_of_minutes(
    stack: Stack, stack_overrides: dict[str, float]
) -> None:
    numbers = us_numbers(4000)
    # Killed with both children's calls at Plivo (held there unanswered), so none is between
    # its record and its request: such a call costs its sender's list more (README), and a
    # kill that lands there by chance is not what this measures.
    with held_sends(stack.sandbox):
        job_id = stack.submit({"recipients": numbers, "message": "defaults"}).json()["job_id"]
        wait_until(lambda: len(stack.sandbox.sends) >= 2, what="both children's calls at Plivo")
        stack.kill_workers()
    stack.start_worker()  # returns once the new worker answers a ping
    running_again = time.monotonic()
    stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=300)
    # The README's figure: "within about two minutes of a worker running again". The timers
    # of the defaults make it, not the machine's speed (in-flight 32 s, sweep 15 s, stale 30 s).
    assert time.monotonic() - running_again < 150
    assert stack.sent_numbers() == sorted(numbers)
    stack.counts_match_the_sandbox(job_id)


def test_queue_depth_counts_waiting_tasks_and_an_empty_queue_is_zero(app: Flask) -> None:
    celery = app.extensions["celery"]
    assert taskqueue.queue_depth(celery) == 0
    taskqueue.enqueue(celery, "0" * 32, [0, 1, 2], urgent=False)
    taskqueue.enqueue(celery, "1" * 32, [0], urgent=True)
    assert taskqueue.queue_depth(celery) == 4
