"""API keys: `X-API-Key` or `Authorization: Bearer`, compared in constant time with every key."""

from __future__ import annotations

import hmac

from flask import request

from bulksms.api.errors import ApiError


def presented_key() -> str | None:
    key = request.headers.get("X-API-Key")
    if key is None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            key = token.strip()
    return key


def require_api_key(valid_keys: tuple[str, ...]) -> None:
    """Raise 401 unless the request carries one of `valid_keys`."""
    key = presented_key()
    if key is None:
        raise ApiError(
            401,
            "unauthorized",
            "Send your API key in the X-API-Key header.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = key.encode("utf-8", "surrogateescape")
    matched = False
    for valid in valid_keys:  # no early exit: every key is compared every time
        matched |= hmac.compare_digest(given, valid.encode())
    if not matched:
        raise ApiError(
            401, "unauthorized", "The API key is not valid.", headers={"WWW-Authenticate": "Bearer"}
        )
