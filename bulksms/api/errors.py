"""One JSON error shape for every failure: ``{"error": code, "message": text, "details"?: ...}``.

Nothing a client sends may produce an HTML page or a stack trace: Werkzeug's HTTP errors, Redis
outages and anything unexpected all leave through `error_response`.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from flask import Flask, Response, jsonify, request
from limits.errors import StorageError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

REDIS_RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details, self.headers = details, headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> Response:
    response = jsonify(error_body(code, message, details))
    response.status_code = status
    response.headers.update(headers or {})
    return response


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if details is not None:
        body["details"] = details
    return body


def _http_code(exc: HTTPException) -> str:
    return (exc.name or "error").lower().replace(" ", "_").replace("'", "")


def init_app(app: Flask) -> None:
    @app.before_request
    def readable_query() -> None:
        """Werkzeug reads the query string as strict UTF-8 wherever a view asks for it: raw bytes
        that are not would raise there (gunicorn refuses them first; another server may not)."""
        try:
            request.query_string.decode()
        except UnicodeDecodeError:
            raise ApiError(400, "malformed_query", "The query string is not UTF-8.") from None

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        headers = dict(exc.get_headers()) if status == 405 else {}
        allow = {"Allow": headers["Allow"]} if "Allow" in headers else None
        message = exc.description or exc.name
        return error_response(status, _http_code(exc), message, headers=allow)

    @app.errorhandler(StorageError)
    @app.errorhandler(redis.RedisError)
    def redis_down(exc: Exception) -> Response:
        log.error("redis unavailable: %s", type(exc).__name__)
        return error_response(
            503,
            "service_unavailable",
            "The job store is unavailable; try again shortly.",
            headers={"Retry-After": str(REDIS_RETRY_AFTER_SECONDS)},
        )

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "Something went wrong on our side.")
