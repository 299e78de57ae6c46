"""In-memory stand-ins for the unit tests of the worker's decisions (`dispatch`, `sweep`): a
store that keeps batches as `BatchRecord`s and counts every call, a gateway that answers as told.
The real store's scripts are tested on a real Redis (tests/integration/test_store.py)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import redis

from bulksms.store import (
    BatchRecord,
    BatchState,
    BatchWork,
    Claim,
    Job,
    RecipientCounts,
    Sending,
    Status,
)
from bulksms.store.handed import FoundCall
from bulksms.store.pacing import Grant
from bulksms.worker.gateway import Accepted, Outgoing, SendError

SENDING = Sending("hello", "+14155550199")


def job(job_id: str = "j1", **changes: Any) -> Job:
    """A job of `batches` batches, every one pending, unless `changes` say otherwise."""
    batches = changes.pop("batches", 1)
    base = Job(
        job_id=job_id,
        version=2,
        sending=SENDING,
        created_at=1000.0,
        updated_at=1000.0,
        recipients=RecipientCounts(batches, batches, 0, 0, 0),
        batches=batches,
        batch_counts={
            BatchState.PENDING: batches,
            BatchState.SUBMITTED: 0,
            BatchState.FAILED: 0,
            BatchState.CANCELLED: 0,
        },
        counts={s: (batches if s is Status.PENDING else 0) for s in Status},
        encoding="GSM-7",
        segments_per_message=1,
        billed_units=0,
        billed_amount=0.0,
    )
    return replace(base, **changes)


@dataclass
class FakeHanded:
    """Which batch each message UUID is ours from (`store.handed`)."""

    known: dict[str, str] = field(default_factory=dict)
    found_calls: list[FoundCall] = field(default_factory=list)

    def owners(self, start: float, end: float) -> dict[str, str]:
        return dict(self.known)

    def remember_found(self, call: FoundCall) -> None:
        self.found_calls.append(call)

    def found(self, start: float, end: float) -> list[FoundCall]:
        return [c for c in self.found_calls if start <= c.since <= end]

    def remember_group(self, uuids: list[str], batch_ids: list[str], at: float) -> None:
        self.known.update(dict.fromkeys(uuids, ",".join(batch_ids)))


@dataclass
class FakeStore:
    known: dict[str, Job] = field(default_factory=dict)  # the jobs, by id
    batch_records: dict[str, list[BatchRecord]] = field(default_factory=dict)
    claims: list[Claim] = field(default_factory=list)  # what claim_batch answers, in turn
    resolutions: dict[int, str] = field(default_factory=dict)  # batch -> resolve_batch verdict
    due: list[str] = field(default_factory=list)
    calls: list[tuple[Any, ...]] = field(default_factory=list)
    redis_down_for: int = 0  # this many writes fail with a ConnectionError first
    submitted_answer: str = ""  # what call_submitted answers; "" to work it out
    opted: set[str] = field(default_factory=set)  # numbers opted out by now
    numbers: list[str] = field(default_factory=lambda: ["+14155550100", "+14155550101"])
    paced_taken: list[str] = field(default_factory=list)  # jobs `next_paced` was asked for
    paced: dict[str, list[int]] = field(default_factory=dict)
    handed: FakeHanded = field(default_factory=FakeHanded)
    due_at: dict[str, float] = field(default_factory=dict)  # when the sweep looks at a job next
    woken: dict[str, float] = field(default_factory=dict)  # a job's last wake (a claim, say)
    owners: list[tuple[str, str]] = field(default_factory=list)  # (write, the claim's since)

    def add(self, found: Job, records: list[BatchRecord] | None = None) -> None:
        self.known[found.job_id] = found
        self.batch_records[found.job_id] = records or [
            BatchRecord(n, BatchState.PENDING, 0.0, 0, "") for n in range(found.batches)
        ]

    def _write(self, *call: Any) -> None:
        if self.redis_down_for:
            self.redis_down_for -= 1
            raise redis.ConnectionError("Redis is restarting")
        self.calls.append(call)

    def names(self) -> list[str]:
        return [call[0] for call in self.calls]

    # -- dispatch's calls
    def claim_batch(self, job_id: str, batch: int, offset: int = 0, size: int = 0) -> Claim:
        self.calls.append(("claim", job_id, batch, offset, size))
        claim = self.claims.pop(0) if self.claims else Claim("go", attempt=1, size=size)
        if claim.outcome == "go":
            self._set(job_id, batch, state=BatchState.SENDING, offset=offset, size=size)
        return claim

    def batch_work(self, job_id: str, batch: int) -> BatchWork:
        found = self.known[job_id]
        return BatchWork(
            found.sending,
            list(self.numbers),
            self.batch_records[job_id][batch],
            found.segments_per_message,
            found.urgent,
            found.cancelled or found.paused or found.halted is not None,
            now=time.time(),
        )

    def opted_out(self, numbers: Iterable[str]) -> set[str]:
        return self.opted.intersection(numbers)

    def suppress(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        numbers: Iterable[str],
        since: str = "",
    ) -> bool:
        self.calls.append(("suppress", job_id, batch, attempt, offset, sorted(numbers)))
        self.owners.append(("suppress", since))
        return True

    def call_submitted(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        api_id: str,
        refused: Iterable[str],
        uuids: Iterable[str] = (),
        at: float = 0.0,
        since: str = "",
    ) -> str:
        self.owners.append(("submitted", since))
        self._write("submitted", job_id, batch, attempt, api_id, tuple(refused))
        self.handed.known.update(dict.fromkeys(uuids, f"{job_id}:{batch}"))
        if self.submitted_answer:
            return self.submitted_answer
        record = self.batch_records[job_id][batch]
        offset = record.offset + (record.size or len(self.numbers))
        if offset >= len(self.numbers):
            self._set(job_id, batch, state=BatchState.SUBMITTED)
            return "submitted"
        self._set(job_id, batch, state=BatchState.PENDING, offset=offset, size=0)
        return "advanced"

    def park(self, job_id: str, batch: int, offset: int, resume_at: float) -> bool:
        self.calls.append(("park", job_id, batch, offset, resume_at))
        self._set(job_id, batch, state=BatchState.PACED, since=resume_at)
        self.paced.setdefault(job_id, []).append(batch)
        return True

    def next_paced(self, job_id: str) -> int | None:
        self.paced_taken.append(job_id)
        waiting = sorted(self.paced.get(job_id, []))
        if not waiting:
            return None
        self.paced[job_id] = waiting[1:]
        return waiting[0]

    def has_paced(self, job_id: str) -> bool:
        return bool(self.paced.get(job_id))

    def relist_paced(self, job_id: str, batches: Iterable[int]) -> None:
        self.calls.append(("relist_paced", job_id, tuple(batches)))

    def _set(self, job_id: str, batch: int, **changes: Any) -> None:
        records = self.batch_records[job_id]
        records[batch] = replace(records[batch], **changes)

    def release_batch(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        delay: float,
        since: str = "",
    ) -> bool:
        self.owners.append(("release", since))
        not_before = time.time() + delay
        self._write("release", job_id, batch, attempt, not_before)
        self._set(job_id, batch, state=BatchState.PENDING, since=not_before)
        return True

    def batch_failed(
        self,
        job_id: str,
        batch: int,
        owner: tuple[int, int] | None,
        reason: str,
        since: str = "",
    ) -> int:
        self.owners.append(("failed", since))
        self._write("failed", job_id, batch, owner[0] if owner else None, reason)
        return 1

    def halt(self, job_id: str, reason: str) -> None:
        self._write("halt", job_id, reason)

    # -- the sweep's calls
    def due_jobs(self, now: float) -> list[str]:
        return list(self.due)

    def release(self, job_id: str) -> None:
        self.calls.append(("release_scheduled", job_id))
        self.known[job_id] = replace(self.known[job_id], send_at=None)

    def woken_since(self, at: float) -> list[str]:
        return [job_id for job_id, woken in self.woken.items() if woken >= at]

    def jobs_to_sweep(self, now: float) -> list[tuple[str, float]]:
        due = ((job_id, self.due_at.get(job_id, 0.0)) for job_id in self.known)
        return [(job_id, at) for job_id, at in due if at <= now]

    def look_again(self, jobs: list[tuple[str, float, float]]) -> None:
        self.calls.append(("look_again", tuple(jobs)))
        for job_id, read, following in jobs:
            if self.due_at.get(job_id, 0.0) == read:
                self.due_at[job_id] = following

    def jobs(self, job_ids: list[str]) -> list[Job | None]:
        return [self.job(job_id) for job_id in job_ids]

    def job(self, job_id: str) -> Job | None:
        return self.known.get(job_id)

    def pending_batches(self, job_id: str) -> list[int]:
        waiting = (BatchState.PENDING, BatchState.PACED)
        return [b.batch for b in self.batch_records[job_id] if b.state in waiting]

    def batches(self, job_id: str) -> list[BatchRecord]:
        return list(self.batch_records[job_id])

    def pending_enqueued(self, job_id: str) -> list[int]:
        batches = self.pending_batches(job_id)
        for batch in batches:
            self.mark_enqueued(job_id, batch)
            self._set(job_id, batch, enqueued_at=self.clock())
        return batches

    def batches_of(self, job_ids: list[str]) -> list[list[BatchRecord] | None]:
        self.calls.append(("batches_of", tuple(job_ids)))
        return [self.batch_records.get(job_id) for job_id in job_ids]  # (None: unreadable)

    def resolve_batch(self, job_id: str, batch: int, in_flight_seconds: float) -> str:
        self.calls.append(("resolve", job_id, batch))
        return self.resolutions.get(batch, "in_flight")

    def remember_answer(self, job_id: str, batch: int, uuids: Iterable[str], at: float) -> None:
        self.handed.known.update(dict.fromkeys(uuids, f"{job_id}:{batch}"))

    def clock(self) -> float:
        return 100_000.0  # (Redis's clock: the sweep tests' NOW)

    def is_urgent(self, job_id: str) -> bool:
        return self.known[job_id].urgent

    def mark_enqueued(self, job_id: str, batch: int, redispatched: int | None = None) -> None:
        self.calls.append(("mark_enqueued", job_id, batch))
        if redispatched is not None:
            self.calls.append(("redispatched", job_id, batch, redispatched))

    def mark_enqueued_many(self, marks: list[tuple[str, int, int | None]], at: float) -> None:
        for job_id, batch, redispatched in marks:
            self.mark_enqueued(job_id, batch, redispatched)

    def deactivate(self, job_id: str) -> None:
        self.calls.append(("deactivate", job_id))

    def claim_notification(self, job_id: str) -> bool:
        self.calls.append(("claim_notification", job_id))
        return True

    def close(self, job_id: str, reason: str) -> None:
        self.calls.append(("close", job_id, reason))


@dataclass
class FakeGateway:
    answers: list[Accepted | SendError] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)

    def send(self, outgoing: Outgoing) -> Accepted:
        self.sent.append(outgoing)
        answer = self.answers.pop(0) if self.answers else Accepted("api-1", ("u1", "u2"), ())
        if isinstance(answer, SendError):
            raise answer
        return answer


class NoThrottle:
    def wait(self) -> float:
        return 0.0


@dataclass
class FakePace:
    """The shared pace, as dispatch (through `Pacer`) and the sweep see it: room for calls as
    told (`room`: segments that may go now, None for no limit), and its schedule."""

    room: float | None = None
    wait: float = 3.0
    now: float = 5000.0
    waiting: int = 0  # other jobs on the schedule
    had_last: bool = False  # a refusal says this job took the last room
    backlog: float = 0.0  # seconds of the pace waiting at Plivo after a call that goes
    taken: list[int] = field(default_factory=list)
    schedule_calls: list[tuple[str, float]] = field(default_factory=list)
    listed: set[str] = field(default_factory=set)

    def take(
        self,
        job_id: str,
        segments: int,
        bound: float,
        account_rate: float,
        sender: tuple[str, float] | None,
    ) -> Grant:
        if self.room is not None and segments > self.room:
            return Grant(False, self.wait, self.now, self.waiting, self.had_last)
        if self.room is not None:
            self.room -= segments
        self.taken.append(segments)
        return Grant(True, self.backlog, self.now, self.waiting)

    def schedule(self, job_id: str, at: float) -> None:
        self.schedule_calls.append((job_id, at))

    def scheduled(self, job_id: str) -> bool:
        return job_id in self.listed
