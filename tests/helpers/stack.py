"""The deployed shape as real processes: gunicorn serving the app, Celery workers, the sandbox as
Plivo. `running_stack` starts it and waits until it is ready; `Stack` drives it and waits on it.

Every wait here is on a condition with a generous deadline, never a fixed sleep: on a busy
machine things happen late, not in a different order."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import requests

from bulksms.config import Settings
from bulksms.devstack.sandbox import Faults, Sandbox
from bulksms.devstack.up import free_port, gunicorn_command, wait_for_http
from bulksms.taskqueue import make_celery, queue_depth
from tests.helpers import API_KEY

ROOT = Path(__file__).resolve().parents[2]
READY_SECONDS = 120  # start-up on a busy two-core machine: gunicorn and a worker importing
WAIT_SECONDS = 120  # a job reaching a state; a deadline only for a test that would hang
# Stack settings for a test that holds sends (`held_sends`) while a worker waits for the answer:
# the worker's Plivo timeout outlasts any hold, so a held send is answered, not timed out.
HOLDING = {"plivo_timeout": 60.0}
# A kill or a stop between a call's record and its request leaves a call Plivo never had, proved
# absent by reading its sender's list for the call's minutes: the test's other batches' thousands
# of messages, at Plivo's 20 listings a minute longer than a test. Where listing is not what a
# test tests, it lifts the limit on both sides: ours (stack settings) and the sandbox's (faults).
UNLIMITED_LISTING = {"plivo_list_per_minute": 6000}
SANDBOX_UNLIMITED_LISTING = {"list_per_minute": 0}


def wait_until(condition: Callable[[], Any], seconds: float = WAIT_SECONDS, what: str = "") -> Any:
    """Poll `condition` until it returns something true and return that; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds:.0f} s: {what or condition}")
        time.sleep(0.1)


