"""The gateway with the real SDK over HTTP against the sandbox: each outcome mapped once."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest
import requests

from bulksms.devstack.sandbox import Sandbox
from bulksms.devstack.up import free_port
from bulksms.worker.gateway import (
    Accepted,
    BadCredentials,
    LookupFailed,
    NotSent,
    OutcomeUnknown,
    Outgoing,
    OutOfCredit,
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
        (500, OutcomeUnknown),
        (502, OutcomeUnknown),
        (504, OutcomeUnknown),
        (408, NotSent),
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


@pytest.mark.parametrize("status", [500, 502, 504])
def test_an_error_after_plivo_took_the_call_is_an_unknown_outcome(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str], status: int
) -> None:
    sandbox[0].faults.update({"accept_then_fail": [status], "reports": False})
    with pytest.raises(OutcomeUnknown):
        gateway.send(BATCH)
    assert len(sandbox[0].messages) == 2  # Plivo did send them: a retry would text them twice


def test_no_credit_is_an_account_refusal(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str]
) -> None:
    sandbox[0].faults.update({"no_credit": True})
    with pytest.raises(OutOfCredit):
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


def test_plivo_s_message_list_and_lookup_through_the_sdk(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str]
) -> None:
    box, url = sandbox
    box.faults.update({"reports": False, "list_per_minute": 2})
    before = time.time()
    accepted = gateway.send(BATCH)
    gateway.send(replace(BATCH, dst=("+14155550100",)))
    found = gateway.list_outbound("+14155550100", before - 60, time.time() + 60)
    assert len(found) == 2 and found[0].at >= found[1].at  # newest first
    assert {f.uuid for f in found} >= {accepted.message_uuids[0]}
    assert all(f.dst == "14155550100" and f.src == "14155550199" for f in found)
    # The window is Plivo's message_time, in whole seconds.
    assert gateway.list_outbound("+14155550100", before - 600, before - 300) == []
    one = gateway.lookup(accepted.message_uuids[0])
    assert one is not None and one.dst == "14155550100" and one.units == 1
    assert gateway.lookup("00000000-0000-0000-0000-000000000000") is None
    # Listing has its own limit (Plivo's default: 20 a minute): here 2, so the 3rd fails.
    with pytest.raises(LookupFailed):
        gateway.list_outbound("+14155550100", before - 60, time.time())
    assert box.stats()["list_refused"] == 1


def test_the_list_answers_in_plivo_s_shape_with_its_filters(sandbox: tuple[Sandbox, str]) -> None:
    box, url = sandbox
    box.faults.update({"reports": False})
    for n in range(25):
        box.accept({"dst": f"+1415555{n:04d}", "src": "+14155550199", "text": "x"})
    auth = (box.auth_id, box.auth_token)
    page = requests.get(f"{url}/v1/Account/{box.auth_id}/Message/", auth=auth, timeout=10).json()
    assert page["meta"]["total_count"] == 25 and len(page["objects"]) == 20
    assert page["meta"]["next"].endswith("offset=20")
    rest = requests.get(
        f"{url}/v1/Account/{box.auth_id}/Message/",
        params={"offset": 20, "limit": 20},
        auth=auth,
        timeout=10,
    ).json()
    assert len(rest["objects"]) == 5 and rest["meta"]["next"] is None
    too_many = requests.get(
        f"{url}/v1/Account/{box.auth_id}/Message/", params={"limit": 21}, auth=auth, timeout=10
    )
    assert too_many.status_code == 400


def test_plivo_s_list_by_sender_or_powerpack_pages_through_the_sdk(
    gateway: PlivoGateway, sandbox: tuple[Sandbox, str]
) -> None:
    """What the sweep reads before it makes a lost call again: a sender's (or a Powerpack's)
    messages in a window, a page of 20 at a time from an offset."""
    box, _ = sandbox
    box.faults.update({"reports": False})
    before = time.time()
    many = tuple(f"+1415555{n:04d}" for n in range(200, 225))
    gateway.send(replace(BATCH, dst=many))
    gateway.send(replace(BATCH, src="+14155550198"))
    gateway.send(replace(BATCH, src=None, powerpack_uuid="pp-1", dst=("+14155550300",)))
    until = time.time() + 60
    first = gateway.list_sent_by("+14155550199", None, before - 60, until, 0)
    second = gateway.list_sent_by("+14155550199", None, before - 60, until, 20)
    assert len(first) == 20 and len(second) == 5
    assert {f.dst for f in first + second} == {n.lstrip("+") for n in many}
    assert {f.src for f in first + second} == {"14155550199"}
    (through,) = gateway.list_sent_by(None, "pp-1", before - 60, until, 0)
    assert through.dst == "14155550300"
    assert gateway.list_sent_by("+14155550199", None, before - 600, before - 300, 0) == []
