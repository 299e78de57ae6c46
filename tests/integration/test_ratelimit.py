"""Rate limits on the real Redis: per key, JSON 429 with Retry-After, reports never limited."""

from __future__ import annotations

import json
from dataclasses import replace

from flask.testing import FlaskClient

from bulksms import create_app
from bulksms.config import Settings
from tests.helpers import API_KEY, SECOND_API_KEY
from tests.helpers.webhook import params, report, submit

BODY = json.dumps({"recipients": ["+14155550100"], "message": "x"})


def send(client: FlaskClient, key: str = API_KEY) -> int:
    return client.post(
        "/api/bulk-sms", data=BODY, headers={"X-API-Key": key, "Content-Type": "application/json"}
    ).status_code


def test_submits_are_limited_per_key_with_a_json_429(settings: Settings) -> None:
    client = create_app(replace(settings, rate_limit_submit="2/minute")).test_client()
    assert [send(client), send(client)] == [202, 202]
    answer = client.post(
        "/api/bulk-sms",
        data=BODY,
        headers={"X-API-Key": API_KEY, "Content-Type": "application/json"},
    )
    assert answer.status_code == 429
    assert answer.get_json()["error"] == "rate_limited"
    assert int(answer.headers["Retry-After"]) > 0
    assert send(client, SECOND_API_KEY) == 202  # another key, its own budget


def test_reads_have_their_own_budget(settings: Settings) -> None:
    client = create_app(
        replace(settings, rate_limit_read="1/minute", rate_limit_submit="5/minute")
    ).test_client()
    assert send(client) == 202
    headers = {"X-API-Key": API_KEY}
    assert client.get("/api/bulk-sms/" + "0" * 32, headers=headers).status_code == 404
    assert client.get("/api/bulk-sms/" + "0" * 32, headers=headers).status_code == 429
    assert send(client) == 202


def test_wrong_and_missing_keys_are_limited_per_address(settings: Settings) -> None:
    client = create_app(replace(settings, rate_limit_bad_keys="3/minute")).test_client()
    wrong = "a-guess-of-the-right-length-0123456789"
    answers = [send(client, wrong), send(client, wrong)]
    answers.append(client.get("/api/bulk-sms/" + "0" * 32).status_code)  # no key at all
    assert answers == [401, 401, 401]
    refused = client.get("/api/bulk-sms/" + "0" * 32, headers={"X-API-Key": wrong})
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    assert send(client, wrong) == 429  # the submit's fast path hands wrong keys to the same check
    # The right key from the same address is not held back by the guesses.
    assert send(client) == 202
    other = client.get(
        "/api/bulk-sms/" + "0" * 32,
        headers={"X-API-Key": wrong},
        environ_base={"REMOTE_ADDR": "127.0.0.2"},
    )
    assert other.status_code == 401  # another address, its own count


def test_only_bad_signatures_are_throttled(settings: Settings) -> None:
    client = create_app(replace(settings, rate_limit_bad_signatures="2/minute")).test_client()
    job_id = submit(client, ["+14155550100"])
    bad = [
        report(client, settings, job_id, params("sent"), key="wrong").status_code for _ in range(3)
    ]
    assert bad == [403, 403, 429]
    # Plivo's own reports from the same address still get through, however many.
    for status in ("queued", "sent", "delivered", "delivered", "delivered"):
        assert report(client, settings, job_id, params(status)).status_code == 204


def test_forwarded_addresses_count_only_from_the_proxy(settings: Settings) -> None:
    """PROXY_COUNT=1: X-Forwarded-For names the client only when the proxy sends it. A client
    reaching gunicorn itself cannot rotate the header to escape the bad-signature limit."""
    client = create_app(
        replace(settings, rate_limit_bad_signatures="2/minute", proxy_count=1)
    ).test_client()
    url = "/api/webhooks/plivo/inbound"

    def bad(peer: str, forwarded: str) -> int:
        return client.post(
            url,
            data={"Text": "STOP"},
            headers={"X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": peer},
        ).status_code

    direct = [bad("10.9.8.7", f"203.0.113.{n}") for n in range(3)]
    assert direct == [403, 403, 429]  # one address, whatever the header says
    # Through the proxy (127.0.0.1, FORWARDED_ALLOW_IPS' default): each client its own count.
    assert [bad("127.0.0.1", "198.51.100.1") for _ in range(3)] == [403, 403, 429]
    assert bad("127.0.0.1", "198.51.100.2") == 403


def test_an_ipv6_client_is_counted_by_its_64(settings: Settings) -> None:
    """One subscriber's /64 holds endless addresses: they share one count."""
    client = create_app(replace(settings, rate_limit_bad_keys="2/minute")).test_client()

    def guess(peer: str) -> int:
        return client.get(
            "/api/bulk-sms/" + "0" * 32,
            headers={"X-API-Key": "a-guess-of-the-right-length-0123456789"},
            environ_base={"REMOTE_ADDR": peer},
        ).status_code

    assert [guess(f"2001:db8:1:2::{n}") for n in (1, 2, 3)] == [401, 401, 429]
    assert guess("2001:db8:1:3::1") == 401  # the next /64: someone else
    # An IPv4 client seen through a dual-stack socket is the IPv4 address.
    assert [guess("::ffff:192.0.2.7"), guess("192.0.2.7"), guess("::ffff:192.0.2.7")] == [
        401,
        401,
        429,
    ]
