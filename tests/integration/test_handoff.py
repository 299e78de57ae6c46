"""Delivery reports handed to Redis without waiting for its answer, where that answer would not
mean the report is on disk (`bulksms.store.handoff`): answered at once, recorded once Redis
takes them, written again the waiting way when the answer is an error or never comes."""

from __future__ import annotations

import logging
import re
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
import requests

from bulksms import signature
from bulksms.api import webhooks
from bulksms.store import BLOCKED_BY_STOP, JobStore, Status, server
from bulksms.store.handoff import NAME, Handoff
from tests.helpers.own_redis import OwnRedis
from tests.helpers.stack import Stack, wait_until
from tests.helpers.webhook import PATH, params

NUMBERS = ["+14155550100", "+14155550101", "+14155550102"]
PING = b"*1\r\n$4\r\nPING\r\n"
INCR = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n"


@pytest.fixture
def everysec(own_redis: OwnRedis) -> redis.Redis:
    """A client of a Redis that answers before its disk has a write, as compose runs it."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    client.config_set("appendfsync", "everysec")
    return client


def _pause_writes(client: redis.Redis) -> None:
    """Redis holds every write (reads still pass) until `CLIENT UNPAUSE`."""
    client.execute_command("CLIENT", "PAUSE", 600_000, "WRITE")  # type: ignore[no-untyped-call]


def _handoff_ids(client: redis.Redis) -> list[int]:
    return [int(c["id"]) for c in client.client_list() if c.get("name") == NAME]


def test_only_an_append_only_file_fsynced_on_every_write_answers_from_disk(
    own_redis: OwnRedis,
) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    assert server.answers_from_disk(client)  # the embedded default: appendfsync always
    client.config_set("appendfsync", "everysec")
    assert not server.answers_from_disk(client)
    client.config_set("appendfsync", "always")
    client.config_set("appendonly", "no")
    assert not server.answers_from_disk(client)


def test_on_a_redis_that_answers_from_disk_nothing_is_handed_over(own_redis: OwnRedis) -> None:
    client = redis.Redis.from_url(own_redis.url, decode_responses=True)
    answers: list[object] = []
    assert not Handoff(client).send(PING, lambda a, _: answers.append(a))
    assert _handoff_ids(client) == [] and answers == []


def test_a_line_redis_will_not_open_is_logged_and_the_writer_waits(
    everysec: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client = everysec
    assert not server.answers_from_disk(client)  # (on the client's one connection, kept)
    before = str(client.config_get("maxclients")["maxclients"])
    client.config_set("maxclients", 1)  # no second connection: the handoff's line is refused
    handoff = Handoff(client)
    try:
        with caplog.at_level(logging.WARNING, logger="bulksms.store.handoff"):
            assert not handoff.send(PING, lambda a, _: None)
            handoff.paused_until = 0.0  # (past the second it waits before trying again)
            assert not handoff.send(PING, lambda a, _: None)
    finally:
        client.config_set("maxclients", before)
    logged = [r for r in caplog.records if "no connection to hand reports" in r.getMessage()]
    assert len(logged) == 1  # the second failure is counted for the next line, not logged
    assert handoff.failed_connects == 1
    assert _handoff_ids(client) == []


def test_writes_are_answered_in_order_and_past_the_bound_the_writer_waits(
    everysec: redis.Redis,
) -> None:
    client = everysec
    handoff = Handoff(client, bound=2)
    answers: list[object] = []
    settled = threading.Event()

    def settle(answer: object, since: float) -> None:
        answers.append(answer)
        if len(answers) == 3:
            settled.set()

    assert handoff.send(INCR, settle)
    wait_until(lambda: answers == [1], what="the first answer")
    _pause_writes(client)
    try:
        assert handoff.send(INCR, settle)
        assert handoff.send(INCR, settle)
        assert handoff.pending() == 2  # held by the pause
        assert not handoff.send(INCR, settle)  # the bound: this writer waits for Redis itself
    finally:
        client.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
    assert settled.wait(60)
    assert answers == [1, 2, 3]
    assert client.get("n") == "3"
    assert handoff.drain(60) and handoff.pending() == 0


def test_a_write_redis_refuses_stops_the_hand_over_and_is_settled_with_the_error(
    everysec: redis.Redis,
) -> None:
    client = everysec
    handoff = Handoff(client, refused_seconds=600)
    answers: list[object] = []
    client.config_set("maxmemory", 1)  # noeviction: every write refused with OOM
    try:
        assert handoff.send(INCR, lambda a, _: answers.append(a))
        wait_until(lambda: answers, what="the refusal")
        assert isinstance(answers[0], redis.ResponseError) and str(answers[0]).startswith("OOM")
        # While Redis refuses writes, writers wait for it themselves (and answer 503).
        assert not handoff.send(PING, lambda a, _: answers.append(a))
    finally:
        client.config_set("maxmemory", 0)
    assert handoff.drain(60) and answers == [answers[0]] and handoff.pending() == 0


def test_a_script_redis_forgot_is_written_again_without_stopping_the_hand_over(
    everysec: redis.Redis,
) -> None:
    client = everysec
    handoff = Handoff(client, refused_seconds=600)
    answers: list[object] = []
    unknown = b"*3\r\n$7\r\nEVALSHA\r\n$40\r\n" + b"0" * 40 + b"\r\n$1\r\n0\r\n"
    assert handoff.send(unknown, lambda a, _: answers.append(a))
    assert handoff.drain(60) and handoff.pending() == 0
    assert isinstance(answers[0], redis.exceptions.NoScriptError)
    assert handoff.send(PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and answers[1:] == [b"PONG"]


def test_a_write_being_written_again_is_waited_for_at_exit(everysec: redis.Redis) -> None:
    client = everysec
    """Its connection lost before the answer: the write is settled in a thread of its own
    (which may wait for Redis), and `drain` (at exit) waits for that too."""
    handoff = Handoff(client)
    release, answers = threading.Event(), []

    def settle(answer: object, since: float) -> None:
        answers.append(answer)
        release.wait(60)  # as a rewrite waiting for Redis

    _pause_writes(client)
    try:
        assert handoff.send(INCR, settle)
        (held,) = _handoff_ids(client)
        client.client_kill_filter(_id=str(held))
        wait_until(lambda: answers, what="the lost answer handed to settle")
        assert isinstance(answers[0], redis.ConnectionError)
        assert handoff.pending() == 1 and not handoff.drain(0.2)
    finally:
        client.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
        release.set()
    assert handoff.drain(60) and handoff.pending() == 0


def test_the_line_speaks_resp2_and_answers_out_of_step_break_it_not_its_reader(
    everysec: redis.Redis,
) -> None:
    client = everysec
    """RESP2: no push message (RESP3's maintenance notifications) is taken for an answer. A
    write that brings more answers than it awaits puts the line out of step: it is closed,
    what it awaited written again, and the next write goes on a new line."""
    handoff = Handoff(client)
    answers: list[object] = []
    client.config_resetstat()
    assert handoff.send(PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and answers == [b"PONG"]
    (line,) = [c for c in client.client_list() if c.get("name") == NAME]
    assert "cmdstat_hello" not in client.info("commandstats")  # (HELLO 3 would make it RESP3)
    # Two answers for one write: both commands reach Redis in one read, and Redis writes the
    # answers to one read's commands together, after running them all.
    assert handoff.send(PING + PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and handoff.pending() == 0
    assert isinstance(answers[1], redis.ConnectionError) and "out of step" in str(answers[1])
    assert handoff.send(PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and answers[2:] == [b"PONG"]
    assert [int(c["id"]) for c in client.client_list() if c.get("name") == NAME] != [
        int(line["id"])
    ]


def _idle_line(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch, timeout: float, read_timeout: float
) -> tuple[redis.Redis, Handoff, list[object], int]:
    """A handoff to a Redis that answers before its disk, whose line (the socket's timeout
    `timeout`, READ_TIMEOUT `read_timeout`) has answered a PING and now waits idle: the client,
    the handoff, the answers (settled in order) and the line's client id."""
    client = redis.Redis.from_url(own_redis.url, decode_responses=True, socket_timeout=timeout)
    client.config_set("appendfsync", "everysec")
    monkeypatch.setattr("bulksms.store.handoff.READ_TIMEOUT", read_timeout)
    handoff = Handoff(client)
    answers: list[object] = []
    assert handoff.send(PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and answers == [b"PONG"]
    (line,) = _handoff_ids(client)
    return client, handoff, answers, line


def test_an_idle_line_outlasts_its_timeouts_and_a_line_lost_while_idle_is_left_at_once(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader waits in `recv` whether or not a write is awaited: its socket's timeouts
    while nothing is awaited count for nothing, and a connection Redis closes while nothing is
    awaited is noticed then, so the next write goes on a new line instead of the dead one."""
    client, handoff, answers, first = _idle_line(own_redis, monkeypatch, 0.5, 1.0)
    time.sleep(3.0)  # six timeouts idle, three times READ_TIMEOUT
    assert handoff.line is not None and not handoff.line.broken
    assert handoff.send(PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and answers[1:] == [b"PONG"]
    assert _handoff_ids(client) == [first]
    client.client_kill_filter(_id=str(first))  # (as a Redis restart does, while idle)
    wait_until(lambda: handoff.line is None, what="the lost line left by its reader")
    assert handoff.send(PING, lambda a, _: answers.append(a))
    assert handoff.drain(60) and answers[2:] == [b"PONG"]  # (not a ConnectionError: no rewrite)
    assert _handoff_ids(client) not in ([], [first])


def test_a_write_that_comes_late_in_an_idle_wait_has_all_of_read_timeout(
    own_redis: OwnRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READ_TIMEOUT counts from the write (or the last answers), not from when the reader's
    wait began: a write made just before an idle wait times out is not given up a socket
    timeout early."""
    client, handoff, answers, line = _idle_line(own_redis, monkeypatch, 4.0, 8.0)
    time.sleep(3.8)  # (the reader's idle wait, begun with that answer, times out at 4 s)
    _pause_writes(client)
    try:
        assert handoff.send(INCR, lambda a, _: answers.append(a))
        # Counted from the wait's start, 8 s would be up 4.2 s after the write; from the write,
        # not before 8 s.
        time.sleep(6.0)
    finally:
        client.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
    assert handoff.drain(60) and answers[1:] == [1]  # (answered, not a TimeoutError)
    assert _handoff_ids(client) == [line]


def test_a_settle_that_fails_on_redis_is_written_again_off_the_reader(
    everysec: redis.Redis,
) -> None:
    client = everysec
    """The reader never waits out Redis: a settle that fails on it goes to the rewriter, with
    the error in the answer's place."""
    handoff = Handoff(client)
    calls: list[tuple[object, str]] = []

    def settle(answer: object, since: float) -> None:
        calls.append((answer, threading.current_thread().name))
        if len(calls) == 1:
            raise redis.ConnectionError("Redis went away while this was settled")

    assert handoff.send(PING, settle)
    assert handoff.drain(60) and handoff.pending() == 0
    assert calls[0] == (b"PONG", NAME)  # in the reader
    assert isinstance(calls[1][0], redis.ConnectionError) and calls[1][1] == f"{NAME}-rewrites"


def test_a_report_that_reveals_a_stop_waits_for_redis(everysec: redis.Redis) -> None:
    """Its opt-out must be stored before its 204: it is not handed over."""
    client = everysec
    handoff, jobs = Handoff(client), JobStore(client, 3600)
    form = params("undelivered", ErrorCode=BLOCKED_BY_STOP)
    assert not webhooks.hand_over(jobs, handoff, "job", "0", form)
    assert webhooks.hand_over(jobs, handoff, "job", "0", params("undelivered"))
    assert handoff.drain(60) and len(_handoff_ids(client)) == 1


@pytest.fixture
def stack_overrides(own_redis: OwnRedis) -> dict[str, Any]:
    """The stack on a Redis as docker-compose runs it: appendfsync everysec."""
    redis.Redis.from_url(own_redis.url).config_set("appendfsync", "everysec")
    return {"redis_url": own_redis.url}


def _post(stack: Stack, job_id: str, form: dict[str, str], nonce: str) -> requests.Response:
    """A report signed as Plivo signs it (V3), over HTTP to the stack's gunicorn."""
    query = urlencode({"job": job_id, "batch": 0})
    public = f"{stack.settings.api_base_url}{PATH}?{query}"
    key = stack.settings.plivo_auth_token or ""
    return requests.post(
        f"{stack.base_url}{PATH}?{query}",
        data=form,
        headers={
            signature.V3: signature.sign_v3(public, form, nonce, key),
            signature.V3_NONCE: nonce,
        },
        timeout=60,
    )


def _pending_job(stack: Stack, own_redis: OwnRedis) -> tuple[redis.Redis, str]:
    """A client of the stack's Redis, and a job whose recipients stay pending (no worker sends
    it): the test's reports are all that move them."""
    stack.kill_workers()
    job_id: str = stack.submit({"recipients": NUMBERS, "message": "x"}).json()["job_id"]
    return redis.Redis.from_url(own_redis.url, decode_responses=True), job_id


def _awaited_at_exit(stack: Stack) -> int:
    said = (stack.logs / "web.log").read_text(errors="replace")
    return sum(int(n) for n in re.findall(r"waiting for (\d+) writes handed to Redis", said))


def _delivered(client: redis.Redis, job_id: str) -> int:
    job = JobStore(client, 3600).job(job_id)
    assert job is not None
    return job.counts[Status.DELIVERED]


def test_a_report_is_answered_while_redis_holds_writes_and_recorded_once_it_lets_them_through(
    stack: Stack, own_redis: OwnRedis
) -> None:
    client, job_id = _pending_job(stack, own_redis)
    _pause_writes(client)
    try:
        first = _post(stack, job_id, params("delivered", to=NUMBERS[0][1:]), "1")
        assert first.status_code == 204  # not waiting for Redis (which holds it)
        assert _delivered(client, job_id) == 0
        # Its connection lost before the answer: the report is written again, waiting.
        (lost,) = _handoff_ids(client)
        client.client_kill_filter(_id=str(lost))
        second = _post(stack, job_id, params("delivered", to=NUMBERS[1][1:]), "2")
        assert second.status_code == 204  # on a new connection
        assert _delivered(client, job_id) == 0
    finally:
        client.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
    wait_until(lambda: _delivered(client, job_id) == 2, what="both reports recorded")
    assert "not recorded" not in stack.tail()


def test_a_report_whose_script_redis_forgot_is_recorded_all_the_same(
    stack: Stack, own_redis: OwnRedis
) -> None:
    client, job_id = _pending_job(stack, own_redis)
    assert _post(stack, job_id, params("delivered", to=NUMBERS[0][1:]), "1").status_code == 204
    wait_until(lambda: _delivered(client, job_id) == 1, what="the first report recorded")
    client.script_flush()  # as after a restart: the handed-over EVALSHA is answered NOSCRIPT
    assert _post(stack, job_id, params("delivered", to=NUMBERS[1][1:]), "2").status_code == 204
    wait_until(lambda: _delivered(client, job_id) == 2, what="the second report recorded")
    assert _handoff_ids(client)  # handed over, not recorded the waiting way from the start
    assert "not recorded" not in stack.tail()


def test_handoff_answers_come_back_to_a_web_process_that_is_told_to_stop(
    stack: Stack, own_redis: OwnRedis
) -> None:
    """gunicorn's graceful stop: the process waits for its answers before it exits."""
    client, job_id = _pending_job(stack, own_redis)
    _pause_writes(client)
    try:
        for index, number in enumerate(NUMBERS):
            answer = _post(stack, job_id, params("delivered", to=number[1:]), str(index))
            assert answer.status_code == 204
        web = stack.processes["web"]
        web.terminate()  # gunicorn's graceful stop
        # (each of gunicorn's workers that took one says how many it waits for)
        wait_until(lambda: _awaited_at_exit(stack) == len(NUMBERS), what="the workers waiting")
        assert _delivered(client, job_id) == 0
    finally:
        client.execute_command("CLIENT", "UNPAUSE")  # type: ignore[no-untyped-call]
    web.wait(60)
    assert _delivered(client, job_id) == len(NUMBERS)
