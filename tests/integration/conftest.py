"""Fixtures for the integration tests: a private Redis server on a free port (flushed for each
test), the sandbox over real HTTP, and the whole stack (gunicorn, a Celery worker) as real
processes. Every test under tests/integration is marked `integration`."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis

from bulksms.config import Settings
from bulksms.devstack.sandbox import Sandbox, serve
from bulksms.devstack.up import free_port, start_redis
from tests.helpers.own_redis import OwnRedis
from tests.helpers.stack import Stack, running_stack

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


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


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test settings, with a port of its own for the worker's metrics."""
    return replace(settings, worker_metrics_port=free_port())


@pytest.fixture
def sandbox(credentials: tuple[str, str]) -> Iterator[tuple[Sandbox, str]]:
    """The Plivo sandbox over real HTTP, in this process so tests can read its record."""
    box = Sandbox(*credentials, seed=7, report_retry_delays=(0.2, 0.5, 1.0))
    server = serve(box, "127.0.0.1", 0, poll_interval=0.05)  # (a quick shutdown)
    yield box, f"http://127.0.0.1:{server.server_address[1]}"
    box.stop()
    server.shutdown()
    server.server_close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A Redis the test may stop and start (for a stack: `stack_overrides` its `url`)."""
    server = OwnRedis(tmp_path / "own-redis")
    yield server
    if server.process and server.process.poll() is None:
        server.stop()


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
    with running_stack(settings, box, sandbox_url, tmp_path, **stack_overrides) as result:
        yield result
