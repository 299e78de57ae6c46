"""The job store: jobs, batches and per-recipient statuses in Redis.

Every change of a recipient's status and the job's per-status counter moves in one Lua script,
so the counters always equal the statuses, and the status endpoint reads counters only.

A recipient's record is ``code|message_uuid|error_code|unix_time`` (just ``p`` while pending),
keyed by its number in its batch's hash. Reports name the job, the batch (in the callback URL)
and the number (`To`), so a report finds its record even when it arrives before the worker has
written what Plivo answered. Statuses only move forward: pending < queued < sent < final, and
the first final status (delivered, undelivered, failed, rejected) stays.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

import redis

from bulksms import keys, scripts


class Status(StrEnum):
    PENDING = "pending"  # accepted by us, not yet by Plivo
    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REJECTED = "rejected"


CODES = {
    Status.PENDING: "p",
    Status.QUEUED: "q",
    Status.SENT: "s",
    Status.DELIVERED: "d",
    Status.UNDELIVERED: "u",
    Status.FAILED: "f",
    Status.REJECTED: "r",
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
    batch_size: int
    extra: dict[str, str | int]  # what the answer reports (encoding, segments, ...)

    @property
    def batch_count(self) -> int:
        return -(-len(self.recipients) // self.batch_size)


@dataclass(frozen=True)
class BatchWork:
    """What a worker needs to send one batch."""

    sending: Sending
    numbers: list[str]  # E.164


SENDING_FIELDS = [f.name for f in dataclass_fields(Sending)]


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
        """Store a job, its batches and its recipients (all pending) in one round trip."""
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
            "b:pending": job.batch_count,
            "b:submitted": 0,
            "b:failed": 0,
            **{f"c:{CODES[s]}": 0 for s in Status},
            **job.extra,
        }
        fields["c:p"] = len(job.recipients)
        batches: dict[str, str] = {}
        for batch in range(job.batch_count):
            batches[str(batch)] = "pending|0|0"
            batches[f"q:{batch}"] = now
        pipe = self.redis.pipeline(transaction=True)
        job_key = keys.job(job.job_id)
        batches_key = keys.batches(job.job_id)
        pipe.hset(job_key, mapping=cast(dict[Any, Any], fields))
        pipe.hset(batches_key, mapping=cast(dict[Any, Any], batches))
        for batch in range(job.batch_count):
            start = batch * job.batch_size
            numbers = job.recipients[start : start + job.batch_size]
            key = keys.recipients(job.job_id, batch)
            pipe.hset(key, mapping={n[1:]: "p" for n in numbers})
            pipe.expire(key, self.retention)
        pipe.expire(job_key, self.retention)
        pipe.expire(batches_key, self.retention)
        pipe.execute()
        # The sweep's index of unfinished jobs: outside the job's slot, so not in its transaction.
        self.redis.zadd(keys.ACTIVE_JOBS, {job.job_id: float(now)})

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
        pipe.hkeys(keys.recipients(job_id, batch))
        (message, src, powerpack, expiry), numbers = pipe.execute()
        sending = Sending(message, src, powerpack, int(expiry) if expiry else None)
        return BatchWork(sending=sending, numbers=[f"+{n}" for n in numbers])

    def batch_submitted(
        self, job_id: str, batch: int, attempt: int, api_id: str, refused: Sequence[str]
    ) -> int:
        """Plivo accepted the batch: its recipients are queued, those Plivo refused rejected.

        1 recorded, 0 already recorded, -1 another attempt owns the batch now.
        """
        return self._finish_batch(
            job_id, batch, BatchState.SUBMITTED, api_id, Status.QUEUED, "", str(attempt), refused
        )

    def batch_failed(self, job_id: str, batch: int, attempt: int | None, reason: str) -> int:
        """The batch will never be sent: its recipients are counted as rejected."""
        owner = "*" if attempt is None else str(attempt)
        return self._finish_batch(
            job_id, batch, BatchState.FAILED, reason, Status.REJECTED, "batch_failed", owner, ()
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
        error: str,
        owner: str,
        refused_numbers: Sequence[str],
    ) -> int:
        refused = [_field(n) for n in refused_numbers]
        return int(
            self._finish(
                keys=self._batch_keys(job_id, batch),
                args=[
                    batch,
                    _now(),
                    outcome.value,
                    detail.replace("|", "/"),
                    CODES[code],
                    error,
                    owner,
                    *refused,
                ],
            )
        )

    @staticmethod
    def _batch_keys(job_id: str, batch: int) -> list[str]:
        return [keys.job(job_id), keys.batches(job_id), keys.recipients(job_id, batch)]

    # -- delivery reports ---------------------------------------------------------------------
    def record_report(
        self, job_id: str, batch: int, number: str, status: Status, uuid: str, error_code: str
    ) -> int:
        """1 when the status moved, 0 when it was old news, -1 for an unknown recipient."""
        return int(
            self._report(
                keys=[keys.job(job_id), keys.recipients(job_id, batch), keys.batches(job_id)],
                args=[
                    _field(number),
                    CODES[status],
                    uuid.replace("|", ""),
                    error_code.replace("|", ""),
                    _now(),
                    batch,
                ],
            )
        )

    # -- the sweep's view ---------------------------------------------------------------------
    def active_jobs(self) -> list[str]:
        return cast(list[str], self.redis.zrange(keys.ACTIVE_JOBS, 0, -1))

    def deactivate(self, job_id: str) -> None:
        self.redis.zrem(keys.ACTIVE_JOBS, job_id)

    def close(self, job_id: str, reason: str) -> None:
        """Stop waiting for reports: the job is completed with what is known."""
        self.redis.hsetnx(keys.job(job_id), "closed", reason)

    # -- reads --------------------------------------------------------------------------------
    def job_fields(self, job_id: str) -> dict[str, str] | None:
        fields = cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))
        return fields or None

    def recipient(self, job_id: str, batch: int, number: str) -> dict[str, str] | None:
        """One recipient's record, decoded (for tests and, later, per-recipient reports)."""
        raw = cast(str | None, self.redis.hget(keys.recipients(job_id, batch), _field(number)))
        if raw is None:
            return None
        code, _, rest = raw.partition("|")
        uuid, _, rest = rest.partition("|")
        error, _, when = rest.partition("|")
        return {
            "status": BY_CODE[code].value,
            "message_uuid": uuid,
            "error_code": error,
            "updated_at": when,
        }


def derive_state(fields: dict[str, str]) -> JobState:
    """A job's state follows from its counters; only decisions (closing) are stored."""
    pending_batches = int(fields["b:pending"])
    if pending_batches:
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
            k: int(fields[k]) for k in ("received", "accepted", "duplicates", "invalid")
        },
        "batches": {
            "total": int(fields["batches"]),
            "pending": int(fields["b:pending"]),
            "submitted": int(fields["b:submitted"]),
            "failed": int(fields["b:failed"]),
        },
        "counts": {s.value: int(fields[f"c:{CODES[s]}"]) for s in Status},
        **({"closed": fields["closed"]} if "closed" in fields else {}),
        **({"halted": fields["halted"]} if "halted" in fields else {}),
    }


def rfc3339(unix: str) -> str:
    moment = datetime.fromtimestamp(float(unix), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return f"{time.time():.3f}"


def _field(number: str) -> str:
    """A recipient's hash field: its digits, without '+'."""
    return number.lstrip("+").strip()
