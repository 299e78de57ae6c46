"""A WSGI app of one line, for tests of gunicorn's own settings."""

from __future__ import annotations

import gc
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment


def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def frozen(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """How many objects the serving process's collector leaves alone (`gc.freeze`)."""
    body = str(gc.get_freeze_count()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
