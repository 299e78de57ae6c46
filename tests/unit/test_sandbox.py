"""The sandbox's model of Plivo, in process (no HTTP, no report posted): its queue at an MPS,
expiry with 420, repeated destinations, the reports it would post and in what order."""

from __future__ import annotations

from typing import Any

import pytest

from bulksms.devstack.sandbox import Faults, Sandbox

URL = "http://127.0.0.1:9/report"  # (never posted to: the sandbox runs no posting thread here)


def sandbox(**faults: Any) -> Sandbox:
    chosen = Faults(undelivered_rate=0.0, failed_rate=0.0)
    chosen.update(faults)
    return Sandbox("MA" + "A" * 18, "token", faults=chosen, seed=1, report_threads=0)


def send(box: Sandbox, *numbers: str, **body: Any) -> dict[str, Any]:
    status, answer = box.accept(
        {"dst": "<".join(numbers), "src": "BULKSMS", "text": "hi", "url": URL, **body}
    )
    assert status == 202, answer
    return answer


def reports(box: Sandbox) -> list[tuple[str, str, str]]:
    """(number, status, sequence) of every report it would post, in the order it would."""
    due = sorted(box._queue)
    return [(r.params["To"], r.params["Status"], r.params["Sequence"]) for r in due]


def test_a_repeated_destination_is_dropped_as_plivo_drops_it() -> None:
    box = sandbox()
    answer = send(box, "+14155550100", "+14155550101", "+14155550100")
    assert len(answer["message_uuid"]) == 2
    assert sorted(m["dst"] for m in box.messages) == ["+14155550100", "+14155550101"]


def test_reports_count_their_sequence_up() -> None:
    box = sandbox()
    send(box, "+14155550100")
    assert reports(box) == [
        ("14155550100", "queued", "1"),
        ("14155550100", "sent", "2"),
        ("14155550100", "delivered", "3"),
    ]


def test_without_a_receipt_sent_is_the_last_word_and_queued_may_never_come() -> None:
    box = sandbox(no_receipt=["+1415"], no_queued=True)
    send(box, "+14155550100", "+12025550100")
    assert reports(box) == [
        ("14155550100", "sent", "1"),
        ("12025550100", "sent", "1"),
        ("12025550100", "delivered", "2"),
    ]
    assert {m["dst"]: m["status"] for m in box.messages} == {
        "+14155550100": "sent",
        "+12025550100": "delivered",
    }


@pytest.mark.parametrize("mps", [0.0, 10.0])
def test_the_queue_sends_at_its_mps_and_expires_what_waits_too_long(mps: float) -> None:
    box = sandbox(mps=mps)
    numbers = [f"+1415555{n:04d}" for n in range(100)]
    send(box, *numbers, message_expiry=5)
    waits = [m["left_at"] - m["accepted_at"] for m in box.messages if m["left_at"] is not None]
    expired = [m for m in box.messages if m["left_at"] is None]
    if mps == 0:
        assert waits == [0.0] * 100 and not expired
    else:  # one after another, 0.1 s apart; what would wait past 5 s fails with 420 instead
        assert len(waits) == 50 and waits[-1] == pytest.approx(5.0)
        assert all(b - a == pytest.approx(0.1) for a, b in zip(waits, waits[1:], strict=False))
        assert len(expired) == 50 and {m["error_code"] for m in expired} == {"420"}
