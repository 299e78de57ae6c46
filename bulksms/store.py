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

from bulksms import keys


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


# Shared Lua: move one recipient forward and keep the job's counters equal to the statuses.
_PRELUDE = """
local RANK = {p = 0, q = 1, s = 2, d = 3, u = 3, f = 3, r = 3}
local function advance(job, hash, number, code, uuid, err, now)
  local cur = redis.call('HGET', hash, number)
  if not cur then return -1 end
  local old = string.sub(cur, 1, 1)
  if RANK[code] <= RANK[old] then return 0 end
  if uuid == '' then
    uuid = string.match(cur, '^.|([^|]*)') or ''
  end
  redis.call('HSET', hash, number, code .. '|' .. uuid .. '|' .. err .. '|' .. now)
  redis.call('HINCRBY', job, 'c:' .. old, -1)
  redis.call('HINCRBY', job, 'c:' .. code, 1)
  return 1
end
"""

# KEYS: job, batches. ARGV: batch, now. Returns the batch's state before the claim.
_CLAIM = """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 'gone' end
local state = string.match(rec, '^[^|]*')
if state == 'pending' then
  redis.call('HSET', KEYS[2], ARGV[1], 'sending|' .. ARGV[2])
  redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2])
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
end
return state
"""

# KEYS: batches. ARGV: batch. A send that never reached Plivo gives the batch back.
_RELEASE = """
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if rec and string.match(rec, '^[^|]*') == 'sending' then
  redis.call('HSET', KEYS[1], ARGV[1], 'pending')
  return 1
end
return 0
"""

# KEYS: job, batches, recipients. ARGV: batch, now, outcome, detail, code for the batch's
# pending recipients, then the numbers Plivo refused one by one (rejected).
_FINISH = (
    _PRELUDE
    + """
local rec = redis.call('HGET', KEYS[2], ARGV[1])
if not rec then return 0 end
local state = string.match(rec, '^[^|]*')
if state == 'submitted' or state == 'failed' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3] .. '|' .. ARGV[2] .. '|' .. ARGV[4])
redis.call('HINCRBY', KEYS[1], 'b:pending', -1)
redis.call('HINCRBY', KEYS[1], 'b:' .. ARGV[3], 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
local refused = {}
for i = 6, #ARGV do refused[ARGV[i]] = true end
local all = redis.call('HGETALL', KEYS[3])
for i = 1, #all, 2 do
  if all[i + 1] == 'p' then
    if refused[all[i]] then
      advance(KEYS[1], KEYS[3], all[i], 'r', '', 'invalid_number', ARGV[2])
    else
      advance(KEYS[1], KEYS[3], all[i], ARGV[5], '', '', ARGV[2])
    end
  end
end
return 1
"""
)

# KEYS: job, recipients. ARGV: number, code, uuid, error code, now.
_REPORT = (
    _PRELUDE
    + """
local moved = advance(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if moved == 1 then redis.call('HSET', KEYS[1], 'updated_at', ARGV[5]) end
return moved
"""
)


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


class JobStore:
    def __init__(self, client: redis.Redis, retention_seconds: int) -> None:
        self.redis = client
        self.retention = retention_seconds
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._finish = client.register_script(_FINISH)
        self._report = client.register_script(_REPORT)

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
        pipe = self.redis.pipeline(transaction=True)
        job_key = keys.job(job.job_id)
        batches_key = keys.batches(job.job_id)
        pipe.hset(job_key, mapping=cast(dict[Any, Any], fields))
        pipe.hset(batches_key, mapping=dict.fromkeys(range(job.batch_count), "pending"))
        for batch in range(job.batch_count):
            start = batch * job.batch_size
            numbers = job.recipients[start : start + job.batch_size]
            key = keys.recipients(job.job_id, batch)
            pipe.hset(key, mapping={n[1:]: "p" for n in numbers})
            pipe.expire(key, self.retention)
        pipe.expire(job_key, self.retention)
        pipe.expire(batches_key, self.retention)
        pipe.execute()

    # -- dispatch -----------------------------------------------------------------------------
    def claim_batch(self, job_id: str, batch: int) -> BatchState | None:
        """Mark a pending batch as being sent. Returns its state before, None if it is gone."""
        state = self._claim(keys=[keys.job(job_id), keys.batches(job_id)], args=[batch, _now()])
        return None if state == "gone" else BatchState(state)

    def release_batch(self, job_id: str, batch: int) -> None:
        """Nothing reached Plivo: the batch is pending again, for a retry."""
        self._release(keys=[keys.batches(job_id)], args=[batch])

    def batch_work(self, job_id: str, batch: int) -> BatchWork:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(keys.job(job_id), SENDING_FIELDS)
        pipe.hkeys(keys.recipients(job_id, batch))
        (message, src, powerpack, expiry), numbers = pipe.execute()
        sending = Sending(message, src, powerpack, int(expiry) if expiry else None)
        return BatchWork(sending=sending, numbers=[f"+{n}" for n in numbers])

    def batch_submitted(
        self, job_id: str, batch: int, api_id: str, refused_numbers: Sequence[str]
    ) -> bool:
        """Plivo accepted the batch: its recipients are queued, those Plivo refused rejected."""
        return self._finish_batch(
            job_id, batch, BatchState.SUBMITTED, api_id, Status.QUEUED, refused_numbers
        )

    def batch_failed(self, job_id: str, batch: int, reason: str) -> bool:
        """The batch will never be sent: its recipients are counted as rejected."""
        return self._finish_batch(job_id, batch, BatchState.FAILED, reason, Status.REJECTED, ())

    def _finish_batch(
        self,
        job_id: str,
        batch: int,
        outcome: BatchState,
        detail: str,
        code: Status,
        refused_numbers: Sequence[str],
    ) -> bool:
        refused = [_field(n) for n in refused_numbers]
        done = self._finish(
            keys=[keys.job(job_id), keys.batches(job_id), keys.recipients(job_id, batch)],
            args=[batch, _now(), outcome.value, detail.replace("|", "/"), CODES[code], *refused],
        )
        return bool(done)

    # -- delivery reports ---------------------------------------------------------------------
    def record_report(
        self, job_id: str, batch: int, number: str, status: Status, uuid: str, error_code: str
    ) -> int:
        """1 when the status moved, 0 when it was old news, -1 for an unknown recipient."""
        return int(
            self._report(
                keys=[keys.job(job_id), keys.recipients(job_id, batch)],
                args=[
                    _field(number),
                    CODES[status],
                    uuid.replace("|", ""),
                    error_code.replace("|", ""),
                    _now(),
                ],
            )
        )

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
    """A job's state follows from its counters; only operator actions would be stored."""
    pending_batches = int(fields["b:pending"])
    if pending_batches:
        return JobState.SENDING if "started_at" in fields else JobState.QUEUED
    if int(fields["b:submitted"]) == 0:
        return JobState.FAILED
    if any(int(fields[f"c:{CODES[s]}"]) for s in NOT_FINAL):
        return JobState.SENT
    return JobState.COMPLETED


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
    }


def rfc3339(unix: str) -> str:
    moment = datetime.fromtimestamp(float(unix), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _now() -> str:
    return f"{time.time():.3f}"


def _field(number: str) -> str:
    """A recipient's hash field: its digits, without '+'."""
    return number.lstrip("+").strip()
