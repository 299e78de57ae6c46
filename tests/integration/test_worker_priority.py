"""A worker yields the CPU to the web app (`WORKER_NICE`): where they share a host (and one CPU
group: `bulksms up`, one supervisor), a worker with a backlog takes only what the API does not
need (issue 18: an alert's answer must not wait behind the sending of the alerts before it).
Real gunicorn and Celery processes."""

from __future__ import annotations

import os
from pathlib import Path

from bulksms.config import Settings
from tests.helpers.stack import Stack


def test_a_worker_and_its_pool_run_below_the_web_app(stack: Stack) -> None:
    nice, own = Settings().worker_nice, os.getpriority(os.PRIO_PROCESS, 0)
    assert nice > 0  # (the default)
    worker = stack.start_worker(WORKER_NICE=str(nice))
    pool = _children(worker.pid)
    assert len(pool) == 2  # (--concurrency 2)
    at_least = max(nice, own)  # (one started lower stays lower)
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in [worker.pid, *pool]] == [at_least] * 3
    assert os.getpriority(os.PRIO_PROCESS, stack.processes["web"].pid) == own
    # 0: the priority it was started with.
    assert os.getpriority(os.PRIO_PROCESS, stack.start_worker(WORKER_NICE="0").pid) == own


def _children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]
