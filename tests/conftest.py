"""Fixtures: a private Redis server on a free port, the app with test settings, and the whole
stack (sandbox, gunicorn, a Celery worker) as real processes for the integration tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from bulksms import create_app
from bulksms.config import Settings
from bulksms.devstack.sandbox import Faults, Sandbox, make_credentials, serve
from bulksms.devstack.up import free_port, gunicorn_command, start_redis, wait_for_port

API_KEY = "test-key-0123456789abcdef"
SENDER = "+14155550199"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("redis")


@pytest.fixture(scope="session")
def redis_server(redis_folder: Path) -> Iterator[int]:
    """A real redis-server for this test session only, never the developer's database."""
    port = free_port()
    process = start_redis(port, redis_folder)
    yield port
    process.terminate()
    process.wait(10)


@pytest.fixture
def redis_url(redis_server: int) -> str:
    url = f"redis://127.0.0.1:{redis_server}/0"
    redis.Redis.from_url(url).flushall()
    return url


@pytest.fixture
def rdb(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.fixture(scope="session")
def credentials() -> tuple[str, str]:
    return make_credentials()


@pytest.fixture
def settings(redis_url: str, credentials: tuple[str, str]) -> Settings:
    auth_id, token = credentials
    return Settings(
        plivo_auth_id=auth_id,
        plivo_auth_token=token,
        plivo_sender_id=SENDER,
        api_keys=(API_KEY, "second-key-for-rotation-0001"),
        api_base_url="http://127.0.0.1:9",  # overridden where reports must really arrive
        redis_url=redis_url,
        send_backoff_base=0.05,
        send_backoff_max=0.5,
        plivo_timeout=2.0,  # so a batch left `sending` is looked at after 6 s
        sweep_interval=0.5,
        dispatch_stale_seconds=2.0,
        worker_metrics_port=free_port(),
        unknown_outcome_grace=15.0,  # longer than the sandbox's report backlog in these tests
    )


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def sandbox(credentials: tuple[str, str]) -> Iterator[tuple[Sandbox, str]]:
    """The Plivo sandbox over real HTTP, in this process so tests can read its record."""
    box = Sandbox(*credentials, seed=7, report_retry_delays=(0.2, 0.5, 1.0))
    server = serve(box, "127.0.0.1", 0)
    yield box, f"http://127.0.0.1:{server.server_address[1]}"
    box.stop()
    server.shutdown()
    server.server_close()


def child_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a deployed process would get: every setting of `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO_", "API_", "REDIS"))}
    for f in fields(settings):
        value = getattr(settings, f.name)
        if value is None:
            continue
        if isinstance(value, bool):
            value = str(value).lower()
        elif isinstance(value, tuple | frozenset):
            value = ",".join(sorted(value) if isinstance(value, frozenset) else value)
        env[f.metadata["env"]] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


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
            f"{self.base_url}/api/bulk-sms/{job_id}", headers={"X-API-Key": API_KEY}, timeout=10
        )
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def wait_for(
        self, job_id: str, done: Callable[[dict[str, Any]], bool], seconds: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            doc = self.status(job_id)
            if done(doc):
                return doc
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} never got there: {doc}\n{self.tail()}")
            time.sleep(0.2)

    def wait_until_quiet(self, seconds: float = 30) -> None:
        """Until the sandbox has posted every report it owes."""
        deadline = time.monotonic() + seconds
        while self.sandbox.report_backlog() and time.monotonic() < deadline:
            time.sleep(0.1)

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        """A Celery worker in its own process group (so a test can kill it whole)."""
        process = _spawn(
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
                f"test-{time.monotonic_ns()}@%h",
            ],
            child_env(self.settings, **env),
        )
        self.processes[f"worker-{process.pid}"] = process
        return process

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


def _spawn(log: Path, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


@pytest.fixture
def stack_overrides() -> dict[str, Any]:
    """Settings the stack runs with beyond the test settings (parametrize to change)."""
    return {}


@pytest.fixture
def stack(
    settings: Settings,
    sandbox: tuple[Sandbox, str],
    tmp_path: Path,
    stack_overrides: dict[str, Any],
) -> Iterator[Stack]:
    box, sandbox_url = sandbox
    port = free_port()
    deployed = replace(
        settings,
        api_base_url=f"http://127.0.0.1:{port}",
        plivo_api_url=sandbox_url,
        **stack_overrides,
    )
    env = child_env(deployed)
    processes = {
        "web": _spawn(
            tmp_path / "web.log",
            [sys.executable, "-m", *gunicorn_command("wsgi:app", f"127.0.0.1:{port}")],
            env,
        ),
    }
    result = Stack(f"http://127.0.0.1:{port}", box, sandbox_url, deployed, processes, tmp_path)
    result.start_worker()
    try:
        wait_for_port(port, processes["web"], "gunicorn", 30)
        yield result
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def fresh_faults(**changes: Any) -> Faults:
    faults = Faults()
    faults.update(changes)
    return faults
