"""Prometheus metrics (prometheus-client), correct under several processes.

gunicorn's workers and Celery's pool children are separate processes, so both run in
prometheus-client's multiprocess mode: each process writes its values to files in
`PROMETHEUS_MULTIPROC_DIR`, and a scrape sums them. `bulksms.multiproc.use_directory` must run
before prometheus_client is first imported; the gunicorn settings (`bulksms.api.gunicorn_conf`)
and `bulksms.worker.main` call it.

The web app serves `/metrics`; a worker serves its own on `WORKER_METRICS_PORT` (its pool's
counters: batches, Plivo latency and errors).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bulksms.multiproc import ENV

RECIPIENTS_ACCEPTED = Counter(
    "bulksms_recipients_accepted", "Recipients accepted into jobs (valid, unique)."
)
JOBS_CREATED = Counter("bulksms_jobs_created", "Jobs created.")
REPORTS = Counter(
    "bulksms_delivery_reports",
    "Delivery reports with a valid signature, by status and what they changed.",
    ["status", "result"],  # result: recorded | repeat | unknown_recipient | ignored | lost
)
SIGNATURE_FAILURES = Counter(
    "bulksms_signature_failures", "Webhook requests refused for their signature.", ["reason"]
)
BATCHES = Counter(
    "bulksms_batches", "Batch attempts by outcome.", ["outcome"]
)  # submitted | advanced | paced | failed | retry | unknown | skipped | superseded
PLIVO_LATENCY = Histogram(
    "bulksms_plivo_request_seconds",
    "Time of one Plivo send call, by how it ended.",
    ["result"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20),
)
PLIVO_ERRORS = Counter(
    "bulksms_plivo_errors", "Plivo send calls that failed, by kind.", ["kind"]
)  # not_sent | refused | bad_credentials | outcome_unknown
LOOKUPS = Counter(
    "bulksms_plivo_lookups",
    "Reads of Plivo's Message API that settle what reports did not, by kind and result.",
    ["kind", "result"],
)  # list: found | absent | error | budget | ambiguous; get: found | unknown | error | budget
RECONCILED = Counter(
    "bulksms_reconciled_calls", "Calls without an answer, by what Plivo's list said.", ["verdict"]
)  # submitted | advanced | resend | moved | waiting


class _QueueDepth(Collector):
    """The batch queue's length, read from the broker at scrape time."""

    def __init__(self, depth: Callable[[], int]) -> None:
        self.depth = depth

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            value = float(self.depth())
        except Exception:  # the broker is down: say nothing rather than fail the scrape
            return
        yield GaugeMetricFamily(
            "bulksms_queue_depth", "Batch tasks waiting in the queue.", value=value
        )


class _ThisProcess(Collector):
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def registry(depth: Callable[[], int] | None = None) -> CollectorRegistry:
    """A registry for one scrape: every process's values (or this one's), and the queue."""
    fresh = CollectorRegistry(auto_describe=False)
    if os.environ.get(ENV):
        multiprocess.MultiProcessCollector(fresh)  # type: ignore[no-untyped-call]
    else:
        fresh.register(_ThisProcess())
    if depth is not None:
        fresh.register(_QueueDepth(depth))
    return fresh


def render(depth: Callable[[], int] | None = None) -> tuple[bytes, str]:
    return generate_latest(registry(depth)), CONTENT_TYPE_LATEST


def serve_worker_metrics(host: str, port: int, depth: Callable[[], int]) -> None:
    """The worker's own /metrics, from its main process, summing its pool's children."""
    start_http_server(port, addr=host, registry=registry(depth))


def process_exited(pid: int) -> None:
    """gunicorn's child_exit hook: drop a dead worker's live gauges."""
    if os.environ.get(ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
