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
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from werkzeug.http import HTTP_STATUS_CODES

from bulksms import logs
from bulksms.api import jobs as api
from bulksms.api import submission
from bulksms.api.auth import is_valid_key
from bulksms.api.errors import REDIS_RETRY_AFTER_SECONDS, ApiError, error_body
from bulksms.api.ratelimit import limiter, retry_after
from bulksms.api.submission import Submission
from bulksms.store import RATE_LIMIT_PREFIX, Window
from bulksms.store.sessions import fingerprint

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

log = logging.getLogger(__name__)

PATH = "/api/bulk-sms"
ENDPOINT = "api.submit"  # flask-limiter's scope for the view's limit: the same counter
MAX_BODY = 16 * 1024  # an alert's body; bigger jobs go through Flask
Answer = tuple[int, dict[str, Any], list[tuple[str, str]]]


# (json.dumps makes an encoder a call; the answers are the fast path's own dicts: no cycles)
_compact = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode


class SmallSubmits:
    def __init__(self, app: Flask, following: WSGIApplication) -> None:
        self.app = app
        self.following = following
        # An alert is made without an app context (`api.alert`): what it needs, handed over.
        self.settings = app.config["SETTINGS"]
        self.jobs = app.extensions["bulksms.store"]
        self.most = self.settings.max_recipients  # (parse_json's bound, as the view's)
        # In flask-limiter's order (shortest window first; it stops at the first breached).
        self.limits = sorted(parse_many(self.settings.rate_limit_submit))
        # The limits are counted in the job's own round trip, in the lists of flask-limiter's
        # moving-window strategy (`ratelimit.init_app`), by the same keys.
        assert isinstance(limiter.limiter, MovingWindowRateLimiter)
        assert all(limit.amount >= 1 for limit in self.limits)
        assert isinstance(limiter.limiter.storage, RedisStorage)
        self.storage = limiter.limiter.storage
        # A valid key's name in the limits and its windows there, made at its first request
        # (the keys are the service's own: a handful).
        self.known: dict[str, tuple[str, list[Window]]] = {}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        key = environ.get("HTTP_X_API_KEY")
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or key is None
            or not (length.isascii() and length.isdigit() and len(length) <= 12)
            or int(length) > MAX_BODY
            or not environ.get("QUERY_STRING", "").isascii()  # (Flask's to judge: errors.py)
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
            != "application/json"
            or not is_valid_key(key, self.settings.api_keys)
        ):
            return self.following(environ, start_response)
        request_id = logs.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        token = logs.bind(request_id=request_id)
        try:
            status, body, headers = self._answer(environ, key, int(length))
        finally:
            logs.unbind(token)
        payload = (_compact(body) + "\n").encode()
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
            who, windows = self.known.get(key) or self._know(key)
            raw = environ["wsgi.input"].read(length)
            idempotency_key = environ.get("HTTP_IDEMPOTENCY_KEY")
            if idempotency_key is None:
                try:
                    body = submission.parse_json(raw, environ.get("CONTENT_TYPE"), self.most)
                    alert = api.alert(body, self.settings)
                except ApiError:  # (counted all the same, as flask-limiter counts before the view)
                    if (refused := self._count(who)) is not None:
                        return refused
                    raise
                if alert is not None:
                    return self._alert(body, *alert, who, windows)
            if (refused := self._count(who)) is not None:
                return refused
            body = submission.parse_json(raw, environ.get("CONTENT_TYPE"), self.most)
            with self.app.app_context():
                answer, replayed = api.created_once(
                    body, lambda slot: api.make_job(body, slot), idempotency_key, key
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
        return _accepted(answer, replayed)

    def _know(self, key: str) -> tuple[str, list[Window]]:
        who = "key:" + fingerprint(key)
        windows = [
            Window(self.storage.prefixed_key(limit.key_for(*self._names(who))), *self._size(limit))
            for limit in self.limits
        ]
        self.known[key] = who, windows
        return who, windows

    def _alert(
        self, body: Any, sub: Submission, valid: list[str], who: str, windows: list[Window]
    ) -> Answer:
        """The common case: the job made in one round trip, the limits counted in it."""
        try:
            answer = api.make_alert(sub, valid, windows, self.settings, self.jobs)
        except api.LimitReached as reached:
            return _rate_limited(self.limits[reached.index], who)
        if answer is None:  # a recipient opted out: made the general way, already counted
            with self.app.app_context():
                answer = api.make_job(body, None)
        return _accepted(answer, False)

    def _count(self, who: str) -> Answer | None:
        """Count the request against the submit limits (up to the first breached, as
        flask-limiter does): the 429 past one, else None."""
        for limit in self.limits:
            if not limiter.limiter.hit(limit, *self._names(who)):
                return _rate_limited(limit, who)
        return None

    @staticmethod
    def _names(who: str) -> tuple[str, str, str]:
        return RATE_LIMIT_PREFIX, who, ENDPOINT

    @staticmethod
    def _size(limit: RateLimitItem) -> tuple[int, int]:
        return limit.amount, limit.get_expiry()


def _accepted(answer: dict[str, Any], replayed: bool) -> Answer:
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
