"""The gateway with the real SDK over HTTP against the sandbox: each outcome mapped once."""

from __future__ import annotations

import pytest

from bulksms.devstack.sandbox import Sandbox
from bulksms.devstack.up import free_port
from bulksms.worker.gateway import (
    Accepted,
    BadCredentials,
    NotSent,
    OutcomeUnknown,
    Outgoing,
    PlivoGateway,
    Refused,
)

BATCH = Outgoing(
    dst=("+14155550100", "+14155550101"),
    text="hi",
    url="http://127.0.0.1:9/report",
    src="+14155550199",
)


@pytest.fixture
def gateway(sandbox: tuple[Sandbox, str]) -> PlivoGateway:
    box, url = sandbox
    return PlivoGateway(box.auth_id, box.auth_token, url, timeout=2)


def test_accepted_batch_carries_every_uuid(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str]
) -> None:
    box, _ = sandbox
    box.faults.update({"reports": False, "invalid_numbers": ["+14155550101"]})
    accepted = gateway.send(BATCH)
    assert isinstance(accepted, Accepted)
    assert len(accepted.message_uuids) == 1
    assert accepted.invalid_numbers == ("+14155550101",)
    assert [m["dst"] for m in box.messages] == ["+14155550100"]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (500, NotSent),
        (429, NotSent),
        (503, NotSent),
        (400, Refused),
        (403, Refused),
        (404, Refused),
    ],
)
def test_plivo_errors_are_sorted_into_retry_or_refuse(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str], status: int, kind: type
) -> None:
    sandbox[0].faults.update({"fail_next": [status]})
    with pytest.raises(kind):
        gateway.send(BATCH)
    assert sandbox[0].messages == []


def test_retry_after_is_kept(gateway: PlivoGateway, sandbox: tuple[Sandbox, str]) -> None:
    sandbox[0].faults.update({"fail_next": [429], "retry_after": 7})
    with pytest.raises(NotSent) as caught:
        gateway.send(BATCH)
    assert caught.value.retry_after == 7


def test_bad_credentials(sandbox: tuple[Sandbox, str]) -> None:
    box, url = sandbox
    with pytest.raises(BadCredentials):
        PlivoGateway(box.auth_id, "wrong-token", url, timeout=2).send(BATCH)


def test_a_dropped_connection_after_the_request_is_an_unknown_outcome(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str]
) -> None:
    sandbox[0].faults.update({"drop_next": 1, "reports": False})
    with pytest.raises(OutcomeUnknown):
        gateway.send(BATCH)
    assert len(sandbox[0].messages) == 2  # Plivo did take it: resending would duplicate


def test_a_read_timeout_is_an_unknown_outcome(sandbox: tuple[Sandbox, str]) -> None:
    box, url = sandbox
    box.faults.update({"latency_ms": 1500, "reports": False})
    with pytest.raises(OutcomeUnknown):
        PlivoGateway(box.auth_id, box.auth_token, url, timeout=0.5).send(BATCH)


def test_connection_refused_is_safe_to_retry(sandbox: tuple[Sandbox, str]) -> None:
    box, _ = sandbox
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(NotSent):
        PlivoGateway(box.auth_id, box.auth_token, nowhere, timeout=1).send(BATCH)
