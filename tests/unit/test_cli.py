"""The CLI's own parsing, without a service to talk to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from bulksms.api.schemas import SubmitRequest
from bulksms.cli.client import read_numbers
from bulksms.cli.main import main


def test_numbers_from_text_and_csv_files() -> None:
    assert read_numbers("+14155550100\n\n# note\n(415) 555-0101\n") == [
        "+14155550100",
        "(415) 555-0101",
    ]
    assert read_numbers("name,phone\nAda,+14155550100\nBob,+14155550101\n") == [
        "+14155550100",
        "+14155550101",
    ]
    assert read_numbers("+14155550100,Ada\n+14155550101,Bob\n") == ["+14155550100", "+14155550101"]
    assert read_numbers("Name;Mobile\nAda;+14155550100\n") == ["+14155550100"]
    assert read_numbers("contact,note\n+14155550100,x\n") == ["+14155550100"]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, str, str, Any]]:
    """Every API call the CLI makes, as (url, key, path, json body), answered with a job."""
    from bulksms.cli.client import Client

    made: list[tuple[str, str, str, Any]] = []

    def call(self: Client, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        made.append((self.url, self.key, path, kwargs.get("json")))
        return dict(JOB)

    monkeypatch.setattr(Client, "_call", call)
    monkeypatch.chdir(tmp_path)  # no .env, no data/api-key
    for name in ("BULKSMS_URL", "BULKSMS_API_KEY", "API_KEY"):
        monkeypatch.delenv(name, raising=False)
    return made


JOB = {
    "job_id": "0" * 32,
    "state": "queued",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "recipients": {"received": 1, "accepted": 1, "duplicates": 0, "invalid": 0},
    "invalid": [],
    "batches": 1,
    "counts": {},
    "encoding": "GSM-7",
    "estimated_segments": 1,
}


def invoke(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> Result:
    result = CliRunner().invoke(main, list(args), input=stdin, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_send_has_an_option_for_every_field_of_the_request() -> None:
    send = main.commands["send"]
    options = {param.name: param for param in send.params if isinstance(param, click.Option)}
    for name in SubmitRequest.model_fields.keys() - {"recipients"}:
        assert f"--{name.replace('_', '-')}" in options[name].opts
    assert options["message"].required and "-m" in options["message"].opts
    assert "--region" in options["default_region"].opts  # the flag scripts already use


def test_send_builds_the_body_from_the_field_names(calls: list[Any]) -> None:
    invoke(
        "send", "-", "-m", "hello", "--region", "US", "--sender", "", "--priority", "high",
        "--max-segments", "3", "--expiry-seconds", "60", "--send-at", "2030-01-01T09:00:00Z",
        "--key", "k",
        stdin="+14155550100\n(415) 555-0101\n",
    )  # fmt: skip
    [(_, _, path, body)] = calls
    assert path == "/api/bulk-sms"
    assert body == {
        "recipients": ["+14155550100", "(415) 555-0101"],
        "message": "hello",
        "default_region": "US",  # an empty --sender is the service's sender, as it always was
        "priority": "high",
        "max_segments": 3,
        "expiry_seconds": 60,
        "send_at": "2030-01-01T09:00:00Z",
    }
    SubmitRequest.model_validate(body)  # what the CLI sends, the API's schema reads


def test_url_and_key_from_the_group_the_command_or_the_environment(calls: list[Any]) -> None:
    job_id = "0" * 32
    invoke("pause", job_id, env={"BULKSMS_URL": "http://env:1", "API_KEY": "a,b"})
    invoke("--url", "http://group:2", "--key", "g", "resume", job_id)
    invoke("--url", "http://group:2", "--key", "g", "retry", job_id, "--url", "http://cmd:3")
    invoke("cancel", job_id, "--key", "c", env={"BULKSMS_API_KEY": "e", "API_KEY": "x"})
    assert [(url, key) for url, key, _, _ in calls] == [
        ("http://env:1", "a"),  # API_KEY may list several keys: the first is used
        ("http://group:2", "g"),
        ("http://cmd:3", "g"),
        ("http://127.0.0.1:8000", "c"),
    ]
