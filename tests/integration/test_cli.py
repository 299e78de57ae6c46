"""`bulksms send` and `bulksms status`, as a person at a terminal or a script uses them."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import Stack


def run_in_terminal(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as its output, as a person would see it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        args, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, env=env
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return process.wait(60), b"".join(chunks).decode(errors="replace")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "bulksms.cli", *args]


def test_send_with_wait_shows_progress_and_exits_0(stack: Stack, tmp_path: Path) -> None:
    numbers = us_numbers(1500)
    listing = tmp_path / "list.csv"
    listing.write_text("name,phone\n" + "".join(f"n{i},{n}\n" for i, n in enumerate(numbers)))
    env = {**os.environ, "BULKSMS_URL": stack.base_url, "BULKSMS_API_KEY": API_KEY}
    code, output = run_in_terminal(cli("send", str(listing), "-m", "from the CLI", "--wait"), env)
    assert code == 0, output
    assert "1500 accepted" in output
    assert "final" in output and "delivered" in output and "1500/1500" in output
    assert "completed" in output
    assert stack.sent_numbers() == sorted(numbers)

    job_id = output.split("job ", 1)[1].split(":", 1)[0]
    table = subprocess.run(
        cli("status", job_id), env=env, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 0
    rows = dict(
        line.split(None, 1) for line in table.stdout.splitlines() if len(line.split(None, 1)) == 2
    )
    assert rows["state"].strip() == "completed"
    assert rows["job"].strip() == job_id


def test_a_wrong_key_exits_non_zero_with_one_line(stack: Stack) -> None:
    env = {**os.environ, "BULKSMS_URL": stack.base_url}
    run = subprocess.run(
        cli("send", "-", "-m", "x", "--key", "not-the-key"),
        env=env,
        input="+14155550100\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "bulksms: 401 unauthorized: The API key is not valid."
    ]
    assert stack.sandbox.messages == []


def test_nothing_listening_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    from bulksms.devstack.up import free_port

    run = subprocess.run(
        cli("status", "0" * 32, "--url", f"http://127.0.0.1:{free_port()}", "--key", "k"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 1
    assert len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith("bulksms: cannot reach")


def test_pause_resume_cancel_and_export_from_the_command_line(stack: Stack) -> None:
    env = {**os.environ, "BULKSMS_URL": stack.base_url, "BULKSMS_API_KEY": API_KEY}
    # No worker until the job is cancelled: each command finds it as it says, however slowly
    # the commands start on a busy host.
    stack.kill_workers()
    job_id = stack.submit({"recipients": us_numbers(3000), "message": "cli"}).json()["job_id"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=60)

    assert run("pause", job_id).stdout.strip() == f"job {job_id}: paused"
    assert run("resume", job_id).stdout.strip() == f"job {job_id}: queued"
    assert run("cancel", job_id).stdout.strip() == f"job {job_id}: cancelled"
    stack.start_worker()
    stack.wait_for(job_id, lambda d: d["batches"]["pending"] == 0)
    exported = run("export", job_id)
    assert exported.returncode == 0
    lines = exported.stdout.splitlines()
    assert lines[0] == "number,message_uuid,status,error_code,error,updated_at"
    assert len(lines) == 3001
    assert run("resume", job_id).returncode == 1  # a one-line refusal: not paused


def test_jobs_retry_opt_out_and_delete_from_the_command_line(stack: Stack) -> None:
    env = {**os.environ, "BULKSMS_URL": stack.base_url, "BULKSMS_API_KEY": API_KEY}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            cli(*args), env=env, capture_output=True, text=True, timeout=60, input=stdin
        )

    numbers = us_numbers(30)
    assert run("opt-out", numbers[0]).stdout.strip() == f"{numbers[0]}: opted out"
    stack.sandbox.faults.update({"undelivered_rate": 1.0})
    sent = run("send", "-", "-m", "cli two", "--priority", "high", stdin="\n".join(numbers))
    assert "29 accepted" in sent.stdout
    job_id = sent.stdout.split("job ", 1)[1].split(":", 1)[0]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    assert job_id in run("jobs", "--state", "completed").stdout
    # Every message undelivered, two codes in three retryable: some surely are.
    assert any(m["error_code"] in ("20", "80") for m in stack.sandbox.messages)
    retried = run("retry", job_id)
    assert retried.returncode == 0 and "queued" in retried.stdout
    assert "erased" in run("delete", job_id).stdout
    assert run("opt-out", numbers[0], "--undo").stdout.strip().endswith("opted back in")


def test_send_of_a_contact_file_with_a_template_fills_each_row(
    stack: Stack, tmp_path: Path
) -> None:
    numbers = us_numbers(40)
    contacts = tmp_path / "contacts.csv"
    rows = [f'{n},"Name {i}, Jr.",{i}' for i, n in enumerate(numbers)]
    rows[3] = f"{numbers[3]},,3"  # no name: refused, by its row
    rows.append("junk,Nobody,99")
    rows.append(f"{numbers[0]},Again,0")  # a duplicate: the first row is kept
    contacts.write_bytes(("\ufeffPhone Number,First Name,code\r\n" + "\r\n".join(rows)).encode())
    env = {**os.environ, "BULKSMS_URL": stack.base_url, "BULKSMS_API_KEY": API_KEY}
    run = subprocess.run(
        cli("send", str(contacts), "-m", "Hi {{first_name}}, code {{CODE}}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "39 accepted, 1 duplicates, 2 invalid" in run.stdout
    assert set(run.stderr.splitlines()) == {
        f"  invalid: row 5: '{numbers[3]}' (missing_field: first_name)",
        "  invalid: row 42: 'junk' (not_a_number)",
    }
    job_id = run.stdout.split("job ", 1)[1].split(":", 1)[0]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    expected = {n: f"Hi Name {i}, Jr., code {i}" for i, n in enumerate(numbers) if i != 3}
    assert {m["dst"]: m["text"] for m in stack.sandbox.messages} == expected
    assert len(stack.sandbox.messages) == 39


def jobs_listed(stack: Stack) -> list[Any]:
    listed = requests.get(
        f"{stack.base_url}/api/bulk-sms", headers={"X-API-Key": API_KEY}, timeout=30
    )
    jobs: list[Any] = listed.json()["jobs"]
    return jobs


@pytest.mark.parametrize("stack_overrides", [{"price_per_segment": 0.0075}])
def test_preview_prints_what_send_would_send_and_sends_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    numbers = us_numbers(12)
    contacts = tmp_path / "contacts.csv"
    rows = [f"{n};{'Zoë' if i == 1 else f'N{i}'}" for i, n in enumerate(numbers)]
    contacts.write_text("mobile;name\n" + "\n".join(rows) + "\njunk;x\n")
    env = {**os.environ, "BULKSMS_URL": stack.base_url, "BULKSMS_API_KEY": API_KEY}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    shown = run("preview", str(contacts), "-m", "Hello {{name}}").stdout.splitlines()
    assert shown[:7] == [
        "recipients: 13 received, 12 accepted, 0 duplicates, 1 invalid, 0 suppressed",
        "  invalid: row 14: 'junk' (not_a_number)",
        "encoding: mixed (11 GSM-7, 1 UCS-2)",
        "segments: 12 in all, 1 per message",
        "  12 messages of 1 segment",
        "estimated cost: 0.09",
        "first 5 messages, as sent:",
    ]
    assert shown[7:11] == [
        f"  to {numbers[0]} (1 segment, GSM-7):",
        "    Hello N0",
        f"  to {numbers[1]} (1 segment, UCS-2):",
        "    Hello Zoë",
    ]
    assert len(shown) == 7 + 5 * 2

    # A plain list of numbers, as `send` reads it: the JSON body; --json prints the document.
    listing = tmp_path / "numbers.txt"
    listing.write_text("\n".join(numbers[:3]) + "\n")
    doc = json.loads(run("preview", str(listing), "-m", "same for all", "--json").stdout)
    assert doc["recipients"]["accepted"] == 3 and doc["estimated_cost"] == 0.0225
    assert [m["text"] for m in doc["messages"]] == ["same for all"] * 3
    assert stack.sandbox.messages == [] and jobs_listed(stack) == []


def test_a_big_contact_file_is_uploaded_with_a_progress_bar(stack: Stack, tmp_path: Path) -> None:
    numbers = us_numbers(3000)
    contacts = tmp_path / "big.csv"
    note = "x" * 400  # a column the message does not use: over 1 MB in all
    contacts.write_text(
        "phone,name,note\n" + "".join(f"{n},N{i},{note}\n" for i, n in enumerate(numbers))
    )
    assert contacts.stat().st_size > 1 << 20
    env = {**os.environ, "BULKSMS_URL": stack.base_url, "BULKSMS_API_KEY": API_KEY}
    code, output = run_in_terminal(cli("preview", str(contacts), "-m", "Hi {{name}}"), env)
    assert code == 0, output
    assert f"uploading {contacts.stat().st_size / 1e6:.1f} MB" in output and "100%" in output
    assert "3000 received, 3000 accepted" in output
    assert "    Hi N0" in output
    # Without a terminal: no bar, as scripts read standard error for what went wrong.
    quiet = subprocess.run(
        cli("preview", str(contacts), "-m", "Hi {{name}}"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "3000 accepted" in quiet.stdout
