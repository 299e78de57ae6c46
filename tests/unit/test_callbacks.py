"""Completion callbacks' signatures: the secret and the age are checked."""

from __future__ import annotations

import time

from bulksms.worker import completion_callback as callbacks

SECRET = "callback-secret-for-tests"


def test_signatures_check_the_secret_and_the_age() -> None:
    body = b'{"job_id":"x"}'
    assert callbacks.verify(body, callbacks.sign(body, SECRET), SECRET)
    assert not callbacks.verify(body, callbacks.sign(body, "other"), SECRET)
    assert not callbacks.verify(b'{"job_id":"y"}', callbacks.sign(body, SECRET), SECRET)
    stale = callbacks.sign(body, SECRET, at=int(time.time()) - 3600)
    assert not callbacks.verify(body, stale, SECRET)
