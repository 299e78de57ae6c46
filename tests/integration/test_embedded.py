"""`bulksms up`, as a new user runs it (after `cp .env.example .env`): the printed curl sends a
job that reaches `completed`; every line its children print carries the child's name.

It is closed to the machine's other users and to web pages: Flower needs its login (and refuses
cross-site requests), Redis its password on its port and its socket, the worker's metrics listen
on the stack's host only, the data folder is its owner's, and no secret shows in `ps` or a log
line. One `bulksms up` serves every test of this module; the last one stops it with Ctrl-C."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from bulksms.devstack.up import (
    FLOWER_USER,
    RESTART_LIMIT,
    Supervisor,
    free_port,
    wait_for_http,
)

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 240  # `bulksms up` on a busy machine: its children's start-up, then /readyz
OLD_KEY = "short-key-of-an-old-run"  # bulksms up made these before keys had to be 32 long


def in_session(session: int) -> list[str]:
    """The processes of a session (each child of `bulksms up` leads a process group of its own,
    in `bulksms up`'s session), with whole command lines (-ww: else ps may cut them short)."""
    ps = shutil.which("ps") or "/bin/ps"
    listing = subprocess.run(
        [ps, "-A", "-ww", "-o", "sess=,pid=,command="], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listing.splitlines() if line.split()[0] == str(session)]


def send_like_curl(command: str) -> requests.Response:
    """Do what the printed `curl -s -X POST URL -H .. -H .. -d ..` does."""
    words = shlex.split(command)
    assert words[:4] == ["curl", "-s", "-X", "POST"]
    headers = dict(w.split(": ", 1) for w in words[words.index("-H") + 1 :: 2][:2])
    return requests.post(words[4], data=words[-1].encode(), headers=headers, timeout=30)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@dataclass
class Up:
    """A running `bulksms up`, and every line it has printed (a thread reads them as they come,
    so its children never wait on a full pipe)."""

    process: subprocess.Popen[str]
    folder: Path
    port: int
    flower_port: int
    metrics_port: int
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None  # reads `lines` until its output ends

    @property
    def data(self) -> Path:
        return self.folder / "data"

    def read(self) -> None:
        assert self.process.stdout
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, marker: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not any(marker in line for line in list(self.lines)):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("bulksms up never got ready:\n" + "\n".join(self.lines[-60:]))
            time.sleep(0.1)

    def line(self, start: str) -> str:
        """The first line it printed that starts with `start`, without its indent."""
        return next(line.strip() for line in self.lines if line.strip().startswith(start))

    def secret(self, name: str) -> str:
        return (self.data / name).read_text().strip()

    def stop(self) -> None:
        """What Ctrl-C does; then whatever it left is killed (the test that stops it says so)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(40)
        finally:
            if self.process.poll() is None:
                for line in in_session(self.process.pid):
                    os.kill(int(line.split()[1]), signal.SIGKILL)
                self.process.wait(10)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    folder = tmp_path_factory.mktemp("up")
    port, flower_port, metrics_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO_", "API_", "REDIS"))}
    env["WORKER_METRICS_PORT"] = str(metrics_port)  # not .env.example's 9808: another may run
    # `cp .env.example .env`, and what a .env made for production also holds: bulksms up sets
    # those aside (its own Redis; the sandbox's reports come to this machine) and says so.
    dotenv = (ROOT / ".env.example").read_text()
    dotenv += "REDIS_URL=redis://127.0.0.1:1/0\nAPI_BASE_URL=https://sms.example.com\n"
    (folder / ".env").write_text(dotenv)
    # A data folder an older bulksms up left: open to everyone, with a key now too short.
    data = folder / "data"
    data.mkdir()
    data.chmod(0o755)
    (data / "api-key").write_text(OLD_KEY + "\n")
    (data / "api-key").chmod(0o644)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bulksms.cli",
            "up",
            "--port",
            str(port),
            "--flower-port",
            str(flower_port),
            "--data-dir",
            str(data),
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its session: nothing it started may outlive it
    )
    running = Up(process, folder, port, flower_port, metrics_port)
    reader = running.reader = threading.Thread(target=running.read, daemon=True)
    reader.start()
    try:
        running.wait_for("Ctrl-C stops everything", START_SECONDS)
        yield running
    finally:
        running.stop()
        reader.join(10)
        assert process.stdout
        process.stdout.close()


def test_bulksms_up_runs_the_whole_flow_on_the_sandbox(up: Up) -> None:
    lines = list(up.lines)
    text = "\n".join(lines)
    assert "SANDBOX" in text
    assert "REDIS_URL is set, but bulksms up runs its own Redis" in text
    assert "API_BASE_URL=https://sms.example.com is ignored" in text
    labels = {line.split(" | ", 1)[0] for line in lines if " | " in line}
    # (It announces itself once /readyz/workers answers: a worker is up, and has said so.)
    assert {"redis  ", "sandbox", "web    ", "worker ", "flower "} <= labels
    key = up.secret("api-key")
    assert f"API key   {key}" in text
    # One pace for the service and its sandbox, fast enough for the example.
    assert "Pace      200 messages a second (PLIVO_MPS, and the sandbox's queue)" in text
    answer = send_like_curl(up.line("curl -s -X POST"))
    assert answer.status_code == 202, answer.text
    assert answer.json()["estimated_duration_seconds"] == 0.015  # 3 at 200 a second
    job_url = f"http://127.0.0.1:{up.port}{answer.headers['Location']}"
    deadline = time.monotonic() + 120
    while True:
        doc = requests.get(job_url, headers={"X-API-Key": key}, timeout=10).json()
        if doc["state"] == "completed" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert doc["state"] == "completed", doc
    assert doc["recipients"]["accepted"] == 3
    assert sum(doc["counts"][s] for s in ("delivered", "undelivered", "failed")) == 3
    assert (up.data / "redis" / "appendonly.aof").exists()
    # Started where no gunicorn.conf.py is, its gunicorn still ran on the app's settings: its
    # access lines are JSON, as the app's are (gunicorn's own default is text).
    up.wait_for('"POST /api/bulk-sms', 60)  # (the access line: written after the 202)
    access = next(line for line in list(up.lines) if '"POST /api/bulk-sms' in line)
    assert access.startswith("web ") and '"logger": "gunicorn.access"' in access, access
    assert json.loads(access.split(" | ", 1)[1])["level"] == "INFO"


def test_a_key_too_short_from_an_older_run_is_replaced_and_said_so(up: Up) -> None:
    key = up.secret("api-key")
    assert key != OLD_KEY and len(key) >= 32
    text = "\n".join(up.lines)
    assert f"the API key in {up.data / 'api-key'} was shorter than 32 characters" in text
    assert f"API key   {key}   (generated; kept in {up.data / 'api-key'})" in text
    refused = requests.get(
        f"http://127.0.0.1:{up.port}/api/bulk-sms/x", headers={"X-API-Key": OLD_KEY}, timeout=10
    )
    assert refused.status_code == 401


def test_flower_needs_its_login_and_refuses_cross_site_requests(up: Up) -> None:
    password = up.secret("flower-password")
    assert len(password) >= 32
    flower = f"http://127.0.0.1:{up.flower_port}"
    assert up.line("Flower ") == (
        f"Flower    http://127.0.0.1:{up.flower_port}/   (user {FLOWER_USER}, password "
        f"{password}; kept in {up.data / 'flower-password'})"
    )
    login = (FLOWER_USER, password)
    # Ready: it answers its health check (which needs no login), and a signed-in API call.
    wait_for_http(f"{flower}/healthcheck", 60, what="Flower")
    deadline = time.monotonic() + 120
    while True:
        answer = requests.get(
            f"{flower}/api/workers", params={"refresh": 1}, auth=login, timeout=30
        )
        assert answer.status_code == 200, answer.text
        if answer.json():
            break
        assert time.monotonic() < deadline, "Flower never saw the worker"
        time.sleep(0.3)
    workers = answer.json()
    assert any(name.startswith("bulksms@") for name in workers)

    for path in ("/", "/api/workers", "/api/tasks"):
        assert requests.get(flower + path, timeout=10).status_code == 401, path
        wrong = requests.get(flower + path, auth=(FLOWER_USER, "guess"), timeout=10)
        assert wrong.status_code == 401, path
    # What a web page in the browser can send without a preflight: a text/plain POST, from
    # another origin (with the browser's fetch metadata, or only its Origin), with or without
    # credentials the browser has cached for Flower.
    run = f"{flower}/api/task/async-apply/bulksms.fan_out"
    body = '{"args": ["no-such-job"]}'
    plain = {"Content-Type": "text/plain"}
    cross_site = {**plain, "Origin": "http://attacker.example", "Sec-Fetch-Site": "cross-site"}
    cross_origin = {**plain, "Origin": "http://attacker.example"}
    assert requests.post(run, data=body, headers=plain, timeout=10).status_code == 401
    for headers in (cross_site, cross_origin):
        for auth in (None, login):
            answer = requests.post(run, data=body, headers=headers, auth=auth, timeout=10)
            assert answer.status_code == 403, (headers, auth, answer.status_code)
            assert "Access-Control-Allow-Origin" not in answer.headers
    # With the login, and from Flower's own origin, the API takes a POST (an unknown task: 404
    # after the login was checked; nothing runs).
    own = {**plain, "Origin": flower, "Sec-Fetch-Site": "same-origin"}
    unknown = f"{flower}/api/task/async-apply/bulksms.no_such_task"
    assert requests.post(unknown, data=body, headers=own, auth=login, timeout=10).status_code == 404


def test_redis_needs_the_password_on_its_port_and_its_socket(up: Up) -> None:
    password = up.secret("redis-password")
    where = up.line("Redis ").split()[1:4]  # 127.0.0.1:PORT and /…/redis.sock
    port = int(where[0].removeprefix("127.0.0.1:"))
    sock = where[2]
    assert where[1] == "and" and sock == str((up.data / "redis" / "redis.sock").resolve())
    for family, address in ((socket.AF_INET, ("127.0.0.1", port)), (socket.AF_UNIX, sock)):
        with socket.socket(family) as raw:
            raw.settimeout(10)
            raw.connect(address)
            raw.sendall(b"PING\r\nKEYS *\r\n")
            answer = b""
            while answer.count(b"\r\n") < 2:
                chunk = raw.recv(4096)
                assert chunk, answer
                answer += chunk
            assert answer.startswith(b"-NOAUTH"), answer
            assert answer.count(b"-NOAUTH") == 2, answer
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host="127.0.0.1", port=port).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(unix_socket_path=sock, password="guess").ping()
    assert redis.Redis(host="127.0.0.1", port=port, password=password).ping()
    assert redis.Redis.from_url(f"unix://:{password}@{sock}?db=0").ping()


def test_the_data_folder_and_its_secrets_are_its_owners_only(up: Up) -> None:
    for folder in (up.data, up.data / "redis", up.data / "metrics"):
        assert mode(folder) == 0o700, folder  # (the data folder was 0755 before: tightened)
    for name in ("api-key", "secret-key", "flower-password", "redis-password"):
        assert mode(up.data / name) == 0o600, name
    assert mode(up.data / "redis" / "appendonly.aof") & 0o077 == 0  # numbers and texts


def test_the_worker_metrics_listen_on_the_stacks_host_only(up: Up) -> None:
    url = f"http://127.0.0.1:{up.metrics_port}/metrics"
    assert up.line("Metrics ").endswith(f"the worker's at {url}")
    wait_for_http(url, 120, what="the worker's metrics")
    port = f"{up.metrics_port:04X}"
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            if state == "0A" and local.endswith(f":{port}"):
                listening.append(local)
    assert listening == [f"0100007F:{port}"]  # 127.0.0.1, not 0.0.0.0 or ::


def test_no_secret_shows_in_a_command_line_or_a_log_line(up: Up) -> None:
    flower_password = up.secret("flower-password")
    redis_password = up.secret("redis-password")
    sessions = in_session(up.process.pid)
    flower = [line for line in sessions if " flower " in f"{line} "]
    assert len(flower) == 1, sessions
    pid = int(flower[0].split()[1])
    # Flower's login reaches it in its environment (only its user may read that), never on its
    # command line (which `ps` shows every user).
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert f"FLOWER_BASIC_AUTH={FLOWER_USER}:{flower_password}".encode() in environ
    for line in sessions:
        cmdline = Path(f"/proc/{line.split()[1]}/cmdline").read_bytes()
        assert flower_password.encode() not in cmdline
        assert redis_password.encode() not in cmdline
    lines = list(up.lines)
    assert not [line for line in lines if redis_password in line]
    assert [line.strip() for line in lines if flower_password in line] == [up.line("Flower ")]
    # Celery's banner and Flower's name the broker, with its password masked.
    assert any(re.search(r"worker .*transport: +redis\+socket://:\*\*@/", x) for x in lines)
    assert any(re.search(r"flower .*Broker: redis\+socket://:\*\*@/", x) for x in lines)


def test_ctrl_c_stops_everything(up: Up) -> None:
    """(Last: it stops the `bulksms up` of this module.)"""
    up.stop()
    assert up.process.returncode == 0
    assert in_session(up.process.pid) == []  # every process it started has stopped
    # Each child stopped before what it needs (the worker before Redis): nothing errs on the way.
    assert up.reader is not None
    up.reader.join(10)  # (its last lines)
    lines = list(up.lines)
    stopping = next(i for i, line in enumerate(lines) if "bulksms up: stopping" in line)
    assert not [line for line in lines[stopping:] if '"level": "ERROR"' in line]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", up.port)) != 0  # the web app stopped with it


def test_each_line_is_labelled_with_its_child_and_never_split() -> None:
    """Two children write long lines at once (longer than a pipe writes in one piece): each
    comes out whole, on its own line, behind its child's name."""
    out = io.StringIO()
    supervisor = Supervisor(out=out)
    script = (
        "import sys\n"
        "for i in range(200): sys.stdout.write(f'{sys.argv[1]} {i} ' + 'x' * 9000 + '\\n')"
    )
    for name in ("web", "worker"):
        supervisor.spawn(name, [sys.executable, "-c", script, name], os.environ)
    for _, child in supervisor.children:
        child.wait(60)
    supervisor.stop()
    lines = out.getvalue().splitlines()
    seen: dict[str, list[int]] = {"web": [], "worker": []}
    for line in lines:
        label, text = line.split(" | ", 1)
        assert label in ("web    ", "worker ")
        name, number, xs = text.split(" ")
        assert name == label.rstrip() and xs == "x" * 9000
        seen[name].append(int(number))
    assert seen == {"web": list(range(200)), "worker": list(range(200))}


def test_a_child_that_exits_is_started_again_until_it_keeps_exiting() -> None:
    """A worker that dies (a Redis restart, an OOM kill) must not take `bulksms up` down with
    it: it is started again, as docker-compose's restart policy does; one that exits every time
    is given up on, and says so."""
    out = io.StringIO()
    supervisor = Supervisor(out=out, restart_delay=0.01)
    supervisor.spawn("worker", [sys.executable, "-c", "print('started')"], os.environ)
    problems: list[str] = []
    deadline = time.monotonic() + 60
    while not problems and time.monotonic() < deadline:
        problem = supervisor.revive()
        if problem:
            problems.append(problem)
        time.sleep(0.05)
    supervisor.stop()
    assert problems == [f"worker exited with status 0, {RESTART_LIMIT + 1} times within 120 s"]
    assert out.getvalue().count("started") == RESTART_LIMIT + 1
