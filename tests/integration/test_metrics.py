"""Prometheus metrics, read as Prometheus reads them: /metrics parses, and counters move."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from bulksms.devstack.numbers_gen import us_numbers
from tests.helpers import API_KEY
from tests.helpers.stack import Stack


def scrape(stack: Stack) -> requests.Response:
    """As Prometheus scrapes: the API key as a bearer token."""
    answer = requests.get(
        f"{stack.base_url}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=10
    )
    assert answer.status_code == 200
    return answer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# A call of 1000 that outlasts the suite's 2 s timeout on a busy machine is settled from
# Plivo's list instead: right, but not the two accepted calls counted here.
@pytest.mark.parametrize("stack_overrides", [{"plivo_timeout": 15}])
def test_web_and_worker_metrics_move_with_a_job(
    stack: Stack, stack_overrides: dict[str, float]
) -> None:
    before = samples(scrape(stack).text)
    numbers = us_numbers(1200)
    job_id = stack.submit({"recipients": numbers + numbers[:5], "message": "m"}).json()["job_id"]
    stack.wait_for(job_id, lambda d: d["state"] == "completed")
    stack.wait_until_quiet()
    # Several gunicorn workers answer in turn: every scrape must show the sum of them all.
    for _ in range(3):
        after = samples(scrape(stack).text)
        accepted = value(after, "bulksms_recipients_accepted_total") - value(
            before, "bulksms_recipients_accepted_total"
        )
        assert accepted == 1200
        reports = sum(
            v for (name, _), v in after.items() if name == "bulksms_delivery_reports_total"
        )
        assert reports == 3 * 1200  # queued, sent and a final status for each
        finals = sum(
            value(after, "bulksms_delivery_reports_total", status=s, result="recorded")
            for s in ("delivered", "undelivered", "failed")
        )
        assert finals == 1200
    assert ("bulksms_queue_depth", ()) in after

    worker = samples(
        requests.get(
            f"http://127.0.0.1:{stack.settings.worker_metrics_port}/metrics", timeout=10
        ).text
    )
    assert value(worker, "bulksms_batches_total", outcome="submitted") == 2
    assert value(worker, "bulksms_plivo_request_seconds_count", result="accepted") == 2


def test_metrics_need_the_api_key(stack: Stack) -> None:
    assert requests.get(f"{stack.base_url}/metrics", timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer not-the-key-0123456789-0123456789"}
    assert requests.get(f"{stack.base_url}/metrics", headers=wrong, timeout=10).status_code == 401


def test_signature_failures_are_counted(stack: Stack) -> None:
    url = f"{stack.base_url}/api/webhooks/plivo/delivery-report?job=x&batch=0"
    assert requests.post(url, data={"Status": "sent"}, timeout=10).status_code == 403
    found = samples(scrape(stack).text)
    assert value(found, "bulksms_signature_failures_total", reason="missing") >= 1


def test_a_fresh_metrics_directory_goes_with_the_process_that_made_it() -> None:
    """Without PROMETHEUS_MULTIPROC_DIR each start makes a directory: it must not pile up in
    /tmp. A forked child (a gunicorn or Celery worker) leaving does not take it along."""
    script = (
        "import os, sys\n"
        "from bulksms.multiproc import use_directory\n"
        "folder = use_directory('web')\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    sys.exit(0)\n"
        "os.waitpid(child, 0)\n"
        "print(folder, os.path.isdir(folder))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    folder, alive_after_child = done.stdout.split()
    assert alive_after_child == "True"
    assert not os.path.exists(folder)
