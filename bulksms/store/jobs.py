"""The job store: jobs, batches and per-recipient statuses in Redis.

Every change of a recipient's status and the job's per-status counter moves in one Lua script,
so the counters always equal the statuses, and the status endpoint reads counters only.

A batch's recipients are one string, 32 bytes a recipient, sorted by number (`records`).
Reports name the job, the batch (in the callback URL) and the number (`To`), so a report finds
its record even when it arrives before the worker has written what Plivo answered. Statuses
only move forward: pending < queued < sent < final, and the first final status (delivered,
undelivered, failed, rejected) stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, cast

import hiredis
import redis
from redis.client import Pipeline
from redis.connection import Connection
from redis.exceptions import NoScriptError

from bulksms.store import keys, records, scripts


class Status(StrEnum):
    PENDING = "pending"  # accepted by us, not yet by Plivo
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"  # never sent: the job was cancelled first


CODES = {
    Status.PENDING: "p",
    Status.QUEUED: "q",
    Status.SENT: "s",
    Status.DELIVERED: "d",
    Status.UNDELIVERED: "u",
    Status.FAILED: "f",
    Status.REJECTED: "r",
    Status.CANCELLED: "x",
}
BY_CODE = {code: status for status, code in CODES.items()}
NOT_FINAL = (Status.PENDING, Status.QUEUED, Status.SENT)


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class BatchState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SUBMITTED = "submitted"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Sending:
    """How Plivo is to send a job's messages: `src` or a Powerpack, never both."""

    message: str
    src: str | None = None
    powerpack_uuid: str | None = None
    message_expiry: int | None = None


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
    extra: dict[str, str | int]  # what the answer reports (encoding, segments, ...)
    send_at: float | None = None  # scheduled: released by the sweep at this time

    @property
    def batch_count(self) -> int:
        return -(-len(self.recipients) // self.batch_size)


@dataclass(frozen=True)
class BatchWork:
    """What a worker needs to send one batch."""

    sending: Sending
    numbers: list[str]  # E.164


SENDING_FIELDS = [f.name for f in dataclass_fields(Sending)]


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


@dataclass(frozen=True)
class Claim:
    """What `claim_batch` decided: `go` (send now, as attempt `attempt`) or why not."""

    outcome: str  # go | early | halted | sending | submitted | failed | gone
    attempt: int = 0
    detail: str = ""


class JobStore:
    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.redis = client
        self.retention = retention_seconds
        self._claim = client.register_script(scripts.CLAIM)
        self._release = client.register_script(scripts.RELEASE)
        self._finish = client.register_script(scripts.FINISH)
        self._resolve = client.register_script(scripts.RESOLVE)
        self._report = client.register_script(scripts.REPORT)

    # -- submit -------------------------------------------------------------------------------
    def create(self, job: NewJob) -> None:
        """Store a job, its batches and its recipients (all pending: status 0) in one
        pipeline."""
        now = _now()
        fields: dict[str, str | int] = {
            **{k: v for k, v in asdict(job.sending).items() if v is not None},
            "created_at": now,
            "updated_at": now,
            "batches": job.batch_count,
            "received": job.received,
            "accepted": len(job.recipients),
            "duplicates": job.duplicates,
            "invalid": job.invalid,
            "suppressed": job.suppressed,
            "b:pending": job.batch_count,
            "b:submitted": 0,
            "b:failed": 0,
            "b:cancelled": 0,
            **{f"c:{CODES[s]}": 0 for s in Status},
            **job.extra,
        }
        fields["c:p"] = len(job.recipients)
        if job.send_at is not None:
            fields["send_at"] = f"{job.send_at:.3f}"
        batches: dict[str, str] = {}
        for batch in range(job.batch_count):
            batches[str(batch)] = "pending|0|0"
            batches[f"q:{batch}"] = now
        # Not a MULTI (Redis would queue a million recipients' 32 MB before running them):
        # the job hash is written last, so a job is visible only once everything it points to
        # exists; what an interrupted write leaves behind expires with the retention.
        pipe = self.redis.pipeline(transaction=False)
        job_key = keys.job(job.job_id)
        batches_key = keys.batches(job.job_id)
        for batch in range(job.batch_count):
            start = batch * job.batch_size
            chunk = job.recipients[start : start + job.batch_size]
            pipe.set(keys.recipients(job.job_id, batch), records.pack_new(chunk), ex=self.retention)
        pipe.hset(batches_key, mapping=cast(dict[Any, Any], batches))
        pipe.expire(batches_key, self.retention)
        pipe.hset(job_key, mapping=cast(dict[Any, Any], fields))
        pipe.expire(job_key, self.retention)
        pipe.execute()
        # The sweep's index of unfinished jobs: outside the job's slot, so not in its transaction.
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(keys.ACTIVE_JOBS, {job.job_id: float(now)})
        pipe.zadd(keys.JOBS, {job.job_id: float(now)})
        if job.send_at is not None:
            pipe.zadd(keys.SCHEDULED, {job.job_id: job.send_at})
        pipe.execute()

    # -- dispatch -----------------------------------------------------------------------------
    def claim_batch(self, job_id: str, batch: int) -> Claim:
        """Take a pending batch for sending (atomically: one claimant wins)."""
        result = self._claim(keys=self._batch_keys(job_id, batch), args=[batch, _now()])
        outcome = result[0]
        if outcome == "go":
            return Claim("go", attempt=int(result[1]))
        return Claim(outcome, detail=result[1] if len(result) > 1 else "")

    def release_batch(self, job_id: str, batch: int, attempt: int, not_before: float) -> bool:
        """Nothing reached Plivo: the batch is pending again, not to be sent before then."""
        return bool(
            self._release(keys=[keys.batches(job_id)], args=[batch, attempt, f"{not_before:.3f}"])
        )

    def batch_work(self, job_id: str, batch: int) -> BatchWork:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.job(job_id), SENDING_FIELDS)
        _get_bytes(pipe, keys.recipients(job_id, batch))
        (message, src, powerpack, expiry), blob = pipe.execute()
        sending = Sending(message, src, powerpack, int(expiry) if expiry else None)
        return BatchWork(sending=sending, numbers=records.numbers_of(blob or b""))

    def batch_submitted(
        self, job_id: str, batch: int, attempt: int, api_id: str, refused: Sequence[str]
    ) -> int:
        """Plivo accepted the batch: its recipients are queued, those Plivo refused rejected.

        1 recorded, 0 already recorded, -1 another attempt owns the batch now.
        """
        return self._finish_batch(
            job_id, batch, BatchState.SUBMITTED, api_id, Status.QUEUED, str(attempt), refused
        )

    def batch_failed(self, job_id: str, batch: int, attempt: int | None, reason: str) -> int:
        """The batch will never be sent: its recipients are counted as rejected."""
        owner = "*" if attempt is None else str(attempt)
        return self._finish_batch(
            job_id, batch, BatchState.FAILED, reason, Status.REJECTED, owner, ()
        )

    def halt(self, job_id: str, reason: str) -> None:
        """Stop the job: every batch not yet sent fails with `reason` when it is claimed."""
        self.redis.hsetnx(keys.job(job_id), "halted", reason.replace("|", "/"))

    def resolve_batch(
        self, job_id: str, batch: int, in_flight_seconds: float, grace_seconds: float
    ) -> str:
        """Settle a batch left `sending`: submitted on evidence, else resend after the grace."""
        return str(
            self._resolve(
                keys=self._batch_keys(job_id, batch),
                args=[batch, _now(), in_flight_seconds, grace_seconds],
            )
        )

    def mark_enqueued(self, job_id: str, batch: int) -> None:
        self.redis.hset(keys.batches(job_id), f"q:{batch}", _now())

    def batch_records(self, job_id: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(keys.batches(job_id)))

    def _finish_batch(
        self,
        job_id: str,
        batch: int,
        outcome: BatchState,
        detail: str,
        code: Status,
        owner: str,
        refused_numbers: Sequence[str],
    ) -> int:
        now = _now()
        refused = [records.number_key(n) for n in refused_numbers]
        return int(
            self._finish(
                keys=self._batch_keys(job_id, batch),
                args=[
                    batch,
                    now,
                    outcome.value,
                    detail.replace("|", "/"),
                    CODES[code],
                    owner,
                    records.tail(CODES[Status.REJECTED], "invalid_number", int(float(now))),
                    *(n for n in refused if n),
                ],
            )
        )

    @staticmethod
    def _batch_keys(job_id: str, batch: int) -> list[str]:
        return [keys.job(job_id), keys.batches(job_id), keys.recipients(job_id, batch)]

    # -- delivery reports ---------------------------------------------------------------------
    def record_report(self, report: Report, connection: Connection | None = None) -> int:
        """1 when the status moved, 0 when it was old news, -1 for an unknown recipient.

        With `connection` (one the caller holds, see `fastpath`), the script is called on it
        directly: a third less of the client's time than through the pool. Redis may not have
        the script yet (after a restart, say): it is loaded, and called once more.
        """
        found = self._report_call(report)
        if found is None:
            return -1
        keys_, args = found
        if connection is None:
            return int(self._report(keys=keys_, args=args))
        try:
            return _call(connection, self._report.sha, keys_, args)
        except NoScriptError:
            self.redis.script_load(scripts.REPORT)
            return _call(connection, self._report.sha, keys_, args)

    def record_reports(self, reports: Iterable[Report]) -> list[int]:
        """Many reports in one pipeline (each still its own atomic script)."""
        pipe = self.redis.pipeline(transaction=False)
        known = []
        for report in reports:
            found = self._report_call(report)
            known.append(found is not None)
            if found is not None:
                self._report(keys=found[0], args=found[1], client=pipe)
        answers = iter(pipe.execute())
        return [int(next(answers)) if k else -1 for k in known]

    @staticmethod
    def _report_call(report: Report) -> tuple[list[str], list[Any]] | None:
        number = records.number_key(report.number)
        if not number:
            return None
        now = time.time()
        job_id, batch, code = report.job_id, report.batch, CODES[report.status]
        return [keys.job(job_id), keys.recipients(job_id, batch), keys.batches(job_id)], [
            number,
            code,
            records.encode_uuid(report.uuid),
            records.tail(code, report.error_code, int(now)),
            f"{now:.3f}",
            batch,
            report.units,
            round(report.amount * 100_000),
        ]

    # -- the sweep's view ---------------------------------------------------------------------
    def active_jobs(self) -> list[str]:
        return cast(list[str], self.redis.zrange(keys.ACTIVE_JOBS, 0, -1))

    def deactivate(self, job_id: str) -> None:
        self.redis.zrem(keys.ACTIVE_JOBS, job_id)

    def set_flag(self, job_id: str, flag: str) -> None:
        """Record an operator's decision (cancelled, paused) on the job, once."""
        self.redis.hsetnx(keys.job(job_id), flag, _now())

    def clear_flag(self, job_id: str, flag: str) -> None:
        self.redis.hdel(keys.job(job_id), flag)

    def due_jobs(self, now: float) -> list[str]:
        return cast(list[str], self.redis.zrangebyscore(keys.SCHEDULED, "-inf", now))

    def release(self, job_id: str) -> None:
        """A scheduled job's time has come (or it was cancelled): it is queued now."""
        self.redis.hdel(keys.job(job_id), "send_at")
        self.redis.zrem(keys.SCHEDULED, job_id)

    def claim_notification(self, job_id: str) -> bool:
        """True once per job: the caller sends its completion callback."""
        return bool(self.redis.hsetnx(keys.job(job_id), "notify_queued", _now()))

    def is_urgent(self, job_id: str) -> bool:
        return bool(self.redis.hexists(keys.job(job_id), "urgent"))

    def pending_batches(self, job_id: str) -> list[int]:
        records = self.batch_records(job_id)
        return sorted(int(k) for k, v in records.items() if k.isdigit() and v.startswith("pending"))

    def jobs_before(self, before: float | None, count: int) -> list[tuple[str, float]]:
        """Job ids newest first, created before `before` (exclusive), with their times."""
        top = f"({before}" if before is not None else "+inf"
        found = cast(
            list[tuple[str, float]],
            self.redis.zrevrangebyscore(
                keys.JOBS, top, "-inf", start=0, num=count, withscores=True
            ),
        )
        return [(str(job_id), float(score)) for job_id, score in found]

    def jobs_fields(self, job_ids: Sequence[str]) -> list[dict[str, str] | None]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [fields or None for fields in pipe.execute()]

    def forget(self, job_id: str) -> None:
        """Drop an expired job from the listing."""
        self.redis.zrem(keys.JOBS, job_id)

    def erase(self, job_id: str, batches: int) -> None:
        """Delete a finished job's per-recipient data (numbers are personal data); keep its
        counts."""
        pipe = self.redis.pipeline(transaction=False)
        for batch in range(batches):
            pipe.delete(keys.recipients(job_id, batch))
        pipe.delete(keys.batches(job_id))
        pipe.hset(keys.job(job_id), "erased", _now())
        pipe.execute()

    def close(self, job_id: str, reason: str) -> None:
        """Stop waiting for reports: the job is completed with what is known."""
        self.redis.hsetnx(keys.job(job_id), "closed", reason)

    # -- reads --------------------------------------------------------------------------------
    def job_fields(self, job_id: str) -> dict[str, str] | None:
        fields = cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))
        return fields or None

    def recipient(self, job_id: str, batch: int, number: str) -> Recipient | None:
        """One recipient's record, decoded."""
        blob, state = self._batch_blob(job_id, batch)
        found = records.find(blob, number)
        return None if found is None else Recipient.of(found, state)

    def batch_recipients(self, job_id: str, batch: int) -> list[Recipient]:
        """Every recipient of one batch (at most BATCH_SIZE), in number order."""
        blob, state = self._batch_blob(job_id, batch)
        return [Recipient.of(r, state) for r in records.unpack(blob)]

    def _batch_blob(self, job_id: str, batch: int) -> tuple[bytes, str]:
        pipe = self.redis.pipeline(transaction=False)
        _get_bytes(pipe, keys.recipients(job_id, batch))
        pipe.hget(keys.batches(job_id), str(batch))
        blob, state = pipe.execute()
        return blob or b"", state or ""


