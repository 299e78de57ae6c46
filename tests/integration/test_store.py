"""The job store's scripts on a real Redis: counters always equal the recipients' statuses."""

from __future__ import annotations

import random
import struct
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import redis

from bulksms.config import Settings
from bulksms.store import (
    BLOCKED_BY_STOP,
    BatchState,
    Claim,
    Job,
    JobState,
    JobStore,
    NewJob,
    Paging,
    Report,
    Sending,
    Status,
    keys,
    optouts,
    scripts,
)
from bulksms.store import handed as handed_module
from bulksms.store import jobs as jobs_module
from bulksms.store.handed import FoundCall
from bulksms.store.model import LAYOUT_VERSION
from bulksms.store.pacing import Pace
from bulksms.store.signals import PlivoBucket
from bulksms.worker import dispatch, sweep
from bulksms.worker.gateway import Accepted
from tests.helpers.settle import resolve

NUMBERS = ["+14155550100", "+14155550101", "+14155550102"]
UUID = "6f1c2a1e-8b7d-4c55-9a0e-3f2b1d4c5e6f"
SENDING = Sending("hi", "+14155550199")


def make(rdb: redis.Redis, numbers: list[str] = NUMBERS, batch_size: int = 2) -> JobStore:
    store = JobStore(rdb, 3600)
    store.create(
        NewJob(
            "j1",
            Sending("hi", "+14155550199"),
            numbers,
            len(numbers),
            0,
            0,
            0,
            batch_size,
            "GSM-7",
            1,
        )
    )
    return store


def job(store: JobStore) -> Job:
    found = store.job("j1")
    assert found is not None
    return found


def counts(store: JobStore) -> dict[str, int]:
    return {s.value: n for s, n in job(store).counts.items() if n}


def true_counts(store: JobStore, numbers: list[str], batch_size: int = 2) -> dict[str, int]:
    found = Counter()
    for i, n in enumerate(numbers):
        record = store.recipient("j1", i // batch_size, n)
        assert record
        found[record.status.value] += 1
    return dict(found)


@contextmanager
def refusing(rdb: redis.Redis, redis_url: str, command: str) -> Iterator[redis.Redis]:
    """A client whose user may not run `command`: Redis refuses it as it refuses a write when
    out of memory, before running anything of the transaction or script it is in."""
    user = f"no-{command}"
    rdb.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{user}-password"],
        keys=["*"],
        channels=["*"],
        categories=["+@all"],
        commands=[f"-{command}"],
    )
    client = redis.Redis.from_url(
        redis_url, username=user, password=f"{user}-password", decode_responses=True
    )
    try:
        yield client
    finally:
        client.close()
        rdb.acl_deluser(user)


