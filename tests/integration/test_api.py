"""`/api/bulk-sms` through the Flask test client, on a real Redis (the broker queue included)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from bulksms.api import ops
from bulksms.devstack.numbers_gen import us_numbers
from bulksms.taskqueue import queue_depth
from tests.helpers import API_KEY, SECOND_API_KEY

AUTH = {"X-API-Key": API_KEY}


def post(client: FlaskClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    chosen = AUTH if headers is None else headers
    return client.post(
        "/api/bulk-sms",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", **chosen},
    )


def job_keys(rdb: redis.Redis) -> list[str]:
    return [k for k in rdb.keys("bulksms:*")]


def queued_tasks(rdb: redis.Redis) -> list[list[Any]]:
    """The args of every task message waiting in the broker's queue."""
    return [
        json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in rdb.lrange("bulksms", 0, -1)
    ]


def test_submit_answers_202_and_enqueues_one_task_per_thousand(
    client: FlaskClient, rdb: redis.Redis
) -> None:
    numbers = us_numbers(2001)
    answer = post(client, {"recipients": numbers, "message": "hello"})
    assert answer.status_code == 202
    body = answer.get_json()
    assert answer.headers["Location"] == body["status_url"] == f"/api/bulk-sms/{body['job_id']}"
    assert body["state"] == "queued"
    assert body["batches"] == 3
    assert body["recipients"] == {
        "received": 2001,
        "accepted": 2001,
        "duplicates": 0,
        "invalid": 0,
        "suppressed": 0,
    }
    assert (body["encoding"], body["segments_per_message"], body["estimated_segments"]) == (
        "GSM-7",
        1,
        2001,
    )
    assert sorted(queued_tasks(rdb)) == [[body["job_id"], n] for n in range(3)]


def test_status_reads_the_contract_shape(client: FlaskClient) -> None:
    job_id = post(client, {"recipients": ["+14155550100"], "message": "x"}).get_json()["job_id"]
    doc = client.get(f"/api/bulk-sms/{job_id}", headers=AUTH).get_json()
    assert doc["job_id"] == job_id
    assert doc["state"] == "queued"
    assert doc["created_at"].endswith("Z")
    assert doc["batches"] == {"total": 1, "pending": 1, "submitted": 0, "failed": 0, "cancelled": 0}
    assert doc["counts"] == {
        "pending": 1,
        "queued": 0,
        "sent": 0,
        "delivered": 0,
        "undelivered": 0,
        "failed": 0,
        "rejected": 0,
        "cancelled": 0,
        "suppressed": 0,
    }


def test_unknown_job_is_404_json(client: FlaskClient) -> None:
    for job_id in ("0" * 32, "nope", "../../etc"):
        answer = client.get(f"/api/bulk-sms/{job_id}", headers=AUTH)
        assert answer.status_code == 404
        assert answer.get_json()["error"] == "not_found"


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}],
)
def test_without_a_valid_key_every_endpoint_is_401(
    client: FlaskClient, rdb: redis.Redis, headers: dict[str, str]
) -> None:
    answer = post(client, {"recipients": ["+14155550100"], "message": "x"}, headers)
    assert answer.status_code == 401
    assert answer.get_json()["error"] == "unauthorized"
    assert client.get("/api/bulk-sms/" + "0" * 32, headers=headers).status_code == 401
    assert job_keys(rdb) == []


