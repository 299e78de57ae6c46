"""What the store hands out: typed jobs, batches and recipients, and the status tables that the
Lua scripts are rendered from (`scripts`). Nothing here touches Redis.

A job hash carries `v`, the version of its layout. Jobs run for days, across deploys: a release
reads and finishes the jobs written by the release before it. Version 1 (no `v` field) is the
layout of the releases before versioning; version 2 is the same fields with `v` added;
version 3 sends a batch in paced calls: batch records carry an offset, a `paced` state, and the
job counts what it handed over (`handed`, `first_handed_at`, `last_handed_at`). Records and
fields a release before wrote read as offset 0 and nothing handed yet. Version 4 adds templates:
a job with `fields` (its placeholders' names) keeps its template as `message` and each batch's
values beside its records (`fields:<n>`, `records.pack_fields`); every call renders its text.
A count missing from the hash reads as 0 (in every release since version 2), and a new job
writes only the counts that are not 0 (earlier releases wrote every count).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import NamedTuple

from bulksms.store import records
from bulksms.template import Template

LAYOUT_VERSION = 4


class Status(StrEnum):
    """A recipient's status. Only moves forward: pending < queued < sent < any final one."""

    PENDING = "pending"  # accepted by us, not yet by Plivo
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # never sent: the job was cancelled first
    SUPPRESSED = "suppressed"  # never sent: the number opted out after the job was submitted


# Each status's one-byte code (in records and counter names) and rank. Defined here only: the
# scripts are rendered from these tables.
CODES: dict[Status, str] = {
    Status.PENDING: "p",
    Status.QUEUED: "q",
    Status.SENT: "s",
    Status.DELIVERED: "d",
    Status.UNDELIVERED: "u",
    Status.FAILED: "f",
    Status.REJECTED: "r",
    Status.CANCELLED: "x",
    Status.SUPPRESSED: "o",
}
RANKS: dict[Status, int] = {Status.PENDING: 0, Status.QUEUED: 1, Status.SENT: 2}
FINAL_RANK = 3  # every other status: the first final status stays
BY_CODE = {code: status for status, code in CODES.items()}
NOT_FINAL = (Status.PENDING, Status.QUEUED, Status.SENT)


def rank(status: Status) -> int:
    return RANKS.get(status, FINAL_RANK)


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class BatchState(StrEnum):
    PENDING = "pending"  # waiting for a worker
    PACED = "paced"  # waiting for its turn at the pace (woken from the pacer's schedule)
    SENDING = "sending"  # a worker claimed one call of it and is (or was) calling Plivo
    SUBMITTED = "submitted"  # Plivo accepted it
    FAILED = "failed"  # it will never be sent
    CANCELLED = "cancelled"  # the job was cancelled before it was sent


# The batch states a job counts (`b:<state>`): `pending` counts every batch not finished.
COUNTED_BATCH_STATES = (
    BatchState.PENDING,
    BatchState.SUBMITTED,
    BatchState.FAILED,
    BatchState.CANCELLED,
)
UNFINISHED_BATCH_STATES = (BatchState.PENDING, BatchState.PACED, BatchState.SENDING)
# Stored state names that read as another state (see `BatchRecord`).
STORED_AS = {"resume": BatchState.PENDING, "calling": BatchState.SENDING}

# The status a recipient whose own status is 0 takes from its finished batch.
IMPLIED: dict[BatchState, Status] = {
    BatchState.SUBMITTED: Status.QUEUED,
    BatchState.FAILED: Status.REJECTED,
    BatchState.CANCELLED: Status.CANCELLED,
}


@dataclass(frozen=True)
class Sending:
    """How Plivo is to send a job's messages: `src` or a Powerpack, never both."""

    message: str
    src: str | None = None
    powerpack_uuid: str | None = None
    message_expiry: int | None = None


def sender_of(sending: Sending) -> str:
    """Who Plivo sends from: the Powerpack, else the sender id (what a sender cap names)."""
    return sending.powerpack_uuid or sending.src or ""