@dataclass(frozen=True)
class Recipient:
    """One recipient as the per-recipient report shows it."""

    number: str
    message_uuid: str | None
    status: Status
    error_code: str | None
    updated_at: str | None

    @classmethod
    def of(cls, record: records.Record, batch_state: str) -> Recipient:
        """A record whose status is 0 takes it (and its error and time) from its batch."""
        if record.code:
            status, error, when = BY_CODE[record.code], record.error, record.updated
        else:
            outcome, _, rest = batch_state.partition("|")
            at = rest.partition("|")[0]
            status = IMPLIED.get(outcome, Status.PENDING)
            error = "batch_failed" if status is Status.REJECTED else None
            when = int(float(at)) if status is not Status.PENDING and at else 0
        return cls(
            record.number,
            record.uuid,
            status,
            error,
            rfc3339(str(when)) if when else None,
        )

    def as_dict(self) -> dict[str, str | None]:
        return {
            "number": self.number,
            "message_uuid": self.message_uuid,
            "status": self.status.value,
            "error_code": self.error_code,
            "updated_at": self.updated_at,
        }


IMPLIED = {
    BatchState.SUBMITTED.value: Status.QUEUED,
    BatchState.FAILED.value: Status.REJECTED,
    BatchState.CANCELLED.value: Status.CANCELLED,
}


