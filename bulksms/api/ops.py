"""For operators and their tools: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import redis
from flask import Blueprint, Response, jsonify

from bulksms import metrics, taskqueue
from bulksms.extensions import celery, redis_client

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def prometheus() -> Response:
    body, content_type = metrics.render(lambda: taskqueue.queue_depth(celery()))
    return Response(body, content_type=content_type)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Whether this web process can serve: what it needs is Redis. Workers are not its need (a
    load balancer reading this must keep sending Plivo's reports while workers are down)."""
    try:
        redis_client().ping()
        check = "ok"
    except redis.RedisError as exc:
        check = f"unavailable ({type(exc).__name__})"
    return _readiness({"redis": check})


@bp.get("/readyz/workers")
def workers_ready() -> tuple[Response, int]:
    """Whether a worker consumes: one Celery ping for every caller in `WORKER_CHECK_SECONDS`
    (an open endpoint must not let anyone make each web thread wait a second on the broker)."""
    return _readiness({"worker": _WORKERS.check(lambda: bool(celery().control.ping(timeout=1.0)))})


def _readiness(checks: dict[str, str]) -> tuple[Response, int]:
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), (
        200 if ready else 503
    )


class _Shared:
    """One check at a time per process, its verdict shared for a few seconds."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.lock = threading.Lock()
        self.verdict = ""
        self.at = -math.inf

    def check(self, probe: Callable[[], bool]) -> str:
        with self.lock:  # (the others wait for this one's answer instead of pinging too)
            if time.monotonic() - self.at >= self.seconds:
                try:
                    self.verdict = "ok" if probe() else "no worker answered"
                except Exception as exc:  # the broker is down, say
                    self.verdict = f"unavailable ({type(exc).__name__})"
                self.at = time.monotonic()
            return self.verdict


WORKER_CHECK_SECONDS = 5.0
_WORKERS = _Shared(WORKER_CHECK_SECONDS)
