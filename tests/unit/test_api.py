"""`/api` answers that need no Redis: unknown routes, and Redis down."""

from __future__ import annotations

from dataclasses import replace

from flask.testing import FlaskClient

from bulksms import create_app
from bulksms.config import Settings
from bulksms.devstack.up import free_port
from tests.helpers import API_KEY


def test_unknown_routes_and_methods_answer_json(client: FlaskClient) -> None:
    assert client.get("/nope").get_json()["error"] == "not_found"
    answer = client.delete("/api/webhooks/plivo/delivery-report")
    assert answer.status_code == 405 and answer.get_json()["error"] == "method_not_allowed"
    assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_redis_down_is_503_with_retry_after(settings: Settings) -> None:
    app = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    answer = app.test_client().post(
        "/api/bulk-sms",
        json={"recipients": ["+14155550100"], "message": "x"},
        headers={"X-API-Key": API_KEY},
    )
    assert answer.status_code == 503
    assert answer.get_json()["error"] == "service_unavailable"
    assert answer.headers["Retry-After"]
