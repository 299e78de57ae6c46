"""The job store: jobs, batches and per-recipient statuses in Redis.

Every change of a recipient's status and the job's per-status counter moves in one Lua script,
so the counters always equal the statuses, and the status endpoint reads counters only.

A batch's recipients are one string, 32 bytes a recipient, sorted by number (`records`).
Reports name the job, the batch (in the callback URL) and the number (`To`), so a report finds
its record even when it arrives before the worker has written what Plivo answered. Statuses
only move forward: pending < queued < sent < final, and the first final status (delivered,
undelivered, failed, rejected) stays. Callers get `model`'s typed objects, never raw fields; a
job hash carries its layout version (`model.LAYOUT_VERSION`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields as dataclass_fields
from typing import Any, cast

import hiredis
import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.connection import Connection
from redis.exceptions import NoScriptError

from bulksms.store import keys, optouts, records, scripts, server
from bulksms.store.connections import ThreadConnections
from bulksms.store.handed import HOURS as HANDED_HOURS
from bulksms.store.handed import HandedBatches
from bulksms.store.model import (
    BLOCKED_BY_STOP,
    CODES,
    LAYOUT_VERSION,
    BatchRecord,
    BatchState,
    BatchWork,
    Claim,
    Guard,
    Guarded,
    Job,
    NewJob,
    Paging,
    Recipient,
    Report,
    Sending,
    Status,
)
from bulksms.template import parse as parse_template

# A new job's counts of the recipients not taken, written where not 0.
REJECTION_COUNTS = ("duplicates", "invalid", "suppressed")
# Active jobs read in one command by the sweep. One read of all 50,000 due in a backlog of
# alerts held Redis for 29 ms (every submit and report waited); a page by rank takes 0.6 ms
# wherever it starts (by score, with an offset, it walks to its start: 5 ms at 49,000).
SWEEP_PAGE = 1000
# Jobs the sweep sets its next look at in one script. A script holds Redis for all its run: 500
# took 1.3 ms of a quiet Redis (up to 3 ms under a load of alerts, every submit and report
# waiting), 100 take 0.27 ms; the sweep pays a round trip per 100 instead (`look_again`).
LOOKS_AT_ONCE = 100
# The job hash's fields that say what to send, read with one HMGET per batch.
SENDING_FIELDS = [f.name for f in dataclass_fields(Sending)]
# Decisions that stop a job's next call; the claim acts on them.
HOLDING_FLAGS = ["halted", "cancelled", "paused"]


log = logging.getLogger(__name__)


class KeyAnswered(Exception):
    """`create`'s guard key holds something other than a hold for this body (an answer, or
    another body's hold): nothing of the job was kept."""


