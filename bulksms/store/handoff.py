"""Writes handed to Redis without waiting for its answer: the delivery reports' common case.

A report is answered 204 once it is recorded, and Plivo never posts it again. On a Redis that
fsyncs every write before answering (`appendfsync always`, the embedded default), waiting for
the answer puts the report on disk first: the report path waits (`server.answers_from_disk`).
On any other Redis (`appendfsync everysec`, as docker-compose and most hosted Redis run), the
answer says no more than "in Redis's memory", which a host crash loses anyway. Waiting for it
then buys nothing but the wait, which costs a report a third of its rate: here the command goes
onto Redis's socket before the 204 and a reader thread takes the answers as they come.

What the 204 then means: the command has left this process (a web process killed after it
does not take it back). An answer that is an error (the script not loaded after a restart, say)
or a connection lost before its answer hands the write to `settle` with the error, which writes
it again the waiting way (a report recorded twice changes nothing). Only if Redis stays away
longer than that retry's patience is a report acknowledged and not recorded: it is logged, and
its message is settled like one whose report never came, by asking Plivo.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable

import redis
from redis.connection import Connection

from bulksms.store import server

log = logging.getLogger(__name__)

BOUND = 10_000  # answers awaited at most: past it, writers wait for Redis themselves
RECHECK_SECONDS = 60.0  # how often the server's fsync setting is read again
DRAIN_SECONDS = 20.0  # at exit, within gunicorn's graceful timeout
NAME = "bulksms-handoff"  # CLIENT LIST shows the connection by it

Settle = Callable[[object], None]  # given the answer: a reply, or the exception in its place
READ_TIMEOUT = 30.0  # seconds without an answer before the connection counts as lost

_open: weakref.WeakSet[Handoff] = weakref.WeakSet()


class _Awaited:
    __slots__ = ("settle", "live")

    def __init__(self, settle: Settle) -> None:
        self.settle = settle
        self.live = True  # False: its writer was told it was not sent, and waits itself


class _Line:
    """One connection and the writes awaiting its answers, in order."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pending: collections.deque[_Awaited] = collections.deque()
        self.broken = False


class Handoff:
    def __init__(self, client: redis.Redis, bound: int = BOUND) -> None:
        self.client = client
        self.bound = bound
        self.lock = threading.Lock()
        self.moved = threading.Condition(self.lock)  # a write awaited, or an answer taken
        self.line: _Line | None = None
        self.reader_waits = False
        self.wanted = False  # whether the server answers before its disk has the write
        self.checked = -RECHECK_SECONDS  # monotonic time of the last check
        self.pid = os.getpid()
        _open.add(self)

    def send(self, packed: bytes, settle: Settle) -> bool:
        """Put `packed` (one command) on Redis's socket; its answer goes to `settle`, in the
        reader thread. False: not sent (Redis answers from disk, too many answers are awaited,
        or Redis cannot be reached), and the caller waits for Redis itself."""
        with self.lock:
            if not self._wanted():
                return False
            line = self.line
            if line is None or line.broken:
                try:
                    line = self._connect()
                except redis.RedisError:
                    return False
            if len(line.pending) >= self.bound:
                return False
            # Awaited before it is sent: its answer may come before this thread runs again.
            awaited = _Awaited(settle)
            line.pending.append(awaited)
            try:
                line.connection.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
            except redis.RedisError:
                # Perhaps half sent: the line is closed, and its reader settles what it awaited.
                awaited.live = False
                line.broken = True
                line.connection.disconnect()  # type: ignore[no-untyped-call]
                self.moved.notify_all()
                return False
            if self.reader_waits:
                self.moved.notify_all()
            return True

    def pending(self) -> int:
        with self.lock:
            return len(self.line.pending) if self.line else 0

    def drain(self, timeout: float) -> bool:
        """Wait until every write handed over has its answer (at exit); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.line is not None and self.line.pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.moved.wait(left)
        return True

    def _wanted(self) -> bool:
        if os.getpid() != self.pid:  # forked: the parent's connection is not this process's
            self.pid, self.line, self.checked = os.getpid(), None, -RECHECK_SECONDS
        now = time.monotonic()
        if now - self.checked >= RECHECK_SECONDS:
            try:
                self.wanted = not server.answers_from_disk(self.client)
            except redis.RedisError:
                self.wanted = False
            self.checked = now
        return self.wanted

    def _connect(self) -> _Line:
        pool = self.client.connection_pool
        connection: Connection = pool.connection_class(
            **{**pool.connection_kwargs, "socket_timeout": READ_TIMEOUT}
        )
        connection.connect()  # type: ignore[no-untyped-call]
        connection.send_command("CLIENT", "SETNAME", NAME)  # type: ignore[no-untyped-call]
        connection.read_response()
        line = self.line = _Line(connection)
        threading.Thread(target=self._read, args=(line,), name=NAME, daemon=True).start()
        return line

    def _read(self, line: _Line) -> None:
        """The answers to the line's writes, in order, each to its `settle`."""
        while True:
            with self.lock:
                while not line.pending and not line.broken:
                    self.reader_waits = True
                    self.moved.wait()
                self.reader_waits = False
                if line.broken and not line.pending:
                    return
            try:
                answer: object = line.connection.read_response()
            except redis.ResponseError as exc:
                answer = exc
            except (redis.RedisError, OSError) as exc:
                with self.lock:
                    line.broken = True
                    failed = list(line.pending)
                    line.pending.clear()
                    if self.line is line:
                        self.line = None
                    self.moved.notify_all()
                line.connection.disconnect()  # type: ignore[no-untyped-call]
                for awaited in failed:
                    _settle(awaited, exc)
                return
            with self.lock:
                awaited = line.pending.popleft()
                if not line.pending:
                    self.moved.notify_all()
            _settle(awaited, answer)


def _settle(awaited: _Awaited, answer: object) -> None:
    if not awaited.live:
        return
    try:
        awaited.settle(answer)
    except Exception:
        log.exception("a write handed to Redis could not be settled")


@atexit.register
def _drain_all() -> None:
    """A web process that exits (gunicorn's graceful stop or restart, a deploy) waits for its
    answers first, within gunicorn's graceful timeout (30 s)."""
    for handoff in list(_open):
        if handoff.pending():
            log.warning(
                "waiting for %d writes handed to Redis to be answered before exiting",
                handoff.pending(),
            )
        if not handoff.drain(DRAIN_SECONDS):
            log.error("exiting with %d writes to Redis unanswered", handoff.pending())
