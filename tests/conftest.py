"""Fixtures for every test: the app with test settings and a test client.

Here Redis is a URL nothing listens on, so a unit test that reaches for Redis fails at once;
tests/integration/conftest.py overrides `redis_url` with a real server of its own."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import settings as hypothesis_settings

from bulksms import create_app
from bulksms.config import Settings
from bulksms.devstack.sandbox import make_credentials
from tests.helpers import API_KEY, SECOND_API_KEY, SENDER

# No per-example deadline: a busy host can stall any example past Hypothesis's 200 ms, and a
# property's failure should be a counterexample, not a slow moment.
hypothesis_settings.register_profile("bulksms", deadline=None)
hypothesis_settings.load_profile("bulksms")


@pytest.fixture
def redis_url() -> str:
    return "redis://127.0.0.1:9/0"  # the discard port: refused at once


@pytest.fixture(scope="session")
def credentials() -> tuple[str, str]:
    return make_credentials()


@pytest.fixture
def settings(redis_url: str, credentials: tuple[str, str]) -> Settings:
    auth_id, token = credentials
    return Settings(
        plivo_auth_id=auth_id,
        plivo_auth_token=token,
        plivo_sender_id=SENDER,
        api_keys=(API_KEY, SECOND_API_KEY),
        secret_key="test-secret-key-of-the-suite-0123456789",
        api_base_url="http://127.0.0.1:9",  # overridden where reports must really arrive
        redis_url=redis_url,
        send_backoff_base=0.05,
        send_backoff_max=0.5,
        plivo_timeout=2.0,  # so a batch left `sending` is looked at after 6 s
        # The suite's workers at the web app's priority: on a loaded CI host a niced worker gets
        # a fraction of a core, and the suite waits for workers' work, not for priorities
        # (`test_worker_priority` shows the default's).
        worker_nice=0,
        sweep_interval=0.5,
        dispatch_stale_seconds=2.0,
        worker_metrics_port=0,  # none; the integration stack gives each worker a free port
        # How long Plivo's message list may lag behind a call before "not there" counts: the
        # sandbox's list shows a message at once. Silence alone never resends (the list does).
        unknown_outcome_grace=5.0,
        # Plivo's pace out of the way (the sandbox has no queue unless told): the pacing tests
        # set both sides to the same slow pace.
        plivo_mps=1_000_000.0,
        # Every test asks from 127.0.0.1 and the limits' counters outlive a test: the tests
        # that refuse keys on purpose would share 30 a minute (test_ratelimit sets its own).
        rate_limit_bad_keys="1000/minute",
    )


@pytest.fixture
def app(settings: Settings) -> Flask:
    return create_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
