"""For operators and their tools: liveness, readiness and Prometheus metrics.

Liveness and readiness are open (load balancers ask without a key) and cost a request at most a
shared answer: one Redis ping and one Celery ping per process every few seconds, however many
ask. Metrics name queues, rates and failures: they need the API key (Prometheus sends it as a
bearer token)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from flask import Blueprint, Response, jsonify

from bulksms import metrics, taskqueue
from bulksms.api.auth import require_api_key
from bulksms.extensions import celery, redis_client, settings

bp = Blueprint("ops", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def prometheus() -> Response:
    require_api_key(settings().api_keys)
    body, content_type = metrics.render(lambda: taskqueue.queue_depth(celery()))
    return Response(body, content_type=content_type)


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    """Whether this web process can serve: what it needs is Redis. Workers are not its need (a
    load balancer reading this must keep sending Plivo's reports while workers are down). One
    ping per process for every caller in `REDIS_CHECK_SECONDS`."""
    return _readiness({"redis": _REDIS.check(_ping_redis)})


def _ping_redis() -> bool:
    return bool(redis_client().ping())


@bp.get("/readyz/workers")
def workers_ready() -> tuple[Response, int]:
    """Whether a worker consumes: one Celery ping for every caller in `WORKER_CHECK_SECONDS`
    (an open endpoint must not let anyone make each web thread wait a second on the broker)."""
    return _readiness({"worker": _WORKERS.check(lambda: bool(celery().control.ping(timeout=1.0)))})


def _readiness(checks: dict[str, Verdict]) -> tuple[Response, int]:
    ready = all(v.text == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "not ready",
        "checks": {name: v.text for name, v in checks.items()},
        # A caller that came while the next check ran got the last verdict: its age says
        # whether it still tells anything (after a quiet spell it may be hours old).
        "checked_seconds_ago": round(max(v.age for v in checks.values()), 1),
    }
    return jsonify(body), 200 if ready else 503


class Verdict(NamedTuple):
    text: str  # "ok", or why not
    age: float  # seconds since the check that made it ended


class _Shared:
    """One check at a time per process, its verdict shared for `seconds`. While a check runs,
    others take the last verdict, with its age, rather than wait for it (a thread waiting a
    second on a ping is a thread no other request has); only the first check of all is waited
    for."""

    def __init__(self, seconds: float, failed: str) -> None:
        self.seconds = seconds
        self.failed = failed  # the verdict when the probe answers no
        self.lock = threading.Lock()
        # The last verdict and when its check ended: one tuple, replaced whole and read whole.
        self.last: tuple[str, float] = ("", -math.inf)

    def check(self, probe: Callable[[], bool]) -> Verdict:
        verdict, at = self.last
        age = time.monotonic() - at  # (read once: the age told is the one that was judged)
        if age < self.seconds:
            return Verdict(verdict, age)
        if not self.lock.acquire(blocking=not verdict):
            return Verdict(verdict, age)  # another thread is checking
        try:
            verdict, at = self.last
            if time.monotonic() - at >= self.seconds:
                try:
                    verdict = "ok" if probe() else self.failed
                except Exception as exc:  # the broker is down, say
                    verdict = f"unavailable ({type(exc).__name__})"
                at = time.monotonic()
                self.last = verdict, at
            return Verdict(verdict, time.monotonic() - at)
        finally:
            self.lock.release()


WORKER_CHECK_SECONDS = 5.0
_WORKERS = _Shared(WORKER_CHECK_SECONDS, "no worker answered")
REDIS_CHECK_SECONDS = 1.0  # a lost Redis shows within a second
_REDIS = _Shared(REDIS_CHECK_SECONDS, "no answer")