def test_new_job_is_queued_with_every_recipient_pending(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert job(store).batches == 2
    assert counts(store) == {"pending": 3}
    assert job(store).state is JobState.QUEUED
    assert rdb.ttl("bulksms:{j1}:r:1") > 0


def test_a_batch_is_claimed_once_and_numbered(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert store.claim_batch("j1", 0) == Claim("go", attempt=1)
    assert store.claim_batch("j1", 0).outcome == "sending"
    assert store.claim_batch("nope", 0).outcome == "gone"


def test_a_released_batch_waits_for_its_backoff(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert not store.release_batch("j1", 0, attempt=2, offset=0, delay=0)  # not its attempt
    assert store.release_batch("j1", 0, attempt=1, offset=0, delay=60)
    assert store.claim_batch("j1", 0).outcome == "early"
    store.release_batch("j1", 0, attempt=1, offset=0, delay=0)  # no longer sending: no effect
    rdb.hset("bulksms:{j1}:batches", "0", "pending|0|1")
    assert store.claim_batch("j1", 0) == Claim("go", attempt=2)


def test_only_the_owning_attempt_records_an_outcome(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert store.call_submitted("j1", 0, 2, 0, "api", []) == "superseded"
    assert store.call_submitted("j1", 0, 1, 0, "api", []) == "submitted"
    assert store.call_submitted("j1", 0, 1, 0, "api", []) == "done"


def test_a_halted_job_fails_its_unsent_batches_without_sending(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.halt("j1", "Plivo refused the credentials")
    claim = store.claim_batch("j1", 1)
    assert (claim.outcome, claim.detail) == ("halted", "Plivo refused the credentials")
    assert counts(store) == {"pending": 2, "rejected": 1}


def test_an_unknown_outcome_is_settled_by_evidence(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert resolve(store, "j1", 0, in_flight_seconds=60, grace_seconds=120) == "in_flight"
    # A report for one of the batch's numbers: Plivo has the batch.
    store.record_report(Report("j1", 0, "+14155550100", Status.SENT, "u-1", ""))
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=120) == "submitted"
    assert counts(store) == {"pending": 1, "queued": 1, "sent": 1}


def test_an_unknown_outcome_without_evidence_is_resent_after_the_grace(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=120) == "waiting"
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    assert store.claim_batch("j1", 0) == Claim("go", attempt=2)


def test_submission_queues_and_rejects_what_plivo_refused(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert store.call_submitted("j1", 0, 1, 0, "api-1", ["+14155550101"]) == "submitted"
    assert counts(store) == {"pending": 1, "queued": 1, "rejected": 1}
    assert job(store).state is JobState.SENDING


def test_a_job_s_first_times_are_kept_and_its_last_ones_move(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    store.call_submitted("j1", 0, 1, 0, "api-1", [])
    first = rdb.hgetall(keys.job("j1"))
    assert first["started_at"] and first["first_handed_at"] and first["last_handed_at"]
    # (written back as a marker: a second claim and call must leave the first times as they are)
    rdb.hset(keys.job("j1"), mapping={"started_at": "1", "first_handed_at": "1"})
    rdb.hset(keys.job("j1"), mapping={"updated_at": "1", "last_handed_at": "1"})
    store.claim_batch("j1", 1)
    store.call_submitted("j1", 1, 1, 0, "api-2", [])
    after = rdb.hgetall(keys.job("j1"))
    assert (after["started_at"], after["first_handed_at"]) == ("1", "1")
    assert float(after["updated_at"]) > 1 and float(after["last_handed_at"]) > 1


def test_a_bill_beyond_what_a_count_holds_is_refused_and_the_counts_stay(rdb: redis.Redis) -> None:
    """A job's counts are written whole (one HSET a script), from Lua's numbers: a bill they
    would no longer hold exactly is refused, as HINCRBY refuses it, not written wrapped."""
    store = make(rdb)
    store.claim_batch("j1", 0)
    store.call_submitted("j1", 0, 1, 0, "api-1", [])
    fine = Report("j1", 0, "14155550100", Status.DELIVERED, UUID, "", units=2, amount=0.0065)
    assert store.record_report(fine) == 1
    before = rdb.hgetall(keys.job("j1"))
    assert (before["billed_units"], before["billed_amount_e5"]) == ("2", "650")
    huge = Report("j1", 0, "14155550101", Status.DELIVERED, "", "", units=2, amount=1e15)
    with pytest.raises(redis.ResponseError, match="a count out of range"):
        store.record_report(huge)
    assert rdb.hgetall(keys.job("j1")) == before


def test_a_report_before_the_submission_is_recorded_and_not_undone(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert store.record_report(Report("j1", 0, "14155550100", Status.DELIVERED, UUID, "")) == 1
    store.call_submitted("j1", 0, 1, 0, "api-1", [])
    assert counts(store) == {"pending": 1, "queued": 1, "delivered": 1}
    record = store.recipient("j1", 0, "+14155550100")
    assert record and (record.status, record.message_uuid) == (Status.DELIVERED, UUID)


def test_a_report_blocked_by_stop_opts_out_with_its_move_once(rdb: redis.Redis) -> None:
    """Whoever records it (the webhook, or the sweep's lookup of a message with no report), a
    report blocked by STOP opts its recipient out in the step that moves it, and only then: the
    same report again (a retry, a replay) changes nothing once the number was opted back in. A
    call made before the person's last STOP or START is not theirs to overrule."""
    store = make(rdb, [*NUMBERS, "+14155550103", "+14155550104"])
    store.claim_batch("j1", 0)
    store.call_submitted("j1", 0, 1, 0, "api", [])
    blocked = Report("j1", 0, "+14155550100", Status.FAILED, "u", BLOCKED_BY_STOP)
    assert store.record_report(blocked) == 1
    assert optouts.is_opted_out(rdb, "+14155550100")
    assert optouts.opt_in(rdb, "+14155550100")
    assert store.record_report(blocked) == 0
    assert store.record_report(blocked._replace(status=Status.UNDELIVERED)) == 0
    assert not optouts.is_opted_out(rdb, "+14155550100")
    # Another error opts nobody out, nor error 200 with a status a refused message never has.
    assert store.record_report(blocked._replace(number="+14155550101", status=Status.SENT)) == 1
    assert store.record_report(Report("j1", 0, "+14155550101", Status.FAILED, "v", "300")) == 1
    assert not optouts.is_opted_out(rdb, "+14155550101")
    # The person's START after the call, posted before its late report: the report moves its
    # recipient and opts nobody out. A START before the call is older than the carrier's block.
    store.claim_batch("j1", 1)
    store.call_submitted("j1", 1, 1, 0, "api", [])
    made = float(str(rdb.hget(keys.batches("j1"), "1")).split("|")[1])
    assert optouts.apply_reply(rdb, "+14155550102", False, made + 1, "a") == "applied"
    assert optouts.apply_reply(rdb, "+14155550103", False, made - 1, "b") == "applied"
    for number in ("+14155550102", "+14155550103"):
        assert store.record_report(blocked._replace(batch=1, number=number)) == 1
    assert not optouts.is_opted_out(rdb, "+14155550102")
    assert optouts.is_opted_out(rdb, "+14155550103")
    # A report before its batch's call is known (still pending: no time to weigh): taken.
    assert optouts.apply_reply(rdb, "+14155550104", False, made, "c") == "applied"
    assert store.record_report(blocked._replace(batch=2, number="+14155550104")) == 1
    assert optouts.is_opted_out(rdb, "+14155550104")


def test_a_blocked_report_weighs_its_recipient_s_own_call_in_a_batch_of_several(
    rdb: redis.Redis,
) -> None:
    """A batch sent in several calls (paced): the person's START after their own call, but
    before the batch's last, is their later word (helper-58's review: the batch's time was
    taken for every call's)."""
    store = make(rdb, batch_size=3)  # one batch, one number a call
    now = time.time()
    for offset in range(3):
        claim = store.claim_batch("j1", 0, offset, 1)
        store.call_submitted("j1", 0, claim.attempt, offset, "api", [], [], now, claim.since)
    # The batch finished well after its first call (as a paced one does, minutes later).
    rdb.hset(keys.batches("j1"), "0", f"submitted|{now + 100}|api")
    assert optouts.apply_reply(rdb, "+14155550100", False, now + 30, "start") == "applied"
    assert optouts.apply_reply(rdb, "+14155550101", False, now - 30, "start") == "applied"
    for number in ("+14155550100", "+14155550101"):
        report = Report("j1", 0, number, Status.FAILED, "", BLOCKED_BY_STOP)
        assert store.record_report(report) == 1
    assert not optouts.is_opted_out(rdb, "+14155550100")  # START after its own call
    assert optouts.is_opted_out(rdb, "+14155550101")  # START before it


def test_repeated_and_older_reports_change_nothing(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.batch_failed("j1", 1, None, "not this one")
    store.claim_batch("j1", 0)
    store.call_submitted("j1", 0, 1, 0, "api", [])
    assert store.record_report(Report("j1", 0, "+14155550100", Status.SENT, "u", "")) == 1
    assert store.record_report(Report("j1", 0, "+14155550100", Status.UNDELIVERED, "u", "80")) == 1
    for status in (Status.UNDELIVERED, Status.SENT, Status.QUEUED, Status.DELIVERED):
        assert store.record_report(Report("j1", 0, "+14155550100", status, "u", "")) == 0
    record = store.recipient("j1", 0, "+14155550100")
    assert record and record.error_code == "80"
    assert (
        counts(store)
        == true_counts(store, NUMBERS)
        == {"queued": 1, "undelivered": 1, "rejected": 1}
    )


def test_unknown_recipients_and_jobs_are_not_counted(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert store.record_report(Report("j1", 0, "+19999999999", Status.DELIVERED, "u", "")) == -1
    assert store.record_report(Report("j2", 0, "+14155550100", Status.DELIVERED, "u", "")) == -1
    assert counts(store) == {"pending": 3}


def test_a_failed_batch_rejects_its_pending_recipients(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert store.batch_failed("j1", 1, None, "Plivo said no") == 1
    store.batch_failed("j1", 0, None, "Plivo said no")
    assert counts(store) == {"rejected": 3}
    assert job(store).state is JobState.FAILED


def test_the_job_completes_when_every_recipient_is_final(rdb: redis.Redis) -> None:
    store = make(rdb)
    for batch in (0, 1):
        store.claim_batch("j1", batch)
        store.call_submitted("j1", batch, 1, 0, "api", [])
    assert job(store).state is JobState.SENT
    for i, n in enumerate(NUMBERS):
        store.record_report(Report("j1", i // 2, n, Status.DELIVERED, f"u{i}", ""))
    assert job(store).state is JobState.COMPLETED
    assert counts(store) == {"delivered": 3}


def test_a_batch_carries_how_plivo_is_to_send_it(rdb: redis.Redis) -> None:
    store = JobStore(rdb, 3600)
    sending = Sending("hi", None, "1b2c3d4e-aaaa-bbbb-cccc-0123456789ab", 600)
    store.create(NewJob("j2", sending, NUMBERS, 3, 0, 0, 0, 1000, "GSM-7", 1))
    work = store.batch_work("j2", 0)
    assert work.sending == sending
    assert work.numbers == NUMBERS


def test_every_number_of_a_full_batch_is_found_by_its_report(rdb: redis.Redis) -> None:
    rng = random.Random(5)
    numbers = list({f"+44{rng.randrange(7_000_000_000, 8_000_000_000)}" for _ in range(1000)})
    store = make(rdb, numbers, batch_size=1000)
    store.claim_batch("j1", 0)
    store.call_submitted("j1", 0, 1, 0, "api", numbers[:3])  # Plivo refused three
    for n in numbers:
        store.record_report(Report("j1", 0, n, Status.DELIVERED, str(uuid.uuid4()), "000"))
    assert counts(store) == true_counts(store, numbers, 1000) == {"delivered": 997, "rejected": 3}
    assert {r.number for r in store.batch_recipients("j1", 0)} == set(numbers)


def test_a_recipient_shows_its_batch_outcome_until_it_has_its_own(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.claim_batch("j1", 0)
    store.call_submitted("j1", 0, 1, 0, "api", ["+14155550101"])
    store.batch_failed("j1", 1, None, "Plivo said no")
    store.record_report(Report("j1", 0, "+14155550100", Status.UNDELIVERED, UUID, "080"))
    shown = {r.number: r for b in (0, 1) for r in store.batch_recipients("j1", b)}
    assert shown["+14155550100"].as_dict() == {
        "number": "+14155550100",
        "message_uuid": UUID,
        "status": "undelivered",
        "error_code": "080",
        "updated_at": shown["+14155550100"].updated_at,
    }
    assert (shown["+14155550101"].status, shown["+14155550101"].error_code) == (
        Status.REJECTED,
        "invalid_number",
    )
    assert (shown["+14155550102"].status, shown["+14155550102"].error_code) == (
        Status.REJECTED,
        "batch_failed",
    )
    assert all(r.updated_at for r in shown.values())


def test_a_batch_takes_its_32_bytes_a_recipient_and_no_more(rdb: redis.Redis) -> None:
    numbers = [f"+1415555{n:04d}" for n in range(1000)]
    make(rdb, numbers, batch_size=1000)
    assert rdb.strlen("bulksms:{j1}:r:0") == 32_000
    assert rdb.memory_usage("bulksms:{j1}:r:0") <= 33_000  # not twice that (a grown string)


def test_many_reports_in_one_pipeline_answer_each_for_itself(rdb: redis.Redis) -> None:
    store = make(rdb)
    answers = store.record_reports(
        [
            Report("j1", 0, "+14155550100", Status.SENT, UUID),
            Report("j1", 0, "+14155550100", Status.SENT, UUID),  # old news
            Report("j1", 0, "+19999999999", Status.SENT),  # no such recipient
            Report("j1", 0, "not a number", Status.SENT),
            Report("j1", 1, "+14155550102", Status.DELIVERED),
        ]
    )
    assert answers == [1, 0, -1, -1, 1]
    assert counts(store) == true_counts(store, NUMBERS) == {"pending": 1, "sent": 1, "delivered": 1}


def test_a_job_written_by_the_release_before_is_read_and_finished(rdb: redis.Redis) -> None:
    """Jobs run for days, across deploys. This is version 1 of the layout (no `v` field), as
    the release before layout versions wrote it, key by key; this release finishes it."""
    now = f"{time.time():.3f}"
    numbers = sorted(int(n) for n in NUMBERS[:2])
    rdb.hset(
        "bulksms:{old}:job",
        mapping={
            "message": "hi",
            "src": "+14155550199",
            "created_at": now,
            "updated_at": now,
            "batches": 1,
            "received": 2,
            "accepted": 2,
            "duplicates": 0,
            "invalid": 0,
            "suppressed": 0,
            "b:pending": 1,
            "b:submitted": 0,
            "b:failed": 0,
            "b:cancelled": 0,
            **{f"c:{code}": 0 for code in "pqsdufrx"},
            "c:p": 2,
            "encoding": "GSM-7",
            "segments_per_message": 1,
            "urgent": 1,
        },
    )
    rdb.hset("bulksms:{old}:batches", mapping={"0": "pending|0|0", "q:0": now})
    rdb.set("bulksms:{old}:r:0", struct.pack(">2Q48x", *numbers))
    store = JobStore(rdb, 3600)
    old = store.job("old")
    assert old is not None and old.version == 1 and old.urgent
    assert old.state is JobState.QUEUED and old.counts[Status.PENDING] == 2
    assert [b.state for b in store.batches("old")] == [BatchState.PENDING]

    assert store.claim_batch("old", 0) == Claim("go", attempt=1)
    assert store.batch_work("old", 0).numbers == NUMBERS[:2]
    assert store.call_submitted("old", 0, 1, 0, "api-1", []) == "submitted"
    for number in NUMBERS[:2]:
        assert store.record_report(Report("old", 0, number, Status.DELIVERED, UUID, "")) == 1
    finished = store.job("old")
    assert finished is not None and finished.state is JobState.COMPLETED
    assert finished.counts[Status.DELIVERED] == 2
    assert [r.status for r in store.batch_recipients("old", 0)] == [Status.DELIVERED] * 2


def test_a_new_job_carries_the_layout_version(rdb: redis.Redis) -> None:
    store = make(rdb)
    assert rdb.hget("bulksms:{j1}:job", "v") == str(LAYOUT_VERSION)
    assert job(store).version == LAYOUT_VERSION


def test_a_new_job_writes_only_the_counts_that_are_not_0(rdb: redis.Redis) -> None:
    """Each field costs every submit (an alert's hash was mostly zeros); a missing count reads
    as 0, and counting starts from there."""
    store = JobStore(rdb, 3600)
    store.create(NewJob("j1", SENDING, NUMBERS, 6, 2, 1, 0, 2, "GSM-7", 1))
    stored = rdb.hgetall("bulksms:{j1}:job")
    assert "0" not in stored.values()
    assert {
        "duplicates": "2",
        "invalid": "1",
        "c:p": "3",
        "b:pending": "2",
    }.items() <= stored.items()
    assert "suppressed" not in stored and "c:d" not in stored and "b:submitted" not in stored
    made = job(store)
    assert made.recipients.suppressed == 0 and made.batch_counts[BatchState.SUBMITTED] == 0
    assert made.counts == {s: (3 if s is Status.PENDING else 0) for s in Status}
    assert made.state is JobState.QUEUED

    assert store.claim_batch("j1", 0) == Claim("go", attempt=1)
    assert store.call_submitted("j1", 0, 1, 0, "api-1", []) == "submitted"
    assert store.record_report(Report("j1", 0, NUMBERS[0], Status.DELIVERED, UUID, "")) == 1
    assert counts(store) == {"pending": 1, "queued": 1, "delivered": 1}
    assert job(store).batch_counts[BatchState.SUBMITTED] == 1


def test_a_call_s_age_is_on_redis_s_clock_not_a_host_s(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claimer 90 s behind and a sweeper 90 s ahead: the call is still young to both."""
    store = make(rdb)
    monkeypatch.setattr(jobs_module, "_now", lambda: f"{time.time() - 90:.3f}")
    store.claim_batch("j1", 0)
    monkeypatch.setattr(jobs_module, "_now", lambda: f"{time.time() + 90:.3f}")
    assert store.resolve_batch("j1", 0, in_flight_seconds=30) == "in_flight"
    (record,) = [b for b in store.batches("j1") if b.batch == 0]
    assert abs(record.since - store.clock()) < 5
    assert store.settle_call("j1", 0, record.attempts, record.offset, found=False) == "resend"


def test_our_batches_messages_are_known_by_uuid_around_their_hour(rdb: redis.Redis) -> None:
    """What Plivo answered a batch with, and what a report named before its call was recorded,
    are known as that batch's (one set member an hour a batch, not an entry a message)."""
    store = make(rdb)
    now = time.time()
    answered = str(uuid.uuid4())
    store.remember_answer("j1", 1, [answered], now)
    reported = str(uuid.uuid4())
    store.claim_batch("j1", 0)
    assert store.record_report(Report("j1", 0, NUMBERS[0], Status.SENT, reported, "")) == 1
    owners = store.handed.owners(now - 60, now + 60)
    assert owners == {answered: "j1:1", reported: "j1:0"}
    assert store.silent_uuids("j1", 1) == [answered]
    assert store.handed.owners(now - 3 * 3600, now - 3 * 3600) == {}


def test_a_call_s_answer_is_kept_with_its_record_in_one_round_trip(rdb: redis.Redis) -> None:
    """The UUIDs Plivo answered a call with are written with its record, also when Redis has
    forgotten the script (the UUIDs written once, the call recorded once)."""
    store = make(rdb)
    now = time.time()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    rdb.script_load(scripts.CALL)
    store.claim_batch("j1", 0)
    assert store.call_submitted("j1", 0, 1, 0, "api", [], [first], now) == "submitted"
    assert rdb.strlen(keys.answered("j1", 0)) == 16  # (one UUID, once)
    rdb.script_flush()  # as after a restart
    store.claim_batch("j1", 1)
    assert store.call_submitted("j1", 1, 1, 0, "api", [], [second], now) == "submitted"
    assert store.handed.owners(now - 60, now + 60) == {first: "j1:0", second: "j1:1"}
    assert store.silent_uuids("j1", 0) == [first] and store.silent_uuids("j1", 1) == [second]
    assert rdb.strlen(keys.answered("j1", 1)) == 16
    assert job(store).state is JobState.SENT
    assert store.call_submitted("j1", 1, 1, 0, "api", [], [second], now) == "done"


def test_a_call_recorded_already_is_told_from_a_rival_s(rdb: redis.Redis) -> None:
    """A call's record written again (its first answer lost on the way back) finds the batch
    past the call's offset: recorded, and its worker goes on with the next call. A call that
    lost its offset to another claim, recorded in its place after the sweep found nothing in
    Plivo's list, is 'superseded' when Plivo takes it late: Plivo has both."""
    store = make(rdb, batch_size=3)  # one batch, sent one number a call
    now = time.time()

    def record(claim: Claim, offset: int, since: str | None = None) -> str:
        given = claim.since if since is None else since
        return store.call_submitted("j1", 0, claim.attempt, offset, "api", [], [], now, given)

    first = store.claim_batch("j1", 0, 0, 1)
    assert record(first, 0) == "advanced"
    assert record(first, 0) == "advanced"  # (written again: its answer was lost)
    assert record(first, 0, since="") == "superseded"  # (a caller that cannot say which claim)
    assert counts(store)["queued"] == 1
    hung = store.claim_batch("j1", 0, 1, 1)  # its call hangs
    assert record(first, 0) == "advanced"
    assert store.settle_call("j1", 0, hung.attempt, 1, found=False) == "resend"
    again = store.claim_batch("j1", 0, 1, 1)
    assert again.outcome == "go" and again.attempt != hung.attempt
    assert record(again, 1) == "advanced"
    assert record(hung, 1) == "superseded"
    assert record(again, 1) == "advanced"
    assert counts(store)["queued"] == 2
    last = store.claim_batch("j1", 0, 2, 1)
    assert record(last, 2) == "submitted"
    assert record(last, 2) == "done"
    assert counts(store)["queued"] == 3
    assert not rdb.hexists(keys.batches("j1"), "o:0")  # (kept while the batch is unfinished)


def test_a_batch_keeps_its_last_recorded_claims_only(rdb: redis.Redis) -> None:
    """A batch sent one number a call keeps the last 16 of its calls' claims, not all: a record
    written again comes moments after its first."""
    numbers = [f"+1415555{i:04d}" for i in range(20)]
    store = make(rdb, numbers, batch_size=20)
    now = time.time()
    claims = []
    for offset in range(18):
        claim = store.claim_batch("j1", 0, offset, 1)
        assert store.call_submitted("j1", 0, 1, offset, "a", [], [], now, claim.since) == (
            "advanced"
        )
        claims.append(claim)
    kept = str(rdb.hget(keys.batches("j1"), "o:0"))
    assert kept.startswith(";2:1:") and kept.count(";") == 17
    oldest, newest = claims[1], claims[2]  # (the second is forgotten, the third kept)
    assert store.call_submitted("j1", 0, 1, 1, "a", [], [], now, oldest.since) == "superseded"
    assert store.call_submitted("j1", 0, 1, 2, "a", [], [], now, newest.since) == "advanced"
    assert counts(store)["queued"] == 18


def test_a_claim_redis_lost_is_not_taken_for_the_next_one(rdb: redis.Redis) -> None:
    """A Redis that loses a claim (writes not durable, a failover) gives the next claim at the
    offset the same attempt number. Two calls then reached Plivo, and whichever is recorded
    second says so: claims are told apart by when they were made, not only by their number."""
    store = make(rdb, batch_size=3)
    now = time.time()
    before = rdb.hget(keys.batches("j1"), "0")
    lost = store.claim_batch("j1", 0, 0, 1)
    rdb.hset(keys.batches("j1"), "0", str(before))  # (the claim forgotten)
    time.sleep(0.002)  # (Redis's clock in milliseconds: the next claim's moves on)
    following = store.claim_batch("j1", 0, 0, 1)
    assert following.attempt == lost.attempt and following.since != lost.since
    # The first claim's owner can neither put the batch back, fail it, leave numbers out of it
    # nor have the sweep settle it: the call in flight is not its own.
    assert not store.release_batch("j1", 0, lost.attempt, 0, 0.0, lost.since)
    assert store.batch_failed("j1", 0, (lost.attempt, 0), "refused", lost.since) == -1
    assert not store.suppress("j1", 0, lost.attempt, 0, [NUMBERS[0]], lost.since)
    assert store.settle_call("j1", 0, lost.attempt, 0, False, float(lost.since)) == "moved"
    answer = ("j1", 0, lost.attempt, 0, "api", [], [], now)
    assert store.call_submitted(*answer, lost.since) == "superseded"  # (its claim is gone)
    assert store.call_submitted(*answer, following.since) == "advanced"
    assert store.call_submitted(*answer, lost.since) == "superseded"  # (after, the same)
    # And a call settled from Plivo's list names no claim: a late answer still says so.
    hung = store.claim_batch("j1", 0, 1, 1)
    (record,) = [b for b in store.batches("j1") if b.batch == 0]  # (as the sweep reads it)
    assert store.settle_call("j1", 0, hung.attempt, 1, True, record.since) == "advanced"
    late = ("j1", 0, hung.attempt, 1, "api", [], [], now, hung.since)
    assert store.call_submitted(*late) == "superseded"
    assert counts(store)["queued"] == 2


def test_a_call_is_never_recorded_without_its_answer(rdb: redis.Redis, redis_url: str) -> None:
    """The UUIDs Plivo answered a call with and the call's record are one transaction: a write
    Redis refuses before any runs (out of memory does so; here an ACL refusing APPEND) leaves
    the call unrecorded, to be written again. Recorded without its UUIDs, the call's messages
    would show in Plivo's list as another call's."""
    store = make(rdb)
    now = time.time()
    answered = str(uuid.uuid4())
    rdb.script_load(scripts.CALL)  # (else the script would not run either)
    claim = store.claim_batch("j1", 0)
    record = ("j1", 0, claim.attempt, 0, "api", [], [answered], now, claim.since)
    with refusing(rdb, redis_url, "append") as refused, pytest.raises(redis.ResponseError):
        JobStore(refused, 3600).call_submitted(*record)
    assert store.batches("j1")[0].state is BatchState.SENDING  # (nothing written)
    assert store.handed.owners(now - 60, now + 60) == {}
    assert store.call_submitted(*record) == "submitted"
    assert store.silent_uuids("j1", 0) == [answered]
    assert store.handed.owners(now - 60, now + 60) == {answered: "j1:0"}


def test_a_job_with_a_write_refused_is_never_indexed_nor_enqueued(
    rdb: redis.Redis, redis_url: str
) -> None:
    """A big job's data is not one transaction: Redis out of memory refuses a write and may take
    the next once memory is freed. A job missing a batch's recipients (here an ACL refuses SET)
    is then neither indexed nor enqueued: nothing sends part of a job whose submit failed, to be
    sent again by the client's retry."""
    numbers = [f"+1415555{i:04d}" for i in range(5)]
    new_job = NewJob("j2", SENDING, numbers, len(numbers), 0, 0, 0, 2, "GSM-7", 1)
    with refusing(rdb, redis_url, "set") as refused, pytest.raises(redis.ResponseError):
        JobStore(refused, 3600).create(new_job, tasks=[("bulksms", "task")])
    assert rdb.zscore(keys.ACTIVE_JOBS, "j2") is None and rdb.zscore(keys.JOBS, "j2") is None
    assert rdb.llen("bulksms") == 0
    # What was written goes at once, not with the retention: a full Redis needs the room.
    assert not rdb.exists(keys.job("j2"), keys.batches("j2"), keys.recipients("j2", 0))
    rdb.script_flush()  # (as after a restart: the commit's script is loaded again)
    store = JobStore(rdb, 3600)
    store.create(replace(new_job, job_id="j3"), tasks=[("bulksms", "task")])
    assert rdb.zscore(keys.ACTIVE_JOBS, "j3") is not None and rdb.llen("bulksms") == 1
    found = store.job("j3")
    assert found is not None and found.counts[Status.PENDING] == 5


def test_a_job_whose_commit_is_refused_leaves_nothing(rdb: redis.Redis, redis_url: str) -> None:
    """Every data write kept, but the commit itself refused (out of memory refuses a script's
    first write; here an ACL refusing ZADD): the job is not indexed, enqueued or kept."""
    new_job = NewJob("j2", SENDING, NUMBERS, 3, 0, 0, 0, 2, "GSM-7", 1)
    with refusing(rdb, redis_url, "zadd") as refused, pytest.raises(redis.ResponseError):
        JobStore(refused, 3600).create(new_job, tasks=[("bulksms", "task")])
    assert rdb.zscore(keys.JOBS, "j2") is None and rdb.llen("bulksms") == 0
    assert not rdb.exists(keys.job("j2"), keys.batches("j2"), keys.recipients("j2", 1))


def test_the_sweep_reads_due_jobs_a_page_at_a_time_and_misses_none(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every job due, once, with no command reading more than a page, though between pages a
    job is indexed and two woken, one read and one not (each comes in before the jobs not yet
    read, which move up a rank and are read again); the one read keeps its wake when the sweep
    says when to look next, and the one not read may wait for the next sweep, which reads it
    first. One read of all of them held Redis while every submit and report waited."""
    monkeypatch.setattr(jobs_module, "SWEEP_PAGE", 4)
    store = JobStore(rdb, 3600)
    now = store.clock()
    woken = {f"w{i}": -1e15 - i for i in range(3)}  # (as `scripts.WAKE` makes them)
    due = {f"d{i}": float(i + 1) for i in range(10)}  # (looked at again by now)
    later = {f"l{i}": now + 1000 + i for i in range(3)}
    rdb.zadd(keys.ACTIVE_JOBS, {**woken, **due, **later})
    reads: list[list[tuple[str, float]]] = []
    zrange = rdb.zrange

    def reading(*args: Any, **kwargs: Any) -> Any:
        page = zrange(*args, **kwargs)
        reads.append(page)
        if len(reads) == 1:  # between the first page and the second
            rdb.zadd(keys.ACTIVE_JOBS, {"new": 0})  # a job indexed
            rdb.zadd(keys.ACTIVE_JOBS, {"d0": -3e15})  # one read, woken since
            rdb.zadd(keys.ACTIVE_JOBS, {"d5": -2e15})  # one not yet read, woken
        return page

    monkeypatch.setattr(rdb, "zrange", reading)
    found = store.jobs_to_sweep(now)
    assert len(reads) >= 3 and all(len(page) <= 4 for page in reads)
    ids = [job_id for job_id, _ in found]
    assert [job_id for page in reads for job_id, _ in page].count("w0") == 2  # (moved up)
    assert len(ids) == len(set(ids))  # (each once, though read twice)
    assert reads[0][-1] == ("d0", 1.0) and ("d0", -3e15) not in found
    assert dict(found) == {**woken, **{j: d for j, d in due.items() if j != "d5"}, "new": 0.0}
    # The sweep says when to look next at what it read: the wake of d0 since stands.
    store.look_again([(job_id, read, now + 1000) for job_id, read in found])
    assert store.jobs_to_sweep(now) == [("d0", -3e15), ("d5", -2e15)]


def test_the_sweep_says_when_to_look_next_in_scripts_short_enough_to_let_others_in(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A script holds Redis for all its run: the next looks at many jobs are set
    `LOOKS_AT_ONCE` at a time, each its own command, and all of them land."""
    store = make(rdb)
    now = store.clock()
    monkeypatch.setattr(jobs_module, "LOOKS_AT_ONCE", 4)
    jobs = {f"a{i}": float(i) for i in range(10)}
    rdb.zadd(keys.ACTIVE_JOBS, jobs)
    store.look_again([("none", 0.0, 1.0)])  # (the script loaded: its first run is refused)
    rdb.config_resetstat()
    store.look_again([(job_id, read, now + 1000 + read) for job_id, read in jobs.items()])
    assert int(rdb.info("commandstats")["cmdstat_evalsha"]["calls"]) == 3  # (4, 4 and 2)
    assert store.jobs_to_sweep(now + 999) == [("j1", 0.0)]  # (the store's own job, untouched)
    assert dict(rdb.zrange(keys.ACTIVE_JOBS, 1, -1, withscores=True)) == {
        job_id: now + 1000 + read for job_id, read in jobs.items()
    }


def test_a_job_waiting_for_reports_is_looked_at_when_due_or_at_a_final_report(
    rdb: redis.Redis,
) -> None:
    """The sweep's index of active jobs by when each is next due: a job is due once indexed,
    then when the sweep says, unless a worker's claim, a final report or a cancel makes it due
    at once; and the sweep's say does not undo that when it comes after (it read the job
    before)."""
    store = make(rdb)
    now = store.clock()
    ((job_id, read),) = store.jobs_to_sweep(now)
    assert job_id == "j1" and read == 0.0  # (due at once, whatever the clocks)
    store.look_again([("j1", read, now + 1000)])
    assert store.jobs_to_sweep(now) == [] and store.jobs_to_sweep(now + 1000) == [
        ("j1", now + 1000)
    ]
    rdb.script_flush()  # (as after a restart: the sweep's script is loaded again, and runs)
    store.look_again([("j1", now + 1000, now + 1500)])
    assert store.jobs_to_sweep(now + 1000) == [] and store.jobs_to_sweep(now + 1500) == [
        ("j1", now + 1500)
    ]
    store.claim_batch("j1", 0)
    # A claim: the call may die with its worker, and the sweep must see the batch `sending`.
    ((_, claimed),) = store.jobs_to_sweep(now)
    assert claimed < 0
    store.look_again([("j1", now + 1000, now + 2000)])  # (a sweep that read it before the claim)
    assert store.jobs_to_sweep(now) == [("j1", claimed)]
    store.call_submitted("j1", 0, 1, 0, "api", [])
    store.claim_batch("j1", 1)
    ((_, second),) = store.jobs_to_sweep(now)
    assert second < claimed  # (each wake lower than the last)
    store.call_submitted("j1", 1, 1, 0, "api", [])
    store.look_again([("j1", second, now + 1000)])
    store.record_report(Report("j1", 0, NUMBERS[0], Status.SENT, "u0", ""))
    assert store.jobs_to_sweep(now) == []  # (not final: nothing can have finished)
    store.record_report(Report("j1", 0, NUMBERS[0], Status.DELIVERED, "u0", ""))
    ((_, woken),) = store.jobs_to_sweep(now)
    assert woken < 0  # (due before any time)
    store.look_again([("j1", now + 1000, now + 2000)])  # (read before the report: stays due)
    assert store.jobs_to_sweep(now) == [("j1", woken)]
    # Read after that report, and another final one comes before the sweep says: still due.
    store.record_report(Report("j1", 0, NUMBERS[1], Status.FAILED, "u1", ""))
    ((_, again),) = store.jobs_to_sweep(now)
    assert again < woken  # (each wake lower than the last)
    store.look_again([("j1", woken, now + 1000)])
    assert store.jobs_to_sweep(now) == [("j1", again)]
    store.look_again([("j1", again, now + 1000)])
    assert store.jobs_to_sweep(now) == []
    store.cancel("j1")
    ((_, cancelled),) = store.jobs_to_sweep(now)
    assert cancelled < again
    rdb.zadd(keys.ACTIVE_JOBS, {"j1": -5e15})  # (a wake by a clock far ahead, since stepped back)
    store.record_report(Report("j1", 1, NUMBERS[2], Status.DELIVERED, "u2", ""))
    assert rdb.zscore(keys.ACTIVE_JOBS, "j1") == -5e15 - 1  # (lower still: a clock stepped back)
    store.deactivate("j1")
    store.record_report(Report("j1", 1, NUMBERS[2], Status.REJECTED, "u2", ""))
    store.look_now("j1")
    assert rdb.zscore(keys.ACTIVE_JOBS, "j1") is None  # (a job the sweep forgot stays forgotten)


def test_a_batch_remembers_how_often_the_sweep_enqueued_it_again(rdb: redis.Redis) -> None:
    store = make(rdb)
    store.mark_enqueued("j1", 1, redispatched=3)
    store.mark_enqueued("j1", 0)
    first, second = store.batches("j1")
    assert (first.redispatched, second.redispatched) == (0, 3)
    assert second.enqueued_at > 0 and first.enqueued_at > 0


def test_the_sweep_reads_and_marks_many_jobs_batches_at_once(rdb: redis.Redis) -> None:
    """What the sweep reads and writes a chunk of jobs at a time: each job's batch records
    (an unreadable one is None, and does not hide the others'), and enqueue marks stamped with
    the time it gives (Redis's, which it compares them with)."""
    store = make(rdb)
    store.mark_enqueued_many([("j1", 1, 3), ("j1", 0, None)], 1234.5)
    rdb.hset(keys.batches("broken"), "0", "no-such-state|x|y")
    first, broken, missing = store.batches_of(["j1", "broken", "missing"])
    assert broken is None and missing == []
    assert first == store.batches("j1")
    assert [(b.batch, b.redispatched, b.enqueued_at) for b in first] == [
        (0, 0, 1234.5),
        (1, 3, 1234.5),
    ]
    assert store.batches_of([]) == []
    rdb.set(keys.batches("wrong"), "a string where a hash belongs")
    assert store.batches_of(["wrong", "j1"]) == [None, first]


def test_a_number_left_out_of_a_call_ends_suppressed_and_is_no_evidence(rdb: redis.Redis) -> None:
    """Opted out after submit: left out by the call's owner. Its status is no report, so a
    retry of the call is made (not taken for one that reached Plivo), and it never counts as
    one of the call's numbers when Plivo's list is asked."""
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert not store.suppress("j1", 0, 2, 0, ["+14155550101"])  # not its attempt
    assert store.suppress("j1", 0, 1, 0, ["+14155550101", "+14155550102"])  # (…102: batch 1)
    assert counts(store) == {"pending": 2, "suppressed": 1}
    assert store.call_numbers("j1", 0, 0, 0) == ["+14155550100"]
    assert store.release_batch("j1", 0, attempt=1, offset=0, delay=0)
    assert store.claim_batch("j1", 0) == Claim("go", attempt=2)
    work = store.batch_work("j1", 0)
    assert work.suppressed == {"+14155550101"}
    assert store.call_submitted("j1", 0, 2, 0, "api", []) == "submitted"
    assert counts(store) == {"pending": 1, "queued": 1, "suppressed": 1}
    assert true_counts(store, NUMBERS) == {"pending": 1, "queued": 1, "suppressed": 1}
    # A late report changes nothing for it: it was never sent.
    store.record_report(Report("j1", 0, "+14155550101", Status.DELIVERED, "u-9", ""))
    assert counts(store)["suppressed"] == 1


def test_a_backoff_is_counted_on_redis_s_clock(rdb: redis.Redis) -> None:
    """A worker whose clock is off (two minutes ahead, say) must not hold a batch back longer
    than its backoff: the wait is set, and read back, on Redis's clock."""
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert store.release_batch("j1", 0, attempt=1, offset=0, delay=60)
    seconds, micros = rdb.time()
    not_before = float(rdb.hget("bulksms:{j1}:batches", "0").split("|")[1])
    assert not_before == pytest.approx(seconds + micros / 1e6 + 60, abs=5)
    early = store.claim_batch("j1", 0)
    assert early.outcome == "early" and 55 <= float(early.detail) <= 60  # seconds yet to wait


def test_a_report_after_the_release_stops_the_resend(rdb: redis.Redis) -> None:
    """The sweep released a call without an answer (Plivo's list showed nothing yet); then a
    report for one of its numbers arrives while the resend waits in the queue: the resend's
    claim records the call as made, and makes none."""
    store = make(rdb)
    store.claim_batch("j1", 0)
    assert resolve(store, "j1", 0, in_flight_seconds=0, grace_seconds=0) == "resend"
    store.record_report(Report("j1", 0, "+14155550101", Status.SENT, UUID, ""))
    assert store.claim_batch("j1", 0).outcome == "submitted"
    assert counts(store) == {"pending": 1, "queued": 1, "sent": 1}


def test_the_sweep_leaves_a_job_waiting_for_reports_until_its_last_report_wakes_it(
    rdb: redis.Redis,
) -> None:
    """The sweep on the real store: a job all handed over is read once, then not again while it
    only waits (a day of alerts without receipts is millions of them); its last final report
    wakes it, and the next sweep finishes and forgets it."""
    store = make(rdb)
    for batch in (0, 1):
        store.claim_batch("j1", batch)
        store.call_submitted("j1", batch, 1, 0, "api", [])
    read: list[str] = []
    jobs = store.jobs
    store.jobs = lambda ids: read.extend(ids) or jobs(ids)  # type: ignore[method-assign]

    def swept() -> Counter[str]:
        return sweep.sweep_once(
            store,
            Pace(rdb),
            Settings(),
            lambda *_: None,
            lambda: 0,
            lambda _: None,
            now=store.clock,
        )

    swept()
    assert read == ["j1"] and job(store).state is JobState.SENT
    swept()
    assert read == ["j1"]  # (not due: not read)
    for i, n in enumerate(NUMBERS[:2]):
        store.record_report(Report("j1", 0, n, Status.DELIVERED, f"u{i}", ""))
    swept()
    assert read == ["j1", "j1"]  # (woken, read: not finished yet)
    store.record_report(Report("j1", 1, NUMBERS[2], Status.DELIVERED, "u2", ""))
    assert swept()["finished"] == 1
    assert rdb.zscore(keys.ACTIVE_JOBS, "j1") is None


class _HoursAhead:
    """The `time` module of a host whose clock is hours ahead of Redis's."""

    def __init__(self, hours: float) -> None:
        self.ahead = hours * 3600

    def time(self) -> float:
        return time.time() + self.ahead

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def test_a_host_clock_hours_off_leaves_a_call_where_the_sweep_looks(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker whose clock is three hours ahead records Plivo's answer: its messages are still
    known as this batch's in the hours around the call on Redis's clock (where the sweep looks
    before taking a message in Plivo's list for a lost call's), and the call's record carries
    Redis's time, as the claim's does. Filed by the host's hour, the message was nobody's, and
    another job's lost call to the same number was taken as sent."""
    store = make(rdb)
    claim = store.claim_batch("j1", 0)
    skewed = _HoursAhead(3)
    monkeypatch.setattr(dispatch, "time", skewed)
    monkeypatch.setattr(jobs_module, "time", skewed)
    monkeypatch.setattr(jobs_module, "_now", lambda: f"{skewed.time():.3f}")
    owner = dispatch.Owner("j1", 0, claim.attempt, 0, claim.since)
    accepted = Accepted("api-1", (UUID,), ())

    assert dispatch._record_accepted(store, owner, accepted) == "submitted"

    now = store.clock()
    assert store.handed.owners(now - 60, now + 60) == {UUID: "j1:0"}
    (record, _) = store.batches("j1")
    assert record.state is BatchState.SUBMITTED
    assert abs(record.since - now) < 60, (record.since, now)


def test_a_job_whose_tasks_go_out_with_it_is_first_due_for_the_sweep_on_redis_s_clock(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose tasks are pushed in its own round trip is first due `first_look_seconds`
    on (no batch of it can be enqueued again before), on Redis's clock, though the host that
    made it is hours ahead; one whose tasks did not go with it is due at once. The score that
    says so is the script's to fill in: Redis refuses it in a ZADD of its own. What the sweep
    must see sooner wakes the job."""
    skewed = _HoursAhead(5)
    monkeypatch.setattr(jobs_module, "time", skewed)
    monkeypatch.setattr(jobs_module, "_now", lambda: f"{skewed.time():.3f}")
    store = JobStore(rdb, 3600, 30.0)
    before = store.clock()
    new_job = NewJob("j2", SENDING, NUMBERS, 3, 0, 0, 0, 2, "GSM-7", 1)
    store.create(new_job, tasks=[("bulksms", "task")])
    store.create(replace(new_job, job_id="j3"))  # (its tasks to go out after it)
    after = store.clock()
    first = rdb.zscore(keys.ACTIVE_JOBS, "j2")
    assert first is not None and before + 30 <= first <= after + 30
    assert rdb.zscore(keys.ACTIVE_JOBS, "j3") == 0 and rdb.llen("bulksms") == 1
    assert [job_id for job_id, _ in store.jobs_to_sweep(after)] == ["j3"]
    assert {job_id for job_id, _ in store.jobs_to_sweep(after + 30)} == {"j2", "j3"}
    with pytest.raises(redis.ResponseError):
        rdb.execute_command("ZADD", keys.ACTIVE_JOBS, "now+30.0", "j4")
    # Before its first look: a cancel, and a batch failed with no claim before it (its values
    # gone), make it due at once, as a claim or a final report does.
    store.create(replace(new_job, job_id="j5"), tasks=[("bulksms", "task")])
    store.cancel("j5")
    assert store.batch_failed("j2", 0, None, "its values gone") == 1
    assert {job_id for job_id, _ in store.jobs_to_sweep(store.clock())} == {"j2", "j3", "j5"}


def test_an_erased_job_s_recent_messages_stay_known_as_ours(rdb: redis.Redis) -> None:
    """Erasing a job deletes its numbers, but the UUIDs of what it handed over in the hours a
    lookup still reads stay known as its own (answered, or named by a report before its call
    was recorded): a message of it in Plivo's list is never taken for another job's lost call
    to the same number (which would then be marked sent and never sent)."""
    store = make(rdb)
    answered, reported = str(uuid.uuid4()), str(uuid.uuid4())
    claim = store.claim_batch("j1", 0)
    now = store.clock()
    assert store.call_submitted("j1", 0, 1, 0, "api", [], [answered], now, claim.since)
    store.claim_batch("j1", 1)
    assert store.record_report(Report("j1", 1, NUMBERS[2], Status.SENT, reported, "")) == 1
    before = store.handed.owners(now - 60, now + 60)
    assert before == {answered: "j1:0", reported: "j1:1"}

    store.erase(job(store))

    assert store.handed.owners(now - 60, now + 60) == before
    assert not rdb.exists(keys.recipients("j1", 0), keys.recipients("j1", 1))
    assert 0 < rdb.ttl(keys.answered("j1", 1)) <= 13 * 3600
    # A job that handed nothing over in those hours keeps nothing.
    other = JobStore(rdb, 3600)
    other.create(NewJob("j2", SENDING, NUMBERS[:1], 1, 0, 0, 0, 2, "GSM-7", 1))
    other.remember_answer("j2", 0, [str(uuid.uuid4())], now - 20 * 3600)
    other.erase(other.job("j2"))  # type: ignore[arg-type]
    assert not rdb.exists(keys.answered("j2", 0))


def test_the_batches_an_erase_keeps_are_read_a_slice_at_a_time(
    rdb: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which of a job's batches handed messages over in the hours a lookup reads: one question
    an hour for a slice of batches (a job of a million one-recipient batches is erased in some
    1,500 commands, not 15 million), across slice boundaries."""
    monkeypatch.setattr(handed_module, "RECENT_A_READ", 2)
    store = make(rdb)
    now = store.clock()
    for batch, at in ((1, now), (2, now - 11 * 3600), (4, now - 30 * 3600)):
        store.remember_answer("j9", batch, [str(uuid.uuid4())], at)
    assert store.handed.recent("j9", 6, now) == [1, 2]
    assert store.handed.recent("j9", 0, now) == []


def test_messages_of_a_group_of_calls_are_known_as_theirs(rdb: redis.Redis) -> None:
    """Messages Plivo's list showed for several lost calls at once are known as the group's
    (comma-separated), around their hour; a batch's own answer says more and wins."""
    store = make(rdb)
    now = store.clock()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    store.handed.remember_group([first, second], ["j1:0", "j2:0"], now)
    store.remember_answer("j1", 0, [first], now)
    assert store.handed.owners(now - 60, now + 60) == {first: "j1:0", second: "j1:0,j2:0"}
    assert 0 < rdb.ttl(keys.handed_to_groups(int(now // 3600))) <= 13 * 3600
    assert store.handed.owners(now - 3 * 3600, now - 3 * 3600) == {}


def test_jobs_woken_since_a_time_are_those_a_claim_woke_after_it(rdb: redis.Redis) -> None:
    """The sweep asks, before weighing its unsettled calls, which jobs a claim woke since it
    began (their calls, claimed after it read them, may have texted the same numbers)."""
    store = make(rdb)
    store.claim_batch("j1", 0)
    time.sleep(0.01)
    began = store.clock()
    assert store.woken_since(began) == []
    store.claim_batch("j1", 1)
    assert store.woken_since(began) == ["j1"]


def test_a_lost_call_s_paging_through_plivo_s_list_is_its_own(rdb: redis.Redis) -> None:
    """Where the sweep goes on reading a sender's list for a lost call: kept per call (another
    claim of the batch starts afresh), beside the batch's record without being taken for one,
    and gone once the paging is over. Calls settled from the list are kept by their time."""
    store = make(rdb)
    assert store.listing("j1", 0, "j1:0:1:0") == Paging()
    store.mark_listing("j1", 0, "j1:0:1:0", Paging(60, 1234.5, True))
    assert store.listing("j1", 0, "j1:0:1:0") == Paging(60, 1234.5, True)
    assert store.listing("j1", 0, "j1:0:2:0") == Paging()
    assert [r.batch for r in store.batches("j1")] == [0, 1]
    store.mark_listing("j1", 0, "j1:0:1:0", Paging())
    assert store.listing("j1", 0, "j1:0:1:0") == Paging()
    assert not rdb.hexists(keys.batches("j1"), "s:0")
    now = store.clock()
    found = FoundCall("j1", 0, 1, 0, 2, now - 100, "+14155550199", None)
    old = FoundCall("j2", 0, 1, 0, 0, now - 14 * 3600, None, "pp-1")
    store.handed.remember_found(old)
    store.handed.remember_found(found)
    assert store.handed.found(now - 200, now) == [found]
    assert store.handed.found(now - 15 * 3600, now) == [found]  # (13 hours, and no more)
    # A job erased while the sweep was at it: its notes make no hash that nothing expires.
    store.mark_listing("gone", 0, "gone:0:1:0", Paging(20, now))
    store.mark_lookup_round("gone", 0, now, "u-1")
    assert not rdb.exists(keys.batches("gone"))


def test_a_held_bucket_gives_no_token_until_then_to_any_worker(rdb: redis.Redis) -> None:
    """Plivo's Retry-After on a listing: the shared bucket is empty that long, then fills at
    its pace (not at once); holding for nothing takes nothing."""
    mine = PlivoBucket(rdb, 20, 20 / 60, keys.PLIVO_LIST_BUCKET)
    other = PlivoBucket(rdb, 20, 20 / 60, keys.PLIVO_LIST_BUCKET)  # (another worker's)
    assert mine.take() == 0.0
    mine.hold(0)
    assert other.take() == 0.0  # (18 left)
    mine.hold(30.0)
    wait = other.take()
    assert 29.0 < wait <= 30.0
    assert 29.0 < mine.take() <= 30.0  # (asking does not lengthen it)
    mine.hold(600.0)
    assert 599.0 < other.take() <= 600.0
    # (the takes during a hold keep it: the bucket's key lives until it would be full again)
    assert rdb.ttl(keys.PLIVO_LIST_BUCKET) > 600
