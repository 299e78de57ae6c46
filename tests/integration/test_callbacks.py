"""Completion callbacks: signed, with a timestamp the receiver checks, retried until a 2xx;
only to public addresses unless the operator allows private ones."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask

from bulksms import callback_address
from bulksms.api.app import create_app
from bulksms.config import Settings
from bulksms.devstack.numbers_gen import us_numbers
from bulksms.store import RATE_LIMIT_PREFIX
from bulksms.worker import completion_callback as callbacks
from tests.helpers import API_KEY
from tests.helpers.stack import Stack, wait_until

SECRET = "callback-secret-for-tests"


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.calls: list[tuple[bytes, str]] = []
        self.hosts: list[str] = []
        self.refuse_first = 1


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.calls.append((body, self.headers.get(callbacks.SIGNATURE_HEADER, "")))
        self.server.hosts.append(self.headers.get("Host", ""))
        refuse = self.server.refuse_first > 0
        self.server.refuse_first -= 1
        self.send_response(500 if refuse else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# The receiver is on loopback: allowed here, as an operator allows an internal receiver.
@pytest.mark.parametrize(
    "stack_overrides", [{"callback_secret": SECRET, "callback_allow_private": True}]
)
def test_a_finished_job_calls_back_signed_and_retries_until_taken(
    stack: Stack, stack_overrides: dict[str, str], receiver: Receiver
) -> None:
    url = f"http://127.0.0.1:{receiver.server_address[1]}/done"
    job_id = stack.submit(
        {"recipients": us_numbers(3), "message": "tell me", "callback_url": url}
    ).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    wait_until(lambda: len(receiver.calls) >= 2, what="the callback refused, then taken")
    # Never again: a few sweeps later there is still no third call (a slow machine can only
    # make this look shorter, never make it fail).
    time.sleep(5 * stack.settings.sweep_interval)
    assert len(receiver.calls) == 2
    body, header = receiver.calls[-1]
    assert callbacks.verify(body, header, SECRET)
    document = json.loads(body)
    assert document["job_id"] == job_id and document["state"] == "completed"


def test_a_callback_needs_a_secret_configured(client: Any) -> None:
    from tests.helpers import API_KEY

    answer = client.post(
        "/api/bulk-sms",
        json={
            "recipients": ["+14155550100"],
            "message": "x",
            "callback_url": "http://127.0.0.1:9/x",
        },
        headers={"X-API-Key": API_KEY},
    )
    assert answer.status_code == 422
    assert answer.get_json()["error"] == "callbacks_not_configured"


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/x", "http://0x7f000001/x", "http://169.254.169.254/", "http://[::1]/x"],
)
def test_a_callback_into_the_internal_network_is_refused_at_submit(
    app: Flask, settings: Settings, url: str
) -> None:
    client = create_app(replace(settings, callback_secret=SECRET)).test_client()
    answer = client.post(
        "/api/bulk-sms",
        json={"recipients": ["+14155550100"], "message": "x", "callback_url": url},
        headers={"X-API-Key": API_KEY},
    )
    assert answer.status_code == 422
    assert answer.get_json()["error"] == "callback_url_not_allowed"
    assert "not a public address" in answer.get_json()["message"]


def test_delivery_checks_the_address_again_and_connects_to_it(receiver: Receiver) -> None:
    """A URL accepted once (the operator allowed private addresses then, or its name resolved
    elsewhere) is checked again when the job ends: the worker never connects to it."""
    url = f"http://localhost:{receiver.server_address[1]}/done"
    with pytest.raises(callback_address.NotAllowed):
        callbacks.deliver(url, {"job_id": "j"}, SECRET, allow_private=False)
    assert receiver.calls == []
    receiver.refuse_first = 0
    assert callbacks.deliver(url, {"job_id": "j"}, SECRET, allow_private=True)
    # Reached by the address checked, with the URL's own Host header and a good signature.
    assert receiver.hosts == [f"localhost:{receiver.server_address[1]}"]
    body, header = receiver.calls[0]
    assert callbacks.verify(body, header, SECRET)


@pytest.mark.parametrize("url", ["http://[::1", "http://[", "https://]x", "http://x]/"])
def test_a_callback_url_that_is_not_a_url_is_refused_and_changes_nothing(
    client: Any, rdb: Any, url: str
) -> None:
    """Python's URL parser raises on an unclosed IPv6 bracket: a clear 422 everywhere a
    callback_url is read (an alert's fast path, the general path, a preview, a contact file),
    not a 500, and nothing stored."""
    numbers = us_numbers(2)

    def stored() -> set[str]:  # (but for the submit limit's counters)
        return {k for k in map(str, rdb.keys("*")) if RATE_LIMIT_PREFIX not in k}

    before = stored()
    json_posts = [
        ("/api/bulk-sms", numbers[:1]),  # an alert: the fast path
        ("/api/bulk-sms", numbers),
        ("/api/bulk-sms/preview", numbers),
    ]
    answers = [
        client.post(
            path,
            json={"recipients": to, "message": "x", "callback_url": url},
            headers={"X-API-Key": API_KEY},
        )
        for path, to in json_posts
    ]
    answers.append(
        client.post(
            "/api/bulk-sms",
            data={
                "message": "x",
                "callback_url": url,
                "recipients": (io.BytesIO("\n".join(["phone", *numbers]).encode()), "to.csv"),
            },
            headers={"X-API-Key": API_KEY},
            content_type="multipart/form-data",
        )
    )
    for answer in answers:
        assert answer.status_code == 422, answer.get_data(as_text=True)
        assert answer.get_json()["error"] == "invalid_callback_url"
    assert stored() == before
