"""Liveness and readiness, open to the orchestrator."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify

from bulksms import metrics
from bulksms.extensions import redis_client

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def prometheus() -> Response:
    from bulksms.worker.tasks import queue_depth

    body, content_type = metrics.render(queue_depth)
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
        replies = current_app.extensions["celery"].control.ping(timeout=1.0)
        checks["worker"] = "ok" if replies else "no worker answered"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), (
        200 if ready else 503
    )