def test_bearer_and_rotated_keys_work(client: FlaskClient) -> None:
    body = {"recipients": ["+14155550100"], "message": "x"}
    assert post(client, body, {"Authorization": f"Bearer {API_KEY}"}).status_code == 202
    assert post(client, body, {"X-API-Key": SECOND_API_KEY}).status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ([], 400, "invalid_body"),
        ({"message": "x"}, 400, "invalid_field"),
        ({"recipients": "+14155550100", "message": "x"}, 400, "invalid_field"),
        ({"recipients": [14155550100], "message": "x"}, 400, "invalid_field"),
        ({"recipients": [], "message": "x"}, 422, "no_recipients"),
        ({"recipients": ["+14155550100"]}, 400, "invalid_field"),
        ({"recipients": ["+14155550100"], "message": "  "}, 422, "empty_message"),
        # (zero-width space and joiner, a byte-order mark: nothing a phone shows)
        ({"recipients": ["+14155550100"], "message": "\u200b \u200d\ufeff"}, 422, "empty_message"),
        ({"recipients": ["+14155550100"], "message": "a" * 1601}, 422, "message_too_long"),
        ({"recipients": ["+14155550100"], "message": "ł" * 738}, 422, "message_too_long"),
        ({"recipients": ["nope", "+1"], "message": "x"}, 422, "no_valid_recipients"),
        ({"recipients": ["+14155550100"], "message": "x", "sender": "++1"}, 422, "invalid_sender"),
        (
            {"recipients": ["4155550100"], "message": "x", "default_region": "ZZ"},
            422,
            "unknown_region",
        ),
        ({"recipients": ["+14155550100"], "message": "x", "extra": 1}, 400, "unknown_field"),
        (
            {"recipients": ["+14155550100"], "message": "x", "powerpack_uuid": "pp"},
            422,
            "invalid_powerpack_uuid",
        ),
        (
            {
                "recipients": ["+14155550100"],
                "message": "x",
                "sender": "ACME",
                "powerpack_uuid": "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab",
            },
            422,
            "sender_and_powerpack",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "expiry_seconds": 4},
            422,
            "invalid_expiry",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "expiry_seconds": 10_800},
            422,
            "invalid_expiry",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "expiry_seconds": "60"},
            400,
            "invalid_field",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "expiry_seconds": True},
            400,
            "invalid_field",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "send_at": "tomorrow"},
            422,
            "invalid_send_at",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "send_at": "2030-01-01T09:00:00"},
            422,
            "invalid_send_at",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "send_at": "2099-01-01T09:00:00Z"},
            422,
            "send_at_too_far",
        ),
        ({"recipients": ["+14155550100"], "message": "x", "send_at": 1}, 400, "invalid_field"),
        (
            {"recipients": ["+14155550100"], "message": "x", "sender": "123456"},
            422,
            "invalid_sender",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "sender": "TWELVECHARSX"},
            422,
            "invalid_sender",
        ),
        # A final newline (which a regular expression's `$` lets through), another script's
        # digits.
        (
            {"recipients": ["+14155550100"], "message": "x", "sender": "+14155550177\n"},
            422,
            "invalid_sender",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "sender": "ACME\n"},
            422,
            "invalid_sender",
        ),
        (
            {"recipients": ["+14155550100"], "message": "x", "sender": "+١٤١٥٥٥٥٠١٧٧"},
            422,
            "invalid_sender",
        ),
        (
            {
                "recipients": ["+14155550100"],
                "message": "x",
                "powerpack_uuid": "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab\n",
            },
            422,
            "invalid_powerpack_uuid",
        ),
    ],
)
def test_bad_bodies_get_a_json_error_and_store_nothing(
    client: FlaskClient, rdb: redis.Redis, body: Any, status: int, code: str
) -> None:
    answer = post(client, body)
    assert answer.status_code == status, answer.get_json()
    assert answer.get_json()["error"] == code
    assert answer.get_json()["message"]
    assert job_keys(rdb) == []
    assert rdb.llen("bulksms") == rdb.llen("bulksms.urgent") == 0


def test_not_json_is_415_and_malformed_json_is_400(client: FlaskClient) -> None:
    answer = client.post(
        "/api/bulk-sms",
        data="recipients=1",
        headers=AUTH,
        content_type="application/x-www-form-urlencoded",
    )
    assert answer.status_code == 415 and answer.get_json()["error"] == "unsupported_media_type"
    answer = client.post(
        "/api/bulk-sms", data="{nope", headers=AUTH, content_type="application/json"
    )
    assert answer.status_code == 400 and answer.get_json()["error"] == "malformed_json"
    answer = client.post(
        "/api/bulk-sms", data="[" * 100_000, headers=AUTH, content_type="application/json"
    )
    assert answer.status_code == 400 and answer.get_json()["error"] == "malformed_json"


