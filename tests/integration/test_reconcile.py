"""Asking Plivo when reports do not come: calls whose answer was lost are settled by Plivo's
message list (never by silence alone), and messages left without a receipt end as `sent`,
billed, when the job's report window ends. Real stacks; the sandbox as a Plivo that posts no
`queued` report and holds its `sent` reports."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
import requests

from bulksms.devstack.numbers_gen import us_numbers
from bulksms.worker.reconcile import CANDIDATES, _spread
from tests.helpers import API_KEY
from tests.helpers.stack import Stack, wait_until

AUTH = {"X-API-Key": API_KEY}

# No `queued` report, and the `sent` report a minute after the message left: long past the
# grace and the time a call may be in flight (6 s here).
SILENT_PLIVO = {"no_queued": True, "report_delay_ms": 60_000}


def test_an_answer_lost_with_no_report_in_sight_is_settled_by_listing(stack: Stack) -> None:
    stack.sandbox.faults.update({**SILENT_PLIVO, "drop_next": 1})
    numbers = us_numbers(40)
    job_id = stack.submit({"recipients": numbers, "message": "lost answer"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 1, seconds=120)
    assert stack.sandbox.stats()["dropped_requests"] == 1
    assert stack.sandbox.stats()["list_requests"] >= 1
    assert stack.sent_numbers() == sorted(numbers)  # once each: Plivo's list said it had them
    assert len(stack.sandbox.sends) == 1
    assert doc["counts"]["queued"] == 40 and doc["counts"]["pending"] == 0


def test_a_call_that_never_reached_plivo_is_resent_once(stack: Stack) -> None:
    stack.sandbox.faults.update({**SILENT_PLIVO, "lose_next": 1})
    numbers = us_numbers(40)
    job_id = stack.submit({"recipients": numbers, "message": "lost call"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 1, seconds=120)
    assert stack.sandbox.stats()["lost_requests"] == 1
    assert [s["status"] for s in stack.sandbox.sends] == ["lost", 202]
    assert stack.sent_numbers() == sorted(numbers)
    # Nothing was sent until Plivo's list had been asked, past the grace.
    lost, resent = stack.sandbox.sends
    assert resent["at"] - lost["at"] >= stack.settings.unknown_outcome_grace


@pytest.mark.parametrize("stack_overrides", [{"report_wait_seconds": 8}])
def test_numbers_without_a_receipt_are_billed_at_sent_and_the_job_completes(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    stack.sandbox.faults.update({"no_receipt": ["+1201555100"], "report_delay_ms": 5})
    numbers = us_numbers(30)
    job_id = stack.submit({"recipients": numbers, "message": "no receipt"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=120)
    outcomes = Counter(m["status"] for m in stack.sandbox.messages)
    without = sum(1 for m in stack.sandbox.messages if m["dst"].startswith("+1201555100"))
    assert without and outcomes["sent"] == without
    assert {k: v for k, v in doc["counts"].items() if v} == dict(outcomes)
    assert doc["closed"] == "report_wait_expired"  # the messages stay `sent`: no receipt
    # Plivo's `sent` report carries what it charged: every message is billed once.
    assert doc["billed"]["units"] == 30
    assert doc["billed"]["amount"] == pytest.approx(30 * 0.005)


@pytest.mark.parametrize("stack_overrides", [{"reconcile_after_seconds": 3}])
def test_messages_with_no_report_at_all_are_looked_up_and_recorded(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    stack.sandbox.faults.update({"reports": False, "report_delay_ms": 5})
    numbers = us_numbers(25)
    job_id = stack.submit({"recipients": numbers, "message": "silence"}).json()["job_id"]
    # No report will ever come: the job completes from what Plivo's Message API says.
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=120)
    assert doc.get("closed") is None  # not closed by the report window: every message final
    assert stack.sandbox.stats()["lookups"] >= 25
    assert stack.sandbox.stats()["reports_posted"] == 0
    stack.counts_match_the_sandbox(job_id)
    assert doc["billed"]["units"] == 25
    rows = requests.get(
        f"{stack.base_url}/api/bulk-sms/{job_id}/messages", headers=AUTH, timeout=30
    ).json()["messages"]
    by_number = {m["dst"]: m["message_uuid"] for m in stack.sandbox.messages}
    assert {r["number"]: r["message_uuid"] for r in rows} == by_number


def test_a_long_message_reported_part_by_part_counts_once_and_bills_every_part(
    stack: Stack,
) -> None:
    stack.sandbox.faults.update({"part_reports": True, "shuffle_reports": True, "repeat_rate": 0.3})
    numbers = us_numbers(20)
    text = "part " * 40  # 200 GSM-7 characters: two parts
    job_id = stack.submit({"recipients": numbers, "message": text}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=120)
    stack.counts_match_the_sandbox(job_id)
    assert {m["segments"] for m in stack.sandbox.messages} == {2}
    assert stack.status(job_id)["billed"]["units"] == 40  # every part once, whatever repeated
    assert doc["counts"]["pending"] == 0


@pytest.mark.parametrize("stack_overrides", [{"report_wait_seconds": 40}])
def test_a_plivo_as_it_really_is_sends_each_recipient_once_with_exact_counts_and_billing(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    """Reports signed with V2 only, no `queued` report, `sent` reports held past the grace, an
    answer dropped after Plivo took the call, and numbers that never get a receipt."""
    stack.sandbox.faults.update(
        {
            "signatures": "v2",
            "no_queued": True,
            "report_delay_ms": 8_000,
            "drop_next": 1,
            "no_receipt": ["+1201555100", "+1201555150"],
        }
    )
    numbers = us_numbers(1500)
    job_id = stack.submit({"recipients": numbers, "message": "as it is"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=240)
    assert stack.sandbox.stats()["dropped_requests"] == 1
    assert stack.sent_numbers() == sorted(numbers)
    # (a post that failed on the way, as one may on a loaded machine, is posted again)
    assert stack.sandbox.stats()["reports_given_up"] == 0
    stack.counts_match_the_sandbox(job_id)
    assert 0 < doc["counts"]["sent"] < 1500  # the numbers without a receipt, shown `sent`
    assert doc["billed"]["units"] == 1500
    assert doc["billed"]["amount"] == pytest.approx(1500 * 0.005)


def test_a_cancel_while_a_call_s_outcome_is_unknown_settles_it_first(stack: Stack) -> None:
    """Plivo took the call; its answer was lost; the job is cancelled meanwhile. The call is
    settled (Plivo's list has it) and counted as sent, not cancelled; nothing is sent again."""
    stack.sandbox.faults.update({**SILENT_PLIVO, "drop_next": 1})
    numbers = us_numbers(40)
    job_id = stack.submit({"recipients": numbers, "message": "then cancel"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: len(stack.sandbox.sends) == 1, seconds=60)
    cancel = requests.post(
        f"{stack.base_url}/api/bulk-sms/{job_id}/cancel", headers=AUTH, timeout=30
    )
    assert cancel.status_code == 200 and cancel.json()["state"] == "cancelled"
    doc = stack.wait_for(job_id, lambda d: d["batches"]["pending"] == 0, seconds=120)
    assert doc["state"] == "cancelled"
    assert doc["batches"]["submitted"] == 1 and doc["batches"]["cancelled"] == 0
    assert doc["counts"]["queued"] == 40 and doc["counts"]["cancelled"] == 0
    assert stack.sent_numbers() == sorted(numbers) and len(stack.sandbox.sends) == 1


def test_a_cancel_while_a_lost_call_is_unsettled_cancels_it_without_a_send(stack: Stack) -> None:
    """The call never reached Plivo and the job is cancelled meanwhile: once Plivo's list says
    so, its recipients are cancelled, and the call is not made again."""
    stack.sandbox.faults.update({**SILENT_PLIVO, "lose_next": 1})
    job_id = stack.submit({"recipients": us_numbers(40), "message": "lost"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: len(stack.sandbox.sends) == 1, seconds=60)
    requests.post(f"{stack.base_url}/api/bulk-sms/{job_id}/cancel", headers=AUTH, timeout=30)
    doc = stack.wait_for(job_id, lambda d: d["batches"]["pending"] == 0, seconds=120)
    assert doc["batches"]["cancelled"] == 1 and doc["counts"]["cancelled"] == 40
    assert stack.sandbox.messages == [] and len(stack.sandbox.sends) == 1


@pytest.mark.parametrize("stack_overrides", [{"reconcile_after_seconds": 3}])
def test_a_number_plivo_refused_in_a_call_whose_answer_was_lost_ends_rejected(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    """The answer, with Plivo's invalid_number list, was lost; the call is settled from the
    reports of the numbers Plivo took. The number it refused gets no report: Plivo's list,
    asked for it once the others are named, shows nothing, so it ends `rejected`, and the job
    completes (it used to wait, `queued`, for the whole report window)."""
    refused = "+12015551002"
    stack.sandbox.faults.update(
        {"drop_next": 1, "invalid_numbers": [refused], "report_delay_ms": 5}
    )
    numbers = us_numbers(5)
    assert refused in numbers
    job_id = stack.submit({"recipients": numbers, "message": "lost list"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed", seconds=120)
    assert doc.get("closed") is None
    assert stack.sent_numbers() == sorted(n for n in numbers if n != refused)
    assert doc["counts"]["rejected"] == 1 and doc["counts"]["pending"] == 0
    (row,) = requests.get(
        f"{stack.base_url}/api/bulk-sms/{job_id}/messages?status=rejected",
        headers=AUTH,
        timeout=30,
    ).json()["messages"]
    assert (row["number"], row["error_code"]) == (refused, "invalid_number")


@pytest.mark.parametrize("stack_overrides", [{"reconcile_after_seconds": 3}])
def test_a_lost_call_whose_asked_numbers_plivo_refused_is_not_made_again(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    """Plivo took the call, refused exactly the numbers the sweep asks of its list first
    (first, last, middle: invalid_number), and the answer was lost, with no report in sight.
    Nothing is listed for those three, but the sender's list shows the others: the call is
    settled as taken, not made again (its two good numbers were texted twice)."""
    numbers = sorted(us_numbers(5))
    refused = _spread(numbers, CANDIDATES)
    assert len(refused) == 3
    stack.sandbox.faults.update({**SILENT_PLIVO, "drop_next": 1, "invalid_numbers": refused})
    job_id = stack.submit({"recipients": numbers, "message": "refused"}).json()["job_id"]
    doc = stack.wait_for(job_id, lambda d: d["counts"]["rejected"] == 3, seconds=120)
    assert doc["batches"]["submitted"] == 1
    assert len(stack.sandbox.sends) == 1
    assert stack.sent_numbers() == sorted(set(numbers) - set(refused))  # once each


def test_a_lost_call_never_takes_another_lost_call_s_message_for_its_own(stack: Stack) -> None:
    """Two jobs share a number X, and both calls lose their answer: A's reached Plivo, B's
    never did. A is found at a number of its own; its message to X stays nobody's as far as
    UUIDs go until its report comes. B's sender's list shows that message: B waits for the
    report (it was marked sent, never sent), then is made again. Everyone is texted once
    a job."""
    pool = us_numbers(9)
    x = pool[3]
    a_numbers = sorted([pool[0], pool[1], x, pool[6], pool[7]])
    b_numbers = sorted([pool[2], x, pool[4], pool[5], pool[8]])
    assert x not in _spread(b_numbers, CANDIDATES)  # (only B's scan sees X)
    box = stack.sandbox
    box.faults.update({"no_queued": True, "report_delay_ms": 15_000, "drop_next": 1})
    a = stack.submit({"recipients": a_numbers, "message": "job A"}).json()["job_id"]
    # (A send is listed as it arrives, before its fault is chosen: wait for A's to be dropped.)
    wait_until(lambda: box.stats()["dropped_requests"] == 1, seconds=60)
    box.faults.update({"lose_next": 1})
    b = stack.submit({"recipients": b_numbers, "message": "job B"}).json()["job_id"]
    for job_id in (a, b):
        stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 1, seconds=180)
    assert [s["status"] for s in box.sends] == ["dropped", "lost", 202]
    texted = Counter(m["dst"] for m in box.messages)
    assert texted == Counter(a_numbers) + Counter(b_numbers)
