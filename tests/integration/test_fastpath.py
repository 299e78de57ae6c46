"""The delivery reports' fast path: it takes the common case and leaves everything else to the
Flask view, which answers exactly as before (test_webhook.py goes through both)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import redis
from flask import Flask
from flask.testing import FlaskClient

from bulksms import create_app
from bulksms.api import report_fastpath as fastpath
from bulksms.api import webhooks
from bulksms.config import Settings
from bulksms.devstack.up import local_redis_url
from bulksms.store import keys
from tests.helpers.webhook import PATH, counts, environ, params, report, submit


def test_a_valid_report_is_taken_and_recorded(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100"])
    taken = fastpath.DeliveryReports(app, app.wsgi_app)._take(
        environ(settings, job_id, params("delivered"), HTTP_X_REQUEST_ID="abc-1")
    )
    assert taken == "abc-1"
    assert counts(client, job_id) == {"delivered": 1}


def test_anything_else_is_left_to_flask_untouched(
    app: Flask, client: FlaskClient, settings: Settings
) -> None:
    job_id = submit(client, ["+14155550100"])
    path = fastpath.DeliveryReports(app, app.wsgi_app)
    good = params("delivered")
    for change in (
        {"HTTP_X_PLIVO_SIGNATURE_V3": "forged"},
        {"HTTP_X_PLIVO_SIGNATURE_V3_NONCE": None},  # no V3: V2, or nothing
        {"CONTENT_TYPE": "multipart/form-data; boundary=x"},
        {"CONTENT_LENGTH": None},
        {"CONTENT_LENGTH": str(webhooks.MAX_BODY + 1)},
        {"REQUEST_METHOD": "GET"},
        {"PATH_INFO": PATH + "/"},
    ):
        env = environ(settings, job_id, good, **change)
        assert path._take(env) is None, change
        if "CONTENT_LENGTH" in env and change.get("CONTENT_TYPE") is None:
            assert env["wsgi.input"].read() == urlencode(good).encode()  # still there for Flask
    assert counts(client, job_id) == {"pending": 1}


def test_the_fast_answer_carries_the_usual_headers(client: FlaskClient, settings: Settings) -> None:
    job_id = submit(client, ["+14155550100"])
    answer = report(client, settings, job_id, params("sent"))
    assert answer.status_code == 204
    assert answer.headers["X-Content-Type-Options"] == "nosniff"
    assert answer.headers["Cache-Control"] == "no-store"
    assert len(answer.headers["X-Request-ID"]) == 32
    assert counts(client, job_id) == {"sent": 1}


def test_after_redis_forgets_its_scripts_the_fast_path_loads_them_again(
    app: Flask, client: FlaskClient, settings: Settings, rdb: redis.Redis
) -> None:
    job_id = submit(client, ["+14155550100", "+14155550101"])
    path = fastpath.DeliveryReports(app, app.wsgi_app)
    assert path._take(environ(settings, job_id, params("sent"))) is not None
    rdb.script_flush()  # as after a restart without persistence of scripts
    assert path._take(environ(settings, job_id, params("sent", to="14155550101"))) is not None
    assert counts(client, job_id) == {"sent": 2}


def test_over_redis_unix_socket_submit_limits_and_reports_all_work(
    settings: Settings, redis_server: int, redis_folder: Path, rdb: redis.Redis
) -> None:
    """`bulksms up` hands its clients the socket; each client (redis-py, the rate limiter's
    storage, kombu) is given it in its own URL form."""
    url = local_redis_url(redis_server, redis_folder)
    assert url.startswith("unix://")
    over_socket = create_app(replace(settings, redis_url=url))
    client = over_socket.test_client()
    job_id = submit(client, ["+14155550100"])
    taken = fastpath.DeliveryReports(over_socket, over_socket.wsgi_app)._take(
        environ(settings, job_id, params("delivered"))
    )
    assert taken is not None
    assert counts(client, job_id) == {"delivered": 1}
    assert any(keys.RATE_LIMIT_PREFIX in k for k in rdb.scan_iter())  # the limiter counted it there
    with over_socket.extensions["celery"].connection_for_write() as connection:
        pool = connection.default_channel.client.connection_pool  # kombu's own Redis client
        assert pool.connection_kwargs["path"] == str(redis_folder.resolve() / "redis.sock")
        assert connection.default_channel.client.ping()
