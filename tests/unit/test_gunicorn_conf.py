"""gunicorn.conf.py as gunicorn itself reads it (in a process of its own: the file sets the
metrics directory in the environment)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READ = """
import json
from gunicorn.app.base import Application
from gunicorn.config import Config
cfg = Config()
for name, value in Application.get_config_from_filename(None, "gunicorn.conf.py").items():
    if name in cfg.settings:
        cfg.set(name, value)
print(json.dumps({n: cfg.settings[n].get() for n in ("control_socket_disable", "worker_class")
                  if n in cfg.settings}))
"""


def test_no_control_socket() -> None:
    """gunicorn 25+ would open a control socket (runtime reload, worker count) at one path per
    user, taken over by each gunicorn started after it: the service's is off."""
    read = subprocess.run(
        [sys.executable, "-c", READ], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert read.returncode == 0, read.stderr
    found = json.loads(read.stdout.strip().splitlines()[-1])
    assert found["worker_class"] == "gthread"  # (the file was read)
    if "control_socket_disable" not in found:
        pytest.skip("this gunicorn has no control socket (before 25)")
    assert found["control_socket_disable"] is True
