"""Writes handed to Redis without waiting for its answer: the delivery reports' common case.

A report is answered 204 once it is recorded, and Plivo never posts it again. On a Redis that
fsyncs every write before answering (`appendfsync always`, the embedded default), waiting for
the answer puts the report on disk first: the report path waits (`server.answers_from_disk`).
On any other Redis (`appendfsync everysec`, as docker-compose and most hosted Redis run), the
answer says no more than "in Redis's memory", which a host crash loses anyway. Waiting for it
then buys nothing but the wait, which costs a report a good part of its rate: here the command
goes onto Redis's socket before the 204 and a reader thread takes the answers as they come.

What the 204 then means: the command is on the connection's socket (a web process that exits
waits for its writes to be settled first, within limits: the README's Delivery reports). An
answer that is an error (the script not loaded after a restart, say), a connection lost before
its answer, or a settle that fails on Redis hands the write to `settle` again with the error, in
the rewriter's thread, which writes it again the waiting way (a report recorded twice changes
nothing); an error other than a missing script (Redis refusing writes) also stops the hand-over
for a while, so that new reports wait and are refused (503) while it lasts. Over TLS nothing is
handed over (one thread reading while another writes is not safe on one TLS connection).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import queue
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable

import hiredis
import redis
from redis.connection import Connection
from redis.exceptions import NoScriptError

from bulksms.store import server

log = logging.getLogger(__name__)

BOUND = 10_000  # writes handed over and not settled, at most: past it, writers wait for Redis
RECHECK_SECONDS = 60.0  # how often the server's fsync setting is read again
READ_TIMEOUT = 30.0  # seconds without an answer before the connection counts as lost
REFUSED_SECONDS = 10.0  # after Redis refused a write: writers wait for Redis themselves
DRAIN_SECONDS = 20.0  # at exit, within gunicorn's graceful timeout
LOG_SECONDS = 60.0  # a failing connect is logged at most this often
NAME = "bulksms-handoff"  # CLIENT LIST shows the connection by it

# Given the answer (a reply, or the exception in its place) and when it came (monotonic time).
Settle = Callable[[object, float], None]

_open: weakref.WeakSet[Handoff] = weakref.WeakSet()


class _Awaited:
    __slots__ = ("settle", "live", "sent_at")

    def __init__(self, settle: Settle) -> None:
        self.settle = settle
        self.sent_at = time.monotonic()  # (READ_TIMEOUT counts from here at the earliest)
        self.live = False  # True once its writer was told it is handed over


class _Line:
    """One connection and the writes awaiting its answers, in order."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        # Its socket, once redis-py has connected and greeted the server (address, TLS, AUTH,
        # SELECT): written and read here directly, the answers parsed by hiredis in batches.
        self.sock: socket.socket = connection._sock  # type: ignore[assignment]
        self.pending: collections.deque[_Awaited] = collections.deque()
        self.broken = False


