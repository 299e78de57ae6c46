"""A worker yields the CPU to the web app (`WORKER_NICE`): on a host they share, a worker with a
backlog takes only what the API does not need (issue 18: an alert's answer must not wait behind
the sending of the alerts before it). Real gunicorn and Celery processes."""

from __future__ import annotations

import os
from pathlib import Path

from bulksms.config import Settings
from tests.helpers.stack import Stack


def test_a_worker_and_its_pool_run_below_the_web_app(stack: Stack) -> None:
    nice = Settings().worker_nice
    assert nice > 0  # (the default)
    worker = stack.start_worker(WORKER_NICE=str(nice))
    pool = _children(worker.pid)
    assert len(pool) == 2  # (--concurrency 2)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in [worker.pid, *pool]] == [nice] * 3
    web = stack.processes["web"].pid
    assert os.getpriority(os.PRIO_PROCESS, web) == os.getpriority(os.PRIO_PROCESS, 0)
    # 0: the priority it was started with.
    assert os.getpriority(os.PRIO_PROCESS, stack.start_worker(WORKER_NICE="0").pid) == (
        os.getpriority(os.PRIO_PROCESS, 0)
    )


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]
