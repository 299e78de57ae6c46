"""Start-up checks that need a real process: the worker refuses to start."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import redis

from bulksms.api.app import create_app
from bulksms.config import ConfigError, Settings
from bulksms.devstack.up import free_port, redis_server_binary
from bulksms.worker.app import create_worker

WITHOUT_PLIVO = {
    "API_KEY": "k1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, k2-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
    "API_BASE_URL": "https://sms.example.com/",
    "REDIS_URL": "redis://127.0.0.1:6399/0",
    "PATH": "/usr/bin:/bin",
}


def test_the_worker_refuses_to_start_without_plivo_credentials() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "bulksms.worker.main", "worker", "--pool", "solo"],
        env=WITHOUT_PLIVO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN" in run.stderr + run.stdout
    assert "Traceback" not in run.stderr


def test_the_web_app_without_settings_says_what_to_set_in_one_line(tmp_path: Path) -> None:
    """gunicorn stops (the app failed to load) instead of booting workers forever."""
    run = subprocess.run(
        [sys.executable, "-m", "gunicorn", "bulksms.api.wsgi:app", "-b", "127.0.0.1:0"],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # no .env here
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = [line for line in run.stderr.splitlines() if line.startswith("bulksms web:")]
    assert lines == [
        "bulksms web: Set REDIS_URL, API_KEY, API_BASE_URL, SECRET_KEY in the environment or in "
        ".env before starting (see .env.example)."
    ]


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl"])
def test_a_redis_that_may_evict_job_state_is_refused_at_start(
    settings: Settings, rdb: redis.Redis, policy: str
) -> None:
    """Job keys carry TTLs: under an evicting policy a full Redis would drop batches, and with
    them the record that they were sent. Web and worker refuse to start on one."""
    rdb.config_set("maxmemory-policy", policy)
    try:
        with pytest.raises(ConfigError, match=f"maxmemory-policy is '{policy}'"):
            create_app(settings)
        with pytest.raises(ConfigError, match="noeviction"):
            create_worker(settings)
    finally:
        rdb.config_set("maxmemory-policy", "noeviction")
    create_app(settings)  # and starts on the safe one


def _cluster_node_port() -> int:
    """A free port whose cluster bus (the port + 10000, fixed in Redis 6) is free and valid: an
    ephemeral port above 55535 has none, and the node exits at once."""
    for _ in range(200):
        port = random.randint(20000, 55535)
        try:
            with socket.socket() as a, socket.socket() as b:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise AssertionError("no free pair of ports for a cluster node")


def test_a_redis_cluster_is_refused_at_start(settings: Settings, tmp_path: Path) -> None:
    """Some scripts and a call's record use keys of several jobs at once, which a cluster
    refuses (CROSSSLOT): web and worker refuse to start on one rather than fail jobs later."""
    port = _cluster_node_port()
    log = tmp_path / "redis.log"
    node = subprocess.Popen(
        [
            redis_server_binary(),
            "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(tmp_path), "--cluster-enabled", "yes",
            "--cluster-config-file", str(tmp_path / "nodes.conf"), "--logfile", str(log),
        ],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = redis.Redis(port=port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 30
        while True:  # until it answers (a busy host may take a while to start it)
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                alive = node.poll() is None and time.monotonic() < deadline
                assert alive, f"no redis-server: {log.read_text() if log.exists() else ''}"
                time.sleep(0.05)
        on_cluster = replace(settings, redis_url=f"redis://127.0.0.1:{port}/0")
        with pytest.raises(ConfigError, match="cluster mode"):
            create_app(on_cluster)
        with pytest.raises(ConfigError, match="single Redis primary"):
            create_worker(on_cluster)
    finally:
        node.terminate()
        node.wait(15)


def test_a_redis_out_of_reach_at_start_is_warned_of(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Web and worker start without Redis (it may come up after them), saying what they could
    not check."""
    away = replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level("WARNING"):
        create_app(away)
    assert "maxmemory-policy" in caplog.text and "must not be cluster" in caplog.text