def test_national_numbers_use_the_requests_region(client: FlaskClient) -> None:
    body = {
        "recipients": ["020 7946 0958", "+44 20 7946 0958", "12"],
        "message": "x",
        "default_region": "gb",
    }
    answer = post(client, body).get_json()
    assert answer["recipients"] == {
        "received": 3,
        "accepted": 1,
        "duplicates": 1,
        "invalid": 1,
        "suppressed": 0,
    }
    assert answer["invalid"] == [{"row": 3, "input": "12", "reason": "too_short"}]


def test_the_sender_is_never_a_recipient(client: FlaskClient) -> None:
    body = {"recipients": ["+14155550100", "+14155550199"], "message": "x"}
    answer = post(client, body).get_json()
    assert answer["recipients"]["accepted"] == 1
    assert answer["invalid"] == [{"row": 2, "input": "+14155550199", "reason": "same_as_sender"}]


def test_unicode_message_is_reported_as_ucs2(client: FlaskClient) -> None:
    answer = post(
        client, {"recipients": ["+14155550100", "+14155550101"], "message": "Привет " * 11}
    ).get_json()
    assert (answer["encoding"], answer["segments_per_message"], answer["estimated_segments"]) == (
        "UCS-2",
        2,
        4,
    )


def test_the_spend_guard_refuses_a_job_over_its_segments(settings: Any, rdb: redis.Redis) -> None:
    from dataclasses import replace

    from bulksms import create_app

    body = {"recipients": ["+14155550100", "+14155550101"], "message": "ł" * 71}
    refused = post(create_app(settings).test_client(), {**body, "max_segments": 3})
    assert refused.status_code == 422
    assert refused.get_json()["details"] == {"segments": 4, "limit": 3}
    assert "4 segments" in refused.get_json()["message"]
    capped = create_app(replace(settings, max_segments_per_job=3)).test_client()
    assert post(capped, body).status_code == 422
    assert post(capped, {**body, "message": "short"}).status_code == 202
    assert post(capped, {**body, "max_segments": "3"}).status_code == 400


def test_a_body_beyond_the_size_limit_is_413_json(settings: Any, rdb: redis.Redis) -> None:
    from dataclasses import replace

    from bulksms import create_app

    app = create_app(replace(settings, max_recipients=10))
    big = json.dumps({"recipients": ["+14155550100"] * 6000, "message": "x"})
    answer = post(app.test_client(), json.loads(big))
    assert answer.status_code == 413
    assert answer.get_json()["error"] == "request_entity_too_large"
    too_many = post(app.test_client(), {"recipients": ["+14155550100"] * 11, "message": "x"})
    assert too_many.status_code == 413 and too_many.get_json()["error"] == "too_many_recipients"
    # Within the size, but more objects and arrays than ten recipients need: refused unparsed
    # (parsed, an empty object costs a worker some 20 times the 3 bytes it takes in the body;
    # parsed, this one would be a 400 for its unknown field; over 16 KB, it is not an alert).
    bomb = app.test_client().post(
        "/api/bulk-sms",
        data=b'{"recipients": ["+14155550100"], "message": "x", "pad": [' + b"{}," * 20000 + b"1]}",
        headers={"Content-Type": "application/json", **AUTH},
    )
    assert bomb.status_code == 413 and bomb.get_json()["error"] == "too_many_recipients"
    assert "objects and arrays" in bomb.get_json()["message"]
    assert job_keys(rdb) == []
    # Ten recipients as objects, with braces in their values and the message: no bomb.
    people = [{"to": f"+1415555010{i}", "fields": {"n": "{[}]" * 50}} for i in range(10)]
    made = post(app.test_client(), {"recipients": people, "message": "{{{{ {{n}}"})
    assert made.status_code == 202, made.get_json()


