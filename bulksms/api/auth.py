"""Who is asking: an API key (`X-API-Key` or `Authorization: Bearer`, compared in constant time
with every key), or the campaign page's session cookie, whose unsafe requests must also carry the
session's CSRF token (`X-CSRF-Token`)."""

from __future__ import annotations

import hmac

from flask import g, request

from bulksms.api.errors import ApiError
from bulksms.extensions import sessions, settings
from bulksms.store.sessions import Session, fingerprint

SESSION_COOKIE = "bulksms_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    return key


def is_valid_key(key: str, valid_keys: tuple[str, ...]) -> bool:
    given = key.encode("utf-8", "surrogateescape")
    matched = False
    for valid in valid_keys:  # no early exit: every key is compared every time
        matched |= hmac.compare_digest(given, valid.encode())
    return matched


def current_session() -> Session | None:
    """The page's session this request's cookie names, if it is live and its key still valid."""
    if "ui_session" not in g:
        found = None
        session_id = request.cookies.get(SESSION_COOKIE)
        if session_id:
            found = sessions().find(session_id)
            current = {fingerprint(k) for k in settings().api_keys}
            if found is not None and found.key_fingerprint not in current:
                found = None  # its key was taken out of API_KEYS
        g.ui_session = found
    session: Session | None = g.ui_session
    return session


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
    unsafe request of a session without its CSRF token)."""
    key = presented_key()
    if key is None:
        session = current_session()
        if session is not None:
            if request.method not in SAFE_METHODS and not csrf_matches(
                session, request.headers.get("X-CSRF-Token")
            ):
                raise ApiError(403, "csrf_failed", "A session's request needs its X-CSRF-Token.")
            return
        raise ApiError(
            401,
            "unauthorized",
            "Send your API key in the X-API-Key header.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not is_valid_key(key, valid_keys):
        raise ApiError(
            401, "unauthorized", "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"}
        )
