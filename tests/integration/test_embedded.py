"""`bulksms up`, as a new user runs it (after `cp .env.example .env`): the printed curl sends a
job that reaches `completed`; every line its children print carries the child's name."""

from __future__ import annotations

import io
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from bulksms.devstack.up import RESTART_LIMIT, Supervisor, free_port

ROOT = Path(__file__).resolve().parents[2]


def read_until(process: subprocess.Popen[str], marker: str, seconds: float) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    assert process.stdout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError("bulksms up never got ready:\n" + "\n".join(lines[-60:]))


def in_session(session: int) -> list[str]:
    """The processes of a session (each child of `bulksms up` leads a process group of its own,
    in `bulksms up`'s session)."""
    ps = shutil.which("ps") or "/bin/ps"
    listing = subprocess.run(
        [ps, "-A", "-o", "sess=,pid=,command="], capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listing.splitlines() if line.split()[0] == str(session)]


def send_like_curl(command: str) -> requests.Response:
    """Do what the printed `curl -s -X POST URL -H .. -H .. -d ..` does."""
    words = shlex.split(command)
    assert words[:4] == ["curl", "-s", "-X", "POST"]
    headers = dict(w.split(": ", 1) for w in words[words.index("-H") + 1 :: 2][:2])
    return requests.post(words[4], data=words[-1].encode(), headers=headers, timeout=30)


def test_bulksms_up_runs_the_whole_flow_on_the_sandbox(tmp_path: Path) -> None:
    port, flower_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLIVO_", "API_", "REDIS"))}
    # `cp .env.example .env`, and what a .env made for production also holds: bulksms up sets
    # those aside (its own Redis; the sandbox's reports come to this machine) and says so.
    dotenv = (ROOT / ".env.example").read_text()
    dotenv += "REDIS_URL=redis://127.0.0.1:1/0\nAPI_BASE_URL=https://sms.example.com\n"
    (tmp_path / ".env").write_text(dotenv)
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
            str(tmp_path / "data"),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its session: nothing it started may outlive it
    )
    try:
        lines = read_until(process, "Ctrl-C stops everything", 120)
        text = "\n".join(lines)
        assert "SANDBOX" in text
        assert "REDIS_URL is set, but bulksms up runs its own Redis" in text
        assert "API_BASE_URL=https://sms.example.com is ignored" in text
        labels = {line.split(" | ", 1)[0] for line in lines if " | " in line}
        # (It announces itself once /readyz/workers answers: a worker is up, and has said so.)
        assert {"redis  ", "sandbox", "web    ", "worker ", "flower "} <= labels
        key = (tmp_path / "data" / "api-key").read_text().strip()
        assert f"API key   {key}" in text
        # One pace for the service and its sandbox, fast enough for the example.
        assert "Pace      200 messages a second (PLIVO_MPS, and the sandbox's queue)" in text
        curl = next(line.strip() for line in lines if line.strip().startswith("curl -s -X POST"))
        answer = send_like_curl(curl)
        assert answer.status_code == 202, answer.text
        assert answer.json()["estimated_duration_seconds"] == 0.015  # 3 at 200 a second
        job_url = f"http://127.0.0.1:{port}{answer.headers['Location']}"
        deadline = time.monotonic() + 120
        while True:
            doc = requests.get(job_url, headers={"X-API-Key": key}, timeout=10).json()
            if doc["state"] == "completed" or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        assert doc["state"] == "completed", doc
        assert doc["recipients"]["accepted"] == 3
        assert sum(doc["counts"][s] for s in ("delivered", "undelivered", "failed")) == 3
        flower = requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=10)
        assert flower.status_code == 200
        assert (tmp_path / "data" / "redis" / "appendonly.aof").exists()
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            process.wait(40)
        finally:
            if process.poll() is None:
                for line in in_session(process.pid):
                    os.kill(int(line.split()[1]), signal.SIGKILL)
                process.wait(10)
            assert process.stdout
            process.stdout.close()
    assert process.returncode == 0
    assert in_session(process.pid) == []  # every process it started has stopped
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # the web app stopped with it


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
