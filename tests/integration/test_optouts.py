"""Opt-outs: the API, STOP and START replies through the signed inbound webhook, Plivo's
'blocked by STOP' reports, and submits that leave opted-out numbers out."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
import requests
from flask.testing import FlaskClient

from bulksms import signature
from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import keys
from bulksms.store import optouts as suppression
from tests.helpers import API_KEY
from tests.helpers.stack import Stack

AUTH = {"X-API-Key": API_KEY}


def test_the_opt_out_api(client: FlaskClient) -> None:
    assert client.get("/api/opt-outs/+14155550100", headers=AUTH).status_code == 404
    added = client.put("/api/opt-outs/+1 (415) 555-0100", headers=AUTH)
    assert added.status_code == 200 and added.get_json() == {
        "number": "+14155550100",
        "opted_out": True,
    }
    assert client.get("/api/opt-outs/+14155550100", headers=AUTH).get_json()["opted_out"]
    assert client.get("/api/opt-outs", headers=AUTH).get_json() == {
        "opt_outs": ["+14155550100"],
        "next_cursor": None,
    }
    assert client.put("/api/opt-outs/nonsense", headers=AUTH).status_code == 422
    assert client.put("/api/opt-outs/+14155550100").status_code == 401
    assert client.delete("/api/opt-outs/+14155550100", headers=AUTH).status_code == 200
    assert client.delete("/api/opt-outs/+14155550100", headers=AUTH).status_code == 404


def inbound(
    stack: Stack,
    sender: str,
    text: str,
    intent: str = "",
    nonce: str = "",
    v2: bool = False,
    message_uuid: str = "",
    sent: datetime | None = None,
) -> requests.Response:
    """A reply as Plivo posts it: its own MessageUUID, sent now (unless told otherwise)."""
    url = f"{stack.base_url}/api/webhooks/plivo/inbound"
    params = {
        "From": sender.lstrip("+"),
        "To": "14155550199",
        "Text": text,
        "MessageUUID": message_uuid or str(uuid.uuid4()),
        "MessageTime": f"{sent or datetime.now(UTC):%Y-%m-%d %H:%M:%S.%f}",
    }
    if intent:
        params["MessageIntent"] = intent
    key = stack.settings.webhook_key or ""
    nonce = nonce or secrets.token_hex(8)
    if v2:
        headers = {signature.V2: signature.sign_v2(url, nonce, key), signature.V2_NONCE: nonce}
    else:
        headers = {
            signature.V3: signature.sign_v3(url, params, nonce, key),
            signature.V3_NONCE: nonce,
        }
    return requests.post(url, data=params, headers=headers, timeout=30)


def test_a_stop_reply_keeps_the_number_out_of_the_next_job(stack: Stack) -> None:
    numbers = us_numbers(20)
    assert inbound(stack, numbers[0], "  stop \n").status_code == 204
    assert inbound(stack, numbers[1], "Unsubscribe").status_code == 204
    assert inbound(stack, numbers[2], "stop please").status_code == 204  # not a keyword
    forged = requests.post(
        f"{stack.base_url}/api/webhooks/plivo/inbound",
        data={"From": numbers[3], "Text": "STOP"},
        timeout=30,
    )
    assert forged.status_code == 403
    answer = stack.submit({"recipients": numbers, "message": "after stop"}).json()
    assert answer["recipients"]["suppressed"] == 2
    assert answer["recipients"]["accepted"] == 18
    stack.wait_for(answer["job_id"], lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(numbers[2:])

    assert inbound(stack, numbers[0], "START").status_code == 204
    again = stack.submit({"recipients": numbers[:2], "message": "back"}).json()
    assert again["recipients"]["suppressed"] == 1 and again["recipients"]["accepted"] == 1


def test_every_opt_out_word_and_plivo_s_message_intent_are_honoured(stack: Stack) -> None:
    def opted_out(number: str) -> bool:
        found = requests.get(f"{stack.base_url}/api/opt-outs/{number}", headers=AUTH, timeout=30)
        return found.status_code == 200

    numbers = us_numbers(6)
    replies = ["unsub", "Stop  All", "STOPALL!", "quit."]
    for number, text in zip(numbers, replies, strict=False):
        assert inbound(stack, number, text).status_code == 204
    # Plivo's verdict wins over the words: an opt-out in other words, an opt-in likewise.
    assert inbound(stack, numbers[4], "please no more", intent="optout").status_code == 204
    assert inbound(stack, numbers[5], "STOP").status_code == 204
    assert inbound(stack, numbers[5], "stop", intent="optin").status_code == 204
    assert [opted_out(n) for n in numbers] == [True, True, True, True, True, False]
    assert inbound(stack, numbers[0], "whatever", intent="OptIn").status_code == 204
    assert not opted_out(numbers[0])


def test_a_signed_inbound_message_counts_once_even_replayed_unchanged(
    stack: Stack, rdb: redis.Redis
) -> None:
    def opted_out(number: str) -> bool:
        found = requests.get(f"{stack.base_url}/api/opt-outs/{number}", headers=AUTH, timeout=30)
        return found.status_code == 200

    first, second = us_numbers(2)
    for v2 in (False, True):
        number = second if v2 else first
        assert inbound(stack, number, "START", nonce=f"start-{v2}", v2=v2).status_code == 204
        assert inbound(stack, number, "STOP", v2=v2).status_code == 204
        # The old START again, signed as it was: answered 2xx, and the number stays out.
        assert inbound(stack, number, "START", nonce=f"start-{v2}", v2=v2).status_code == 204
        assert opted_out(number)
        # The nonce with other content, validly signed: changes nothing either.
        assert inbound(stack, number, "UNSTOP", nonce=f"start-{v2}", v2=v2).status_code == 204
        assert opted_out(number)
    # An inbound message's nonce is remembered for good: a STOP lasts.
    assert rdb.ttl(keys.nonce("start-True")) == -1


def test_replies_apply_in_the_order_they_were_sent_each_once(stack: Stack) -> None:
    """Plivo posts replies out of order and again (with new nonces, validly signed): the last
    one the person sent wins, and a message applies once."""

    def opted_out(number: str) -> bool:
        found = requests.get(f"{stack.base_url}/api/opt-outs/{number}", headers=AUTH, timeout=30)
        return found.status_code == 200

    late, again, same_second = us_numbers(3, start=500)
    t0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
    # START sent after STOP, but posted first: the STOP that arrives later is older news.
    assert inbound(stack, late, "START", sent=t0 + timedelta(seconds=5)).status_code == 204
    assert inbound(stack, late, "STOP", sent=t0).status_code == 204
    assert not opted_out(late)
    # A STOP, then START; the STOP posted again (a new nonce): applied once, so the number
    # stays in, whether the STOP is older than the START or sent in the same second.
    for number, start_at in ((again, t0 + timedelta(seconds=1)), (same_second, t0)):
        stop_id = str(uuid.uuid4())
        assert inbound(stack, number, "STOP", sent=t0, message_uuid=stop_id).status_code == 204
        assert opted_out(number)
        assert inbound(stack, number, "START", sent=start_at).status_code == 204
        assert not opted_out(number)
        assert inbound(stack, number, "STOP", sent=t0, message_uuid=stop_id).status_code == 204
        assert not opted_out(number)
    # A STOP sent before the START still loses; one sent after it wins.
    assert inbound(stack, late, "STOP", sent=t0 + timedelta(seconds=3)).status_code == 204
    assert not opted_out(late)
    assert inbound(stack, late, "STOP", sent=t0 + timedelta(seconds=6)).status_code == 204
    assert opted_out(late)


def test_a_start_dated_ahead_of_our_clock_does_not_hide_a_later_stop(stack: Stack) -> None:
    """A START whose MessageTime is ahead of ours counts as sent when it arrived: taken at its
    word (or at a few minutes' slack), a real STOP sent in those minutes was "older" and
    ignored, after a 204 Plivo would not retry (found by a hostile review)."""
    number, drifted = us_numbers(2, start=900)
    assert (
        inbound(stack, number, "START", sent=datetime(9999, 12, 31, tzinfo=UTC)).status_code == 204
    )
    assert inbound(stack, number, "STOP").status_code == 204
    found = requests.get(f"{stack.base_url}/api/opt-outs/{number}", headers=AUTH, timeout=30)
    assert found.status_code == 200, found.text
    # A STOP dated a minute ahead (a clock that drifts) still outranks a START sent after it
    # arrived but dated before its time: the error falls on the side of not texting.
    now = datetime.now(UTC)
    assert inbound(stack, drifted, "STOP", sent=now + timedelta(seconds=60)).status_code == 204
    assert inbound(stack, drifted, "START", sent=now + timedelta(seconds=30)).status_code == 204
    found = requests.get(f"{stack.base_url}/api/opt-outs/{drifted}", headers=AUTH, timeout=30)
    assert found.status_code == 200, found.text


def blocked_report(
    stack: Stack, job_id: str, to: str, nonce: str, v2: bool = False
) -> Callable[[], int]:
    """A 'blocked by STOP' report as Plivo posts it, signed once (V3, or V2 alone): each call
    posts that very request, its status returned (a second call is a replay, byte for byte)."""
    url = f"{stack.base_url}/api/webhooks/plivo/delivery-report?job={job_id}&batch=0"
    params = {"MessageUUID": "u", "Status": "failed", "To": to.lstrip("+"), "ErrorCode": "200"}
    key = stack.settings.webhook_key or ""
    if v2:
        headers = {signature.V2: signature.sign_v2(url, nonce, key), signature.V2_NONCE: nonce}
    else:
        headers = {
            signature.V3: signature.sign_v3(url, params, nonce, key),
            signature.V3_NONCE: nonce,
        }
    return lambda: requests.post(url, data=params, headers=headers, timeout=30).status_code


def opted_out(stack: Stack, number: str) -> bool:
    answer = requests.get(f"{stack.base_url}/api/opt-outs/{number}", headers=AUTH, timeout=30)
    assert answer.status_code in (200, 404), answer.text
    return answer.status_code == 200


def test_a_report_blocked_by_stop_opts_out_a_recipient_of_its_job_only(stack: Stack) -> None:
    """V2 signs neither body nor query: a captured request posted again once its nonce is
    forgotten must not opt out any number it names, only one its job texted."""
    stack.sandbox.faults.update({"reports": False})  # the blocked report is the only one
    number, stranger = us_numbers(2)
    job_id = stack.submit({"recipients": [number], "message": "hi"}).json()["job_id"]
    assert blocked_report(stack, "f" * 32, stranger, "5")() == 204  # a job not kept
    assert blocked_report(stack, job_id, stranger, "6")() == 204  # a number it never texted
    assert not opted_out(stack, stranger)
    assert blocked_report(stack, job_id, number, "7")() == 204
    assert opted_out(stack, number)
    refused = stack.submit({"recipients": [number], "message": "no"})
    assert refused.status_code == 422
    assert refused.json()["details"]["recipients"]["suppressed"] == 1


def test_a_blocked_report_posted_again_changes_nothing(stack: Stack) -> None:
    """A captured 'blocked by STOP' report posted again as it was, V3 or V2 (whose nonce is
    bound to that same request): the first opted the recipient out; after the person's START,
    or an operator's opt-in, the same request is answered 204 and opts nobody out again. It
    moves no recipient: the opt-out is taken with the move, once (issue 19)."""
    stack.sandbox.faults.update({"reports": False})  # the blocked reports are the only ones
    by_start, by_operator, by_v2 = us_numbers(3)
    job_id = stack.submit({"recipients": [by_start, by_operator, by_v2], "message": "hi"}).json()[
        "job_id"
    ]
    stack.wait_for(job_id, lambda d: d["batches"]["submitted"] == 1)
    reports = {
        by_start: blocked_report(stack, job_id, by_start, secrets.token_hex(8)),
        by_operator: blocked_report(stack, job_id, by_operator, secrets.token_hex(8)),
        by_v2: blocked_report(stack, job_id, by_v2, secrets.token_hex(8), v2=True),
    }
    for number, post in reports.items():
        assert post() == 204
        assert opted_out(stack, number), number
    assert inbound(stack, by_start, "START").status_code == 204
    assert inbound(stack, by_v2, "START").status_code == 204
    readmitted = requests.delete(
        f"{stack.base_url}/api/opt-outs/{by_operator}", headers=AUTH, timeout=30
    )
    assert readmitted.status_code == 200
    for number, post in reports.items():
        assert post() == 204
        assert not opted_out(stack, number), number
    assert stack.status(job_id)["counts"]["failed"] == 3


def test_a_blocked_report_of_a_call_made_before_the_person_s_start_opts_nobody_out(
    stack: Stack,
) -> None:
    """Plivo may post a report late (it retries for a while): a call was blocked by an old STOP,
    the person then sent START, and only then did the report arrive. Their later word wins, as
    between their own replies; a report of a call made after their START opts them out."""
    stack.sandbox.faults.update({"reports": False})
    number = us_numbers(1)[0]
    first = stack.submit({"recipients": [number], "message": "one"}).json()["job_id"]
    stack.wait_for(first, lambda d: d["batches"]["submitted"] == 1)
    # The START comes after the call's second (a record's time is in whole seconds: a reply in
    # the call's own second is not taken for a later word).
    time.sleep(1.1)
    assert inbound(stack, number, "START").status_code == 204
    assert blocked_report(stack, first, number, secrets.token_hex(8))() == 204
    assert not opted_out(stack, number)
    # A call made after the START: the carrier's block is news since.
    second = stack.submit({"recipients": [number], "message": "two"}).json()["job_id"]
    stack.wait_for(second, lambda d: d["batches"]["submitted"] == 1)
    assert blocked_report(stack, second, number, secrets.token_hex(8))() == 204
    assert opted_out(stack, number)


def test_suppression_finds_the_same_numbers_whichever_side_is_smaller(rdb: redis.Redis) -> None:
    rdb.sadd(keys.OPT_OUTS, "14155550100", "14155550101", "14155550102")
    few = ["+14155550101", "+14155550199"]  # fewer candidates than opt-outs: looked up
    many = [f"+1415555{n:04d}" for n in range(90, 110)]  # more: the opt-out set read whole
    assert suppression.suppressed(rdb, few) == {"+14155550101"}
    assert suppression.suppressed(rdb, many) == {"+14155550100", "+14155550101", "+14155550102"}
    assert suppression.suppressed(rdb, []) == set()


def test_a_number_that_opts_out_after_submit_is_not_texted(stack: Stack, rdb: redis.Redis) -> None:
    """A scheduled job (days ahead) meets a STOP before its time: the number is left
    out of the call and ends `suppressed`; the others are sent."""
    numbers = us_numbers(5)
    when = datetime.now(UTC) + timedelta(days=10)
    answer = stack.submit(
        {"recipients": numbers, "message": "later", "send_at": when.isoformat()}
    ).json()
    assert "job_id" in answer, answer
    job_id = answer["job_id"]
    assert answer["recipients"]["suppressed"] == 0
    for number in numbers[1:3]:
        put = requests.put(f"{stack.base_url}/api/opt-outs/{number}", headers=AUTH, timeout=30)
        assert put.status_code in (200, 201)
    rdb.zadd(keys.SCHEDULED, {job_id: 0})  # its time has come (the sweep releases it)
    doc = stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted([numbers[0], *numbers[3:]])
    assert doc["counts"]["suppressed"] == 2
    listed = requests.get(
        f"{stack.base_url}/api/bulk-sms/{job_id}/messages?status=suppressed",
        headers=AUTH,
        timeout=30,
    ).json()["messages"]
    assert sorted(m["number"] for m in listed) == sorted(numbers[1:3])


def test_replies_without_a_time_keep_the_last_hundred_uuids(rdb: redis.Redis) -> None:
    """Replies with no MessageTime share one time, so their UUIDs would pile up in the number's
    record without end: the last `REPLIES_KEPT` are kept, and a repeat of one of them is still
    recognised."""
    number = "+14155550177"
    kept = suppression.REPLIES_KEPT
    uuids = [str(uuid.uuid4()) for _ in range(kept + 20)]
    for n, message in enumerate(uuids):
        assert suppression.apply_reply(rdb, number, n % 2 == 0, None, message) == "applied"
    record = rdb.hget(keys.OPT_OUT_REPLIES, number.lstrip("+"))
    assert record == "|" + ",".join(uuids[-kept:])
    assert suppression.apply_reply(rdb, number, True, None, uuids[-kept]) == "repeat"
    assert suppression.apply_reply(rdb, number, True, None, uuids[-1]) == "repeat"
    assert not suppression.is_opted_out(rdb, number)  # the last applied was a START
    # A record that grew long before the bound is cut to it by the next reply.
    older = [f"old-{n}" for n in range(500)]
    rdb.hset(keys.OPT_OUT_REPLIES, "14155550178", "|" + ",".join(older))
    assert suppression.apply_reply(rdb, "+14155550178", True, None, "new") == "applied"
    kept_now = rdb.hget(keys.OPT_OUT_REPLIES, "14155550178")
    assert kept_now == "|" + ",".join([*older[-(kept - 1) :], "new"])
    # A timed reply starts the record afresh at its time.
    assert suppression.apply_reply(rdb, number, True, 1_790_000_000.0, "timed") == "applied"
    assert rdb.hget(keys.OPT_OUT_REPLIES, number.lstrip("+")) == "1790000000.0|timed"