@contextmanager
def held_sends(sandbox: Sandbox, seconds: float = 50) -> Iterator[threading.Event]:
    """Sends reach the sandbox (and show in `sandbox.sends`) but get no answer until the yielded
    event is set or the block ends: the test, not the clock, decides what happens while they are
    in flight. A live worker waits only PLIVO_TIMEOUT for an answer: run with HOLDING."""
    release = threading.Event()
    accept = sandbox.accept

    def held(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        release.wait(seconds)
        return accept(body)

    sandbox.accept = held  # type: ignore[method-assign]
    try:
        yield release
    finally:
        release.set()
        del sandbox.accept  # the class's method again


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a deployed process would get: every setting of `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO_", "API_", "REDIS"))}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, tuple) and value and isinstance(value[0], tuple):
            value = ",".join(f"{k}={v}" for k, v in value)  # PLIVO_SENDER_MPS
        elif isinstance(value, tuple | frozenset):
            value = ",".join(map(str, sorted(value) if isinstance(value, frozenset) else value))
        env[f.metadata["env"]] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn(log: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A child in its own process group (so it can be stopped whole), output to `log`."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def fresh_faults(**changes: Any) -> Faults:
    faults = Faults()
    faults.update(changes)
    return faults


@dataclass
class Stack:
    """The deployed shape: gunicorn serving the app, a Celery worker, the sandbox as Plivo."""

    base_url: str
    sandbox: Sandbox
    sandbox_url: str
    settings: Settings
    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path

    def submit(self, body: dict[str, Any], key: str = API_KEY) -> requests.Response:
        return requests.post(
            f"{self.base_url}/api/bulk-sms", json=body, headers={"X-API-Key": key}, timeout=60
        )

    def status(self, job_id: str) -> dict[str, Any]:
        response = requests.get(
            f"{self.base_url}/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}, timeout=30
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], seconds: float = WAIT_SECONDS
    ) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            doc = self.status(job_id)
            if done(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never got there: {doc}\n{self.tail()}")
            time.sleep(0.2)

    def wait_until_quiet(self, seconds: float = WAIT_SECONDS) -> None:
        """Until the sandbox has posted every report it owes."""
        deadline = time.monotonic() + seconds
        while self.sandbox.report_backlog() and time.monotonic() < deadline:
            time.sleep(0.1)

    def start_worker(self, wait: bool = True, **env: str) -> subprocess.Popen[bytes]:
        """A Celery worker in its own process group (so a test can kill it whole); with `wait`,
        returns once the worker answers a ping, which it does only when it consumes."""
        hostname = f"test-{time.monotonic_ns()}@%h"
        process = spawn(
            self.logs / "worker.log",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bulksms.worker.main",
                "worker",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--hostname",
                hostname,
            ],
            child_env(self.settings, **env),
        )
        self.processes[f"worker-{process.pid}"] = process
        if wait:
            self.wait_for_worker(hostname.replace("%h", socket.gethostname()), process)
        return process

    def wait_for_worker(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """Celery's own readiness: the worker answers a broadcast ping addressed to it."""
        celery_app = make_celery(self.settings)
        deadline = time.monotonic() + READY_SECONDS
        try:
            while not celery_app.control.ping(destination=[name], timeout=1.0):
                if process.poll() is not None:
                    raise RuntimeError(f"worker exited with {process.returncode}\n{self.tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"worker {name} did not answer a ping\n{self.tail()}")
        finally:
            celery_app.close()

    def queue_depth(self) -> int:
        """Batch tasks waiting in the broker's queues (not those a worker has taken)."""
        celery_app = make_celery(self.settings)
        try:
            return queue_depth(celery_app)
        finally:
            celery_app.close()

    def kill_workers(self) -> None:
        """kill -9 every worker process: the main one and its pool children."""
        for name, process in list(self.processes.items()):
            if name.startswith("worker-") and process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)

    def sent_numbers(self) -> list[str]:
        """Every destination the sandbox accepted, as often as it accepted it, sorted."""
        return sorted(m["dst"] for m in self.sandbox.messages)

    def counts_match_the_sandbox(self, job_id: str) -> None:
        """The job's counts are exactly the outcomes the sandbox reported."""
        self.wait_until_quiet()
        outcomes = Counter(m["status"] for m in self.sandbox.messages)
        counts = {k: v for k, v in self.status(job_id)["counts"].items() if v}
        assert counts == dict(outcomes), self.tail()

    def tail(self) -> str:
        return "\n".join(
            f"--- {p.name} ---\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.logs.glob("*.log"))
        )


@contextmanager
def running_stack(
    settings: Settings, sandbox: Sandbox, sandbox_url: str, logs: Path, **overrides: Any
) -> Iterator[Stack]:
    """gunicorn and one worker on `settings` (plus `overrides`), Plivo being the sandbox; yields
    once the worker answers a ping and `/readyz` answers 200, and stops both afterwards."""
    wait_for_http(f"{sandbox_url}/sandbox/stats", READY_SECONDS, what="the sandbox")
    port = free_port()
    deployed = replace(
        settings, api_base_url=f"http://127.0.0.1:{port}", plivo_api_url=sandbox_url, **overrides
    )
    web = spawn(
        logs / "web.log",
        [sys.executable, "-m", *gunicorn_command("bulksms.api.wsgi:app", f"127.0.0.1:{port}")],
        child_env(deployed),
    )
    result = Stack(f"http://127.0.0.1:{port}", sandbox, sandbox_url, deployed, {"web": web}, logs)
    try:
        result.start_worker()
        try:
            wait_for_http(f"{result.base_url}/readyz", READY_SECONDS, web, "gunicorn")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n{result.tail()}") from None
        yield result
    finally:
        # Killed, not stopped: nothing after a test reads their state (Redis is flushed for the
        # next), and a warm shutdown of each stack cost the suite seconds a test.
        for process in result.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        for process in result.processes.values():
            process.wait(15)