def test_web_readiness_needs_redis_not_workers(client: FlaskClient, rdb: redis.Redis) -> None:
    """No worker runs here: the web process is ready all the same (a load balancer must keep
    sending it Plivo's reports), and the workers' own check says none answered."""
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ready",
        "checks": {"redis": "ok"},
        "checked_seconds_ago": pytest.approx(0, abs=1.0),  # (shared for a second at most)
    }
    workers = client.get("/readyz/workers")
    assert workers.status_code == 503
    assert workers.get_json()["checks"] == {"worker": "no worker answered"}
    assert 0 <= workers.get_json()["checked_seconds_ago"] <= ops.WORKER_CHECK_SECONDS


@pytest.mark.parametrize("limit", ["\u00b2", "\u2460", "\u0663", "0", "-1", "x", "1" * 4301])
def test_a_listings_limit_is_ascii_digits_in_range(client: FlaskClient, limit: str) -> None:
    """'²' and '①' are digits to str.isdigit but not to int(), and int() refuses more than
    4,300 digits: a 400, not a 500."""
    job_id = post(client, {"recipients": ["+14155550100"], "message": "x"}).get_json()["job_id"]
    for path in ("/api/bulk-sms", f"/api/bulk-sms/{job_id}/messages"):
        answer = client.get(path, query_string={"limit": limit}, headers={"X-API-Key": API_KEY})
        assert answer.status_code == 400, answer.get_data(as_text=True)
        assert answer.get_json()["error"] == "invalid_limit"


def test_a_job_paused_then_cancelled_is_not_resumed(client: FlaskClient) -> None:
    numbers = us_numbers(2000)
    job_id = post(client, {"recipients": numbers, "message": "x"}).get_json()["job_id"]
    auth = {"X-API-Key": API_KEY}
    assert client.post(f"/api/bulk-sms/{job_id}/pause", headers=auth).status_code == 200
    assert client.post(f"/api/bulk-sms/{job_id}/cancel", headers=auth).status_code == 200
    resumed = client.post(f"/api/bulk-sms/{job_id}/resume", headers=auth)
    assert resumed.status_code == 409 and resumed.get_json()["error"] == "not_paused"
    assert "cancelled" in resumed.get_json()["message"]
    assert client.get(f"/api/bulk-sms/{job_id}", headers=auth).get_json()["state"] == "cancelled"


def test_a_second_cancel_changes_nothing(client: FlaskClient, app: Flask) -> None:
    """The first cancel enqueues a task for each batch still pending (a paused job's were taken
    and dropped), for its claim to cancel it; a second one answers the same and enqueues no
    more (a key holder calling it in a loop would fill the queue)."""
    job_id = post(client, {"recipients": us_numbers(3000), "message": "x"}).get_json()["job_id"]
    celery = app.extensions["celery"]
    auth = {"X-API-Key": API_KEY}
    assert queue_depth(celery) == 3
    first = client.post(f"/api/bulk-sms/{job_id}/cancel", headers=auth)
    assert first.status_code == 200 and first.get_json()["state"] == "cancelled"
    assert queue_depth(celery) == 6
    again = client.post(f"/api/bulk-sms/{job_id}/cancel", headers=auth)
    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert queue_depth(celery) == 6


