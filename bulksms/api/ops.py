"""For operators and their tools: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

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
    checks: dict[str, str] = {}
    try:
        redis_client().ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"unavailable ({type(exc).__name__})"
    if checks["redis"] == "ok":
        replies = celery().control.ping(timeout=1.0)
        checks["worker"] = "ok" if replies else "no worker answered"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), (
        200 if ready else 503
    )
