"""Celery wired to the Flask app (the pattern of Flask's own `examples/celery`).

Crash settings (DESIGN.md §4): a batch message is acknowledged only after its task ran
(`task_acks_late`), goes back to the queue if its worker dies (`task_reject_on_worker_lost`), a
worker holds one message at a time (`worker_prefetch_multiplier = 1`), and an unacknowledged
message is redelivered after `visibility_timeout`. None of this decides whether a batch is sent:
the batch's own state in Redis does (see `dispatch`).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_init, worker_ready, worker_shutdown
from flask import Flask
from kombu.entity import Queue

from bulksms import logs
from bulksms.config import ConfigError, Settings

QUEUE = "bulksms"
URGENT_QUEUE = "bulksms.urgent"  # small or high-priority jobs: always served first


def celery_init_app(app: Flask, settings: Settings) -> Celery:
    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(
        {
            "broker_url": settings.broker_url,
            "broker_connection_retry_on_startup": True,
            "broker_connection_max_retries": None,  # a Redis outage is waited out, never fatal
            "broker_transport_options": {
                "visibility_timeout": settings.celery_visibility_timeout,
                "queue_order_strategy": "priority",
            },
            "task_ignore_result": True,
            "task_acks_late": True,
            "task_reject_on_worker_lost": True,
            "worker_prefetch_multiplier": 1,
            "task_default_queue": QUEUE,
            # Workers consume both; with the "priority" order kombu's Redis transport asks for
            # the urgent queue first on every poll, so an alert never waits behind a campaign.
            "task_queues": (Queue(URGENT_QUEUE), Queue(QUEUE)),
            # Flower shows tasks from their events.
            "worker_send_task_events": True,
            "task_send_sent_event": True,
            "worker_hijack_root_logger": False,
        }
    )
    celery_app.set_default()

    @task_prerun.connect(weak=False)
    def _bind_task(task_id: str, task: Task, args: tuple[Any, ...], **_: Any) -> None:
        fields: dict[str, Any] = {"task_id": task_id}
        if task.name == "bulksms.send_batch" and len(args) == 2:
            fields.update(job_id=args[0], batch=args[1])
        task.request.log_token = logs.bind(**fields)

    @task_postrun.connect(weak=False)
    def _unbind_task(task: Task, **_: Any) -> None:
        token = getattr(task.request, "log_token", None)
        if token is not None:
            logs.unbind(token)

    sweeping: list[Any] = []

    @worker_ready.connect(weak=False)
    def _start_sweep_and_metrics(**_: Any) -> None:
        from bulksms import metrics
        from bulksms.worker import sweep
        from bulksms.worker.tasks import queue_depth

        sweeping.append(sweep.start(app, settings))
        if settings.worker_metrics_port:
            try:
                metrics.serve_worker_metrics(settings.worker_metrics_port, queue_depth)
            except OSError as exc:  # another worker on this host has the port
                logging.getLogger(__name__).warning(
                    "worker metrics not served on port %s: %s", settings.worker_metrics_port, exc
                )

    @worker_shutdown.connect(weak=False)
    def _stop_sweep(**_: Any) -> None:
        for stop in sweeping:
            stop.set()

    @worker_init.connect(sender=None, weak=False)
    def _check_worker_settings(**_: Any) -> None:
        # A worker sends to Plivo: without credentials it would fail every batch.
        try:
            settings.require("PLIVO_AUTH_ID", "PLIVO_AUTH_TOKEN")
        except ConfigError as exc:
            raise SystemExit(f"bulksms worker: {exc}") from None

    app.extensions["celery"] = celery_app
    import bulksms.worker.tasks  # noqa: F401  (registers the shared tasks with this app)

    return celery_app
