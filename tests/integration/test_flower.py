"""Flower, as operators use it: its API lists the worker and the job's batch tasks, with the
job id and batch number readable, while the job runs."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
import requests

from bulksms.devstack.numbers_gen import us_numbers
from bulksms.devstack.up import free_port, wait_for_http
from tests.helpers.stack import (
    READY_SECONDS,
    WAIT_SECONDS,
    Stack,
    child_env,
    spawn,
    wait_until,
)


# The suite's 2 s staleness would let the sweep re-enqueue a batch that waits that long in
# the worker's prefetch on a busy machine: a fifth task in Flower, harmless but not this test's.
@pytest.mark.parametrize("stack_overrides", [{"dispatch_stale_seconds": 60}])
def test_flower_sees_the_worker_and_every_batch_task(
    stack: Stack, stack_overrides: dict[str, Any]
) -> None:
    port = free_port()
    flower = spawn(
        stack.logs / "flower.log",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bulksms.worker.main",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        child_env(stack.settings, FLOWER_UNAUTHENTICATED_API="true"),
    )
    stack.processes["flower"] = flower
    wait_for_http(f"http://127.0.0.1:{port}/healthcheck", READY_SECONDS, flower, "Flower")
    api = f"http://127.0.0.1:{port}/api"
    wait_until(
        lambda: requests.get(f"{api}/workers", params={"refresh": 1}, timeout=30).json(),
        what="Flower seeing the worker",
    )

    stack.sandbox.faults.update({"latency_ms": 300})
    job_id = stack.submit({"recipients": us_numbers(4000), "message": "flower"}).json()["job_id"]
    seen: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + WAIT_SECONDS
    while stack.status(job_id)["state"] in ("queued", "sending") or len(seen) < 4:
        tasks = requests.get(
            f"{api}/tasks", params={"taskname": "bulksms.send_batch"}, timeout=30
        ).json()
        seen = {t["uuid"]: t for t in tasks.values() if job_id in str(t.get("args"))}
        assert time.monotonic() < deadline, f"Flower saw {len(seen)} tasks: {seen}"
        time.sleep(0.3)
    assert sorted(str(t["args"]) for t in seen.values()) == [str((job_id, n)) for n in range(4)]
    workers = requests.get(f"{api}/workers", timeout=30).json()
    assert any(name.startswith("test-") for name in workers)