def derive_state(fields: dict[str, str]) -> JobState:
    """A job's state follows from its counters; only decisions (cancel, pause, close) are
    stored."""
    if "cancelled" in fields:
        return JobState.CANCELLED
    if "send_at" in fields:
        return JobState.SCHEDULED
    pending_batches = int(fields["b:pending"])
    if pending_batches:
        if "paused" in fields:
            return JobState.PAUSED
        return JobState.SENDING if "started_at" in fields else JobState.QUEUED
    if int(fields["b:submitted"]) == 0:
        return JobState.FAILED
    if "closed" in fields or not any(int(fields[f"c:{CODES[s]}"]) for s in NOT_FINAL):
        return JobState.COMPLETED
    return JobState.SENT


def status_document(job_id: str, fields: dict[str, str]) -> dict[str, Any]:
    """The contract's shape of `GET /api/bulk-sms/<id>`."""
    return {
        "job_id": job_id,
        "state": derive_state(fields).value,
        "created_at": rfc3339(fields["created_at"]),
        "updated_at": rfc3339(fields["updated_at"]),
        "message_length": len(fields["message"]),
        "recipients": {
            k: int(fields.get(k, 0))
            for k in ("received", "accepted", "duplicates", "invalid", "suppressed")
        },
        "batches": {
            "total": int(fields["batches"]),
            "pending": int(fields["b:pending"]),
            "submitted": int(fields["b:submitted"]),
            "failed": int(fields["b:failed"]),
            "cancelled": int(fields.get("b:cancelled", 0)),
        },
        "counts": {s.value: int(fields.get(f"c:{CODES[s]}", 0)) for s in Status},
        **({"closed": fields["closed"]} if "closed" in fields else {}),
        **({"halted": fields["halted"]} if "halted" in fields else {}),
        **({"erased_at": rfc3339(fields["erased"])} if "erased" in fields else {}),
        **({"send_at": rfc3339(fields["send_at"])} if "send_at" in fields else {}),
        **({"retry_of": fields["retry_of"]} if "retry_of" in fields else {}),
        "billed": {
            "units": int(fields.get("billed_units", 0)),
            "amount": int(fields.get("billed_amount_e5", 0)) / 100_000,
        },
    }


def rfc3339(unix: str) -> str:
    moment = datetime.fromtimestamp(float(unix), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return f"{time.time():.3f}"


def _get_bytes(pipe: Pipeline, key: str) -> None:
    """Queue a GET whose answer stays bytes (a batch's records) on a decoding client."""
    pipe.execute_command("GET", key, NEVER_DECODE=True)  # type: ignore[no-untyped-call]


def _call(connection: Connection, sha: str, keys_: list[str], args: list[Any]) -> int:
    # Packed by hiredis in C, not argument by argument in redis-py: every report pays for it.
    packed = hiredis.pack_command(("EVALSHA", sha, len(keys_), *keys_, *args))
    connection.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
    answer = connection.read_response()
    if isinstance(answer, Exception):
        raise answer
    return int(cast(int, answer))