class JobStore:
    """Every read and write of jobs, batches and recipients; callers get typed objects."""

    def __init__(
        self, client: redis.Redis, retention_seconds: int, first_look_seconds: float = 0.0
    ) -> None:
        """`first_look_seconds`: how long after it is made the sweep first looks at a job whose
        tasks went out with it (`create`'s `tasks`), on Redis's clock; 0, at its next pass. No
        batch of it can be enqueued again before DISPATCH_STALE_SECONDS, and a claim, a final
        report or a cancel makes it due at once. Looking at each new one at the next pass, a
        sweep read some 130,000 jobs in a minute of alerts at 1,100/s, against 33,000 so
        (bench/RESULTS.md, 2026-12-05)."""
        self.redis = client
        self.retention = retention_seconds
        self.first_look = first_look_seconds
        self.handed = HandedBatches(client)  # which batch a message UUID is ours from
        self.connections = ThreadConnections(client)  # (`_send`'s: not the pool's, measured)
        self._durability: server.Durability | None = None
        self._claim = client.register_script(scripts.CLAIM)
        self._release = client.register_script(scripts.RELEASE)
        self._park = client.register_script(scripts.PARK)
        self._next_paced = client.register_script(scripts.NEXT_PACED)
        self._call = client.register_script(scripts.CALL)
        self._suppress = client.register_script(scripts.SUPPRESS)
        self._finish = client.register_script(scripts.FINISH)
        self._resolve = client.register_script(scripts.RESOLVE)
        self._settle = client.register_script(scripts.SETTLE)
        self._report = client.register_script(scripts.REPORT)
        self._guarded = client.register_script(scripts.GUARDED_CREATE)
        self._commit = client.register_script(scripts.COMMIT)
        self._look_again = client.register_script(scripts.LOOK_AGAIN)
        self._look_now = client.register_script(scripts.LOOK_NOW)
        self._set_if_kept = client.register_script(scripts.SET_IF_KEPT)

    # -- submit -------------------------------------------------------------------------------
    def create(
        self,
        job: NewJob,
        then: Callable[[Pipeline], object] | None = None,
        tasks: Sequence[tuple[str, str]] = (),
        guard: tuple[str, str] | None = None,
    ) -> float:
        """Store a job, its batches and its recipients (all pending: status 0), add the caller's
        own writes (`then`: the answer an Idempotency-Key replays), index the job (from then on
        the sweep sends it) and push its first `tasks` (a queue's list, a message), in that
        order and in one round trip; returns its creation time. The last three only once all
        the job's data is written (`_data_writes`), and while `guard`'s key holds nothing or
        a value that starts as its own (an Idempotency-Key held for this body); else nothing of
        the job is kept, and `KeyAnswered` (the key holds something else) or a
        `redis.ResponseError` (the first refusal, if Redis refused a write) is raised."""
        now = _now()
        data, written = self._data_writes(job, now)
        commit = (
            "EVALSHA",
            self._commit.sha,
            len(written),
            *written,
            *(guard or ("", "")),
            *_words_of(self._final_writes(job, now, then, tasks)),
        )
        *answers, committed = self._send([*data, commit], False)
        if isinstance(committed, NoScriptError):  # (Redis restarted: its scripts are gone)
            _, committed = self._send([("SCRIPT", "LOAD", self._commit.script), commit], False)
        refused = [a for a in answers if isinstance(a, redis.ResponseError)]
        if committed == 1:  # (the job is taken: a refusal that left its keys is only logged)
            for error in refused:
                log.warning("job %s stored, but Redis refused a write: %s", job.job_id, error)
            return float(now)
        # Not committed: nothing sends, lists or answers it. Its data goes now, not at the end of
        # its retention: a Redis out of memory needs it back (DEL is allowed then). (COMMIT
        # removed it already where a key was missing; here, where COMMIT itself was refused.)
        with contextlib.suppress(redis.RedisError):
            self._send([("DEL", *written[i : i + 1000]) for i in range(0, len(written), 1000)])
        if refused:  # (the first refusal: COMMIT's own error, if any, came of it)
            raise refused[0]
        if isinstance(committed, Exception):
            raise committed
        if committed == -1:
            raise KeyAnswered(guard[0] if guard else "")
        raise redis.ResponseError("a new job's data was not kept")

    def create_guarded(
        self, job: NewJob, guard: Guard, tasks: Sequence[tuple[str, str]] = ()
    ) -> Guarded:
        """`create` for a small job (an alert), with the checks the general path makes in round
        trips of their own made first in the same script (`scripts.GUARDED_CREATE`): `guard`'s
        submit limits counted, its numbers looked up in the opt-out set, the urgent backlog
        taken. Nothing of the job is written unless all pass. (A small job's: Redis's Lua takes
        some 8,000 words at once, and the fast path's 16 KB bodies stay far below.)"""
        writes = self._writes(job, _now(), None, tasks)
        args: list[Any] = [repr(time.time())]
        args += ["" if guard.urgent_seconds is None else repr(guard.urgent_seconds)]
        args += [repr(guard.urgent_bound)]
        for window in guard.windows:
            args += [window.amount, window.expiry]
        args += [len(guard.numbers), *(n.lstrip("+") for n in guard.numbers)]
        args += _words_of(writes)
        script_keys = [keys.OPT_OUTS, keys.PACE_ACCOUNT, *(w.key for w in guard.windows)]
        outcome, *value = self._run(self._guarded, script_keys, args)
        return Guarded(outcome, float(value[0]) if value else 0.0)

    def _writes(
        self,
        job: NewJob,
        now: str,
        then: Callable[[Pipeline], object] | None,
        tasks: Sequence[tuple[str, str]],
    ) -> list[tuple[Any, ...]]:
        """A new job's writes, in order (see `create`), as commands."""
        return self._data_writes(job, now)[0] + self._final_writes(job, now, then, tasks)

    def _data_writes(self, job: NewJob, now: str) -> tuple[list[tuple[Any, ...]], list[str]]:
        """A new job's recipients, batches and job hash, as commands, and the keys they make.

        Not a MULTI (Redis would queue a million recipients' 32 MB before running them), but
        the commands run in order: the job hash after everything it points to. A Redis out of
        memory refuses a write and may take the next once memory is freed, so what follows
        (`_final_writes`: the answer to replay, the index, the tasks) runs only where every one
        of these keys is there (`scripts.COMMIT`): a job with a batch missing is never answered
        as accepted, sent or listed, and what it wrote is deleted at once. (Commands as words,
        not through a redis-py pipeline: its bookkeeping cost an alert more than Redis took to
        run them.)"""
        # (A count at 0 is not written: it reads as 0 (`Job.from_fields`) and HINCRBY starts
        # from 0. An alert's hash had 14 such fields of 27, the costliest of its writes.)
        fields: dict[str, str | int] = {
            "v": LAYOUT_VERSION,
            **{k: v for k in SENDING_FIELDS if (v := getattr(job.sending, k)) is not None},
            "created_at": now,
            "updated_at": now,
            "batches": job.batch_count,
            "received": job.received,
            "accepted": len(job.recipients),
            **{k: v for k in REJECTION_COUNTS if (v := getattr(job, k))},
            "b:pending": job.batch_count,
            "c:" + CODES[Status.PENDING]: len(job.recipients),
            "encoding": job.encoding,
            "segments_per_message": job.segments_per_message,
        }
        if job.field_names:
            fields["fields"] = ",".join(job.field_names)
        optional = {"callback_url": job.callback_url, "retry_of": job.retry_of}
        fields.update({k: v for k, v in optional.items() if v is not None})
        if job.urgent:
            fields["urgent"] = 1
        if job.send_at is not None:
            fields["send_at"] = f"{job.send_at:.3f}"
        batches: list[str] = []
        for batch in range(job.batch_count):
            batches += [str(batch), BatchRecord.new(), f"q:{batch}", now]
        writes: list[tuple[Any, ...]] = []
        for batch in range(job.batch_count):
            start, end = job.batch_span(batch)
            chunk = job.recipients[start:end]
            recipients_key = keys.recipients(job.job_id, batch)
            writes.append(("SET", recipients_key, records.pack_new(chunk), "EX", self.retention))
            if job.fields is not None:
                values = job.fields[start:end]
                packed = records.pack_fields([values[i] for i in records.sorted_order(chunk)])
                writes.append(("SET", keys.fields(job.job_id, batch), packed, "EX", self.retention))
        written = [words[1] for words in writes]
        job_key, batches_key = keys.job(job.job_id), keys.batches(job.job_id)
        writes.append(("HSET", batches_key, *batches))
        writes.append(("EXPIRE", batches_key, self.retention))
        writes.append(("HSET", job_key, *(word for pair in fields.items() for word in pair)))
        writes.append(("EXPIRE", job_key, self.retention))
        return writes, [*written, batches_key, job_key]

    def _final_writes(
        self,
        job: NewJob,
        now: str,
        then: Callable[[Pipeline], object] | None,
        tasks: Sequence[tuple[str, str]],
    ) -> list[tuple[Any, ...]]:
        """After a new job's data, in order: the caller's own writes (`then`), the index and
        the first tasks. An indexed job whose task never arrived is enqueued by the sweep."""
        writes: list[tuple[Any, ...]] = []
        if then is not None:
            pipe = self.redis.pipeline(transaction=False)
            then(pipe)
            writes += [tuple(words) for words, _ in pipe.command_stack]
        first_look = self.first_look if tasks else 0.0  # (else the sweep enqueues them)
        writes += self._index(job.job_id, float(now), job.send_at, first_look)
        writes += [("LPUSH", queue, message) for queue, message in tasks]
        return writes

    def _run(self, script: Script, script_keys: Sequence[str], args: Sequence[Any]) -> Any:
        """A registered script's answer, run by its digest through `_send` (loaded first where
        Redis has lost it, as after a restart: nothing ran)."""
        evalsha = ("EVALSHA", script.sha, len(script_keys), *script_keys, *args)
        try:
            (answer,) = self._send([evalsha])
        except NoScriptError:
            _, answer = self._send([("SCRIPT", "LOAD", script.script), evalsha])
        return answer

    def _send(self, commands: Sequence[Sequence[Any]], raising: bool = True) -> list[Any]:
        """Run commands packed by hiredis in C and sent in one write, and their answers:
        redis-py's own pipeline execution cost an alert's submit more than Redis took to run
        them; on the thread's own connection (`connections`), checked for one Redis closed,
        as after a restart. Unlike redis-py's, a failed run is not made again: the job's tasks
        may already be running, and a second write of its batches would undo their claims. The
        first error is raised once every answer is read (or, not `raising`, left in its place
        among the answers)."""
        connection = self.connections.get()
        answers: list[Any] = []
        try:
            connection.send_packed_command(  # type: ignore[no-untyped-call]
                [hiredis.pack_command(tuple(words)) for words in commands],
                check_health=False,
            )
            failed: redis.ResponseError | None = None
            for _ in commands:
                try:
                    answers.append(connection.read_response())
                except redis.ResponseError as error:  # the others' answers are read all the same
                    failed = failed or error
                    answers.append(error)
        except BaseException:
            connection.disconnect()  # type: ignore[no-untyped-call]  # (in an unknown state)
            raise
        if failed is not None and raising:
            raise failed
        return answers

    def index(self, job_id: str, created_at: float, send_at: float | None) -> None:
        """Make a stored job the sweep's (and the listing's): until then nothing sends it, and
        what `create` wrote expires unread."""
        self._send(self._index(job_id, created_at, send_at))

    @staticmethod
    def _index(
        job_id: str, created_at: float, send_at: float | None, first_look: float = 0.0
    ) -> list[tuple[Any, ...]]:
        """The listing's index last: a job in it is in all. The sweep's at 0, due at once
        whatever the clocks of this host and Redis; or, in a script that runs `first_look`'s
        score (`scripts.RUN_WRITES`), due that many seconds on, on Redis's clock."""
        score = f"now+{first_look!r}" if first_look > 0 else 0
        writes: list[tuple[Any, ...]] = [("ZADD", keys.ACTIVE_JOBS, score, job_id)]
        if send_at is not None:
            writes.append(("ZADD", keys.SCHEDULED, send_at, job_id))
        writes.append(("ZADD", keys.JOBS, created_at, job_id))
        return writes

    def ensure_indexed(self, job_id: str) -> bool:
        """Index a stored job that `index` never reached; True if it had to. Nothing of an
        unindexed job was ever sent. (A job's answer to replay is written with its index now,
        `scripts.COMMIT`; the release before wrote them apart, and a request could die between.)"""
        if self.redis.zscore(keys.JOBS, job_id) is not None:
            return False
        job = self.job(job_id)
        if job is None:
            return False
        self.index(job_id, job.created_at, job.send_at)
        return True

    # -- dispatch -----------------------------------------------------------------------------
    def claim_batch(self, job_id: str, batch: int, offset: int = 0, size: int = 0) -> Claim:
        """Take one call of a pending (or paced) batch: its recipients [offset, offset + size)
        in stored order (size 0: all the rest). Atomic: one claimant wins. A call made before
        at this offset is repeated as it was (the claim's `size`), unless a report shows it
        reached Plivo: then it is recorded, and the claim says `moved` (or `submitted`)."""
        now = _now()
        args: list[str | int | bytes] = [batch, now, offset, size, _queued_tail(now), job_id]
        script_keys = [*self._batch_keys(job_id, batch), keys.ACTIVE_JOBS]
        durability = self.durability()
        if durability.command is None:
            result = self._claim(keys=script_keys, args=args)
            durable: bool | None = True if durability.assured else None
        else:  # on the claim's own connection: WAIT and WAITAOF wait for that client's writes
            pipe = self.redis.pipeline(transaction=False)
            self._claim(keys=script_keys, args=args, client=pipe)
            pipe.execute_command(*durability.command)  # type: ignore[no-untyped-call]
            result, reply = pipe.execute(raise_on_error=False)
            if isinstance(result, Exception):
                raise result
            # (an error reply, say the append-only file switched off since: not durable)
            durable = not isinstance(reply, Exception) and durability.acknowledged(reply)
        outcome = result[0]
        if outcome == "go":
            since = result[3].decode() if isinstance(result[3], bytes) else str(result[3])
            return Claim(
                "go", attempt=int(result[1]), size=int(result[2]), durable=durable, since=since
            )
        return Claim(outcome, detail=result[1] if len(result) > 1 else "")

    def durability(self) -> server.Durability:
        """How claims are made durable on this Redis (asked once, at the first claim)."""
        if self._durability is None:
            self._durability = server.durability(self.redis)
            if not self._durability.assured:
                log.warning(
                    "Redis can make no write durable before a call to Plivo (no append-only "
                    "file with appendfsync always, no WAITAOF, no replica): a host crash may "
                    "forget the last second of claims, and send those calls again"
                )
        return self._durability

    def release_batch(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        delay: float,
        since: str = "",
    ) -> bool:
        """Nothing reached Plivo: the call's owner (`attempt` at `offset`, claimed at `since`)
        puts the batch back, not to be sent for `delay` seconds (on Redis's clock)."""
        args: list[str | int] = [batch, attempt, offset, f"{max(0.0, delay):.3f}", since]
        return bool(self._release(keys=[keys.batches(job_id)], args=args))

    def park(self, job_id: str, batch: int, offset: int, resume_at: float) -> bool:
        """The batch waits for its turn at the pace (its job's paced set; `Pace` wakes it)."""
        return bool(
            self._park(
                keys=[keys.batches(job_id), keys.paced(job_id)],
                args=[batch, f"{resume_at:.3f}", offset, self.retention],
            )
        )

    def next_paced(self, job_id: str) -> int | None:
        """The lowest of the job's paced batches, taken off its paced set and marked enqueued
        (its task is on its way, or the caller's goes on with it); None if none."""
        popped = self._next_paced(keys=[keys.paced(job_id), keys.batches(job_id)])
        return None if popped is None else int(popped)

    def has_paced(self, job_id: str) -> bool:
        """Whether any of the job's batches waits in its paced set (only looked at: none is taken
        or marked)."""
        return bool(self.redis.zcard(keys.paced(job_id)))

    def relist_paced(self, job_id: str, batches: Sequence[int]) -> None:
        """Put paced batches back in the job's paced set (after a waker died holding one). The
        set may have gone with the last batch taken: it expires again, as `park` made it."""
        if batches:
            pipe = self.redis.pipeline()  # (both or neither: the same slot, `{job}`)
            pipe.zadd(keys.paced(job_id), {str(b): b for b in batches}, nx=True)
            pipe.expire(keys.paced(job_id), self.retention)
            pipe.execute()

    def batch_work(self, job_id: str, batch: int) -> BatchWork:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(
            keys.job(job_id),
            [*SENDING_FIELDS, "segments_per_message", "urgent", "fields", *HOLDING_FLAGS],
        )
        _get_bytes(pipe, keys.recipients(job_id, batch))
        pipe.hget(keys.batches(job_id), str(batch))
        pipe.time()
        _get_bytes(pipe, keys.fields(job_id, batch))
        found = pipe.execute()
        (message, src, powerpack, expiry, segments, urgent, names, *held), blob, record, now = (
            found[:4]
        )
        sending = Sending(message or "", src, powerpack, int(expiry) if expiry else None)
        template = parse_template(sending.message) if names else None
        return BatchWork(
            template=template,
            fields=records.unpack_fields(found[4] or b"", len(template.fields)) if template else (),
            now=now[0] + now[1] / 1e6,
            sending=sending,
            numbers=records.numbers_of(blob or b""),
            suppressed=records.numbers_with(blob or b"", CODES[Status.SUPPRESSED]),
            record=BatchRecord.parse(batch, record) if record else None,
            segments_per_message=max(1, int(segments or 1)),
            urgent=urgent is not None,
            held=any(flag is not None for flag in held),
        )

    def opted_out(self, numbers: Sequence[str]) -> set[str]:
        """Which of these numbers opted out (STOP, or the API) by now."""
        return optouts.suppressed(self.redis, numbers)

    def suppress(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        numbers: Sequence[str],
        since: str = "",
    ) -> bool:
        """The owner of the call claimed as `attempt` at `offset` (at `since`) leaves out these
        numbers of it, opted out since the job was submitted: they end `suppressed`, never sent.
        False if the call is not the caller's any more."""
        digits = [n for n in (records.number_key(x) for x in numbers) if n]
        now = _now()
        tail = records.tail(CODES[Status.SUPPRESSED], "", int(float(now)))
        return bool(
            self._suppress(
                keys=self._batch_keys(job_id, batch)[:3],
                args=[batch, attempt, offset, tail, since, *digits],
            )
        )

    def call_submitted(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        api_id: str,
        refused: Sequence[str],
        uuids: Sequence[str] = (),
        at: float = 0.0,
        since: str = "",
    ) -> str:
        """Plivo accepted the call claimed as `attempt` at `offset` (at `since`: the claim's
        own, '' if unknown), answering with message `uuids` at `at`: its recipients are queued,
        those Plivo refused rejected. 'submitted' (the batch is done), 'advanced' (waiting at
        its next offset, or this call recorded already: known by `since`), 'done' (the batch is
        finished), 'superseded' (the call is not the caller's: another claim's call was, or may
        have been, recorded in its place, and Plivo may have both).

        One round trip, one transaction: the UUIDs (`remember_answer`'s writes), then the
        script. Never the record without the UUIDs: Plivo's list would show the call's messages
        to the sweep as another call's. A write Redis refuses before any runs (out of memory)
        makes none. Should the script not run (Redis forgot it), the UUIDs are written and the
        script is loaded and run. Made again after an error, it changes nothing more (a UUID
        kept twice is read once)."""
        now = _now()
        numbers = [n for n in (records.number_key(r) for r in refused) if n]
        script_keys = self._batch_keys(job_id, batch)
        evalsha = (
            "EVALSHA",
            self._call.sha,
            len(script_keys),
            *script_keys,
            batch,
            now,
            attempt,
            offset,
            api_id.replace("|", "/"),
            records.tail(CODES[Status.REJECTED], "invalid_number", int(float(now))),
            _queued_tail(now),
            since,
            *numbers,
        )
        writes = self._answer_writes(job_id, batch, uuids, at)
        try:
            if writes:
                *_, done = self._send([("MULTI",), *writes, evalsha, ("EXEC",)])
                answer = _executed(done)
            else:
                (answer,) = self._send([evalsha])
        except NoScriptError:  # (Redis restarted: the UUIDs are written, the script did not run)
            _, answer = self._send([("SCRIPT", "LOAD", self._call.script), evalsha])
        return answer.decode() if isinstance(answer, bytes) else str(answer)

    def batch_failed(
        self,
        job_id: str,
        batch: int,
        owner: tuple[int, int] | None,
        reason: str,
        since: str = "",
    ) -> int:
        """The batch will never be sent: its recipients not yet handed over are rejected.
        `owner`: the call's (attempt, offset), claimed at `since`, or None for whoever holds
        the batch.

        1 recorded, 0 already finished, -1 the call is not the caller's.
        """
        attempt, offset = ("*", "*") if owner is None else (str(owner[0]), str(owner[1]))
        return int(
            self._finish(
                keys=[*self._batch_keys(job_id, batch), keys.ACTIVE_JOBS],
                args=[
                    batch,
                    _now(),
                    BatchState.FAILED.value,
                    reason.replace("|", "/"),
                    CODES[Status.REJECTED],
                    attempt,
                    offset,
                    "" if owner is None else since,
                    job_id,
                ],
            )
        )

    def halt(self, job_id: str, reason: str) -> None:
        """Stop the job: every batch not yet sent fails with `reason` when it is claimed."""
        self.redis.hsetnx(keys.job(job_id), "halted", reason.replace("|", "/"))

    def resolve_batch(self, job_id: str, batch: int, in_flight_seconds: float) -> str:
        """Look at a call left `sending`: handed over on evidence ('submitted', 'advanced'),
        'ask' (Plivo's message list must say: `settle_call`), or why not yet ('in_flight')."""
        now = _now()
        return str(
            self._resolve(
                keys=self._batch_keys(job_id, batch),
                args=[batch, now, in_flight_seconds, _queued_tail(now)],
            )
        )

    def settle_call(
        self,
        job_id: str,
        batch: int,
        attempt: int,
        offset: int,
        found: bool,
        since: float | None = None,
    ) -> str:
        """What Plivo's message list says of the call claimed as `attempt` at `offset` (at
        `since`, as its record said): found, it is recorded ('submitted', 'advanced'); absent,
        the same call is to be made again ('resend'); 'moved' if the call was settled
        meanwhile, or is another claim's."""
        now = _now()
        return str(
            self._settle(
                keys=self._batch_keys(job_id, batch),
                args=[
                    batch,
                    now,
                    attempt,
                    offset,
                    "found" if found else "absent",
                    _queued_tail(now),
                    "" if since is None else repr(since),  # (compared as numbers)
                ],
            )
        )

    def clock(self) -> float:
        """Redis's clock: the one the batch scripts stamp calls with."""
        seconds, micros = self.redis.time()
        return seconds + micros / 1_000_000

    def remember_answer(self, job_id: str, batch: int, uuids: Sequence[str], at: float) -> None:
        """Plivo answered one of the batch's calls with these message UUIDs (or a message of it
        was found in Plivo's list): kept with the batch, so that a message that never gets a
        report can be looked up, and so that Plivo's list knows the message as this batch's
        (`handed`). Written before the call is recorded."""
        if uuids:
            self._send(self._answer_writes(job_id, batch, uuids, at))

    def _answer_writes(
        self, job_id: str, batch: int, uuids: Sequence[str], at: float
    ) -> list[tuple[Any, ...]]:
        if not uuids:
            return []
        packed = b"".join(records.encode_uuid(u) or records.UNKNOWN_UUID for u in uuids)
        answered = keys.answered(job_id, batch)
        return [
            *self.handed.writes(job_id, batch, at),
            ("APPEND", answered, packed),
            ("EXPIRE", answered, self.retention),
        ]

    def silent_uuids(self, job_id: str, batch: int) -> list[str]:
        """The UUIDs Plivo answered the batch with that no report has named yet."""
        pipe = self.redis.pipeline(transaction=False)
        _get_bytes(pipe, keys.answered(job_id, batch))
        _get_bytes(pipe, keys.recipients(job_id, batch))
        answered, blob = pipe.execute()
        reported = {r.uuid for r in records.unpack(blob or b"") if r.uuid}
        found = records.uuids_of(answered or b"")
        return [u for u in dict.fromkeys(found) if u not in reported]

    def unnamed_numbers(self, job_id: str, batch: int) -> list[str]:
        """A handed-over batch's recipients that nothing has named: `queued`, with no message
        UUID. Once every UUID Plivo answered the batch's calls with is named (by a report or a
        lookup), these are the numbers of calls whose answer was lost, which took along
        Plivo's `invalid_number` list: each one Plivo either took or refused."""
        pipe = self.redis.pipeline(transaction=False)
        _get_bytes(pipe, keys.recipients(job_id, batch))
        blob = cast(bytes, pipe.execute()[0] or b"")
        queued = CODES[Status.QUEUED]
        return [r.number for r in records.unpack(blob) if r.uuid is None and r.code in ("", queued)]

    def lookup_rounds(self, job_id: str) -> tuple[list[BatchRecord], dict[int, tuple[float, str]]]:
        """Every batch's record and its round of lookups: when the round started and the last
        UUID looked up in it ('' once it is over), in one read."""
        found = cast(dict[str, str], self.redis.hgetall(keys.batches(job_id)))
        rounds = {}
        for key, value in found.items():
            if key.startswith("l:") and key[2:].isdigit():
                started, _, cursor = value.partition("|")
                rounds[int(key[2:])] = (float(started or 0), cursor)
        return _records(found), rounds

    def mark_lookup_round(self, job_id: str, batch: int, started: float, cursor: str) -> None:
        self._set_if_kept([keys.batches(job_id)], [f"l:{batch}", f"{started:.3f}|{cursor}"])

    def listing(self, job_id: str, batch: int, call: str) -> Paging:
        """How far the sweep has paged through Plivo's list of the sender's messages for the
        batch's unsettled call `call` (`reconcile.Unsettled.call`); nothing begun if never, or
        begun for another call."""
        found = cast(str | None, self.redis.hget(keys.batches(job_id), f"s:{batch}"))
        owner, offset, not_before, unclear = ((found or "") + "|||").split("|")[:4]
        if owner != call or not offset.isdigit():
            return Paging()
        try:
            return Paging(int(offset), float(not_before or 0), unclear == "1")
        except ValueError:
            return Paging()

    def mark_listing(self, job_id: str, batch: int, call: str, paging: Paging) -> None:
        """Where the paging for `call` is to go on (none: it is over, nothing kept)."""
        if paging == Paging():
            self.redis.hdel(keys.batches(job_id), f"s:{batch}")
        else:
            value = f"{call}|{paging.offset}|{paging.not_before:.3f}|{int(paging.unclear)}"
            self._set_if_kept([keys.batches(job_id)], [f"s:{batch}", value])

    def call_numbers(self, job_id: str, batch: int, offset: int, size: int) -> list[str]:
        """The numbers one call was made to: the batch's [offset, offset + size) (size 0: the
        rest), but those it left out (`suppressed`: Plivo never had them)."""
        pipe = self.redis.pipeline(transaction=False)
        _get_bytes(pipe, keys.recipients(job_id, batch))
        blob = cast(bytes, pipe.execute()[0] or b"")
        found = records.numbers_of(blob)
        left_out = records.numbers_with(blob, CODES[Status.SUPPRESSED])
        span = found[offset : offset + size] if size else found[offset:]
        return [n for n in span if n not in left_out]

    def is_urgent(self, job_id: str) -> bool:
        return bool(self.redis.hexists(keys.job(job_id), "urgent"))

    def mark_enqueued(self, job_id: str, batch: int, redispatched: int | None = None) -> None:
        """The batch's task was enqueued now; `redispatched`: the how-manieth time the sweep
        enqueued it again because its task seemed to have vanished. On Redis's clock, as the
        sweep reads it."""
        self.mark_enqueued_many([(job_id, batch, redispatched)], self.clock())

    def pending_enqueued(self, job_id: str) -> list[int]:
        """The job's pending batches, marked enqueued now (Redis's clock), for the caller to
        enqueue: a scheduled job released, a big job's fan-out, a resume. Left with their
        creation's mark, they would look long enqueued and the sweep would enqueue them again."""
        batches = self.pending_batches(job_id)
        if batches:
            self.mark_enqueued_many([(job_id, b, None) for b in batches], self.clock())
        return batches

    def batches(self, job_id: str) -> list[BatchRecord]:
        """Every batch's record, in batch order."""
        return _records(cast(dict[str, str], self.redis.hgetall(keys.batches(job_id))))

    def batches_of(self, job_ids: Sequence[str]) -> list[list[BatchRecord] | None]:
        """`batches` of each of these jobs, in one round trip (None: a record that cannot be
        read, which must not stop the others being read). Through `_send`: the sweep asks this
        of thousands of jobs, and redis-py's pipeline spent more packing and wrapping their
        commands than Redis took to answer them."""
        commands = [("HGETALL", keys.batches(job_id)) for job_id in job_ids]
        found = self._send(commands, raising=False) if commands else []
        return [None if isinstance(f, Exception) else _readable(_as_dict(f)) for f in found]

    def mark_enqueued_many(self, marks: Sequence[tuple[str, int, int | None]], at: float) -> None:
        """`mark_enqueued` for each (job, batch, redispatched), at `at`, in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id, batch, redispatched in marks:
            mapping = {f"q:{batch}": f"{at:.3f}"}
            if redispatched is not None:
                mapping[f"d:{batch}"] = str(redispatched)
            pipe.hset(keys.batches(job_id), mapping=cast(dict[Any, Any], mapping))
        pipe.execute()

    @staticmethod
    def _batch_keys(job_id: str, batch: int) -> list[str]:
        return [keys.job(job_id), keys.batches(job_id), keys.recipients(job_id, batch)]

    # -- delivery reports ---------------------------------------------------------------------
    def record_report(self, report: Report, connection: Connection | None = None) -> int:
        """1 when the status moved, 0 when it was old news, -1 for an unknown recipient. A
        report that moved a recipient still pending (its call not recorded yet, and perhaps
        never) names its batch in `handed`, so that Plivo's list does not take that message for
        another call's. A report blocked by STOP (`BLOCKED_BY_STOP`, from Plivo's post or its
        answer to a lookup) that moved its recipient opts the number out in the same step, unless
        the person's last STOP or START came after the call (`scripts.REPORT`).

        With `connection` (one the caller holds: `bulksms.api.report_fastpath`), the script is
        called on it directly: a third less of the client's time than through the pool. Redis
        may not have the script yet (after a restart, say): it is loaded, and called once more.
        """
        found = self._report_call(report)
        if found is None:
            return -1
        keys_, args = found
        if connection is None:
            moved = int(self._report(keys=keys_, args=args))
        else:
            try:
                moved = _call(connection, self._report.sha, keys_, args)
            except NoScriptError:
                self.redis.script_load(scripts.REPORT)
                moved = _call(connection, self._report.sha, keys_, args)
        return self._kept(report, moved)

    def report_command(self, report: Report) -> bytes | None:
        """`record_report`'s script call, packed to be sent on a connection the caller holds
        (`bulksms.store.handoff`); None for an unknown recipient (-1, nothing to ask)."""
        found = self._report_call(report)
        return None if found is None else _pack(self._report.sha, *found)

    def report_answered(self, report: Report, answer: object) -> int:
        """What `record_report` returns, from the answer to `report_command`. An error in its
        place (the script not loaded, the connection lost) writes the report again, waiting."""
        if isinstance(answer, BaseException):
            moved = self.record_report(report)
            if moved == 0:
                # A run whose answer was lost may have moved a pending recipient (2): its batch
                # is named as handed all the same (naming it twice changes nothing).
                self._kept(report, 2)
            return moved
        return self._kept(report, int(cast(int, answer)))

    def _kept(self, report: Report, moved: int) -> int:
        """The script's answer for the caller: a report that moved a recipient still pending
        (2) names its batch among those that handed messages over now (see `record_report`),
        then counts as 1."""
        if moved == 2:
            pipe = self.redis.pipeline(transaction=False)
            # (Redis's clock: the sweep reads the hours around a call on it, not a host's)
            self.handed.remember(report.job_id, report.batch, self.clock(), pipe)
            pipe.execute()
            return 1
        return moved

    def record_reports(self, reports: Iterable[Report]) -> list[int]:
        """Many reports in one pipeline (each still its own atomic script)."""
        reports = list(reports)
        pipe = self.redis.pipeline(transaction=False)
        known = []
        for report in reports:
            found = self._report_call(report)
            known.append(found is not None)
            if found is not None:
                self._report(keys=found[0], args=found[1], client=pipe)
        answers = iter(pipe.execute())
        return [
            self._kept(report, int(next(answers))) if k else -1
            for report, k in zip(reports, known, strict=True)
        ]

    @staticmethod
    def _report_call(report: Report) -> tuple[list[str], list[Any]] | None:
        number = records.number_key(report.number)
        if not number:
            return None
        now = time.time()
        job_id, batch, code = report.job_id, report.batch, CODES[report.status]
        return [
            keys.job(job_id),
            keys.recipients(job_id, batch),
            keys.batches(job_id),
            keys.parts(job_id),
            keys.ACTIVE_JOBS,
            keys.OPT_OUTS,
            keys.OPT_OUT_REPLIES,
        ], [
            number,
            code,
            records.encode_uuid(report.uuid),
            records.tail(code, report.error_code, int(now)),
            f"{now:.3f}",
            batch,
            report.units,
            round(report.amount * 100_000),
            report.part,
            report.parts,
            job_id,
            "1" if _blocked(report) else "",
        ]

    # -- the sweep's view ---------------------------------------------------------------------
    def woken_since(self, at: float) -> list[str]:
        """The jobs woken since `at` (Redis's clock): a batch of theirs claimed, or a final
        report or a cancel (`scripts.WAKE`: the negated time of the wake, in microseconds)."""
        return cast(list[str], self.redis.zrangebyscore(keys.ACTIVE_JOBS, "-inf", -at * 1_000_000))

    def jobs_to_sweep(self, now: float) -> list[tuple[str, float]]:
        """The unfinished jobs due to be looked at by `now` (Redis's clock), with when they
        were due. A job is due when indexed, and again when the sweep said (`look_again`), or at
        once after a final report or a cancel (`look_now`)."""
        found: dict[str, float] = {}
        start = 0
        while True:
            # By rank, a page at a time: Redis serves others between pages. A job indexed (at
            # 0) or woken (lower than any time) meanwhile comes in before those not yet read,
            # which move up a rank: read again, each is kept once, as first read. A job woken
            # meanwhile may be left to the next sweep, as one woken after a single read was.
            page = cast(
                list[tuple[str, float]],
                self.redis.zrange(keys.ACTIVE_JOBS, start, start + SWEEP_PAGE - 1, withscores=True),
            )
            for job_id, due in page:
                if due > now:
                    return list(found.items())
                found.setdefault(str(job_id), float(due))
            if len(page) < SWEEP_PAGE:
                return list(found.items())
            start += SWEEP_PAGE

    def look_again(self, jobs: Sequence[tuple[str, float, float]]) -> None:
        """Each job (job id, its due time as `jobs_to_sweep` read it, its next) is looked at
        next at that next time, unless it was made due since it was read."""
        for start in range(0, len(jobs), LOOKS_AT_ONCE):
            args = [
                str(x) if isinstance(x, str) else repr(float(x))
                for job in jobs[start : start + LOOKS_AT_ONCE]
                for x in job
            ]
            self._run(self._look_again, [keys.ACTIVE_JOBS], args)

    def look_now(self, job_id: str, pipe: Pipeline | None = None) -> None:
        """The sweep looks at the job at its next pass (if it still looks after it): due
        before any time, and lower than at any wake before (`scripts.LOOK_NOW`)."""
        self._look_now(keys=[keys.ACTIVE_JOBS], args=[job_id], client=pipe)

    def deactivate(self, job_id: str) -> None:
        self.redis.zrem(keys.ACTIVE_JOBS, job_id)

    def cancel(self, job_id: str) -> None:
        """Record the operator's decision, once: no batch not yet sent will be (the sweep
        looks at the job next: a job all handed over is finished by it)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hsetnx(keys.job(job_id), "cancelled", _now())
        self.look_now(job_id, pipe)
        pipe.execute()

    def pause(self, job_id: str) -> None:
        self.redis.hsetnx(keys.job(job_id), "paused", _now())

    def resume(self, job_id: str) -> None:
        self.redis.hdel(keys.job(job_id), "paused")

    def mark_notified(self, job_id: str) -> None:
        self.redis.hsetnx(keys.job(job_id), "notified", _now())

    def due_jobs(self, now: float) -> list[str]:
        return cast(list[str], self.redis.zrangebyscore(keys.SCHEDULED, "-inf", now))

    def release(self, job_id: str) -> None:
        """A scheduled job's time has come (or it was cancelled): it is queued now."""
        self.redis.hdel(keys.job(job_id), "send_at")
        self.redis.zrem(keys.SCHEDULED, job_id)

    def claim_notification(self, job_id: str) -> bool:
        """True once per job: the caller sends its completion callback."""
        return bool(self.redis.hsetnx(keys.job(job_id), "notify_queued", _now()))

    def pending_batches(self, job_id: str) -> list[int]:
        """Batches waiting for a worker: pending, and paced (their claim decides)."""
        return [
            b.batch
            for b in self.batches(job_id)
            if b.state in (BatchState.PENDING, BatchState.PACED)
        ]

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

    def jobs(self, job_ids: Sequence[str]) -> list[Job | None]:
        """These jobs (None for one that expired), in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(keys.job(job_id))
        return [
            Job.from_fields(job_id, fields) if fields else None
            for job_id, fields in zip(job_ids, pipe.execute(), strict=True)
        ]

    def forget(self, job_id: str) -> None:
        """Drop an expired job from the listing."""
        self.redis.zrem(keys.JOBS, job_id)

    def erase(self, job: Job) -> None:
        """Delete a finished job's per-recipient data (numbers are personal data); keep its
        counts. A batch that handed messages over within the hours the sweep still reads keeps
        their UUIDs (no number with them) until those hours pass: in Plivo's list they must
        still be known as ours, or another job's lost call to the same number would take them
        for its own and never be sent."""
        job_id = job.job_id
        kept = self._handed_uuids(job_id, self.handed.recent(job_id, job.batches, self.clock()))
        pipe = self.redis.pipeline(transaction=False)
        for batch in range(job.batches):
            pipe.delete(keys.recipients(job_id, batch))
            if kept.get(batch):
                pipe.set(keys.answered(job_id, batch), kept[batch], ex=(HANDED_HOURS + 1) * 3600)
            else:
                pipe.delete(keys.answered(job_id, batch))
            pipe.delete(keys.fields(job_id, batch))
        pipe.delete(keys.batches(job_id))
        pipe.delete(keys.paced(job_id))
        pipe.delete(keys.parts(job_id))
        pipe.hset(keys.job(job_id), "erased", _now())
        pipe.execute()

    def _handed_uuids(self, job_id: str, batches: list[int]) -> dict[int, bytes]:
        """Each batch's message UUIDs, answered or named by reports, packed (`keys.answered`)."""
        pipe = self.redis.pipeline(transaction=False)
        for batch in batches:
            _get_bytes(pipe, keys.answered(job_id, batch))
            _get_bytes(pipe, keys.recipients(job_id, batch))
        blobs = iter(pipe.execute())
        kept = {}
        for batch in batches:
            answered, recipients = next(blobs) or b"", next(blobs) or b""
            known = {answered[i : i + 16] for i in range(0, len(answered) - 15, 16)}
            kept[batch] = answered + b"".join(sorted(records.raw_uuids(recipients) - known))
        return kept

    def close(self, job_id: str, reason: str) -> None:
        """Stop waiting for reports: the job is completed with what is known."""
        self.redis.hsetnx(keys.job(job_id), "closed", reason)

    # -- reads --------------------------------------------------------------------------------
    def job(self, job_id: str) -> Job | None:
        """The job, or None when there is none (or it expired)."""
        fields = cast(dict[str, str], self.redis.hgetall(keys.job(job_id)))
        return Job.from_fields(job_id, fields) if fields else None

    def recipient(self, job_id: str, batch: int, number: str) -> Recipient | None:
        """One recipient's record, decoded."""
        blob, state, _ = self._batch_blob(job_id, batch)
        found = records.find(blob, number)
        return None if found is None else Recipient.of(found, state)

    def batch_recipients(self, job_id: str, batch: int, width: int = 0) -> list[Recipient]:
        """Every recipient of one batch (at most BATCH_SIZE), in number order; with `width`
        (a template's job: its number of fields), with their values."""
        blob, state, packed = self._batch_blob(job_id, batch, fields=width > 0)
        values = records.unpack_fields(packed, width)
        return [
            Recipient.of(r, state, values[i] if i < len(values) else None)
            for i, r in enumerate(records.unpack(blob))
        ]

    def _batch_blob(
        self, job_id: str, batch: int, fields: bool = False
    ) -> tuple[bytes, BatchRecord | None, bytes]:
        pipe = self.redis.pipeline(transaction=False)
        _get_bytes(pipe, keys.recipients(job_id, batch))
        pipe.hget(keys.batches(job_id), str(batch))
        if fields:
            _get_bytes(pipe, keys.fields(job_id, batch))
        blob, state, *packed = pipe.execute()
        record = BatchRecord.parse(batch, state) if state else None
        return blob or b"", record, (packed[0] or b"") if packed else b""


def _as_dict(answer: list[str] | dict[str, str]) -> dict[str, str]:
    """A hash as HGETALL answers it unwrapped: RESP2's flat list, or RESP3's map."""
    if isinstance(answer, dict):
        return answer
    return dict(zip(answer[::2], answer[1::2], strict=True))


def _readable(found: dict[str, str]) -> list[BatchRecord] | None:
    try:
        return _records(found)
    except (ValueError, IndexError, KeyError):
        return None


def _records(found: dict[str, str]) -> list[BatchRecord]:
    """The batch records in a job's batches hash, in batch order."""
    return [
        BatchRecord.parse(int(key), record, found.get(f"q:{key}"), found.get(f"d:{key}"))
        for key, record in sorted(found.items(), key=lambda item: _batch_order(item[0]))
        if key.isdigit()
    ]


def _batch_order(key: str) -> int:
    return int(key) if key.isdigit() else -1


def _executed(answers: Sequence[Any]) -> Any:
    """The last answer of a transaction's (EXEC's), once none of them is an error (the first
    is raised: the commands after it ran all the same)."""
    for answer in answers:
        if isinstance(answer, redis.RedisError):
            raise answer
    return answers[-1]


# The statuses a message blocked by STOP ends in: a report with Plivo's error 200 and another
# status (`sent`, say) is not Plivo's, and opts nobody out.
REFUSED = frozenset({Status.FAILED, Status.UNDELIVERED, Status.REJECTED})


def _blocked(report: Report) -> bool:
    """The report says the destination blocked the message with a STOP (Plivo's error 200)."""
    return report.status in REFUSED and report.error_code.strip() == BLOCKED_BY_STOP


def _now() -> str:
    return f"{time.time():.3f}"


def _words_of(commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Commands as a script's arguments: each one's number of words, then its words."""
    return [word for words in commands for word in (len(words), *words)]


def _queued_tail(now: str) -> bytes:
    return records.tail(CODES[Status.QUEUED], "", int(float(now)))


def _get_bytes(pipe: Pipeline, key: str) -> None:
    """Queue a GET whose answer stays bytes (a batch's records) on a decoding client."""
    pipe.execute_command("GET", key, NEVER_DECODE=True)  # type: ignore[no-untyped-call]


def _pack(sha: str, keys_: list[str], args: list[Any]) -> bytes:
    # Packed by hiredis in C, not argument by argument in redis-py: every report pays for it.
    return cast(bytes, hiredis.pack_command(("EVALSHA", sha, len(keys_), *keys_, *args)))


def _call(connection: Connection, sha: str, keys_: list[str], args: list[Any]) -> int:
    packed = _pack(sha, keys_, args)
    connection.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
    answer = connection.read_response()
    if isinstance(answer, Exception):
        raise answer
    return int(cast(int, answer))
