"""The shared objects of every process (web and worker), reached through `current_app`."""

from __future__ import annotations

import logging

import redis
from celery import Celery
from flask import Flask, current_app

from bulksms.config import ConfigError, Settings
from bulksms.store import JobStore, server
from bulksms.store.pacing import Pace
from bulksms.store.sessions import Sessions
from bulksms.store.signals import Nonces

log = logging.getLogger(__name__)


def init_app(app: Flask, settings: Settings) -> None:
    assert settings.redis_url
    client = redis.Redis.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=5,
        health_check_interval=30,
    )
    _refuse_unsafe_redis(client)
    app.config["SETTINGS"] = settings
    app.extensions["bulksms.redis"] = client
    app.extensions["bulksms.store"] = JobStore(
        client, settings.job_retention_seconds, settings.dispatch_stale_seconds
    )
    app.extensions["bulksms.pace"] = Pace(client)
    # A report's nonce is remembered as long as jobs are: a V2 signature is good for any job.
    app.extensions["bulksms.nonces"] = Nonces(client, settings.job_retention_seconds)
    app.extensions["bulksms.sessions"] = Sessions(
        client, settings.secret_key or "", settings.ui_session_seconds
    )


def _refuse_unsafe_redis(client: redis.Redis) -> None:
    """Stop start-up on a Redis that may evict job state, or a cluster (`store.server`)."""
    cluster = server.cluster_enabled(client)
    if cluster:
        raise ConfigError(server.CLUSTER_MESSAGE)
    policy = None if cluster is None else server.eviction_policy(client)
    if policy is None:
        log.warning(
            "Redis is not reachable at start-up: its maxmemory-policy (which must be %s) and "
            "its mode (which must not be cluster) were not checked",
            server.SAFE_POLICY,
        )
    elif policy != server.SAFE_POLICY:
        raise ConfigError(server.unsafe_policy_message(policy))


def settings() -> Settings:
    value: Settings = current_app.config["SETTINGS"]
    return value


def redis_client() -> redis.Redis:
    client: redis.Redis = current_app.extensions["bulksms.redis"]
    return client


def store() -> JobStore:
    value: JobStore = current_app.extensions["bulksms.store"]
    return value


def pace() -> Pace:
    value: Pace = current_app.extensions["bulksms.pace"]
    return value


def nonces() -> Nonces:
    value: Nonces = current_app.extensions["bulksms.nonces"]
    return value


def sessions() -> Sessions:
    value: Sessions = current_app.extensions["bulksms.sessions"]
    return value


def celery() -> Celery:
    """The Celery app: a publisher in the web process, the worker's own app in a worker."""
    value: Celery = current_app.extensions["celery"]
    return value
