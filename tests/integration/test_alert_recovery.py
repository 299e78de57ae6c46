"""A web process that dies between storing an alert and enqueueing it, under sustained load
(issue 18): the sweep finds the stored job's pending batch and enqueues it, and every job,
that one and the load's, is sent exactly once. Real gunicorn, worker, sandbox and Redis."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import requests
from flask import Flask

from bulksms import create_app, taskqueue
from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import keys
from bulksms.worker import sweep
from tests.helpers import API_KEY
from tests.helpers.stack import Stack, wait_until

LOAD = 20  # one-recipient submits a second, for as long as the test runs


class Load(threading.Thread):
    """One-recipient jobs posted to the stack at `LOAD` a second until stopped."""

    def __init__(self, stack: Stack, numbers: list[str]) -> None:
        super().__init__(daemon=True)
        self.stack, self.numbers = stack, numbers
        self.accepted: list[str] = []
        self.answers: Counter[int] = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        for number in self.numbers:
            if self.stop.wait(1 / LOAD):
                return
            answer = session.post(
                f"{self.stack.base_url}/api/bulk-sms",
                json={"recipients": [number], "message": "load"},
                headers={"X-API-Key": API_KEY},
                timeout=60,
            )
            self.answers[answer.status_code] += 1
            if answer.status_code == 202:
                self.accepted.append(number)


@pytest.mark.parametrize("stack_overrides", [{"rate_limit_submit": "100000/minute"}])
def test_an_alert_stored_without_its_task_is_sent_by_the_sweep_under_load(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    load = Load(stack, us_numbers(3000))
    load.start()
    try:
        wait_until(lambda: len(load.accepted) >= 40, what="the load under way")
        # The web process's death right after the job's writes and before its task: the same
        # request through the same code, with the task left out of the round trip (that is
        # all a death at that moment leaves, and all it takes away).
        monkeypatch.setattr(taskqueue, "start_messages", lambda *a, **k: [])
        orphan_number = "+14155550142"
        app = create_app(stack.settings)
        answer = app.test_client().post(
            "/api/bulk-sms",
            json={"recipients": [orphan_number], "message": "orphan"},
            headers={"X-API-Key": API_KEY},
        )
        assert answer.status_code == 202, answer.get_json()
        orphan = answer.get_json()["job_id"]
        store = app.extensions["bulksms.store"]
        assert store.redis.zscore(keys.ACTIVE_JOBS, orphan) is not None  # stored and indexed
        assert store.pending_batches(orphan) == [0]
        # ... with no task anywhere: only the sweep can send it.
        assert not any(orphan in m for m in store.redis.lrange(taskqueue.URGENT_QUEUE, 0, -1))
        wait_until(
            lambda: orphan_number in _sent(stack),
            seconds=60,
            what="the sweep to enqueue the orphaned alert",
        )
        assert load.is_alive(), "the load was still running when the sweep recovered the job"
    finally:
        load.stop.set()
        load.join(60)
    assert load.answers == Counter({202: len(load.accepted)}), load.answers
    wanted = [*load.accepted, orphan_number]
    wait_until(lambda: len(_sent(stack)) >= len(wanted), seconds=120, what="every alert sent")
    sent = Counter(_sent(stack))
    assert sent == Counter(wanted), "each alert, the orphan's too, sent exactly once"
    assert stack.status(orphan)["counts"]["pending"] == 0


def _sent(stack: Stack) -> list[str]:
    return [m["dst"] for m in list(stack.sandbox.messages)]


def test_a_backlog_of_alerts_is_not_enqueued_twice_but_a_lost_task_is(app: Flask) -> None:
    """Alerts waiting in the urgent queue longer than DISPATCH_STALE_SECONDS (a backlog: no
    worker here, and the sweep's clock moved on) are waiting, not lost: the sweep leaves
    those enqueued after the task a worker takes next alone, and enqueues again only the one
    whose task is gone. Real Redis, store, queue and sweep."""
    client, store = app.test_client(), app.extensions["bulksms.store"]
    celery, settings = app.extensions["celery"], app.config["SETTINGS"]
    assert taskqueue.queue_heads(celery) == {True: taskqueue.EMPTY, False: taskqueue.EMPTY}
    ids = []
    for n in range(4):
        answer = client.post(
            "/api/bulk-sms",
            json={"recipients": [f"+1415555{n:04d}"], "message": "backlog"},
            headers={"X-API-Key": API_KEY},
        )
        assert answer.status_code == 202, answer.get_json()
        ids.append(answer.get_json()["job_id"])
        if n == 0:  # (the first well before the others: nothing else tells a lost one)
            time.sleep(settings.dispatch_stale_seconds + 0.5)
    first = taskqueue.queue_heads(celery)[True]
    assert first is not None and taskqueue.queue_heads(celery)[False] == taskqueue.EMPTY
    (lost,) = [m for m in store.redis.lrange(taskqueue.URGENT_QUEUE, 0, -1) if ids[0] in m]
    store.redis.lrem(taskqueue.URGENT_QUEUE, 1, lost)  # the first alert's task vanished
    second = taskqueue.queue_heads(celery)[True]
    assert second is not None and second > first
    enqueued: list[str] = []
    tally = sweep.sweep_once(
        store,
        app.extensions["bulksms.pace"],
        settings,
        lambda job_id, batches, urgent: enqueued.append(job_id),
        lambda: taskqueue.queue_depth(celery),
        lambda job_id: None,
        # (past DISPATCH_STALE_SECONDS for every one, and within the bound of waiting behind)
        now=lambda: store.clock() + 2 * settings.dispatch_stale_seconds,
        queue_heads=lambda: taskqueue.queue_heads(celery),
    )
    assert enqueued == [ids[0]] and tally["redispatched"] == 1
    # Every message says when it was pushed, a retry's too (Celery would copy its first
    # push's); one that does not (from before this release) is passed over for the next few.
    store.redis.delete(taskqueue.URGENT_QUEUE)
    before = time.time()
    celery.send_task(
        taskqueue.SEND_BATCH,
        (ids[1], 0),
        queue=taskqueue.URGENT_QUEUE,
        headers={taskqueue.PUSHED: "1.000"},  # (as a retry's copy of its first push's)
    )
    retried = taskqueue.queue_heads(celery)[True]
    # (the stamp is to the millisecond, rounded: up to half of one before `before`)
    assert retried is not None and before - 0.001 <= retried <= time.time() + 0.001
    store.redis.rpush(taskqueue.URGENT_QUEUE, '{"headers": {"task": "bulksms.send_batch"}}')
    assert taskqueue.queue_heads(celery)[True] == retried
    store.redis.delete(taskqueue.URGENT_QUEUE)
    store.redis.rpush(taskqueue.URGENT_QUEUE, '{"headers": {"task": "bulksms.send_batch"}}')
    assert taskqueue.queue_heads(celery)[True] is None


def test_the_sweep_first_reads_a_job_whose_task_went_out_with_it_when_it_could_be_stale(
    app: Flask,
) -> None:
    """An alert's task is pushed in the round trip that stores it: no batch of it can be
    enqueued again before DISPATCH_STALE_SECONDS, so the sweep first reads it then (on Redis's
    clock), not at its next pass (under a backlog of alerts, those reads of every new one were
    most of the sweep's, and held Redis while submits waited); a claim makes it due at once.
    A job whose tasks did not go out with it (scheduled) is due at once, as before."""
    # (a stale time no stall of a busy host between the submits and the sweeps comes near)
    settings = replace(app.config["SETTINGS"], dispatch_stale_seconds=600.0)
    app = create_app(settings)
    client, store, stale = app.test_client(), app.extensions["bulksms.store"], 600.0

    def submit(**extra: object) -> str:
        answer = client.post(
            "/api/bulk-sms",
            json={"recipients": ["+14155550142"], "message": "alert", **extra},
            headers={"X-API-Key": API_KEY},
        )
        assert answer.status_code == 202, answer.get_json()
        job_id: str = answer.get_json()["job_id"]
        return job_id

    before = store.clock()
    alert = submit()
    in_an_hour = datetime.fromtimestamp(time.time() + 3600, UTC).isoformat()
    later = submit(send_at=in_an_hour)
    after = store.clock()
    score = store.redis.zscore(keys.ACTIVE_JOBS, alert)
    assert score is not None and before + stale <= score <= after + stale
    assert store.redis.zscore(keys.ACTIVE_JOBS, later) == 0
    read: list[str] = []
    jobs = store.jobs
    store.jobs = lambda ids: read.extend(ids) or jobs(ids)  # type: ignore[method-assign]

    def swept(at: float) -> None:
        sweep.sweep_once(
            store,
            app.extensions["bulksms.pace"],
            settings,
            lambda *_: None,
            lambda: 1,
            lambda _: None,
            now=lambda: at,
        )

    swept(after)
    assert alert not in read and later in read
    swept(after + stale + 0.001)
    assert read.count(alert) == 1
    store.redis.zadd(keys.ACTIVE_JOBS, {alert: store.clock() + 3600})  # (looked at, not due)
    assert store.claim_batch(alert, 0).outcome == "go"
    swept(store.clock())
    assert read.count(alert) == 2  # (claimed: due at once, its call may die with its worker)
