"""The token bucket toward Plivo, on a real Redis: shared by every client of it."""

from __future__ import annotations

import time

import redis

from bulksms.worker.throttle import PlivoThrottle


def test_the_bucket_allows_its_capacity_then_makes_callers_wait(rdb: redis.Redis) -> None:
    # A token refills in 12 s: far longer than a busy host can stall these few round trips.
    first, second = PlivoThrottle(rdb, "5/minute"), PlivoThrottle(rdb, "5/minute")
    started = time.monotonic()
    assert [first.take() for _ in range(3)] + [second.take() for _ in range(2)] == [0.0] * 5
    wait, also = first.take(), second.take()  # whichever worker asks
    gone = time.monotonic() - started
    assert 12.0 - gone - 0.1 <= wait <= 12.0 and 12.0 - gone - 0.1 <= also <= 12.0


def test_a_token_is_there_once_the_wait_is_over(rdb: redis.Redis) -> None:
    first, second = PlivoThrottle(rdb, "5/second"), PlivoThrottle(rdb, "5/second")
    waits = [first.take() for _ in range(50)]  # (the bucket emptied, however slowly)
    wait = next((w for w in waits if w > 0), None)
    assert wait is not None, "50 takes of a bucket of 5 a second never had to wait"
    time.sleep(wait + 0.01)
    assert second.take() == 0.0


def test_wait_blocks_for_the_rate(rdb: redis.Redis) -> None:
    throttle = PlivoThrottle(rdb, "20/second")
    started = time.monotonic()
    for _ in range(30):
        throttle.wait()
    # 20 at once, then 10 more at 20 per second: about half a second. (The upper bound only
    # catches a wait far too long, such as a second per call, on however busy a machine.)
    assert 0.4 <= time.monotonic() - started < 8.0
