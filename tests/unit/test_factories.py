"""The two factories: what each process needs to start, and what it is made of."""

from __future__ import annotations

import pytest

from bulksms import taskqueue
from bulksms.api.app import create_app
from bulksms.config import ConfigError, Settings
from bulksms.worker.app import create_worker

WORKER = Settings(
    redis_url="redis://127.0.0.1:9/0",  # never connected to here
    api_base_url="https://sms.example.com",
    plivo_auth_id="MA" + "A" * 18,
    plivo_auth_token="token",
)


def test_a_worker_needs_no_api_key_and_registers_the_tasks() -> None:
    celery = create_worker(WORKER)
    celery.loader.import_default_modules()  # what a starting worker does with `include`
    assert {taskqueue.SEND_BATCH, taskqueue.FAN_OUT, taskqueue.NOTIFY} <= set(celery.tasks)


def test_a_worker_without_plivo_credentials_names_them() -> None:
    with pytest.raises(ConfigError, match="PLIVO_AUTH_ID, PLIVO_AUTH_TOKEN"):
        create_worker(Settings(redis_url=WORKER.redis_url, api_base_url=WORKER.api_base_url))


def test_the_web_app_needs_an_api_key_and_a_secret_key_but_no_plivo_credentials() -> None:
    with pytest.raises(ConfigError, match="API_KEY, SECRET_KEY"):
        create_app(Settings(redis_url=WORKER.redis_url, api_base_url=WORKER.api_base_url))
    app = create_app(
        Settings(
            redis_url=WORKER.redis_url,
            api_base_url=WORKER.api_base_url,
            api_keys=("a-key-of-some-length-0123456789-abcdef",),
            secret_key="a-secret-of-some-length-0123456789",
        )
    )
    # A publisher only: the broker's queues, urgent first (test_architecture: no worker code).
    queues = app.extensions["celery"].conf.task_queues
    assert [q.name for q in queues] == [taskqueue.URGENT_QUEUE, taskqueue.QUEUE]
