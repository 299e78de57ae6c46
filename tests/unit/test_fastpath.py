"""The delivery reports' fast path with Redis down: it leaves the request to Flask, which
answers 503."""

from __future__ import annotations

from dataclasses import replace

from bulksms import create_app
from bulksms.api import report_fastpath as fastpath
from bulksms.config import Settings
from bulksms.devstack.up import free_port
from tests.helpers.webhook import environ, params, report


def test_redis_failing_is_left_to_flask_which_answers_503(settings: Settings) -> None:
    down = create_app(replace(settings, redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    assert (
        fastpath.DeliveryReports(down, down.wsgi_app)._take(
            environ(settings, "f" * 32, params("delivered"))
        )
        is None
    )
    answer = report(down.test_client(), settings, "f" * 32, params("delivered"))
    assert answer.status_code == 503
