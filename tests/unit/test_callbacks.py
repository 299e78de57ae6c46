"""Completion callbacks' signatures: the secret and the age are checked."""

from __future__ import annotations

import time

import pytest

from bulksms import callback_address
from bulksms.worker import completion_callback as callbacks

SECRET = "callback-secret-for-tests"


def test_signatures_check_the_secret_and_the_age() -> None:
    body = b'{"job_id":"x"}'
    assert callbacks.verify(body, callbacks.sign(body, SECRET), SECRET)
    assert not callbacks.verify(body, callbacks.sign(body, "other"), SECRET)
    assert not callbacks.verify(b'{"job_id":"y"}', callbacks.sign(body, SECRET), SECRET)
    stale = callbacks.sign(body, SECRET, at=int(time.time()) - 3600)
    assert not callbacks.verify(body, stale, SECRET)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://127.1/x",
        "http://0x7f000001/x",
        "http://2130706433/x",
        "http://localhost:8080/x",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:169.254.169.254]/x",
        "http://[fe80::1]/x",
        "http://[64:ff9b::a00:5]/x",
        "http://[64:ff9b:1::a00:5]/x",
        "http://[2002:a00:1::1]/x",
        "http://[::ffff:0:a00:1]/x",
        "http://[::a00:1]/x",
        "http://[fec0::1]/x",
        "http://224.0.1.1/x",
        "http://0.0.0.0/x",
        "https://100.64.0.1/x",
    ],
)
def test_a_callback_may_not_go_to_a_non_public_address(url: str) -> None:
    with pytest.raises(callback_address.NotAllowed, match="not a public address"):
        callback_address.allowed_addresses(url, allow_private=False)
    callback_address.allowed_addresses(url, allow_private=True)  # an internal receiver: allowed


@pytest.mark.parametrize(
    ("url", "address"),
    [("https://8.8.8.8/hook", "8.8.8.8"), ("http://[2606:4700::1111]:8080/", "2606:4700::1111")],
)
def test_a_public_address_is_the_one_connected_to(url: str, address: str) -> None:
    assert callback_address.allowed_addresses(url, allow_private=False) == [address]


def test_a_host_that_does_not_resolve_is_said_so() -> None:
    with pytest.raises(callback_address.Unresolved):
        callback_address.allowed_addresses("http://no-such-host.invalid/x", allow_private=False)
