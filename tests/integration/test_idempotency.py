"""Idempotency-Key: the same key and body make one job, however often and however concurrently
they arrive; the same key with another body is refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from kombu.exceptions import OperationalError

from bulksms import create_app, taskqueue
from bulksms.api import jobs as api_jobs
from bulksms.api.idempotency import digest_of
from bulksms.config import Settings
from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import JobStore, KeyAnswered, NewJob, Sending, keys
from bulksms.store import idempotency as records
from tests.helpers import API_KEY, SECOND_API_KEY
from tests.helpers.stack import Stack

BODY = {"recipients": us_numbers(2500), "message": "once"}


def post(client: FlaskClient, body: Any, key: str | None, api_key: str = API_KEY) -> Any:
    headers = {"X-API-Key": api_key, "Content-Type": "application/json"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/api/bulk-sms", data=json.dumps(body), headers=headers)


def jobs(rdb: redis.Redis) -> set[str]:
    return {k.split("{")[1].split("}")[0] for k in rdb.scan_iter("bulksms:{*}:job")}


def test_the_same_key_and_body_make_one_job(client: FlaskClient, rdb: redis.Redis) -> None:
    first = post(client, BODY, "order-42")
    again = post(client, BODY, "order-42")
    assert first.status_code == again.status_code == 202
    assert again.get_json() == first.get_json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(jobs(rdb)) == 1
    assert rdb.llen("bulksms") == 3  # three batches enqueued once
    ttl = rdb.ttl(next(iter(rdb.scan_iter("bulksms:idem:*"))))
    assert ttl >= 24 * 3600


def test_key_order_in_the_body_does_not_matter(client: FlaskClient, rdb: redis.Redis) -> None:
    first = post(client, {"message": "x", "recipients": ["+14155550100"]}, "k1").get_json()
    again = post(client, {"recipients": ["+14155550100"], "message": "x"}, "k1").get_json()
    assert first["job_id"] == again["job_id"]


def test_the_same_key_with_another_body_is_refused(client: FlaskClient, rdb: redis.Redis) -> None:
    assert post(client, BODY, "order-43").status_code == 202
    other = post(client, {**BODY, "message": "twice?"}, "order-43")
    assert other.status_code == 409
    assert other.get_json()["error"] == "idempotency_key_reused"
    assert len(jobs(rdb)) == 1


def test_a_refused_request_does_not_keep_the_key(client: FlaskClient, rdb: redis.Redis) -> None:
    bad = {"recipients": ["nope"], "message": "x"}
    assert post(client, bad, "order-44").status_code == 422
    assert post(client, BODY, "order-44").status_code == 202


def test_keys_belong_to_their_api_key(client: FlaskClient, rdb: redis.Redis) -> None:
    a = post(client, BODY, "shared").get_json()["job_id"]
    b = post(client, BODY, "shared", api_key=SECOND_API_KEY).get_json()["job_id"]
    assert a != b


@pytest.mark.parametrize("auth", ["X-API-Key", "Authorization"])
def test_a_body_nested_too_deeply_to_digest_is_400(
    settings: Settings, rdb: redis.Redis, auth: str
) -> None:
    """json.loads takes a body nested just short of the recursion limit, and the key's digest
    (json.dumps, a frame deeper) would not: every depth is a 4xx, never a 500. (The window is a
    few depths wide, just short of where parsing fails: every depth up to there is tried.)"""
    client = create_app(replace(settings, rate_limit_submit="100000/minute")).test_client()
    key = API_KEY if auth == "X-API-Key" else f"Bearer {API_KEY}"
    before = {k for k in rdb.keys("*") if "bulksms:rl" not in k}
    answers = []
    for depth in range(500, 1500):
        nested = "[" * depth + "]" * depth
        body = '{"recipients":["+14155550100"],"message":"hi","x":' + nested + "}"
        headers = {auth: key, "Content-Type": "application/json", "Idempotency-Key": "deep"}
        answer = client.post("/api/bulk-sms", data=body, headers=headers)
        assert answer.status_code == 400, (depth, answer.get_data(as_text=True))
        answers.append(answer.get_json()["error"])
        if answers[-3:] == ["malformed_json"] * 3:
            break  # (past the limit: parsing fails)
    assert answers[0] == "unknown_field"  # (from well short of the limit)
    assert {k for k in rdb.keys("*") if "bulksms:rl" not in k} == before


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "tab\there"])
def test_a_malformed_key_is_400(client: FlaskClient, rdb: redis.Redis, key: str) -> None:
    answer = post(client, BODY, key)
    assert answer.status_code == 400
    assert answer.get_json()["error"] == "invalid_idempotency_key"
    assert jobs(rdb) == set()


def test_concurrent_duplicates_make_one_job_and_one_send(stack: Stack) -> None:
    numbers = us_numbers(1500)
    body = {"recipients": numbers, "message": "concurrent"}

    def send(_: int) -> Any:
        import requests

        return requests.post(
            f"{stack.base_url}/api/bulk-sms",
            json=body,
            timeout=60,
            headers={"X-API-Key": API_KEY, "Idempotency-Key": "burst-1"},
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(8)))
    assert {a.status_code for a in answers} == {202}
    (job_id,) = {a.json()["job_id"] for a in answers}
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert stack.sent_numbers() == sorted(numbers)


class Once:
    """Makes the wrapped call fail the first time, as a Redis blip or a dying process would."""

    def __init__(self, call: Any, error: Exception) -> None:
        self.call, self.error, self.failed = call, error, False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.failed:
            self.failed = True
            raise self.error
        return self.call(*args, **kwargs)


def active(rdb: redis.Redis) -> set[str]:
    return set(rdb.zrange("bulksms:active", 0, -1))


def test_an_answer_that_was_not_remembered_leaves_nothing_to_send(
    client: FlaskClient, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remembering the answer fails: the job it belonged to is never sent, and the client's
    retry makes the one job that is."""
    remember = Once(records.remember, redis.ConnectionError("blip"))
    monkeypatch.setattr(records, "remember", remember)
    failed = post(client, BODY, "order-50")
    assert remember.failed and failed.status_code == 503
    again = post(client, BODY, "order-50")
    assert again.status_code == 202
    assert active(rdb) == {again.get_json()["job_id"]}  # the sweep sends this one only
    assert rdb.llen("bulksms") == 3  # and its three batches are enqueued once


