"""Chaos: a job sent at a real pace while a driver does to the stack what production does: a
worker killed with `kill -9` at random moments, Redis stopped and started, Plivo answering
500/502/504 after taking a call (or 503 before), connections dropped after a call was taken,
reports delayed, shuffled and repeated, and one worker whose clock is two minutes ahead. Every
recipient must reach Plivo exactly once, none lost, the counts exact, the job completed.

The short form runs in the suite; the long form is the same test, bigger and longer:

    CHAOS_RECIPIENTS=50000 .venv/bin/python -m pytest tests/integration/test_chaos.py

(`CHAOS_SEED` picks another sequence of disruptions.)
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests

from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.own_redis import OwnRedis
from tests.helpers.stack import SANDBOX_UNLIMITED_LISTING, UNLIMITED_LISTING, Stack

RECIPIENTS = int(os.environ.get("CHAOS_RECIPIENTS", "10000"))
PACE = 500  # messages a second, on both sides: bulksms's pace and the sandbox's queue
SEED = int(os.environ.get("CHAOS_SEED", "15"))
SKEW_SECONDS = 120


@pytest.fixture
def stack_overrides(own_redis: OwnRedis) -> dict[str, Any]:
    return {
        "redis_url": own_redis.url,
        "plivo_mps": float(PACE),
        "send_max_attempts": 100,  # transient refusals are part of the weather here
        "reconcile_after_seconds": 5.0,  # reports the sandbox gave up on are looked up
        **UNLIMITED_LISTING,  # (and the sandbox's, below: a kill may land mid-call)
        "report_wait_seconds": 600,
    }


def test_chaos_sends_every_recipient_once(stack: Stack, own_redis: OwnRedis) -> None:
    rng = random.Random(SEED)
    box = stack.sandbox
    # Plivo retries a report it could not deliver for a while (here over a minute): a report
    # refused while Redis restarts comes again.
    box.retry_delays = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    box.faults.update(
        {
            "mps": float(PACE),
            "drop_rate": 0.03,
            "error_rate": 0.05,
            "error_status": 503,
            "repeat_rate": 0.2,
            "shuffle_reports": True,
            "report_delay_ms": 300,
            **SANDBOX_UNLIMITED_LISTING,
        }
    )
    stack.start_worker(BULKSMS_FAULT_CLOCK_SKEW_SECONDS=str(SKEW_SECONDS))
    numbers = us_numbers(RECIPIENTS)
    job_id = stack.submit({"recipients": numbers, "message": "chaos"}).json()["job_id"]
    log: list[str] = []

    def kill_a_worker() -> None:
        alive = [
            (name, p)
            for name, p in stack.processes.items()
            if name.startswith("worker-") and p.poll() is None
        ]
        name, process = rng.choice(alive)
        os.killpg(process.pid, 9)
        process.wait(30)
        skewed = rng.random() < 0.5
        env = {"BULKSMS_FAULT_CLOCK_SKEW_SECONDS": str(SKEW_SECONDS)} if skewed else {}
        stack.start_worker(wait=False, **env)
        log.append(f"killed {name}")

    def restart_redis() -> None:
        own_redis.stop()
        time.sleep(rng.uniform(0.5, 3.0))
        own_redis.start()
        log.append("restarted redis")

    def gateway_errors() -> None:
        box.faults.update({"accept_then_fail": [rng.choice([500, 502, 504]) for _ in range(2)]})
        log.append("gateway errors after taking calls")

    disruptions: list[Callable[[], None]] = [kill_a_worker, gateway_errors, restart_redis]
    deadline = time.monotonic() + max(60.0, 3 * RECIPIENTS / PACE)
    turn = 0
    # Each disruption at least once, and on until Plivo has had every recipient.
    while (
        turn < len(disruptions) or len({m["dst"] for m in box.messages}) < RECIPIENTS
    ) and time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        disruptions[turn % len(disruptions)]()
        turn += 1
    assert turn >= len(disruptions), log
    # The weather clears: every recipient must now be settled, once.
    box.faults.update({"drop_rate": 0.0, "error_rate": 0.0, "accept_then_fail": []})
    if not any(
        name.startswith("worker-") and p.poll() is None for name, p in stack.processes.items()
    ):
        stack.start_worker()
    doc = stack.wait_for(
        job_id, lambda d: d["state"] == "completed", seconds=max(240.0, 6 * RECIPIENTS / PACE)
    )
    texted = Counter(m["dst"] for m in box.messages)
    twice = [n for n, times in texted.items() if times > 1]
    assert twice == [], f"texted twice: {twice[:10]} ({log})"
    assert sorted(texted) == sorted(numbers), f"lost: {len(set(numbers) - set(texted))} ({log})"
    assert doc["counts"]["pending"] == 0 and doc.get("closed") is None
    assert box.stats()["reports_given_up"] == 0
    stack.counts_match_the_sandbox(job_id)
    print(f"chaos (seed {SEED}): {log}; sandbox {box.stats()}")
    answer = requests.get(
        f"{stack.base_url}/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}, timeout=30
    )
    assert answer.json()["counts"] == doc["counts"]
