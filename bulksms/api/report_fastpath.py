"""The delivery-report webhook's common case, served in front of Flask.

Plivo posts one report per message and status: three million posts for a million-recipient job,
as fast as Plivo sends them. Flask's per-request machinery (request context, hooks, the rate
limiter's bookkeeping) costs more than the report's own work, so this WSGI middleware takes the
common case itself: a urlencoded POST to the report URL with a valid V3 signature is recorded
through the same `webhooks.record` and answered 204, with the same headers as any answer. Where
Redis's answer would not mean the report is on disk, the report is handed over without waiting
for it (`webhooks.hand_over`, `bulksms.store.handoff`).

Everything else goes on to the Flask blueprint, which handles it in full: no or a bad signature
(403, counted, 429 past the limit), V2 (whose nonce is bound to its request there), another
content type, a body without a length or over `FAST_MAX_BODY` (413 over the webhooks' cap), and
Redis failing (503). Recording a report twice changes nothing (old news to the store's script),
so handing a report on after a failed attempt is safe.
"""

from __future__ import annotations

import functools
import io
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

import redis

from bulksms import logs, signature
from bulksms.api import webhooks
from bulksms.store.handoff import Handoff

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from flask import Flask

    from bulksms.store import JobStore

log = logging.getLogger(__name__)

PATH = "/api/webhooks/plivo/delivery-report"
FORM = "application/x-www-form-urlencoded"
HEADERS = {"V3": "HTTP_X_PLIVO_SIGNATURE_V3", "MA": "HTTP_X_PLIVO_SIGNATURE_MA_V3"}
# Plivo's reports are under 2 KB. A bigger body goes to Flask, which refuses an address past the
# bad-signature limit before reading it: here nothing is checked before the body is parsed and
# its signature computed, so what anyone can make this path do is kept this small.
FAST_MAX_BODY = 4096


class DeliveryReports:
    def __init__(self, app: Flask, following: WSGIApplication) -> None:
        settings = app.config["SETTINGS"]
        self.following = following
        self.key: str | None = settings.webhook_key
        self.main_key: str | None = settings.plivo_main_auth_token
        self.url = f"{settings.api_base_url}{PATH}"
        self.store: JobStore = app.extensions["bulksms.store"]
        self.nonces = app.extensions["bulksms.nonces"]
        self.redis: redis.Redis = app.extensions["bulksms.redis"]
        # Reports handed to Redis unawaited where its answer is not a disk's (`store.handoff`).
        self.handoff = Handoff(self.redis)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        answered = self._take(environ)
        if answered is None:
            return self.following(environ, start_response)
        start_response(
            "204 No Content",
            [
                ("X-Request-ID", answered),
                ("X-Content-Type-Options", "nosniff"),
                ("Cache-Control", "no-store"),
            ],
        )
        return []

    def _take(self, environ: WSGIEnvironment) -> str | None:
        """Record a common-case report: its request id; None to leave it to Flask."""
        nonce = environ.get("HTTP_X_PLIVO_SIGNATURE_V3_NONCE")
        length = environ.get("CONTENT_LENGTH") or ""
        if (
            environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or nonce is None
            or not self.key
            or not (length.isascii() and length.isdigit() and len(length) <= 12)
            or int(length) > FAST_MAX_BODY
            or not environ.get("QUERY_STRING", "").isascii()  # (Flask's to judge: errors.py)
            or environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower() != FORM
        ):
            return None
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)  # for Flask, should it come to that
        # WSGI hands the query over as latin-1; Flask's view reads it as UTF-8.
        query = environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8", "replace")
        posted = webhooks.parse_form(body.decode("utf-8", "replace"))
        headers = {
            signature.V3: environ.get(HEADERS["V3"]),
            signature.MA_V3: environ.get(HEADERS["MA"]),
            signature.V3_NONCE: nonce,
        }
        url = f"{self.url}?{query}" if query else self.url
        if (
            signature.verify(url, posted, headers, self.key, self.main_key, accept_v2=False)
            is not signature.Verdict.VALID_V3
        ):
            return None
        v2_nonce = environ.get("HTTP_X_PLIVO_SIGNATURE_V2_NONCE")
        if v2_nonce:  # bound even beside a valid V3 (`webhooks.bound_nonces`)
            try:
                if not self.nonces.first_use(v2_nonce, webhooks.request_digest(url, posted)):
                    return None  # Flask answers a replay (2xx, nothing changes) and counts it
            except redis.RedisError:
                return None  # Flask tries once more, and answers 503 if Redis is still away
        job_id, batch = _job_and_batch(query)
        request_id = logs.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        token = logs.bind(request_id=request_id)
        form = {name: values[0] for name, values in posted.items()}
        try:
            if not webhooks.hand_over(self.store, self.handoff, job_id, batch, form):
                self._record(job_id, batch, form)
        except Exception as exc:
            # Flask tries once more and answers as it does (503 if Redis is still away).
            if not isinstance(exc, redis.RedisError):
                log.exception("delivery report fast path failed; handing it to Flask")
            return None
        finally:
            logs.unbind(token)
        return request_id

    def _record(self, job_id: str, batch: str, form: dict[str, str]) -> None:
        """Record the report waiting for Redis's answer, on this thread's connection."""
        connection = self.store.connections.get()
        try:
            webhooks.record(self.store, job_id, batch, form, connection)
        except Exception:
            connection.disconnect()  # type: ignore[no-untyped-call]  # (in any state: afresh)
            raise


@functools.lru_cache(maxsize=4096)  # one query per batch, shared by its reports
def _job_and_batch(query: str) -> tuple[str, str]:
    """The first `job` and `batch` in the query, as Flask's `request.args.get` reads them."""
    args = parse_qs(query)
    return args.get("job", [""])[0], args.get("batch", [""])[0]