def test_a_job_paused_as_its_last_batch_was_in_flight_can_be_resumed(
    client: FlaskClient, app: Flask
) -> None:
    """A pause that lands while the last batch is being sent leaves nothing pending once Plivo
    accepts it: the job is sent, still marked paused, and a resume (a user's pause then resume,
    or the CLI's) answers 200, not 409."""
    job_id = post(client, {"recipients": us_numbers(2000), "message": "x"}).get_json()["job_id"]
    store = app.extensions["bulksms.store"]
    claims = [store.claim_batch(job_id, batch) for batch in range(2)]
    assert [claim.outcome for claim in claims] == ["go", "go"]
    auth = {"X-API-Key": API_KEY}
    paused = client.post(f"/api/bulk-sms/{job_id}/pause", headers=auth)
    assert paused.status_code == 200 and paused.get_json()["state"] == "paused"
    for batch, claim in enumerate(claims):
        done = store.call_submitted(job_id, batch, claim.attempt, 0, f"api-{batch}", [])
        assert done == "submitted"
    assert client.get(f"/api/bulk-sms/{job_id}", headers=auth).get_json()["state"] == "sent"
    resumed = client.post(f"/api/bulk-sms/{job_id}/resume", headers=auth)
    assert resumed.status_code == 200, resumed.get_json()
    assert resumed.get_json()["state"] == "sent"
    again = client.post(f"/api/bulk-sms/{job_id}/resume", headers=auth)
    assert again.status_code == 409 and again.get_json()["error"] == "not_paused"


@pytest.mark.parametrize("auth", [{"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}])
def test_a_submit_whose_query_string_is_not_utf8_is_400_on_either_path(
    client: FlaskClient, rdb: redis.Redis, auth: dict[str, str]
) -> None:
    """The submit's fast path (X-API-Key) leaves such a request to Flask, as the report's does."""
    before = {k for k in rdb.keys("*") if "bulksms:rl" not in k}
    answer = client.post(
        "/api/bulk-sms",
        json={"recipients": ["+14155550100"], "message": "hi"},
        headers=auth,
        environ_overrides={"QUERY_STRING": "x=\xff"},
    )
    assert (answer.status_code, answer.get_json()["error"]) == (400, "malformed_query")
    assert {k for k in rdb.keys("*") if "bulksms:rl" not in k} == before


@pytest.mark.parametrize("path", ["/api/bulk-sms", "/api/opt-outs", "/readyz"])
def test_a_query_string_that_is_not_utf8_is_400(client: FlaskClient, path: str) -> None:
    """Raw bytes, not percent-escapes: Werkzeug decodes the query strictly wherever a view
    reads it (gunicorn refuses such a request line itself; another server may not)."""
    answer = client.get(
        path, headers={"X-API-Key": API_KEY}, environ_overrides={"QUERY_STRING": "limit=\xff"}
    )
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["error"] == "malformed_query"
    escaped = client.get(path, headers={"X-API-Key": API_KEY}, query_string="state=%FF")
    assert escaped.status_code != 500 and escaped.is_json  # (read as U+FFFD, then judged)


def test_an_opt_out_cursor_of_4301_digits_is_400_not_500(client: FlaskClient) -> None:
    answer = client.get(
        "/api/opt-outs", query_string={"cursor": "1" * 4301}, headers={"X-API-Key": API_KEY}
    )
    assert (answer.status_code, answer.get_json()["error"]) == (400, "invalid_cursor")


@pytest.mark.parametrize("path", ["/api/bulk-sms", "/api/webhooks/plivo/delivery-report"])
def test_a_content_length_of_4301_digits_is_not_a_500(client: FlaskClient, path: str) -> None:
    """The fast paths read the length before Flask does: past int()'s 4,300 digits they leave
    the request to Flask, which refuses it like any other that does not add up."""
    headers = {
        "X-API-Key": API_KEY,
        "X-Plivo-Signature-V3-Nonce": "1",
        "X-Plivo-Signature-V3": "x",
        "Content-Type": "application/json"
        if path == "/api/bulk-sms"
        else "application/x-www-form-urlencoded",
    }
    answer = client.post(
        path, data=b"{}", headers=headers, environ_overrides={"CONTENT_LENGTH": "1" * 4301}
    )
    assert 400 <= answer.status_code < 500 and answer.is_json, answer.get_data(as_text=True)
