"""One connection to Redis per thread, kept, for the round trips of the hot paths.

redis-py's pool (8.x) takes a lock twice, checks the process id twice and records four
connection-count metrics and an event on every command's way in and out. For an alert's one
round trip that cost more than the round trip's own Python (measured under gunicorn: 9% of the
web workers' time), and a thread that keeps its connection needs none of it.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import cast

import redis
from redis.connection import Connection


class ThreadConnections:
    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.local = threading.local()

    def get(self) -> Connection:
        """This thread's connection, made on first use (and again in a forked child: a socket
        is never shared with the parent), and made afresh where the server closed it or left
        something unread, as the pool checks before handing one out. A caller that leaves it in
        an unknown state (an error halfway) disconnects it; it reconnects on its next use."""
        found: tuple[int, Connection] | None = getattr(self.local, "kept", None)
        pid = os.getpid()
        if found is None or found[0] != pid:
            pool = self.pool
            connection = cast(Connection, pool.connection_class(**pool.connection_kwargs))
            self.local.kept = (pid, connection)
            # Closed with these (a test's store): a redis-py connection is in a reference cycle,
            # and the collector may finalize its socket first, which then warns it was left open.
            # (By a weak reference: a thread's connection still goes with its thread.)
            weakref.finalize(self, _close, weakref.ref(connection))
            return connection
        connection = found[1]
        if connection.is_connected:
            try:
                stale = connection.can_read()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:  # (closed by the server, as after a restart: read as EOF)
                connection.disconnect()  # type: ignore[no-untyped-call]
        return connection


def _close(kept: weakref.ref[Connection]) -> None:
    connection = kept()
    if connection is not None:
        connection.disconnect()  # type: ignore[no-untyped-call]
