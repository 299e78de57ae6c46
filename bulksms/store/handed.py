"""The message UUIDs Plivo gave back for each call whose answer came: how a message found in
Plivo's list is told apart from one that another of our calls made (an alert or a retry to
the same number from the same sender).

    bulksms:handed:<hour>  hash  message UUID -> the call that got it back (`call_id`)

One hash an hour (of the answer's time), kept `HOURS`: a call's own messages fall in the hour
it was made, and a lookup reads that hour and its neighbours (Plivo's clock is not ours).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.client import Pipeline

from bulksms.store import keys

HOURS = 12  # longer than any call waits to be settled (Redis down for hours is an incident)


def call_id(job_id: str, batch: int, attempt: int, offset: int) -> str:
    return f"{job_id}:{batch}:{attempt}:{offset}"


class HandedUuids:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    def remember(
        self, call: str, uuids: Sequence[str], at: float, pipe: Pipeline | None = None
    ) -> None:
        """Plivo answered `call` with these UUIDs (written before the call is recorded: a
        call recorded is never looked up, so its UUIDs must be here first). With `pipe`, the
        writes are queued on it."""
        if not uuids:
            return
        key = keys.handed(int(at // 3600))
        own = pipe is None
        pipe = self.redis.pipeline(transaction=False) if pipe is None else pipe
        pipe.hset(key, mapping=dict.fromkeys(uuids, call))
        pipe.expire(key, (HOURS + 1) * 3600)
        if own:
            pipe.execute()

    def owner(self, uuid: str, at: float) -> str | None:
        """The call that got `uuid` back, if any did; `at` is the message's time."""
        hour = int(at // 3600)
        pipe = self.redis.pipeline(transaction=False)
        for each in (hour - 1, hour, hour + 1):
            pipe.hget(keys.handed(each), uuid)
        return next((found for found in pipe.execute() if found), None)
