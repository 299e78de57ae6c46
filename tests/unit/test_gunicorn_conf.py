"""The web app's gunicorn settings as gunicorn itself reads them: from the checkout's
gunicorn.conf.py, and from `bulksms up`'s command line in a directory with no such file (each in
a process of its own: the settings set the metrics directory in the environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bulksms.devstack.up import gunicorn_command

ROOT = Path(__file__).resolve().parents[2]
# gunicorn's own start: its command line parsed, its configuration loaded (the app is not).
READ = """
import json, sys
from gunicorn.app.wsgiapp import WSGIApplication
sys.argv = json.loads(sys.argv[1])
cfg = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]").cfg
names = ("bind", "workers", "threads", "worker_connections", "worker_class", "keepalive",
         "accesslog", "control_socket_disable")
found = {n: cfg.settings[n].get() for n in names if n in cfg.settings}
found["json_logs"] = "json" in (cfg.logconfig_dict.get("formatters") or {})
found["child_exit"] = cfg.child_exit.__module__
print(json.dumps(found))
"""


def read(argv: list[str], cwd: Path, metrics: Path) -> dict[str, Any]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)}  # (the settings clear it)
    env.pop("GUNICORN_CMD_ARGS", None)
    done = subprocess.run(
        [sys.executable, "-c", READ, json.dumps(argv)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def assert_the_apps_settings(found: dict[str, Any]) -> None:
    assert found["worker_class"] == "gthread"
    assert found["keepalive"] == 5  # under nginx's 4 s to its upstream (deploy/nginx/)
    assert found["accesslog"] == "-"
    # A process takes at most twice its threads in connections, so that clients connecting at
    # once are spread over the processes (tests/integration/test_web_connections.py).
    assert found["worker_connections"] == 2 * found["threads"]
    assert found["json_logs"] is True  # gunicorn's lines as JSON, like the app's
    assert found["child_exit"] == "bulksms.api.gunicorn_conf"  # a dead worker's metrics go
    # gunicorn 25+ would open a control socket (runtime reload, worker count) at one path per
    # user, taken over by each gunicorn started after it: the service's is off.
    if "control_socket_disable" in found:  # (before 25 there is none)
        assert found["control_socket_disable"] is True


def test_gunicorn_conf_py_in_the_checkout_is_the_apps_settings(tmp_path: Path) -> None:
    found = read(["gunicorn", "wsgi:app"], ROOT, tmp_path)
    assert_the_apps_settings(found)
    assert found["threads"] == 4  # production's sizing
    assert found["bind"] == ["0.0.0.0:8000"]


def test_bulksms_up_s_gunicorn_has_the_apps_settings_from_any_directory(tmp_path: Path) -> None:
    """`bulksms up` starts gunicorn wherever its user stands, where no gunicorn.conf.py is:
    before the settings were named on its command line, that gunicorn ran on gunicorn's own
    defaults (a control socket, text logs, a dead worker's metrics kept)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    argv = gunicorn_command("bulksms.api.wsgi:app", "127.0.0.1:8123")
    found = read(argv, elsewhere, tmp_path / "metrics")
    assert_the_apps_settings(found)
    assert (found["workers"], found["threads"]) == (2, 8)  # one machine's sizing wins
    assert found["bind"] == ["127.0.0.1:8123"]
