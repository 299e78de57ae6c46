"""The worker's factory: Celery wired to a small Flask app whose context every task runs in
(the pattern of Flask's own `examples/celery`), with what only a worker does: the sweep, the
pace's waker, the worker metrics, and a check of the Plivo credentials before the first task."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_init, worker_ready, worker_shutdown
from flask import Flask

from bulksms import extensions, logs, metrics, taskqueue
from bulksms.config import Settings, load_settings
from bulksms.worker import kombu_fix, pacing, resources, sweep

log = logging.getLogger(__name__)


def create_worker(settings: Settings | None = None) -> Celery:
    """The Celery app a worker runs. Needs Redis, the public base URL (the delivery-report URL
    is built from it) and the Plivo credentials; no API key."""
    if settings is None:
        settings = load_settings()
    settings.require("REDIS_URL", "API_BASE_URL", "PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")
    app = Flask("bulksms.worker")
    logs.configure(settings)
    extensions.init_app(app, settings)
    resources.init_app(app, settings)

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    kombu_fix.apply()  # a Redis restart must not stop a worker holding a message
    celery = taskqueue.make_celery(settings, task_cls=FlaskTask, include=["bulksms.worker.tasks"])
    celery.set_default()
    app.extensions["celery"] = celery
    _connect_signals(app, celery, settings)
    return celery


def _connect_signals(app: Flask, celery: Celery, settings: Settings) -> None:
    @task_prerun.connect(weak=False)
    def _bind_task(task_id: str, task: Task, args: tuple[Any, ...], **_: Any) -> None:
        fields: dict[str, Any] = {"task_id": task_id}
        if task.name == taskqueue.SEND_BATCH and len(args) == 2:
            fields.update(job_id=args[0], batch=args[1])
        task.request.log_token = logs.bind(**fields)

    @task_postrun.connect(weak=False)
    def _unbind_task(task: Task, **_: Any) -> None:
        token = getattr(task.request, "log_token", None)
        if token is not None:
            logs.unbind(token)

    sweeping: list[Any] = []

    def queue_depth() -> int:
        return taskqueue.queue_depth(celery)

    def enqueue(job_id: str, batches: Iterable[int], urgent: bool) -> None:
        taskqueue.enqueue(celery, job_id, batches, urgent)

    @worker_init.connect(weak=False)
    def _yield_the_cpu(**_: Any) -> None:
        # (before the pool forks, so that its processes and the sweep's thread inherit it)
        lower(settings.worker_nice)

    @worker_ready.connect(weak=False)
    def _start_sweep_and_metrics(**_: Any) -> None:
        sweeping.append(
            sweep.start(
                app,
                settings,
                enqueue=enqueue,
                notify=lambda job_id: taskqueue.notify(celery, job_id),
                queue_depth=queue_depth,
                reconcile=app.extensions["bulksms.reconciler"].settle,
                look_up=app.extensions["bulksms.reconciler"].look_up_silent,
                queue_heads=lambda: taskqueue.queue_heads(celery),
            )
        )
        sweeping.append(pacing.start(app, app.extensions["bulksms.pacer"].pace, settings, enqueue))
        if settings.worker_metrics_port:
            try:
                metrics.serve_worker_metrics(
                    settings.worker_metrics_host, settings.worker_metrics_port, queue_depth
                )
            except OSError as exc:  # another worker on this host has the port
                log.warning(
                    "worker metrics not served on port %s: %s", settings.worker_metrics_port, exc
                )

    @worker_shutdown.connect(weak=False)
    def _stop_sweep(**_: Any) -> None:
        for stop in sweeping:
            stop.set()


def lower(nice: int) -> None:
    """This process's CPU priority at least `nice` (one started lower stays lower)."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:  # (a sandbox that forbids it: run at the priority given)
            log.warning("worker priority not lowered to nice %s: %s", nice, exc)