def test_a_request_whose_answer_was_lost_is_answered_by_its_retry(
    client: FlaskClient, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job's round trip reaches Redis (job, answer, index, tasks) but the process loses
    Redis before the reply: the retry answers that job, not a second one, and enqueues
    nothing more."""
    send, lost = JobStore._send, []

    def lost_reply(self: JobStore, commands: Any, *args: Any) -> Any:
        answers = send(self, commands, *args)
        if not lost:
            lost.append(commands)
            raise redis.ConnectionError("gone")
        return answers

    monkeypatch.setattr(JobStore, "_send", lost_reply)
    failed = post(client, BODY, "order-51")
    assert failed.status_code == 503
    (job_id,) = jobs(rdb)
    assert active(rdb) == {job_id} and rdb.llen("bulksms") == 3
    again = post(client, BODY, "order-51")
    assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["job_id"] == job_id
    assert jobs(rdb) == {job_id} and rdb.llen("bulksms") == 3


def test_a_job_redis_refused_frees_its_key(
    client: FlaskClient, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis runs out of memory once the key is taken: the job's writes are refused and nothing
    of it is kept (503). The key is free again, so the client's retry makes the one job at once
    instead of being told for two minutes that the first request is still in progress."""
    take = records.take

    def then_full(*args: Any) -> bool:
        taken = take(*args)
        rdb.config_set("maxmemory", 1)  # (noeviction: every write refused from here)
        return taken

    monkeypatch.setattr(records, "take", then_full)
    try:
        failed = post(client, BODY, "order-53")
    finally:
        rdb.config_set("maxmemory", 0)
    monkeypatch.setattr(records, "take", take)
    assert failed.status_code == 503
    assert jobs(rdb) == set() and active(rdb) == set()  # (nothing kept)
    again = post(client, BODY, "order-53")
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert jobs(rdb) == {again.get_json()["job_id"]} and rdb.llen("bulksms") == 3


def test_a_request_that_outlived_its_hold_makes_one_job_with_the_one_that_took_it(
    rdb: redis.Redis,
) -> None:
    """Request A takes the key and outlives its hold (a big upload read on a loaded host); the
    client's retry B takes the key. The first of them to store its job answers the key; the
    other's job is not kept, and giving the key back leaves that answer. A request for another
    body that took the key meanwhile is not answered over either."""
    store = JobStore(rdb, 3600)
    scope, digest = "9" * 64, digest_of(BODY)

    def make(job_id: str, digest: str = digest) -> None:
        new_job = NewJob(job_id, Sending("hi"), ["+14155550100"], 1, 0, 0, 0, 1, "GSM-7", 1)
        answer = {"job_id": job_id}
        store.create(
            new_job,
            lambda pipe: records.remember(pipe, scope, digest, answer, 3600),
            [("bulksms", "task")],
            records.guard(scope, digest),
        )

    assert records.take(rdb, scope, digest, "a", 120)
    rdb.delete(keys.idempotency(scope))  # (as its expiry would)
    assert records.take(rdb, scope, digest, "b", 120)
    make("ja")  # (first: it answers the key)
    with pytest.raises(KeyAnswered):
        make("jb")
    records.free(rdb, scope, records.pending(digest, "b"))
    held = records.held(rdb, scope)
    assert held is not None and held.answer == {"job_id": "ja"}
    assert jobs(rdb) == {"ja"} and active(rdb) == {"ja"} and rdb.llen("bulksms") == 1
    rdb.delete(keys.idempotency(scope))
    assert records.take(rdb, scope, "another body", "c", 120)
    with pytest.raises(KeyAnswered):
        make("jd")
    assert jobs(rdb) == {"ja"}


def test_a_job_is_answered_under_its_key_whoever_holds_it_meanwhile(
    client: FlaskClient, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the API: a request whose hold expired while it worked (nobody took the key)
    stores its job and answers it; one whose key another request answered meanwhile keeps
    nothing and replays that answer; one whose key was taken for another body keeps nothing and
    says so."""
    first_tasks = api_jobs._first_tasks
    meanwhile: list[Callable[[], object]] = []

    def working(new_job: Any) -> Any:
        while meanwhile:
            meanwhile.pop()()
        return first_tasks(new_job)

    monkeypatch.setattr(api_jobs, "_first_tasks", working)
    meanwhile.append(lambda: [rdb.delete(k) for k in rdb.scan_iter("bulksms:idem:*")])
    expired = post(client, BODY, "order-60")
    assert expired.status_code == 202 and "Idempotent-Replayed" not in expired.headers
    job_id = expired.get_json()["job_id"]
    assert post(client, BODY, "order-60").get_json()["job_id"] == job_id

    other = post(client, {**BODY, "message": "other"}, "order-61").get_json()
    answered = f"done|{digest_of(BODY)}|{json.dumps(other)}"
    before = set(rdb.scan_iter("bulksms:idem:*"))
    meanwhile.append(
        lambda: [rdb.set(k, answered) for k in set(rdb.scan_iter("bulksms:idem:*")) - before]
    )
    replayed = post(client, BODY, "order-62")
    assert replayed.status_code == 202 and replayed.headers["Idempotent-Replayed"] == "true"
    assert replayed.get_json()["job_id"] == other["job_id"]
    assert jobs(rdb) == {job_id, other["job_id"]}  # (nothing of the third request's)

    before = set(rdb.scan_iter("bulksms:idem:*"))  # (the key taken meanwhile for another body)
    meanwhile.append(
        lambda: [rdb.set(k, "pending|x|y") for k in set(rdb.scan_iter("bulksms:idem:*")) - before]
    )
    reused = post(client, BODY, "order-63")
    assert (reused.status_code, reused.get_json()["error"]) == (409, "idempotency_key_reused")
    assert jobs(rdb) == {job_id, other["job_id"]}


def test_a_request_whose_round_trip_never_arrived_holds_its_key_until_the_claim_ends(
    client: FlaskClient, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis goes away as the job's round trip is sent: whether it arrived is unknown, so the
    key is kept (a retry meanwhile is told to wait) rather than freed for a second job; once
    the first request's claim ends, a retry makes the one job."""
    send = Once(JobStore._send, redis.ConnectionError("gone"))
    monkeypatch.setattr(JobStore, "_send", lambda self, *args: send(self, *args))
    failed = post(client, BODY, "order-52")
    assert send.failed and failed.status_code == 503
    assert jobs(rdb) == set()
    waiting = post(client, BODY, "order-52")
    assert (waiting.status_code, waiting.get_json()["error"]) == (409, "idempotency_in_progress")
    (claim,) = rdb.keys("bulksms:idem:*")
    rdb.delete(claim)  # as its expiry (`CLAIM_SECONDS`) would
    again = post(client, BODY, "order-52")
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    assert jobs(rdb) == {again.get_json()["job_id"]} and rdb.llen("bulksms") == 3


def test_a_stored_job_is_accepted_though_enqueueing_failed(
    settings: Settings, rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a broker of its own, the broker refuses the tasks after the job is stored: the
    sweep will send the job, so the answer says it was accepted (a 5xx would invite the client
    to make a second)."""

    def broker_down(*_: Any) -> None:
        raise OperationalError("broker unavailable")

    monkeypatch.setattr(taskqueue, "start", broker_down)
    own_broker = replace(settings, celery_broker_url=settings.redis_url[:-1] + "1")
    client = create_app(own_broker).test_client()
    answer = post(client, BODY, None)
    assert answer.status_code == 202
    assert active(rdb) == {answer.get_json()["job_id"]}
    assert rdb.llen("bulksms") == 0  # nothing enqueued: the sweep's recovery will
