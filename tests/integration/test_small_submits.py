"""Alerts through the bulk API (issue 18): the small-submit fast path answers as Flask does, the
task messages pushed with a job's own writes are the ones Celery publishes, and the urgent lane
has a bound (`URGENT_BACKLOG_SECONDS`). On a real Redis, through the Flask test client."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from bulksms import create_app, taskqueue
from bulksms.api import idempotency, jobs, submit_fastpath
from bulksms.config import Settings
from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import KeyAnswered, keys, optouts
from tests.helpers import API_KEY
from tests.helpers.own_redis import OwnRedis

FAST = {"X-API-Key": API_KEY}  # taken by the fast path
FLASK = {"Authorization": f"Bearer {API_KEY}"}  # the same key, which the fast path leaves
IDS = ("job_id", "status_url")
TOMORROW = (datetime.now(UTC) + timedelta(days=1)).isoformat(timespec="seconds")


def post(client: FlaskClient, body: Any, headers: dict[str, str], raw: bytes | None = None) -> Any:
    return client.post(
        "/api/bulk-sms",
        data=json.dumps(body) if raw is None else raw,
        headers={"Content-Type": "application/json", **headers},
    )


def comparable(answer: Any) -> tuple[int, dict[str, Any], list[str]]:
    """Status, JSON without the job's own ids, and the header names (values of ids vary)."""
    body = {k: v for k, v in answer.get_json().items() if k not in IDS}
    return answer.status_code, body, sorted(answer.headers.keys())