class Handoff:
    def __init__(
        self, client: redis.Redis, bound: int = BOUND, refused_seconds: float = REFUSED_SECONDS
    ) -> None:
        self.client = client
        self.bound = bound
        self.refused_seconds = refused_seconds
        self.lock = threading.Lock()
        self.moved = threading.Condition(self.lock)  # a write settled, or the line broken
        self.line: _Line | None = None
        self.unsettled = 0  # handed over, and not yet settled
        self.paused_until = 0.0  # after a failed connect or a refused write
        self.wanted = False  # whether the server answers before its disk has the write
        self.checked = -RECHECK_SECONDS  # monotonic time of the last check
        self.checking = threading.Lock()  # held by the thread checking
        self.connecting = threading.Lock()  # held by the thread connecting
        self.failed_connects = 0  # since the last one logged
        self.logged_at = -LOG_SECONDS  # monotonic time a failed connect was last logged
        self.rewrites: queue.SimpleQueue[tuple[_Awaited, object, float]] = queue.SimpleQueue()
        self.rewriter: threading.Thread | None = None
        self.pid = os.getpid()
        _open.add(self)

    def send(self, packed: bytes, settle: Settle) -> bool:
        """Put `packed` (one command) on Redis's socket; its answer goes to `settle`, in a
        thread of the handoff's. False: not sent (Redis answers from disk, too many writes are
        unsettled, Redis cannot be reached or refuses writes), and the caller waits for Redis
        itself. Connecting and the fsync check happen outside the lock every writer takes;
        only the send is under it (the socket's timeout bounds it, then the line closes)."""
        if not self._wanted():
            return False
        with self.lock:
            if time.monotonic() < self.paused_until or self.unsettled >= self.bound:
                return False
            line = self.line
        if line is None or line.broken:
            line = self._connect()
            if line is None:
                return False
        with self.lock:
            if line.broken:
                return False
            # Awaited before it is sent: its answer may come before this thread runs again.
            awaited = _Awaited(settle)
            line.pending.append(awaited)
            try:
                line.sock.sendall(packed)
            except Exception:
                # Perhaps half sent: the line is closed, and its reader drops what it awaited.
                line.broken = True
                line.connection.disconnect()  # type: ignore[no-untyped-call]
                self.moved.notify_all()
                return False
            awaited.live = True
            self.unsettled += 1
            return True

    def pending(self) -> int:
        """Writes handed over and not yet settled (awaited, or being written again)."""
        with self.lock:
            return self.unsettled

    def drain(self, timeout: float) -> bool:
        """Wait until every write handed over is settled (at exit); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.unsettled > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.moved.wait(left)
        return True

    def _wanted(self) -> bool:
        """Whether Redis answers before its disk has a write: read again every RECHECK_SECONDS
        by one thread, while the others go on with the last verdict."""
        if os.getpid() != self.pid:  # forked: the parent's connection is not this process's
            self.pid, self.line, self.rewriter = os.getpid(), None, None
            self.unsettled, self.checked = 0, -RECHECK_SECONDS
            self.failed_connects, self.logged_at = 0, -LOG_SECONDS
            self.rewrites = queue.SimpleQueue()
        if time.monotonic() - self.checked >= RECHECK_SECONDS and self.checking.acquire(False):
            try:
                self.wanted = not server.answers_from_disk(self.client)
            except redis.RedisError:
                self.wanted = False
            finally:
                self.checked = time.monotonic()
                self.checking.release()
        return self.wanted

    def _connect(self) -> _Line | None:
        """A new line, by one thread at a time (the others wait for Redis themselves)."""
        if not self.connecting.acquire(False):
            return None
        try:
            with self.lock:
                if self.line is not None and not self.line.broken:
                    return self.line
            pool = self.client.connection_pool
            # RESP2, without maintenance notifications: no message but the answers comes back.
            kwargs = {
                name: value
                for name, value in pool.connection_kwargs.items()
                if not name.startswith("maint_notifications")
            }
            connection: Connection = pool.connection_class(**{**kwargs, "protocol": 2})
            try:
                connection.connect()  # type: ignore[no-untyped-call]
                connection.send_command("CLIENT", "SETNAME", NAME)  # type: ignore[no-untyped-call]
                connection.read_response()
                line = _Line(connection)
                if isinstance(line.sock, ssl.SSLSocket):
                    # One thread reading while others write is not safe on one TLS connection:
                    # over TLS, reports wait for Redis.
                    connection.disconnect()  # type: ignore[no-untyped-call]
                    self.wanted, self.checked = False, float("inf")
                    return None
                self._start_rewriter()  # now, not in a failure (perhaps at exit) that needs it
                threading.Thread(target=self._read, args=(line,), name=NAME, daemon=True).start()
            except Exception as exc:
                connection.disconnect()  # type: ignore[no-untyped-call]
                self._connect_failed(exc)
                with self.lock:
                    self.paused_until = time.monotonic() + 1.0  # not every writer in turn
                return None
            with self.lock:
                self.line = line
            return line
        finally:
            self.connecting.release()

    def _connect_failed(self, exc: Exception) -> None:
        """Logged the first time, then once every LOG_SECONDS with how many since (a connect is
        tried again each second while it fails)."""
        self.failed_connects += 1
        if time.monotonic() - self.logged_at >= LOG_SECONDS:
            log.warning(
                "no connection to hand reports to Redis (%s; %d attempts since the last such "
                "line): reports wait for Redis meanwhile",
                exc,
                self.failed_connects,
            )
            self.failed_connects, self.logged_at = 0, time.monotonic()

    def _start_rewriter(self) -> None:
        with self.lock:
            if self.rewriter is None or not self.rewriter.is_alive():
                self.rewriter = threading.Thread(
                    target=self._rewriting, name=f"{NAME}-rewrites", daemon=True
                )
                self.rewriter.start()

    def _read(self, line: _Line) -> None:
        """The answers to the line's writes, in order, each to its `settle`: every answer one
        read brought, under one take of the lock (the writers' lock: taken once a batch).

        The reader waits in `recv` even with nothing awaited, rather than for a writer's word: an
        answer only follows a write, and a writer waking it cost each report a thread switch
        (9% of a busy web process's samples were that `notify`: bench/RESULTS.md, 2026-12-05).
        A line closed by a writer (`disconnect` shuts its socket down) or by Redis ends the wait
        with nothing read, and is left at once, even while idle."""
        parser = hiredis.Reader()
        buffer = bytearray(65536)
        heard = time.monotonic()  # when the line last brought answers
        while True:
            try:
                try:
                    size = line.sock.recv_into(buffer)
                except TimeoutError:  # (the connection's timeout, which its writes keep too)
                    # Lost: READ_TIMEOUT without an answer, counted from the last answers or
                    # from the oldest write awaited, whichever came later (a write may come in
                    # the last moment of a wait begun idle, which must not count against it).
                    with self.lock:
                        oldest = line.pending[0].sent_at if line.pending else None
                    if oldest is None or time.monotonic() - max(heard, oldest) < READ_TIMEOUT:
                        continue
                    raise
                if not size:
                    raise redis.ConnectionError("Redis closed the connection")
                heard = time.monotonic()
                parser.feed(buffer, 0, size)  # type: ignore[arg-type]  # (any buffer)
                answers = []
                while (answer := parser.gets()) is not False:
                    answers.append(answer)
                with self.lock:
                    if len(answers) > len(line.pending):
                        raise redis.ConnectionError("more answers than writes: out of step")
                    taken = [line.pending.popleft() for _ in answers]
                self._answered(taken, answers)
            except Exception as exc:  # (anything: a reader that died would strand its writes)
                with self.lock:
                    line.broken = True
                    failed = list(line.pending)
                    line.pending.clear()
                    if self.line is line:
                        self.line = None
                    self.moved.notify_all()
                line.connection.disconnect()  # type: ignore[no-untyped-call]
                for awaited in failed:
                    self._rewrite(awaited, exc)
                return

    def _answered(self, taken: list[_Awaited], answers: list[object]) -> None:
        """Settle a batch: an error answer, or a settle that fails on Redis, goes to the
        rewriter (the reader never retries: it would hold up every answer behind)."""
        settled = 0
        now = time.monotonic()
        for awaited, answer in zip(taken, answers, strict=True):
            if not awaited.live:
                continue
            if isinstance(answer, hiredis.ReplyError):
                self._refused(awaited, str(answer))
                continue
            try:
                awaited.settle(answer, now)
            except redis.RedisError as exc:
                self._rewrite(awaited, exc)
                continue
            except Exception:
                log.exception("a write handed to Redis could not be settled")
            settled += 1
        if settled:
            with self.lock:
                self.unsettled -= settled
                if self.unsettled <= 0:
                    self.moved.notify_all()

    def _refused(self, awaited: _Awaited, message: str) -> None:
        """An error answer: written again; unless Redis only forgot the script (after a
        restart), it refuses writes (OOM, MISCONF, READONLY), and writers wait for a while."""
        if message.startswith("NOSCRIPT"):
            self._rewrite(awaited, NoScriptError(message))
            return
        with self.lock:
            self.paused_until = time.monotonic() + self.refused_seconds
        self._rewrite(awaited, redis.ResponseError(message))

    def _rewrite(self, awaited: _Awaited, answer: object) -> None:
        """A write whose answer was an error or never came: settled in the rewriter's thread
        (it may wait for Redis), so that the line's other answers are not held up."""
        if awaited.live:
            self.rewrites.put((awaited, answer, time.monotonic()))

    def _rewriting(self) -> None:
        while True:
            awaited, answer, since = self.rewrites.get()
            self._settle(awaited, answer, since)

    def _settle(self, awaited: _Awaited, answer: object, since: float) -> None:
        try:
            awaited.settle(answer, since)
        except Exception:
            log.exception("a write handed to Redis could not be settled")
        finally:
            with self.lock:
                self.unsettled -= 1
                if self.unsettled <= 0:
                    self.moved.notify_all()


@atexit.register
def _drain_all() -> None:
    """A web process that exits (gunicorn's graceful stop or restart, a deploy) waits for its
    writes to be settled first, within gunicorn's graceful timeout (30 s)."""
    for handoff in list(_open):
        if handoff.pending():
            log.warning(
                "waiting for %d writes handed to Redis to be answered before exiting",
                handoff.pending(),
            )
        if not handoff.drain(DRAIN_SECONDS):
            log.error("exiting with %d writes to Redis unanswered", handoff.pending())
