"""Who is asking: an API key (`X-API-Key` or `Authorization: Bearer`, compared in constant time
with every key), or the campaign page's session cookie, whose unsafe requests must also carry the
session's CSRF token (`X-CSRF-Token`)."""

from __future__ import annotations

import hmac

from flask import request

from bulksms.api.errors import ApiError
from bulksms.api.identity import current_session, presented_key
from bulksms.api.ratelimit import count_bad_key
from bulksms.store.sessions import Session

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_valid_key(key: str, valid_keys: tuple[str, ...]) -> bool:
    given = key.encode("utf-8", "surrogateescape")
    matched = False
    for valid in valid_keys:  # no early exit: every key is compared every time
        matched |= hmac.compare_digest(given, valid.encode())
    return matched


def csrf_matches(session: Session, token: str | None) -> bool:
    return token is not None and hmac.compare_digest(token.encode(), session.csrf.encode())


def scope() -> str:
    """Who asks, as idempotency keys and rate limits are scoped: the key, or the session's."""
    key = presented_key()
    if key is not None:
        return key
    session = current_session()
    return f"session:{session.key_fingerprint}" if session is not None else ""


def require_api_key(valid_keys: tuple[str, ...]) -> None:
    """Raise 401 unless the request carries one of `valid_keys`, or a live session (403 for an
    unsafe request of a session without its CSRF token); 429 past RATE_LIMIT_BAD_KEYS of such
    requests from one address."""
    key = presented_key()
    if key is None:
        session = current_session()
        if session is not None:
            if request.method not in SAFE_METHODS and not csrf_matches(
                session, request.headers.get("X-CSRF-Token")
            ):
                raise ApiError(403, "csrf_failed", "A session's request needs its X-CSRF-Token.")
            return
        count_bad_key()
        raise ApiError(
            401,
            "unauthorized",
            "Send your API key in the X-API-Key header.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not is_valid_key(key, valid_keys):
        count_bad_key()
        raise ApiError(
            401, "unauthorized", "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"}
        )
