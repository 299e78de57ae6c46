"""The app's shared objects, reached from views and tasks through `current_app`."""

from __future__ import annotations

import redis
from flask import Flask, current_app

from bulksms.config import Settings
from bulksms.store.jobs import JobStore
from bulksms.worker.gateway import PlivoGateway
from bulksms.worker.throttle import PlivoThrottle


def init_app(app: Flask, settings: Settings) -> None:
    assert settings.redis_url
    client = redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
    app.config["SETTINGS"] = settings
    app.extensions["bulksms.redis"] = client
    app.extensions["bulksms.store.jobs"] = JobStore(client, settings.job_retention_seconds)
    app.extensions["bulksms.worker.throttle"] = PlivoThrottle(client, settings.plivo_rate_limit)


def settings() -> Settings:
    value: Settings = current_app.config["SETTINGS"]
    return value


def redis_client() -> redis.Redis:
    client: redis.Redis = current_app.extensions["bulksms.redis"]
    return client


def store() -> JobStore:
    value: JobStore = current_app.extensions["bulksms.store.jobs"]
    return value


def throttle() -> PlivoThrottle:
    value: PlivoThrottle = current_app.extensions["bulksms.worker.throttle"]
    return value


def gateway() -> PlivoGateway:
    """Made on first use in each process: worker children must not share a forked session."""
    found: PlivoGateway | None = current_app.extensions.get("bulksms.worker.gateway")
    if found is None:
        s = settings()
        s.require("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")
        assert s.plivo_auth_id and s.plivo_auth_token
        found = PlivoGateway(s.plivo_auth_id, s.plivo_auth_token, s.plivo_api_url, s.plivo_timeout)
        current_app.extensions["bulksms.worker.gateway"] = found
    return found
