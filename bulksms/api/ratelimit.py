"""Rate limits with flask-limiter on Redis, so they hold across every gunicorn worker and host.

`/api/bulk-sms…` is limited per API key (submits and reads separately). Delivery reports are
never limited: only webhook requests whose signature fails are counted, per client address, and
past the limit they get 429 instead of 403; so are requests without a valid API key (429 instead
of 401).
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse

from bulksms.api.errors import ApiError, error_response
from bulksms.api.identity import client_address, current_session, presented_key
from bulksms.config import Settings
from bulksms.extensions import settings
from bulksms.store import RATE_LIMIT_PREFIX
from bulksms.store.sessions import fingerprint


def _client_key() -> str:
    """Who is asking: their API key (hashed: a key never lands in Redis), or the key their page
    session signed in with, else their address."""
    key = presented_key()
    if key and key in settings().api_keys:
        return "key:" + fingerprint(key)
    if key is None:
        session = current_session()
        if session is not None:
            return "key:" + session.key_fingerprint
    return client_address()


limiter = Limiter(key_func=_client_key)


def init_app(app: Flask, s: Settings) -> None:
    app.config.update(
        RATELIMIT_STORAGE_URI=s.limiter_storage_uri,
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 2, "socket_timeout": 5},
        RATELIMIT_KEY_PREFIX=RATE_LIMIT_PREFIX,
        # No X-RateLimit headers: they would cost every request a second round trip (the
        # window's state); a 429 says when to come back (`_rate_limited`).
        RATELIMIT_HEADERS_ENABLED=False,
        RATELIMIT_STRATEGY="moving-window",
        RATELIMIT_SWALLOW_ERRORS=False,  # a Redis failure is a 503, not a silent free pass
    )
    limiter.init_app(app)
    app.register_error_handler(RateLimitExceeded, _rate_limited)


def _rate_limited(exc: RateLimitExceeded) -> Response:
    """429, with `Retry-After`: when the breached limit's window lets a request through."""
    breached = limiter.current_limit
    return error_response(
        429,
        "rate_limited",
        f"Rate limit exceeded: {exc.description}.",
        headers={"Retry-After": retry_after(breached.window[0]) if breached else "1"},
    )


def retry_after(reset: float) -> str:
    """Seconds until `reset` (a window's), at least 1."""
    return str(max(1, math.ceil(reset - time.time())))


def submit_limit() -> str:
    return settings().rate_limit_submit


def read_limit() -> str:
    return settings().rate_limit_read


def sign_in_limit() -> str:
    return settings().rate_limit_sign_in


def count_bad_signature() -> None:
    """Count one refused signature for this client; past the limit, refuse with 429."""
    _refuse_past(settings().rate_limit_bad_signatures, "bad-signature", count=True)


def refuse_bad_signatures_past_limit() -> None:
    """429 for an address already past RATE_LIMIT_BAD_SIGNATURES, before its request is read
    (Plivo's own V3 reports of up to 4 KB are taken in front of this, by `report_fastpath`)."""
    _refuse_past(settings().rate_limit_bad_signatures, "bad-signature", count=False)


def count_bad_key() -> None:
    """Count one request without a valid API key for this client; past the limit, 429 (a key
    cannot be guessed at the rate the server answers)."""
    _refuse_past(settings().rate_limit_bad_keys, "bad-key", count=True)


REFUSALS = {
    "bad-signature": "Too many requests with a bad signature.",
    "bad-key": "Too many requests without a valid API key.",
}


def _refuse_past(limit: str, scope: str, count: bool) -> None:
    """429 once this address is past `limit` of `scope`'s refusals; `count`: this is one."""
    item = parse(limit)
    who = client_address()
    allowed = (
        limiter.limiter.hit(item, scope, who) if count else limiter.limiter.test(item, scope, who)
    )
    if not allowed:
        reset, _ = limiter.limiter.get_window_stats(item, scope, who)
        raise ApiError(
            429, "rate_limited", REFUSALS[scope], headers={"Retry-After": retry_after(reset)}
        )
