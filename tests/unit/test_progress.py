"""The ETA in a job's status (`documents.progress`) and the submit answer's duration."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from bulksms.documents import duration, progress
from bulksms.store import JobState, RecipientCounts
from tests.helpers.fakes import job


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_the_estimate_is_the_remaining_messages_at_the_job_s_share_plus_plivo_s_queue() -> None:
    sending = job(batches=2, started_at=1000.0, handed=400)
    sending = replace(sending, recipients=RecipientCounts(1000, 1000, 0, 0, 0))
    assert sending.state is JobState.SENDING
    found = progress(sending, pace=100.0, backlog=4.0, sharing=2, now=2000.0)
    assert found is not None
    assert found["rate_per_second"] == 50.0 and found["remaining"] == 600
    assert at(found["estimated_completion_at"]) == 2000.0 + 600 / 50 + 4.0


def test_segments_slow_a_job_down() -> None:
    long = replace(
        job(batches=1, segments_per_message=3), recipients=RecipientCounts(9, 9, 0, 0, 0)
    )
    found = progress(long, pace=30.0, backlog=0.0, sharing=1, now=0.0)
    assert found is not None and found["rate_per_second"] == 10.0
    assert duration(9, 3, 30.0) == 0.9


def test_only_a_job_still_being_handed_over_has_an_estimate() -> None:
    for changes in ({"paused": True}, {"cancelled": True}, {"send_at": 5000.0}):
        assert progress(job(**changes), pace=5.0, backlog=0.0, sharing=1, now=0.0) is None
