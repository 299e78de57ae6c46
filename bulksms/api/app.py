"""The web app's factory: the list of what the web process is made of."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from bulksms import extensions, logs, numbers, taskqueue
from bulksms.api import errors, ratelimit, submit_fastpath
from bulksms.api import report_fastpath as fastpath
from bulksms.config import Networks, Settings, load_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

JSON_OVERHEAD_PER_RECIPIENT = 32  # bytes: '"+44 (20) 7946 0958", ' and then some


def create_app(settings: Settings | None = None) -> Flask:
    if settings is None:
        settings = load_settings()
    settings.require("REDIS_URL", "API_KEY", "API_BASE_URL", "SECRET_KEY")
    if not settings.webhook_key:
        logging.getLogger(__name__).warning(
            "Neither PLIVO_WEBHOOK_SECRET nor PLIVO_AUTH_TOKEN is set: every delivery report "
            "will be refused."
        )

    app = Flask("bulksms")
    app.secret_key = settings.secret_key  # (Flask's own; the page's sessions are in Redis)
    # Fits a million recipients and not much more; Werkzeug answers 413 beyond it.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_recipients * JSON_OVERHEAD_PER_RECIPIENT + 65536
    app.url_map.merge_slashes = False  # no HTML redirect for '//': a JSON 404 instead
    app.json.sort_keys = False  # type: ignore[attr-defined]
    logs.configure(settings)

    if settings.proxy_count:
        # The client address (for per-address limits) comes from X-Forwarded-For, and the
        # scheme (https: the campaign page's cookie is Secure) from X-Forwarded-Proto: only
        # when the proxy (FORWARDED_ALLOW_IPS) sends them, not anyone who reaches gunicorn.
        app.wsgi_app = FromProxy(  # type: ignore[method-assign]
            app.wsgi_app, settings.proxy_count, settings.forwarded_allow_ips
        )
    extensions.init_app(app, settings)
    errors.init_app(app)
    ratelimit.init_app(app, settings)
    numbers.prepare()  # compile the fast validator now, not in the first request
    # The web process only publishes tasks, by name (`taskqueue`): no worker code is loaded.
    app.extensions["celery"] = taskqueue.make_celery(settings)
    taskqueue.prepare(app.extensions["celery"])  # its first publish's imports, not in a request

    from bulksms.api import jobs as api
    from bulksms.api import openapi, ops, optouts, ui, webhooks

    app.register_blueprint(api.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(optouts.api)
    app.register_blueprint(optouts.inbound)
    app.register_blueprint(ops.bp)
    app.register_blueprint(openapi.bp)
    ui.init_app(app)  # the campaign page, /ui/
    # In front of everything Flask does: the delivery reports' common case and small submits
    # (alerts), each served without Flask's per-request machinery.
    app.wsgi_app = submit_fastpath.SmallSubmits(app, app.wsgi_app)  # type: ignore[method-assign]
    app.wsgi_app = fastpath.DeliveryReports(app, app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_bind_request_id)
    app.after_request(_security_headers)
    app.teardown_request(_unbind_request_id)
    return app


class FromProxy:
    """ProxyFix for requests whose peer is a trusted proxy; the others as they came."""

    def __init__(self, app: WSGIApplication, count: int, proxies: Networks) -> None:
        self.direct = app
        self.fixed = ProxyFix(app, x_for=count, x_proto=count)
        self.proxies = proxies

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            return self.direct(environ, start_response)
        if isinstance(peer, ipaddress.IPv6Address) and peer.ipv4_mapped:
            peer = peer.ipv4_mapped  # (a dual-stack socket's IPv4 peer)
        if any(peer in network for network in self.proxies):
            return self.fixed(environ, start_response)
        return self.direct(environ, start_response)


def _bind_request_id() -> None:
    request_id = logs.request_id(request.headers.get("X-Request-ID", ""))
    g.request_id = request_id
    g.log_token = logs.bind(request_id=request_id)


def _unbind_request_id(_: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        logs.unbind(token)


def _security_headers(response: Response) -> Response:
    if "request_id" in g:
        response.headers["X-Request-ID"] = g.request_id
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("Cache-Control", "no-store")
    return response
