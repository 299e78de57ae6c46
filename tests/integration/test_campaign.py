"""Campaign control through the public API against the real stack: cancel, pause and resume
without a resend or a skip (counted on the sandbox's side), per-recipient reports that agree
with the sandbox's record, the job listing, and erasing a finished job's numbers."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import (
    HOLDING,
    WAIT_SECONDS,
    Stack,
    held_sends,
    wait_until,
)

AUTH = {"X-API-Key": API_KEY}
# Far enough ahead that the submit and the first looks at the job come well before it, even on
# a busy machine; what the tests assert is order (nothing before, everything after), not timing.
SCHEDULE_AHEAD = 20


def act(stack: Stack, job_id: str, action: str, key: str | None = None) -> requests.Response:
    headers = AUTH if key is None else {**AUTH, "Idempotency-Key": key}
    return requests.post(
        f"{stack.base_url}/api/bulk-sms/{job_id}/{action}", headers=headers, timeout=30
    )


@pytest.mark.parametrize("stack_overrides", [HOLDING])
def test_cancel_mid_send_never_sends_another_batch(stack: Stack) -> None:
    numbers = us_numbers(8000)
    with held_sends(stack.sandbox) as release:
        job_id = stack.submit({"recipients": numbers, "message": "stop"}).json()["job_id"]
        wait_until(lambda: len(stack.sandbox.sends) >= 2, what="the worker's two sends in flight")
        answer = act(stack, job_id, "cancel")
        assert answer.status_code == 200 and answer.json()["state"] == "cancelled"
        in_flight = len(stack.sandbox.sends)  # every slot of the worker is held: no more start
        assert act(stack, job_id, "cancel").status_code == 200  # twice is harmless
        release.set()
        # `pending` counts the batches in flight too
        doc = stack.wait_for(job_id, lambda d: d["batches"]["pending"] == 0)
    assert len(stack.sandbox.sends) == in_flight  # only the batches already in flight
    assert doc["batches"]["submitted"] == in_flight
    sent = stack.sent_numbers()
    assert len(sent) == len(set(sent)) == 1000 * doc["batches"]["submitted"]
    assert doc["state"] == "cancelled"
    assert doc["counts"]["cancelled"] == 1000 * doc["batches"]["cancelled"] > 0
    assert doc["counts"]["pending"] == 0
    assert sum(doc["counts"].values()) == 8000


@pytest.mark.parametrize("stack_overrides", [HOLDING])
def test_pause_then_resume_sends_every_batch_once(stack: Stack) -> None:
    numbers = us_numbers(6000)
    with held_sends(stack.sandbox) as release:
        job_id = stack.submit({"recipients": numbers, "message": "hold on"}).json()["job_id"]
        wait_until(lambda: len(stack.sandbox.sends) >= 2, what="the worker's two sends in flight")
        assert act(stack, job_id, "pause").json()["state"] in ("paused", "sending")
        in_flight = len(stack.sandbox.sends)
        release.set()
        stack.wait_for(
            job_id, lambda d: d["state"] == "paused" and d["batches"]["submitted"] == in_flight
        )
    # The worker takes every task still queued and, the job being paused, sends none of them.
    wait_until(lambda: stack.queue_depth() == 0, what="the queued tasks taken while paused")
    assert len(stack.sandbox.sends) == in_flight
    doc = stack.status(job_id)
    assert doc["state"] == "paused" and doc["batches"]["submitted"] == in_flight
    assert act(stack, job_id, "resume").status_code == 200
    assert act(stack, job_id, "resume").status_code == 409  # not paused any more
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(numbers)


def test_per_recipient_report_and_csv_agree_with_the_sandbox(stack: Stack) -> None:
    numbers = us_numbers(2300)
    stack.sandbox.faults.update({"invalid_numbers": numbers[:3]})
    job_id = stack.submit({"recipients": numbers, "message": "who got it"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    truth = {m["dst"]: (m["status"], m["message_uuid"]) for m in stack.sandbox.messages}

    rows, cursor, pages = [], None, 0
    while True:
        params = {"limit": 700, **({"cursor": cursor} if cursor else {})}
        page = requests.get(
            f"{stack.base_url}/api/bulk-sms/{job_id}/messages",
            params=params,
            headers=AUTH,
            timeout=30,
        ).json()
        rows += page["messages"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert sorted(r["number"] for r in rows) == sorted(numbers)
    for r in rows:
        if r["number"] in truth:
            assert (r["status"], r["message_uuid"]) == truth[r["number"]]
        else:
            assert (r["status"], r["error_code"]) == ("rejected", "invalid_number")

    failed = requests.get(
        f"{stack.base_url}/api/bulk-sms/{job_id}/messages",
        params={"status": "failed", "limit": 1000},
        headers=AUTH,
        timeout=30,
    ).json()["messages"]
    assert {r["number"] for r in failed} == {n for n, (s, _) in truth.items() if s == "failed"}
    assert all(r["error"] for r in failed)

    exported = requests.get(
        f"{stack.base_url}/api/bulk-sms/{job_id}/messages.csv", headers=AUTH, timeout=30
    )
    assert exported.headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(exported.text)))
    assert {r["number"]: r["status"] for r in table} == {r["number"]: r["status"] for r in rows}


@pytest.mark.parametrize("stack_overrides", [HOLDING])
def test_listing_erasing_and_their_refusals(stack: Stack) -> None:
    first = stack.submit({"recipients": us_numbers(3), "message": "one"}).json()["job_id"]
    stack.wait_for(first, lambda d: d["state"] == "completed")
    with held_sends(stack.sandbox):  # the second job stays busy until the block ends
        second = stack.submit({"recipients": us_numbers(3, 10), "message": "two"}).json()["job_id"]
        listed = requests.get(f"{stack.base_url}/api/bulk-sms", headers=AUTH, timeout=30).json()
        assert [j["job_id"] for j in listed["jobs"]] == [second, first]
        done = requests.get(
            f"{stack.base_url}/api/bulk-sms",
            params={"state": "completed"},
            headers=AUTH,
            timeout=30,
        ).json()
        assert [j["job_id"] for j in done["jobs"]] == [first]
        paged = requests.get(
            f"{stack.base_url}/api/bulk-sms", params={"limit": 1}, headers=AUTH, timeout=30
        ).json()
        assert [j["job_id"] for j in paged["jobs"]] == [second] and paged["next_cursor"]

        jobs = f"{stack.base_url}/api/bulk-sms"
        busy = requests.delete(f"{jobs}/{second}", headers=AUTH, timeout=30)
        assert busy.status_code == 409
        erased = requests.delete(f"{jobs}/{first}", headers=AUTH, timeout=30)
        assert erased.status_code == 200
        assert (
            erased.json()["counts"]["delivered"]
            + erased.json()["counts"]["undelivered"]
            + erased.json()["counts"]["failed"]
            == 3
        )
        gone = requests.get(f"{jobs}/{first}/messages", headers=AUTH, timeout=30)
        assert gone.status_code == 410


def test_a_scheduled_job_sends_nothing_before_its_time_and_everything_after(stack: Stack) -> None:
    numbers = us_numbers(1500)
    when = datetime.now(UTC) + timedelta(seconds=SCHEDULE_AHEAD)
    answer = stack.submit(
        {"recipients": numbers, "message": "later", "send_at": when.isoformat()}
    ).json()
    assert answer["state"] == "scheduled"
    job_id = answer["job_id"]
    deadline = time.monotonic() + SCHEDULE_AHEAD + WAIT_SECONDS
    while True:  # the sandbox's record read first: the job was scheduled then if it still is
        sends = len(stack.sandbox.sends)
        doc = stack.status(job_id)
        if doc["state"] != "scheduled":
            break
        assert sends == 0
        assert time.monotonic() < deadline, f"never released: {doc}"
        time.sleep(0.2)
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert min(s["at"] for s in stack.sandbox.sends) >= when.timestamp()
    assert stack.sent_numbers() == sorted(numbers)


def test_a_scheduled_job_can_be_cancelled_before_its_time(stack: Stack) -> None:
    when = datetime.now(UTC) + timedelta(seconds=SCHEDULE_AHEAD)
    job_id = stack.submit(
        {"recipients": us_numbers(5), "message": "never", "send_at": when.isoformat()}
    ).json()["job_id"]
    assert act(stack, job_id, "cancel").json()["state"] == "cancelled"
    doc = stack.wait_for(job_id, lambda d: d["batches"]["pending"] == 0)
    assert doc["counts"]["cancelled"] == 5
    # A witness due a second later: once it is sent, the cancelled job's time has passed too.
    witness = stack.submit(
        {
            "recipients": us_numbers(2, 100),
            "message": "witness",
            "send_at": (when + timedelta(seconds=1)).isoformat(),
        }
    ).json()["job_id"]
    stack.wait_for(witness, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(us_numbers(2, 100))
    assert stack.status(job_id)["counts"]["cancelled"] == 5


def test_retry_makes_a_job_of_exactly_the_retryable_failures(stack: Stack) -> None:
    stack.sandbox.faults.update({"undelivered_rate": 0.3, "failed_rate": 0.2})
    numbers = us_numbers(1500)
    job_id = stack.submit({"recipients": numbers, "message": "first"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    expected = sorted(
        m["dst"]
        for m in stack.sandbox.messages
        if m["status"] in ("failed", "undelivered") and m["error_code"] in ("20", "80")
    )
    assert expected
    stack.sandbox.faults.update({"undelivered_rate": 0.0, "failed_rate": 0.0})
    before = len(stack.sandbox.messages)
    answer = act(stack, job_id, "retry", key="retry-1")
    assert answer.status_code == 202
    retry = answer.json()
    assert retry["retry_of"] == job_id
    assert retry["recipients"]["accepted"] == len(expected)
    # The same POST again (a double click, a client's retry): the same retry job, not a second.
    again = act(stack, job_id, "retry", key="retry-1")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["job_id"] == retry["job_id"]
    stack.wait_for(retry["job_id"], lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    assert sorted(m["dst"] for m in stack.sandbox.messages[before:]) == expected
    assert stack.status(retry["job_id"])["retry_of"] == job_id


@pytest.mark.parametrize("stack_overrides", [HOLDING])
def test_a_small_alert_does_not_wait_behind_a_campaign(stack: Stack) -> None:
    with held_sends(stack.sandbox) as release:  # the campaign's first two sends, in flight
        campaign = stack.submit({"recipients": us_numbers(12000), "message": "campaign"}).json()
        wait_until(lambda: len(stack.sandbox.sends) >= 2, what="the campaign's first sends")
        alert_numbers = us_numbers(10, 20000)
        alert = stack.submit({"recipients": alert_numbers, "message": "ALERT"}).json()
        assert alert["recipients"]["accepted"] == 10
        release.set()
        stack.wait_for(alert["job_id"], lambda d: d["batches"]["submitted"] == 1)
        stack.wait_for(campaign["job_id"], lambda d: d["batches"]["pending"] == 0)
    # Two worker processes: the alert went out within a few batches, not after the campaign's
    # other ten (through one queue, none would follow it). Read in Plivo's order of acceptance,
    # not from a status poll, whose lag lets more batches finish.
    sends = list(dict.fromkeys((m["text"], m["api_id"]) for m in stack.sandbox.messages))
    alert_at = next(i for i, (text, _) in enumerate(sends) if text == "ALERT")
    assert sum(1 for text, _ in sends[alert_at + 1 :] if text == "campaign") >= 4