@dataclass(frozen=True)
class NewJob:
    job_id: str
    sending: Sending
    recipients: Sequence[str]  # E.164, unique, in request order
    received: int
    duplicates: int
    invalid: int
    suppressed: int
    batch_size: int
    encoding: str
    segments_per_message: int
    urgent: bool = False
    callback_url: str | None = None
    retry_of: str | None = None
    send_at: float | None = None  # scheduled: released by the sweep at this time
    # A template's job: its placeholders' names, each recipient's values (by `recipients`),
    # and where each batch starts in `recipients` (recipients of one text share batches).
    field_names: tuple[str, ...] = ()
    fields: Sequence[tuple[str, ...]] | None = None
    starts: Sequence[int] | None = None

    @property
    def batch_count(self) -> int:
        if self.starts is not None:
            return len(self.starts)
        return -(-len(self.recipients) // self.batch_size)

    def batch_span(self, batch: int) -> tuple[int, int]:
        """Where batch `batch` starts and ends in `recipients`."""
        if self.starts is None:
            start = batch * self.batch_size
            return start, min(start + self.batch_size, len(self.recipients))
        end = self.starts[batch + 1] if batch + 1 < len(self.starts) else len(self.recipients)
        return self.starts[batch], end


@dataclass(frozen=True)
class Window:
    """A moving-window rate limit a request is counted against: the limits library's list
    (`key`), of at most `amount` entries in `expiry` seconds."""

    key: str
    amount: int
    expiry: int


@dataclass(frozen=True)
class Guard:
    """What a small job's one round trip checks before it writes (`JobStore.create_guarded`):
    the submit limits to count it against (in order), the numbers none of which may have
    opted out (E.164), and, for an urgent job, its seconds at the account's pace and the urgent
    backlog's bound (0: none)."""

    windows: Sequence[Window]
    numbers: Sequence[str]
    urgent_seconds: float | None
    urgent_bound: float


class Guarded(NamedTuple):
    """How a guarded create ended: `created` (`value`: the urgent backlog ahead of it),
    `limited` (`value`: which of the windows, from 1), `opted_out` (a recipient is: nothing
    was written, the limits were counted) or `backlog` (`value`: seconds until the urgent
    backlog is back within its bound)."""

    outcome: str
    value: float


@dataclass(frozen=True)
class BatchWork:
    """What a worker needs to send the rest of one batch."""

    sending: Sending
    numbers: list[str]  # E.164, sorted as stored: a call sends numbers[offset:offset + k]
    record: BatchRecord | None  # None: the batch is gone (expired)
    segments_per_message: int = 1
    urgent: bool = False
    held: bool = False  # cancelled, paused or halted: no call, the claim says what instead
    suppressed: frozenset[str] = frozenset()  # numbers found opted out when a call was made
    now: float = 0.0  # Redis's time when this was read (a host's clock may be off)
    template: Template | None = None  # a template's job: each call renders its text
    fields: Sequence[tuple[str, ...]] = ()  # then each number's values, by `numbers`

    @property
    def unsent(self) -> list[str]:
        offset = self.record.offset if self.record else 0
        return self.numbers[offset:]

    def text_at(self, index: int) -> str:
        """The text that numbers[index] is sent."""
        if self.template is None:
            return self.sending.message
        return self.template.render(self.fields[index])

    def run(self, index: int, most: int) -> int:
        """How many numbers from `index` on (at most `most`) share numbers[index]'s text: one
        call sends one text."""
        if self.template is None:
            return most
        text, end = self.text_at(index), min(index + most, len(self.numbers))
        count = 1
        while index + count < end and self.text_at(index + count) == text:
            count += 1
        return count


@dataclass(frozen=True)
class RecipientCounts:
    received: int
    accepted: int
    duplicates: int
    invalid: int
    suppressed: int


@dataclass(frozen=True)
class Job:
    """A job as stored: its request, counters, decisions and times (unix seconds)."""

    job_id: str
    version: int
    sending: Sending
    created_at: float
    updated_at: float
    recipients: RecipientCounts
    batches: int  # in all
    batch_counts: Mapping[BatchState, int]  # all but sending: `pending` counts those too
    counts: Mapping[Status, int]
    encoding: str
    segments_per_message: int
    billed_units: int
    billed_amount: float
    urgent: bool = False
    callback_url: str | None = None
    retry_of: str | None = None
    send_at: float | None = None
    started_at: float | None = None
    sent_at: float | None = None
    cancelled: bool = False
    paused: bool = False
    closed: str | None = None  # why the job stopped waiting for reports
    halted: str | None = None  # why no batch is sent any more
    erased_at: float | None = None
    field_names: tuple[str, ...] = ()  # a template's job: its placeholders' names
    handed: int = 0  # recipients handed to Plivo (accepted or refused by its API) so far
    first_handed_at: float | None = None
    last_handed_at: float | None = None

    @property
    def unsent_batches(self) -> int:
        return self.batch_counts[BatchState.PENDING]

    @property
    def state(self) -> JobState:
        """A job's state follows from its counters; only decisions (cancel, pause, close) are
        stored."""
        if self.cancelled:
            return JobState.CANCELLED
        if self.send_at is not None:
            return JobState.SCHEDULED
        if self.unsent_batches:
            if self.paused:
                return JobState.PAUSED
            return JobState.SENDING if self.started_at is not None else JobState.QUEUED
        if self.batch_counts[BatchState.SUBMITTED] == 0 and self.handed == 0:
            return JobState.FAILED  # (nothing reached Plivo)
        if self.closed is not None or not any(self.counts[s] for s in NOT_FINAL):
            return JobState.COMPLETED
        return JobState.SENT

    @classmethod
    def from_fields(cls, job_id: str, fields: Mapping[str, str]) -> Job:
        """Read a job hash of any layout version this release knows (1 to 4)."""

        def number(name: str) -> int:
            return int(fields.get(name, 0))

        def moment(name: str) -> float | None:
            value = fields.get(name)
            return float(value) if value else None

        expiry = fields.get("message_expiry")
        return cls(
            job_id=job_id,
            version=int(fields.get("v", 1)),
            sending=Sending(
                fields["message"],
                fields.get("src"),
                fields.get("powerpack_uuid"),
                int(expiry) if expiry else None,
            ),
            created_at=float(fields["created_at"]),
            updated_at=float(fields["updated_at"]),
            recipients=RecipientCounts(
                number("received"),
                number("accepted"),
                number("duplicates"),
                number("invalid"),
                number("suppressed"),
            ),
            batches=number("batches"),
            # (`pending` counts every batch not finished: pending, paced and sending)
            batch_counts={s: number(f"b:{s.value}") for s in COUNTED_BATCH_STATES},
            counts={s: number(f"c:{CODES[s]}") for s in Status},
            encoding=fields.get("encoding", ""),
            segments_per_message=number("segments_per_message"),
            billed_units=number("billed_units"),
            billed_amount=number("billed_amount_e5") / 100_000,
            urgent="urgent" in fields,
            callback_url=fields.get("callback_url"),
            retry_of=fields.get("retry_of"),
            send_at=moment("send_at"),
            started_at=moment("started_at"),
            sent_at=moment("sent_at"),
            cancelled="cancelled" in fields,
            paused="paused" in fields,
            closed=fields.get("closed"),
            halted=fields.get("halted"),
            erased_at=moment("erased"),
            field_names=tuple(fields["fields"].split(",")) if fields.get("fields") else (),
            handed=number("handed"),
            first_handed_at=moment("first_handed_at"),
            last_handed_at=moment("last_handed_at"),
        )


@dataclass(frozen=True)
class Paging:
    """A lost call's paging through its sender's list in Plivo (`reconcile`): the offset to
    go on from, not before when (Redis's clock), and whether a message there was unclear
    (it could be the call's or another's) earlier in this pass."""

    offset: int = 0
    not_before: float = 0.0
    unclear: bool = False


@dataclass(frozen=True)
class BatchRecord:
    """One batch's state record, ``<state>|<a>|<b>[|<offset>[|<size>]]`` in the job's batches
    hash:

    pending    ``pending|not_before|attempts``                nothing handed over yet
               ``resume|not_before|attempts|offset|size``     from `offset` on (`size` > 0: a
                                                              lost call to repeat as it was)
    paced      ``paced|resume_at|attempts|offset|size``       waiting for its turn at the pace
    sending    ``sending|since|attempts``                     a call of the whole batch
               ``calling|since|attempts|offset|size``         a call of numbers[offset:+size]
    submitted  ``submitted|at|api_id``
    failed     ``failed|at|reason``
    cancelled  ``cancelled|at|cancelled``

    `offset` counts the batch's recipients (in stored order) already handed to Plivo by earlier
    calls. `resume` and `calling` are `pending` and `sending` with an offset, under names the
    release before paced calls leaves alone (it would send such a batch whole). Beside the
    records: ``q:<n>`` (when its task was last enqueued), ``d:<n>`` (how often the sweep enqueued
    it again, its task seemingly vanished) and ``e:<n>`` (recipients a delivery
    report moved while their call was not yet recorded; kept for the release before, which
    reads it as evidence. This release looks at the call's own recipients instead).
    """

    batch: int
    state: BatchState
    since: float  # pending: not before; paced: resume at; sending: claimed at; else: finished at
    attempts: int  # pending, paced and sending: attempts so far at this offset
    detail: str  # submitted: Plivo's api_id; failed: the reason
    enqueued_at: float = 0.0  # 0: never
    offset: int = 0  # recipients handed over by earlier calls
    size: int = 0  # sending: the call's recipients (0: the rest of the batch)
    redispatched: int = 0  # times the sweep enqueued it again, its task seemingly vanished

    @classmethod
    def parse(
        cls, batch: int, record: str, enqueued: str | None = None, redispatched: str | None = None
    ) -> BatchRecord:
        state, since, rest, offset, size = (record.split("|", 4) + ["", "", "", ""])[:5]
        kind = STORED_AS.get(state) or BatchState(state)
        waiting = kind in UNFINISHED_BATCH_STATES
        return cls(
            batch,
            kind,
            float(since or 0),
            int(rest or 0) if waiting else 0,
            "" if waiting else rest,
            float(enqueued or 0),
            int(offset or 0) if waiting else 0,
            int(size or 0) if waiting else 0,
            int(redispatched or 0),
        )

    @classmethod
    def new(cls) -> str:
        return f"{BatchState.PENDING.value}|0|0"  # (as the release before wrote it)


# Plivo's error code for a message the destination blocked (it replied STOP to this sender): a
# report with it opts the recipient out (`JobStore.record_report`).
BLOCKED_BY_STOP = "200"


class Report(NamedTuple):
    """A delivery report, as far as the store cares."""

    job_id: str
    batch: int
    number: str  # E.164, '+' optional
    status: Status
    uuid: str = ""
    error_code: str = ""
    units: int = 0
    amount: float = 0.0
    part: int = 0  # for a message reported part by part: this part (1…) of `parts`
    parts: int = 0


@dataclass(frozen=True)
class Claim:
    """What `claim_batch` decided: `go` (send now, as attempt `attempt`) or why not."""

    outcome: str  # go | early | moved | halted | cancelled | paused | sending | submitted | failed
    attempt: int = 0
    detail: str = ""
    size: int = 0  # go: the call's recipients (a lost call is repeated as it was)
    # go: the claim is on disk (or a replica) before the call leaves: True; False: not
    # acknowledged in time (the call must not be made); None: this Redis cannot say (warned)
    durable: bool | None = True
    # go: when the claim was made, on Redis's clock, as written in the batch's record: with the
    # offset and attempt, what tells this claim from any other (`call_submitted`). (Not part of
    # what was decided: left out of equality.)
    since: str = field(default="", compare=False)


@dataclass(frozen=True)
class Recipient:
    """One recipient as the per-recipient report shows it."""

    number: str
    message_uuid: str | None
    status: Status
    error_code: str | None
    updated_at: str | None
    fields: tuple[str, ...] | None = None  # a template's job: the values, by `Job.field_names`

    @classmethod
    def of(
        cls,
        record: records.Record,
        batch: BatchRecord | None,
        fields: tuple[str, ...] | None = None,
    ) -> Recipient:
        """A record whose status is 0 takes it (and its error and time) from its batch."""
        if record.code:
            status, error, when = BY_CODE[record.code], record.error, record.updated
        else:
            status = IMPLIED.get(batch.state, Status.PENDING) if batch else Status.PENDING
            error = "batch_failed" if status is Status.REJECTED else None
            when = int(batch.since) if batch and status is not Status.PENDING else 0
        updated = rfc3339(when) if when else None
        return cls(record.number, record.uuid, status, error, updated, fields)

    def as_dict(self) -> dict[str, str | None]:
        return {
            "number": self.number,
            "message_uuid": self.message_uuid,
            "status": self.status.value,
            "error_code": self.error_code,
            "updated_at": self.updated_at,
        }


def rfc3339(unix: float) -> str:
    moment = datetime.fromtimestamp(unix, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
