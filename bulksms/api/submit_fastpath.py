"""Small submits (alerts) served in front of Flask.

An alert is a job of one to a few recipients, posted many times a second by another system.
Flask's per-request machinery (request context, cookie session, hooks, the rate limiter's
bookkeeping) cost such a request more than its own work, so this WSGI middleware takes the
common case itself: a JSON `POST /api/bulk-sms` of at most `MAX_BODY` bytes with a valid
`X-API-Key`. It does what the Flask view does, through the same code (`jobs.created_once`,
`jobs.make_job`: validation, opt-outs, one round trip to store and enqueue), counts the same
rate limit (flask-limiter's key for `api.submit`), and answers with the same JSON, status and
headers, errors included (`tests/integration/test_small_submits.py` compares the two).

Everything else goes on to Flask: other paths and methods, multipart, bodies without a length
or bigger, keys in `Authorization`, sessions, a missing or wrong key. Once a request is taken
here it is answered here: a job may already be stored when something fails, so it is never
handed on to be made a second time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import redis
from limits import RateLimitItem, parse_many
from limits.errors import StorageError
from werkzeug.http import HTTP_STATUS_CODES

from bulksms import logs
from bulksms.api import jobs as api
from bulksms.api import submission
from bulksms.api.auth import is_valid_key
from bulksms.api.errors import REDIS_RETRY_AFTER_SECONDS, ApiError, error_body
from bulksms.api.ratelimit import limiter, retry_after
from bulksms.store import RATE_LIMIT_PREFIX
from bulksms.store.sessions import fingerprint

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

log = logging.getLogger(__name__)

PATH = "/api/bulk-sms"
ENDPOINT = "api.submit"  # flask-limiter's scope for the view's limit: the same counter
MAX_BODY = 16 * 1024  # an alert's body; bigger jobs go through Flask
Answer = tuple[int, dict[str, Any], list[tuple[str, str]]]


class SmallSubmits:
    def __init__(self, app: Flask, following: WSGIApplication) -> None:
        self.app = app
        self.following = following
        self.settings = app.config["SETTINGS"]
        self.limits = parse_many(self.settings.rate_limit_submit)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        key = environ.get("HTTP_X_API_KEY")
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or key is None
            or not (length.isdigit() and int(length) <= MAX_BODY)
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            != "application/json"
            or not is_valid_key(key, self.settings.api_keys)
        ):
            return self.following(environ, start_response)
        request_id = logs.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        token = logs.bind(request_id=request_id)
        try:
            with self.app.app_context():
                status, body, headers = self._answer(environ, key, int(length))
        finally:
            logs.unbind(token)
        payload = (json.dumps(body, separators=(",", ":")) + "\n").encode()
        start_response(
            _status_line(status),
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                *headers,
                ("X-Request-ID", request_id),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ],
        )
        return [payload]

    def _answer(self, environ: WSGIEnvironment, key: str, length: int) -> Answer:
        """What the Flask view would answer: 202 and the job, or the error."""
        try:
            who = "key:" + fingerprint(key)
            for limit in self.limits:  # (in order, up to the first breached, as flask-limiter)
                if not limiter.limiter.hit(limit, RATE_LIMIT_PREFIX, who, ENDPOINT):
                    return _rate_limited(limit, who)
            raw = environ["wsgi.input"].read(length)
            body = submission.parse_json(raw, environ.get("CONTENT_TYPE"))
            answer, replayed = api.created_once(
                body,
                lambda slot: api.make_job(body, slot),
                environ.get("HTTP_IDEMPOTENCY_KEY"),
                key,
            )
        except ApiError as refused:
            return _error(
                refused.status, refused.code, refused.message, refused.details, refused.headers
            )
        except (redis.RedisError, StorageError) as exc:
            log.error("redis unavailable: %s", type(exc).__name__)
            return _error(
                503,
                "service_unavailable",
                "The job store is unavailable; try again shortly.",
                headers={"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
            )
        except Exception:
            log.exception("unhandled error")
            return _error(500, "internal_error", "Something went wrong on our side.")
        headers = [("Location", answer["status_url"])]
        if replayed:
            headers.append(("Idempotent-Replayed", "true"))
        return 202, answer, headers


def _rate_limited(limit: RateLimitItem, who: str) -> Answer:
    reset, _ = limiter.limiter.get_window_stats(limit, RATE_LIMIT_PREFIX, who, ENDPOINT)
    return _error(
        429,
        "rate_limited",
        f"Rate limit exceeded: {limit}.",
        headers={"Retry-After": retry_after(reset)},
    )


def _error(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    return status, error_body(code, message, details), list((headers or {}).items())


def _status_line(status: int) -> str:
    """As Werkzeug writes it, so both paths answer alike."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"
