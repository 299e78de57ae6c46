"""The small-submit fast path where Redis is away: the same 503 as Flask's, and nothing else
happens (the unit tests' Redis is a port nothing listens on)."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.helpers import API_KEY

BODY = {"recipients": ["+14155550100"], "message": "alert"}


def test_redis_away_is_a_503_on_both_paths(client: FlaskClient) -> None:
    fast = client.post("/api/bulk-sms", json=BODY, headers={"X-API-Key": API_KEY})
    slow = client.post("/api/bulk-sms", json=BODY, headers={"Authorization": f"Bearer {API_KEY}"})
    for answer in (fast, slow):
        assert answer.status_code == 503
        assert answer.get_json()["error"] == "service_unavailable"
        assert answer.headers["Retry-After"] == "5"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert fast.get_json() == slow.get_json()


def test_a_request_id_is_echoed_by_the_fast_path(client: FlaskClient) -> None:
    answer = client.post(
        "/api/bulk-sms", json=BODY, headers={"X-API-Key": API_KEY, "X-Request-ID": "alert-1"}
    )
    assert answer.headers["X-Request-ID"] == "alert-1"
