"""The pace toward Plivo, shared by every worker on every host: how much of each queue at Plivo
(the account's, and a capped sender's) is still waiting, and the schedule of jobs whose paced
batches wait for a turn. Run by Redis's own clock, so hosts whose clocks differ agree.

Each queue is kept as one number, `free`: the moment Plivo will have sent everything handed to
it so far at the configured rate. A call of `n` segments may go when it leaves at most `bound`
seconds of the pace waiting (or when the queue is empty); then `free` moves on by n / rate.
A call that does not fit is told to come back when the queue is down to half the bound, so a
turn can hand over several calls at once rather than one per wake-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import redis

from bulksms.store import keys, scripts


class Grant(NamedTuple):
    """`go`: the call may be made now (counted); else `seconds` until the queue is down to
    half the bound. `now` is Redis's clock; `seconds` is the account's backlog after the call
    when it goes; `waiting`, the jobs on the schedule for a turn."""

    go: bool
    seconds: float
    now: float
    waiting: int = 0
    had_last: bool = False  # refused, and this job took the last room: others go first


class PaceView(NamedTuple):
    backlog: float  # seconds of the account's pace waiting at Plivo
    now: float  # Redis's clock
    sharing: int  # jobs taking turns at the pace (at least 1)


class Pace:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._take = client.register_script(scripts.PACE_TAKE)
        self._view = client.register_script(scripts.PACE_VIEW)
        self._due = client.register_script(scripts.PACE_DUE)
        self._urgent = client.register_script(scripts.URGENT_TAKE)
        self._give_back = client.register_script(scripts.URGENT_GIVE_BACK)

    def take(
        self,
        job_id: str,
        segments: int,
        bound: float,
        account_rate: float,
        sender: tuple[str, float] | None,
    ) -> Grant:
        """Count job `job_id`'s call of `segments` against the account's queue (and a capped
        sender's)."""
        pace_keys = [keys.PACE_ACCOUNT, keys.PACE_DUE]
        rates: list[float] = [account_rate]
        if sender is not None:
            pace_keys.append(keys.pace_sender(sender[0]))
            rates.append(sender[1])
        go, seconds, now, waiting, *last = cast(
            Sequence[Any], self._take(keys=pace_keys, args=[segments, bound, job_id, *rates])
        )
        return Grant(go == "1", float(seconds), float(now), int(waiting), last == [1])

    def view(self, job_id: str) -> PaceView:
        """The pace as one job sees it now, for its estimate."""
        backlog, now, waiting, listed = cast(
            Sequence[Any], self._view(keys=[keys.PACE_ACCOUNT, keys.PACE_DUE], args=[job_id])
        )
        # the jobs taking turns: those on the schedule, and this one if its batch is out
        sharing = int(waiting) + (0 if int(listed) else 1)
        return PaceView(float(backlog), float(now), max(1, sharing))

    def take_urgent(self, seconds: float, bound: float) -> tuple[bool, float]:
        """Count an urgent job of `seconds` at the account's pace against the urgent lane's
        backlog: (True, the backlog ahead of it), or (False, seconds until the backlog is
        back within `bound`) when it is beyond (0: no bound)."""
        taken, value = cast(
            Sequence[Any], self._urgent(keys=[keys.PACE_ACCOUNT], args=[seconds, bound])
        )
        return int(taken) == 1, float(value)

    def give_back_urgent(self, seconds: float) -> None:
        """Take an urgent job's `seconds` off the backlog again: it was counted, then not
        kept (its store refused, or another request made it), and must not hold back the
        alerts after it."""
        self._give_back(keys=[keys.PACE_ACCOUNT], args=[seconds])

    def schedule(self, job_id: str, at: float) -> None:
        """Wake one of the job's paced batches at `at` (Redis's clock), or earlier if it was
        already due earlier."""
        self.redis.zadd(keys.PACE_DUE, {job_id: at}, lt=True)

    def due(self, limit: int = 1) -> list[str]:
        """Jobs whose turn has come, earliest first, taken off the schedule (each by one caller
        only). One at a time by default: two woken together would race for the same room."""
        return [str(job_id) for job_id in self._due(keys=[keys.PACE_DUE], args=[limit])]

    def scheduled(self, job_id: str) -> bool:
        return self.redis.zscore(keys.PACE_DUE, job_id) is not None
