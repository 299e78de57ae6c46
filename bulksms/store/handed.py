"""Which of our batches a message UUID belongs to: how a message found in Plivo's list is told
apart from one that another of our calls made (an alert or a retry to the same number from the
same sender).

    bulksms:handed:<hour>  set  "<job>:<batch>" for each batch whose call Plivo answered, or
                                reported on before the call was recorded, in that hour
    bulksms:handed:<hour>:groups  hash  message UUID -> "<job>:<batch>,…": messages Plivo's
                                list showed for several of our lost calls to one number at
                                once (each call's own not known: ours, and only theirs)
    bulksms:handed:found  zset  calls settled from Plivo's list, by their claim's time: their
                                answer was lost, so their messages to numbers no report has
                                named yet are nobody's as far as the UUIDs go, and may be theirs

Each batch already keeps the UUIDs Plivo answered its calls with (`{job}:uuids:<b>`, 16 bytes
each) and those its reports named (in its recipients' records), so an hour costs one member a
batch, not an entry a message. Kept `HOURS`; a lookup reads the hours around a call's window
(Plivo's clock is not ours) and the batches named there. Rare: only calls without an answer are
looked up.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import cast

import redis
from redis.client import Pipeline

from bulksms.store import keys, records

HOURS = 12  # longer than any call waits to be settled (Redis down for hours is an incident)
RECENT_A_READ = 10_000  # batches asked about in one round trip, when a job is erased


@dataclass(frozen=True)
class FoundCall:
    """A call settled from Plivo's list (`reconcile.Unsettled`'s fields)."""

    job_id: str
    batch: int
    attempt: int
    offset: int
    size: int
    since: float
    sender: str | None
    powerpack: str | None


def batch_id(job_id: str, batch: int) -> str:
    return f"{job_id}:{batch}"


class HandedBatches:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def remember(self, job_id: str, batch: int, at: float, pipe: Pipeline) -> None:
        """Queue on `pipe`: the batch handed messages to Plivo at `at`."""
        for command in self.writes(job_id, batch, at):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]

    @staticmethod
    def writes(job_id: str, batch: int, at: float) -> list[tuple[str, str, str | int]]:
        """The commands that say the batch handed messages to Plivo at `at`."""
        key = keys.handed(int(at // 3600))
        return [("SADD", key, batch_id(job_id, batch)), ("EXPIRE", key, (HOURS + 1) * 3600)]

    def remember_group(self, uuids: list[str], batch_ids: list[str], at: float) -> None:
        """These messages, found in Plivo's list at `at`, are some of these batches' (which
        one's is not known): no other call may take them for its own."""
        key = keys.handed_to_groups(int(at // 3600))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping=dict.fromkeys(uuids, ",".join(batch_ids)))
        pipe.expire(key, (HOURS + 1) * 3600)
        pipe.execute()

    def recent(self, job_id: str, batches: int, now: float) -> list[int]:
        """The job's batches named in the hours a lookup may still read (up to `now`)."""
        hours = range(int(now // 3600) - HOURS - 1, int(now // 3600) + 2)
        named = []
        for first in range(0, batches, RECENT_A_READ):
            ids = [batch_id(job_id, b) for b in range(first, min(batches, first + RECENT_A_READ))]
            pipe = self.redis.pipeline(transaction=False)
            for hour in hours:
                pipe.smismember(keys.handed(hour), ids)
            found = pipe.execute()
            named += [first + i for i in range(len(ids)) if any(hour[i] for hour in found)]
        return named

    def remember_found(self, call: FoundCall) -> None:
        """A lost call is about to be settled from a message in Plivo's list (written first:
        kept in vain if the settling finds it moved, which only makes other calls wait)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(keys.FOUND_BLIND, {json.dumps(dataclasses.astuple(call)): call.since})
        pipe.zremrangebyscore(keys.FOUND_BLIND, "-inf", call.since - (HOURS + 1) * 3600)
        pipe.execute()

    def found(self, start: float, end: float) -> list[FoundCall]:
        """The calls settled from Plivo's list that were claimed between `start` and `end`."""
        found = []
        for member in cast(list[str], self.redis.zrangebyscore(keys.FOUND_BLIND, start, end)):
            try:
                found.append(FoundCall(*json.loads(member)))
            except (TypeError, ValueError):  # (not one of ours: nothing to weigh)
                continue
        return found

    def owners(self, start: float, end: float) -> dict[str, str]:
        """Every message UUID our batches handed over or were told of between `start` and `end`
        (and the hour either side), with its batch (`batch_id`), or the batches it is one of
        (comma-separated: `remember_group`)."""
        hours = range(int(start // 3600) - 1, int(end // 3600) + 2)
        pipe = self.redis.pipeline(transaction=False)
        for hour in hours:
            pipe.smembers(keys.handed(hour))
            pipe.hgetall(keys.handed_to_groups(hour))
        read = pipe.execute()
        named = sorted({member for found in read[::2] for member in found})
        found: dict[str, str] = {}
        for groups in read[1::2]:
            found.update(groups)  # (a batch's own record, below, says more)
        pipe = self.redis.pipeline(transaction=False)
        for member in named:
            job_id, _, batch = member.rpartition(":")
            for key in (keys.answered(job_id, int(batch)), keys.recipients(job_id, int(batch))):
                pipe.execute_command("GET", key, NEVER_DECODE=True)  # type: ignore[no-untyped-call]
        blobs = iter(pipe.execute())
        for member in named:
            answered, recipients = next(blobs) or b"", next(blobs) or b""
            for each in records.uuids_of(answered):
                found[each] = member
            for record in records.unpack(recipients):
                if record.uuid:
                    found[record.uuid] = member
        return found
