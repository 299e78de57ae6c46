"""gunicorn.conf.py as gunicorn itself reads it (in a process of its own: the file sets the
metrics directory in the environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gunicorn.config
import pytest

from bulksms.devstack.up import gunicorn_command

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


HAS_CONTROL_SOCKET = any(s.name == "control_socket_disable" for s in gunicorn.config.KNOWN_SETTINGS)


def test_no_control_socket(tmp_path: Path) -> None:
    """gunicorn 25+ would open a control socket (runtime reload, worker count) at one path per
    user, taken over by each gunicorn started after it: the service's is off."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # (the file clears it)
    read = subprocess.run(
        [sys.executable, "-c", READ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert read.returncode == 0, read.stderr
    found = json.loads(read.stdout.strip().splitlines()[-1])
    assert found["worker_class"] == "gthread"  # (the file was read)
    if "control_socket_disable" not in found:
        pytest.skip("this gunicorn has no control socket (before 25)")
    assert found["control_socket_disable"] is True


@pytest.mark.skipif(not HAS_CONTROL_SOCKET, reason="this gunicorn has no control socket (<25)")
def test_bulksms_up_s_gunicorn_has_no_control_socket_from_any_directory() -> None:
    """`bulksms up` starts gunicorn wherever its user stands, where no gunicorn.conf.py is."""
    assert "--no-control-socket" in gunicorn_command("wsgi:app", "127.0.0.1:8000")