BODIES: list[tuple[str, Any, bytes | None]] = [
    ("one recipient", {"recipients": ["+14155550100"], "message": "alert"}, None),
    (
        "a few, one invalid",
        {"recipients": ["+14155550101", "12", "+1415555010"], "message": "a"},
        None,
    ),
    ("high priority", {"recipients": ["+14155550102"], "message": "a", "priority": "high"}, None),
    ("unicode", {"recipients": ["+14155550103"], "message": "Déjà vu ✓"}, None),
    (
        "scheduled",
        {"recipients": ["+14155550104"], "message": "a", "send_at": TOMORROW},
        None,
    ),
    ("malformed", None, b'{"recipients": ['),
    ("not an object", None, b"[1, 2]"),
    ("no valid recipient", {"recipients": ["12"], "message": "a"}, None),
    ("empty message", {"recipients": ["+14155550105"], "message": ""}, None),
    ("unknown field", {"recipients": ["+14155550106"], "message": "a", "colour": "red"}, None),
    ("wrong type", {"recipients": "+14155550107", "message": "a"}, None),
    ("bad priority", {"recipients": ["+14155550108"], "message": "a", "priority": "now"}, None),
    ("opted out", {"recipients": ["+14155550198"], "message": "a"}, None),
    ("bad template", {"recipients": ["+14155550109"], "message": "Hi {{name"}, None),
    # Checks an opted-out recipient must not sway: it is set aside before them.
    (
        "opted out, spend within the limit without it",
        {"recipients": ["+14155550198", "+14155550100"], "message": "a", "max_segments": 1},
        None,
    ),
    (
        "opted out, without its field",
        {
            "recipients": [{"to": "+14155550198"}, {"to": "+14155550100", "fields": {"name": "A"}}],
            "message": "Hi {{name}}",
        },
        None,
    ),
    (
        "only opted out, without its field",
        {"recipients": [{"to": "+14155550198"}], "message": "Hi {{name}}"},
        None,
    ),
]


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The requests the fast path answered (their paths)."""
    seen: list[str] = []
    answer = submit_fastpath.SmallSubmits._answer

    def counted(self: Any, environ: Any, *args: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return answer(self, environ, *args)

    monkeypatch.setattr(submit_fastpath.SmallSubmits, "_answer", counted)
    return seen


@pytest.mark.parametrize(("name", "body", "raw"), BODIES, ids=[b[0] for b in BODIES])
def test_the_fast_path_answers_exactly_as_flask_does(
    client: FlaskClient,
    rdb: redis.Redis,
    taken: list[str],
    name: str,
    body: Any,
    raw: bytes | None,
) -> None:
    optouts.opt_out(rdb, "+14155550198")
    fast = post(client, body, FAST, raw)
    assert taken == ["/api/bulk-sms"]
    slow = post(client, body, FLASK, raw)
    assert taken == ["/api/bulk-sms"]  # (Flask answered this one)
    assert comparable(fast) == comparable(slow), name
    if fast.status_code == 202:  # two jobs, each with its own task, the same way
        assert fast.headers["Location"] == fast.get_json()["status_url"]
        queued = rdb.lrange(taskqueue.URGENT_QUEUE, 0, -1)
        assert rdb.hget(keys.job(fast.get_json()["job_id"]), "urgent") == "1"
        assert len(queued) == (0 if body.get("send_at") else 2)


def test_the_fast_path_takes_only_small_json_submits_with_an_api_key(
    client: FlaskClient, rdb: redis.Redis, taken: list[str]
) -> None:
    """What it leaves goes to Flask whole: a body over its limit is still a job."""
    big = {"recipients": us_numbers(1200), "message": "campaign"}
    assert len(json.dumps(big)) > submit_fastpath.MAX_BODY
    answer = post(client, big, FAST)
    assert answer.status_code == 202, answer.get_json()
    assert answer.get_json()["batches"] == 2
    form = client.post(
        "/api/bulk-sms",
        data={"recipients": "phone\n+14155550100\n", "message": "a"},
        headers=FAST,
        content_type="multipart/form-data",
    )
    assert form.status_code == 202, form.get_json()
    assert taken == []
    assert post(client, {"recipients": ["+14155550100"], "message": "a"}, {}).status_code == 401
    wrong = post(client, {"recipients": ["+14155550100"], "message": "a"}, {"X-API-Key": "nope"})
    assert (wrong.status_code, wrong.get_json()["error"]) == (401, "unauthorized")


@pytest.mark.parametrize("limits", ["2/minute", "100/hour;2/minute"])
@pytest.mark.parametrize("first", ["fast", "flask"])
def test_both_paths_count_the_same_submit_limit(
    settings: Settings, limits: str, first: str
) -> None:
    client = create_app(replace(settings, rate_limit_submit=limits)).test_client()
    order = [FAST, FAST, FLASK] if first == "fast" else [FLASK, FLASK, FAST]
    body = {"recipients": ["+14155550100"], "message": "a"}
    answers = [post(client, body, headers) for headers in order]
    assert [a.status_code for a in answers] == [202, 202, 429]
    refused = answers[-1]
    assert refused.get_json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert "X-RateLimit-Limit" not in answers[0].headers  # (a second round trip a request)
    assert "Retry-After" not in answers[0].headers


@pytest.mark.parametrize("limits", ["100/hour;2/minute", "2/hour;2/minute"])
def test_both_paths_count_limits_in_flask_limiters_order(
    settings: Settings, rdb: redis.Redis, limits: str
) -> None:
    """Shortest window first, stopping at the first breached: a request refused by the minute's
    limit is not counted against the hour's, and the 429 names the minute's."""
    client = create_app(replace(settings, rate_limit_submit=limits)).test_client()
    body = {"recipients": ["+14155550100"], "message": "a"}
    seen = []
    for headers in (FAST, FLASK):
        rdb.flushdb()
        answers = [post(client, body, headers) for _ in range(5)]
        counted = sorted(rdb.llen(key) for key in rdb.scan_iter("LIMITS:*"))
        seen.append(([a.status_code for a in answers], counted, answers[-1].get_json()))
    assert seen[0] == seen[1]
    assert seen[0][0] == [202, 202, 429, 429, 429] and seen[0][1] == [2, 2]
    assert "minute" in seen[0][2]["message"]


def test_an_idempotency_key_through_the_fast_path_makes_one_job(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    body = {"recipients": ["+14155550100"], "message": "alert"}
    headers = {**FAST, "Idempotency-Key": "alert-7"}
    first, again = post(client, body, headers), post(client, body, headers)
    assert first.status_code == again.status_code == 202
    assert first.get_json() == again.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert rdb.llen(taskqueue.URGENT_QUEUE) == 1
    other = post(client, {**body, "message": "other"}, headers)
    assert (other.status_code, other.get_json()["error"]) == (409, "idempotency_key_reused")


def test_a_job_is_stored_with_its_task_the_message_celery_would_publish(
    app: Flask, client: FlaskClient, rdb: redis.Redis
) -> None:
    """The message pushed with the job's own writes equals `send_task`'s, but for its ids and
    what reads the same left out (`taskqueue.LEFT_OUT`: there, with `send_task`'s values)."""
    answer = post(client, {"recipients": ["+14155550100"], "message": "alert"}, FAST)
    ours = json.loads(rdb.lpop(taskqueue.URGENT_QUEUE) or "")
    celery = app.extensions["celery"]
    taskqueue.enqueue(celery, answer.get_json()["job_id"], [0], True)
    theirs = json.loads(rdb.lpop(taskqueue.URGENT_QUEUE) or "")
    left_out = taskqueue.LEFT_OUT
    for part in ("headers", "properties"):
        assert {name: theirs[part].pop(name) for name in left_out[part]} == left_out[part]
    assert theirs["properties"].pop("reply_to")  # (results' only: bulksms keeps none)
    assert celery.conf.task_ignore_result and not celery.conf.result_backend
    args, kwargs, embed = json.loads(base64.b64decode(theirs.pop("body")))
    assert embed == left_out["embed"]
    assert json.loads(base64.b64decode(ours.pop("body"))) == [args, kwargs, {}]
    assert args == [answer.get_json()["job_id"], 0]
    for message in (ours, theirs):
        assert message["properties"].pop("correlation_id") == message["headers"]["id"]
        for name in ("id", "root_id", "origin", taskqueue.PUSHED):
            message["headers"].pop(name)
        message["properties"].pop("delivery_tag")
    assert ours == theirs
    # Nothing else is published for a job: no `task-sent` event (Flower reads the worker's).
    assert celery.conf.task_send_sent_event is False


@pytest.fixture
def slow_account(settings: Settings) -> Flask:
    """An account that sends a segment every 100 s, and 250 s of urgent backlog allowed."""
    return create_app(replace(settings, plivo_mps=0.01, urgent_backlog_seconds=250.0))


def test_urgent_submits_beyond_the_backlog_bound_get_503_with_retry_after(
    slow_account: Flask, rdb: redis.Redis
) -> None:
    client = slow_account.test_client()
    estimates = []
    for number in ("+14155550100", "+14155550101", "+14155550102"):
        answer = post(client, {"recipients": [number], "message": "alert"}, FAST)
        assert answer.status_code == 202, answer.get_json()
        estimates.append(answer.get_json()["estimated_duration_seconds"])
    # Each waits behind the ones before it (100 s of the pace apiece), and says so.
    assert [round(e, -1) for e in estimates] == [100, 200, 300]
    refused = post(client, {"recipients": ["+14155550103"], "message": "alert"}, FLASK)
    fast_refused = post(client, {"recipients": ["+14155550103"], "message": "alert"}, FAST)
    for answer in (refused, fast_refused):
        assert answer.status_code == 503
        assert answer.get_json()["error"] == "urgent_backlog"
        assert 40 <= int(answer.headers["Retry-After"]) <= 51  # 300 s ahead, 250 allowed
    assert rdb.zcard(keys.JOBS) == 3  # nothing stored for the refused
    # Campaigns are not urgent and are not refused; nor is an alert scheduled for later.
    campaign = post(client, {"recipients": us_numbers(1001), "message": "c"}, FAST)
    assert campaign.status_code == 202
    later = {"recipients": ["+14155550104"], "message": "a", "send_at": TOMORROW}
    assert post(client, later, FAST).status_code == 202


def test_an_urgent_job_not_kept_gives_its_share_of_the_backlog_back(
    slow_account: Flask, rdb: redis.Redis
) -> None:
    """Counted against the urgent backlog, then not kept (another request with its
    Idempotency-Key made the job first): the alerts after it wait behind the jobs kept only."""
    client = slow_account.test_client()
    first = post(client, {"recipients": ["+14155550100"], "message": "alert"}, FAST)
    assert round(first.get_json()["estimated_duration_seconds"], -1) == 100
    slot = idempotency.Slot(rdb, "a scope", "a digest", 60)
    rdb.set(slot.guard[0], "done|a digest|{}")  # (the other request's answer, written meanwhile)
    with slow_account.app_context(), pytest.raises(KeyAnswered):
        jobs.make_job({"recipients": ["+14155550101"], "message": "alert"}, slot)
    assert rdb.zcard(keys.JOBS) == 1  # (not kept)
    after = post(client, {"recipients": ["+14155550102"], "message": "alert"}, FAST)
    assert round(after.get_json()["estimated_duration_seconds"], -1) == 200  # not 300


def test_without_a_bound_urgent_submits_are_never_refused(
    settings: Settings, rdb: redis.Redis
) -> None:
    client = create_app(replace(settings, plivo_mps=0.01, urgent_backlog_seconds=0.0)).test_client()
    for number in us_numbers(5):
        assert post(client, {"recipients": [number], "message": "a"}, FAST).status_code == 202


def test_a_submit_after_redis_restarted_is_accepted(
    settings: Settings, own_redis: OwnRedis
) -> None:
    """The job's one round trip goes on the thread's own connection (`ThreadConnections`):
    one Redis closed when it restarted is made afresh, not written to."""
    client = create_app(replace(settings, redis_url=own_redis.url)).test_client()
    body = {"recipients": ["+14155550100"], "message": "before"}
    assert post(client, body, FAST).status_code == 202
    own_redis.stop()
    own_redis.start()
    again = post(client, {**body, "message": "after"}, FAST)
    assert again.status_code == 202, again.get_json()


@pytest.fixture
def redis_bytes(redis_url: str) -> redis.Redis:
    """The suite's Redis, answers as bytes (a batch's records are)."""
    return redis.Redis.from_url(redis_url)


def _keys(client: redis.Redis) -> dict[str, str]:
    """Every key but the limits' lists, with its value."""
    read = {
        b"string": client.get,
        b"hash": lambda k: sorted(client.hgetall(k).items()),
        b"zset": lambda k: client.zrange(k, 0, -1),
        b"list": lambda k: client.lrange(k, 0, -1),
        b"set": lambda k: sorted(client.smembers(k)),
    }
    return {
        key.decode(): repr(read[client.type(key)](key))
        for key in sorted(client.scan_iter())
        if not key.startswith(b"LIMITS:")
    }


@pytest.mark.parametrize("refused", ["malformed", "invalid", "opted out", "backlog"])
def test_a_refused_alert_counts_against_the_limit_once_and_writes_nothing(
    settings: Settings, rdb: redis.Redis, redis_bytes: redis.Redis, taken: list[str], refused: str
) -> None:
    """Counted as flask-limiter counts before the view (a bad body too), once: an alert the
    one-round-trip path hands to the general one (an opted-out recipient) is not counted
    again. A refused alert leaves Redis as it was, but for the count."""
    slow = refused == "backlog"  # an account of a segment every 100 s, 150 s of backlog allowed
    client = create_app(
        replace(
            settings,
            rate_limit_submit="2/minute",
            plivo_mps=0.01 if slow else settings.plivo_mps,
            urgent_backlog_seconds=150.0,
        )
    ).test_client()
    optouts.opt_out(rdb, "+14155550198")
    if slow:  # 200 s of backlog: the next alert is beyond the bound
        assert post(client, {"recipients": us_numbers(2), "message": "a"}, FAST).status_code == 202
    before = _keys(redis_bytes)
    bodies: dict[str, tuple[Any, bytes | None, int]] = {
        "malformed": (None, b'{"recipients": [', 400),
        "invalid": ({"recipients": ["12"], "message": "a"}, None, 422),
        "opted out": ({"recipients": ["+14155550198"], "message": "a"}, None, 422),
        "backlog": ({"recipients": ["+14155550100"], "message": "a"}, None, 503),
    }
    body, raw, status = bodies[refused]
    answer = post(client, body, FAST, raw)
    assert answer.status_code == status, answer.get_json()
    assert _keys(redis_bytes) == before
    # Two a minute: the backlog's alert is the second (its first made that backlog).
    more = [post(client, body, FAST, raw).status_code for _ in range(1 if slow else 2)]
    assert more == ([429] if slow else [status, 429])
    assert len(taken) == 3


def test_an_alert_with_an_opted_out_recipient_is_made_once_and_counted_once(
    settings: Settings, rdb: redis.Redis
) -> None:
    client = create_app(replace(settings, rate_limit_submit="2/minute")).test_client()
    optouts.opt_out(rdb, "+14155550198")
    body = {"recipients": ["+14155550198", "+14155550100"], "message": "a"}
    first = post(client, body, FAST)
    assert first.status_code == 202, first.get_json()
    counts = first.get_json()["recipients"]
    assert (counts["accepted"], counts["suppressed"]) == (1, 1)
    assert rdb.zcard(keys.JOBS) == 1 and rdb.llen(taskqueue.URGENT_QUEUE) == 1
    assert post(client, body, FAST).status_code == 202
    assert post(client, body, FAST).status_code == 429
    assert rdb.zcard(keys.JOBS) == 2 and rdb.llen(taskqueue.URGENT_QUEUE) == 2


def test_an_alert_is_stored_as_the_general_path_stores_it(
    client: FlaskClient, rdb: redis.Redis, redis_bytes: redis.Redis
) -> None:
    """The one-round-trip path writes what `JobStore.create` writes, key for key."""
    ann = {"to": "+14155550100", "fields": {"name": "Ann"}}
    body = {"recipients": [ann], "message": "Hi {{name}}"}
    stored = []
    for headers in (FAST, FLASK):
        rdb.flushdb()
        answer = post(client, body, headers)
        assert answer.status_code == 202, answer.get_json()
        job_id = answer.get_json()["job_id"]
        written = repr(_keys(redis_bytes)).replace(job_id, "<job>")
        written = re.sub(r"1[0-9]{9}\.[0-9]+", "<time>", written)  # created_at and the like
        written = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<uuid>", written)  # task ids
        stored.append(re.sub(r'"body": ?"[^"]+"', "<body>", written))  # (names the job)
    assert stored[0] == stored[1]
    assert "<job>" in stored[0] and keys.JOBS in stored[0]


def test_an_alert_after_redis_forgot_its_scripts_is_made_once(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    """NOSCRIPT (a restarted Redis has no scripts) means the script did not run: it is loaded
    and run once."""
    rdb.script_flush()
    answer = post(client, {"recipients": ["+14155550100"], "message": "a"}, FAST)
    assert answer.status_code == 202, answer.get_json()
    assert rdb.zcard(keys.JOBS) == 1 and rdb.llen(taskqueue.URGENT_QUEUE) == 1
