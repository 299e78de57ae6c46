"""Start-up checks that need a real process: the worker refuses to start."""

from __future__ import annotations

import subprocess
import sys

WITHOUT_PLIVO = {
    "API_KEY": "k1-aaaaaaaaaaaa, k2-bbbbbbbbbbbb",
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
