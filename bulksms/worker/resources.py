"""What only a worker holds: the Plivo gateway, the shared throttle toward Plivo's API, the
shared pace at which Plivo sends, and the reconciler that asks Plivo about calls left without
an answer."""

from __future__ import annotations

from flask import Flask, current_app

from bulksms.config import Settings
from bulksms.extensions import settings
from bulksms.store import keys
from bulksms.store.signals import PlivoBucket
from bulksms.worker.gateway import PlivoGateway
from bulksms.worker.pacing import Pacer
from bulksms.worker.reconcile import Reconciler
from bulksms.worker.throttle import PlivoThrottle


def init_app(app: Flask, settings: Settings) -> None:
    client = app.extensions["bulksms.redis"]  # (extensions.init_app ran first)
    app.extensions["bulksms.throttle"] = PlivoThrottle(client, settings.plivo_rate_limit)
    app.extensions["bulksms.pacer"] = Pacer(app.extensions["bulksms.pace"], settings)
    per_minute = settings.plivo_list_per_minute
    app.extensions["bulksms.reconciler"] = Reconciler(
        app.extensions["bulksms.store"],
        app.extensions["bulksms.store"].handed,
        gateway,
        PlivoBucket(client, per_minute, per_minute / 60, keys.PLIVO_LIST_BUCKET),
        settings,
        api_budget=app.extensions["bulksms.throttle"].take,
    )


def throttle() -> PlivoThrottle:
    value: PlivoThrottle = current_app.extensions["bulksms.throttle"]
    return value


def pacer() -> Pacer:
    value: Pacer = current_app.extensions["bulksms.pacer"]
    return value


def gateway() -> PlivoGateway:
    """Made on first use in each process: worker children must not share a forked session."""
    found: PlivoGateway | None = current_app.extensions.get("bulksms.gateway")
    if found is None:
        s = settings()
        assert s.plivo_auth_id and s.plivo_auth_token
        found = PlivoGateway(s.plivo_auth_id, s.plivo_auth_token, s.plivo_api_url, s.plivo_timeout)
        current_app.extensions["bulksms.gateway"] = found
    return found
