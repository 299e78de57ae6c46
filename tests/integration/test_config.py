"""Start-up checks that need a real process: the worker refuses to start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
        "bulksms web: Set REDIS_URL, API_KEY, API_BASE_URL in the environment or in .env before "
        "starting (see .env.example)."
    ]
